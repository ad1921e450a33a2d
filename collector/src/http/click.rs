//! `GET /l/{code}`: the tracking link. Records a click, sets the visitor cookie and
//! redirects to the destination (or a deep link on the destination's site) with the
//! incoming parameters kept and `ct_click_id` (and the offer's cookie days, `ct_cd`)
//! added. `HEAD` answers the same, records nothing. A paused link (or a link of a paused
//! offer) redirects the same way but records nothing and adds no click id or cookie.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;

use std::net::SocketAddr;

use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use lake::registry::is_valid_code;
use lake::schema::HitKind;
use url::{Position, Url};

use super::{cookie_value, is_visitor_id, ApiError, AppState, Peer, SharedState, CLICK_ID_PARAM, DEEP_LINK_PARAM, VISITOR_COOKIE};
use super::firstparty::COOKIE_DAYS_PARAM;
use crate::hit::{uuid_v4, uuid_v7};
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

/// The destination URL parsed, from this thread's cache: a link's destination is parsed
/// once per thread, not on every click (the cache is emptied when it holds
/// [`PARSED_KEPT`] destinations, so registry edits cannot grow it without bound).
fn parsed_destination(destination: &str) -> Result<Url, url::ParseError> {
    thread_local! {
        static PARSED: RefCell<HashMap<String, Url>> = RefCell::new(HashMap::new());
    }
    PARSED.with_borrow_mut(|parsed| {
        if let Some(url) = parsed.get(destination) {
            return Ok(url.clone());
        }
        let url = Url::parse(destination)?;
        if parsed.len() >= PARSED_KEPT {
            parsed.clear();
        }
        parsed.insert(destination.to_string(), url.clone());
        Ok(url)
    })
}

/// The `Set-Cookie` value of the visitor cookie. Its attributes are written by the cookie
/// crate once per thread and lifetime, then reused: the value, a checked visitor id or a
/// UUID ([`is_visitor_id`]), needs no quoting.
fn visitor_cookie(visitor_id: &str, cookie_days: u32, secure: bool) -> String {
    thread_local! {
        static ATTRIBUTES: RefCell<HashMap<(u32, bool), String>> = RefCell::new(HashMap::new());
    }
    ATTRIBUTES.with_borrow_mut(|attributes| {
        if attributes.len() >= PARSED_KEPT {
            attributes.clear();
        }
        let rest = attributes.entry((cookie_days, secure)).or_insert_with(|| {
            let cookie = Cookie::build((VISITOR_COOKIE, ""))
                .path("/")
                .max_age(cookie::time::Duration::days(i64::from(cookie_days)))
                .http_only(true)
                .secure(secure)
                // Pixels fire from the brand's pages, a cross-site context: over https the
                // cookie must be SameSite=None to reach them; browsers refuse None without Secure.
                .same_site(if secure { SameSite::None } else { SameSite::Lax })
                .build();
            cookie.to_string().split_off(VISITOR_COOKIE.len() + 1)
        });
        let mut out = String::with_capacity(VISITOR_COOKIE.len() + 1 + visitor_id.len() + rest.len());
        out.push_str(VISITOR_COOKIE);
        out.push('=');
        out.push_str(visitor_id);
        out.push_str(rest);
        out
    })
}

/// Destinations kept parsed per thread.
const PARSED_KEPT: usize = 4096;

/// The key of a query segment (`k=v` or `k`), decoded only when it needs to be.
fn segment_key(seg: &str) -> Cow<'_, str> {
    let raw = seg.split_once('=').map_or(seg, |(k, _)| k);
    if raw.bytes().any(|b| b == b'%' || b == b'+') {
        form_urlencoded::parse(seg.as_bytes()).next().map(|(k, _)| Cow::Owned(k.into_owned())).unwrap_or_default()
    } else {
        Cow::Borrowed(raw)
    }
}

/// `target` with its query replaced by `query`: as text when `plain` (`query` holds nothing
/// `set_query` would encode), which is what `set_query` gives without parsing the URL again.
fn with_query(mut target: Url, query: &str, plain: bool) -> String {
    if !plain {
        target.set_query(Some(query));
        return target.into();
    }
    let mut out = String::with_capacity(target.as_str().len() + query.len() + 2);
    out.push_str(&target[..Position::AfterPath]);
    out.push('?');
    out.push_str(query);
    if let Some(fragment) = target.fragment() {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Whether query text may go into the `Location` as it is: what `Url::set_query` would
/// leave unchanged (visible ASCII but for `"`, `#`, `<`, `>` and `'`).
fn query_safe(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'#' | b'<' | b'>' | b'\''))
}

pub async fn redirect(State(app): State<SharedState>, Path(code): Path<String>, Peer(peer): Peer, req: Request) -> Response {
    // The request's head rather than a `HeaderMap`, which axum would clone.
    let (parts, _) = req.into_parts();
    click(&app, &code, &parts, peer).await.into_response()
}

/// The click itself, for the route above and for the server's direct path
/// ([`super::serve_click`]), which skips the router for a plain `GET /l/{code}`.
pub async fn click(app: &AppState, code: &str, req: &Parts, peer: Option<SocketAddr>) -> Result<Redirect, ApiError> {
    if !is_valid_code(code) {
        return Err(ApiError::UnknownLink);
    }
    let headers = &req.headers;
    let registry = app.registry.get_having(|r| r.link(code).is_some()).await;
    let link = registry.link(code).ok_or(ApiError::UnknownLink)?;
    let offer = registry.offer(&link.offer_id).ok_or(ApiError::UnknownLink)?;
    // The link's own destination, or its offer's (`Registry::destination`, without a copy).
    let destination = if link.destination_url.is_empty() { &offer.destination_url } else { &link.destination_url };
    let destination = parsed_destination(destination).map_err(|e| ApiError::Internal(format!("link {code}: bad destination: {e}")))?;

    // The incoming parameters are passed on and stored exactly as sent (`%20` stays `%20`).
    let mut deep_link = None;
    let mut kept: Vec<&str> = Vec::new();
    for seg in req.uri.query().unwrap_or_default().split('&').filter(|seg| !seg.is_empty()) {
        match &*segment_key(seg) {
            DEEP_LINK_PARAM if deep_link.is_none() => {
                deep_link = Some(form_urlencoded::parse(seg.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default());
            }
            DEEP_LINK_PARAM | CLICK_ID_PARAM | COOKIE_DAYS_PARAM => {}
            _ => kept.push(seg),
        }
    }
    let target = match deep_link.filter(|d| !d.is_empty()) {
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
    if registry.paused_since(link).is_some() {
        // A paused link (or a link of a paused offer) keeps working for the people who
        // follow old posts, but tracks nothing: no click, no click id, no cookie.
        let mut query = String::new();
        let own = target.query().unwrap_or_default().split('&').filter(|seg| !seg.is_empty()).filter(|seg| {
            let key = segment_key(seg);
            key != CLICK_ID_PARAM && key != COOKIE_DAYS_PARAM
        });
        for seg in own.chain(kept.iter().copied()) {
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(seg);
        }
        let location = if query.is_empty() {
            let mut bare = target;
            bare.set_query(None);
            String::from(bare)
        } else {
            with_query(target, &query, kept.iter().all(|seg| query_safe(seg)))
        };
        let location = HeaderValue::try_from(location).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok(Redirect { location, set_cookie: None });
    }
    let mut hit = app.new_hit(HitKind::Click, offer.offer_id.clone(), headers, peer);
    let click_id = uuid_v7(hit.ts);
    // The destination's own query as written, less any stale click id, then ours; and the
    // offer's cookie lifetime, which travels with the click so that the snippet (loaded
    // without `?offer=`) and the first-party landing keep the click id exactly as long as
    // the offer says.
    let mut query_out = String::with_capacity(target.as_str().len() + 128);
    let mut add = |seg: &str| {
        if !query_out.is_empty() {
            query_out.push('&');
        }
        query_out.push_str(seg);
    };
    for seg in target.query().unwrap_or_default().split('&').filter(|seg| !seg.is_empty()) {
        let key = segment_key(seg);
        if key != CLICK_ID_PARAM && key != COOKIE_DAYS_PARAM {
            add(seg);
        }
    }
    for seg in &kept {
        add(seg);
    }
    // (Written piece by piece: `format!` cost more than the rest of the URL.)
    add(CLICK_ID_PARAM);
    query_out.push('=');
    query_out.push_str(&click_id);
    query_out.push('&');
    query_out.push_str(COOKIE_DAYS_PARAM);
    query_out.push('=');
    push_decimal(&mut query_out, offer.cookie_days);
    // The destination's query comes from `Url` and our parameters are plain: only the
    // incoming segments can hold what `set_query` would encode.
    let location = with_query(target, &query_out, kept.iter().all(|seg| query_safe(seg)));
    let visitor_id = cookie_value(headers, VISITOR_COOKIE).filter(|v| is_visitor_id(v)).unwrap_or_else(uuid_v4);

    if req.method != Method::HEAD {
        hit.member_id = Some(link.member_id.clone());
        hit.link_code = Some(link.code.clone());
        hit.click_id = Some(click_id);
        hit.visitor_id = Some(visitor_id.clone());
        hit.params = (!kept.is_empty()).then(|| kept.join("&"));
        app.record(&hit, Durability::Written).await?;
    }

    let secure = app.public_url.scheme() == "https";
    let location = HeaderValue::try_from(location).map_err(|e| ApiError::Internal(e.to_string()))?;
    let set_cookie = HeaderValue::try_from(visitor_cookie(&visitor_id, offer.cookie_days, secure))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Redirect { location, set_cookie: Some(set_cookie) })
}

/// A click's redirect: the `302` with its `Location`, and for a tracked click the visitor
/// cookie (a paused link sets none, nor the referrer policy).
pub struct Redirect {
    pub location: HeaderValue,
    pub set_cookie: Option<HeaderValue>,
}

/// The `Referrer-Policy` of a tracked click's redirect.
pub const REFERRER_POLICY: &str = "no-referrer-when-downgrade";

impl IntoResponse for Redirect {
    fn into_response(self) -> Response {
        let no_store = HeaderValue::from_static("no-store");
        match self.set_cookie {
            None => (StatusCode::FOUND, [(header::LOCATION, self.location), (header::CACHE_CONTROL, no_store)]).into_response(),
            Some(set_cookie) => (
                StatusCode::FOUND,
                [
                    (header::LOCATION, self.location),
                    (header::SET_COOKIE, set_cookie),
                    (header::CACHE_CONTROL, no_store),
                    (header::REFERRER_POLICY, HeaderValue::from_static(REFERRER_POLICY)),
                ],
            )
                .into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{same_site, visitor_cookie};
    use cookie::{Cookie, SameSite};
    use url::Url;

    #[test]
    fn the_location_as_text_is_what_set_query_gives() {
        let destinations = [
            "https://shop.example.com",
            "https://shop.example.com/landing",
            "https://shop.example.com/landing?a=1&ct_cd=3",
            "https://user:pw@shop.example.com:8443/p/%C3%A9?x=%20#frag",
            "http://127.0.0.1:9000/x/#",
            "https://xn--bcher-kva.example/b%C3%BCcher?q",
        ];
        let queries = ["utm_source=bench&ct_click_id=01a23771-859e-74df-ae6e-8781c1f65846&ct_cd=28", "a=%20b&c=d~e!f$g(h)*+,;=:@/?%41", "x"];
        for d in destinations {
            for q in queries {
                let target = Url::parse(d).unwrap();
                assert!(super::query_safe(q), "{q}");
                let mut want = target.clone();
                want.set_query(Some(q));
                assert_eq!(super::with_query(target, q, true), want.as_str(), "{d} {q}");
            }
        }
        // What `set_query` would encode takes the slow way, and is encoded.
        for q in ["a=\"b\"", "a=<b>", "a='b'", "a=b c", "é=1"] {
            assert!(!super::query_safe(q), "{q}");
            let target = Url::parse("https://shop.example.com/l").unwrap();
            let mut want = target.clone();
            want.set_query(Some(q));
            assert_eq!(super::with_query(target, q, false), want.as_str());
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 28, 365, 1000, u32::MAX] {
            let mut s = String::from("x=");
            super::push_decimal(&mut s, n);
            assert_eq!(s, format!("x={n}"));
        }
    }

    #[test]
    fn the_visitor_cookie_is_the_one_the_crate_writes() {
        for (days, secure) in [(28, false), (7, true), (28, false), (365, true)] {
            let want = Cookie::build(("ct_vid", "f2552b9d-716b-46db-9c3e-8eff7dadfb76"))
                .path("/")
                .max_age(cookie::time::Duration::days(i64::from(days)))
                .http_only(true)
                .secure(secure)
                .same_site(if secure { SameSite::None } else { SameSite::Lax })
                .build()
                .to_string();
            assert_eq!(visitor_cookie("f2552b9d-716b-46db-9c3e-8eff7dadfb76", days, secure), want);
        }
    }

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
