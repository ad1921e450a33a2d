//! Helpers for the collector's integration tests: an in-process collector on port 0 over a
//! temporary lake, the real binary for crash tests, and reading the lake's Parquet back.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use collector::config::ServeArgs;
use collector::hit::Hit;
use collector::registry::{self, NewLink};
use lake::registry::Offer;
use lake::schema::{hit, HitKind};
use lake::Lake;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tokio::sync::oneshot;

pub const TOKEN: &str = "postback-secret-1";
pub const ADMIN: &str = "admin-secret";

pub fn serve_args(spool: &Path) -> ServeArgs {
    ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        spool: spool.to_path_buf(),
        public_url: None,
        flush_interval: Duration::from_secs(60),
        spool_max_bytes: 1 << 30,
        admin_token: Some(ADMIN.into()),
        ip_salt: Some("test-salt".into()),
        registry_refresh: Duration::from_millis(200),
        real_ip_header: None,
        request_timeout: Duration::from_secs(10),
        shutdown_timeout: Duration::from_secs(5),
        max_connections: 10_000,
        // Two event loops on one port, as on a two-core machine: the tests cross both.
        http_threads: Some(2),
    }
}

/// Registers offers `shoes` (EUR, 7-day cookies) and `bags` (USD) and links `ann1`
/// (shoes/ann) and `bob1` (bags/bob, own destination).
pub async fn seed_registry(lake: &Lake) {
    for (id, dest, cur, days) in [("shoes", "https://shop.example.com/landing?src=ct", "EUR", 7), ("bags", "https://bags.example.org/", "USD", 28)] {
        registry::add_offer(lake, Offer::new(id.into(), dest.into(), TOKEN.into(), cur.into(), days), "test")
            .await
            .unwrap();
    }
    for (code, offer, member, dest) in [("ann1", "shoes", "ann", None), ("bob1", "bags", "bob", Some("https://bags.example.org/sale"))] {
        registry::add_link(lake, NewLink { offer_id: offer.into(), member_id: member.into(), destination_url: dest.map(String::from), code: Some(code.into()) }, "test")
            .await
            .unwrap();
    }
}

/// A collector running in this process on 127.0.0.1:<random>.
pub struct TestServer {
    pub base: String,
    pub lake_url: String,
    pub spool: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    pub async fn start(lake_url: &str, args: ServeArgs) -> TestServer {
        let lake = Lake::open(lake_url).unwrap();
        let listeners = collector::bind(args.listen, args.http_threads.unwrap_or(1) as usize).await.unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let public = args.public_url.clone().unwrap_or_else(|| collector::default_public_url(addr));
        let spool = args.spool.clone();
        let c = collector::Collector::start(lake, args, public).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(collector::serve(listeners, c, async move {
            let _ = rx.await;
        }));
        TestServer { base: format!("http://{addr}"), lake_url: lake_url.into(), spool, stop: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Graceful stop: the same path as SIGTERM (stop accepting, flush, upload).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn col_str(batch: &RecordBatch, name: &str, row: usize) -> Option<String> {
    let col = batch.column_by_name(name)?;
    if col.is_null(row) {
        return None;
    }
    Some(col.as_string::<i32>().value(row).to_string())
}

/// Every hit in every `hits/**/*.parquet` of the lake, checking that each file holds only
/// rows of its folder's UTC date and hour.
pub async fn read_hits(lake_url: &str) -> Vec<Hit> {
    let lake = Lake::open(lake_url).unwrap();
    let store = lake.store().clone();
    let mut out = Vec::new();
    let files: Vec<_> = {
        use futures::TryStreamExt;
        store.list(Some(&object_store::path::Path::from("hits"))).try_collect::<Vec<_>>().await.unwrap()
    };
    for meta in files {
        if !meta.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let (date, hour) = lake::layout::parse_hits_path(&meta.location).expect("hits file in date=/hour= folders");
        let bytes = store.get(&meta.location).await.unwrap().bytes().await.unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ts = batch.column_by_name(hit::TS).unwrap().as_primitive::<TimestampMicrosecondType>().clone();
            let amount = batch.column_by_name(hit::AMOUNT_MICROS).unwrap().as_primitive::<Int64Type>().clone();
            for row in 0..batch.num_rows() {
                let kind = match col_str(&batch, hit::KIND, row).as_deref() {
                    Some("click") => HitKind::Click,
                    Some("pixel") => HitKind::Pixel,
                    Some("postback") => HitKind::Postback,
                    Some("adjustment") => HitKind::Adjustment,
                    other => panic!("bad kind {other:?}"),
                };
                let h = Hit {
                    hit_id: col_str(&batch, hit::HIT_ID, row).unwrap(),
                    kind,
                    ts: ts.value(row),
                    offer_id: col_str(&batch, hit::OFFER_ID, row).unwrap(),
                    member_id: col_str(&batch, hit::MEMBER_ID, row),
                    link_code: col_str(&batch, hit::LINK_CODE, row),
                    click_id: col_str(&batch, hit::CLICK_ID, row),
                    visitor_id: col_str(&batch, hit::VISITOR_ID, row),
                    event: col_str(&batch, hit::EVENT, row),
                    order_id: col_str(&batch, hit::ORDER_ID, row),
                    amount_micros: (!amount.is_null(row)).then(|| amount.value(row)),
                    currency: col_str(&batch, hit::CURRENCY, row),
                    user_agent: col_str(&batch, hit::USER_AGENT, row),
                    referer: col_str(&batch, hit::REFERER, row),
                    ip_hash: col_str(&batch, hit::IP_HASH, row),
                    params: col_str(&batch, hit::PARAMS, row),
                    action: col_str(&batch, hit::ACTION, row),
                    adjustment_id: col_str(&batch, hit::ADJUSTMENT_ID, row),
                    coupon: col_str(&batch, hit::COUPON, row),
                };
                let t = chrono::DateTime::from_timestamp_micros(h.ts).unwrap();
                assert_eq!((t.date_naive(), chrono::Timelike::hour(&t)), (date, hour), "{} holds a row of another hour", meta.location);
                out.push(h);
            }
        }
    }
    out
}

pub fn by_kind(hits: &[Hit], kind: HitKind) -> Vec<&Hit> {
    hits.iter().filter(|h| h.kind == kind).collect()
}

/// Query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

/// Whether tests that need an outside tool must fail instead of skipping when it is missing.
pub fn services_required() -> bool {
    std::env::var("CLICKTRAIL_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}
