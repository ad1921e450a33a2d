//! The first-party path: endpoints meant to be reverse-proxied under a path of the brand's
//! own origin (`https://shop.example.com/ct/…` → the collector), so that the brand's
//! origin, not a script, sets the click cookie, and conversions reach us as first-party
//! requests that no third-party cookie policy touches.
//!
//! - `GET|POST /fp/landing?click_id=&cookie_days=&offer=` answers `204` with cookie
//!   `ct_fp` (HttpOnly, SameSite=Lax, Secure when the brand's page is https, `Max-Age` =
//!   the click's offer's cookie days). Nothing is recorded: the click already was, at `/l/`.
//! - `GET|POST /fp/convert` takes the fields of `/p.gif` and records a `pixel` whose
//!   `click_id` and `visitor_id` come from that cookie (an explicit `click_id=` wins).
//!
//! The cookie is stateless: `<click_id>.<visitor_id>`, two ids the browser could send as
//! query parameters to `/p.gif` anyway, so there is nothing to sign. Every path also works
//! under one leading segment the proxy kept (`/ct/fp/landing`), as does `/ct/t.js`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cookie::{Cookie, SameSite};
use lake::registry::DEFAULT_COOKIE_DAYS;
use lake::schema::HitKind;
use serde_json::json;

use super::conversion::ConversionInput;
use super::fields::Fields;
use super::{cookie_value, is_visitor_id, pairs, parse_uuid, ApiError, Peer, SharedState};
use crate::spool::Durability;

/// The first-party cookie, set on the brand's origin by `/fp/landing`.
pub const FP_COOKIE: &str = "ct_fp";
/// The query parameter the redirect adds next to `ct_click_id`: the click's offer's
/// cookie days, so a snippet loaded without `?offer=` keeps the click as long as the offer says.
pub const COOKIE_DAYS_PARAM: &str = "ct_cd";
/// Longest cookie lifetime honoured; browsers cap `Max-Age` at 400 days anyway.
pub const MAX_COOKIE_DAYS: u32 = 400;

/// The first-party routes, with and without one kept prefix segment.
pub fn routes(request_timeout: Duration) -> Router<SharedState> {
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout);
    Router::new()
        .route("/fp/landing", get(landing).post(landing))
        .route("/{prefix}/fp/landing", get(landing).post(landing))
        .route("/fp/convert", get(convert).post(convert))
        .route("/{prefix}/fp/convert", get(convert).post(convert))
        .route_layer(timeout)
        .route("/{prefix}/t.js", get(super::pixel::script))
}

/// The pairs of a browser's body: a form, or text holding a form (what
/// `navigator.sendBeacon(url, string)` sends). Only `POST` bodies are read.
pub fn beacon_pairs(method: &Method, headers: &HeaderMap, body: &Bytes) -> Result<Vec<(String, String)>, ApiError> {
    if *method != Method::POST || body.is_empty() {
        return Ok(Vec::new());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "" | "text/plain" | "application/x-www-form-urlencoded" => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body", "body is not UTF-8"))?;
            Ok(pairs(Some(text)))
        }
        other => Err(ApiError::bad("body", format!("unsupported content type {other:?}; send a form (or a form as text/plain)"))),
    }
}

/// Did the brand's page arrive over https? The proxy says so in `X-Forwarded-Proto` or
/// `Forwarded: proto=`; without either, this collector's own public URL decides. Only the
/// cookie's `Secure` attribute depends on it, so a forged header gains nothing.
fn page_is_https(app: &SharedState, headers: &HeaderMap) -> bool {
    if let Some(p) = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        return p.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https");
    }
    if let Some(f) = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
        if let Some(proto) = f.split([';', ',']).filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| k.eq_ignore_ascii_case("proto")) {
            return proto.1.trim_matches('"').eq_ignore_ascii_case("https");
        }
    }
    app.public_url.scheme() == "https"
}

/// The ids a `ct_fp` cookie holds: `(click_id, visitor_id)`; a malformed cookie holds none.
pub fn parse_fp_cookie(value: &str) -> (Option<String>, Option<String>) {
    let Some((click, visitor)) = value.split_once('.') else { return (None, None) };
    let click = parse_uuid(click).map(|u| u.to_string());
    let visitor = Some(visitor.to_string()).filter(|v| is_visitor_id(v));
    (click, visitor)
}

/// The cookie lifetime in days from the `cookie_days` text, if it is a whole number in range.
pub fn parse_cookie_days(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|d| (1..=MAX_COOKIE_DAYS).contains(d))
}

async fn landing(
    State(app): State<SharedState>,
    RawQuery(query): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut all = pairs(query.as_deref());
    all.extend(beacon_pairs(&method, &headers, &body)?);
    let field = |names: &[&str]| all.iter().find(|(k, v)| names.contains(&k.as_str()) && !v.is_empty()).map(|(_, v)| v.clone());
    let click_text = field(&["click_id", "ct_click_id"]).ok_or_else(|| ApiError::bad("click_id", "click_id is required"))?;
    let click_id = parse_uuid(&click_text).ok_or_else(|| ApiError::bad("click_id", format!("click_id {click_text:?} is not a UUID")))?;
    // The click's own offer's days (added by the redirect) say it best; then the offer the
    // page names; then the default.
    let days = match (field(&["cookie_days", COOKIE_DAYS_PARAM]), field(&["offer", "offer_id"])) {
        (Some(d), _) => parse_cookie_days(&d)
            .ok_or_else(|| ApiError::bad("cookie_days", format!("cookie_days {d:?} must be a whole number from 1 to {MAX_COOKIE_DAYS}")))?,
        (None, Some(offer_id)) => {
            let registry = app.registry.get_having(|r| r.offer(&offer_id).is_some()).await;
            registry.offer(&offer_id).ok_or_else(|| ApiError::unknown_offer("offer", &offer_id))?.cookie_days
        }
        (None, None) => DEFAULT_COOKIE_DAYS,
    };
    let visitor_id = cookie_value(&headers, FP_COOKIE)
        .and_then(|v| parse_fp_cookie(&v).1)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let secure = page_is_https(&app, &headers);
    let cookie = Cookie::build((FP_COOKIE, format!("{click_id}.{visitor_id}")))
        .path("/")
        .max_age(cookie::time::Duration::days(i64::from(days)))
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .build();
    let set_cookie = HeaderValue::from_str(&cookie.to_string()).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, set_cookie), (header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
    )
        .into_response())
}

async fn convert(
    State(app): State<SharedState>,
    RawQuery(query): RawQuery,
    Peer(peer): Peer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut input = ConversionInput::default();
    input.extend_query(query.as_deref())?;
    input.extend(beacon_pairs(&method, &headers, &body)?)?;
    let offer_id = input.offer_id()?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = registry.offer(offer_id).ok_or_else(|| ApiError::unknown_offer("offer", offer_id))?;
    if input.token.is_some() {
        return Err(ApiError::bad("token", "browser conversions take no token; send server-side conversions to /postback"));
    }
    let (cookie_click, cookie_visitor) = cookie_value(&headers, FP_COOKIE).map(|v| parse_fp_cookie(&v)).unwrap_or_default();
    if input.click_id.is_none() {
        input.click_id = cookie_click;
    }
    let mut hit = app.new_hit(HitKind::Pixel, offer.offer_id.clone(), &headers, peer);
    input.apply(offer, &mut hit)?;
    hit.visitor_id = cookie_visitor;
    // HEAD (link checkers, prefetchers) is answered like GET and records nothing.
    if method != Method::HEAD {
        app.record(&hit, Durability::Written).await?;
    }
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], Json(json!({"status": "accepted", "hit_id": hit.hit_id}))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp_cookie_round_trip_and_garbage() {
        let c = "0190a5b2-7c3d-7e4f-8a1b-2c3d4e5f6a7b";
        assert_eq!(parse_fp_cookie(&format!("{c}.v-1")), (Some(c.to_string()), Some("v-1".to_string())));
        assert_eq!(parse_fp_cookie("nope.v"), (None, Some("v".to_string())));
        assert_eq!(parse_fp_cookie(&format!("{c}.")), (Some(c.to_string()), None));
        assert_eq!(parse_fp_cookie("plain"), (None, None));
        assert_eq!(parse_fp_cookie(&format!("{c}.a b")).1, None);
    }

    #[test]
    fn cookie_days_in_range() {
        assert_eq!(parse_cookie_days("7"), Some(7));
        assert_eq!(parse_cookie_days("400"), Some(400));
        for bad in ["0", "401", "-1", "7.5", "", "x"] {
            assert_eq!(parse_cookie_days(bad), None, "{bad}");
        }
    }
}
