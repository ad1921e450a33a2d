//! The pipeline's integration tests: small lakes built here (no binary fixtures) for every
//! status and edge, nightly against one run, a property test, the DuckDB twin, bad input,
//! and an S3 lake when one is available.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{NaiveDate, TimeZone, Utc};
use futures::TryStreamExt;
use lake::layout::{self, REPORT_TABLES, TABLE_ATTRIBUTIONS, TABLE_CLICKS, TABLE_CONVERSIONS, TABLE_REVENUE};
use lake::schema::{hit, report, status, HitKind};
use lake::window::Window;
use lake::Lake;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use pipeline::gen::{self, GenConfig, Hit};
use pipeline::nightly::{self, Outcome};
use pipeline::params::{parse_tz, Params};
use pipeline::progress::Progress;
use polars::prelude::*;

// ---------------------------------------------------------------- helpers

static SEQ: AtomicU64 = AtomicU64::new(0);

fn memory_lake() -> Lake {
    Lake::open(&format!("memory://pipeline-test-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))).unwrap()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap().timestamp_micros()
}

const SECOND: i64 = 1_000_000;
const DAY: i64 = 86_400 * SECOND;

fn services_required() -> bool {
    std::env::var("CLICKTRAIL_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Builds hits by hand.
#[derive(Default)]
struct Lakefile {
    hits: Vec<Hit>,
    n: u16,
}

impl Lakefile {
    fn uuid7(&mut self, ts: i64) -> String {
        self.n += 1;
        let mut rand = [0x11u8; 10];
        rand[8..].copy_from_slice(&self.n.to_be_bytes());
        uuid::Builder::from_unix_timestamp_millis((ts / 1000) as u64, &rand).into_uuid().to_string()
    }

    fn click_as(&mut self, ts: i64, offer: &str, member: &str, visitor: &str, click_id: &str, ua: &str) -> String {
        let hit_id = self.uuid7(ts);
        self.hits.push(Hit {
            hit_id,
            kind: HitKind::Click.as_str(),
            ts,
            offer_id: offer.into(),
            member_id: Some(member.into()),
            link_code: Some(format!("code-{member}")),
            click_id: Some(click_id.into()),
            visitor_id: Some(visitor.into()),
            user_agent: Some(ua.into()),
            ..Default::default()
        });
        click_id.to_string()
    }

    fn click(&mut self, ts: i64, offer: &str, member: &str, visitor: &str) -> String {
        let id = self.uuid7(ts);
        self.click_as(ts, offer, member, visitor, &id, "Mozilla/5.0 (iPhone) Instagram 300.0")
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        kind: HitKind,
        ts: i64,
        offer: &str,
        click_id: Option<&str>,
        visitor: Option<&str>,
        order: Option<&str>,
        amount: Option<(i64, &str)>,
    ) -> String {
        let hit_id = self.uuid7(ts);
        self.hits.push(Hit {
            hit_id: hit_id.clone(),
            kind: kind.as_str(),
            ts,
            offer_id: offer.into(),
            click_id: click_id.map(Into::into),
            visitor_id: visitor.map(Into::into),
            event: Some("purchase".into()),
            order_id: order.map(Into::into),
            amount_micros: amount.map(|a| a.0),
            currency: amount.map(|a| a.1.to_string()),
            user_agent: Some("Mozilla/5.0".into()),
            ..Default::default()
        });
        hit_id
    }

    async fn write(&self, lake: &Lake, name: &str) {
        gen::write_hits(lake, &self.hits, name).await.unwrap();
    }
}

async fn run(lake: &Lake, window: &str, tz: &str, from: NaiveDate, to: NaiveDate) -> pipeline::RunSummary {
    let p = Params::new(window.parse().unwrap(), parse_tz(tz).unwrap(), from, to).unwrap();
    pipeline::run(lake, &p, None, "test", &Progress::quiet()).await.unwrap()
}

/// Every file of a report table, read with polars, concatenated (date folders in order).
async fn table(lake: &Lake, window: &str, table: &str) -> DataFrame {
    let prefix = Path::from(format!("{}/window={window}/{table}", layout::REPORTS_DIR));
    let mut paths: Vec<Path> =
        lake.store().list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.unwrap();
    paths.sort();
    let mut out: Option<DataFrame> = None;
    for p in paths {
        let bytes = lake.get_optional(&p).await.unwrap().unwrap();
        let df = ParquetReader::new(Cursor::new(bytes.to_vec())).finish().unwrap();
        out = Some(match out {
            None => df,
            Some(mut acc) => {
                acc.vstack_mut(&df).unwrap();
                acc
            }
        });
    }
    out.unwrap_or_default()
}

/// A frame's rows in a canonical order, temporal columns as integers, for comparisons.
fn canonical(df: &DataFrame) -> DataFrame {
    let exprs: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(name, dt)| match dt {
            DataType::Datetime(_, _) => col(name.clone()).cast(DataType::Int64),
            DataType::Date => col(name.clone()).cast(DataType::Int32),
            DataType::Int32 | DataType::UInt32 | DataType::UInt64 => col(name.clone()).cast(DataType::Int64),
            _ => col(name.clone()),
        })
        .collect();
    let names: Vec<PlSmallStr> = df.get_column_names().into_iter().cloned().collect();
    df.clone()
        .lazy()
        .select(exprs)
        .sort(names, SortMultipleOptions::default().with_nulls_last(true))
        .collect()
        .unwrap()
}

fn assert_frames_equal(what: &str, a: &DataFrame, b: &DataFrame) {
    let (a, b) = (canonical(a), canonical(b));
    assert_eq!(a.get_column_names(), b.get_column_names(), "{what}: columns");
    assert_eq!(a.height(), b.height(), "{what}: row count\n{a}\n{b}");
    if !a.equals_missing(&b) {
        for i in 0..a.height() {
            let (ra, rb) = (a.get_row(i).unwrap(), b.get_row(i).unwrap());
            assert_eq!(ra, rb, "{what}: first differing row {i}");
        }
        panic!("{what}: frames differ");
    }
}

fn strings(df: &DataFrame, column: &str) -> Vec<Option<String>> {
    df.column(column).unwrap().str().unwrap().iter().map(|s| s.map(str::to_string)).collect()
}

fn ints(df: &DataFrame, column: &str) -> Vec<Option<i64>> {
    let c = df.column(column).unwrap().cast(&DataType::Int64).unwrap();
    c.i64().unwrap().iter().collect()
}

/// `hit_id` → (status, member_id, lag_seconds, click_id) from `attributions`.
fn by_hit(df: &DataFrame) -> BTreeMap<String, (String, Option<String>, Option<i64>, Option<String>)> {
    let ids = strings(df, hit::HIT_ID);
    let st = strings(df, report::STATUS);
    let mem = strings(df, hit::MEMBER_ID);
    let lag = ints(df, report::LAG_SECONDS);
    let cid = strings(df, hit::CLICK_ID);
    (0..df.height())
        .map(|i| (ids[i].clone().unwrap(), (st[i].clone().unwrap(), mem[i].clone(), lag[i], cid[i].clone())))
        .collect()
}

// ---------------------------------------------------------------- rules, statuses, edges

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_and_window_edge() {
    let lake = memory_lake();
    let mut b = Lakefile::default();
    let w = 28 * DAY;
    let t = at(2026, 2, 10, 12, 0, 0);
    let o1 = "offer1";

    // Window start is inclusive to the microsecond: a click exactly W before converts…
    let c_edge = b.click(t - w, o1, "m_edge", "v_edge");
    let p_edge = b.conv(HitKind::Postback, t, o1, Some(&c_edge), None, None, None);
    // …one a microsecond earlier does not, and its UUIDv7 time is outside: outside_window.
    let c_old = b.click(t - w - 1, o1, "m_old", "v_old");
    let p_old = b.conv(HitKind::Postback, t, o1, Some(&c_old), None, None, None);
    // The window end is inclusive too: a click in the conversion's microsecond, lag 0.
    let c_same = b.click(t, o1, "m_same", "v_same");
    let p_same = b.conv(HitKind::Postback, t, o1, Some(&c_same), None, None, None);
    // A click after the conversion is not its session; its UUIDv7 time is after: outside_window.
    let c_after = b.click(t + 1000, o1, "m_after", "v_after");
    let p_after = b.conv(HitKind::Postback, t, o1, Some(&c_after), None, None, None);
    // lag_seconds is floored: 1.999999 s → 1; the click_id is matched whatever its case.
    let c_lag = b.click(t - 2 * SECOND + 1, o1, "m_lag", "v_lag");
    let p_lag = b.conv(HitKind::Pixel, t, o1, Some(&c_lag.to_uppercase()), Some("v_lag"), None, None);
    // Unknown click ids: a v4, and a v7 whose time is inside the window.
    let p_v4 = b.conv(HitKind::Postback, t, o1, Some("0b7e8f3c-6d1a-4c2b-9e4f-123456789abc"), None, None, None);
    let v7_inside = b.uuid7(t - DAY);
    let p_v7 = b.conv(HitKind::Postback, t, o1, Some(&v7_inside), None, None, None);
    // A click of another offer: offer_mismatch.
    let c_o2 = b.click(t - 3600 * SECOND, "offer2", "m_o2", "v_o2");
    let p_mis = b.conv(HitKind::Postback, t, o1, Some(&c_o2), None, None, None);
    // No click id, a visitor without clicks; and neither: no_click.
    let p_novis = b.conv(HitKind::Pixel, t, o1, None, Some("v_nobody"), None, None);
    let p_none = b.conv(HitKind::Pixel, t, o1, None, None, None, None);
    // Visitor path: last click on the offer; same-microsecond tie → greater click_id.
    let tie = t - 7200 * SECOND;
    b.click_as(tie, o1, "m_small", "v_tie", "01900000-0000-7000-8000-00000000000a", "Mozilla/5.0");
    let c_big = b.click_as(tie, o1, "m_big", "v_tie", "01900000-0000-7000-8000-00000000000f", "Mozilla/5.0");
    b.click(tie - DAY, o1, "m_earlier", "v_tie");
    b.click(t - 60 * SECOND, "offer2", "m_other_offer", "v_tie");
    b.click(t + 1, o1, "m_later", "v_tie");
    let p_tie = b.conv(HitKind::Pixel, t, o1, None, Some("v_tie"), None, Some((5_000_000, "USD")));
    // A visitor whose only click on the offer is W + 1 µs old: no_click.
    b.click(t - w - 1, o1, "m_stale", "v_stale");
    let p_stale = b.conv(HitKind::Pixel, t, o1, None, Some("v_stale"), None, None);
    // Bot clicks still attribute.
    let bot_id = b.uuid7(t - 10 * SECOND);
    let c_bot = b.click_as(t - 10 * SECOND, o1, "m_bot", "v_bot", &bot_id, "curl/8.0");
    let p_bot = b.conv(HitKind::Postback, t, o1, Some(&c_bot), None, None, None);
    // Order duplicates, the first twin exactly W earlier (before the range: straddling it).
    let c_ord = b.click(t - w - DAY, o1, "m_ord", "v_ord");
    let c_ord2 = b.click(t - 10 * SECOND, o1, "m_ord2", "v_ord2");
    let _first = b.conv(HitKind::Pixel, t - w, o1, None, Some("v_ord"), Some("ord-dup"), Some((1_000_000, "USD")));
    let p_dup = b.conv(HitKind::Postback, t, o1, Some(&c_ord2), None, Some("ord-dup"), Some((1_000_000, "USD")));
    // …and W + 1 µs earlier: not a duplicate.
    let _old_twin = b.conv(HitKind::Pixel, t - w - 1, o1, None, Some("v_ord"), Some("ord-fresh"), None);
    let p_fresh = b.conv(HitKind::Postback, t, o1, Some(&c_ord2), None, Some("ord-fresh"), Some((2_000_000, "EUR")));
    // Same microsecond twins: the smaller hit_id is first, the other is the duplicate.
    let p_twin_a = b.conv(HitKind::Pixel, t, o1, Some(&c_ord2), None, Some("ord-same"), None);
    let p_twin_b = b.conv(HitKind::Postback, t, o1, Some(&c_ord2), None, Some("ord-same"), None);
    // Same order id, another event: another key.
    let p_signup = {
        let id = b.conv(HitKind::Postback, t, o1, Some(&c_ord2), None, Some("ord-dup"), None);
        b.hits.last_mut().unwrap().event = Some("signup".into());
        id
    };
    let _ = c_ord;
    b.write(&lake, "a").await;
    // The same hits uploaded again under another name: deduplicated by hit_id.
    b.write(&lake, "a-again").await;

    run(&lake, "28d", "UTC", date(2026, 2, 10), date(2026, 2, 10)).await;
    let att = table(&lake, "28d", TABLE_ATTRIBUTIONS).await;
    let got = by_hit(&att);
    let st = |id: &str| got.get(id).map(|r| r.0.as_str()).unwrap_or("<missing>");
    assert_eq!(st(&p_edge), status::ATTRIBUTED);
    assert_eq!(got[&p_edge].2, Some(28 * 86_400));
    assert_eq!(got[&p_edge].1.as_deref(), Some("m_edge"));
    assert_eq!(st(&p_old), status::OUTSIDE_WINDOW);
    assert_eq!(st(&p_same), status::ATTRIBUTED);
    assert_eq!(got[&p_same].2, Some(0));
    assert_eq!(st(&p_after), status::OUTSIDE_WINDOW);
    assert_eq!(st(&p_lag), status::ATTRIBUTED);
    assert_eq!(got[&p_lag].2, Some(1));
    assert_eq!(got[&p_lag].3, Some(c_lag.to_uppercase()), "the click_id sent is kept");
    assert_eq!(st(&p_v4), status::UNKNOWN_CLICK);
    assert_eq!(st(&p_v7), status::UNKNOWN_CLICK);
    assert_eq!(st(&p_mis), status::OFFER_MISMATCH);
    assert_eq!(got[&p_mis].1, None, "member is null unless attributed");
    assert_eq!(st(&p_novis), status::NO_CLICK);
    assert_eq!(st(&p_none), status::NO_CLICK);
    assert_eq!(st(&p_tie), status::ATTRIBUTED);
    assert_eq!(got[&p_tie].1.as_deref(), Some("m_big"));
    assert_eq!(got[&p_tie].3.as_deref(), Some(c_big.as_str()), "the session's click_id when found by visitor");
    assert_eq!(st(&p_stale), status::NO_CLICK);
    assert_eq!(st(&p_bot), status::ATTRIBUTED);
    assert_eq!(st(&p_dup), status::DUPLICATE);
    assert_eq!(st(&p_fresh), status::ATTRIBUTED);
    let (first, second) = if p_twin_a < p_twin_b { (&p_twin_a, &p_twin_b) } else { (&p_twin_b, &p_twin_a) };
    assert_eq!(st(first), status::ATTRIBUTED);
    assert_eq!(st(second), status::DUPLICATE);
    assert_eq!(st(&p_signup), status::ATTRIBUTED);
    // Only the range's conversions, each once.
    assert_eq!(att.height(), got.len());
    assert_eq!(got.len(), 18);
    // Null columns unless attributed.
    for (id, (s, member, lag, _)) in &got {
        assert_eq!(s == status::ATTRIBUTED, member.is_some(), "{id}");
        assert_eq!(s == status::ATTRIBUTED, lag.is_some(), "{id}");
    }

    // Revenue: attributed with an amount only, per currency, exact.
    let rev = table(&lake, "28d", TABLE_REVENUE).await;
    let cur = strings(&rev, hit::CURRENCY);
    let sums = ints(&rev, report::REVENUE_MICROS);
    let mut by_cur: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..rev.height() {
        *by_cur.entry(cur[i].clone().unwrap()).or_default() += sums[i].unwrap();
    }
    assert_eq!(by_cur, BTreeMap::from([("EUR".to_string(), 2_000_000), ("USD".to_string(), 5_000_000)]));

    // Clicks of the date: people and bots apart.
    let clicks = table(&lake, "28d", TABLE_CLICKS).await;
    let members = strings(&clicks, hit::MEMBER_ID);
    let bots = ints(&clicks, report::BOT_CLICKS);
    let people = ints(&clicks, report::CLICKS);
    let i = members.iter().position(|m| m.as_deref() == Some("m_bot")).unwrap();
    assert_eq!((people[i], bots[i]), (Some(0), Some(1)));
    let i = members.iter().position(|m| m.as_deref() == Some("m_big")).unwrap();
    assert_eq!((people[i], bots[i]), (Some(1), Some(0)));
    assert!(!members.iter().any(|m| m.as_deref() == Some("m_edge")), "m_edge clicked on another date");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paris_days_across_dst() {
    let lake = memory_lake();
    let mut b = Lakefile::default();
    // 2026-03-29: Paris moves from +01:00 to +02:00 at 02:00 local.
    let c1 = b.click(at(2026, 3, 28, 23, 30, 0), "o", "m", "v1"); // 00:30 on the 29th in Paris
    b.click(at(2026, 3, 28, 22, 59, 59) + 999_999, "o", "m", "v2"); // 23:59:59.999999 on the 28th
    b.click(at(2026, 3, 29, 21, 59, 59) + 999_999, "o", "m", "v3"); // 23:59:59.999999 on the 29th (CEST)
    b.click(at(2026, 3, 29, 22, 0, 0), "o", "m", "v4"); // 00:00 on the 30th
    let p = b.conv(HitKind::Postback, at(2026, 3, 29, 22, 0, 0), "o", Some(&c1), None, None, Some((10, "usd")));
    b.write(&lake, "h").await;
    run(&lake, "28d", "Europe/Paris", date(2026, 3, 28), date(2026, 3, 30)).await;
    let clicks = table(&lake, "28d", TABLE_CLICKS).await;
    let dates: Vec<Option<i64>> = ints(&clicks.lazy().select([col(report::DATE).cast(DataType::Int32)]).collect().unwrap(), report::DATE);
    let d = |y, m, dd| Some((date(y, m, dd) - date(1970, 1, 1)).num_days());
    assert_eq!(dates, vec![d(2026, 3, 28), d(2026, 3, 29), d(2026, 3, 30)]);
    let c = ints(&table(&lake, "28d", TABLE_CLICKS).await, report::CLICKS);
    assert_eq!(c, vec![Some(1), Some(2), Some(1)]);
    // The in-file date equals the folder's, and every date has its file even when empty.
    for t in REPORT_TABLES {
        for day in 28..=30 {
            let path = lake::reports::date_file(&"28d".parse().unwrap(), t, date(2026, 3, day));
            let bytes = lake.get_optional(&path).await.unwrap().unwrap_or_else(|| panic!("{path} missing"));
            // The types are the contract's (lake::reports), as an Arrow reader sees them with
            // the file's embedded Arrow schema: plain Utf8 strings (not Utf8View, which
            // pyarrow reads as string_view and cannot filter).
            let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
            let arrow = builder.schema().as_ref().clone();
            let expected = lake::reports::table_schema(t);
            let types = |s: &arrow_schema::Schema| s.fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect::<Vec<_>>();
            assert_eq!(types(&arrow), types(&expected), "{path}");
            let df = ParquetReader::new(Cursor::new(bytes.to_vec())).finish().unwrap();
            assert_eq!(df.get_column_names().len(), lake::reports::columns(t).len(), "{path}");
            if df.height() > 0 {
                let days = df.column(report::DATE).unwrap().cast(&DataType::Int32).unwrap();
                assert!(days.i32().unwrap().iter().all(|x| x.map(i64::from) == d(2026, 3, day)), "{path}");
            }
        }
    }
    let att = table(&lake, "28d", TABLE_ATTRIBUTIONS).await;
    assert_eq!(by_hit(&att)[&p].0, status::ATTRIBUTED);
    let days = ints(&att.lazy().select([col(report::DATE).cast(DataType::Int32)]).collect().unwrap(), report::DATE);
    assert_eq!(days, vec![d(2026, 3, 30)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_currencies_sum_exactly() {
    let lake = memory_lake();
    let mut b = Lakefile::default();
    let t = at(2026, 5, 1, 10, 0, 0);
    let c = b.click(t - DAY, "o", "m", "v");
    for i in 0..10 {
        b.conv(HitKind::Postback, t + i, "o", Some(&c), None, Some(&format!("u{i}")), Some((100_000, "USD"))); // 0.1 × 10
    }
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("e1"), Some((19_990_000, "EUR")));
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("e2"), Some((10_000, "eur"))); // another writer's lower case
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("j1"), Some((1_000_000_000_000_000_000, "JPY")));
    b.conv(HitKind::Pixel, t, "o", None, None, Some("x"), Some((7, "USD"))); // no_click: not revenue
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("sig"), None); // no amount: not an order
    b.write(&lake, "h").await;
    run(&lake, "28d", "UTC", date(2026, 5, 1), date(2026, 5, 1)).await;
    let rev = table(&lake, "28d", TABLE_REVENUE).await;
    assert_eq!(strings(&rev, hit::CURRENCY), vec![Some("EUR".into()), Some("JPY".into()), Some("USD".into())]);
    assert_eq!(ints(&rev, report::ORDERS), vec![Some(2), Some(1), Some(10)]);
    assert_eq!(ints(&rev, report::REVENUE_MICROS), vec![Some(20_000_000), Some(1_000_000_000_000_000_000), Some(1_000_000)]);
    let conv = table(&lake, "28d", TABLE_CONVERSIONS).await;
    assert_eq!(ints(&conv, report::CONVERSIONS), vec![Some(14)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_events_are_purchases_and_in_app_browsers_are_people() {
    let lake = memory_lake();
    let mut b = Lakefile::default();
    let t = at(2026, 5, 1, 10, 0, 0);
    let c = b.click(t - DAY, "o", "m", "v");
    let id = b.uuid7(t - DAY);
    b.click_as(t - DAY, "o", "m", "v2", &id, "Mozilla/5.0 (Linux; Android 14) Mobile Safari/537.36 [Pinterest/Android]");
    let id = b.uuid7(t - DAY);
    b.click_as(t - DAY, "o", "m", "v3", &id, "Mozilla/5.0 (compatible; Pinterestbot/1.0; +http://www.pinterest.com/bot.html)");
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("a"), None);
    b.conv(HitKind::Postback, t, "o", Some(&c), None, Some("a"), None);
    b.hits.last_mut().unwrap().event = Some(String::new()); // the same order, reported with event=""
    b.write(&lake, "h").await;
    run(&lake, "28d", "UTC", date(2026, 4, 30), date(2026, 5, 1)).await;
    let conv = table(&lake, "28d", TABLE_CONVERSIONS).await;
    assert_eq!(strings(&conv, hit::EVENT), vec![Some("purchase".into())]);
    assert_eq!(ints(&conv, report::CONVERSIONS), vec![Some(1)], "the empty-event twin is the purchase's duplicate");
    let clicks = table(&lake, "28d", TABLE_CLICKS).await;
    assert_eq!((ints(&clicks, report::CLICKS), ints(&clicks, report::BOT_CLICKS)), (vec![Some(2)], vec![Some(1)]));
}

// ---------------------------------------------------------------- runs, windows, nightly

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_window_writes_beside_and_reruns_are_idempotent() {
    let lake = memory_lake();
    let cfg = GenConfig { hits: 6_000, days: 12, visitors: 500, members: 40, offers: 3, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    let (from, to) = (date(2026, 1, 8), date(2026, 1, 12));
    run(&lake, "28d", "UTC", from, to).await;
    let before: Vec<DataFrame> = futures::future::join_all(REPORT_TABLES.map(|t| table(&lake, "28d", t))).await;
    let summary = run(&lake, "36h", "UTC", from, to).await;
    assert_eq!(summary.manifest.window, "36h");
    run(&lake, "28d", "UTC", from, to).await; // again: same files, nothing doubled
    for (t, b) in REPORT_TABLES.iter().zip(&before) {
        assert_frames_equal(t, b, &table(&lake, "28d", t).await);
        assert!(table(&lake, "36h", t).await.height() > 0, "{t} of 36h");
    }
    // A shorter window attributes no more than a longer one.
    let count = |df: &DataFrame| strings(df, report::STATUS).iter().filter(|s| s.as_deref() == Some(status::ATTRIBUTED)).count();
    assert!(count(&table(&lake, "36h", TABLE_ATTRIBUTIONS).await) < count(&before[3]));
    // The manifest says what was read and written.
    let m = &summary.manifest;
    assert_eq!((m.tz.as_str(), m.from, m.to), ("UTC", from, to));
    assert!(m.input_rows > 0 && !m.input_files.is_empty());
    assert_eq!(m.input_rows, m.input_files.iter().map(|f| f.rows).sum::<i64>());
    assert_eq!(m.dates.len(), 5);
    let manifest = lake.get_optional(&Path::from(summary.manifest_path.as_str())).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(json["window"], "36h");
    assert_eq!(json["output_rows"][TABLE_ATTRIBUTIONS].as_u64().unwrap() as usize, table(&lake, "36h", TABLE_ATTRIBUTIONS).await.height());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_date_removes_stray_files_and_empty_dates_get_a_file() {
    let lake = memory_lake();
    let stray = layout::report_date_dir(&"28d".parse().unwrap(), TABLE_CLICKS, date(2026, 1, 1)).join("old-writer.parquet");
    lake.store().put(&stray, PutPayload::from_static(b"junk")).await.unwrap();
    run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 2)).await;
    assert!(lake.get_optional(&stray).await.unwrap().is_none());
    for t in REPORT_TABLES {
        let df = table(&lake, "28d", t).await;
        assert_eq!(df.height(), 0);
        assert_eq!(df.get_column_names().len(), lake::reports::columns(t).len());
    }
}

async fn all_tables(lake: &Lake, window: &str) -> Vec<DataFrame> {
    let mut out = Vec::new();
    for t in REPORT_TABLES {
        out.push(table(lake, window, t).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nightly_day_by_day_equals_one_run_and_catches_late_uploads() {
    let cfg = GenConfig { hits: 8_000, days: 8, visitors: 400, members: 30, offers: 3, ..Default::default() };
    let (nightly_lake, batch_lake, source) = (memory_lake(), memory_lake(), memory_lake());
    gen::generate(&source, &cfg).await.unwrap();
    gen::generate(&batch_lake, &cfg).await.unwrap();
    let w: Window = "2d".parse().unwrap();
    let tz = parse_tz("America/New_York").unwrap();
    let first = date(2025, 12, 31); // the first UTC hours are still the 31st in New York
    let last = date(2026, 1, 8);
    // Day by day, as cron would, the hits arriving as time passes. The generated refunds and
    // rejections of earlier dates arrive later: those dates are only re-settled (no session
    // search, SPEC §7 cost).
    let mut settled = 0;
    let generated = pipeline::read::list_hits(&source, None).await.unwrap();
    for today in first.iter_days().skip(1).take_while(|d| *d <= pipeline::params::next_day(last)) {
        let until = pipeline::params::day_start_micros(&tz, today);
        for f in generated.iter().filter(|f| f.hour_start < until && f.hour_start >= until - 86_400_000_000) {
            let path = Path::from(f.path.as_str());
            let bytes = source.get_optional(&path).await.unwrap().unwrap();
            nightly_lake.put_durable(&path, PutPayload::from(bytes)).await.unwrap();
        }
        match nightly::nightly(&nightly_lake, w, tz, today, &Progress::quiet()).await.unwrap() {
            Outcome::Done { runs } => {
                assert!(runs.len() <= 1, "one range per night");
                for r in &runs {
                    let newest = r.manifest.dates.keys().max().copied();
                    // Yesterday is always computed in full; settled dates rewrite three tables.
                    assert!(!r.manifest.settled.contains(&newest.unwrap()));
                    for d in &r.manifest.settled {
                        let written: Vec<&str> = r.manifest.dates[d].keys().map(String::as_str).collect();
                        assert_eq!(written, vec![TABLE_ATTRIBUTIONS, lake::layout::TABLE_EARNINGS, lake::layout::TABLE_REVENUE]);
                    }
                    settled += r.manifest.settled.len();
                }
            }
            Outcome::Busy { .. } => panic!("not locked"),
        }
    }
    assert!(settled >= 5, "only {settled} dates were re-settled");
    run(&batch_lake, "2d", "America/New_York", first, last).await;
    let (a, b) = (all_tables(&nightly_lake, "2d").await, all_tables(&batch_lake, "2d").await);
    for (t, (a, b)) in REPORT_TABLES.iter().zip(a.iter().zip(&b)) {
        assert_frames_equal(t, a, b);
    }
    // Nothing changed: nothing to do.
    let today = pipeline::params::next_day(last);
    match nightly::nightly(&nightly_lake, w, tz, today, &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => assert!(runs.is_empty()),
        Outcome::Busy { .. } => panic!("not locked"),
    }
    // A late upload into an old hour: a click on Jan 3 that a Jan 4 conversion names.
    let mut late = Lakefile::default();
    let c = late.click(at(2026, 1, 3, 15, 0, 0), "offer0", "m_late", "v_late");
    late.conv(HitKind::Postback, at(2026, 1, 4, 15, 0, 0), "offer0", Some(&c), None, None, Some((42, "USD")));
    let mut late_click = late.hits.clone();
    late_click.truncate(1);
    // The conversion was on time; only the click is late.
    gen::write_hits(&nightly_lake, &late.hits[1..], "ontime").await.unwrap();
    gen::write_hits(&batch_lake, &late.hits[1..], "ontime").await.unwrap();
    nightly::nightly(&nightly_lake, w, tz, today, &Progress::quiet()).await.unwrap();
    gen::write_hits(&nightly_lake, &late_click, "late").await.unwrap();
    gen::write_hits(&batch_lake, &late_click, "late").await.unwrap();
    match nightly::nightly(&nightly_lake, w, tz, today, &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => {
            let dates: BTreeSet<NaiveDate> = runs.iter().flat_map(|r| r.manifest.dates.keys().copied()).collect();
            assert!(dates.contains(&date(2026, 1, 3)) && dates.contains(&date(2026, 1, 4)), "{dates:?}");
            // Earlier dates see the hour too: their adjustments (30-day lock by default) reach it.
            assert!(dates.contains(&date(2026, 1, 1)), "{dates:?}");
        }
        Outcome::Busy { .. } => panic!("not locked"),
    }
    run(&batch_lake, "2d", "America/New_York", first, last).await;
    let (a, b) = (all_tables(&nightly_lake, "2d").await, all_tables(&batch_lake, "2d").await);
    for (t, (a, b)) in REPORT_TABLES.iter().zip(a.iter().zip(&b)) {
        assert_frames_equal(t, a, b);
    }
    let att = by_hit(&a[3]);
    assert_eq!(att[&late.hits[1].hit_id].0, status::ATTRIBUTED);
    // A commission rule valid from Jan 5 (New York) recomputes exactly Jan 5 to Jan 8, and
    // only re-settles them: sessions cannot change.
    let rules = "offer_id,member_id,event,percent,flat,valid_from\noffer0,,,12.5,,2026-01-05\noffer1,,click,,0.02,2026-01-07\n";
    for l in [&nightly_lake, &batch_lake] {
        l.put_durable(&layout::commissions(), PutPayload::from(rules.as_bytes().to_vec())).await.unwrap();
    }
    match nightly::nightly(&nightly_lake, w, tz, today, &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => {
            let dates: Vec<NaiveDate> = runs.iter().flat_map(|r| r.manifest.dates.keys().copied()).collect();
            let want: Vec<NaiveDate> = date(2026, 1, 5).iter_days().take(4).collect();
            assert_eq!(dates, want);
            assert_eq!(runs.iter().flat_map(|r| r.manifest.settled.clone()).collect::<Vec<_>>(), want);
        }
        Outcome::Busy { .. } => panic!("not locked"),
    }
    run(&batch_lake, "2d", "America/New_York", first, last).await;
    let (a, b) = (all_tables(&nightly_lake, "2d").await, all_tables(&batch_lake, "2d").await);
    for (t, (a, b)) in REPORT_TABLES.iter().zip(a.iter().zip(&b)) {
        assert_frames_equal(t, a, b);
    }
    let earnings = table(&nightly_lake, "2d", lake::layout::TABLE_EARNINGS).await;
    assert!(ints(&earnings, report::COMMISSION_MICROS).iter().flatten().any(|c| *c > 0), "the rule pays");
    // Once a date's lock has closed it is final: a late upload no longer recomputes it.
    let mut later = Lakefile::default();
    let c = later.click(at(2026, 1, 2, 15, 0, 0), "offer0", "m_later", "v_later");
    later.conv(HitKind::Postback, at(2026, 1, 2, 16, 0, 0), "offer0", Some(&c), None, None, None);
    gen::write_hits(&nightly_lake, &later.hits, "after-the-lock").await.unwrap();
    match nightly::nightly(&nightly_lake, w, tz, date(2026, 2, 20), &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => {
            let dates: BTreeSet<NaiveDate> = runs.iter().flat_map(|r| r.manifest.dates.keys().copied()).collect();
            // Jan 1–8 closed by Feb 10; the dates after the hits (Jan 9 – Feb 19) are new.
            assert!(dates.iter().all(|d| *d > last), "{dates:?}");
        }
        Outcome::Busy { .. } => panic!("not locked"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_nightly_after_a_run_recomputes_nothing_unchanged() {
    let lake = memory_lake();
    let cfg = GenConfig { hits: 4_000, days: 5, visitors: 300, members: 20, offers: 2, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    let w: Window = "3d".parse().unwrap();
    run(&lake, "3d", "UTC", date(2026, 1, 1), date(2026, 1, 5)).await;
    match nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 6), &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => assert!(runs.is_empty(), "recomputed {:?}", runs.iter().map(|r| (r.manifest.from, r.manifest.to)).collect::<Vec<_>>()),
        Outcome::Busy { .. } => panic!("not locked"),
    }
    // A late file into Jan 3 still makes the dates that see it stale.
    let mut late = Lakefile::default();
    late.click(at(2026, 1, 3, 12, 0, 0), "offer0", "m_late", "v_late");
    late.write(&lake, "late").await;
    match nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 6), &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => {
            let dates: BTreeSet<NaiveDate> = runs.iter().flat_map(|r| r.manifest.dates.keys().copied()).collect();
            assert!(dates.contains(&date(2026, 1, 3)), "{dates:?}");
        }
        Outcome::Busy { .. } => panic!("not locked"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nightly_keeps_several_windows_current() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().display().to_string()).unwrap();
    let cfg = GenConfig { hits: 3_000, days: 4, visitors: 200, members: 10, offers: 2, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    let nightly = |windows: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["nightly", "--window", windows, "--today", "2026-01-05"])
            .env("CLICKTRAIL_LAKE", dir.path())
            .env("CLICKTRAIL_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = nightly("28d,7d");
    assert!(first.contains("window 28d: recomputed 2026-01-01 to 2026-01-04") && first.contains("window 7d: recomputed 2026-01-01 to 2026-01-04"), "{first}");
    for w in ["28d", "7d"] {
        for d in 1..=4 {
            assert!(dir.path().join(format!("reports/window={w}/attributions/date=2026-01-0{d}/part-0.parquet")).exists(), "{w} {d}");
        }
    }
    // A second night with nothing new recomputes nothing, in either window; a window given
    // twice runs once.
    assert_eq!(nightly("7d,28d,7d"), "window 7d: every date is up to date\nwindow 28d: every date is up to date\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["nightly", "--window", "28d,3w"])
        .env("CLICKTRAIL_LAKE", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--window"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_passes_writes_what_one_pass_writes() {
    let cfg = GenConfig { hits: 20_000, days: 10, visitors: 500, members: 40, offers: 3, ..Default::default() };
    let (one, passes) = (memory_lake(), memory_lake());
    gen::generate(&one, &cfg).await.unwrap();
    gen::generate(&passes, &cfg).await.unwrap();
    let (first, last) = (date(2026, 1, 3), date(2026, 1, 10));
    let p = Params::new("3d".parse().unwrap(), parse_tz("Europe/Paris").unwrap(), first, last).unwrap();
    let a = pipeline::run::run_with_budget(&one, &p, None, "test", &Progress::quiet(), u64::MAX).await.unwrap();
    // A budget below one day's estimate: one pass per date.
    let b = pipeline::run::run_with_budget(&passes, &p, None, "test", &Progress::quiet(), 1).await.unwrap();
    assert_eq!(a.manifest.output_rows, b.manifest.output_rows);
    assert_eq!(b.manifest.dates.len(), 8);
    let (x, y) = (all_tables(&one, "3d").await, all_tables(&passes, "3d").await);
    for (t, (x, y)) in REPORT_TABLES.iter().zip(x.iter().zip(&y)) {
        assert!(x.height() > 0, "{t} is empty");
        assert_frames_equal(t, x, y);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_stops_a_second_nightly() {
    let lake = memory_lake();
    let mut b = Lakefile::default();
    b.click(at(2026, 1, 1, 1, 0, 0), "o", "m", "v");
    b.write(&lake, "h").await;
    let w: Window = "28d".parse().unwrap();
    let lock = lake::reports::lock_file(&w);
    let held = serde_json::json!({"owner": "other", "host": "h", "pid": 1, "expires_at_us": Utc::now().timestamp_micros() + 60_000_000});
    lake.store().put(&lock, PutPayload::from(serde_json::to_vec(&held).unwrap())).await.unwrap();
    let out = nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 3), &Progress::quiet()).await.unwrap();
    assert!(matches!(out, Outcome::Busy { .. }));
    assert_eq!(table(&lake, "28d", TABLE_CLICKS).await.height(), 0, "nothing written");
    // An expired lease (its holder crashed) is taken over.
    let expired = serde_json::json!({"owner": "other", "host": "h", "pid": 1, "expires_at_us": 0});
    lake.store().put(&lock, PutPayload::from(serde_json::to_vec(&expired).unwrap())).await.unwrap();
    let out = nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 3), &Progress::quiet()).await.unwrap();
    assert!(matches!(out, Outcome::Done { ref runs } if runs.len() == 1));
    assert_eq!(ints(&table(&lake, "28d", TABLE_CLICKS).await, report::CLICKS), vec![Some(1)]);
    // Two at once: one does the work, the other finds the lock or nothing stale; never twice.
    lake.store().put(&Path::from("hits/date=2026-01-02/hour=01/x.parquet"), PutPayload::from(gen::to_parquet(&b.hits.iter().map(|h| Hit { hit_id: "other".into(), ts: at(2026, 1, 2, 1, 0, 0), ..h.clone() }).collect::<Vec<_>>()).unwrap())).await.unwrap();
    let (q1, q2) = (Progress::quiet(), Progress::quiet());
    let (x, y) = tokio::join!(
        nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 3), &q1),
        nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 3), &q2)
    );
    let ran = |o: &Outcome| matches!(o, Outcome::Done { runs } if !runs.is_empty());
    assert!(ran(&x.unwrap()) ^ ran(&y.unwrap()), "exactly one of two concurrent nightlies runs");
    assert_eq!(ints(&table(&lake, "28d", TABLE_CLICKS).await, report::CLICKS), vec![Some(1), Some(1)]);
}

// ---------------------------------------------------------------- bad input

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_truncated_files_are_named() {
    let mut b = Lakefile::default();
    b.click(at(2026, 1, 1, 1, 0, 0), "o", "m", "v");
    let good = gen::to_parquet(&b.hits).unwrap();
    for (name, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"this is not parquet at all".to_vec()),
        ("empty", Vec::new()),
    ] {
        let lake = memory_lake();
        let path = format!("hits/date=2026-01-01/hour=01/{name}.parquet");
        lake.store().put(&Path::from(path.as_str()), PutPayload::from(bytes)).await.unwrap();
        let p = Params::new("28d".parse().unwrap(), chrono_tz::Tz::UTC, date(2026, 1, 1), date(2026, 1, 1)).unwrap();
        let err = pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap_err().to_string();
        assert!(err.contains(&path), "{name}: {err}");
        assert!(table(&lake, "28d", TABLE_CLICKS).await.height() == 0, "{name}: nothing written");
    }
    // A file whose data pages are damaged but whose footer is intact.
    let lake = memory_lake();
    let mut many = Lakefile::default();
    for i in 0..2000 {
        many.click(at(2026, 1, 1, 1, 0, 0) + i, "o", "m", &format!("v{i}"));
    }
    let mut bytes = gen::to_parquet(&many.hits).unwrap();
    let n = bytes.len();
    for x in bytes[8..n / 2].iter_mut() {
        *x ^= 0x5a;
    }
    let path = "hits/date=2026-01-01/hour=01/damaged.parquet";
    lake.store().put(&Path::from(path), PutPayload::from(bytes)).await.unwrap();
    let p = Params::new("28d".parse().unwrap(), chrono_tz::Tz::UTC, date(2026, 1, 1), date(2026, 1, 1)).unwrap();
    let err = pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap_err().to_string();
    assert!(err.contains(path), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_optional_columns_read_as_null() {
    use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let lake = memory_lake();
    let ts = at(2026, 1, 1, 1, 0, 0);
    // Another writer: only some columns, in another order, plus one of its own.
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new(hit::KIND, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::HIT_ID, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::OFFER_ID, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::TS, lake::schema::ts_type(), false),
        arrow_schema::Field::new(hit::VISITOR_ID, arrow_schema::DataType::Utf8, true),
        arrow_schema::Field::new("extra", arrow_schema::DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["click", "pixel"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["h1", "h2"])),
            Arc::new(StringArray::from(vec!["o", "o"])),
            Arc::new(TimestampMicrosecondArray::from(vec![ts, ts + 1]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some("v"), Some("v")])),
            Arc::new(StringArray::from(vec![Some("x"), None])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    lake.store().put(&Path::from("hits/date=2026-01-01/hour=01/foreign.parquet"), PutPayload::from(buf)).await.unwrap();
    // And a normal file beside it.
    let mut b = Lakefile::default();
    b.click(ts + 5, "o", "m", "v2");
    b.write(&lake, "normal").await;
    run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 1)).await;
    let clicks = table(&lake, "28d", TABLE_CLICKS).await;
    // The foreign click has no user_agent (a bot) and no member.
    assert_eq!(strings(&clicks, hit::MEMBER_ID), vec![Some("m".into()), None]);
    assert_eq!(ints(&clicks, report::BOT_CLICKS), vec![Some(0), Some(1)]);
    let att = by_hit(&table(&lake, "28d", TABLE_ATTRIBUTIONS).await);
    assert_eq!(att["h2"].0, status::ATTRIBUTED, "visitor path through the foreign click");
}

#[test]
fn bad_flags_are_named_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_pipeline");
    for (args, needle) in [
        (vec!["run", "--date", "2026-01-01", "--window", "3w"], "--window"),
        (vec!["run", "--date", "2026-01-01", "--tz", "Mars/Olympus"], "--tz"),
        (vec!["run", "--date", "2026-02-30"], "--date"),
        (vec!["run", "--from", "2026-02-03", "--to", "2026-02-01"], "--from"),
        (vec!["schedule", "--at", "7pm"], "--at"),
        (vec!["run", "--date", "2999-01-01"], "in the future"),
        (vec!["run"], "give --date YYYY-MM-DD, or --from YYYY-MM-DD --to YYYY-MM-DD"),
        (vec!["run", "--from", "2026-01-01", "--to", "2999-01-01"], "--to 2999-01-01 is in the future"),
        (vec!["run", "--date", "2026-01-01", "--registry-override", "."], "scenario window"),
        (vec!["run", "--date", "2026-01-01", "--window", "28d+x", "--registry-override", "/nonexistent"], "not a folder"),
        (vec!["run", "--date", "2026-01-01", "--window", "28d+Bad"], "scenario label"),
    ] {
        let out = std::process::Command::new(bin).args(&args).env("CLICKTRAIL_LAKE", dir.path()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let out = std::process::Command::new(bin)
        .args(["run", "--from", "2026-01-01", "--to", "2026-01-03"])
        .env("CLICKTRAIL_LAKE", dir.path())
        .env("CLICKTRAIL_LOG", "info")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Logs to a pipe are plain text: no ANSI colour codes.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run finished") && !err.contains('\u{1b}'), "{err}");
    // At the default level: one line per date and one for the run, no step lines.
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (line, date) in lines.iter().zip(["2026-01-01", "2026-01-02", "2026-01-03"]) {
        assert!(line.contains("date written") && line.contains(&format!("date={date}")) && line.contains("attributions="), "{line}");
    }
    assert!(dir.path().join("reports/window=28d/clicks/date=2026-01-01/part-0.parquet").exists());
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn arb_hits() -> impl Strategy<Value = Vec<(u8, i64, u8, u8, u8, u8, u8, u8)>> {
        // (kind, ts offset in minutes, offer, visitor, click pool idx, order idx, amount, currency)
        prop::collection::vec((0u8..4, 0i64..(6 * 24 * 60), 0u8..2, 0u8..4, 0u8..6, 0u8..5, 0u8..4, 0u8..3), 1..60)
    }

    /// The hits `arb_hits` describes, from `base`: clicks from a pool of six click ids,
    /// conversions by click id, visitor or both. Returns each conversion's ts by hit id.
    fn add_rows(b: &mut Lakefile, base: i64, rows: Vec<(u8, i64, u8, u8, u8, u8, u8, u8)>) -> BTreeMap<String, i64> {
        let pool: Vec<String> = (0..6).map(|i| b.uuid7(base + i * 3_600_000_000)).collect();
        let mut conversions = BTreeMap::new();
        for (kind, minutes, offer, visitor, click, order, amount, currency) in rows {
            // Minutes plus a sub-minute part so that ties and exact edges occur.
            let ts = base + minutes * 60_000_000 + i64::from(click % 2) * 17;
            let offer = format!("o{offer}");
            let visitor = format!("v{visitor}");
            if kind == 0 {
                b.click_as(ts, &offer, &format!("m{click}"), &visitor, &pool[click as usize], "Mozilla/5.0");
            } else {
                let k = if kind == 1 { HitKind::Pixel } else { HitKind::Postback };
                let cid = (kind != 1 || click % 3 == 0).then(|| pool[click as usize].as_str());
                let vis = (kind == 1).then_some(visitor.as_str());
                let ord = (order > 0).then(|| format!("ord{order}"));
                let amt = (amount > 0).then(|| (i64::from(amount) * 333_333, ["USD", "EUR", "JPY"][currency as usize]));
                let id = b.conv(k, ts, &offer, cid, vis, ord.as_deref(), amt);
                conversions.insert(id, ts);
            }
        }
        conversions
    }

    fn arb_adjustments() -> impl Strategy<Value = Vec<(i64, u8, u8, u8, u8, u8)>> {
        // (ts offset in minutes, offer, order idx, action, amount, adjustment id)
        prop::collection::vec((0i64..(8 * 24 * 60), 0u8..2, 1u8..5, 0u8..4, 0u8..40, 0u8..4), 0..25)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
        #[test]
        fn every_conversion_gets_one_status_and_revenue_adds_up(rows in arb_hits()) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let lake = memory_lake();
                let base = at(2026, 1, 1, 0, 0, 0);
                let mut b = Lakefile::default();
                let conversions = add_rows(&mut b, base, rows);
                b.write(&lake, "p").await;
                run(&lake, "2d", "Asia/Kolkata", date(2026, 1, 2), date(2026, 1, 5)).await;
                let p = Params::new("2d".parse().unwrap(), parse_tz("Asia/Kolkata").unwrap(), date(2026, 1, 2), date(2026, 1, 5)).unwrap();
                let (lo, hi) = p.range_micros();
                let expected: BTreeSet<&String> = conversions.iter().filter(|(_, ts)| (lo..hi).contains(*ts)).map(|(id, _)| id).collect();
                let att = table(&lake, "2d", TABLE_ATTRIBUTIONS).await;
                let got = by_hit(&att);
                prop_assert_eq!(att.height(), got.len(), "one row per conversion");
                prop_assert_eq!(got.keys().collect::<BTreeSet<_>>(), expected);
                let amounts = ints(&att, hit::AMOUNT_MICROS);
                let statuses = strings(&att, report::STATUS);
                let mut attributed_sum = 0i64;
                let mut attributed = 0i64;
                for i in 0..att.height() {
                    let s = statuses[i].clone().unwrap();
                    prop_assert!(status::ALL.contains(&s.as_str()));
                    if s == status::ATTRIBUTED {
                        attributed += 1;
                        attributed_sum += amounts[i].unwrap_or(0);
                    }
                }
                let rev = table(&lake, "2d", TABLE_REVENUE).await;
                prop_assert_eq!(ints(&rev, report::REVENUE_MICROS).iter().map(|x| x.unwrap()).sum::<i64>(), attributed_sum);
                let conv = table(&lake, "2d", TABLE_CONVERSIONS).await;
                prop_assert_eq!(ints(&conv, report::CONVERSIONS).iter().map(|x| x.unwrap()).sum::<i64>(), attributed);
                Ok(())
            })?;
        }

        /// SPEC §7 over random lakes with refunds, rejections and restores: the earnings
        /// add up to the conversions' commissions plus the click payouts, and no net
        /// amount is ever negative or other than gross − refunded.
        #[test]
        fn earnings_add_up_and_net_is_gross_minus_refunded(rows in arb_hits(), adjustments in arb_adjustments()) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let lake = memory_lake();
                put_registry(
                    &lake,
                    "offer_id,destination_url,postback_token,currency,cookie_days,lock_days\no0,https://a.example/,t,USD,28,2\no1,https://b.example/,t,EUR,28,3\n",
                    "offer_id,member_id,event,percent,flat,valid_from\no0,,,10,,\no0,,click,,0.01,\no1,,,7.3333,0.5,\no1,m1,,25,,2026-01-03\n",
                )
                .await;
                let base = at(2026, 1, 1, 0, 0, 0);
                let mut b = Lakefile::default();
                add_rows(&mut b, base, rows);
                for (minutes, offer, order, action, amount, id) in adjustments {
                    let ts = base + minutes * 60_000_000;
                    let (action, amount) = match action {
                        0 => ("refund", None),
                        1 => ("refund", Some(i64::from(amount) * 250_001)),
                        2 => ("reject", None),
                        _ => ("restore", None),
                    };
                    let id = (id > 0).then(|| format!("adj{id}"));
                    b.adjust(ts, &format!("o{offer}"), &format!("ord{order}"), action, amount, None, id.as_deref());
                }
                b.write(&lake, "p").await;
                run(&lake, "2d", "Asia/Kolkata", date(2026, 1, 2), date(2026, 1, 5)).await;

                let att = table(&lake, "2d", TABLE_ATTRIBUTIONS).await;
                let (amount, refunded, net, commission, st) = (
                    ints(&att, hit::AMOUNT_MICROS),
                    ints(&att, report::REFUNDED_MICROS),
                    ints(&att, report::NET_AMOUNT_MICROS),
                    ints(&att, report::COMMISSION_MICROS),
                    strings(&att, report::STATUS),
                );
                for i in 0..att.height() {
                    let r = refunded[i].unwrap();
                    prop_assert!(r >= 0 && r <= amount[i].unwrap_or(0), "refunded {r} of {:?}", amount[i]);
                    prop_assert_eq!(net[i], amount[i].map(|a| a - r));
                    prop_assert_eq!(commission[i].is_some(), st[i].as_deref() == Some(status::ATTRIBUTED));
                    prop_assert!(commission[i].unwrap_or(0) >= 0);
                }
                let earn = table(&lake, "2d", lake::layout::TABLE_EARNINGS).await;
                let sum = |df: &DataFrame, c: &str| ints(df, c).iter().map(|x| x.unwrap_or(0)).sum::<i64>();
                let clicks = table(&lake, "2d", TABLE_CLICKS).await;
                let (offers, counts) = (strings(&clicks, hit::OFFER_ID), ints(&clicks, report::CLICKS));
                let click_pay: i64 = (0..clicks.height()).filter(|i| offers[*i].as_deref() == Some("o0")).map(|i| counts[i].unwrap() * 10_000).sum();
                prop_assert_eq!(sum(&earn, report::COMMISSION_MICROS), sum(&att, report::COMMISSION_MICROS) + click_pay);
                prop_assert_eq!(sum(&earn, report::CLICK_COMMISSION_MICROS), click_pay);
                let (g, r, n) = (ints(&earn, report::GROSS_MICROS), ints(&earn, report::REFUNDED_MICROS), ints(&earn, report::NET_MICROS));
                let (cc, kc, c) = (ints(&earn, report::CONVERSION_COMMISSION_MICROS), ints(&earn, report::CLICK_COMMISSION_MICROS), ints(&earn, report::COMMISSION_MICROS));
                for i in 0..earn.height() {
                    prop_assert_eq!(n[i].unwrap(), g[i].unwrap() - r[i].unwrap());
                    prop_assert!(n[i].unwrap() >= 0);
                    prop_assert_eq!(c[i].unwrap(), cc[i].unwrap() + kc[i].unwrap());
                }
                Ok(())
            })?;
        }
    }
}

// ---------------------------------------------------------------- the SQL twin, DuckDB, S3

fn python_duckdb() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(!services_required(), "python3 with duckdb is required (CLICKTRAIL_REQUIRE_SERVICES=1)");
        eprintln!("skipped: python3 with duckdb not available (pip install duckdb)");
    }
    ok
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn sql_twin_has_the_same_bot_list() {
    let sql = std::fs::read_to_string(workspace_root().join("queries/attribution.sql")).unwrap();
    let start = sql.find("len(list_filter([").unwrap();
    let end = sql[start..].find("]").unwrap() + start;
    let listed: Vec<String> = sql[start..end].split('\'').skip(1).step_by(2).map(str::to_string).collect();
    assert_eq!(listed, pipeline::stages::bots::BOT_TOKENS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_equals_the_sql_twin_on_duckdb() {
    if !python_duckdb() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    let cfg = GenConfig { seed: 7, hits: 120_000, days: 21, visitors: 8_000, members: 300, offers: 6, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    // Offers with their own lock periods, and commission rules of every kind: general,
    // per member, per event, versioned by valid_from, flat, and per click.
    // SPEC §8: offer0 has a one-hour floor and coupons after clicks, offer1 coupons first,
    // offer2 a one-day floor.
    put_registry(
        &lake,
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n\
         offer0,https://a.example/,t,USD,28,10,3600,click\noffer1,https://b.example/,t,EUR,28,45,0,coupon\n\
         offer2,https://c.example/,t,USD,28,30,86400,click\n",
        "offer_id,member_id,event,percent,flat,valid_from\n\
         offer0,,,12.5,,\noffer0,m1,,20,,\noffer0,,signup,,1.25,\noffer0,,,7.3333,0.01,2026-01-14\n\
         offer1,,,10,0.25,2026-01-12\noffer2,,purchase,3.5,,\noffer2,,click,,0.01,\noffer0,m2,click,,0.05,2026-01-15\n",
    )
    .await;
    lake.put_durable(
        &layout::coupons(),
        PutPayload::from_static(
            b"code,offer_id,member_id,valid_from,valid_to\n\
              SAVE1,offer0,m5,,\nsave2,offer0,m6,2026-01-12,2026-01-15\nSAVE3,offer1,m7,2026-01-14,\n\
              SAVE4,offer1,m8,,2026-01-13\nSAVE1,offer2,m9,,\nSAVE2,offer1,m5,,\nEDGE,offer3,m4,2026-01-12,2026-01-15\n",
        ),
    )
    .await
    .unwrap();
    // Hand-made edges: the floor exactly and 1 µs (so 1 s) below it; a coupon-only
    // conversion on the first and last valid day of EDGE in Paris and just outside them.
    let mut e = Lakefile::default();
    let paris = |d: u32, h: u32, m: u32, s: u32| {
        chrono_tz::Europe::Paris.with_ymd_and_hms(2026, 1, d, h, m, s).unwrap().timestamp_micros()
    };
    let k = e.click(paris(12, 10, 0, 0), "offer0", "m_floor", "v_floor_a");
    let floor_exact = e.conv(HitKind::Postback, paris(12, 11, 0, 0), "offer0", Some(&k), None, Some("floor-a"), Some((1_000_000, "USD")));
    let k2 = e.click(paris(12, 12, 0, 0), "offer0", "m_floor", "v_floor_b");
    let floor_below = e.conv(HitKind::Postback, paris(12, 13, 0, 0) - 1, "offer0", Some(&k2), None, Some("floor-b"), Some((1_000_000, "USD")));
    let coupon_only = |e: &mut Lakefile, ts: i64, order: &str| {
        let id = e.conv(HitKind::Postback, ts, "offer3", None, None, Some(order), Some((2_000_000, "USD")));
        e.hits.last_mut().unwrap().coupon = Some("edge".into());
        id
    };
    let before_first = coupon_only(&mut e, paris(12, 0, 0, 0) - 1, "edge-a");
    let first_day = coupon_only(&mut e, paris(12, 0, 0, 0), "edge-b");
    let last_day = coupon_only(&mut e, paris(16, 0, 0, 0) - 1, "edge-c");
    let after_last = coupon_only(&mut e, paris(16, 0, 0, 0), "edge-d");
    // The same click-and-coupon conversion under both priorities.
    let k3 = e.click(paris(13, 9, 0, 0), "offer0", "m_click", "v_prio_a");
    let click_first = e.conv(HitKind::Postback, paris(13, 18, 0, 0), "offer0", Some(&k3), None, Some("prio-a"), Some((3_000_000, "USD")));
    e.hits.last_mut().unwrap().coupon = Some("SAVE1".into());
    let k4 = e.click(paris(13, 9, 0, 0), "offer1", "m_click", "v_prio_b");
    let coupon_first = e.conv(HitKind::Postback, paris(13, 18, 0, 0), "offer1", Some(&k4), None, Some("prio-b"), Some((3_000_000, "EUR")));
    e.hits.last_mut().unwrap().coupon = Some("save2".into());
    e.write(&lake, "edges").await;
    let (from, to) = (date(2026, 1, 9), date(2026, 1, 20));
    for (window, tz) in [("7d", "Europe/Paris"), ("36h", "America/Los_Angeles")] {
        run(&lake, window, tz, from, to).await;
        let out = dir.path().join(format!("sql-{window}"));
        let w: Window = window.parse().unwrap();
        let status = std::process::Command::new("python3")
            .arg(workspace_root().join("bench/duckdb_attribution.py"))
            .args([lake.local_root().unwrap().to_str().unwrap(), &w.micros().to_string(), tz, &from.to_string(), &to.to_string()])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        for t in REPORT_TABLES {
            let sql = ParquetReader::new(std::fs::File::open(out.join(format!("{t}.parquet"))).unwrap()).finish().unwrap();
            let ours = table(&lake, window, t).await;
            let sql = sql.select(lake::reports::columns(t).iter().copied()).unwrap();
            assert!(ours.height() > 0, "{window} {t} is empty");
            assert_frames_equal(&format!("{window} {t}"), &ours, &sql);
        }
        let statuses: BTreeSet<String> =
            strings(&table(&lake, window, TABLE_ATTRIBUTIONS).await, report::STATUS).into_iter().flatten().collect();
        assert_eq!(statuses.len(), 7, "every status occurs, too_fast included: {statuses:?}");
        let att = table(&lake, window, TABLE_ATTRIBUTIONS).await;
        // Coupons attribute under both priorities.
        let (via, offer) = (strings(&att, report::VIA), strings(&att, hit::OFFER_ID));
        for o in ["offer0", "offer1"] {
            assert!((0..att.height()).any(|i| via[i].as_deref() == Some("coupon") && offer[i].as_deref() == Some(o)), "a coupon attributes on {o}");
        }
        if tz == "Europe/Paris" {
            let got = by_hit(&att);
            assert_eq!(got[&floor_exact].0, status::ATTRIBUTED, "lag = min_lag_seconds is not too fast");
            assert_eq!(got[&floor_below].0, status::TOO_FAST);
            assert_eq!(got[&floor_below].1.as_deref(), Some("m_floor"), "too_fast keeps the member");
            for (id, want) in [(&before_first, status::NO_CLICK), (&first_day, status::ATTRIBUTED), (&last_day, status::ATTRIBUTED), (&after_last, status::NO_CLICK)] {
                assert_eq!(got[id].0, want, "coupon edge {id}");
            }
            assert_eq!(got[&first_day].1.as_deref(), Some("m4"));
            // click first: the click's member; coupon first: the coupon's, with no lag.
            assert_eq!((got[&click_first].0.as_str(), got[&click_first].1.as_deref()), (status::ATTRIBUTED, Some("m_click")));
            assert_eq!(got[&coupon_first], (status::ATTRIBUTED.to_string(), Some("m5".to_string()), None, Some(k4.clone())));
        }
        let states: BTreeSet<String> = strings(&att, report::ADJUSTED_STATE).into_iter().flatten().collect();
        assert_eq!(states.len(), 4, "every adjusted state occurs: {states:?}");
        assert!(ints(&att, report::COMMISSION_MICROS).into_iter().flatten().any(|c| c > 0), "commissions are paid");
        let adj_statuses: BTreeSet<String> =
            strings(&table(&lake, window, layout::TABLE_ADJUSTMENTS).await, report::STATUS).into_iter().flatten().collect();
        assert!(adj_statuses.len() >= 3, "adjustment statuses: {adj_statuses:?}");
    }
    // DuckDB reads the reports with hive partitioning (the in-file date equals the folder's).
    let root = lake.local_root().unwrap().display().to_string();
    let script = concat!(
        "import sys, duckdb\n",
        "for t in ['clicks', 'conversions', 'revenue', 'attributions']:\n",
        "    glob = sys.argv[1] + '/reports/window=7d/' + t + '/*/*.parquet'\n",
        "    r = duckdb.sql(\"SELECT count(*), count(DISTINCT date), min(typeof(date)) FROM read_parquet('\" + glob + \"', hive_partitioning = true)\").fetchall()[0]\n",
        "    print(t, r[0], r[1], r[2])\n",
    );
    let out = std::process::Command::new("python3").args(["-c", script, &root]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ours = table(&lake, "7d", parts[0]).await.height();
        assert_eq!(parts[1].parse::<usize>().unwrap(), ours, "{line}");
        assert_eq!(parts[2], "12", "{line}");
        assert_eq!(parts[3], "DATE", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_lake() {
    let Ok(base) = std::env::var("CLICKTRAIL_TEST_S3_URL") else {
        assert!(!services_required(), "CLICKTRAIL_TEST_S3_URL is required (CLICKTRAIL_REQUIRE_SERVICES=1)");
        eprintln!("skipped: CLICKTRAIL_TEST_S3_URL not set");
        return;
    };
    let url = format!("{}/pipeline-{}", base.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
    let lake = Lake::open(&url).unwrap();
    let mem = memory_lake();
    let cfg = GenConfig { hits: 3_000, days: 5, visitors: 300, members: 20, offers: 2, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    gen::generate(&mem, &cfg).await.unwrap();
    run(&lake, "28d", "UTC", date(2026, 1, 2), date(2026, 1, 5)).await;
    run(&lake, "28d", "UTC", date(2026, 1, 2), date(2026, 1, 5)).await; // replace in place
    run(&mem, "28d", "UTC", date(2026, 1, 2), date(2026, 1, 5)).await;
    for t in REPORT_TABLES {
        assert_frames_equal(t, &table(&lake, "28d", t).await, &table(&mem, "28d", t).await);
    }
    let out = nightly::nightly(&lake, "28d".parse().unwrap(), chrono_tz::Tz::UTC, date(2026, 1, 7), &Progress::quiet()).await.unwrap();
    assert!(matches!(out, Outcome::Done { .. }));
}

// ---------------------------------------------------------------- adjustments and earnings (SPEC §7)

impl Lakefile {
    #[allow(clippy::too_many_arguments)]
    fn adjust(&mut self, ts: i64, offer: &str, order: &str, action: &str, amount: Option<i64>, currency: Option<&str>, adjustment_id: Option<&str>) -> String {
        let hit_id = self.uuid7(ts);
        self.hits.push(Hit {
            hit_id: hit_id.clone(),
            kind: HitKind::Adjustment.as_str(),
            ts,
            offer_id: offer.into(),
            order_id: Some(order.into()),
            action: Some(action.into()),
            amount_micros: amount,
            currency: currency.map(Into::into),
            adjustment_id: adjustment_id.map(Into::into),
            ..Default::default()
        });
        hit_id
    }
}

async fn put_registry(lake: &Lake, offers: &str, commissions: &str) {
    lake.put_durable(&layout::offers(), PutPayload::from(offers.as_bytes().to_vec())).await.unwrap();
    lake.put_durable(&layout::commissions(), PutPayload::from(commissions.as_bytes().to_vec())).await.unwrap();
}

/// One row of a table keyed by a string column, as a map of column → AnyValue text.
fn row_of(df: &DataFrame, key_col: &str, key: &str) -> BTreeMap<String, String> {
    let keys = strings(df, key_col);
    let i = keys.iter().position(|k| k.as_deref() == Some(key)).unwrap_or_else(|| panic!("no row {key_col} = {key}"));
    df.columns()
        .iter()
        .map(|c| {
            let v = c.get(i).unwrap();
            let text = match v {
                AnyValue::Null => "null".to_string(),
                AnyValue::String(s) => s.to_string(),
                AnyValue::StringOwned(s) => s.to_string(),
                other => other.to_string(),
            };
            (c.name().to_string(), text)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adjustments_refunds_rejections_and_commissions_at_their_edges() {
    let lake = memory_lake();
    put_registry(
        &lake,
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days\no,https://shop.example/,t,EUR,28,10\n",
        "offer_id,member_id,event,percent,flat,valid_from\no,,,10,,\no,ann,purchase,20,0.50,2026-01-05\no,,click,,0.01,\n",
    )
    .await;
    let mut b = Lakefile::default();
    let lock = 10 * DAY;
    let eur = |m: i64| Some((m, "EUR"));
    let day = |d: u32, h: u32| at(2026, 1, d, h, 0, 0);
    let buy = |b: &mut Lakefile, ts: i64, member: &str, order: &str, amount: Option<(i64, &str)>| {
        let c = b.click(ts - 3600 * SECOND, "o", member, &format!("v-{order}"));
        b.conv(HitKind::Postback, ts, "o", Some(&c), None, Some(order), amount)
    };
    // A: a refund exactly at lock_ts counts; one a microsecond later is late. Its pixel twin
    // (a duplicate) is never the target.
    let c_a = buy(&mut b, day(2, 10), "bob", "A", eur(100_000_000));
    let twin = b.conv(HitKind::Pixel, day(2, 10) + 300 * SECOND, "o", None, Some("v-A"), Some("A"), eur(100_000_000));
    let r_a = b.adjust(day(2, 10) + lock, "o", "A", "refund", Some(30_000_000), None, None);
    let r_late = b.adjust(day(2, 10) + lock + 1, "o", "A", "refund", Some(5_000_000), Some("EUR"), None);
    // B: a refund larger than the gross.
    let c_b = buy(&mut b, day(2, 11), "bob", "B", eur(50_000_000));
    b.adjust(day(3, 0), "o", "B", "refund", Some(80_000_000), None, None);
    // C: two partial refunds, then a full one (no amount).
    let c_c = buy(&mut b, day(3, 9), "bob", "C", eur(40_000_000));
    b.adjust(day(4, 0), "o", "C", "refund", Some(10_000_000), None, None);
    b.adjust(day(4, 1), "o", "C", "refund", Some(10_000_000), None, None);
    b.adjust(day(4, 2), "o", "C", "refund", None, None, None);
    // D: reject, restore, reject.
    let c_d = buy(&mut b, day(3, 10), "bob", "D", eur(60_000_000));
    b.adjust(day(4, 3), "o", "D", "reject", None, None, None);
    b.adjust(day(4, 4), "o", "D", "restore", None, None, None);
    b.adjust(day(4, 5), "o", "D", "reject", None, None, None);
    // Rounding at half a micro: 15 µ × 10% = 1.5 → 2; 25 µ × 10% = 2.5 → 2.
    let c_r1 = buy(&mut b, day(3, 11), "bob", "R1", eur(15));
    let c_r2 = buy(&mut b, day(3, 12), "bob", "R2", eur(25));
    // F: ann from valid_from: 20% + 0.50; a refund in another currency is a mismatch.
    let c_f = buy(&mut b, day(5, 0), "ann", "F", eur(100_000_000));
    let r_usd = b.adjust(day(6, 0), "o", "F", "refund", Some(1_000_000), Some("usd"), None);
    // ann the day before valid_from: the general 10%.
    let c_e = buy(&mut b, day(4, 23), "ann", "E", eur(100_000_000));
    // G: the same adjustment_id twice: the second is a duplicate.
    let c_g = buy(&mut b, day(5, 1), "ann", "G", eur(10_000_000));
    let r_g1 = b.adjust(day(6, 1), "o", "G", "refund", Some(1_000_000), Some("EUR"), Some("x"));
    let r_g2 = b.adjust(day(6, 2), "o", "G", "refund", Some(1_000_000), Some("EUR"), Some("x"));
    // H: a refund of a conversion nobody clicked for: it counts, and no commission either way.
    let c_h = b.conv(HitKind::Postback, day(5, 2), "o", None, None, Some("H"), eur(5_000_000));
    let r_h = b.adjust(day(5, 3), "o", "H", "refund", None, None, None);
    // No such order.
    let r_none = b.adjust(day(5, 4), "o", "ZZZ", "refund", None, None, None);
    // K: an order id used again after the window: the adjustment hits the latest one.
    let c_k1 = buy(&mut b, day(1, 12), "ann", "K", eur(7_000_000));
    let c_k2 = buy(&mut b, at(2026, 2, 5, 12, 0, 0), "bob", "K", eur(9_000_000));
    let r_k = b.adjust(at(2026, 2, 6, 12, 0, 0), "o", "K", "refund", Some(1_000_000), None, None);
    b.write(&lake, "adj").await;
    run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 2, 6)).await;

    let att = table(&lake, "28d", TABLE_ATTRIBUTIONS).await;
    let a = |h: &str| row_of(&att, hit::HIT_ID, h);
    let check = |h: &str, state: &str, refunded: &str, net: &str, commission: &str| {
        let r = a(h);
        assert_eq!(
            (r["adjusted_state"].as_str(), r["refunded_micros"].as_str(), r["net_amount_micros"].as_str(), r["commission_micros"].as_str()),
            (state, refunded, net, commission),
            "{h}: {r:?}"
        );
    };
    check(&c_a, "partially_refunded", "30000000", "70000000", "7000000");
    check(&twin, "valid", "0", "100000000", "null");
    assert_eq!(a(&twin)["status"], "duplicate");
    check(&c_b, "refunded", "50000000", "0", "0");
    check(&c_c, "refunded", "40000000", "0", "0");
    check(&c_d, "rejected", "0", "60000000", "0");
    check(&c_r1, "valid", "0", "15", "2");
    check(&c_r2, "valid", "0", "25", "2");
    check(&c_f, "valid", "0", "100000000", "20500000");
    check(&c_e, "valid", "0", "100000000", "10000000");
    check(&c_g, "partially_refunded", "1000000", "9000000", "2300000");
    check(&c_h, "refunded", "5000000", "0", "null");
    check(&c_k1, "valid", "0", "7000000", "700000");
    check(&c_k2, "partially_refunded", "1000000", "8000000", "800000");
    assert_eq!(a(&c_a)["via"], "click");
    assert_eq!(a(&c_h)["via"], "null");
    let lock_ts = ints(&att, report::LOCK_TS);
    let ts = ints(&att, hit::TS);
    assert!(lock_ts.iter().zip(&ts).all(|(l, t)| *l == Some(t.unwrap() + lock)));

    let adj = table(&lake, "28d", layout::TABLE_ADJUSTMENTS).await;
    let s = |h: &str| {
        let r = row_of(&adj, hit::HIT_ID, h);
        (r["status"].clone(), r["target_hit_id"].clone(), r["member_id"].clone())
    };
    assert_eq!(s(&r_a), ("applied".into(), c_a.clone(), "bob".into()));
    assert_eq!(s(&r_late), ("late".into(), c_a.clone(), "bob".into()));
    assert_eq!(s(&r_usd), ("currency_mismatch".into(), c_f.clone(), "ann".into()));
    assert_eq!(s(&r_g1).0, "applied");
    assert_eq!(s(&r_g2).0, "duplicate");
    assert_eq!(s(&r_h), ("applied".into(), c_h.clone(), "null".into()));
    assert_eq!(s(&r_none), ("no_conversion".into(), "null".into(), "null".into()));
    assert_eq!(s(&r_k), ("applied".into(), c_k2.clone(), "bob".into()));
    assert_eq!(adj.height(), 15);

    // earnings: bob on Jan 2 (A and B; the rejected D is on Jan 3 and left out).
    let earn = table(&lake, "28d", layout::TABLE_EARNINGS).await;
    let e = earn
        .clone()
        .lazy()
        .filter(col(report::DATE).cast(DataType::Int32).eq(lit((date(2026, 1, 2) - date(1970, 1, 1)).num_days() as i32)))
        .filter(col(hit::MEMBER_ID).eq(lit("bob")))
        .collect()
        .unwrap();
    let r = row_of(&e, hit::MEMBER_ID, "bob");
    assert_eq!(r["conversions"], "2");
    assert_eq!(r["gross_micros"], "150000000");
    assert_eq!(r["refunded_micros"], "80000000");
    assert_eq!(r["net_micros"], "70000000");
    // bob's two clicks of Jan 2 (09:00 and 10:00) are paid 0.01 each, in the offer's currency.
    assert_eq!((r["clicks_paid"].as_str(), r["click_commission_micros"].as_str()), ("2", "20000"), "{r:?}");
    assert_eq!((r["conversion_commission_micros"].as_str(), r["commission_micros"].as_str()), ("7000000", "7020000"));
    // Click payouts land on the clicks' date: every click of the lake is paid 0.01.
    let paid: i64 = ints(&earn, report::CLICKS_PAID).into_iter().flatten().sum();
    let clicks: i64 = ints(&table(&lake, "28d", TABLE_CLICKS).await, report::CLICKS).into_iter().flatten().sum();
    assert_eq!(paid, clicks);
    let click_money: i64 = ints(&earn, report::CLICK_COMMISSION_MICROS).into_iter().flatten().sum();
    assert_eq!(click_money, clicks * 10_000);
    // Σ earnings.commission = Σ attributions.commission + click payouts.
    let total: i64 = ints(&earn, report::COMMISSION_MICROS).into_iter().flatten().sum();
    let conv_total: i64 = ints(&att, report::COMMISSION_MICROS).into_iter().flatten().sum();
    assert_eq!(total, conv_total + click_money);

    // revenue: rejected orders keep their §5 meaning but add nothing to refunded or net.
    let rev = table(&lake, "28d", TABLE_REVENUE).await;
    let jan3 = rev
        .lazy()
        .filter(col(report::DATE).cast(DataType::Int32).eq(lit((date(2026, 1, 3) - date(1970, 1, 1)).num_days() as i32)))
        .collect()
        .unwrap();
    let r = row_of(&jan3, hit::MEMBER_ID, "bob");
    // C (40, refunded 40), D (60, rejected), R1 (15 µ), R2 (25 µ).
    assert_eq!((r["orders"].as_str(), r["revenue_micros"].as_str()), ("4", "100000040"));
    assert_eq!((r["refunded_micros"].as_str(), r["net_revenue_micros"].as_str()), ("40000000", "40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commission_valid_from_is_a_date_in_the_report_zone() {
    let lake = memory_lake();
    put_registry(
        &lake,
        "offer_id,destination_url,postback_token,currency\no,https://shop.example/,t,EUR\n",
        "offer_id,member_id,event,percent,flat,valid_from\no,,,10,,\no,,,20,,2026-03-05\n",
    )
    .await;
    let mut b = Lakefile::default();
    // 23:30 UTC on the 4th is 00:30 on the 5th in Paris: the new rule applies there, not in UTC.
    let ts = at(2026, 3, 4, 23, 30, 0);
    let c = b.click(ts - 60 * SECOND, "o", "ann", "v1");
    let conv = b.conv(HitKind::Postback, ts, "o", Some(&c), None, Some("1"), Some((100_000_000, "EUR")));
    b.write(&lake, "vf").await;
    run(&lake, "28d", "Europe/Paris", date(2026, 3, 4), date(2026, 3, 5)).await;
    run(&lake, "7d", "UTC", date(2026, 3, 4), date(2026, 3, 5)).await;
    assert_eq!(row_of(&table(&lake, "28d", TABLE_ATTRIBUTIONS).await, hit::HIT_ID, &conv)["commission_micros"], "20000000");
    assert_eq!(row_of(&table(&lake, "7d", TABLE_ATTRIBUTIONS).await, hit::HIT_ID, &conv)["commission_micros"], "10000000");
}

// ---------------------------------------------------------------- the Spark engine (issue 15)

/// spark-submit (pyspark from PyPI ships it) and a Java runtime, or a printed reason.
fn spark_available() -> bool {
    let runs = |program: &str, arg: &str| {
        std::process::Command::new(program).arg(arg).output().map(|o| o.status.success()).unwrap_or(false)
    };
    let ok = runs("java", "-version") && runs("spark-submit", "--version");
    if !ok {
        assert!(
            !services_required(),
            "spark-submit and java are required (CLICKTRAIL_REQUIRE_SERVICES=1): pip install pyspark; apt-get install openjdk-17-jre-headless"
        );
        eprintln!("skipped: spark-submit or java not available (pip install pyspark; a Java 17 runtime)");
    }
    ok
}

/// The job's bot tokens, statuses and table columns, as its module declares them.
fn spark_job_constants() -> serde_json::Value {
    let script = concat!(
        "import importlib.util, json, sys\n",
        "spec = importlib.util.spec_from_file_location('job', sys.argv[1])\n",
        "job = importlib.util.module_from_spec(spec)\n",
        "spec.loader.exec_module(job)\n",
        "print(json.dumps({'bots': job.BOT_TOKENS, 'statuses': job.STATUSES, 'adjustment_statuses': job.ADJUSTMENT_STATUSES,\n",
        "    'states': job.ADJUSTED_STATES, 'tables': {t: [c for c, _ in cols] for t, cols in job.TABLES.items()},\n",
        "    'hits': [c for c, _ in job.HIT_COLUMNS]}))\n",
    );
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(workspace_root().join("spark/clicktrail_spark.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn spark_job_has_the_same_bot_list_statuses_and_columns() {
    let job = spark_job_constants();
    let list = |key: &str| -> Vec<String> { serde_json::from_value(job[key].clone()).unwrap() };
    let owned = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(list("bots"), owned(pipeline::stages::bots::BOT_TOKENS));
    let mut statuses = owned(&status::ALL);
    statuses.push(status::TOO_FAST.to_string());
    assert_eq!(list("statuses"), statuses);
    assert_eq!(list("adjustment_statuses"), owned(&lake::schema::adjustment::STATUSES));
    assert_eq!(list("states"), owned(&lake::schema::adjustment::STATES));
    assert_eq!(list("hits"), owned(&hit::ALL));
    for t in REPORT_TABLES {
        let cols: Vec<String> = serde_json::from_value(job["tables"][t].clone()).unwrap();
        assert_eq!(cols, owned(lake::reports::columns(t)), "{t}");
    }
    assert_eq!(pipeline::spark::JOB, std::fs::read_to_string(workspace_root().join("spark/clicktrail_spark.py")).unwrap());
}

/// Every report file of a window: its Arrow schema must be the table's, exactly.
async fn assert_report_types(lake: &Lake, window: &str) {
    for t in REPORT_TABLES {
        let prefix = Path::from(format!("{}/window={window}/{t}", layout::REPORTS_DIR));
        let paths: Vec<Path> = lake.store().list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.unwrap();
        assert!(!paths.is_empty(), "{window} {t}: no files");
        for p in paths {
            let bytes = lake.get_optional(&p).await.unwrap().unwrap();
            let b = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
            let got: Vec<_> = b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
            let want: Vec<_> = lake::reports::table_schema(t)
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect();
            assert_eq!(got, want, "{p}");
        }
    }
}

/// A lake for the engines to agree on: generated traffic with adjustments and coupons
/// around the Paris DST change (2026-03-29), plus hand-made edges: the fraud floor exactly
/// and below, coupon validity days, a visitor tie, both ends of the window, a foreign file
/// missing the optional columns, and a retried upload of a whole file.
async fn spark_equality_lake(lake: &Lake) {
    let cfg = GenConfig {
        seed: 11,
        hits: 40_000,
        start: date(2026, 3, 16),
        days: 21,
        visitors: 3_000,
        members: 150,
        offers: 6,
        ..Default::default()
    };
    gen::generate(lake, &cfg).await.unwrap();
    put_registry(
        lake,
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n\
         offer0,https://a.example/,t,USD,28,10,3600,click\noffer1,https://b.example/,t,EUR,28,45,0,coupon\n\
         offer2,https://c.example/,t,USD,28,30,86400,click\n",
        "offer_id,member_id,event,percent,flat,valid_from\n\
         offer0,,,12.5,,\noffer0,m1,,20,,\noffer0,,signup,,1.25,\noffer0,,,7.3333,0.01,2026-03-27\n\
         offer1,,,10,0.25,2026-03-25\noffer2,,purchase,3.5,,\noffer2,,click,,0.01,\noffer0,m2,click,,0.05,2026-03-29\n",
    )
    .await;
    lake.put_durable(
        &layout::coupons(),
        PutPayload::from_static(
            b"code,offer_id,member_id,valid_from,valid_to\n\
              SAVE1,offer0,m5,,\nsave2,offer0,m6,2026-03-26,2026-03-30\nSAVE3,offer1,m7,2026-03-28,\n\
              SAVE4,offer1,m8,,2026-03-27\nSAVE1,offer2,m9,,\nSAVE2,offer1,m5,,\nEDGE,offer3,m4,2026-03-29,2026-03-30\n",
        ),
    )
    .await
    .unwrap();
    let paris = |d: u32, h: u32, m: u32, s: u32| chrono_tz::Europe::Paris.with_ymd_and_hms(2026, 3, d, h, m, s).unwrap().timestamp_micros();
    let mut e = Lakefile::default();
    let k = e.click(paris(28, 10, 0, 0), "offer0", "m_floor", "v_floor_a");
    e.conv(HitKind::Postback, paris(28, 11, 0, 0), "offer0", Some(&k), None, Some("floor-a"), Some((1_000_000, "USD")));
    let k2 = e.click(paris(28, 12, 0, 0), "offer0", "m_floor", "v_floor_b");
    e.conv(HitKind::Postback, paris(28, 13, 0, 0) - 1, "offer0", Some(&k2), None, Some("floor-b"), Some((1_000_000, "USD")));
    // Coupon-only conversions on the first and last valid day of EDGE (the DST day is 23 h
    // long in Paris) and a microsecond outside them.
    for (ts, order) in [
        (paris(29, 0, 0, 0) - 1, "edge-a"),
        (paris(29, 0, 0, 0), "edge-b"),
        (paris(31, 0, 0, 0) - 1, "edge-c"),
        (paris(31, 0, 0, 0), "edge-d"),
    ] {
        e.conv(HitKind::Postback, ts, "offer3", None, None, Some(order), Some((2_000_000, "USD")));
        e.hits.last_mut().unwrap().coupon = Some("edge".into());
    }
    // A visitor tie: two clicks in the same microsecond; the greater click_id wins.
    let tie = paris(29, 9, 0, 0);
    e.click_as(tie, "offer4", "m_tie_a", "v_tie", "01900000-0000-7000-8000-00000000000a", "Mozilla/5.0 (Android) Chrome/122.0");
    e.click_as(tie, "offer4", "m_tie_b", "v_tie", "01900000-0000-7000-8000-00000000000b", "Mozilla/5.0 (Android) Chrome/122.0");
    e.conv(HitKind::Pixel, tie + 3_600 * SECOND, "offer4", None, Some("v_tie"), Some("tie-1"), Some((5_000_000, "USD")));
    // Both ends of a 36h window (and of 7d: both inside), by click_id and by visitor.
    let w36 = 36 * 3_600 * SECOND;
    let k5 = e.click(paris(30, 8, 0, 0), "offer5", "m_edge", "v_edge");
    e.conv(HitKind::Postback, paris(30, 8, 0, 0) + w36, "offer5", Some(&k5), None, Some("w-at"), Some((7_000_000, "USD")));
    let k6 = e.click(paris(30, 9, 0, 0), "offer5", "m_edge", "v_edge2");
    e.conv(HitKind::Postback, paris(30, 9, 0, 0) + w36 + 1, "offer5", Some(&k6), None, Some("w-past"), None);
    e.conv(HitKind::Pixel, paris(30, 9, 0, 0) + w36, "offer5", None, Some("v_edge2"), None, None);
    // A refund and a rejection of the edge conversions (§7), one with a retried id.
    e.adjust(paris(31, 12, 0, 0), "offer5", "w-at", "refund", Some(2_000_000), None, Some("rf-1"));
    e.adjust(paris(31, 12, 1, 0), "offer5", "w-at", "refund", Some(2_000_000), None, Some("rf-1"));
    e.adjust(paris(31, 13, 0, 0), "offer4", "tie-1", "reject", None, None, None);
    e.write(lake, "edges").await;
    // The collector retried an upload under another name: every hit twice.
    e.write(lake, "edges-retry").await;

    // Another writer: some columns only, in another order, plus one of its own.
    use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
    let ts = paris(29, 15, 0, 0);
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new(hit::KIND, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::HIT_ID, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::OFFER_ID, arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new(hit::TS, lake::schema::ts_type(), false),
        arrow_schema::Field::new(hit::VISITOR_ID, arrow_schema::DataType::Utf8, true),
        arrow_schema::Field::new("extra", arrow_schema::DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["click", "pixel"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["foreign-1", "foreign-2"])),
            Arc::new(StringArray::from(vec!["offer1", "offer1"])),
            Arc::new(TimestampMicrosecondArray::from(vec![ts, ts + SECOND]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some("v_foreign"), Some("v_foreign")])),
            Arc::new(StringArray::from(vec![Some("x"), None])),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let path = layout::hits_file(Utc.timestamp_micros(ts).unwrap(), "foreign");
    lake.store().put(&path, PutPayload::from(buf)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_engine_equals_the_pipeline() {
    if !spark_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    spark_equality_lake(&lake).await;
    let engine = pipeline::spark::SparkEngine::default();
    let (from, to) = (date(2026, 3, 23), date(2026, 4, 3));
    for (window, tz) in [("7d", "Europe/Paris"), ("36h", "America/Los_Angeles")] {
        run(&lake, window, tz, from, to).await;
        assert_report_types(&lake, window).await;
        let mut ours = Vec::new();
        for t in REPORT_TABLES {
            ours.push(table(&lake, window, t).await);
        }
        let p = Params::new(window.parse().unwrap(), parse_tz(tz).unwrap(), from, to).unwrap();
        let summary = pipeline::spark::run(&lake, &p, &engine, None, "test").await.unwrap();
        assert_eq!(summary.manifest.engine, "spark");
        assert_eq!(summary.manifest.dates.len(), 12);
        assert!(summary.manifest.input_rows > 40_000, "{}", summary.manifest.input_rows);
        assert_report_types(&lake, window).await;
        for (t, ours) in REPORT_TABLES.iter().zip(&ours) {
            let spark = table(&lake, window, t).await;
            assert!(ours.height() > 0, "{window} {t} is empty");
            assert_frames_equal(&format!("{window} {t} (polars vs spark)"), ours, &spark);
        }
        let att = table(&lake, window, TABLE_ATTRIBUTIONS).await;
        let statuses: BTreeSet<String> = strings(&att, report::STATUS).into_iter().flatten().collect();
        assert_eq!(statuses.len(), 7, "every status occurs: {statuses:?}");
        let states: BTreeSet<String> = strings(&att, report::ADJUSTED_STATE).into_iter().flatten().collect();
        assert_eq!(states.len(), 4, "every adjusted state occurs: {states:?}");
        let adj: BTreeSet<String> =
            strings(&table(&lake, window, layout::TABLE_ADJUSTMENTS).await, report::STATUS).into_iter().flatten().collect();
        assert!(adj.len() >= 3, "adjustment statuses: {adj:?}");
        let vias: BTreeSet<String> = strings(&att, report::VIA).into_iter().flatten().collect();
        assert_eq!(vias.len(), 3, "click, visitor and coupon: {vias:?}");
    }
    // The staging folders are gone; only the report tables and bookkeeping remain.
    let staged: Vec<_> = lake
        .store()
        .list(Some(&Path::from(format!("{}/{}", layout::REPORTS_DIR, pipeline::spark::STAGING_DIR))))
        .try_collect()
        .await
        .unwrap();
    assert!(staged.is_empty(), "{staged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_missing_spark_submit_changes_no_date() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
    let mut b = Lakefile::default();
    let k = b.click(at(2026, 1, 1, 10, 0, 0), "o", "m", "v");
    b.conv(HitKind::Postback, at(2026, 1, 1, 11, 0, 0), "o", Some(&k), None, Some("A"), Some((1_000_000, "USD")));
    b.write(&lake, "a").await;
    run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 1)).await;
    let file = lake::reports::date_file(&"28d".parse().unwrap(), TABLE_ATTRIBUTIONS, date(2026, 1, 1));
    let before = lake.get_optional(&file).await.unwrap().unwrap();
    let p = Params::new("28d".parse().unwrap(), chrono_tz::Tz::UTC, date(2026, 1, 1), date(2026, 1, 1)).unwrap();
    for (submit, needle) in [("/nonexistent/spark-submit", "not found"), ("false", "the Spark job failed")] {
        let engine = pipeline::spark::SparkEngine { submit: submit.into(), ..Default::default() };
        let err = pipeline::spark::run(&lake, &p, &engine, None, "test").await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        assert_eq!(lake.get_optional(&file).await.unwrap().unwrap(), before, "{submit}: the date is unchanged");
    }
    // A hits file Spark would skip silently is refused up front, naming it.
    let hidden = Path::from("hits/date=2026-01-01/hour=10/_late.parquet");
    lake.store().put(&hidden, PutPayload::from(lake.get_optional(&Path::from("hits/date=2026-01-01/hour=10/a.parquet")).await.unwrap().unwrap())).await.unwrap();
    let err = pipeline::spark::run(&lake, &p, &pipeline::spark::SparkEngine::default(), None, "test").await.unwrap_err().to_string();
    assert!(err.contains("hits/date=2026-01-01/hour=10/_late.parquet"), "{err}");
    lake.store().delete(&hidden).await.unwrap();
    // The binary says the same in one line and exits non-zero.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .args(["run", "--date", "2026-01-01", "--engine", "spark", "--spark-submit", "/nonexistent/spark-submit", "--lake"])
        .arg(lake.local_root().unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.lines().last().unwrap_or("").contains("/nonexistent/spark-submit not found"), "{stderr}");
}

// ---------------------------------------------------------------- compaction (issue 14)

/// Every row of every hits file, as `(hit_id, row text)` (columns by name, nulls left out,
/// timestamps as µs), sorted. Panics on a file that does not decode whole: no half-written
/// file may ever be visible.
async fn hit_rows(lake: &Lake) -> Vec<(String, String)> {
    hit_rows_of(lake, |_| true).await
}

/// The rows of the hits files whose file name `pick` accepts.
async fn hit_rows_of(lake: &Lake, pick: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    // A killed client's last requests may still reach an object store after the kill: a
    // file listed may be gone a moment later; list again then.
    for _ in 0..20 {
        if let Some(rows) = hit_rows_once(lake, &pick).await {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the hits kept changing")
}

async fn hit_rows_once(lake: &Lake, pick: &impl Fn(&str) -> bool) -> Option<Vec<(String, String)>> {
    use arrow::array::Array;
    use arrow::util::display::array_value_to_string;
    let metas: Vec<object_store::ObjectMeta> = lake.store().list(Some(&Path::from(layout::HITS_DIR))).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas.iter().filter(|m| m.location.as_ref().ends_with(layout::PARQUET_EXT) && m.location.filename().is_some_and(&pick)) {
        let bytes = match lake.store().get(&m.location).await {
            Ok(got) => got.bytes().await.unwrap(),
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => panic!("{e}"),
        };
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap_or_else(|e| panic!("{} is not whole: {e}", m.location))
            .build()
            .unwrap();
        for b in reader {
            let b = b.unwrap_or_else(|e| panic!("{} is not whole: {e}", m.location));
            let columns: Vec<(String, arrow::array::ArrayRef)> = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .map(|(f, c)| {
                    let c = match c.data_type() {
                        arrow_schema::DataType::Timestamp(_, _) => arrow::compute::cast(c, &arrow_schema::DataType::Int64).unwrap(),
                        _ => c.clone(),
                    };
                    (f.name().clone(), c)
                })
                .collect();
            for r in 0..b.num_rows() {
                let mut cells: Vec<String> =
                    columns.iter().filter(|(_, c)| !c.is_null(r)).map(|(n, c)| format!("{n}={}", array_value_to_string(c, r).unwrap())).collect();
                cells.sort();
                let id = columns.iter().find(|(n, _)| n == hit::HIT_ID).map(|(_, c)| array_value_to_string(c, r).unwrap()).unwrap();
                out.push((id, cells.join(",")));
            }
        }
    }
    out.sort();
    Some(out)
}

/// hit_id → its one row; panics when two copies of a hit differ (a changed row).
fn one_row_per_hit(rows: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (id, row) in rows {
        if let Some(before) = out.insert(id.clone(), row.clone()) {
            assert_eq!(&before, row, "two different rows for hit {id}");
        }
    }
    out
}

/// Hits files per hour folder.
async fn files_per_hour(lake: &Lake) -> BTreeMap<String, usize> {
    let metas: Vec<object_store::ObjectMeta> = lake.store().list(Some(&Path::from(layout::HITS_DIR))).try_collect().await.unwrap();
    let mut out = BTreeMap::new();
    for m in metas.iter().filter(|m| m.location.as_ref().ends_with(layout::PARQUET_EXT)) {
        let dir = m.location.as_ref().rsplit_once('/').unwrap().0.to_string();
        *out.entry(dir).or_insert(0) += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_changes_no_report_and_makes_nothing_stale() {
    let lake = memory_lake();
    let cfg = GenConfig { hits: 4_000, days: 4, visitors: 300, members: 20, offers: 2, files_per_hour: 12, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    let rows = hit_rows(&lake).await;
    assert!(files_per_hour(&lake).await.values().any(|n| *n >= 10));
    let w: Window = "3d".parse().unwrap();
    run(&lake, "3d", "UTC", date(2026, 1, 1), date(2026, 1, 4)).await;
    let before = all_tables(&lake, "3d").await;
    // Nightly compacts the closed hours first, and nothing it fingerprinted changed.
    match nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 5), &Progress::quiet()).await.unwrap() {
        Outcome::Done { runs } => assert!(runs.is_empty(), "recomputed {:?}", runs.iter().map(|r| (r.manifest.from, r.manifest.to)).collect::<Vec<_>>()),
        Outcome::Busy { .. } => panic!("not locked"),
    }
    let per_hour = files_per_hour(&lake).await;
    assert_eq!(per_hour.len(), 96);
    assert!(per_hour.values().all(|n| *n == 1), "{per_hour:?}");
    assert_eq!(hit_rows(&lake).await, rows, "every row, exactly as often as before");
    run(&lake, "3d", "UTC", date(2026, 1, 1), date(2026, 1, 4)).await;
    for (a, b) in before.iter().zip(all_tables(&lake, "3d").await.iter()) {
        assert_frames_equal("after compaction", a, b);
    }
    // A late file into a compacted hour: one recompute, then compaction makes none.
    let mut late = Lakefile::default();
    late.click(at(2026, 1, 3, 12, 0, 0), "offer0", "m_late", "v_late");
    late.write(&lake, "late").await;
    let recomputed = |o: Outcome| match o {
        Outcome::Done { runs } => runs.len(),
        Outcome::Busy { .. } => panic!("not locked"),
    };
    let no_compact = nightly::nightly_with(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 5), &Progress::quiet(), None, None).await.unwrap();
    assert!(recomputed(no_compact) > 0);
    assert_eq!(files_per_hour(&lake).await["hits/date=2026-01-03/hour=12"], 2);
    let with_compact = nightly::nightly(&lake, w, chrono_tz::Tz::UTC, date(2026, 1, 5), &Progress::quiet()).await.unwrap();
    assert_eq!(recomputed(with_compact), 0, "compacting the late file changed no fingerprint");
    assert_eq!(files_per_hour(&lake).await["hits/date=2026-01-03/hour=12"], 1);
}

/// Runs `pipeline compact` on `url` and kills it (SIGKILL) after a random delay, `kills`
/// times; before each run a new day of small files arrives (so each run has work to be
/// killed in), every third time also a late file into an older hour, and every fourth
/// time two compactions run at once. After every kill each hit is there with its one
/// unchanged row after dedup and every file decodes whole; after a last, uninterrupted run
/// every row is there exactly as often as it was written and each hour is one file.
async fn kill_compaction_at_random_points(lake: &Lake, url: &str, cfg: &GenConfig, kills: u32) {
    use rand::{Rng, SeedableRng};
    let bin = env!("CARGO_BIN_EXE_pipeline");
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    let compact = || {
        let mut c = std::process::Command::new(bin);
        c.args(["compact", "--lake", url, "--grace", "0s"]).env("CLICKTRAIL_LOG", "warn").stdout(std::process::Stdio::null());
        c
    };
    // Kill points are drawn up to a little past the last compaction seen finishing; while
    // none finishes, that bound grows.
    let mut bound = std::time::Duration::from_millis(300);
    let (mut mid_way, mut finished) = (0, 0);
    let mut expected = Vec::new();
    for i in 0..kills {
        let day = GenConfig { seed: 1000 + u64::from(i), start: cfg.start + chrono::Duration::days(i64::from(i)), days: 1, ..cfg.clone() };
        gen::generate(lake, &day).await.unwrap();
        if i % 3 == 2 {
            let mut late = Lakefile::default();
            let ts = cfg.start.and_hms_opt(rng.random_range(0..24), 30, 0).unwrap().and_utc().timestamp_micros()
                + rng.random_range(0..i64::from(i)) * DAY;
            late.click(ts + i64::from(i) * SECOND, "offer0", &format!("m_late{i}"), "v_late");
            late.write(lake, &format!("late-{i}")).await;
        }
        // What was written: the rows so far plus this round's files (picked by name). Not
        // the lake as it is now, which may hold a killed compaction's copies.
        let (gen_prefix, late_name) = (format!("gen-{}-", day.seed), format!("late-{i}{}", layout::PARQUET_EXT));
        expected.extend(hit_rows_of(lake, |name| name.starts_with(&gen_prefix) || name == late_name).await);
        expected.sort();
        let started = std::time::Instant::now();
        let mut children = vec![compact().stderr(std::process::Stdio::null()).spawn().unwrap()];
        if i % 4 == 3 {
            children.push(compact().stderr(std::process::Stdio::null()).spawn().unwrap());
        }
        let delay = std::time::Duration::from_micros(rng.random_range(0..(bound.as_micros() as u64 * 12 / 10)));
        std::thread::sleep(delay);
        let mut any_finished = false;
        for c in &mut children {
            if c.try_wait().unwrap().is_some() {
                finished += 1;
                any_finished = true;
                bound = started.elapsed();
            }
            let _ = c.kill();
            c.wait().unwrap();
        }
        if !any_finished {
            bound = bound.mul_f64(1.3).min(std::time::Duration::from_secs(30));
        }
        let now = hit_rows(lake).await;
        assert_eq!(one_row_per_hit(&now), one_row_per_hit(&expected), "kill {i} after {delay:?}: every hit, unchanged, after dedup");
        if now.len() > expected.len() {
            mid_way += 1; // killed between a write and its last delete
            eprintln!("kill {i} after {delay:?}: {} rows, {} written", now.len(), expected.len());
        }
    }
    eprintln!("{kills} kills: {mid_way} left rows twice (half-compacted), {finished} compactions had finished");
    assert!(compact().status().unwrap().success());
    let per_hour = files_per_hour(lake).await;
    assert!(per_hour.values().all(|n| *n == 1), "{per_hour:?}");
    assert_eq!(hit_rows(lake).await, expected, "every row exactly as often as written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_compaction_at_random_points_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("lake").display().to_string();
    let lake = Lake::open(&url).unwrap();
    let cfg = GenConfig { hits: 800, visitors: 300, members: 20, offers: 2, files_per_hour: 20, ..Default::default() };
    kill_compaction_at_random_points(&lake, &url, &cfg, 30).await;
    // Left-over temporary files are dot-named and never end in .parquet.
    for e in walk(dir.path()) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.ends_with(".parquet") || name.starts_with('.') || !e.starts_with(dir.path().join("lake/hits")), "{name}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_compaction() {
    let Ok(base) = std::env::var("CLICKTRAIL_TEST_S3_URL") else {
        assert!(!services_required(), "CLICKTRAIL_TEST_S3_URL is required (CLICKTRAIL_REQUIRE_SERVICES=1)");
        eprintln!("skipped: CLICKTRAIL_TEST_S3_URL not set");
        return;
    };
    // Two compactions at once through the library, then the reports against a memory twin.
    let url = format!("{}/compact-{}", base.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
    let lake = Lake::open(&url).unwrap();
    let mem = memory_lake();
    let cfg = GenConfig { hits: 2_000, days: 2, visitors: 200, members: 10, offers: 2, files_per_hour: 6, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    gen::generate(&mem, &cfg).await.unwrap();
    let rows = hit_rows(&lake).await;
    let opts = lake::compact::CompactOptions { grace: std::time::Duration::ZERO, ..Default::default() };
    let (a, b) = tokio::join!(lake::compact::compact(&lake, None, &opts), lake::compact::compact(&lake, None, &opts));
    assert!(a.unwrap().failed.is_empty() && b.unwrap().failed.is_empty());
    assert_eq!(one_row_per_hit(&hit_rows(&lake).await), one_row_per_hit(&rows));
    let s = lake::compact::compact(&lake, None, &opts).await.unwrap();
    assert_eq!(s.compacted, 0, "{s:?}");
    assert!(files_per_hour(&lake).await.values().all(|n| *n == 1));
    assert_eq!(hit_rows(&lake).await, rows);
    run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 2)).await;
    run(&mem, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 2)).await;
    for t in REPORT_TABLES {
        assert_frames_equal(t, &table(&lake, "28d", t).await, &table(&mem, "28d", t).await);
    }
    // And kills of the real binary against the S3-speaking server.
    let url = format!("{}/compact-kill-{}", base.trim_end_matches('/'), uuid::Uuid::new_v4().simple());
    let lake = Lake::open(&url).unwrap();
    let cfg = GenConfig { hits: 500, visitors: 200, members: 10, offers: 2, files_per_hour: 6, ..Default::default() };
    kill_compaction_at_random_points(&lake, &url, &cfg, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_while_compaction_deletes_its_files_gives_the_same_reports() {
    let cfg = GenConfig { hits: 3_000, days: 2, visitors: 300, members: 20, offers: 2, files_per_hour: 30, ..Default::default() };
    let mem = memory_lake();
    gen::generate(&mem, &cfg).await.unwrap();
    run(&mem, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 2)).await;
    let want = all_tables(&mem, "28d").await;
    let opts = lake::compact::CompactOptions { grace: std::time::Duration::ZERO, ..Default::default() };
    for delay_ms in [0u64, 20, 60] {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        gen::generate(&lake, &cfg).await.unwrap();
        let compaction = async {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            lake::compact::compact(&lake, None, &opts).await.unwrap()
        };
        let (_, summary) = tokio::join!(run(&lake, "28d", "UTC", date(2026, 1, 1), date(2026, 1, 2)), compaction);
        assert!(summary.compacted > 0);
        for (a, b) in want.iter().zip(all_tables(&lake, "28d").await.iter()) {
            assert_frames_equal(&format!("compaction {delay_ms} ms into a run"), a, b);
        }
    }
}
