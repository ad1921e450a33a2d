//! `GET /l/{code}`: the tracking link. Records a click, sets the visitor cookie and
//! redirects to the destination (or a deep link on the destination's site) with the
//! incoming parameters kept and `ct_click_id` (and the offer's cookie days, `ct_cd`)
//! added. `HEAD` answers the same, records nothing. A paused link (or a link of a paused
//! offer) redirects the same way but records nothing and adds no click id or cookie.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use lake::registry::is_valid_code;
use lake::schema::HitKind;
use url::Url;

use super::{cookie_value, is_visitor_id, join_params, query_segments, ApiError, Peer, SharedState, CLICK_ID_PARAM, DEEP_LINK_PARAM, VISITOR_COOKIE};
use super::firstparty::COOKIE_DAYS_PARAM;
use crate::spool::Durability;

/// Two URLs are on the same site when their registrable domains (eTLD+1) match, or, for
/// IP addresses and single-label hosts, when the hosts are equal. Only http(s).
pub fn same_site(a: &Url, b: &Url) -> bool {
    if !matches!(a.scheme(), "http" | "https") || !matches!(b.scheme(), "http" | "https") {
        return false;
    }
    let (Some(ha), Some(hb)) = (a.host_str(), b.host_str()) else { return false };
    let (ha, hb) = (ha.to_ascii_lowercase(), hb.to_ascii_lowercase());
    if ha == hb {
        return true;
    }
    let is_domain = |u: &Url| matches!(u.host(), Some(url::Host::Domain(_)));
    if !is_domain(a) || !is_domain(b) {
        return false;
    }
    match (psl::domain_str(&ha), psl::domain_str(&hb)) {
        (Some(da), Some(db)) => da == db,
        _ => false,
    }
}

pub async fn redirect(
    State(app): State<SharedState>,
    Path(code): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !is_valid_code(&code) {
        return Err(ApiError::UnknownLink);
    }
    let registry = app.registry.get_having(|r| r.link(&code).is_some()).await;
    let link = registry.link(&code).ok_or(ApiError::UnknownLink)?;
    let offer = registry.offer(&link.offer_id).ok_or(ApiError::UnknownLink)?;
    let destination = registry.destination(link).ok_or(ApiError::UnknownLink)?;
    let destination = Url::parse(&destination).map_err(|e| ApiError::Internal(format!("link {code}: bad destination: {e}")))?;

    // The incoming parameters are passed on and stored exactly as sent (`%20` stays `%20`).
    let mut deep_link = None;
    let mut kept: Vec<String> = Vec::new();
    for (k, v, raw) in query_segments(query.as_deref()) {
        match k.as_str() {
            DEEP_LINK_PARAM if deep_link.is_none() => deep_link = Some(v),
            DEEP_LINK_PARAM | CLICK_ID_PARAM | COOKIE_DAYS_PARAM => {}
            _ => kept.push(raw.to_string()),
        }
    }
    let mut target = match deep_link.filter(|d| !d.is_empty()) {
        None => destination,
        Some(deep) => {
            // A path (`/product/42`) is on the destination's site by definition.
            let url = destination.join(&deep).map_err(|_| ApiError::bad("url", format!("deep link {deep:?} is not a URL")))?;
            if !same_site(&url, &destination) {
                return Err(ApiError::bad("url", format!("deep link {deep:?} is not on the destination's site")));
            }
            url
        }
    };
    // The destination's own query as written, less any stale click id, then ours.
    let mut query_out: Vec<String> = query_segments(target.query())
        .into_iter()
        .filter(|(k, _, _)| k != CLICK_ID_PARAM && k != COOKIE_DAYS_PARAM)
        .map(|(_, _, raw)| raw.to_string())
        .collect();
    query_out.extend(kept.iter().cloned());
    if registry.paused_since(link).is_some() {
        // A paused link (or a link of a paused offer) keeps working for the people who
        // follow old posts, but tracks nothing: no click, no click id, no cookie.
        target.set_query((!query_out.is_empty()).then(|| query_out.join("&")).as_deref());
        let location = HeaderValue::from_str(target.as_str()).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok((
            StatusCode::FOUND,
            [(header::LOCATION, location), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        )
            .into_response());
    }
    let click_id = uuid::Uuid::now_v7().to_string();
    query_out.push(format!("{CLICK_ID_PARAM}={click_id}"));
    // The offer's cookie lifetime travels with the click, so the snippet (loaded without
    // `?offer=`) and the first-party landing keep the click id exactly as long as the offer says.
    query_out.push(format!("{COOKIE_DAYS_PARAM}={}", offer.cookie_days));
    target.set_query(Some(&query_out.join("&")));
    let visitor_id = cookie_value(&headers, VISITOR_COOKIE)
        .filter(|v| is_visitor_id(v))
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());

    if method != Method::HEAD {
        let mut hit = app.new_hit(HitKind::Click, offer.offer_id.clone(), &headers, peer);
        hit.member_id = Some(link.member_id.clone());
        hit.link_code = Some(link.code.clone());
        hit.click_id = Some(click_id);
        hit.visitor_id = Some(visitor_id.clone());
        hit.params = join_params(&kept);
        app.record(&hit, Durability::Written).await?;
    }

    let secure = app.public_url.scheme() == "https";
    let cookie = Cookie::build((VISITOR_COOKIE, visitor_id))
        .path("/")
        .max_age(cookie::time::Duration::days(i64::from(offer.cookie_days)))
        .http_only(true)
        .secure(secure)
        // Pixels fire from the brand's pages, a cross-site context: over https the cookie
        // must be SameSite=None to reach them; browsers refuse None without Secure.
        .same_site(if secure { SameSite::None } else { SameSite::Lax })
        .build();
    let location = HeaderValue::from_str(target.as_str()).map_err(|e| ApiError::Internal(e.to_string()))?;
    let set_cookie = HeaderValue::from_str(&cookie.to_string()).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, set_cookie),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer-when-downgrade")),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::same_site;
    use url::Url;

    #[test]
    fn sites() {
        let u = |s: &str| Url::parse(s).unwrap();
        let dest = u("https://shop.example.com/landing");
        assert!(same_site(&u("https://shop.example.com/p/1"), &dest));
        assert!(same_site(&u("https://www.example.com/p/1"), &dest));
        assert!(same_site(&u("http://example.com/"), &dest));
        assert!(!same_site(&u("https://evil.com/"), &dest));
        assert!(!same_site(&u("https://example.com.evil.com/"), &dest));
        assert!(!same_site(&u("javascript:alert(1)"), &dest));
        assert!(!same_site(&u("https://a.github.io/"), &u("https://b.github.io/")));
        assert!(same_site(&u("http://127.0.0.1:9000/x"), &u("http://127.0.0.1:8000/")));
        assert!(!same_site(&u("http://127.0.0.2/"), &u("http://127.0.0.1/")));
    }
}
