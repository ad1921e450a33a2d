//! clicktrail collector: records clicks, pixel conversions and server postbacks into a
//! durable local spool and turns the spool into Parquet files in the lake (SPEC §1–3).
//!
//! `main` parses the command line; [`Collector::start`] opens the spool (recovering what an
//! earlier process left), the registry and the sink; [`serve`] runs the HTTP server until
//! its shutdown future resolves, then flushes everything to the lake.

pub mod adjustment;
pub mod config;
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
use hyper_util::server::graceful::GracefulShutdown;
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
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
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

/// Serves HTTP/1.1 on `listener` until `shutdown` resolves: stops accepting, lets
/// in-flight requests finish (bounded), then flushes the spool to the lake.
pub async fn serve(listener: TcpListener, collector: Collector, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let app = http::router(collector.state.clone(), collector.args.request_timeout);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    tracing::info!(addr = %listener.local_addr()?, lake = %collector.sink_lake_url(), max_connections = collector.args.max_connections, "collector listening");
    // When-full policy of `--max-connections`: a connection holds a slot until it closes;
    // with none free the loop stops accepting, so new connections wait in the kernel's
    // listen backlog (and are refused by the kernel once it is full) instead of costing a
    // file descriptor and a task each.
    let slots = Arc::new(tokio::sync::Semaphore::new(collector.args.max_connections as usize));
    static AT_LIMIT: LogRate = LogRate::new(LOG_PERIOD);
    static ACCEPT_FAILED: LogRate = LogRate::new(LOG_PERIOD);
    loop {
        if slots.available_permits() == 0 {
            if let Some(more) = AT_LIMIT.check() {
                tracing::warn!(max_connections = collector.args.max_connections, times_since_last_line = more, "connection limit reached; new connections wait until one closes");
            }
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.context("the connection slots are closed")?,
            _ = &mut shutdown => break,
        };
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
                let _ = stream.set_nodelay(true);
                let router = app.clone();
                let state = collector.state.clone();
                let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    // Clicks, nearly all the traffic, skip the router (see `is_plain_click`).
                    if http::is_plain_click(&req) {
                        let state = state.clone();
                        return Either::Left(async move { Ok(http::serve_click(&state, req, Some(peer)).await) });
                    }
                    req.extensions_mut().insert(ClientAddr(peer));
                    Either::Right(router.clone().call(req))
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), svc));
                tokio::spawn(async move {
                    let _ = conn.await;
                    drop(slot);
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await.is_err() {
        tracing::warn!("some connections did not finish within 10 s");
    }
    collector.shutdown().await
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
