//! Request fields shared by the authenticated endpoints (`/postback`, `/adjust`): a query
//! string, a form body or a JSON body read into ordered pairs, the offer's token checked,
//! and the [`Fields`] trait that routes each pair to its slot.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method};
use lake::registry::{Offer, Registry};
use serde_json::value::RawValue;

use super::{bearer, constant_time_eq, pairs, ApiError};

/// Names the field a JSON key stands for when its value must be a string or a number;
/// `None`: any JSON value is kept in `params` as its text.
pub type KnownField = fn(&str) -> Option<&'static str>;

/// JSON body fields as text: strings as they are, numbers as their exact literal (so
/// `12.50` is never a float), null as absent.
fn json_pairs(body: &[u8], known: KnownField) -> Result<Vec<(String, String)>, ApiError> {
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
            match known(&k) {
                Some(field) => return Err(ApiError::bad(field, format!("{k} must be a string or a number"))),
                // Other keys are kept in `params` as their JSON text (`"test": true`).
                None => {
                    out.push((k, text.to_string()));
                    continue;
                }
            }
        };
        out.push((k, value));
    }
    Ok(out)
}

/// The pairs of a request body: JSON (by content type, or an object sent as text/plain or
/// without a type, which some postback tools do) or a form. Only `POST` bodies are read.
pub fn body_pairs(method: &Method, headers: &HeaderMap, body: &Bytes, known: KnownField) -> Result<Vec<(String, String)>, ApiError> {
    if *method != Method::POST || body.is_empty() {
        return Ok(Vec::new());
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let looks_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match mime.as_str() {
        "application/json" => json_pairs(body, known),
        _ if mime.ends_with("+json") => json_pairs(body, known),
        "" | "text/plain" if looks_json => json_pairs(body, known),
        "application/x-www-form-urlencoded" | "" | "text/plain" => {
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad("body", "form body is not UTF-8"))?;
            Ok(pairs(Some(text)))
        }
        other => Err(ApiError::bad("body", format!("unsupported content type {other:?}; send JSON or a form"))),
    }
}

/// The one answer for an unknown offer, an offer that takes no postbacks and a wrong token:
/// an unauthenticated caller cannot tell real offer ids from others.
pub fn bad_token() -> ApiError {
    ApiError::Unauthorized("unknown offer or bad postback token".into())
}

/// Authenticates a request for offer `offer_id` with its postback token, sent as `token=`
/// (`token`) or `Authorization: Bearer`, and returns the offer. The token is compared even
/// when the offer is unknown, so both refusals take the same work.
pub fn authenticate<'r>(registry: &'r Registry, offer_id: &str, token: Option<&str>, headers: &HeaderMap) -> Result<&'r Offer, ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()).or_else(|| bearer(headers)) else {
        return Err(ApiError::Unauthorized("postback token is required (token= or Authorization: Bearer)".into()));
    };
    let offer = registry.offer(offer_id);
    // An offer without a postback token takes browser conversions only: no token matches.
    let expected = offer.map_or("", |o| o.postback_token.as_str());
    let matches = constant_time_eq(token.as_bytes(), expected.as_bytes());
    match offer {
        Some(o) if matches && !expected.is_empty() => Ok(o),
        _ => Err(bad_token()),
    }
}

/// Fields collected from pairs: each known key has a slot; the other pairs stay in `rest`
/// for `params` (query segments as sent, body fields form-encoded).
pub trait Fields {
    /// The slot of key `k`, if the endpoint knows it.
    fn slot(&mut self, k: &str) -> Option<&mut Option<String>>;
    fn rest(&mut self) -> &mut Vec<String>;

    /// Takes pairs in order; a field sent twice keeps its first value, and empty values
    /// count as not sent.
    fn extend(&mut self, pairs: impl IntoIterator<Item = (String, String)>) {
        for (k, v) in pairs {
            take(self, k, v, super::encode_pair);
        }
    }

    /// Takes a query string; unrecognized segments are kept as sent.
    fn extend_query(&mut self, query: Option<&str>) {
        for (k, v, raw) in super::query_segments(query) {
            take(self, k, v, |_, _| raw.to_string());
        }
    }
}

fn take<F: Fields + ?Sized>(fields: &mut F, k: String, v: String, raw: impl FnOnce(&str, &str) -> String) {
    match fields.slot(&k) {
        Some(slot) => {
            if slot.is_none() && !v.is_empty() {
                *slot = Some(v);
            }
        }
        None => {
            let text = raw(&k, &v);
            fields.rest().push(text);
        }
    }
}
