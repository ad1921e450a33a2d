//! `GET|POST /adjust`: a refund, rejection or restore of an earlier conversion sent by the
//! brand's server (SPEC §7), authenticated and read exactly like a postback. Answered
//! `200` only once the adjustment hit is fsync'd.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method};
use axum::Json;
use lake::schema::HitKind;
use serde_json::{json, Value};

use super::fields::{authenticate, body_pairs, Fields};
use super::{ApiError, Peer, SharedState};
use crate::adjustment::AdjustmentFields;
use crate::spool::Durability;

/// Raw `/adjust` fields; unrecognized pairs stay in `rest` for `params`.
#[derive(Debug, Default)]
struct AdjustInput {
    offer: Option<String>,
    token: Option<String>,
    fields: AdjustmentFields,
    rest: Vec<String>,
    seen: Vec<&'static str>,
}

impl Fields for AdjustInput {
    fn slot(&mut self, k: &str) -> Option<&mut Option<String>> {
        match k {
            "offer" | "offer_id" => Some(&mut self.offer),
            "token" => Some(&mut self.token),
            _ => self.fields.slot(k),
        }
    }

    fn rest(&mut self) -> &mut Vec<String> {
        &mut self.rest
    }

    fn field_name(k: &str) -> Option<&'static str> {
        known_field(k)
    }

    fn seen(&mut self) -> &mut Vec<&'static str> {
        &mut self.seen
    }
}

/// The `/adjust` field a JSON key names (its value must be a string or a number).
fn known_field(k: &str) -> Option<&'static str> {
    Some(match k {
        "offer" | "offer_id" => "offer",
        "token" => "token",
        "order_id" => "order_id",
        "action" => "action",
        "event" => "event",
        "amount" => "amount",
        "currency" => "currency",
        "adjustment_id" => "adjustment_id",
        _ => return None,
    })
}

pub async fn adjust(
    State(app): State<SharedState>,
    method: Method,
    RawQuery(query): RawQuery,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let mut input = AdjustInput::default();
    input.extend(body_pairs(&method, &headers, &body, known_field)?)?;
    input.extend_query(query.as_deref())?;

    let offer_id = input.offer.as_deref().ok_or_else(|| ApiError::bad("offer", "offer is required"))?;
    let registry = app.registry.get_having(|r| r.offer(offer_id).is_some()).await;
    let offer = authenticate(&registry, offer_id, input.token.as_deref(), &headers)?;
    let mut hit = app.new_hit(HitKind::Adjustment, offer.offer_id.clone(), &headers, peer);
    input.fields.apply(offer, &mut hit)?;
    hit.params = super::join_params(&input.rest);
    app.record(&hit, Durability::Synced).await?;
    Ok(Json(json!({ "status": "accepted", "hit_id": hit.hit_id })))
}
