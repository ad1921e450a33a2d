//! Request fields shared by the authenticated endpoints (`/postback`, `/adjust`): a query
//! string, a form body or a JSON body read into ordered pairs, the request authenticated,
//! and the [`Fields`] trait that routes each pair to its slot.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method};
use lake::registry::{Offer, Registry};
use serde_json::value::RawValue;

use super::{bearer, constant_time_eq, pairs, ApiError};

/// Names the field a JSON key stands for when its value must be a string or a number;
/// `None`: any JSON value is kept in `params` as its text.
pub type KnownField = fn(&str) -> Option<&'static str>;

/// A JSON object's members in order, duplicates kept (a map would keep only the last of
/// two equal keys, silently).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(member);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// JSON body fields as text: strings as they are, numbers as their exact literal (so
/// `12.50` is never a float), null as absent. A known key sent twice is refused, even
/// when one of the two is null.
fn json_pairs(body: &[u8], known: KnownField) -> Result<Vec<(String, String)>, ApiError> {
    let Members(members) =
        serde_json::from_slice(body).map_err(|e| ApiError::bad("body", format!("body is not a JSON object: {e}")))?;
    let mut out = Vec::with_capacity(members.len());
    let mut seen: Vec<&'static str> = Vec::new();
    for (k, raw) in members {
        if let Some(field) = known(&k) {
            if seen.contains(&field) {
                return Err(ApiError::bad(field, format!("{field} is sent more than once")));
            }
            seen.push(field);
        }
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
///
/// One rule for the query string, form and JSON bodies alike: a known field may be sent
/// once per request (an alias such as `offer_id` for `offer` counts as the same field, and
/// so does the same field in the query and the body); a second one is refused with `400`
/// naming it, since which of two tokens or offers counts is not for the sender to guess.
/// Unknown fields may repeat.
pub trait Fields {
    /// The slot of key `k`, if the endpoint knows it.
    fn slot(&mut self, k: &str) -> Option<&mut Option<String>>;
    fn rest(&mut self) -> &mut Vec<String>;
    /// The field name of key `k` (aliases give the same name), if the endpoint knows it.
    fn field_name(k: &str) -> Option<&'static str>;
    /// The known fields taken so far.
    fn seen(&mut self) -> &mut Vec<&'static str>;

    /// Takes pairs in order; empty values count as not sent.
    fn extend(&mut self, pairs: impl IntoIterator<Item = (String, String)>) -> Result<(), ApiError> {
        for (k, v) in pairs {
            take(self, k, v, super::encode_pair)?;
        }
        Ok(())
    }

    /// Takes a query string; unrecognized segments are kept as sent.
    fn extend_query(&mut self, query: Option<&str>) -> Result<(), ApiError> {
        for (k, v, raw) in super::query_segments(query) {
            take(self, k, v, |_, _| raw.to_string())?;
        }
        Ok(())
    }
}

fn take<F: Fields + ?Sized>(fields: &mut F, k: String, v: String, raw: impl FnOnce(&str, &str) -> String) -> Result<(), ApiError> {
    if let Some(name) = F::field_name(&k) {
        if fields.seen().contains(&name) {
            return Err(ApiError::bad(name, format!("{name} is sent more than once")));
        }
        fields.seen().push(name);
    }
    match fields.slot(&k) {
        Some(slot) => {
            if !v.is_empty() {
                *slot = Some(v);
            }
        }
        None => {
            let text = raw(&k, &v);
            fields.rest().push(text);
        }
    }
    Ok(())
}
