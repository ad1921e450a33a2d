//! `GET /p.gif`: the image-pixel conversion (`HEAD` answers the same and records nothing),
//! and `GET /t.js`: the JavaScript snippet that keeps the click id in a first-party cookie
//! on the brand's site and sends conversions to `/p.gif`.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use lake::registry::DEFAULT_COOKIE_DAYS;
use lake::schema::HitKind;

use super::conversion::ConversionInput;
use super::fields::Fields;
use super::{cookie_value, is_visitor_id, pairs, ApiError, Peer, SharedState, VISITOR_COOKIE};
use crate::spool::Durability;

/// A transparent 1×1 GIF.
pub const GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x21,
    0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44,
    0x01, 0x00, 0x3b,
];

const SCRIPT: &str = include_str!("t.js");

/// `HEAD` is checked and answered like `GET` (without the body) but records nothing.
pub async fn pixel(
    State(app): State<SharedState>,
    method: Method,
    RawQuery(query): RawQuery,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut input = ConversionInput::default();
    input.extend_query(query.as_deref())?;
    let offer_id = input.offer_id()?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = registry.offer(offer_id).ok_or_else(|| ApiError::unknown_offer("offer", offer_id))?;
    if input.token.is_some() {
        // A postback token must never be stored with a browser hit's params.
        return Err(ApiError::bad("token", "pixels take no token; send server-side conversions to /postback"));
    }
    let mut hit = app.new_hit(HitKind::Pixel, offer.offer_id.clone(), &headers, peer);
    input.apply(offer, &mut hit)?;
    hit.visitor_id = cookie_value(&headers, VISITOR_COOKIE).filter(|v| is_visitor_id(v));
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

/// Serves the snippet with this collector's URL and the offer's cookie lifetime filled in
/// (`/t.js?offer=ID`; without an offer the lifetime is the default 28 days and every
/// `convert` call must name its offer).
pub async fn script(State(app): State<SharedState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let offer_param = pairs(query.as_deref()).into_iter().find(|(k, _)| k == "offer").map(|(_, v)| v);
    let (offer_json, days) = match &offer_param {
        None => ("null".to_string(), DEFAULT_COOKIE_DAYS),
        Some(id) => {
            let registry = app.registry.get();
            let offer = registry.offer(id).ok_or_else(|| ApiError::unknown_offer("offer", id))?;
            (serde_json::to_string(&offer.offer_id).unwrap_or_default(), offer.cookie_days)
        }
    };
    let base = app.public_url.as_str().trim_end_matches('/');
    let body = SCRIPT
        .replace("__CLICKTRAIL_COLLECTOR__", &serde_json::to_string(base).unwrap_or_default())
        .replace("__CLICKTRAIL_OFFER__", &offer_json)
        .replace("__CLICKTRAIL_COOKIE_DAYS__", &days.to_string());
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response())
}
