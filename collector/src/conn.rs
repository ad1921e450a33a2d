//! One accepted connection: plain clicks answered by a small HTTP/1.1 loop of our own, and
//! everything else by hyper.
//!
//! Clicks are nearly all the traffic, and hyper's general dispatcher cost about as much as
//! the click itself (BENCH.md). So while each request head on a connection is a plain
//! click ([`http::is_plain_click`]) and nothing about it is unusual, [`serve`] parses it
//! with `httparse` (as hyper does, with hyper's limits), answers it with the same click
//! logic ([`http::click_for_wire`]: what [`http::serve_click`] answers, the redirect not
//! made into a `Response`) and writes the response bytes hyper would write. On the first
//! head that is anything else (another path or method, HTTP/1.0, `Connection` other than
//! `keep-alive`, `Expect`, `Upgrade`, a body, an invalid head, a head over
//! [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] fields) it stops and hands the
//! connection to hyper with every byte read but not consumed ([`Replay`]), so hyper's
//! behaviour for all of that, 400 and 431 included, is unchanged.
//!
//! Kept from hyper's connection: the head must arrive within [`HEADER_READ_TIMEOUT`] from
//! when the server starts waiting for it (so an idle keep-alive connection is closed after
//! that long); on shutdown a connection between requests is closed at once, a request in
//! progress (or a new connection's first head) is answered with `connection: close` and
//! the connection then closed; pipelined requests are answered in order.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::http::{self, AppState, Redirect, REFERRER_POLICY};
use crate::{HEADER_READ_TIMEOUT, MAX_HEADERS, MAX_HEAD_BYTES};

/// Serves plain clicks on `io` until the client closes, the head read times out, shutdown
/// closes it, or a request needs hyper: then the connection, with the bytes already read
/// and not yet answered, is returned for hyper's `serve_connection`.
pub(crate) async fn serve(mut io: TcpStream, peer: SocketAddr, state: &AppState, stop: &mut watch::Receiver<bool>) -> Option<Replay> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    // A header map to reuse for the next request (hyper does the same).
    let mut cached = HeaderMap::new();
    // The head read timer. It is moved later only when it fires early (a head came since
    // it was set), not for every head: resetting a timer per request cost more than
    // parsing the request line.
    let timeout = tokio::time::sleep(HEADER_READ_TIMEOUT);
    tokio::pin!(timeout);
    // Shutdown, waited for with one registration for the whole connection.
    let mut stop_wait = stop.clone();
    let stopped = async move {
        let _ = stop_wait.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    // Whether a request has been taken up on this connection.
    let mut answered = false;
    loop {
        // Waiting for a head starts here: after the previous answer, as with hyper.
        let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
        let head = loop {
            if !buf.is_empty() {
                match parse(&mut buf, &mut cached) {
                    Parsed::Click(req) => break req,
                    Parsed::Partial if buf.len() < MAX_HEAD_BYTES => {}
                    Parsed::Partial | Parsed::Other => {
                        if !out.is_empty() && io.write_all(&out).await.is_err() {
                            return None;
                        }
                        return Some(Replay { pre: buf, io });
                    }
                }
            }
            // More bytes are needed: the answers so far go out first.
            if !out.is_empty() {
                if io.write_all(&out).await.is_err() {
                    return None;
                }
                out.clear();
            }
            // Idle on shutdown: closed at once, as hyper's graceful shutdown closes a
            // connection between requests. That is also a kept-alive connection with part
            // of its next head read; a new connection's first head is still answered.
            let idle = buf.is_empty() || answered;
            if idle && *stop.borrow() {
                let _ = io.shutdown().await;
                return None;
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            let woke = tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => Woke::Read(read),
                () = &mut timeout => Woke::Timeout,
                // Polled only while idle, and never again once ready (the connection closes).
                () = &mut stopped, if idle => Woke::Stop,
            };
            match woke {
                Woke::Read(Ok(n)) if n > 0 => {}
                Woke::Timeout if tokio::time::Instant::now() < deadline => {
                    // Set for an earlier head: this one has until `deadline`.
                    timeout.as_mut().reset(deadline);
                }
                // The client closed (mid-head or not) or the connection failed: no answer,
                // as with hyper. Nor for a head not complete in time.
                Woke::Read(_) | Woke::Timeout => return None,
                Woke::Stop => {
                    let _ = io.shutdown().await;
                    return None;
                }
            }
        };
        answered = true;
        let (mut parts, ()) = head.into_parts();
        let head_method = parts.method == Method::HEAD;
        let answer = http::click_for_wire(state, &parts, Some(peer)).await;
        parts.headers.clear();
        cached = parts.headers;
        // Shutdown began while this request was in progress: its answer is the last.
        let closing = *stop.borrow();
        let keep_alive = match answer {
            Ok(redirect) => {
                write_redirect(&redirect, head_method, closing, &mut out);
                !closing
            }
            Err(resp) => encode(resp, head_method, closing, &mut out).await,
        };
        if !keep_alive {
            if io.write_all(&out).await.is_ok() {
                let _ = io.shutdown().await;
            }
            return None;
        }
        if out.len() >= MAX_PENDING_OUT {
            if io.write_all(&out).await.is_err() {
                return None;
            }
            out.clear();
        }
    }
}

/// Bytes read at a time (hyper's first read is as large).
const READ_CHUNK: usize = 8192;
/// Answers to pipelined requests are written together, up to this many bytes.
const MAX_PENDING_OUT: usize = 64 * 1024;

enum Woke {
    Read(io::Result<usize>),
    Timeout,
    Stop,
}

// Returned once per head and taken apart at once: a box would cost an allocation a click.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A plain click, its head taken from the buffer.
    Click(Request<()>),
    /// The head is not complete yet.
    Partial,
    /// Anything hyper should answer; the buffer is left as it was.
    Other,
}

/// Parses the head at the start of `buf` as hyper would, taking it from `buf` only when it
/// is a plain click this loop answers itself.
fn parse(buf: &mut BytesMut, cached: &mut HeaderMap) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Invalid, or over MAX_HEADERS fields: hyper's 400 or 431.
        Err(_) => return Parsed::Other,
    };
    let method = match req.method {
        Some("GET") => Method::GET,
        Some("HEAD") => Method::HEAD,
        _ => return Parsed::Other,
    };
    // HTTP/1.0 (keep-alive only when asked for, answered as 1.0) is left to hyper; so are
    // heads over MAX_HEAD_BYTES. hyper serves every head up to its buffer limit (it refuses
    // with 431 only when an incomplete head fills the buffer); a longer one it serves or
    // refuses depending on how its bytes arrive, so it is left to hyper to decide.
    if req.version != Some(1) || len > MAX_HEAD_BYTES || !req.path.is_some_and(|p| p.starts_with("/l/")) {
        return Parsed::Other;
    }
    for h in req.headers.iter() {
        // What hyper's parser acts on (besides the body headers, which make the request
        // no plain click): a connection that is to close, an expectation, an upgrade.
        if h.name.eq_ignore_ascii_case("connection") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive") {
                return Parsed::Other;
            }
        } else if h.name.eq_ignore_ascii_case("expect") || h.name.eq_ignore_ascii_case("upgrade") {
            return Parsed::Other;
        }
    }
    // Where the target and the fields are in `buf` (`httparse` borrows it; the head is
    // then taken out of it without a copy, as hyper does).
    // (Offsets fit in `u16`: the head is at most MAX_HEAD_BYTES; most heads have few
    // fields, and a zeroed array for MAX_HEADERS of them cost more than the parse.)
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| ((s.as_ptr() as usize - base) as u16, s.len() as u16);
    let path = at(req.path.unwrap_or_default().as_bytes());
    let count = req.headers.len();
    let mut inline = [((0, 0), (0, 0)); 24];
    let mut spilled = Vec::new();
    let fields = if count <= inline.len() {
        &mut inline[..count]
    } else {
        spilled.resize(count, ((0, 0), (0, 0)));
        &mut spilled[..]
    };
    for (slot, h) in fields.iter_mut().zip(req.headers.iter()) {
        *slot = (at(h.name.as_bytes()), at(h.value));
    }
    let head = buf.split_to(len).freeze();
    let piece = |(start, n): (u16, u16)| head.slice(usize::from(start)..usize::from(start) + usize::from(n));
    // The same `http` types hyper builds; anything they refuse is hyper's to answer (400).
    let built = (|| {
        let uri = Uri::from_maybe_shared(piece(path)).ok()?;
        // (Emptied when it was put there.)
        let mut headers = std::mem::take(cached);
        headers.reserve(count);
        for &(name, value) in fields.iter() {
            let name = HeaderName::from_bytes(&piece(name)).ok()?;
            headers.append(name, HeaderValue::from_maybe_shared(piece(value)).ok()?);
        }
        Some((uri, headers))
    })();
    let Some((uri, headers)) = built else {
        unsplit(buf, &head);
        return Parsed::Other;
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    if !http::is_plain_click(&request) {
        unsplit(buf, &head);
        return Parsed::Other;
    }
    Parsed::Click(request)
}

/// Puts a head taken out of `buf` back in front of it.
fn unsplit(buf: &mut BytesMut, head: &[u8]) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// Appends a click's redirect to `out`: the bytes [`encode`] writes for its response
/// (`Redirect::into_response`), without building the response.
fn write_redirect(redirect: &Redirect, head_method: bool, closing: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 302 Found\r\nlocation: ");
    out.extend_from_slice(redirect.location.as_bytes());
    if let Some(cookie) = &redirect.set_cookie {
        out.extend_from_slice(b"\r\nset-cookie: ");
        out.extend_from_slice(cookie.as_bytes());
        out.extend_from_slice(b"\r\ncache-control: no-store\r\nreferrer-policy: ");
        out.extend_from_slice(REFERRER_POLICY.as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(b"\r\ncache-control: no-store\r\n");
    }
    if closing {
        out.extend_from_slice(b"connection: close\r\n");
    }
    // An empty body: `content-length: 0`, but not for HEAD.
    if !head_method {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"date: ");
    push_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends `resp` to `out` as hyper writes a response to an HTTP/1.1 request (lower-case
/// names in the map's order, its `content-length` and `date`, no body for `HEAD`, 204 or
/// 304), with `connection: close` when `closing`. Returns whether the connection stays
/// open.
async fn encode(resp: Response, head_method: bool, closing: bool, out: &mut Vec<u8>) -> bool {
    let (mut parts, body) = resp.into_parts();
    let status = parts.status;
    if closing {
        match parts.headers.entry(header::CONNECTION) {
            header::Entry::Occupied(mut e) => {
                if !e.iter().any(|v| has_close(v.as_bytes())) {
                    e.append(HeaderValue::from_static("close"));
                }
            }
            header::Entry::Vacant(e) => {
                e.insert(HeaderValue::from_static("close"));
            }
        }
    }
    // hyper: an ended body has no length to send (`content-length: 0` is implied), a known
    // size is sent as `content-length`, an unknown one chunked.
    let ended = body.is_end_stream();
    let exact = body.size_hint().exact();
    let bytes = if ended { Bytes::new() } else { axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default() };
    let informational_or_empty = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let can_have_body = !head_method && !informational_or_empty;

    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut keep_alive = true;
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut chunked = false;
    // `iter` yields a name's values one after the other.
    let mut prev: Option<&HeaderName> = None;
    for (name, v) in parts.headers.iter() {
        let again = prev == Some(name);
        prev = Some(name);
        let special = matches!(*name, header::CONNECTION | header::TRANSFER_ENCODING | header::CONTENT_LENGTH);
        if !special {
            // Each value on a line of its own.
            wrote_date |= *name == header::DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        }
        // These hyper writes as one line, values joined by ", " (the first length only).
        if *name == header::CONTENT_LENGTH && (again || (ended && !head_method)) {
            continue; // no body to send: hyper drops the header
        }
        if again {
            out.truncate(out.len() - 2);
            out.extend_from_slice(b", ");
        } else {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
        }
        if *name == header::CONNECTION && has_close(v.as_bytes()) {
            keep_alive = false;
        }
        if *name == header::TRANSFER_ENCODING {
            chunked = can_have_body;
        }
        wrote_len |= *name != header::CONNECTION;
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !wrote_len {
        if ended {
            if !head_method && !informational_or_empty {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        } else if let Some(n) = exact {
            if !informational_or_empty {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(n.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        } else if can_have_body {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            chunked = true;
        }
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if can_have_body && !bytes.is_empty() {
        if chunked {
            out.extend_from_slice(format!("{:X}\r\n", bytes.len()).as_bytes());
            out.extend_from_slice(&bytes);
            out.extend_from_slice(b"\r\n0\r\n\r\n");
        } else {
            out.extend_from_slice(&bytes);
        }
    } else if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    keep_alive && !closing
}

/// Whether a `Connection` value holds the `close` token.
fn has_close(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Appends the `date` value, rendered once a second per thread as hyper does.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(SystemTime, [u8; 29])> = const { std::cell::RefCell::new((UNIX_EPOCH, [0; 29])) };
    }
    CACHED.with_borrow_mut(|(next, text)| {
        let now = SystemTime::now();
        if now >= *next {
            let rendered = httpdate::fmt_http_date(now);
            if rendered.len() == text.len() {
                text.copy_from_slice(rendered.as_bytes());
            }
            let nanos = now.duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
            *next = now + Duration::from_secs(1) - Duration::from_nanos(u64::from(nanos));
        }
        out.extend_from_slice(text);
    });
}

/// A connection handed to hyper: the bytes already read from it come first.
pub(crate) struct Replay {
    pre: BytesMut,
    io: TcpStream,
}

impl AsyncRead for Replay {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pre.is_empty() {
            let n = this.pre.len().min(buf.remaining());
            buf.put_slice(&this.pre[..n]);
            this.pre.advance(n);
            if this.pre.is_empty() {
                this.pre = BytesMut::new(); // its memory is not needed any more
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Replay {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;
    use axum::response::IntoResponse;

    use super::{encode, has_close, write_redirect, Redirect};

    fn masked(bytes: &[u8]) -> String {
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        text.split("\r\n").map(|l| if l.starts_with("date: ") { "date: -" } else { l }).collect::<Vec<_>>().join("\r\n")
    }

    /// The redirect written directly is what `encode` writes for its response.
    #[tokio::test]
    async fn a_redirect_is_written_as_its_response_is_encoded() {
        let location = HeaderValue::from_static("https://shop.example.com/landing?src=ct&ct_click_id=x&ct_cd=7");
        let cookie = HeaderValue::from_static("ct_vid=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=604800");
        for set_cookie in [Some(cookie), None] {
            for head in [false, true] {
                for closing in [false, true] {
                    let redirect = Redirect { location: location.clone(), set_cookie: set_cookie.clone() };
                    let mut direct = Vec::new();
                    write_redirect(&redirect, head, closing, &mut direct);
                    let mut encoded = Vec::new();
                    let keep_alive = encode(redirect.into_response(), head, closing, &mut encoded).await;
                    assert_eq!(keep_alive, !closing);
                    assert_eq!(masked(&direct), masked(&encoded), "cookie {}, HEAD {head}, closing {closing}", set_cookie.is_some());
                    assert!(direct.ends_with(b" GMT\r\n\r\n"), "{}", masked(&direct));
                }
            }
        }
    }

    #[test]
    fn close_tokens() {
        assert!(has_close(b"close"));
        assert!(has_close(b"keep-alive, Close"));
        assert!(!has_close(b"keep-alive"));
        assert!(!has_close(b"closed"));
    }
}
