//! One error type for every handler: 4xx answers carry a JSON body naming the problem
//! (and the field, where one is at fault); 5xx answers log the cause.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::lograte::{LogRate, LOG_PERIOD};
use crate::registry::RegistryError;
use crate::spool::SpoolError;

#[derive(Debug)]
pub enum ApiError {
    /// A missing or malformed field.
    BadRequest { field: &'static str, message: String },
    Unauthorized(String),
    NotFound { field: Option<&'static str>, message: String },
    /// An unknown tracking link: a small HTML page for the customer who clicked it.
    UnknownLink,
    Conflict(String),
    TooLarge,
    /// The hit cannot be stored (spool full or failing).
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn bad(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { field, message: message.into() }
    }

    /// 404 for an offer id not in the registry.
    pub fn unknown_offer(field: &'static str, id: &str) -> ApiError {
        ApiError::NotFound { field: Some(field), message: format!("unknown offer {id:?}") }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } | ApiError::UnknownLink => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<crate::adjustment::FieldError> for ApiError {
    fn from(e: crate::adjustment::FieldError) -> ApiError {
        ApiError::BadRequest { field: e.field, message: e.message }
    }
}

impl From<SpoolError> for ApiError {
    fn from(e: SpoolError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

/// A body that could not be read: over the limit (413) or otherwise malformed (400: a bad
/// chunk size or a cut-off chunked body, for instance).
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> ApiError {
        use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
        match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => ApiError::TooLarge,
            BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(e)) => {
                ApiError::bad("body", format!("the request body is malformed: {}", e.body_text()))
            }
            other => ApiError::bad("body", other.body_text()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::Invalid(m) => {
                let field = ["code", "offer_id", "member_id", "destination_url"]
                    .into_iter()
                    .find(|f| m.starts_with(f))
                    .unwrap_or("body");
                ApiError::BadRequest { field, message: m }
            }
            RegistryError::UnknownOffer(_) => ApiError::NotFound { field: Some("offer_id"), message: e.to_string() },
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            RegistryError::Lake(e) => ApiError::Internal(e.to_string()),
        }
    }
}

const NOT_FOUND_PAGE: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Link not found</title></head>\
<body><h1>Link not found</h1><p>This tracking link does not exist or is no longer active.</p></body></html>\n";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::UnknownLink => {
                return (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], NOT_FOUND_PAGE)
                    .into_response();
            }
            ApiError::BadRequest { field, message } => json!({ "error": message, "field": field }),
            ApiError::NotFound { field: Some(field), message } => json!({ "error": message, "field": field }),
            ApiError::NotFound { field: None, message } => json!({ "error": message }),
            ApiError::Unauthorized(m) | ApiError::Conflict(m) => json!({ "error": m }),
            ApiError::TooLarge => json!({ "error": "request body is over 16 KiB" }),
            ApiError::Unavailable(m) => {
                // Refusals come at request rate while the spool is full: one line a second.
                static REFUSALS: LogRate = LogRate::new(LOG_PERIOD);
                if let Some(more) = REFUSALS.check() {
                    tracing::warn!(error = %m, refused_since_last_line = more, "refusing hits that cannot be stored");
                }
                json!({ "error": "the hit could not be stored; retry later" })
            }
            ApiError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                json!({ "error": "internal error" })
            }
        };
        let mut resp = (status, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
