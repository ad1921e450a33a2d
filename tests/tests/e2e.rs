//! End to end: the real collector binary takes simulated traffic over HTTP (gen mode 1),
//! stops on SIGTERM, the real pipeline binary attributes the day, and its tables are
//! checked against the generator's ground truth.

#![allow(clippy::unwrap_used, clippy::type_complexity)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A workspace binary, built by `cargo test --workspace` in the same profile folder.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo test --workspace` (or `cargo build --bins`) first", path.display());
    path
}

fn read_table(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                let f = std::fs::File::open(&p).unwrap();
                for b in ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap() {
                    out.push(b.unwrap());
                }
            }
        }
    }
    out
}

fn s(b: &RecordBatch, col: &str, row: usize) -> Option<String> {
    let c = b.column_by_name(col).unwrap_or_else(|| panic!("column {col} missing"));
    (!c.is_null(row)).then(|| string_at(c.as_ref(), row))
}

fn i(b: &RecordBatch, col: &str, row: usize) -> Option<i64> {
    let c = b.column_by_name(col).unwrap_or_else(|| panic!("column {col} missing"));
    (!c.is_null(row)).then(|| c.as_primitive::<Int64Type>().value(row))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collector_to_pipeline_matches_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    std::fs::create_dir_all(lake_dir.join("registry")).unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/registry");
    std::fs::copy(data.join("links.csv"), lake_dir.join("registry/links.csv")).unwrap();
    // The sample offers, with SPEC §8 settings: coupons first on newsletter, a one-hour
    // fraud floor on fitapp (every simulated conversion follows its click within seconds,
    // so fitapp's click conversions are all too_fast). Coupons: valid, expired, per offer.
    std::fs::write(
        lake_dir.join("registry/offers.csv"),
        "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n\
         sneakers,https://shop.example.com/sneakers,sample-token-sneakers,EUR,28,30,0,click\n\
         newsletter,https://news.example.org/signup,sample-token-newsletter,USD,7,30,0,coupon\n\
         fitapp,https://fitapp.example.co.uk/download,sample-token-fitapp,GBP,28,30,3600,click\n",
    )
    .unwrap();
    std::fs::write(
        lake_dir.join("registry/coupons.csv"),
        "code,offer_id,member_id,valid_from,valid_to\nANN10,sneakers,ann,,\nOLD5,sneakers,bob,2020-01-01,2020-12-31\n\
         NEWS1,newsletter,cara,,\nHANA2,newsletter,hana,2020-01-01,\nFIT20,fitapp,kai,,\n",
    )
    .unwrap();
    // Commissions (SPEC §7): 10% of net on sneakers, 0.50 flat per newsletter conversion,
    // 0.01 per fitapp click.
    std::fs::write(
        lake_dir.join("registry/commissions.csv"),
        "offer_id,member_id,event,percent,flat,valid_from\nsneakers,,,10,,\nnewsletter,,,,0.5,\nfitapp,,click,,0.01,\n",
    )
    .unwrap();
    let lake_url = lake_dir.display().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let mut collector = Command::new(binary("collector"))
        .args(["--lake", &lake_url, "serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--spool")
        .arg(dir.path().join("spool"))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "collector did not start");
        std::thread::sleep(Duration::from_millis(50));
    }

    let lake = lake::Lake::open(&lake_url).unwrap();
    let first_day = chrono::Utc::now().date_naive();
    let truth = gen::http::run(&lake, &gen::http::HttpConfig { collector: base, customers: 600, seed: 7, concurrency: 8 }).await.unwrap();
    assert_eq!(truth.refused, 0);
    // Traffic that crosses midnight (UTC) spans two dates: attribute both.
    let last_day = chrono::Utc::now().date_naive();

    let term = Command::new("kill").args(["-TERM", &collector.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(collector.wait().unwrap().success(), "collector exits 0 on SIGTERM");

    let out = Command::new(binary("pipeline"))
        .args(["--lake", &lake_url, "run", "--from", &first_day.to_string(), "--to", &last_day.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "pipeline failed: {}", String::from_utf8_lossy(&out.stderr));

    let reports = lake_dir.join("reports/window=28d");
    // Every conversion report has exactly the status and member the rules require.
    let mut got: HashMap<(String, String, String), (String, Option<String>, Option<i64>, Option<String>)> = HashMap::new();
    for b in read_table(&reports.join("attributions")) {
        for r in 0..b.num_rows() {
            let key = (s(&b, "kind", r).unwrap(), s(&b, "offer_id", r).unwrap(), s(&b, "order_id", r).unwrap());
            let prev = got.insert(key.clone(), (s(&b, "status", r).unwrap(), s(&b, "member_id", r), i(&b, "amount_micros", r), s(&b, "currency", r)));
            assert!(prev.is_none(), "two attribution rows for {key:?}");
        }
    }
    assert_eq!(got.len(), truth.conversions.len());
    // The traffic exercised SPEC §8: coupon sales with and without clicks, and too-fast ones.
    assert!(truth.conversions.iter().any(|c| c.coupon.is_some() && c.status == "attributed" && c.kind == "postback"), "a coupon postback without a click");
    assert!(truth.conversions.iter().any(|c| c.coupon.is_some() && c.status == "no_click"), "an expired or foreign coupon");
    assert!(truth.conversions.iter().any(|c| c.status == "too_fast" && c.member_id.is_some()), "a too-fast conversion");
    for c in &truth.conversions {
        let row = got.get(&(c.kind.clone(), c.offer_id.clone(), c.order_id.clone())).unwrap_or_else(|| panic!("no attribution row for {c:?}"));
        assert_eq!(row.0, c.status, "{c:?}");
        assert_eq!(row.1, c.member_id, "{c:?}");
        assert_eq!(row.2, c.amount_micros, "{c:?}");
        if c.amount_micros.is_some() {
            let expected = c.currency.clone().unwrap_or_default();
            assert_eq!(row.3.as_deref(), Some(expected.as_str()), "{c:?}");
        }
    }

    // Clicks per member, people and bots apart.
    let mut clicks: HashMap<String, (i64, i64)> = HashMap::new();
    for b in read_table(&reports.join("clicks")) {
        for r in 0..b.num_rows() {
            let k = gen::http::member_key(&s(&b, "offer_id", r).unwrap(), &s(&b, "member_id", r).unwrap());
            let e = clicks.entry(k).or_default();
            e.0 += i(&b, "clicks", r).unwrap();
            e.1 += i(&b, "bot_clicks", r).unwrap();
        }
    }
    for (k, n) in &truth.clicks {
        assert_eq!(clicks.get(k).map(|c| c.0), Some(*n as i64), "clicks of {k}");
    }
    for (k, n) in &truth.bot_clicks {
        assert_eq!(clicks.get(k).map(|c| c.1), Some(*n as i64), "bot clicks of {k}");
    }

    // Revenue per member and currency is the exact sum of attributed amounts.
    let mut want: HashMap<(String, String, String), i64> = HashMap::new();
    for c in truth.conversions.iter().filter(|c| c.status == "attributed") {
        if let (Some(a), Some(cur)) = (c.amount_micros, &c.currency) {
            *want.entry((c.offer_id.clone(), c.member_id.clone().unwrap(), cur.clone())).or_default() += a;
        }
    }
    let mut have: HashMap<(String, String, String), i64> = HashMap::new();
    for b in read_table(&reports.join("revenue")) {
        for r in 0..b.num_rows() {
            *have.entry((s(&b, "offer_id", r).unwrap(), s(&b, "member_id", r).unwrap(), s(&b, "currency", r).unwrap())).or_default() += i(&b, "revenue_micros", r).unwrap();
        }
    }
    assert_eq!(have, want);

    // Adjustments (SPEC §7): every one sent through /adjust has the status the truth says.
    assert!(!truth.adjustments.is_empty(), "gen http sends adjustments");
    // (A retried adjustment shares its key with the original: one is applied, one duplicate.)
    let mut statuses: HashMap<(String, String, String, Option<String>), Vec<String>> = HashMap::new();
    for b in read_table(&reports.join("adjustments")) {
        for r in 0..b.num_rows() {
            let key = (s(&b, "offer_id", r).unwrap(), s(&b, "order_id", r).unwrap(), s(&b, "action", r).unwrap(), s(&b, "adjustment_id", r));
            statuses.entry(key).or_default().push(s(&b, "status", r).unwrap());
        }
    }
    let mut sent: HashMap<(String, String, String, Option<String>), Vec<String>> = HashMap::new();
    for a in &truth.adjustments {
        sent.entry((a.offer_id.clone(), a.order_id.clone(), a.action.clone(), a.adjustment_id.clone())).or_default().push(a.status.clone());
    }
    for v in statuses.values_mut().chain(sent.values_mut()) {
        v.sort();
    }
    assert_eq!(statuses, sent);
    assert!(sent.values().flatten().any(|s| s == "duplicate"), "a retried adjustment is in the truth");

    // Earnings per offer, member and currency, worked out from the truth alone: each
    // attributed conversion's applied adjustments in the order sent, then the rules above.
    let offer_currency = |o: &str| match o {
        "sneakers" => "EUR",
        "newsletter" => "USD",
        _ => "GBP",
    };
    #[derive(Default, Debug, PartialEq, Eq)]
    struct Earned {
        conversions: i64,
        gross: i64,
        refunded: i64,
        net: i64,
        commission: i64,
    }
    let mut want: HashMap<(String, String, String), Earned> = HashMap::new();
    for c in truth.conversions.iter().filter(|c| c.status == "attributed") {
        let gross = c.amount_micros.unwrap_or(0);
        let (mut refunds, mut whole, mut rejected) = (0i64, false, false);
        for a in truth.adjustments.iter().filter(|a| a.status == "applied" && a.offer_id == c.offer_id && a.event == c.event && a.order_id == c.order_id) {
            match (a.action.as_str(), a.amount_micros) {
                ("refund", Some(m)) => refunds += m,
                ("refund", None) => {
                    refunds += gross;
                    whole = true;
                }
                ("reject", _) => rejected = true,
                _ => rejected = false,
            }
        }
        if rejected {
            continue;
        }
        let refunded = refunds.min(gross);
        let net = gross - refunded;
        let fully = whole || (refunded == gross && gross > 0);
        let commission = match c.offer_id.as_str() {
            _ if fully => 0,
            "sneakers" => {
                // 10% of net, round half to even, in integers.
                let (q, r) = (net / 10, net % 10);
                q + i64::from(r > 5 || (r == 5 && q % 2 == 1))
            }
            "newsletter" => 500_000,
            _ => 0,
        };
        let currency = c.currency.clone().unwrap_or_else(|| offer_currency(&c.offer_id).to_string());
        let e = want.entry((c.offer_id.clone(), c.member_id.clone().unwrap(), currency)).or_default();
        e.conversions += 1;
        e.gross += gross;
        e.refunded += refunded;
        e.net += net;
        e.commission += commission;
    }
    for (k, n) in &truth.clicks {
        let (offer, member) = k.split_once('/').unwrap();
        if offer == "fitapp" {
            want.entry((offer.to_string(), member.to_string(), "GBP".to_string())).or_default().commission += *n as i64 * 10_000;
        }
    }
    let mut have: HashMap<(String, String, String), Earned> = HashMap::new();
    for b in read_table(&reports.join("earnings")) {
        for r in 0..b.num_rows() {
            let e = have.entry((s(&b, "offer_id", r).unwrap(), s(&b, "member_id", r).unwrap(), s(&b, "currency", r).unwrap())).or_default();
            e.conversions += i(&b, "conversions", r).unwrap();
            e.gross += i(&b, "gross_micros", r).unwrap();
            e.refunded += i(&b, "refunded_micros", r).unwrap();
            e.net += i(&b, "net_micros", r).unwrap();
            e.commission += i(&b, "commission_micros", r).unwrap();
        }
    }
    want.retain(|_, e| *e != Earned::default());
    have.retain(|_, e| *e != Earned::default());
    assert_eq!(have, want);
    assert!(have.values().any(|e| e.refunded > 0), "some refund reached the earnings");
}

/// A string cell, whichever Arrow string layout the writer chose (Utf8, LargeUtf8, Utf8View).
fn string_at(a: &dyn Array, row: usize) -> String {
    match a.data_type() {
        arrow_schema::DataType::LargeUtf8 => a.as_string::<i64>().value(row).to_string(),
        arrow_schema::DataType::Utf8View => a.as_string_view().value(row).to_string(),
        _ => a.as_string::<i32>().value(row).to_string(),
    }
}
