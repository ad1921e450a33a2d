//! `GET /healthz` (liveness), `GET /readyz` (readiness: can hits be stored?) and
//! `GET /metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiError, SharedState};

/// Liveness: `200` while the process serves HTTP, whatever the state of the spool (a
/// restart would not free it); `ready` tells what `/readyz` would answer.
pub async fn healthz(State(app): State<SharedState>) -> Response {
    let stats = app.spool.stats();
    let used = stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
    let body = json!({
        "status": "ok",
        "ready": app.spool.unready_reason().is_none(),
        "spool_bytes": used,
        "spool_max_bytes": app.spool.max_bytes(),
        "registry_error": app.registry.last_error(),
    });
    (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Readiness: `200 {"status":"ready"}` while hits can be stored; `503
/// {"status":"unavailable","reason":…}` while the spool refuses them (full, or its disk
/// failing), so a load balancer sends traffic to another collector until the lake has
/// taken the spool's data.
pub async fn readyz(State(app): State<SharedState>) -> Response {
    let used = app.spool.stats().bytes.load(std::sync::atomic::Ordering::Relaxed);
    let (status, body) = match app.spool.unready_reason() {
        None => (StatusCode::OK, json!({ "status": "ready", "spool_bytes": used, "spool_max_bytes": app.spool.max_bytes() })),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "unavailable", "reason": reason, "spool_bytes": used, "spool_max_bytes": app.spool.max_bytes() }),
        ),
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Prometheus text (OpenMetrics syntax, which the classic text parser also reads): served
/// as `application/openmetrics-text` to scrapers that ask for it, else as `text/plain`.
pub async fn metrics(State(app): State<SharedState>, headers: axum::http::HeaderMap) -> Response {
    let used = app.spool.stats().bytes.load(std::sync::atomic::Ordering::Relaxed);
    let lag = app
        .spool
        .oldest_pending_ms()
        .map(|oldest| (chrono::Utc::now().timestamp_millis() - oldest as i64).max(0) / 1000)
        .unwrap_or(0);
    let text = app.metrics.render(used, app.spool.max_bytes(), lag);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let content_type =
        if openmetrics { "application/openmetrics-text; version=1.0.0; charset=utf-8" } else { "text/plain; version=0.0.4; charset=utf-8" };
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

/// `HEAD /postback` and `HEAD /adjust`: `405` with `Allow: GET, POST`, nothing recorded
/// (a HEAD that reached the GET handler would store a hit whose answer nobody reads).
pub async fn head_not_allowed() -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET, POST"), (header::CACHE_CONTROL, "no-store")]).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound { field: None, message: "no such endpoint".into() }
}
