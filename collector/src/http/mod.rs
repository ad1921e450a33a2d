//! The HTTP interface (SPEC §3): a pure `router(state)`, one file per endpoint family.

mod adjust;
mod click;
mod conversion;
mod error;
mod fields;
pub mod firstparty;
mod links;
mod ops;
mod pixel;
mod postback;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use lake::schema::HitKind;

pub use click::{Redirect, REFERRER_POLICY};
pub use error::ApiError;
pub use links::link_url as links_url;

use crate::hit::Hit;
use crate::iphash::IpHasher;
use crate::metrics::Metrics;
use crate::registry::RegistryCache;
use crate::spool::Spool;

/// Largest request body accepted (SPEC: 413 past 16 KiB).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The visitor cookie.
pub const VISITOR_COOKIE: &str = "ct_vid";
/// The query parameter carrying the click id to the landing page.
pub const CLICK_ID_PARAM: &str = "ct_click_id";
/// The deep-link query parameter of `/l/{code}`.
pub const DEEP_LINK_PARAM: &str = "url";

/// Everything the handlers share.
pub struct AppState {
    pub registry: Arc<RegistryCache>,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub ip_hasher: IpHasher,
    pub public_url: url::Url,
    pub admin_token: Option<String>,
    pub real_ip_header: Option<HeaderName>,
}

pub type SharedState = Arc<AppState>;

/// The peer address of the connection, inserted by the server for every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

pub fn router(state: SharedState, request_timeout: Duration) -> Router {
    // Only the endpoints that read a body can be held up by a slow client past the head
    // (whose read time hyper bounds); the others answer from memory.
    let timeout = tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, request_timeout);
    let with_body = Router::new()
        // axum would answer HEAD with the GET handler, which records: these take no HEAD.
        .route("/postback", get(postback::postback).post(postback::postback).head(ops::head_not_allowed))
        .route("/adjust", get(adjust::adjust).post(adjust::adjust).head(ops::head_not_allowed))
        .route("/api/links", get(links::list).post(links::create))
        .route_layer(timeout);
    Router::new()
        .route("/l/{code}", get(click::redirect))
        .route("/p.gif", get(pixel::pixel).post(pixel::pixel))
        .route("/t.js", get(pixel::script))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(with_body)
        .merge(firstparty::routes(request_timeout))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(refuse_long_bodies))
        .layer(middleware::from_fn_with_state(state.clone(), count_rejects))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// `413` at once for a `Content-Length` over [`MAX_BODY_BYTES`], before any handler polls
/// the body: so no `100 Continue` is sent for it, and a client announcing 10¹² bytes is not
/// waited for until the request timeout. (Chunked bodies are cut off at the limit while
/// they are read.)
async fn refuse_long_bodies(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        let mut resp = ApiError::TooLarge.into_response();
        // The body is left unread: the connection cannot carry another request.
        resp.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return resp;
    }
    next.run(req).await
}

/// Counts every refused request by reason for `/metrics`.
/// (A `503` from `/readyz` is a probe's answer, not a refused request.)
async fn count_rejects(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let probe = req.uri().path() == "/readyz";
    let resp = next.run(req).await;
    if !probe {
        count_reject(&state, &resp);
    }
    resp
}

fn count_reject(state: &AppState, resp: &Response) {
    let reason = match resp.status() {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::SERVICE_UNAVAILABLE => "spool_full",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        s if s.is_server_error() => "internal",
        _ => return,
    };
    state.metrics.reject(reason);
}

/// Whether a request is a plain click, `GET` or `HEAD /l/{code}` without a body and with
/// a code that needs no decoding, which the server hands to [`serve_click`] without the
/// router: its layers (body limits, the reject counter) have nothing to do for it but
/// count a refusal, which `serve_click` does; everything else goes through [`router`].
pub fn is_plain_click<B>(req: &axum::http::Request<B>) -> bool {
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.uri().path().strip_prefix("/l/").is_some_and(|code| !code.is_empty() && !code.contains(['/', '%']))
        && !req.headers().contains_key(header::CONTENT_LENGTH)
        && !req.headers().contains_key(header::TRANSFER_ENCODING)
}

/// A plain click for the server's own HTTP/1.1 loop (`conn`), which writes the redirect
/// itself: the redirect, or any other answer, a refusal already counted as
/// [`serve_click`] counts it.
pub async fn click_for_wire(state: &AppState, parts: &axum::http::request::Parts, peer: Option<SocketAddr>) -> Result<click::Redirect, Response> {
    let code = parts.uri.path().strip_prefix("/l/").unwrap_or_default();
    click::click(state, code, parts, peer).await.map_err(|e| {
        let resp = e.into_response();
        count_reject(state, &resp);
        resp
    })
}

/// Answers a request [`is_plain_click`] accepted, as the router's `/l/{code}` route would.
pub async fn serve_click<B>(state: &AppState, req: axum::http::Request<B>, peer: Option<SocketAddr>) -> Response {
    let (parts, _) = req.into_parts();
    let code = parts.uri.path().strip_prefix("/l/").unwrap_or_default();
    let resp = click::click(state, code, &parts, peer).await.into_response();
    count_reject(state, &resp);
    resp
}

impl AppState {
    /// The client's IP: from the trusted proxy header when configured, else the peer.
    pub fn client_ip(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<IpAddr> {
        if let Some(name) = &self.real_ip_header {
            if let Some(ip) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
            {
                return Some(ip);
            }
        }
        peer.map(|p| p.ip())
    }

    /// A new hit with the request's user agent, referer and hashed IP filled in.
    pub fn new_hit(&self, kind: HitKind, offer_id: String, headers: &HeaderMap, peer: Option<SocketAddr>) -> Hit {
        let mut hit = Hit::new(kind, offer_id);
        let text = |h: header::HeaderName| headers.get(h).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        hit.user_agent = text(header::USER_AGENT);
        hit.referer = text(header::REFERER);
        hit.ip_hash = self.client_ip(headers, peer).map(|ip| self.ip_hasher.hash(ip));
        hit
    }

    /// Stores a hit (as durable as `durability`) and counts it.
    pub async fn record(&self, hit: &Hit, durability: crate::spool::Durability) -> Result<(), ApiError> {
        self.spool.append(hit, durability).await?;
        self.metrics.hit(hit.kind);
        Ok(())
    }
}

/// The value of cookie `name`, if the request carries it.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

/// Parses a query string or form body into ordered pairs.
pub fn pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

/// A query string's `k=v` segments in order: each decoded, with its text as sent (which
/// is what gets passed on and stored in `params`, byte for byte). Empty segments are skipped.
pub fn query_segments(raw: Option<&str>) -> Vec<(String, String, &str)> {
    let Some(q) = raw else { return Vec::new() };
    q.split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| {
            let (k, v) = form_urlencoded::parse(seg.as_bytes()).next().map(|(k, v)| (k.into_owned(), v.into_owned())).unwrap_or_default();
            (k, v, seg)
        })
        .collect()
}

/// Encodes one pair that did not arrive as query text (a form or JSON body field).
pub fn encode_pair(k: &str, v: &str) -> String {
    form_urlencoded::Serializer::new(String::new()).append_pair(k, v).finish()
}

/// `params`: the segments not consumed by the endpoint (sub-ids, utm_*), joined by `&`.
pub fn join_params(rest: &[String]) -> Option<String> {
    (!rest.is_empty()).then(|| rest.join("&"))
}

/// A `ct_vid` cookie is kept as it is when it looks like one of ours: a UUID, or any other
/// id of 1 to 64 characters from `[A-Za-z0-9_-]` (a value set by an earlier version or by
/// the brand); anything else is replaced (clicks) or ignored (pixels).
pub fn is_visitor_id(v: &str) -> bool {
    (1..=64).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares secrets in time independent of where they differ and of their lengths: the
/// BLAKE3 digests of both are compared (`blake3::Hash`'s `==` is constant-time), so a
/// length mismatch does not return early.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    blake3::hash(a) == blake3::hash(b)
}

/// Is `s` a UUID (any version, hyphenated)?
pub fn parse_uuid(s: &str) -> Option<uuid::Uuid> {
    (s.len() == 36).then(|| uuid::Uuid::parse_str(s).ok()).flatten()
}

/// The client's socket address, when the server supplied one.
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(parts.extensions.get::<ClientAddr>().map(|c| c.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::{constant_time_eq, is_plain_click};

    #[test]
    fn only_plain_clicks_skip_the_router() {
        let req = |method: &str, uri: &str, header: Option<(&str, &str)>| {
            let mut b = axum::http::Request::builder().method(method).uri(uri);
            if let Some((k, v)) = header {
                b = b.header(k, v);
            }
            b.body(()).unwrap()
        };
        assert!(is_plain_click(&req("GET", "/l/bench1?utm_source=x", None)));
        assert!(is_plain_click(&req("HEAD", "/l/bench1", Some(("user-agent", "x")))));
        // Codes that need decoding, other paths, methods and bodies take the router.
        assert!(!is_plain_click(&req("GET", "/l/bench%31", None)));
        assert!(!is_plain_click(&req("GET", "/l/bench1/", None)));
        assert!(!is_plain_click(&req("GET", "/l/", None)));
        assert!(!is_plain_click(&req("GET", "/lx/bench1", None)));
        assert!(!is_plain_click(&req("POST", "/l/bench1", None)));
        assert!(!is_plain_click(&req("GET", "/l/bench1", Some(("content-length", "20000")))));
        assert!(!is_plain_click(&req("GET", "/l/bench1", Some(("transfer-encoding", "chunked")))));
    }

    #[test]
    fn secrets_compare_whatever_their_lengths() {
        assert!(constant_time_eq(b"postback-secret-1", b"postback-secret-1"));
        assert!(!constant_time_eq(b"postback-secret-1", b"postback-secret-2"));
        assert!(!constant_time_eq(b"postback-secret-1", b"postback-secret-1x"));
        assert!(!constant_time_eq(b"x", b"postback-secret-1"));
        assert!(!constant_time_eq(b"", b"postback-secret-1"));
        assert!(constant_time_eq(b"", b""));
    }
}
