//! clicktrail collector: records clicks, pixel conversions and server postbacks into a
//! durable local spool and turns the spool into Parquet files in the lake (SPEC §1–3).
//!
//! `main` parses the command line; [`Collector::start`] opens the spool (recovering what an
//! earlier process left), the registry and the sink; [`serve`] runs the HTTP server until
//! its shutdown future resolves, then flushes everything to the lake.

pub mod adjustment;
pub mod config;
mod conn;
pub mod hit;
pub mod http;
pub mod import;
pub mod iphash;
pub mod lograte;
pub mod metrics;
pub mod registry;
pub mod sink;
pub mod spool;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::Either;
use axum::http::HeaderName;
use hyper_util::rt::{TokioIo, TokioTimer};
use lake::Lake;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

use crate::config::ServeArgs;
use crate::http::{AppState, ClientAddr, SharedState};
use crate::iphash::IpHasher;
use crate::lograte::{LogRate, LOG_PERIOD};
use crate::metrics::Metrics;
use crate::registry::RegistryCache;
use crate::sink::Sink;
use crate::spool::Spool;

/// Largest request head (request line and headers); larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request: hyper's default, which it parses into an array on
/// the stack (a configured limit costs a heap vector per request); more get 431.
pub const MAX_HEADERS: usize = 100;
/// Time a client has to send its request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A started collector: state shared with the handlers, and its background tasks.
pub struct Collector {
    pub state: SharedState,
    pub sink: Sink,
    args: ServeArgs,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Collector {
    /// Opens the spool (taking its lock and recovering leftovers), loads the registry and
    /// starts the registry refresher and the sink, whose first pass uploads whatever an
    /// earlier process left.
    pub async fn start(lake: Lake, args: ServeArgs, public_url: url::Url) -> anyhow::Result<Collector> {
        let spool = Spool::open(&args.spool, args.spool_max_bytes)?;
        let salt = match &args.ip_salt {
            Some(s) => s.clone(),
            None => IpHasher::load_or_create_salt(&args.spool)
                .with_context(|| format!("while reading the IP salt in {}", args.spool.display()))?,
        };
        let registry = RegistryCache::load_with_copy(lake.clone(), Some(args.spool.clone()))
            .await
            .with_context(|| format!("while loading the registry from {}", lake.url()))?;
        let metrics = Arc::new(Metrics::new());
        let real_ip_header = args
            .real_ip_header
            .as_deref()
            .map(|h| HeaderName::from_bytes(h.as_bytes()))
            .transpose()
            .context("--real-ip-header is not a header name")?;
        let state = Arc::new(AppState {
            registry: registry.clone(),
            spool: spool.clone(),
            metrics: metrics.clone(),
            ip_hasher: IpHasher::new(&salt),
            public_url,
            admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
            real_ip_header,
        });
        let sink = Sink::new(lake, spool, metrics);
        let (stop_tx, stop_rx) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(registry.run(args.registry_refresh, stop_rx.clone())),
            tokio::spawn(sink.clone().run(args.flush_interval, stop_rx)),
        ];
        Ok(Collector { state, sink, args, stop_tx, tasks })
    }

    /// Stops the background tasks and flushes the spool to the lake, retrying until
    /// `--shutdown-timeout`. What cannot be uploaded stays in the spool for the next start.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let deadline = tokio::time::Instant::now() + self.args.shutdown_timeout;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.sink.flush().await {
                Ok(n) => {
                    tracing::info!(hits = n, "spool flushed to the lake");
                    return Ok(());
                }
                Err(e) if tokio::time::Instant::now() + delay < deadline => {
                    tracing::warn!(error = %e, "final upload failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(error = %e, spool = %self.args.spool.display(), "could not upload the spool before exiting; it stays in the spool and is uploaded at the next start");
                    return Ok(());
                }
            }
        }
    }
}

/// The listening sockets for `threads` HTTP threads on `addr`, all on the same port.
///
/// With more than one thread every socket has `SO_REUSEPORT`, so the kernel spreads new
/// connections over the threads (each runs its own event loop, see [`serve`]). A port in use
/// is refused as a plain bind would: the address is first bound once without
/// `SO_REUSEPORT` (which fails when anything listens there, including another collector's
/// group), then released and bound by the group. Port 0 picks one free port for all.
pub async fn bind(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let threads = threads.max(1);
    let socket = |addr: SocketAddr, group: bool| -> std::io::Result<tokio::net::TcpSocket> {
        let s = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As std's and tokio's `bind` do on Unix: a restart may bind at once, while
        // connections of the last process linger in TIME_WAIT.
        #[cfg(unix)]
        s.set_reuseaddr(true)?;
        #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
        if group {
            s.set_reuseport(true)?;
        }
        #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
        let _ = group;
        s.bind(addr)?;
        Ok(s)
    };
    let group = threads > 1 && cfg!(all(unix, not(any(target_os = "solaris", target_os = "illumos"))));
    if !group {
        return Ok(vec![socket(addr, false)?.listen(LISTEN_BACKLOG)?.into_std()?]);
    }
    let port = {
        let probe = socket(addr, false)?;
        probe.local_addr()?
    };
    let mut all = Vec::with_capacity(threads);
    for _ in 0..threads {
        all.push(socket(port, true)?.listen(LISTEN_BACKLOG)?.into_std()?);
    }
    Ok(all)
}

/// Connections waiting in the kernel per listening socket.
const LISTEN_BACKLOG: u32 = 1024;

/// Serves HTTP/1.1 on `listeners` (from [`bind`]) until `shutdown` resolves: one thread
/// per listener, each with its own single-threaded event loop (no work stealing, no
/// cross-thread wake-ups on the click path; the spool's group write forms per thread).
/// Each connection starts on the `conn` module's loop for plain clicks and goes to hyper at its
/// first other request. Then stops accepting, lets in-flight requests finish (bounded), and flushes the spool
/// to the lake.
pub async fn serve(listeners: Vec<std::net::TcpListener>, collector: Collector, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    use futures::StreamExt;
    anyhow::ensure!(!listeners.is_empty(), "no listening socket");
    let app = http::router(collector.state.clone(), collector.args.request_timeout);
    // When-full policy of `--max-connections` (over all threads): a connection holds a slot
    // until it closes; with none free the threads stop accepting, so new connections wait
    // in the kernel's listen backlog (and are refused by the kernel once it is full)
    // instead of costing a file descriptor and a task each (see `Worker::run`).
    let slots = Arc::new(tokio::sync::Semaphore::new(collector.args.max_connections as usize));
    let (stop_tx, stop_rx) = watch::channel(false);
    let addr = listeners[0].local_addr()?;
    let threads = listeners.len();
    let mut done = futures::stream::FuturesUnordered::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let worker = Worker {
            app: app.clone(),
            state: collector.state.clone(),
            slots: slots.clone(),
            max_connections: collector.args.max_connections,
            stop: stop_rx.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start an HTTP thread's event loop")
                    .and_then(|rt| rt.block_on(worker.run(listener)));
                let _ = tx.send(result);
            })
            .context("cannot start an HTTP thread")?;
        done.push(rx);
    }
    tracing::info!(addr = %addr, lake = %collector.sink_lake_url(), max_connections = collector.args.max_connections, http_threads = threads, "collector listening");
    tokio::pin!(shutdown);
    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        _ = &mut shutdown => {}
        Some(ended) = done.next() => {
            failure = Some(ended.unwrap_or_else(|_| Err(anyhow::anyhow!("an HTTP thread panicked"))).err().unwrap_or_else(|| anyhow::anyhow!("an HTTP thread stopped")));
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    while let Some(ended) = done.next().await {
        if let Err(e) = ended.unwrap_or_else(|_| Err(anyhow::anyhow!("an HTTP thread panicked"))) {
            failure.get_or_insert(e);
        }
    }
    // The spool is flushed whatever happened to the HTTP threads: acknowledged hits are in it.
    collector.shutdown().await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One HTTP thread: its listener, the router, and what all threads share.
struct Worker {
    app: axum::Router,
    state: SharedState,
    slots: Arc<tokio::sync::Semaphore>,
    max_connections: u32,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self, listener: std::net::TcpListener) -> anyhow::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES);
        let builder = Arc::new(builder);
        // Every connection task holds a sender: all are gone once `alive_rx` yields `None`.
        let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut stop = self.stop.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        static AT_LIMIT: LogRate = LogRate::new(LOG_PERIOD);
        static ACCEPT_FAILED: LogRate = LogRate::new(LOG_PERIOD);
        loop {
            if self.slots.available_permits() == 0 {
                if let Some(more) = AT_LIMIT.check() {
                    tracing::warn!(max_connections = self.max_connections, times_since_last_line = more, "connection limit reached; new connections wait until one closes");
                }
            }
            // Accept only while a slot is free, but take it only once a connection is in
            // hand: a thread whose socket gets no connection must not hold a slot another
            // thread's connection needs. Two threads may both see the last slot free; the one
            // that loses holds its accepted connection, unserved, until a slot frees, so at
            // most one connection per thread is accepted past the limit.
            tokio::select! {
                free = self.slots.acquire() => drop(free.context("the connection slots are closed")?),
                _ = &mut stopped => break,
            }
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            if let Some(more) = ACCEPT_FAILED.check() {
                                tracing::warn!(error = %e, failed_since_last_line = more, "accept failed");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let slot = tokio::select! {
                        slot = self.slots.clone().acquire_owned() => slot.context("the connection slots are closed")?,
                        _ = &mut stopped => break,
                    };
                    let _ = stream.set_nodelay(true);
                    let router = self.app.clone();
                    let state = self.state.clone();
                    let builder = builder.clone();
                    let mut stop = self.stop.clone();
                    let alive = alive_tx.clone();
                    tokio::spawn(async move {
                        // Plain clicks first, on our own loop; the first other request
                        // hands the connection, bytes read included, to hyper.
                        if let Some(io) = conn::serve(stream, peer, &state, &mut stop).await {
                            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                                // Clicks skip the router here too (see `is_plain_click`).
                                if http::is_plain_click(&req) {
                                    let state = state.clone();
                                    return Either::Left(async move { Ok(http::serve_click(&state, req, Some(peer)).await) });
                                }
                                req.extensions_mut().insert(ClientAddr(peer));
                                Either::Right(router.clone().call(req))
                            });
                            let conn = builder.serve_connection(TokioIo::new(io), svc);
                            tokio::pin!(conn);
                            // hyper-util's graceful shutdown, but the connection is polled
                            // first, so that a request already read is taken up before a
                            // shutdown closes the connection.
                            tokio::select! {
                                biased;
                                _ = conn.as_mut() => {}
                                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                                    conn.as_mut().graceful_shutdown();
                                    let _ = conn.await;
                                }
                            }
                        }
                        drop(slot);
                        drop(alive);
                    });
                }
                _ = &mut stopped => break,
            }
        }
        drop(listener);
        drop(alive_tx);
        if tokio::time::timeout(Duration::from_secs(10), alive_rx.recv()).await.is_err() {
            tracing::warn!("some connections did not finish within 10 s");
        }
        Ok(())
    }
}

impl Collector {
    fn sink_lake_url(&self) -> String {
        self.state.registry.lake().url().to_string()
    }
}

/// The public URL for a listen address when none is configured.
pub fn default_public_url(addr: SocketAddr) -> url::Url {
    url::Url::parse(&format!("http://{addr}")).expect("a socket address makes a URL")
}

#[cfg(test)]
mod tests {
    use super::bind;

    #[tokio::test]
    async fn a_port_in_use_is_refused_for_one_thread_and_for_a_group() {
        let group = bind("127.0.0.1:0".parse().unwrap(), 2).await.unwrap();
        assert_eq!(group.len(), 2);
        let addr = group[0].local_addr().unwrap();
        assert_eq!(group[1].local_addr().unwrap(), addr, "one port for all threads");
        // Another collector, with one thread or a group of its own, may not join in.
        for threads in [1, 2] {
            let err = bind(addr, threads).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{threads} threads: {err}");
        }
        // Nor may a collector take a port a plain listener has.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind(plain.local_addr().unwrap(), 2).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
        // And connections to the port are accepted by the group.
        drop(plain);
        let _client = std::net::TcpStream::connect(addr).unwrap();
    }
}
