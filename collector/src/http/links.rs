//! `POST /api/links` creates a tracking link, `GET /api/links?offer_id=&member_id=` lists
//! them. Both need the admin bearer token.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use lake::registry::Link;
use serde_json::{json, Value};

use super::{bearer, constant_time_eq, pairs, ApiError, SharedState};
use crate::registry::NewLink;

fn authorize(app: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &app.admin_token else {
        return Err(ApiError::Unauthorized("the admin API is off: start the collector with --admin-token".into()));
    };
    match bearer(headers) {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized("bad admin token".into())),
        None => Err(ApiError::Unauthorized("admin token required (Authorization: Bearer)".into())),
    }
}

/// The public URL of a link: `<public-url>/l/<code>`.
pub fn link_url(public: &url::Url, code: &str) -> String {
    format!("{}/l/{code}", public.as_str().trim_end_matches('/'))
}

fn link_json(public: &url::Url, l: &Link) -> Value {
    json!({
        "code": l.code,
        "url": link_url(public, &l.code),
        "offer_id": l.offer_id,
        "member_id": l.member_id,
        "destination_url": l.destination_url,
        "created_at": l.created_at,
    })
}

pub async fn create(
    State(app): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&app, &headers)?;
    let body = body?;
    let new: NewLink = serde_json::from_slice(&body).map_err(|e| {
        let msg = e.to_string();
        let field = ["offer_id", "member_id", "destination_url", "code"]
            .into_iter()
            .find(|f| msg.contains(&format!("`{f}`")))
            .unwrap_or("body");
        ApiError::bad(field, format!("invalid link request: {msg}"))
    })?;
    let link = app.registry.add_link(new, "POST /api/links").await?;
    tracing::info!(code = %link.code, offer = %link.offer_id, member = %link.member_id, "link created");
    Ok((StatusCode::CREATED, Json(link_json(&app.public_url, &link))))
}

pub async fn list(State(app): State<SharedState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers)?;
    let q = pairs(query.as_deref());
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let (offer, member) = (get("offer_id"), get("member_id"));
    let registry = app.registry.get();
    let mut links: Vec<&Link> = registry
        .links
        .values()
        .filter(|l| offer.is_none_or(|o| l.offer_id == o) && member.is_none_or(|m| l.member_id == m))
        .collect();
    links.sort_by(|a, b| (&a.created_at, &a.code).cmp(&(&b.created_at, &b.code)));
    Ok(Json(Value::Array(links.into_iter().map(|l| link_json(&app.public_url, l)).collect())))
}
