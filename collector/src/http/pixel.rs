//! `GET|POST /p.gif`: the pixel conversion (an image, or a `fetch`/`sendBeacon` POST of a
//! form; `HEAD` answers like `GET` and records nothing), and `GET /t.js`: the JavaScript
//! snippet that keeps the click id on the brand's site and sends conversions to `/p.gif`
//! (or, in first-party mode, to `/fp/convert` on the brand's own origin, see `firstparty`).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lake::registry::DEFAULT_COOKIE_DAYS;
use lake::schema::HitKind;

use super::conversion::ConversionInput;
use super::fields::Fields;
use super::firstparty::beacon_pairs;
use super::{cookie_value, is_visitor_id, pairs, ApiError, Peer, SharedState, VISITOR_COOKIE};
use crate::spool::Durability;

/// A transparent 1×1 GIF.
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21,
    0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44,
    0x01, 0x00, 0x3b,
];

const SCRIPT: &str = include_str!("t.js");

/// The pixel. Its answers, errors included, carry CORS headers for the page's origin so
/// that the snippet's `fetch` can read the status and warn about a refused conversion; the
/// answer holds nothing but the GIF or the field at fault. `HEAD` is checked and answered
/// like `GET` (without the body) but records nothing.
pub async fn pixel(
    State(app): State<SharedState>,
    RawQuery(query): RawQuery,
    Peer(peer): Peer,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut resp = record_pixel(&app, query.as_deref(), peer, &method, &headers, &body).await.into_response();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn record_pixel(
    app: &SharedState,
    query: Option<&str>,
    peer: Option<std::net::SocketAddr>,
    method: &Method,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut input = ConversionInput::default();
    input.extend_query(query)?;
    input.extend(beacon_pairs(method, headers, body)?)?;
    let offer_id = input.offer_id()?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = registry.offer(offer_id).ok_or_else(|| ApiError::unknown_offer("offer", offer_id))?;
    if input.token.is_some() {
        // A postback token must never be stored with a browser hit's params.
        return Err(ApiError::bad("token", "pixels take no token; send server-side conversions to /postback"));
    }
    let mut hit = app.new_hit(HitKind::Pixel, offer.offer_id.clone(), headers, peer);
    input.apply(offer, &mut hit)?;
    hit.visitor_id = cookie_value(headers, VISITOR_COOKIE).filter(|v| is_visitor_id(v));
    if method != Method::HEAD {
        app.record(&hit, Durability::Written).await?;
    }
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "image/gif"), (header::CACHE_CONTROL, "no-store")],
        GIF,
    )
        .into_response())
}

/// A strong validator of the served script: its bytes' hash.
fn etag_of(body: &str) -> String {
    format!("\"{}\"", &blake3::hash(body.as_bytes()).to_hex()[..32])
}

/// Does `If-None-Match` name `etag` (weak comparison, as RFC 9110 has it for this header)?
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

/// Serves the snippet with this collector's URL and, for `/t.js?offer=ID`, the offer's id and
/// cookie lifetime filled in. Without an offer the lifetime is the click's (the redirect adds
/// `ct_cd` to the landing URL), else the default 28 days, and every `convert` call must name
/// its offer. `text/javascript`, `nosniff`, a strong `ETag` (`304` on `If-None-Match`).
pub async fn script(State(app): State<SharedState>, RawQuery(query): RawQuery, headers: HeaderMap) -> Result<Response, ApiError> {
    let offer_param = pairs(query.as_deref()).into_iter().find(|(k, _)| k == "offer").map(|(_, v)| v);
    let (offer_json, days) = match &offer_param {
        None => ("null".to_string(), "null".to_string()),
        Some(id) => {
            let registry = app.registry.get_having(|r| r.offer(id).is_some()).await;
            let offer = registry.offer(id).ok_or_else(|| ApiError::unknown_offer("offer", id))?;
            (serde_json::to_string(&offer.offer_id).unwrap_or_default(), offer.cookie_days.to_string())
        }
    };
    let base = app.public_url.as_str().trim_end_matches('/');
    let body = SCRIPT
        .replace("__CLICKTRAIL_COLLECTOR__", &serde_json::to_string(base).unwrap_or_default())
        .replace("__CLICKTRAIL_OFFER__", &offer_json)
        .replace("__CLICKTRAIL_COOKIE_DAYS__", &days)
        .replace("__CLICKTRAIL_DEFAULT_COOKIE_DAYS__", &DEFAULT_COOKIE_DAYS.to_string());
    let etag = etag_of(&body);
    let status = if none_match(&headers, &etag) { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
    let etag = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.to_string()))?;
    let head = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300")),
        (header::ETAG, etag),
    ];
    Ok(match status {
        StatusCode::NOT_MODIFIED => (status, head).into_response(),
        _ => (status, head, body).into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists() {
        let tag = etag_of("x");
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
            none_match(&h, &tag)
        };
        assert!(with(&tag));
        assert!(with(&format!("\"other\", W/{tag}")));
        assert!(with("*"));
        assert!(!with("\"other\""));
        assert!(!none_match(&HeaderMap::new(), &tag));
        assert_ne!(etag_of("x"), etag_of("y"));
    }
}
