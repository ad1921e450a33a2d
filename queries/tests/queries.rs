//! The queries' tests: a small lake built here (every status, two offers, two currencies,
//! a bot, a conversion that only the longer window attributes), attributed by the real
//! pipeline with 28d and 7d; every named query run and its answer checked; the CLI run as a
//! user runs it; export round trips through CSV, JSON lines, Parquet (read back by polars,
//! and by DuckDB when it is installed) and a real PostgreSQL when one is given.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::process::Command;

use chrono::{NaiveDate, TimeZone, Utc};
use lake::schema::HitKind;
use lake::Lake;
use pipeline::gen::{self, Hit};
use pipeline::params::{parse_tz, Params};
use pipeline::progress::Progress;
use polars::prelude::*;
use queries::catalog;
use queries::engine::{self, Scope};
use queries::source::Source;

// ---------------------------------------------------------------- the lake

fn date(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn at(d: u32, h: u32, m: u32) -> i64 {
    Utc.with_ymd_and_hms(2026, 3, d, h, m, 0).unwrap().timestamp_micros()
}

struct Builder {
    hits: Vec<Hit>,
    n: u16,
}

impl Builder {
    fn uuid7(&mut self, ts: i64) -> String {
        self.n += 1;
        let mut rand = [0x22u8; 10];
        rand[8..].copy_from_slice(&self.n.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis((ts / 1000) as u64, &rand).into_uuid().to_string()
    }

    fn click(&mut self, ts: i64, offer: &str, member: &str, visitor: &str, ua: &str) -> String {
        let id = self.uuid7(ts);
        self.hits.push(Hit {
            hit_id: id.clone(),
            kind: HitKind::Click.as_str(),
            ts,
            offer_id: offer.into(),
            member_id: Some(member.into()),
            link_code: Some(format!("{member}-{offer}")),
            click_id: Some(id.clone()),
            visitor_id: Some(visitor.into()),
            user_agent: Some(ua.into()),
            ..Default::default()
        });
        id
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, kind: HitKind, ts: i64, offer: &str, event: &str, click: Option<&str>, visitor: Option<&str>, order: Option<&str>, amount: Option<(i64, &str)>) -> String {
        let id = self.uuid7(ts);
        self.hits.push(Hit {
            hit_id: id.clone(),
            kind: kind.as_str(),
            ts,
            offer_id: offer.into(),
            click_id: click.map(Into::into),
            visitor_id: visitor.map(Into::into),
            event: Some(event.into()),
            order_id: order.map(Into::into),
            amount_micros: amount.map(|a| a.0),
            currency: amount.map(|a| a.1.to_string()),
            user_agent: Some("Mozilla/5.0".into()),
            ..Default::default()
        });
        id
    }
}

const PHONE: &str = "Mozilla/5.0 (iPhone) Instagram 300.0";

/// The scenario every test reads. Returns the lake's folder (kept by the TempDir).
async fn build_lake(dir: &FsPath) -> Lake {
    fill(Lake::open(dir.to_str().unwrap()).unwrap()).await
}

async fn fill(lake: Lake) -> Lake {
    let mut b = Builder { hits: Vec::new(), n: 0 };
    let c1 = b.click(at(1, 10, 0), "shoes", "ann", "v1", PHONE);
    b.click(at(1, 10, 5), "shoes", "ann", "", "facebookexternalhit/1.1");
    let c2 = b.click(at(1, 11, 0), "shoes", "bob", "v2", PHONE);
    let c3 = b.click(at(1, 12, 0), "news", "cara", "v3", PHONE);
    // ann: attributed 30 minutes later (19.99 USD), then the same order again by pixel.
    b.conv(HitKind::Postback, at(1, 10, 30), "shoes", "purchase", Some(&c1), None, Some("o1"), Some((19_990_000, "USD")));
    b.conv(HitKind::Pixel, at(1, 10, 31), "shoes", "purchase", Some(&c1), Some("v1"), Some("o1"), Some((19_990_000, "USD")));
    // bob: 50 EUR a day later by click id; 100 USD ten days later through his visitor (28d only).
    b.conv(HitKind::Postback, at(2, 11, 0), "shoes", "purchase", Some(&c2), None, Some("o3"), Some((50_000_000, "EUR")));
    b.conv(HitKind::Pixel, at(11, 11, 0), "shoes", "purchase", None, Some("v2"), Some("o2"), Some((100_000_000, "USD")));
    // cara: a signup an hour later, no amount.
    b.conv(HitKind::Pixel, at(1, 13, 0), "news", "signup", Some(&c3), None, None, None);
    // not attributed: an unknown click id, an offer mismatch, no click at all.
    b.conv(HitKind::Postback, at(2, 9, 0), "shoes", "purchase", Some("not-a-click"), None, Some("o7"), Some((1_000_000, "USD")));
    b.conv(HitKind::Pixel, at(2, 9, 30), "news", "signup", Some(&c1), None, None, None);
    b.conv(HitKind::Pixel, at(3, 8, 0), "shoes", "purchase", None, None, Some("o9"), Some((5_000_000, "USD")));
    gen::write_hits(&lake, &b.hits, "test").await.unwrap();
    for window in ["28d", "7d"] {
        let p = Params::new(window.parse().unwrap(), parse_tz("UTC").unwrap(), date(1), date(11)).unwrap();
        pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();
    }
    lake
}

async fn fixture() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = build_lake(&dir.path().join("lake")).await;
    (dir, lake)
}

async fn run_query(lake: &Lake, name: &str, params: &[(&str, &str)]) -> DataFrame {
    let all = catalog::builtin().unwrap();
    let q = &all[name];
    let given: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let values = q.bind(&given).unwrap();
    let source = Source::new(lake.clone());
    let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
    let prepared = engine::prepare(&source, name, &q.sql, &scope, values).await.unwrap();
    queries::collect(name, prepared).unwrap()
}

/// The rows of `df` as text, one string per row, columns joined by `|` (nulls empty).
fn rows(df: &DataFrame, columns: &[&str]) -> Vec<String> {
    let df = df.select(columns.iter().copied()).unwrap();
    (0..df.height())
        .map(|i| {
            df.get_row(i)
                .unwrap()
                .0
                .iter()
                .map(|v| match v {
                    AnyValue::Null => String::new(),
                    AnyValue::String(s) => s.to_string(),
                    AnyValue::StringOwned(s) => s.to_string(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

// ---------------------------------------------------------------- money (SPEC §7)

/// A lake reported in Europe/Paris (UTC+1 in March) with commissions, refunds, a reject, a
/// late refund and click payouts. Every expected number below is worked out by hand from
/// these hits and rules.
async fn money_lake(dir: &FsPath) -> Lake {
    use lake::registry::{write_commissions, write_offers, CommissionRule, Offer};
    use object_store::PutPayload;
    let lake = Lake::open(dir.to_str().unwrap()).unwrap();
    let mut shop = Offer::new("shop".into(), "https://shop.example/".into(), "t".into(), "USD".into(), 28);
    shop.lock_days = 5;
    shop.min_lag_seconds = 3600;
    let app = Offer::new("app".into(), "https://app.example/".into(), "t".into(), "EUR".into(), 28);
    let rule = |offer: &str, event: &str, percent: &str, flat: &str| CommissionRule {
        offer_id: offer.into(),
        member_id: String::new(),
        event: event.into(),
        percent: percent.into(),
        flat: flat.into(),
        valid_from: String::new(),
    };
    lake.put_durable(&lake::layout::offers(), PutPayload::from(write_offers(&[shop, app]))).await.unwrap();
    let rules = [rule("shop", "", "10", ""), rule("shop", "click", "", "0.05"), rule("app", "signup", "", "2")];
    lake.put_durable(&lake::layout::commissions(), PutPayload::from(write_commissions(&rules))).await.unwrap();

    let mut b = Builder { hits: Vec::new(), n: 0 };
    let k1 = b.click(at(1, 9, 0), "shop", "ann", "va", PHONE);
    b.click(at(1, 9, 1), "shop", "ann", "", "curl/8.5.0");
    let k2 = b.click(at(1, 22, 30), "shop", "bob", "vb", PHONE); // 23:30 in Paris: Mar 1
    let k3 = b.click(at(2, 8, 0), "app", "cara", "vc", PHONE);
    let usd = |m: i64| Some((m * 1_000_000, "USD"));
    // ann: A 100 (commission 10), B 50 refunded 20 (commission 3); a refund of A after its lock is late.
    b.conv(HitKind::Postback, at(1, 10, 0), "shop", "purchase", Some(&k1), None, Some("A"), usd(100));
    b.conv(HitKind::Postback, at(1, 12, 0), "shop", "purchase", Some(&k1), None, Some("B"), usd(50));
    // ann: G half an hour after her click, under the shop's one-hour floor: too_fast, paid nothing.
    b.conv(HitKind::Postback, at(1, 9, 30), "shop", "purchase", Some(&k1), None, Some("G"), usd(70));
    // bob: C 80 at 23:30 UTC (Mar 2 in Paris; lock_ts Mar 6 23:30 UTC = Mar 7 00:30 Paris),
    // D 40 refunded in full, E 60 rejected.
    b.conv(HitKind::Postback, at(1, 23, 30), "shop", "purchase", Some(&k2), None, Some("C"), usd(80));
    b.conv(HitKind::Postback, at(2, 10, 0), "shop", "purchase", Some(&k2), None, Some("D"), usd(40));
    b.conv(HitKind::Postback, at(2, 11, 0), "shop", "purchase", Some(&k2), None, Some("E"), usd(60));
    // cara: a signup without amount, paid 2 EUR flat (the offer's currency).
    b.conv(HitKind::Pixel, at(2, 9, 0), "app", "signup", Some(&k3), None, None, None);
    // Not attributed: pays nothing.
    b.conv(HitKind::Postback, at(2, 12, 0), "shop", "purchase", Some("not-a-click"), None, Some("F"), usd(5));
    let mut adjust = |ts: i64, order: &str, action: &str, amount: Option<i64>| {
        let id = b.uuid7(ts);
        b.hits.push(Hit {
            hit_id: id,
            kind: HitKind::Adjustment.as_str(),
            ts,
            offer_id: "shop".into(),
            event: Some("purchase".into()),
            order_id: Some(order.into()),
            action: Some(action.into()),
            amount_micros: amount.map(|m| m * 1_000_000),
            currency: amount.map(|_| "USD".to_string()),
            ..Default::default()
        });
    };
    adjust(at(3, 12, 0), "B", "refund", Some(20));
    adjust(at(3, 13, 0), "D", "refund", None);
    adjust(at(4, 9, 0), "E", "reject", None);
    adjust(at(7, 10, 0), "A", "refund", None); // A's lock closed on Mar 6 10:00 UTC
    gen::write_hits(&lake, &b.hits, "test").await.unwrap();
    let p = Params::new("28d".parse().unwrap(), parse_tz("Europe/Paris").unwrap(), date(1), date(10)).unwrap();
    pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();
    lake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn earnings_payouts_and_refunds() {
    let d = tempfile::tempdir().unwrap();
    let lake = money_lake(&d.path().join("lake")).await;

    let df = run_query(&lake, "earnings", &[]).await;
    assert_eq!(
        rows(&df, &["member_id", "currency", "conversions", "gross_micros", "refunded_micros", "net_micros", "clicks_paid", "conversion_commission_micros", "click_commission_micros", "commission_micros"]),
        vec![
            "ann|USD|2|150000000|20000000|130000000|1|13000000|50000|13050000",
            "bob|USD|2|120000000|40000000|80000000|1|8000000|50000|8050000",
            "cara|EUR|1|0|0|0|0|2000000|0|2000000",
        ]
    );
    let only = run_query(&lake, "earnings", &[("offer", "app")]).await;
    assert_eq!(rows(&only, &["member_id", "commission_micros"]), vec!["cara|2000000"]);

    let cols = ["member_id", "currency", "payable_micros", "pending_micros", "payable_conversions", "pending_conversions", "clicks_paid", "click_payout_micros", "next_lock_ts"];
    // The end of Mar 6 in Paris is 23:00 UTC: C's lock (23:30 UTC) is still open.
    let df = run_query(&lake, "payouts", &[("as_of", "2026-03-06")]).await;
    assert_eq!(
        rows(&df, &cols),
        vec![
            "ann|USD|13050000|0|2|0|1|50000|",
            "bob|USD|50000|8000000|0|3|1|50000|2026-03-06 23:30:00 UTC",
            "cara|EUR|0|2000000|0|1|0|0|2026-04-01 09:00:00 UTC",
        ]
    );
    let df = run_query(&lake, "payouts", &[("as_of", "2026-03-07")]).await;
    assert_eq!(rows(&df, &["member_id", "payable_micros", "pending_micros", "payable_conversions"]), vec!["ann|13050000|0|2", "bob|8050000|0|3", "cara|0|2000000|0"]);
    // As of Mar 1 (Paris): only ann's two conversions exist, both in their lock; both clicks are paid.
    let df = run_query(&lake, "payouts", &[("as_of", "2026-03-01")]).await;
    assert_eq!(rows(&df, &["member_id", "payable_micros", "pending_micros", "pending_conversions"]), vec!["ann|50000|13000000|2", "bob|50000|0|0"]);

    let df = run_query(&lake, "refunds", &[]).await;
    assert_eq!(
        rows(&df, &["offer_id", "member_id", "currency", "conversions", "refunded", "rejected", "gross_micros", "refunded_micros", "refund_rate_pct", "refunded_amount_pct", "reject_rate_pct"]),
        vec![
            "shop|ann|USD|2|1|0|150000000|20000000|50.0|13.33|0.0",
            "shop|bob|USD|3|1|1|180000000|40000000|33.33|22.22|33.33",
            "app|cara||1|0|0|0|0|0.0||0.0",
        ]
    );
    let df = run_query(&lake, "refunds", &[("min_conversions", "3")]).await;
    assert_eq!(rows(&df, &["member_id"]), vec!["bob"]);

    // The fraud floor: ann's G (30 minutes, under the one-hour floor) beside A and B (C is
    // exactly one hour after bob's click: not too fast).
    let df = run_query(&lake, "too_fast", &[]).await;
    assert_eq!(
        rows(&df, &["offer_id", "member_id", "conversions", "too_fast", "too_fast_pct", "fastest_lag_seconds", "example_ts", "example_lag_seconds"]),
        vec!["shop|ann|3|1|33.33|1800|2026-03-01 09:30:00 UTC|1800"]
    );
}

// ---------------------------------------------------------------- every named query

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_summary() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "member_summary", &[]).await;
    assert_eq!(
        rows(&df, &["offer_id", "member_id", "currency", "clicks", "unique_clicks", "bot_clicks", "conversions", "orders", "revenue_micros", "conversion_rate_pct", "epc_micros"]),
        // By currency, then revenue; bob's counts once, on his first currency's row.
        vec![
            "shoes|bob|EUR|1|1|0|2|1|50000000|200.0|50000000",
            "shoes|bob|USD|||||1|100000000|200.0|100000000",
            "shoes|ann|USD|1|1|1|1|1|19990000|100.0|19990000",
            "news|cara||1|1|0|1|0|0|100.0|0",
        ]
    );
    // Summing a column counts every click and conversion once: 3 clicks, 4 conversions.
    let sum = |c: &str| df.column(c).unwrap().as_materialized_series().sum::<i64>().unwrap();
    assert_eq!((sum("clicks"), sum("conversions")), (3, 4));
    let only = run_query(&lake, "member_summary", &[("offer", "news")]).await;
    assert_eq!(rows(&only, &["member_id"]), vec!["cara"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_lake_is_read_through_its_store() {
    // memory:// has no folder: report files are downloaded, as from S3.
    let lake = fill(Lake::open(&format!("memory://queries-{}", std::process::id())).unwrap()).await;
    let df = run_query(&lake, "member_summary", &[("offer", "shoes")]).await;
    assert_eq!(rows(&df, &["member_id", "currency", "revenue_micros"]), vec!["bob|EUR|50000000", "bob|USD|100000000", "ann|USD|19990000"]);
}

/// The value of `var`, a test service's address; `None` when it is not set, and the test
/// skips, unless CLICKTRAIL_REQUIRE_SERVICES=1 (CI), where a missing one fails it.
fn service_var(var: &str) -> Option<String> {
    let value = std::env::var(var).ok();
    if value.is_none() {
        assert!(std::env::var("CLICKTRAIL_REQUIRE_SERVICES").as_deref() != Ok("1"), "CI must set {var}");
        eprintln!("skipped: {var} is not set");
    }
    value
}

/// Runs `sql` over `lake` through a new source; returns the answer and the bytes of Parquet
/// the source fetched.
async fn sql_fetching(lake: &Lake, sql: &str) -> (DataFrame, u64) {
    let source = Source::new(lake.clone());
    let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
    let prepared = engine::prepare(&source, "SQL", sql, &scope, BTreeMap::new()).await.unwrap();
    let df = queries::collect("SQL", prepared).unwrap();
    (df, source.bytes_fetched())
}

/// The scenario plus 2000 clicks on March 5 with 4 KB user agents: a hits column worth
/// megabytes that most statements never read.
async fn fill_wide(lake: Lake) -> Lake {
    let lake = fill(lake).await;
    let mut b = Builder { hits: Vec::new(), n: 1000 };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..2000u32 {
        let mut ua = String::with_capacity(4096);
        while ua.len() < 4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ua.push_str(&format!("{x:016x}"));
        }
        b.click(at(5, 10, 0) + i64::from(i) * 1_000_000, "shoes", "dan", &format!("w{i}"), &ua);
    }
    gen::write_hits(&lake, &b.hits, "wide").await.unwrap();
    lake
}

/// What a remote lake's statements fetch: only the columns they name, every column when
/// they may read one they do not name; and the answers are those of the local lake.
async fn remote_fetches_only_named_columns(remote: Lake, exact_bytes: bool) {
    let remote = fill_wide(remote).await;
    let dir = tempfile::tempdir().unwrap();
    let local = fill_wide(Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap()).await;
    let (_, whole) = sql_fetching(&remote, "SELECT * FROM hits").await;
    assert!(whole > 3_000_000, "the hits files hold megabytes of user agents ({whole} bytes)");

    // Named columns: the user agents are never fetched.
    let named = "SELECT count(*) AS n, count(DISTINCT member_id) AS members, min(visitor_id) AS v FROM hits WHERE kind = 'click' AND \"date\" = DATE '2026-03-05'";
    let (df, fetched) = sql_fetching(&remote, named).await;
    assert_eq!(rows(&df, &["n", "members", "v"]), vec!["2000|1|w0"]);
    eprintln!("{}: a statement naming 4 hits columns fetched {fetched} bytes, SELECT * {whole}", remote.url());
    if exact_bytes {
        assert!(fetched < whole / 20, "a statement naming 4 of 19 columns fetched {fetched} of {whole} bytes");
    } else {
        assert!(fetched < whole / 2, "a statement naming 4 of 19 columns fetched {fetched} of {whole} bytes");
    }
    // The same columns again through the same source: its copies serve, nothing is fetched.
    let source = Source::new(remote.clone());
    let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
    for _ in 0..2 {
        let prepared = engine::prepare(&source, "SQL", named, &scope, BTreeMap::new()).await.unwrap();
        assert_eq!(rows(&queries::collect("SQL", prepared).unwrap(), &["n"]), vec!["2000"]);
    }
    assert_eq!(source.bytes_fetched(), fetched, "a second statement fetched its columns again");
    let (df, _) = sql_fetching(&remote, "SELECT h.kind, count(*) AS n FROM hits AS h WHERE h.member_id = 'dan' GROUP BY h.kind").await;
    assert_eq!(rows(&df, &["kind", "n"]), vec!["click|2000"]);

    // Columns read without being named: everything is fetched, and the answer is whole.
    for (sql, want) in [
        ("SELECT count(DISTINCT h) AS n FROM hits h WHERE kind = 'click'", "2004"),
        ("SELECT count(*) AS n FROM (SELECT DISTINCT * FROM hits WHERE kind = 'click')", "2004"),
        ("SELECT count(*) AS n FROM (FROM hits WHERE kind = 'click')", "2004"),
        ("SELECT count(*) AS n FROM (SELECT COLUMNS(*) FROM hits WHERE kind = 'click')", "2004"),
    ] {
        let (df, fetched) = sql_fetching(&remote, sql).await;
        assert_eq!(rows(&df, &["n"]), vec![want], "{sql}");
        assert!(fetched >= whole, "{sql}: fetched {fetched} of {whole} bytes");
    }
    let (df, _) = sql_fetching(&remote, "SELECT * FROM hits WHERE member_id = 'dan' ORDER BY ts LIMIT 1").await;
    assert_eq!(df.width(), lake::schema::hit::ALL.len() + 2, "SELECT * shows every hits column and date, hour");
    assert_eq!(df.column("user_agent").unwrap().str().unwrap().get(0).unwrap().len(), 4096);

    // Report tables, joins and both windows: the remote answers are the local ones.
    for sql in [
        "SELECT c.member_id, sum(c.unique_clicks) AS u, count(a.hit_id) AS attributed FROM clicks c LEFT JOIN attributions a ON a.member_id = c.member_id AND a.\"date\" = c.\"date\" GROUP BY ALL ORDER BY ALL",
        "SELECT \"window\", status, count(*) AS n FROM attributions_all GROUP BY ALL ORDER BY ALL",
        "SELECT member_id, currency, sum(revenue_micros) AS micros, sum(orders) AS orders FROM revenue GROUP BY ALL ORDER BY ALL",
        "SELECT * FROM conversions ORDER BY ALL",
    ] {
        let (want, _) = sql_fetching(&local, sql).await;
        let (got, _) = sql_fetching(&remote, sql).await;
        assert!(want.height() > 0, "{sql}: the scenario has rows");
        assert!(got.equals_missing(&want), "{sql}: remote {got} local {want}");
    }
    // A column the statement names but the view does not fetch cannot exist: an unknown
    // column is an error, never a null.
    let source = Source::new(remote.clone());
    let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
    let prepared = engine::prepare(&source, "SQL", "SELECT count(user_agnt) FROM hits", &scope, BTreeMap::new()).await.unwrap();
    let err = queries::collect("SQL", prepared).unwrap_err().to_string();
    assert!(err.contains("user_agnt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_lake_fetches_only_the_columns_a_statement_names() {
    remote_fetches_only_named_columns(Lake::open(&format!("memory://wide-{}", std::process::id())).unwrap(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_lake_fetches_only_the_columns_a_statement_names() {
    let Some(base) = service_var("CLICKTRAIL_TEST_S3_URL") else { return };
    let url = format!("{}/queries-wide-{}-{}", base.trim_end_matches('/'), std::process::id(), Utc::now().timestamp_micros());
    remote_fetches_only_named_columns(Lake::open(&url).unwrap(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_members() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "top_members", &[]).await;
    assert_eq!(
        rows(&df, &["rank", "member_id", "offers", "clicks", "conversions", "orders", "currency", "revenue_micros", "epc_micros"]),
        vec!["1|bob|1|1|2|1|USD|100000000|100000000", "2|ann|1|1|1|1|USD|19990000|19990000", "3|cara|1|1|1|0|USD|0|0"]
    );
    let eur = run_query(&lake, "top_members", &[("currency", "eur"), ("limit", "1")]).await;
    assert_eq!(rows(&eur, &["rank", "member_id", "currency", "revenue_micros"]), vec!["1|bob|EUR|50000000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_trend() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "daily_trend", &[]).await;
    assert_eq!(
        rows(&df, &["date", "currency", "clicks", "bot_clicks", "conversions", "orders", "revenue_micros"]),
        vec![
            "2026-03-01|USD|3|1|2|1|19990000",
            "2026-03-02|EUR|0|0|1|1|50000000",
            "2026-03-11|USD|0|0|1|1|100000000",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_summary() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "offer_summary", &[]).await;
    assert_eq!(
        rows(&df, &["offer_id", "currency", "members", "clicks", "bot_clicks", "conversions_reported", "conversions_attributed", "attributed_pct", "orders", "revenue_micros"]),
        vec!["news||1|1|0|2|1|50.0|0|0", "shoes|EUR|2|2|1|6|3|50.0|1|50000000", "shoes|USD||||||50.0|2|119990000"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_distribution() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "lag_distribution", &[]).await;
    assert_eq!(
        rows(&df, &["lag", "conversions", "share_pct", "cumulative_pct", "min_lag_seconds", "max_lag_seconds"]),
        vec![
            "under 1 hour|1|25.0|25.0|1800|1800",
            "1 hour to 1 day|1|25.0|50.0|3600|3600",
            "1 to 3 days|1|25.0|75.0|86400|86400",
            "7 to 14 days|1|25.0|100.0|864000|864000",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattributed() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "unattributed", &[]).await;
    assert_eq!(
        rows(&df, &["status", "offer_id", "currency", "conversions", "with_amount", "amount_micros", "example_order_id"]),
        vec![
            "duplicate|shoes|USD|1|1|19990000|o1",
            "no_click|shoes|USD|1|1|5000000|o9",
            "offer_mismatch|news||1|0|0|",
            "unknown_click|shoes|USD|1|1|1000000|o7",
        ]
    );
    assert!(rows(&df, &["example_click_id"])[3] == "not-a-click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bot_share() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "bot_share", &[]).await;
    assert_eq!(
        rows(&df, &["offer_id", "member_id", "clicks", "bot_clicks", "all_clicks", "bot_share_pct"]),
        vec!["shoes|ann|1|1|2|50.0", "news|cara|1|0|1|0.0", "shoes|bob|1|0|1|0.0"]
    );
    let busy = run_query(&lake, "bot_share", &[("min_clicks", "2")]).await;
    assert_eq!(rows(&busy, &["member_id"]), vec!["ann"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_comparison() {
    let (_d, lake) = fixture().await;
    let df = run_query(&lake, "window_comparison", &[]).await;
    // Under 7d bob's visitor conversion ten days after his click is not attributed.
    assert_eq!(
        rows(&df, &["offer_id", "member_id", "currency", "this_window", "other_window", "conversions", "other_conversions", "conversions_diff", "revenue_micros", "other_revenue_micros", "revenue_diff_micros"]),
        vec![
            "shoes|bob|USD|28d|7d|1|0|-1|100000000|0|-100000000",
            "news|cara||28d|7d|1|1|0|0|0|0",
            "shoes|ann|USD|28d|7d|1|1|0|19990000|19990000|0",
            "shoes|bob|EUR|28d|7d|1|1|0|50000000|50000000|0",
        ]
    );
}

#[test]
fn every_sql_file_is_tested() {
    let tested = [
        "member_summary", "top_members", "daily_trend", "offer_summary", "lag_distribution", "unattributed", "bot_share", "window_comparison",
        "earnings", "payouts", "refunds", "too_fast",
    ];
    let all = catalog::builtin().unwrap();
    let names: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(names.len(), tested.len(), "a query without a test: {names:?}");
    for n in names {
        assert!(tested.contains(&n), "{n} has no test");
    }
}

// ---------------------------------------------------------------- the command line

fn cli(lake: &FsPath, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_queries")).arg("--lake").arg(lake).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_list_run_and_sql() {
    let (d, _lake) = fixture().await;
    let lake = d.path().join("lake");
    let (ok, out, _) = cli(&lake, &["list"]);
    assert!(ok);
    for name in ["member_summary", "window_comparison", "lag_distribution"] {
        assert!(out.contains(name), "{out}");
    }
    assert!(out.contains("--param other=… (window, default 7d): the window or scenario to compare with"), "{out}");
    // A user's .sql file without its header is named, not skipped.
    let mine = d.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("oops.sql"), "SELECT 1 AS one FROM clicks\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_queries")).arg("--lake").arg(&lake).arg("--queries-dir").arg(&mine).arg("list").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("oops.sql") && err.contains("purpose"), "{err}");
    // list takes exactly the formats its help names.
    let (ok, _, err) = cli(&lake, &["list", "--format", "csv"]);
    assert!(!ok && err.contains("table, json"), "{err}");
    let (ok, out, _) = cli(&lake, &["list", "--format", "json"]);
    assert!(ok && out.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{out}");

    // A readable table: the same columns as every other format, money as exact decimals
    // beside the micros (as many decimals down a column as its amounts need, at least two),
    // rates with two decimals.
    let (ok, out, err) = cli(&lake, &["run", "top_members"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["rank", "member_id", "offers", "clicks", "unique_clicks", "conversions", "orders", "currency", "revenue_micros", "revenue", "conversion_rate_pct", "epc_micros", "epc"]);
    let bob: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(bob, ["1", "bob", "1", "1", "1", "2", "1", "USD", "100000000", "100.00", "200.00", "100000000", "100.00"], "{out}");
    assert!(lines[3].contains(" 19.99 "), "{out}");
    assert!(out.ends_with("(3 rows)\n"), "{out}");
    // Every answer names its window, dates and zone, on standard error.
    assert_eq!(err, "window 28d: dates 2026-03-01 .. 2026-03-11 in UTC (the zone of its pipeline run)\n", "the fixture runs March 1 to 11");
    let (ok, _, err) = cli(&lake, &["run", "top_members", "--tz", "UTC"]);
    assert!(ok && err.contains("in UTC"), "{err}");

    // CSV to standard output.
    let (ok, out, err) = cli(&lake, &["run", "top_members", "--format", "csv", "--param", "limit=2"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "rank,member_id,offers,clicks,unique_clicks,conversions,orders,currency,revenue_micros,revenue,conversion_rate_pct,epc_micros,epc\r\n\
         1,bob,1,1,1,2,1,USD,100000000,100.000000,200.00,100000000,100.000000\r\n\
         2,ann,1,1,1,1,1,USD,19990000,19.990000,100.00,19990000,19.990000\r\n"
    );
    // Null and empty text are told apart: a null is nothing in CSV and NULL in a table, an
    // empty text is "" in CSV and nothing in a table.
    let (ok, out, err) = cli(&lake, &["sql", "SELECT CAST(NULL AS VARCHAR) AS a, '' AS b, 'x' AS c FROM clicks LIMIT 1", "--format", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(out, "a,b,c\r\n,\"\",x\r\n");
    let (ok, out, err) = cli(&lake, &["sql", "SELECT CAST(NULL AS VARCHAR) AS a, '' AS b, 'x' AS c FROM clicks LIMIT 1"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().nth(2).unwrap().trim_end(), "NULL     x", "{out}");

    // Ad-hoc SQL over the tables, a date range and JSON lines.
    let (ok, out, err) = cli(
        &lake,
        &["sql", "SELECT status, COUNT(*) AS n FROM attributions GROUP BY status ORDER BY status", "--from", "2026-03-01", "--to", "2026-03-02", "--format", "json"],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "{\"status\":\"attributed\",\"n\":3}\n{\"status\":\"duplicate\",\"n\":1}\n{\"status\":\"offer_mismatch\",\"n\":1}\n{\"status\":\"unknown_click\",\"n\":1}\n"
    );
    let (ok, out, err) = cli(&lake, &["sql", "SELECT COUNT(*) AS n FROM hits", "--format", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(out, "n\r\n12\r\n");
    let (ok, out, err) = cli(&lake, &["sql", "SELECT l.member_id, c.clicks FROM clicks c JOIN links l ON l.member_id = c.member_id", "--format", "csv"]);
    assert!(ok, "{err}");
    assert_eq!(out, "member_id,clicks\r\n", "an empty registry joins nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_name_the_problem() {
    let (d, _lake) = fixture().await;
    let lake = d.path().join("lake");
    let err_of = |args: &[&str]| {
        let (ok, _, err) = cli(&lake, args);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    assert!(err_of(&["run", "nope"]).contains("no query named \"nope\""));
    assert!(err_of(&["run", "top_members", "--param", "limit=lots"]).contains("query top_members: parameter limit: \"lots\" is not an integer"));
    assert!(err_of(&["run", "top_members", "--param", "colour=red"]).contains("query top_members: no parameter \"colour\""));
    assert!(err_of(&["run", "window_comparison", "--param", "other=3x"]).contains("parameter other"));
    assert!(err_of(&["run", "window_comparison", "--param", "other=1d"]).contains("needs reports for window 1d"));
    assert!(err_of(&["run", "top_members", "--window", "1d"]).contains("no reports for window 1d"));
    assert!(err_of(&["run", "top_members", "--window", "soon"]).contains("--window \"soon\""));
    assert!(err_of(&["run", "top_members", "--from", "2026-13-01"]).contains("--from \"2026-13-01\" is not a date"));
    let e = err_of(&["sql", "SELECT nonsense FROM clicks"]);
    assert!(e.starts_with("queries: error: SQL: there is no column \"nonsense\" here; did you mean \"offer_id\"?"), "{e}");
    assert!(err_of(&["sql", "SELEC 1"]).contains("SQL:"));
    // A non-equi self-join (polars' SQL engine panicked on it) is answered: the scenario's
    // 2026-03-01 has one clicks row each for ann, bob and cara, so three ordered pairs.
    let out = Command::new(env!("CARGO_BIN_EXE_queries"))
        .args([
            "--lake",
            lake.to_str().unwrap(),
            "sql",
            "SELECT count(*) AS pairs FROM clicks a JOIN clicks b ON a.member_id < b.member_id AND a.date = b.date",
            "--format",
            "csv",
        ])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pairs\r\n3\r\n");
    let e = err_of(&["sql", "SELECT * FROM nope"]);
    assert!(e.contains("there is no table \"nope\"; the tables are clicks, conversions"), "{e}");
    assert!(err_of(&["export", "clicks"]).contains("--out FILE or --into postgres://"));
    // --tz only checks the zone the window was computed in (the fixture's runs are UTC).
    assert!(err_of(&["run", "top_members", "--tz", "Europe/Paris"]).contains("computed in UTC"));
    assert!(err_of(&["sql", "SELECT 1 AS x FROM clicks", "--tz", "Mars/Base"]).contains("--tz"));
    assert!(err_of(&["export", "clicks", "--tz", "Asia/Tokyo", "--out", d.path().join("x.csv").to_str().unwrap()]).contains("computed in UTC"));
    assert!(!d.path().join("x.csv").exists(), "nothing written");
    assert!(err_of(&["export", "clicks", "--out", d.path().join("x.bin").to_str().unwrap()]).contains("--format"));
    assert!(err_of(&["export", "clicks", "--out", d.path().join("no/such/dir/x.csv").to_str().unwrap()]).contains("does not exist"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_report_file_is_named() {
    let (d, _lake) = fixture().await;
    let lake = d.path().join("lake");
    let file = lake.join("reports/window=28d/revenue/date=2026-03-02/part-0.parquet");
    std::fs::write(&file, b"PAR1 this is not parquet").unwrap();
    let (ok, _, err) = cli(&lake, &["run", "member_summary"]);
    assert!(!ok);
    assert!(err.contains("revenue/date=2026-03-02/part-0.parquet") && err.contains("not a valid Parquet file"), "{err}");
}

// ---------------------------------------------------------------- exports

/// The whole table through the library, sorted, as text rows.
async fn table_rows(lake: &Lake, window: &str, table: &str) -> Vec<String> {
    let source = Source::new(lake.clone());
    let scope = Scope { window: window.parse().unwrap(), from: None, to: None };
    // As `export TABLE` selects it: timestamps as UTC instants.
    let p = engine::prepare(&source, "t", &engine::table_select(table), &scope, BTreeMap::new()).await.unwrap();
    let df = queries::collect("t", p).unwrap();
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out = rows(&df, &names);
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_round_trips_through_csv_json_and_parquet() {
    let (d, lake) = fixture().await;
    let root = d.path().join("lake");
    for table in ["clicks", "revenue", "attributions"] {
        let want = table_rows(&lake, "28d", table).await;
        assert!(!want.is_empty());

        // Parquet: read back with polars, micros as integers and a decimal beside them.
        let pq = d.path().join(format!("{table}.parquet"));
        let (ok, _, err) = cli(&root, &["export", table, "--out", pq.to_str().unwrap()]);
        assert!(ok, "{err}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&pq).unwrap().permissions().mode() & 0o777, 0o644, "readable by other tools");
        }
        let back = ParquetReader::new(std::fs::File::open(&pq).unwrap()).finish().unwrap();
        let cols: Vec<String> = lake::reports::columns(table).iter().map(|c| c.to_string()).collect();
        let cols_ref: Vec<&str> = cols.iter().map(String::as_str).collect();
        let mut got = rows(&back, &cols_ref);
        got.sort();
        assert_eq!(got, want, "{table} parquet");
        if table == "revenue" {
            assert_eq!(back.column("revenue").unwrap().dtype(), &DataType::Decimal(38, 6));
        }

        // CSV: header, then every row; read back with polars' CSV reader as text.
        let csv = d.path().join(format!("{table}.csv"));
        let (ok, _, err) = cli(&root, &["export", table, "--out", csv.to_str().unwrap()]);
        assert!(ok, "{err}");
        let text = std::fs::read_to_string(&csv).unwrap();
        let header = text.lines().next().unwrap().to_string();
        let mut expected_header: Vec<String> = Vec::new();
        for c in lake::reports::columns(table) {
            expected_header.push(c.to_string());
            if let Some(base) = c.strip_suffix("_micros") {
                expected_header.push(base.to_string());
            }
        }
        assert_eq!(header, expected_header.join(","));
        assert_eq!(text.lines().count(), want.len() + 1);
        let read = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .try_into_reader_with_file_path(Some(csv.clone()))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(read.height(), want.len());
        if table == "revenue" {
            let mut money = rows(&read, &["revenue_micros", "revenue"]);
            money.sort();
            // Machine formats write all six decimals of the micros, as Parquet's DECIMAL(38,6).
            assert!(money.contains(&"19990000|19.990000".to_string()), "{money:?}");
            assert!(money.contains(&"50000000|50.000000".to_string()), "{money:?}");
        }

        // JSON lines: one object per row.
        let js = d.path().join(format!("{table}.jsonl"));
        let (ok, _, err) = cli(&root, &["export", table, "--out", js.to_str().unwrap()]);
        assert!(ok, "{err}");
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&js).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), want.len());
        if table == "attributions" {
            let attributed = lines.iter().find(|l| l["order_id"] == "o1" && l["status"] == "attributed").unwrap();
            assert_eq!(attributed["amount_micros"], 19_990_000);
            assert_eq!(attributed["amount"], "19.990000");
            assert_eq!(attributed["lag_seconds"], 1800);
            assert_eq!(attributed["ts"], "2026-03-01T10:30:00.000000Z");
        }
    }

    // A named query exports too, with its parameters, and a date range limits the rows.
    let out = d.path().join("eur.csv");
    let (ok, _, err) = cli(&root, &["export", "top_members", "--param", "currency=EUR", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&out).unwrap().contains("\r\n1,bob,1,1,1,2,1,EUR,50000000,50.000000,"));
    let out = d.path().join("day.csv");
    let (ok, _, err) = cli(&root, &["export", "clicks", "--date", "2026-03-01", "--out", out.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_exports_read_in_duckdb() {
    if !have_duckdb() {
        return;
    }
    let (d, _lake) = fixture().await;
    let root = d.path().join("lake");
    let pq = d.path().join("revenue.parquet");
    let (ok, _, err) = cli(&root, &["export", "revenue", "--out", pq.to_str().unwrap()]);
    assert!(ok, "{err}");
    let script = format!(
        "import duckdb\nrows = duckdb.sql(\"SELECT currency, SUM(revenue_micros)::BIGINT, SUM(revenue)::VARCHAR, typeof(ANY_VALUE(revenue)), typeof(ANY_VALUE(date)) FROM '{}' GROUP BY currency ORDER BY currency\").fetchall()\nprint(rows)",
        pq.display()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[('EUR', 50000000, '50.000000', 'DECIMAL(38,6)', 'DATE'), ('USD', 119990000, '119.990000', 'DECIMAL(38,6)', 'DATE')]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_is_idempotent_and_exact() {
    let Some(url) = service_var("CLICKTRAIL_TEST_PG_URL") else { return };
    let (d, lake) = fixture().await;
    let root = d.path().join("lake");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let suffix = std::process::id();
    let table = format!("revenue_{suffix}");
    let attributions = format!("attr_{suffix}");
    client.batch_execute(&format!("DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {attributions}")).await.unwrap();

    let export = |args: Vec<String>| {
        let mut full = vec!["export".to_string()];
        full.extend(args);
        let refs: Vec<&str> = full.iter().map(String::as_str).collect();
        cli(&root, &refs)
    };
    let count = |sql: String| {
        let client = &client;
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // Twice: the same rows, not twice the rows.
    for flag in ["--into", "--to"] {
        let (ok, _, err) = export(vec!["revenue".into(), flag.into(), url.clone(), "--table".into(), table.clone()]);
        assert!(ok, "{err}");
        // The destination's old flag still works, with a deprecation note.
        assert_eq!(err.contains("deprecated"), flag == "--to", "{err}");
        assert_eq!(count(format!("SELECT COUNT(*) FROM {table}")).await, 3);
    }
    // Another window lives beside the first.
    let (ok, _, err) = export(vec!["revenue".into(), "--window".into(), "7d".into(), "--into".into(), url.clone(), "--table".into(), table.clone()]);
    assert!(ok, "{err}");
    assert_eq!(count(format!("SELECT COUNT(*) FROM {table}")).await, 5);
    assert_eq!(count(format!("SELECT COUNT(*) FROM {table} WHERE \"window\" = '7d'")).await, 2);
    // Exact money: integer micros and the generated decimal.
    let rows = client
        .query(&format!("SELECT date::text, member_id, currency, revenue_micros, revenue::text FROM {table} WHERE \"window\" = '28d' ORDER BY date, currency"), &[])
        .await
        .unwrap();
    let got: Vec<String> = rows
        .iter()
        .map(|r| format!("{}|{}|{}|{}|{}", r.get::<_, String>(0), r.get::<_, String>(1), r.get::<_, String>(2), r.get::<_, i64>(3), r.get::<_, String>(4)))
        .collect();
    assert_eq!(
        got,
        vec!["2026-03-01|ann|USD|19990000|19.990000", "2026-03-02|bob|EUR|50000000|50.000000", "2026-03-11|bob|USD|100000000|100.000000"]
    );
    // Re-exporting one date replaces only that date.
    client.batch_execute(&format!("UPDATE {table} SET revenue_micros = 1 WHERE date = '2026-03-01'")).await.unwrap();
    let (ok, _, err) = export(vec!["revenue".into(), "--date".into(), "2026-03-01".into(), "--into".into(), url.clone(), "--table".into(), table.clone()]);
    assert!(ok, "{err}");
    assert_eq!(count(format!("SELECT SUM(revenue_micros)::bigint FROM {table} WHERE \"window\" = '28d'")).await, 169_990_000);
    assert_eq!(count(format!("SELECT COUNT(*) FROM {table}")).await, 5);

    // attributions: every row equal to the lake's, nulls and empty strings kept apart.
    let (ok, _, err) = export(vec!["attributions".into(), "--into".into(), url.clone(), "--table".into(), attributions.clone()]);
    assert!(ok, "{err}");
    let want = table_rows(&lake, "28d", "attributions").await;
    // Every column of the lake's table, in file order: timestamps as UTC text, the rest as text.
    let select: Vec<String> = lake::reports::ATTRIBUTIONS_COLUMNS
        .iter()
        .map(|c| {
            if format!("{:?}", lake::reports::column_type(c)).starts_with("Timestamp") {
                format!("to_char(\"{c}\" AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
            } else {
                format!("\"{c}\"::text")
            }
        })
        .collect();
    let pg_rows = client.query(&format!("SELECT {} FROM {attributions}", select.join(", ")), &[]).await.unwrap();
    let n = select.len();
    let mut got: Vec<String> = pg_rows
        .iter()
        .map(|r| (0..n).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect::<Vec<_>>().join("|"))
        .collect();
    got.sort();
    let want: Vec<String> = want
        .iter()
        .map(|w| {
            // polars prints timestamps as `2026-03-01 10:30:00 UTC`.
            w.split('|').map(|f| f.trim_end_matches(" UTC").to_string()).collect::<Vec<_>>().join("|")
        })
        .collect();
    assert_eq!(got, want);

    // earnings (SPEC §7) exports like the other tables: every row, money as integer micros.
    let earnings = format!("earn_{suffix}");
    let (ok, _, err) = export(vec!["earnings".into(), "--into".into(), url.clone(), "--table".into(), earnings.clone()]);
    assert!(ok, "{err}");
    let want = table_rows(&lake, "28d", "earnings").await;
    assert!(!want.is_empty());
    let select: Vec<String> = lake::reports::EARNINGS_COLUMNS.iter().map(|c| format!("\"{c}\"::text")).collect();
    let pg_rows = client.query(&format!("SELECT {} FROM {earnings}", select.join(", ")), &[]).await.unwrap();
    let mut got: Vec<String> = pg_rows
        .iter()
        .map(|r| (0..select.len()).map(|i| r.get::<_, Option<String>>(i).unwrap_or_default()).collect::<Vec<_>>().join("|"))
        .collect();
    got.sort();
    assert_eq!(got, want);
    client.batch_execute(&format!("DROP TABLE {earnings}")).await.unwrap();

    // A table of another shape is refused, and nothing is changed.
    let (ok, _, err) = export(vec!["clicks".into(), "--into".into(), url.clone(), "--table".into(), table.clone()]);
    assert!(!ok);
    assert!(err.contains("exists with columns"), "{err}");
    assert_eq!(count(format!("SELECT COUNT(*) FROM {table}")).await, 5);
    client.batch_execute(&format!("DROP TABLE {table}; DROP TABLE {attributions}")).await.unwrap();
}

/// Exports over TLS as libpq users write it (`sslmode`, `sslrootcert`). CI's server has a
/// certificate for `localhost` signed by a test CA, and a role `tls_only` that
/// pg_hba.conf admits over TLS only, so a plaintext fallback cannot pass unnoticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_export_over_tls_checks_the_certificate_as_asked() {
    let (Some(url), Some(ca), Some(other_ca)) =
        (service_var("CLICKTRAIL_TEST_PG_TLS_URL"), service_var("CLICKTRAIL_TEST_PG_CA"), service_var("CLICKTRAIL_TEST_PG_OTHER_CA"))
    else {
        return;
    };
    // url: postgres://tls_only@localhost:PORT/DB (the certificate names localhost, not 127.0.0.1)
    let by_ip = url.replace("@localhost:", "@127.0.0.1:");
    let (d, _lake) = fixture().await;
    let root = d.path().join("lake");
    let table = format!("revenue_tls_{}", std::process::id());
    let export = |to: String| cli(&root, &["export", "revenue", "--into", &to, "--table", &table]);

    // The server refuses this role without TLS: proof the others really used it.
    let (ok, _, err) = export(format!("{url}?sslmode=disable"));
    assert!(!ok);
    assert!(err.contains("cannot connect") && err.contains("no encryption"), "{err}");
    // Encrypted without checks (libpq's require, and prefer: our default).
    for to in [format!("{url}?sslmode=require"), url.clone()] {
        let (ok, _, err) = export(to);
        assert!(ok, "{err}");
    }
    // Chain and name.
    let (ok, _, err) = export(format!("{url}?sslmode=verify-full&sslrootcert={ca}"));
    assert!(ok, "{err}");
    // The name is wrong for 127.0.0.1: verify-full refuses, verify-ca (chain only) accepts.
    let (ok, _, err) = export(format!("{by_ip}?sslmode=verify-full&sslrootcert={ca}"));
    assert!(!ok);
    assert!(err.contains("cannot connect") && err.contains("not valid for name"), "{err}");
    let (ok, _, err) = export(format!("{by_ip}?sslmode=verify-ca&sslrootcert={ca}"));
    assert!(ok, "{err}");
    // A certificate from a CA we do not trust: refused, also under require with a root given.
    for mode in ["verify-full", "verify-ca", "require"] {
        let (ok, _, err) = export(format!("{url}?sslmode={mode}&sslrootcert={other_ca}"));
        assert!(!ok, "{mode}");
        assert!(err.contains("cannot connect") && err.contains("invalid peer certificate"), "{mode}: {err}");
    }
    // A missing root file is named.
    let (ok, _, err) = export(format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"));
    assert!(!ok);
    assert!(err.contains("sslrootcert /nonexistent/ca.pem"), "{err}");

    // What went over TLS arrived whole, once (four successful exports, one table).
    let plain = std::env::var("CLICKTRAIL_TEST_PG_URL").expect("CLICKTRAIL_TEST_PG_URL with the TLS one");
    let (client, conn) = tokio_postgres::connect(&plain, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let n: i64 = client.query_one(&format!("SELECT COUNT(*) FROM {table}"), &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
    client.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

// ---------------------------------------------------------------- explain (SPEC §8)

/// `queries explain` decides every conversion of a generated lake again, one at a time, and
/// must agree with the pipeline's `attributions` on status, member, via and commission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_pipeline_on_every_conversion() {
    use object_store::PutPayload;
    let d = tempfile::tempdir().unwrap();
    let lake = Lake::open(d.path().join("lake").to_str().unwrap()).unwrap();
    let cfg = pipeline::gen::GenConfig { seed: 11, hits: 40_000, days: 12, visitors: 2_500, members: 60, offers: 3, ..Default::default() };
    pipeline::gen::generate(&lake, &cfg).await.unwrap();
    let put = |path: object_store::path::Path, text: &'static str| {
        let lake = lake.clone();
        async move { lake.put_durable(&path, PutPayload::from_static(text.as_bytes())).await.unwrap() }
    };
    put(
        lake::layout::offers(),
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n\
         offer0,https://a.example/,t,USD,28,10,7200,click\noffer1,https://b.example/,t,EUR,28,30,0,coupon\n",
    )
    .await;
    put(
        lake::layout::commissions(),
        "offer_id,member_id,event,percent,flat,valid_from\noffer0,,,12.5,,\noffer0,m1,,20,0.10,2026-01-05\noffer1,,purchase,7.3333,,\noffer2,,,,1.5,\n",
    )
    .await;
    put(lake::layout::coupons(), "code,offer_id,member_id,valid_from,valid_to\nSAVE1,offer0,m3,,\nSAVE2,offer1,m4,2026-01-04,2026-01-08\nSAVE3,offer2,m5,,\n").await;
    let (from, to) = (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 1, 12).unwrap());
    let p = Params::new("7d".parse().unwrap(), parse_tz("Europe/Paris").unwrap(), from, to).unwrap();
    pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();

    let source = Source::new(lake.clone());
    let all = source.scan_hits(None).await.unwrap().collect().unwrap();
    let index = queries::explain::Index::new(queries::explain::raw_hits(&all).unwrap());
    let w: lake::window::Window = "7d".parse().unwrap();
    let tz = source.zone(&w).await.unwrap();
    assert_eq!(tz.name(), "Europe/Paris");
    let rules = pipeline::rules::Rules::load(&lake).await.unwrap();
    let scope = Scope { window: w, from: None, to: None };
    let get = |sql: &'static str| {
        let (source, scope) = (&source, &scope);
        async move { queries::collect("t", engine::prepare(source, "t", sql, scope, BTreeMap::new()).await.unwrap()).unwrap() }
    };
    let applied = queries::explain::applied_by_target(&get("SELECT * FROM adjustments").await).unwrap();
    let att = get("SELECT hit_id, status, member_id, via, commission_micros FROM attributions").await;
    let ids = att.column("hit_id").unwrap().str().unwrap().clone();
    let st = att.column("status").unwrap().str().unwrap().clone();
    let mem = att.column("member_id").unwrap().str().unwrap().clone();
    let via = att.column("via").unwrap().str().unwrap().clone();
    let com = att.column("commission_micros").unwrap().i64().unwrap().clone();
    assert!(att.height() > 500, "{} conversions", att.height());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..att.height() {
        let id = ids.get(i).unwrap();
        let conv = index.get(id).unwrap();
        let r = queries::explain::decide(conv, &index, &w, &tz, &rules, applied.get(id).map(Vec::as_slice).unwrap_or(&[]));
        let want = (st.get(i).map(str::to_string), mem.get(i).map(str::to_string), via.get(i).map(str::to_string), com.get(i));
        let got = (Some(r.status.clone()), r.member_id.clone(), r.via.clone(), r.commission_micros);
        assert_eq!(got, want, "explain disagrees on {id}: {r:#?}");
        seen.insert((r.status.clone(), r.via.clone()));
    }
    // Every kind of verdict was explained: each status, and attributions by click, visitor and coupon.
    let statuses: std::collections::BTreeSet<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses.len(), 7, "{seen:?}");
    for v in ["click", "visitor", "coupon"] {
        assert!(seen.iter().any(|(_, x)| x.as_deref() == Some(v)), "via {v}: {seen:?}");
    }

    // The command line: a readable receipt and JSON for tools.
    let root = d.path().join("lake");
    let id = ids.get((0..att.height()).find(|i| st.get(*i) == Some("attributed")).unwrap()).unwrap().to_string();
    let (ok, out, err) = cli(&root, &["explain", &id, "--window", "7d"]);
    assert!(ok, "{err}");
    assert!(out.contains("session:") && out.contains("commission") && out.contains("the last run wrote: attributed"), "{out}");
    assert!(out.contains(": the same"), "{out}");
    let (ok, out, err) = cli(&root, &["explain", &id, "--window", "7d", "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "attributed");
    assert_eq!(v["last_run"]["status"], "attributed");
    // An adjustment is explained through its target.
    let adj = get("SELECT hit_id, target_hit_id FROM adjustments WHERE status = 'applied' LIMIT 1").await;
    let (adj_id, target) = (adj.column("hit_id").unwrap().str().unwrap().get(0).unwrap().to_string(), adj.column("target_hit_id").unwrap().str().unwrap().get(0).unwrap().to_string());
    let (ok, out, err) = cli(&root, &["explain", &adj_id, "--window", "7d", "--format", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hit_id"], target.as_str());
    assert_eq!(v["asked_adjustment"]["status"], "applied");
    assert!(v["adjustments"].as_array().unwrap().iter().any(|a| a["hit_id"] == adj_id.as_str()), "{out}");
    let (ok, _, err) = cli(&root, &["explain", "not-a-uuid"]);
    assert!(!ok && err.contains("not a UUID"), "{err}");
    let (ok, _, err) = cli(&root, &["explain", "019c0000-0000-7000-8000-000000000000", "--window", "7d"]);
    assert!(!ok && err.contains("no hit"), "{err}");
}

/// A what-if (SPEC §8, issue: "last month with a 30 s floor / other rates"): the override
/// folder's registry, written under a scenario window beside production, compared per member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_runs_beside_production_and_compares_with_money() {
    let d = tempfile::tempdir().unwrap();
    let lake = money_lake(&d.path().join("lake")).await;
    let before = table_rows(&lake, "28d", "attributions").await;
    // The what-if: no floor on shop, and 20% instead of 10%.
    let what_if = d.path().join("what-if");
    std::fs::create_dir_all(&what_if).unwrap();
    std::fs::write(
        what_if.join("offers.csv"),
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds\n\
         shop,https://shop.example/,t,USD,28,5,0\napp,https://app.example/,t,EUR,28,30,0\n",
    )
    .unwrap();
    std::fs::write(what_if.join("commissions.csv"), "offer_id,member_id,event,percent,flat,valid_from\nshop,,,20,,\nshop,,click,,0.05,\napp,,signup,,2,\n").unwrap();
    pipeline::rules::set_registry_override("what-if", what_if);
    let p = Params::new("28d+what-if".parse().unwrap(), parse_tz("Europe/Paris").unwrap(), date(1), date(10)).unwrap();
    pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();
    assert_eq!(table_rows(&lake, "28d", "attributions").await, before, "production is untouched");

    let df = run_query(&lake, "window_comparison", &[("other", "28d+what-if")]).await;
    assert_eq!(
        rows(&df, &["member_id", "currency", "other_window", "conversions", "other_conversions", "revenue_diff_micros", "commission_micros", "other_commission_micros", "commission_diff_micros"]),
        vec![
            // ann's G (70, half an hour after her click) is no longer too fast.
            "ann|USD|28d+what-if|2|3|70000000|13000000|40000000|27000000",
            "bob|USD|28d+what-if|3|3|0|8000000|16000000|8000000",
            "cara||28d+what-if|1|1|0|2000000|2000000|0",
        ]
    );
}

/// Two windows computed in different zones cannot be compared date by date: refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparing_windows_of_two_zones_is_refused() {
    let (_d, lake) = fixture().await;
    let p = Params::new("7d".parse().unwrap(), parse_tz("Europe/Paris").unwrap(), date(1), date(11)).unwrap();
    pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();
    let all = catalog::builtin().unwrap();
    let q = &all["window_comparison"];
    let values = q.bind(&[]).unwrap();
    let source = Source::new(lake.clone());
    let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
    let err = engine::prepare(&source, "window_comparison", &q.sql, &scope, values).await.err().unwrap().to_string();
    assert!(err.contains("28d was computed in UTC") && err.contains("7d in Europe/Paris") && err.contains("--tz UTC"), "{err}");
}


// ---------------------------------------------------------------- the HTML report

/// Whether the browser suite can run here (Debian's chromium, node and puppeteer-core from
/// collector/tests/browser); when not, the browser half skips, or fails under
/// CLICKTRAIL_REQUIRE_SERVICES=1.
fn browser_ready() -> bool {
    let required = std::env::var("CLICKTRAIL_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
    let root = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let have = |p: &str| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    let ok = have("node") && have("/usr/bin/chromium") && root.join("collector/tests/browser/node_modules/puppeteer-core").is_dir();
    assert!(ok || !required, "the report's browser test needs node, /usr/bin/chromium and puppeteer-core (npm ci in collector/tests/browser)");
    if !ok {
        eprintln!("skipping the browser half: node, /usr/bin/chromium or puppeteer-core is missing");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_report_shows_the_lake_and_opens_in_chromium() {
    let (d, _lake) = fixture().await;
    let lake = d.path().join("lake");
    let html = d.path().join("report.html");
    let (ok, _, err) = cli(&lake, &["report", "--out", html.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("window 28d, dates 2026-03-01 .. 2026-03-11 in UTC"), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    // The scenario by hand: 3 clicks and 1 bot click on March 1 (SPEC §4.2: a bot click is
    // never in `clicks`); 4 attributed conversions
    // under 28d (ann's o1 once, bob's o3 and o2, cara's signup), 3 under 7d (o2 came 10
    // days after bob's click); 119.99 USD in 2 orders, 50.00 EUR in 1; lags of 30 min, 1 h,
    // exactly 1 day and 10 days; 8 conversions in all (1 duplicate, 1 unknown click, 1
    // offer mismatch, 1 without a click).
    assert!(page.starts_with("<!DOCTYPE html>") && !page.contains("http://") && !page.contains("https://"), "self-contained, no external reference");
    for (label, value) in [("Clicks", "3"), ("Bot clicks", "1"), ("Attributed conversions", "4"), ("Revenue USD (2 orders)", "119.99"), ("Revenue EUR (1 orders)", "50.00")] {
        let cards = page.split("<div class=\"cards\">").nth(1).and_then(|c| c.split("</section>").next()).unwrap_or("");
        assert!(page.contains(&format!("<div class=\"label\">{label}</div><div class=\"big\">{value}</div>")), "{label} {value}: {cards}");
    }
    assert!(page.contains("<div class=\"label\">Conversion rate</div><div class=\"big\">133.33%</div>"), "4 conversions per 3 clicks (bob's o2 came back through his visitor)");
    // Refusals: an existing zone only; a folder that exists.
    let (ok, _, err) = cli(&lake, &["report", "--tz", "Europe/Paris", "--out", html.to_str().unwrap()]);
    assert!(!ok && err.contains("computed in UTC"), "{err}");
    let (ok, _, err) = cli(&lake, &["report", "--out", d.path().join("no/such/report.html").to_str().unwrap()]);
    assert!(!ok && err.contains("does not exist"), "{err}");
    // Another window that has no reports: a note, not a failure.
    let other = d.path().join("other.html");
    let (ok, _, err) = cli(&lake, &["report", "--compare", "1d", "--out", other.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read_to_string(&other).unwrap().contains("Window 1d has no reports in this lake"));

    if !browser_ready() {
        return;
    }
    let script = FsPath::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/report.mjs");
    let shots = std::env::temp_dir().join(format!("clicktrail-report-{}", std::process::id()));
    let out = Command::new("node").arg(&script).arg(&html).arg(&shots).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["console"], serde_json::json!([]), "no console messages");
    assert_eq!(seen["errors"], serde_json::json!([]), "no page errors");
    assert_eq!(seen["requests"], serde_json::json!([]), "nothing fetched from the network");
    for view in ["desktop", "phone"] {
        let v = &seen["views"][view];
        let charts = v["charts"].as_array().unwrap();
        let captions: Vec<&str> = charts.iter().map(|c| c["caption"].as_str().unwrap()).collect();
        // Trend, revenue per day in EUR and USD, top members by conversions, by EUR and by
        // USD revenue, lag, statuses, the two windows (no commission rules: no earnings chart).
        assert_eq!(charts.len(), 9, "{view}: {captions:?}");
        for c in charts {
            let points = c["points"].as_u64().unwrap();
            assert!(points > 0 && c["marks"].as_u64() == Some(points), "{view}: every chart has data: {c}");
            assert!(c["width"].as_f64().unwrap() > 200.0, "{view}: drawn: {c}");
        }
        let trend = charts.iter().find(|c| c["caption"] == "Clicks and attributed conversions per day").unwrap();
        assert_eq!(trend["points"], 22, "two series over the 11 dates");
        let bars = |caption: &str| charts.iter().find(|c| c["caption"] == caption).unwrap()["points"].as_u64().unwrap();
        assert_eq!(bars("Attributed conversions by lag (conversion time minus click time)"), 7, "every bucket drawn");
        assert_eq!(bars("Conversions by status"), 5, "attributed, duplicate, unknown_click, offer_mismatch, no_click");
        let cards = &v["cards"];
        assert_eq!((cards["Clicks"].as_str(), cards["Attributed conversions"].as_str()), (Some("3"), Some("4")));
        // The USD leaderboard: bob (100.00) above ann (19.99); no currency mixed in.
        let tables = v["tables"].as_array().unwrap();
        let usd = tables.iter().find(|t| t[0].as_array().unwrap().iter().any(|h| h == "revenue USD")).unwrap();
        assert_eq!(usd[1][1], "bob");
        assert_eq!(usd[1][4], "100.00");
        assert_eq!(usd[2][1], "ann");
        assert_eq!(usd[2][4], "19.99");
        assert!(usd.as_array().unwrap().iter().skip(1).all(|r| r[1] != "cara"), "cara has no USD revenue");
        let windows = tables.iter().find(|t| t[0].as_array().unwrap().iter().any(|h| h == "conversions 7d")).unwrap();
        let bob_usd = windows.as_array().unwrap().iter().find(|r| r[0] == "bob" && r[1] == "USD").unwrap();
        assert_eq!((bob_usd[2].as_str(), bob_usd[3].as_str(), bob_usd[4].as_str()), (Some("1"), Some("0"), Some("-1")), "o2 only under 28d");
        assert!(v["scrollWidth"].as_u64() <= v["clientWidth"].as_u64(), "{view}: the page does not scroll sideways");
        assert!(shots.with_file_name(format!("{}-{view}.png", shots.file_name().unwrap().to_str().unwrap())).exists(), "screenshot taken");
    }
    eprintln!("screenshots: {}-desktop.png, {}-phone.png", shots.display(), shots.display());
}

// ---------------------------------------------------------------- connect --duckdb

/// Whether python3 with duckdb is here; when not, the test skips (CI must have it).
fn have_duckdb() -> bool {
    let duckdb = Command::new("python3").args(["-c", "import duckdb"]).status().map(|s| s.success()).unwrap_or(false);
    if !duckdb {
        assert!(std::env::var("CLICKTRAIL_REQUIRE_SERVICES").as_deref() != Ok("1"), "CI must have duckdb (pip install duckdb)");
        eprintln!("skipped: python3 with duckdb is not installed");
    }
    duckdb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_prints_views_that_duckdb_reads() {
    if !have_duckdb() {
        return;
    }
    let (d, lake) = fixture().await;
    let root = d.path().join("lake");
    // A registry, so that offers and links have views too.
    let offers = lake::registry::write_offers(&[lake::registry::Offer::new("shoes".into(), "https://shop.example.com/".into(), "sekret-token".into(), "USD".into(), 28)]);
    lake.put_durable(&lake::layout::offers(), offers.into()).await.unwrap();
    let (ok, sql, err) = cli(&root, &["connect", "--duckdb"]);
    assert!(ok, "{err}");
    assert!(!sql.contains("sekret-token"), "no postback token");
    let script = d.path().join("views.sql");
    std::fs::write(&script, &sql).unwrap();
    // The scenario by hand (see fill): 3 clicks and 1 bot click; 12 hits; 8 conversions in
    // each window, 4 attributed under 28d and 3 under 7d; 119.99 USD and 50.00 EUR of
    // attributed revenue under 28d.
    let program = format!(
        "import duckdb\ncon = duckdb.connect()\ncon.execute(open({:?}).read())\n\
         q = lambda s: print(con.sql(s).fetchall())\n\
         q('SELECT SUM(clicks)::BIGINT, SUM(bot_clicks)::BIGINT FROM clicks')\n\
         q('SELECT COUNT(*), COUNT(DISTINCT hit_id), MIN(date)::VARCHAR, typeof(ANY_VALUE(hour)) FROM hits')\n\
         q('SELECT \"window\", COUNT(*), COUNT(*) FILTER (WHERE status = \\'attributed\\') FROM attributions_all GROUP BY 1 ORDER BY 1')\n\
         q('SELECT currency, SUM(revenue_micros)::BIGINT FROM revenue GROUP BY 1 ORDER BY 1')\n\
         q('SELECT offer_id, currency, cookie_days FROM offers')\n\
         q(\"SELECT column_name FROM (DESCRIBE offers) WHERE column_name LIKE '%token%'\")\n\
         q('SELECT COUNT(*) FROM (SHOW TABLES) WHERE name IN (\\'clicks\\', \\'hits\\', \\'attributions_all\\', \\'offers\\')')\n",
        script.display()
    );
    let out = Command::new("python3").args(["-c", &program]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect();
    assert_eq!(
        lines,
        [
            "[(3, 1)]",
            "[(12, 12, '2026-03-01', 'INTEGER')]",
            "[('28d', 8, 4), ('7d', 8, 3)]",
            "[('EUR', 50000000), ('USD', 119990000)]",
            "[('shoes', 'USD', '28')]",
            "[]",
            "[(4,)]",
        ]
    );
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = cli(empty.path(), &["connect", "--duckdb"]);
    assert!(!ok && err.contains("nothing to connect to"), "{err}");
}
