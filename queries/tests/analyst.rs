//! Analysts' questions, the everyday SQL of issue 12, each asked through `queries sql`
//! (DuckDB) and checked against an answer computed here in plain Rust from the lake's
//! Parquet files (read with the parquet crate, never with DuckDB or polars SQL).
//!
//! The lake: ten days of generated traffic (three offers, 25 members, two currencies in
//! the registry), attributed by the real pipeline with 28d and 7d windows in UTC.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path as FsPath;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType as A, Date32Type, Int64Type, TimestampMicrosecondType};
use chrono::{NaiveDate, TimeZone, Timelike};
use lake::Lake;
use pipeline::gen::{self, GenConfig};
use pipeline::params::{parse_tz, Params};
use pipeline::progress::Progress;
use polars::prelude::{AnyValue, DataFrame};
use queries::engine::{self, Scope};
use queries::source::Source;

// ---------------------------------------------------------------- values

/// One value of an answer, compared exactly (floats to a relative 1e-9).
#[derive(Debug, Clone)]
enum V {
    N,
    I(i64),
    F(f64),
    S(String),
    /// Days since 1970-01-01.
    D(i32),
    /// Microseconds since the epoch.
    T(i64),
}

impl PartialEq for V {
    fn eq(&self, o: &V) -> bool {
        match (self, o) {
            (V::N, V::N) => true,
            (V::I(a), V::I(b)) => a == b,
            (V::F(a), V::F(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
            (V::F(a), V::I(b)) | (V::I(b), V::F(a)) => (a - *b as f64).abs() <= 1e-9 * a.abs().max(1.0),
            (V::S(a), V::S(b)) => a == b,
            (V::D(a), V::D(b)) => a == b,
            (V::T(a), V::T(b)) => a == b,
            _ => false,
        }
    }
}

fn any(v: AnyValue) -> V {
    match v {
        AnyValue::Null => V::N,
        AnyValue::Boolean(b) => V::I(i64::from(b)),
        AnyValue::Int8(x) => V::I(x.into()),
        AnyValue::Int16(x) => V::I(x.into()),
        AnyValue::Int32(x) => V::I(x.into()),
        AnyValue::Int64(x) => V::I(x),
        AnyValue::UInt32(x) => V::I(x.into()),
        AnyValue::UInt64(x) => V::I(x as i64),
        AnyValue::Float32(x) => V::F(x.into()),
        AnyValue::Float64(x) => V::F(x),
        AnyValue::String(s) => V::S(s.to_string()),
        AnyValue::StringOwned(s) => V::S(s.to_string()),
        AnyValue::Date(d) => V::D(d),
        AnyValue::Datetime(t, _, _) | AnyValue::DatetimeOwned(t, _, _) => V::T(t),
        AnyValue::Decimal(v, _, scale) => V::F(v as f64 / 10f64.powi(scale as i32)),
        other => V::S(other.to_string()),
    }
}

fn answer_rows(df: &DataFrame) -> Vec<Vec<V>> {
    (0..df.height()).map(|i| df.get_row(i).unwrap().0.into_iter().map(any).collect()).collect()
}

// ---------------------------------------------------------------- the lake, read here

/// A row of a Parquet table: column name → value.
type Row = HashMap<String, V>;

fn read_parquet_rows(path: &FsPath) -> Vec<Row> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let mut rows: Vec<Row> = (0..batch.num_rows()).map(|_| Row::new()).collect();
        for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
            let col = arrow::compute::cast(col, &match col.data_type() {
                A::Utf8View | A::LargeUtf8 | A::Dictionary(_, _) => A::Utf8,
                other => other.clone(),
            })
            .unwrap();
            for (i, row) in rows.iter_mut().enumerate() {
                let v = if col.is_null(i) {
                    V::N
                } else {
                    match col.data_type() {
                        A::Utf8 => V::S(col.as_string::<i32>().value(i).to_string()),
                        A::Int64 => V::I(col.as_primitive::<Int64Type>().value(i)),
                        A::Date32 => V::D(col.as_primitive::<Date32Type>().value(i)),
                        A::Timestamp(_, _) => V::T(arrow::compute::cast(&col, &A::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)).unwrap().as_primitive::<TimestampMicrosecondType>().value(i)),
                        other => panic!("unexpected column type {other} in {}", path.display()),
                    }
                };
                row.insert(field.name().clone(), v);
            }
        }
        out.extend(rows);
    }
    out
}

fn parquet_files(dir: &FsPath, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            parquet_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}

fn table(root: &FsPath, window: &str, name: &str) -> Vec<Row> {
    let mut files = Vec::new();
    parquet_files(&root.join(format!("reports/window={window}/{name}")), &mut files);
    files.sort();
    files.iter().flat_map(|f| read_parquet_rows(f)).collect()
}

/// The raw hits, deduplicated on `hit_id` (the first copy kept).
fn hits(root: &FsPath) -> Vec<Row> {
    let mut files = Vec::new();
    parquet_files(&root.join("hits"), &mut files);
    files.sort();
    let mut seen = BTreeSet::new();
    files.iter().flat_map(|f| read_parquet_rows(f)).filter(|r| seen.insert(s(r, "hit_id"))).collect()
}

fn s(r: &Row, c: &str) -> String {
    match r.get(c) {
        Some(V::S(x)) => x.clone(),
        Some(V::N) | None => String::new(),
        Some(other) => panic!("{c}: {other:?} is not text"),
    }
}
fn opt_s(r: &Row, c: &str) -> Option<String> {
    match r.get(c) {
        Some(V::S(x)) => Some(x.clone()),
        _ => None,
    }
}
fn i(r: &Row, c: &str) -> i64 {
    match r.get(c) {
        Some(V::I(x)) => *x,
        Some(V::N) | None => 0,
        Some(other) => panic!("{c}: {other:?} is not an integer"),
    }
}
fn opt_i(r: &Row, c: &str) -> Option<i64> {
    match r.get(c) {
        Some(V::I(x)) => Some(*x),
        _ => None,
    }
}
fn t(r: &Row, c: &str) -> i64 {
    match r.get(c) {
        Some(V::T(x)) => *x,
        other => panic!("{c}: {other:?} is not a timestamp"),
    }
}
fn d(r: &Row, c: &str) -> i32 {
    match r.get(c) {
        Some(V::D(x)) => *x,
        other => panic!("{c}: {other:?} is not a date"),
    }
}

fn days(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}
fn date_of(us: i64) -> i32 {
    us.div_euclid(86_400_000_000) as i32
}

struct Data {
    clicks: Vec<Row>,
    conversions: Vec<Row>,
    revenue: Vec<Row>,
    attributions: Vec<Row>,
    attributions7: Vec<Row>,
    revenue7: Vec<Row>,
    hits: Vec<Row>,
    offer_currency: BTreeMap<String, String>,
}

const START: (i32, u32, u32) = (2026, 1, 1);

async fn build(root: &FsPath) -> Lake {
    let lake = Lake::open(root.to_str().unwrap()).unwrap();
    let start = NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap();
    let cfg = GenConfig { hits: 5_000, days: 10, visitors: 400, members: 25, offers: 3, start, ..Default::default() };
    gen::generate(&lake, &cfg).await.unwrap();
    for window in ["28d", "7d"] {
        let p = Params::new(window.parse().unwrap(), parse_tz("UTC").unwrap(), start, start + chrono::Duration::days(9)).unwrap();
        pipeline::run(&lake, &p, None, "test", &Progress::quiet()).await.unwrap();
    }
    lake
}

fn registry(root: &FsPath, offers: &BTreeSet<String>) -> BTreeMap<String, String> {
    // Offers alternate between two currencies; the registry files are written by hand in
    // the registry's CSV form (after the runs: the pipeline's commissions are not the point).
    let mut csv = String::from("offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n");
    let mut out = BTreeMap::new();
    for (n, o) in offers.iter().enumerate() {
        let cur = if n % 2 == 0 { "USD" } else { "EUR" };
        csv.push_str(&format!("{o},https://shop.example.com/{o},secret-{n},{cur},28,30,0,click\n"));
        out.insert(o.clone(), cur.to_string());
    }
    std::fs::create_dir_all(root.join("registry")).unwrap();
    std::fs::write(root.join("registry/offers.csv"), csv).unwrap();
    out
}

// ---------------------------------------------------------------- asking

struct Asker {
    source: Source,
    failures: Vec<String>,
    asked: usize,
}

impl Asker {
    async fn sql(&self, sql: &str) -> Result<DataFrame, String> {
        let scope = Scope { window: "28d".parse().unwrap(), from: None, to: None };
        let p = engine::prepare(&self.source, "SQL", sql, &scope, BTreeMap::new()).await.map_err(|e| format!("{e:#}"))?;
        queries::collect("SQL", p).map_err(|e| format!("{e:#}"))
    }

    /// Asks `sql`; its rows must equal `want` in order.
    async fn check(&mut self, question: &str, sql: &str, want: Vec<Vec<V>>) {
        self.asked += 1;
        match self.sql(sql).await {
            Err(e) => self.failures.push(format!("{question}: refused: {e}\n  {sql}")),
            Ok(df) => {
                let got = answer_rows(&df);
                if got != want {
                    let first = got.iter().zip(&want).position(|(g, w)| g != w).unwrap_or(got.len().min(want.len()));
                    self.failures.push(format!(
                        "{question}: {} rows, {} expected; first difference at row {first}: got {:?}, want {:?}\n  {sql}",
                        got.len(),
                        want.len(),
                        got.get(first),
                        want.get(first)
                    ));
                }
            }
        }
    }

    /// Asks `sql`; its rows, sorted, must equal `want` sorted (no ORDER BY in the question).
    async fn check_unordered(&mut self, question: &str, sql: &str, mut want: Vec<Vec<V>>) {
        let key = |r: &Vec<V>| format!("{r:?}");
        want.sort_by_key(key);
        self.asked += 1;
        match self.sql(sql).await {
            Err(e) => self.failures.push(format!("{question}: refused: {e}\n  {sql}")),
            Ok(df) => {
                let mut got = answer_rows(&df);
                got.sort_by_key(key);
                if got != want {
                    self.failures.push(format!("{question}: {} rows, {} expected (sorted): got {:?}…, want {:?}…\n  {sql}", got.len(), want.len(), got.first(), want.first()));
                }
            }
        }
    }
}

fn sum_by<K: Ord + Clone>(rows: &[Row], key: impl Fn(&Row) -> K, val: impl Fn(&Row) -> i64) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for r in rows {
        *m.entry(key(r)).or_insert(0) += val(r);
    }
    m
}

fn attributed(rows: &[Row]) -> Vec<&Row> {
    rows.iter().filter(|r| s(r, "status") == "attributed").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_questions_are_answered_right() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let lake = build(&root).await;
    let clicks = table(&root, "28d", "clicks");
    let offers: BTreeSet<String> = clicks.iter().map(|r| s(r, "offer_id")).collect();
    let offer_currency = registry(&root, &offers);
    let data = Data {
        clicks,
        conversions: table(&root, "28d", "conversions"),
        revenue: table(&root, "28d", "revenue"),
        attributions: table(&root, "28d", "attributions"),
        attributions7: table(&root, "7d", "attributions"),
        revenue7: table(&root, "7d", "revenue"),
        hits: hits(&root),
        offer_currency,
    };
    assert!(data.clicks.len() > 50 && attributed(&data.attributions).len() > 50, "a lake with something in it");
    let mut q = Asker { source: Source::new(lake), failures: Vec::new(), asked: 0 };
    let Data { clicks, conversions, revenue, attributions, attributions7, revenue7, hits, offer_currency } = &data;
    let member_clicks = sum_by(clicks, |r| s(r, "member_id"), |r| i(r, "clicks"));
    let total_clicks: i64 = member_clicks.values().sum();

    // 1. Total clicks.
    q.check("total clicks", "SELECT SUM(clicks) AS n FROM clicks", vec![vec![V::I(total_clicks)]]).await;

    // 2. Clicks per member with the grand total beside each row (a window over an aggregate).
    q.check(
        "clicks per member beside the total",
        "SELECT member_id, SUM(clicks) AS c, SUM(SUM(clicks)) OVER () AS total FROM clicks GROUP BY member_id ORDER BY member_id",
        member_clicks.iter().map(|(m, c)| vec![V::S(m.clone()), V::I(*c), V::I(total_clicks)]).collect(),
    )
    .await;

    // 3. Rows per date with the count of all rows beside (SUM(COUNT(*)) OVER ()).
    let rows_per_date = sum_by(clicks, |r| d(r, "date"), |_| 1);
    q.check(
        "clicks rows per date beside all rows",
        "SELECT date, COUNT(*) AS n, SUM(COUNT(*)) OVER () AS all_rows FROM clicks GROUP BY date ORDER BY date",
        rows_per_date.iter().map(|(k, n)| vec![V::D(*k), V::I(*n), V::I(clicks.len() as i64)]).collect(),
    )
    .await;

    // 4–5. Members above the average member's clicks: a window over an aggregate, and a scalar subquery.
    let avg = total_clicks as f64 / member_clicks.len() as f64;
    let above: Vec<Vec<V>> = member_clicks.iter().filter(|(_, c)| **c as f64 > avg).map(|(m, c)| vec![V::S(m.clone()), V::I(*c)]).collect();
    q.check(
        "members above average (window)",
        "SELECT member_id, c FROM (SELECT member_id, SUM(clicks) AS c, AVG(SUM(clicks)) OVER () AS a FROM clicks GROUP BY member_id) WHERE c > a ORDER BY member_id",
        above.clone(),
    )
    .await;
    q.check(
        "members above average (scalar subquery)",
        "SELECT member_id, SUM(clicks) AS c FROM clicks GROUP BY member_id HAVING SUM(clicks) > (SELECT AVG(c) FROM (SELECT SUM(clicks) AS c FROM clicks GROUP BY member_id)) ORDER BY member_id",
        above,
    )
    .await;

    // 6. Each member's best day (a correlated subquery).
    let mut per_member_day: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for r in clicks.iter() {
        *per_member_day.entry((s(r, "member_id"), d(r, "date"))).or_insert(0) += i(r, "clicks");
    }
    let mut best: BTreeMap<String, i64> = BTreeMap::new();
    for ((m, _), c) in &per_member_day {
        let b = best.entry(m.clone()).or_insert(0);
        *b = (*b).max(*c);
    }
    q.check(
        "each member's best day (correlated subquery)",
        "WITH md AS (SELECT member_id, date, SUM(clicks) AS c FROM clicks GROUP BY member_id, date) \
         SELECT DISTINCT member_id, c FROM md o WHERE c = (SELECT MAX(c) FROM md i WHERE i.member_id = o.member_id) ORDER BY member_id",
        best.iter().map(|(m, c)| vec![V::S(m.clone()), V::I(*c)]).collect(),
    )
    .await;

    // 7. Members with an attributed conversion (IN) and 8. without one (NOT EXISTS).
    let converting: BTreeSet<String> = attributed(attributions).iter().map(|r| s(r, "member_id")).collect();
    let clicking: BTreeSet<String> = member_clicks.keys().cloned().collect();
    q.check(
        "clicking members who converted (IN)",
        "SELECT DISTINCT member_id FROM clicks WHERE member_id IN (SELECT member_id FROM attributions WHERE status = 'attributed') ORDER BY 1",
        clicking.intersection(&converting).map(|m| vec![V::S(m.clone())]).collect(),
    )
    .await;
    q.check(
        "clicking members who never converted (NOT EXISTS)",
        "SELECT DISTINCT member_id FROM clicks c WHERE NOT EXISTS (SELECT 1 FROM attributions a WHERE a.member_id = c.member_id AND a.status = 'attributed') ORDER BY 1",
        clicking.difference(&converting).map(|m| vec![V::S(m.clone())]).collect(),
    )
    .await;

    // 9. Revenue per currency in currency units, by DECIMAL division (exact to the micro).
    let rev_cur = sum_by(revenue, |r| s(r, "currency"), |r| i(r, "revenue_micros"));
    let rev_cur: BTreeMap<String, i64> = rev_cur.into_iter().filter(|(c, _)| !c.is_empty()).collect();
    q.check(
        "revenue per currency, decimal division",
        "SELECT currency, CAST(SUM(revenue_micros) AS DECIMAL(20,0)) / CAST(1000000 AS DECIMAL(20,0)) AS units FROM revenue WHERE currency IS NOT NULL GROUP BY currency ORDER BY currency",
        rev_cur.iter().map(|(c, m)| vec![V::S(c.clone()), V::F(*m as f64 / 1e6)]).collect(),
    )
    .await;
    // 10. The same with a 1e6 literal.
    q.check(
        "revenue per currency, 1e6 literal",
        "SELECT currency, SUM(revenue_micros) / 1e6 AS units FROM revenue WHERE currency IS NOT NULL GROUP BY currency ORDER BY currency",
        rev_cur.iter().map(|(c, m)| vec![V::S(c.clone()), V::F(*m as f64 / 1e6)]).collect(),
    )
    .await;
    // 11. Exact decimals: micros times 0.000001 is a DECIMAL(38,6), exact to the micro
    //     (DuckDB divides DECIMALs in floating point, so `/ 1000000` is not exact).
    q.check(
        "revenue as exact decimals",
        "SELECT currency, (CAST(SUM(revenue_micros) AS DECIMAL(38,0)) * 0.000001)::VARCHAR AS units FROM revenue WHERE currency IS NOT NULL GROUP BY currency ORDER BY currency",
        rev_cur.iter().map(|(c, m)| vec![V::S(c.clone()), V::S(format!("{}.{:06}", m / 1_000_000, m % 1_000_000))]).collect(),
    )
    .await;

    // 12. Attributed conversions per ISO week of the conversion (date_trunc on ts).
    let week_of = |us: i64| {
        let day = date_of(us);
        // 1970-01-01 was a Thursday; ISO weeks start on Monday.
        day - (day + 3).rem_euclid(7)
    };
    let per_week = sum_by(&attributed(attributions).into_iter().cloned().collect::<Vec<_>>(), |r| week_of(t(r, "ts")), |_| 1);
    q.check(
        "attributed conversions per week",
        "SELECT CAST(date_trunc('week', ts) AS DATE) AS week, COUNT(*) AS n FROM attributions WHERE status = 'attributed' GROUP BY 1 ORDER BY 1",
        per_week.iter().map(|(w, n)| vec![V::D(*w), V::I(*n)]).collect(),
    )
    .await;

    // 13–14. Median lag (percentile_cont and median) of attributed conversions.
    let mut lags: Vec<i64> = attributed(attributions).iter().map(|r| i(r, "lag_seconds")).collect();
    lags.sort();
    let median = {
        let n = lags.len();
        if n % 2 == 1 { lags[n / 2] as f64 } else { (lags[n / 2 - 1] + lags[n / 2]) as f64 / 2.0 }
    };
    q.check(
        "median lag (percentile_cont)",
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_seconds) AS m FROM attributions WHERE status = 'attributed'",
        vec![vec![V::F(median)]],
    )
    .await;
    q.check("median lag (median)", "SELECT median(lag_seconds) AS m FROM attributions WHERE status = 'attributed'", vec![vec![V::F(median)]]).await;

    // 15. The lag in whole seconds from ts - click_ts, against lag_seconds (how many differ).
    let differ = attributed(attributions).iter().filter(|r| (t(r, "ts") - t(r, "click_ts")).div_euclid(1_000_000) != i(r, "lag_seconds")).count();
    q.check(
        "ts - click_ts is the lag",
        "SELECT COUNT(*) AS differ FROM attributions WHERE status = 'attributed' AND CAST(floor(epoch(ts - click_ts)) AS BIGINT) <> lag_seconds",
        vec![vec![V::I(differ as i64)]],
    )
    .await;
    // 16. The longest lag as an interval, in whole hours.
    q.check(
        "longest lag in hours",
        "SELECT MAX(date_diff('hour', click_ts, ts)) AS h FROM attributions WHERE status = 'attributed'",
        vec![vec![V::I(attributed(attributions).iter().map(|r| (t(r, "ts") - t(r, "click_ts")).div_euclid(3_600_000_000)).max().unwrap())]],
    )
    .await;

    // 17. Clicks per local hour of the day in New York (from hits; AT TIME ZONE).
    let ny = chrono_tz::America::New_York;
    let click_hits: Vec<&Row> = hits.iter().filter(|r| s(r, "kind") == "click").collect();
    let mut by_hour: BTreeMap<i64, i64> = BTreeMap::new();
    for r in &click_hits {
        let local = ny.timestamp_micros(t(r, "ts")).unwrap();
        *by_hour.entry(i64::from(local.hour())).or_insert(0) += 1;
    }
    q.check(
        "clicks per New York hour",
        "SELECT hour(ts AT TIME ZONE 'America/New_York') AS h, COUNT(DISTINCT hit_id) AS n FROM hits WHERE kind = 'click' GROUP BY 1 ORDER BY 1",
        by_hour.iter().map(|(h, n)| vec![V::I(*h), V::I(*n)]).collect(),
    )
    .await;
    // 18. Clicks on a Tokyo calendar day.
    let tokyo = chrono_tz::Asia::Tokyo;
    let tokyo_day = NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
    let n_tokyo = click_hits.iter().filter(|r| tokyo.timestamp_micros(t(r, "ts")).unwrap().date_naive() == tokyo_day).count();
    q.check(
        "clicks on a Tokyo day",
        "SELECT COUNT(DISTINCT hit_id) AS n FROM hits WHERE kind = 'click' AND CAST(ts AT TIME ZONE 'Asia/Tokyo' AS DATE) = DATE '2026-01-05'",
        vec![vec![V::I(n_tokyo as i64)]],
    )
    .await;
    // 19. Hits after a given instant (a timestamp literal).
    let cut = chrono::Utc.with_ymd_and_hms(2026, 1, 6, 12, 0, 0).unwrap().timestamp_micros();
    q.check(
        "hits after noon UTC on Jan 6",
        "SELECT COUNT(DISTINCT hit_id) AS n FROM hits WHERE ts > TIMESTAMP '2026-01-06 12:00:00'",
        vec![vec![V::I(hits.iter().filter(|r| t(r, "ts") > cut).count() as i64)]],
    )
    .await;
    // 20. The UTC date and hour columns of hits match ts.
    q.check(
        "hits date and hour are ts's",
        "SELECT COUNT(*) AS wrong FROM hits WHERE date <> CAST(ts AS DATE) OR hour <> hour(ts)",
        vec![vec![V::I(0)]],
    )
    .await;

    // 21. Daily clicks with a running total and 22. a 3-day moving sum (ROWS 2 PRECEDING).
    let daily = sum_by(clicks, |r| d(r, "date"), |r| i(r, "clicks"));
    let mut run = 0;
    let daily_v: Vec<(i32, i64)> = daily.iter().map(|(k, v)| (*k, *v)).collect();
    q.check(
        "daily clicks with running total",
        "SELECT date, SUM(clicks) AS c, SUM(SUM(clicks)) OVER (ORDER BY date) AS running FROM clicks GROUP BY date ORDER BY date",
        daily_v
            .iter()
            .map(|(k, v)| {
                run += v;
                vec![V::D(*k), V::I(*v), V::I(run)]
            })
            .collect(),
    )
    .await;
    q.check(
        "daily clicks, 3-day moving sum",
        "SELECT date, SUM(SUM(clicks)) OVER (ORDER BY date ROWS 2 PRECEDING) AS m3 FROM clicks GROUP BY date ORDER BY date",
        daily_v.iter().enumerate().map(|(n, (k, _))| vec![V::D(*k), V::I(daily_v[n.saturating_sub(2)..=n].iter().map(|x| x.1).sum())]).collect(),
    )
    .await;
    // 23. Day-over-day change (LAG).
    q.check(
        "day over day change",
        "SELECT date, SUM(clicks) - LAG(SUM(clicks)) OVER (ORDER BY date) AS change FROM clicks GROUP BY date ORDER BY date",
        daily_v.iter().enumerate().map(|(n, (k, v))| vec![V::D(*k), if n == 0 { V::N } else { V::I(v - daily_v[n - 1].1) }]).collect(),
    )
    .await;

    // 24. Members ranked by clicks (rank with ties), 25. dense_rank, 26. percent_rank.
    let mut by_clicks: Vec<(String, i64)> = member_clicks.iter().map(|(m, c)| (m.clone(), *c)).collect();
    by_clicks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let ranks = |dense: bool| -> Vec<i64> {
        let mut out = Vec::new();
        for (n, (_, c)) in by_clicks.iter().enumerate() {
            let r = if dense {
                by_clicks.iter().map(|x| x.1).filter(|x| x > c).collect::<BTreeSet<_>>().len() as i64 + 1
            } else {
                by_clicks.iter().filter(|x| x.1 > *c).count() as i64 + 1
            };
            let _ = n;
            out.push(r);
        }
        out
    };
    let (rk, drk) = (ranks(false), ranks(true));
    let n_members = by_clicks.len() as f64;
    q.check(
        "members ranked by clicks",
        "SELECT member_id, rank() OVER (ORDER BY SUM(clicks) DESC) AS r, dense_rank() OVER (ORDER BY SUM(clicks) DESC) AS dr, \
         percent_rank() OVER (ORDER BY SUM(clicks) DESC) AS pr FROM clicks GROUP BY member_id ORDER BY SUM(clicks) DESC, member_id",
        by_clicks
            .iter()
            .enumerate()
            .map(|(n, (m, _))| vec![V::S(m.clone()), V::I(rk[n]), V::I(drk[n]), V::F((rk[n] - 1) as f64 / (n_members - 1.0))])
            .collect(),
    )
    .await;

    // 27. Top 2 members per offer by clicks (QUALIFY).
    let mut per_offer: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for ((o, m), c) in sum_by(clicks, |r| (s(r, "offer_id"), s(r, "member_id")), |r| i(r, "clicks")) {
        per_offer.entry(o).or_default().push((c, m));
    }
    let mut top2 = Vec::new();
    for (o, mut v) in per_offer.clone() {
        v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (c, m) in v.into_iter().take(2) {
            top2.push(vec![V::S(o.clone()), V::S(m), V::I(c)]);
        }
    }
    q.check(
        "top 2 members per offer",
        "SELECT offer_id, member_id, SUM(clicks) AS c FROM clicks GROUP BY offer_id, member_id \
         QUALIFY row_number() OVER (PARTITION BY offer_id ORDER BY SUM(clicks) DESC, member_id) <= 2 ORDER BY offer_id, c DESC, member_id",
        top2,
    )
    .await;
    // 28. Each offer's share of all clicks, in percent.
    let offer_clicks = sum_by(clicks, |r| s(r, "offer_id"), |r| i(r, "clicks"));
    q.check(
        "offer share of clicks",
        "SELECT offer_id, 100.0 * SUM(clicks) / SUM(SUM(clicks)) OVER () AS share FROM clicks GROUP BY offer_id ORDER BY offer_id",
        offer_clicks.iter().map(|(o, c)| vec![V::S(o.clone()), V::F(100.0 * *c as f64 / total_clicks as f64)]).collect(),
    )
    .await;

    // 29. Cohorts: visitors by the date of their first click, and how many of them converted
    //     (attributed through a visitor or click id) — from hits and attributions.
    let mut first_click: BTreeMap<String, i64> = BTreeMap::new();
    let mut click_visitor: HashMap<String, String> = HashMap::new();
    for r in &click_hits {
        let Some(v) = opt_s(r, "visitor_id").filter(|v| !v.is_empty()) else { continue };
        let e = first_click.entry(v.clone()).or_insert(i64::MAX);
        *e = (*e).min(t(r, "ts"));
        if let Some(c) = opt_s(r, "click_id") {
            click_visitor.insert(c, v);
        }
    }
    let converted: BTreeSet<String> = attributed(attributions).iter().filter_map(|r| opt_s(r, "click_id").and_then(|c| click_visitor.get(&c).cloned())).collect();
    let mut cohorts: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for (v, ts) in &first_click {
        let e = cohorts.entry(date_of(*ts)).or_insert((0, 0));
        e.0 += 1;
        e.1 += i64::from(converted.contains(v));
    }
    q.check(
        "first-click cohorts",
        "WITH ch AS (SELECT DISTINCT hit_id, ts, visitor_id, click_id FROM hits WHERE kind = 'click' AND visitor_id <> ''), \
         f AS (SELECT visitor_id, CAST(MIN(ts) AS DATE) AS cohort FROM ch GROUP BY visitor_id), \
         conv AS (SELECT DISTINCT ch.visitor_id FROM attributions a JOIN ch ON ch.click_id = a.click_id WHERE a.status = 'attributed') \
         SELECT cohort, COUNT(*) AS visitors, COUNT(conv.visitor_id) AS converted FROM f LEFT JOIN conv USING (visitor_id) GROUP BY cohort ORDER BY cohort",
        cohorts.iter().map(|(k, (n, c))| vec![V::D(*k), V::I(*n), V::I(*c)]).collect(),
    )
    .await;

    // 30. Funnel per member: clicks, attributed conversions, conversion rate.
    let conv_member = sum_by(conversions, |r| s(r, "member_id"), |r| i(r, "conversions"));
    q.check(
        "funnel per member",
        "WITH c AS (SELECT member_id, SUM(clicks) AS clicks FROM clicks GROUP BY 1), v AS (SELECT member_id, SUM(conversions) AS conv FROM conversions GROUP BY 1) \
         SELECT c.member_id, c.clicks, COALESCE(v.conv, 0) AS conv, ROUND(COALESCE(v.conv, 0) / c.clicks, 6) AS rate FROM c LEFT JOIN v USING (member_id) ORDER BY c.member_id",
        member_clicks
            .iter()
            .map(|(m, c)| {
                let v = conv_member.get(m).copied().unwrap_or(0);
                vec![V::S(m.clone()), V::I(*c), V::I(v), V::F(((v as f64 / *c as f64) * 1e6).round() / 1e6)]
            })
            .collect(),
    )
    .await;

    // 31. Clicks by the currency of the offer (a join to the registry).
    let by_cur = sum_by(clicks, |r| offer_currency[&s(r, "offer_id")].clone(), |r| i(r, "clicks"));
    q.check(
        "clicks by offer currency (join to offers)",
        "SELECT o.currency, SUM(c.clicks) AS n FROM clicks c JOIN offers o USING (offer_id) GROUP BY o.currency ORDER BY o.currency",
        by_cur.iter().map(|(c, n)| vec![V::S(c.clone()), V::I(*n)]).collect(),
    )
    .await;
    // 32. Offers without any click (LEFT JOIN … IS NULL): none here.
    q.check("offers without clicks", "SELECT o.offer_id FROM offers o LEFT JOIN clicks c USING (offer_id) WHERE c.offer_id IS NULL", vec![]).await;

    // 33. Every (offer, date) pair, zero where no click (CROSS JOIN).
    let dates: BTreeSet<i32> = clicks.iter().map(|r| d(r, "date")).collect();
    let od = sum_by(clicks, |r| (s(r, "offer_id"), d(r, "date")), |r| i(r, "clicks"));
    let mut grid = Vec::new();
    for o in offer_currency.keys() {
        for k in &dates {
            grid.push(vec![V::S(o.clone()), V::D(*k), V::I(od.get(&(o.clone(), *k)).copied().unwrap_or(0))]);
        }
    }
    q.check(
        "offer by date grid (cross join)",
        "WITH d AS (SELECT DISTINCT date FROM clicks) SELECT o.offer_id, d.date, COALESCE(SUM(c.clicks), 0) AS n \
         FROM offers o CROSS JOIN d LEFT JOIN clicks c ON c.offer_id = o.offer_id AND c.date = d.date GROUP BY ALL ORDER BY 1, 2",
        grid,
    )
    .await;
    // 34. Conversions within an hour of their click (a non-equi join of attributions to hits).
    let click_ts: HashMap<String, i64> = click_hits.iter().filter_map(|r| opt_s(r, "click_id").map(|c| (c, t(r, "ts")))).collect();
    let quick = attributed(attributions).iter().filter(|r| opt_s(r, "click_id").and_then(|c| click_ts.get(&c)).is_some_and(|c| t(r, "ts") < c + 3_600_000_000 && t(r, "ts") >= *c)).count();
    q.check(
        "conversions within an hour of the click (non-equi join)",
        "SELECT COUNT(DISTINCT a.hit_id) AS n FROM attributions a JOIN hits h ON h.kind = 'click' AND h.click_id = a.click_id \
         AND a.ts >= h.ts AND a.ts < h.ts + INTERVAL 1 HOUR WHERE a.status = 'attributed'",
        vec![vec![V::I(quick as i64)]],
    )
    .await;

    // 35. Members who clicked but never converted, by EXCEPT.
    q.check(
        "members who clicked, except those who converted",
        "SELECT member_id FROM clicks EXCEPT SELECT member_id FROM attributions WHERE status = 'attributed' ORDER BY 1",
        clicking.difference(&converting).map(|m| vec![V::S(m.clone())]).collect(),
    )
    .await;
    // 36. Statuses with more than 10 conversions (HAVING), and a CASE bucket.
    let statuses = sum_by(attributions, |r| s(r, "status"), |_| 1);
    q.check(
        "statuses with more than 10 conversions",
        "SELECT status, COUNT(*) AS n FROM attributions GROUP BY status HAVING COUNT(*) > 10 ORDER BY status",
        statuses.iter().filter(|(_, n)| **n > 10).map(|(k, n)| vec![V::S(k.clone()), V::I(*n)]).collect(),
    )
    .await;
    q.check(
        "attributed or not (CASE)",
        "SELECT CASE WHEN status = 'attributed' THEN 'yes' ELSE 'no' END AS a, COUNT(*) AS n FROM attributions GROUP BY 1 ORDER BY 1",
        {
            let yes = statuses.get("attributed").copied().unwrap_or(0);
            vec![vec![V::S("no".into()), V::I(attributions.len() as i64 - yes)], vec![V::S("yes".into()), V::I(yes)]]
        },
    )
    .await;
    // 37. Conversions without an amount (NULL handling) and distinct orders.
    q.check(
        "conversions without an amount, distinct orders",
        "SELECT COUNT(*) FILTER (WHERE amount_micros IS NULL) AS no_amount, COUNT(DISTINCT order_id) AS orders, COALESCE(SUM(amount_micros), 0) AS amount FROM attributions",
        vec![vec![
            V::I(attributions.iter().filter(|r| opt_i(r, "amount_micros").is_none()).count() as i64),
            V::I(attributions.iter().filter_map(|r| opt_s(r, "order_id")).collect::<BTreeSet<_>>().len() as i64),
            V::I(attributions.iter().map(|r| i(r, "amount_micros")).sum()),
        ]],
    )
    .await;
    // 38. String functions: members by their id's prefix and length.
    q.check_unordered(
        "members by id prefix",
        "SELECT upper(left(member_id, 1)) AS p, length(member_id) AS l, COUNT(DISTINCT member_id) AS n FROM clicks GROUP BY ALL",
        {
            let mut m: BTreeMap<(String, i64), i64> = BTreeMap::new();
            for id in &clicking {
                *m.entry((id.chars().next().map(|c| c.to_uppercase().to_string()).unwrap_or_default(), id.chars().count() as i64)).or_insert(0) += 1;
            }
            m.into_iter().map(|((p, l), n)| vec![V::S(p), V::I(l), V::I(n)]).collect()
        },
    )
    .await;

    // 39. Two windows in one statement: revenue per window (revenue_all).
    let r28: i64 = revenue.iter().map(|r| i(r, "revenue_micros")).sum();
    let r7: i64 = revenue7.iter().map(|r| i(r, "revenue_micros")).sum();
    q.check(
        "revenue per window",
        "SELECT \"window\", SUM(revenue_micros) AS r FROM revenue_all GROUP BY 1 ORDER BY 1",
        vec![vec![V::S("28d".into()), V::I(r28)], vec![V::S("7d".into()), V::I(r7)]],
    )
    .await;
    // 40. Per member: attributed conversions under 28d and 7d side by side (a join of windows).
    let a28 = sum_by(&attributed(attributions).into_iter().cloned().collect::<Vec<_>>(), |r| s(r, "member_id"), |_| 1);
    let a7 = sum_by(&attributed(attributions7).into_iter().cloned().collect::<Vec<_>>(), |r| s(r, "member_id"), |_| 1);
    let members: BTreeSet<&String> = a28.keys().chain(a7.keys()).collect();
    q.check(
        "attributed per member, 28d beside 7d",
        "WITH a AS (SELECT \"window\", member_id, COUNT(*) AS n FROM attributions_all WHERE status = 'attributed' GROUP BY ALL) \
         SELECT member_id, COALESCE(MAX(n) FILTER (WHERE \"window\" = '28d'), 0) AS w28, COALESCE(MAX(n) FILTER (WHERE \"window\" = '7d'), 0) AS w7 \
         FROM a GROUP BY member_id ORDER BY member_id",
        members.iter().map(|m| vec![V::S((*m).clone()), V::I(a28.get(*m).copied().unwrap_or(0)), V::I(a7.get(*m).copied().unwrap_or(0))]).collect(),
    )
    .await;

    // 41. DESCRIBE clicks: its columns and types.
    q.check(
        "describe clicks",
        "SELECT column_name, column_type FROM (DESCRIBE clicks)",
        [("date", "DATE"), ("offer_id", "VARCHAR"), ("member_id", "VARCHAR"), ("clicks", "BIGINT"), ("unique_clicks", "BIGINT"), ("bot_clicks", "BIGINT")]
            .iter()
            .map(|(c, t)| vec![V::S(c.to_string()), V::S(t.to_string())])
            .collect(),
    )
    .await;
    // 42. SHOW TABLES lists every table.
    let mut tables: Vec<String> = lake::layout::REPORT_TABLES.iter().flat_map(|t| [t.to_string(), format!("{t}_all")]).collect();
    tables.extend(["hits", "links", "offers"].map(String::from));
    tables.sort();
    q.check("show tables", "SHOW TABLES", tables.into_iter().map(|t| vec![V::S(t)]).collect()).await;
    // 43. An unaliased count(*) is named as DuckDB names it.
    match q.sql("SELECT count(*) FROM clicks").await {
        Ok(df) => assert_eq!(df.get_column_names()[0].as_str(), "count_star()"),
        Err(e) => q.failures.push(format!("unaliased count: {e}")),
    }
    q.asked += 1;
    // 44. Orders per currency and event from hits (dedup on hit_id, kind filter, GROUP BY ALL).
    let mut orders: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in hits.iter().filter(|r| s(r, "kind") != "click" && s(r, "kind") != "adjustment") {
        if let (Some(o), Some(c)) = (opt_s(r, "order_id"), opt_s(r, "currency")) {
            orders.entry((c, s(r, "event"))).or_default().insert(o);
        }
    }
    q.check(
        "distinct orders per currency and event",
        "SELECT currency, event, COUNT(DISTINCT order_id) AS n FROM hits WHERE kind IN ('pixel', 'postback') AND order_id IS NOT NULL AND currency IS NOT NULL GROUP BY ALL ORDER BY ALL",
        orders.iter().map(|((c, e), s)| vec![V::S(c.clone()), V::S(e.clone()), V::I(s.len() as i64)]).collect(),
    )
    .await;
    // 45. The date range's first and last report dates.
    let (lo, hi) = (*dates.first().unwrap(), *dates.last().unwrap());
    q.check("first and last dates", "SELECT MIN(date) AS a, MAX(date) AS b FROM clicks", vec![vec![V::D(lo), V::D(hi)]]).await;
    assert_eq!(lo, days(NaiveDate::from_ymd_opt(START.0, START.1, START.2).unwrap()));

    assert!(q.asked >= 40, "{} questions", q.asked);
    assert!(q.failures.is_empty(), "{} of {} questions answered wrong or refused:\n{}", q.failures.len(), q.asked, q.failures.join("\n"));
}

/// Three of the questions through the real binary, as an analyst types them.
#[test]
fn the_cli_answers_in_csv() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(build(&root));
    let clicks = table(&root, "28d", "clicks");
    let total: i64 = clicks.iter().map(|r| i(r, "clicks")).sum();
    let run = |sql: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_queries"))
            .args(["--lake", root.to_str().unwrap(), "sql", sql, "--format", "csv"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("SELECT SUM(clicks) AS n FROM clicks"), format!("n\r\n{total}\r\n"));
    let per_member = sum_by(&clicks, |r| s(r, "member_id"), |r| i(r, "clicks"));
    let (top, n) = per_member.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0))).unwrap();
    assert_eq!(
        run("SELECT member_id, SUM(clicks) AS n FROM clicks GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"),
        format!("member_id,n\r\n{top},{n}\r\n")
    );
    assert_eq!(run("SELECT COUNT(*) AS n FROM (SHOW TABLES) WHERE name LIKE '%_all'"), "n\r\n6\r\n");
}
