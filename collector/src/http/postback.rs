//! `GET|POST /postback`: a conversion sent by the brand's server, authenticated by the
//! offer's token (`token=` or `Authorization: Bearer`). Fields come from the query string,
//! a form body or a JSON body. Answered `200` only once the hit is fsync'd.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::Json;
use lake::schema::HitKind;
use serde_json::{json, Value};

use super::conversion::{known_field, ConversionInput};
use super::fields::{authenticate, body_pairs, Fields};
use super::{ApiError, Peer, SharedState};
use crate::spool::Durability;

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
    input.extend(body_pairs(&method, &headers, &body, known_field)?)?;
    input.extend_query(query.as_deref())?;

    let offer_id = input.offer_id()?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = authenticate(&registry, offer_id, input.token.as_deref(), &headers)?;
    // A coupon attributes a conversion without a click (SPEC §8).
    if input.click_id.is_none() && input.coupon.is_none() {
        return Err(ApiError::bad("click_id", "click_id is required (or a coupon)"));
    }
    let mut hit = app.new_hit(HitKind::Postback, offer.offer_id.clone(), &headers, peer);
    input.apply(offer, &mut hit)?;
    app.record(&hit, Durability::Synced).await?;
    Ok(Json(json!({ "status": "accepted", "hit_id": hit.hit_id })))
}
