//! `GET|POST /postback`: a conversion sent by the brand's server, authenticated by the
//! offer's token (`token=` or `Authorization: Bearer`). Fields come from the query string,
//! a form body or a JSON body. Answered `200` only once the hit is fsync'd.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, Method};
use axum::Json;
use lake::schema::HitKind;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::conversion::ConversionInput;
use super::{bearer, constant_time_eq, pairs, ApiError, Peer, SharedState};
use crate::spool::Durability;

/// JSON body fields as text: strings as they are, numbers as their exact literal (so
/// `12.50` is never a float), null as absent.
fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_slice(body).map_err(|e| ApiError::bad("body", format!("body is not a JSON object: {e}")))?;
    let mut out = Vec::with_capacity(map.len());
    for (k, raw) in map {
        let text = raw.get().trim();
        if text == "null" {
            continue;
        }
        let value = if text.starts_with('"') {
            serde_json::from_str::<String>(text).map_err(|e| ApiError::bad("body", e.to_string()))?
        } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            text.to_string()
        } else {
            let field = match k.as_str() {
                "offer" | "offer_id" => "offer",
                "amount" => "amount",
                "currency" => "currency",
                "order_id" => "order_id",
                "event" => "event",
                "click_id" => "click_id",
                "token" => "token",
                // Other keys are kept in `params` as their JSON text (`"test": true`).
                _ => {
                    out.push((k, text.to_string()));
                    continue;
                }
            };
            return Err(ApiError::bad(field, format!("{k} must be a string or a number")));
        };
        out.push((k, value));
    }
    Ok(out)
}

pub async fn postback(
    State(app): State<SharedState>,
    method: Method,
    RawQuery(query): RawQuery,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let mut input = ConversionInput::default();
    if method == Method::POST && !body.is_empty() {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        // A JSON object sent without a JSON content type (or as text/plain, which some
        // postback tools do) is still JSON.
        let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        match mime.as_str() {
            "application/json" => input.extend(json_pairs(&body)?),
            _ if mime.ends_with("+json") => input.extend(json_pairs(&body)?),
            "" | "text/plain" if looks_json => input.extend(json_pairs(&body)?),
            "application/x-www-form-urlencoded" | "" | "text/plain" => {
                let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad("body", "form body is not UTF-8"))?;
                input.extend(pairs(Some(text)));
            }
            other => {
                return Err(ApiError::bad(
                    "body",
                    format!("unsupported content type {other:?}; send JSON or a form"),
                ))
            }
        }
    }
    input.extend_query(query.as_deref());

    let offer_id = input.offer_id()?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = registry.offer(offer_id).ok_or_else(|| ApiError::unknown_offer("offer", offer_id))?;
    let token = input.token.as_deref().filter(|t| !t.is_empty()).or_else(|| bearer(&headers));
    match token {
        // An offer without a postback token takes browser conversions only.
        _ if offer.postback_token.is_empty() => {
            return Err(ApiError::Unauthorized(format!("offer {offer_id:?} has no postback token: it takes no postbacks")))
        }
        None => return Err(ApiError::Unauthorized("postback token is required (token= or Authorization: Bearer)".into())),
        Some(t) if !constant_time_eq(t.as_bytes(), offer.postback_token.as_bytes()) => {
            return Err(ApiError::Unauthorized(format!("bad postback token for offer {offer_id:?}")))
        }
        Some(_) => {}
    }
    if input.click_id.is_none() {
        return Err(ApiError::bad("click_id", "click_id is required"));
    }
    let mut hit = app.new_hit(HitKind::Postback, offer.offer_id.clone(), &headers, peer);
    input.apply(offer, &mut hit)?;
    app.record(&hit, Durability::Synced).await?;
    Ok(Json(json!({ "status": "accepted", "hit_id": hit.hit_id })))
}
