//! `demo`: the first run of clicktrail on a fresh checkout. Builds the binaries, fills the
//! local lake with some weeks of synthetic history (`pipeline gen`), starts a collector,
//! drives live simulated traffic through it over HTTP, stops it with SIGTERM, runs the
//! attribution pipeline over the whole range and prints a member leaderboard.
//!
//! `cargo run --release --bin demo` (options: `-- --help`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use chrono::{Days, NaiveDate, Utc};
use clap::Parser;
use lake::money::format_micros;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

#[derive(Parser)]
#[command(name = "demo", version, about = "Run clicktrail end to end on the local lake and print a member leaderboard")]
struct Args {
    /// The lake to fill (a local folder)
    #[arg(long, env = "CLICKTRAIL_LAKE", default_value = lake::DEFAULT_LAKE)]
    lake: PathBuf,
    /// The collector's spool folder
    #[arg(long, default_value = "data/spool")]
    spool: PathBuf,
    /// Days of synthetic history before today
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// Synthetic history hits
    #[arg(long, default_value_t = 300_000)]
    history_hits: u64,
    /// Live customers sent through the collector
    #[arg(long, default_value_t = 2_000)]
    customers: usize,
    /// Rows of the leaderboard
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Use the collector and pipeline binaries already built beside this one
    #[arg(long)]
    skip_build: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    eprintln!("\n==> {text}");
}

/// The folder of the running binary, where cargo puts its sibling binaries.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("binary has no folder")?.to_path_buf())
}

fn build_binaries() -> anyhow::Result<()> {
    let dir = bin_dir()?;
    let release = dir.file_name().is_some_and(|n| n == "release");
    // Under `cargo run` CARGO names the cargo that built us; build the siblings the same way.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // The whole workspace's binaries: building a subset would resolve features differently
    // and compile the heavy dependencies (polars) a second time.
    cmd.args(["build", "--workspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("while running cargo build")?;
    if !status.success() {
        bail!("building collector and pipeline failed");
    }
    Ok(())
}

fn check(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("while starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn seed_registry(lake: &Path) -> anyhow::Result<()> {
    let reg = lake.join("registry");
    std::fs::create_dir_all(&reg)?;
    let sample = Path::new("data/registry");
    for f in ["offers.csv", "links.csv"] {
        if !reg.join(f).exists() {
            let src = sample.join(f);
            std::fs::copy(&src, reg.join(f)).with_context(|| format!("while copying the sample registry {}", src.display()))?;
        }
    }
    Ok(())
}

fn start_collector(bin: &Path, lake: &Path, spool: &Path) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(bin.join("collector"))
        .arg("--lake")
        .arg(lake)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--spool")
        .arg(spool)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("while starting the collector")?;
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the collector did not start listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, format!("http://127.0.0.1:{port}")))
}

fn run(args: Args) -> anyhow::Result<()> {
    let today = Utc::now().date_naive();
    let from = today.checked_sub_days(Days::new(u64::from(args.days))).context("--days is too large")?;
    let lake_url = args.lake.display().to_string();

    if !args.skip_build {
        step("building collector and pipeline");
        build_binaries()?;
    }
    let bin = bin_dir()?;

    step(&format!("filling {lake_url} with {} days of synthetic history ({} hits)", args.days, args.history_hits));
    seed_registry(&args.lake)?;
    check(
        Command::new(bin.join("pipeline")).arg("--lake").arg(&args.lake).args([
            "gen",
            "--hits",
            &args.history_hits.to_string(),
            "--start",
            &from.to_string(),
            "--days",
            &args.days.to_string(),
        ]),
        "pipeline gen",
    )?;

    step("starting a collector and sending live traffic through it");
    let (mut collector, base) = start_collector(&bin, &args.lake, &args.spool)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let lake = lake::Lake::open(&lake_url)?;
    let traffic = rt.block_on(gen::http::run(
        &lake,
        &gen::http::HttpConfig { collector: base.clone(), customers: args.customers, seed: 1, concurrency: 16 },
    ));
    // Stop the collector with SIGTERM whatever happened: it flushes its spool to the lake.
    check(Command::new("kill").args(["-TERM", &collector.id().to_string()]), "kill -TERM")?;
    let status = collector.wait()?;
    let truth = traffic?;
    if !status.success() {
        bail!("the collector exited with {status}");
    }
    eprintln!(
        "    {} clicks, {} bot clicks and {} conversion reports through {base}; the collector flushed and exited",
        truth.clicks.values().sum::<u64>(),
        truth.bot_clicks.values().sum::<u64>(),
        truth.conversions.len()
    );

    step(&format!("attributing {from} .. {today} (window 28d)"));
    check(
        Command::new(bin.join("pipeline"))
            .arg("--lake")
            .arg(&args.lake)
            .args(["run", "--from", &from.to_string(), "--to", &today.to_string()])
            .stdin(Stdio::null()),
        "pipeline run",
    )?;

    let board = leaderboard(&args.lake.join("reports/window=28d"), from, today)?;
    print_board(&board, args.top, from, today);
    println!(
        "\nQuery further:\n  \
         duckdb -c \"SELECT * FROM read_parquet('{lake_url}/reports/window=28d/revenue/*/*.parquet', hive_partitioning=true) ORDER BY revenue_micros DESC LIMIT 10\"\n  \
         target/release/pipeline run --from {from} --to {today} --window 7d     # the same range with a 7-day window, beside the 28-day one\n  \
         target/release/collector serve                                        # collect live hits into {lake_url}"
    );
    Ok(())
}

#[derive(Default)]
struct Row {
    clicks: i64,
    unique: i64,
    bots: i64,
    conversions: i64,
    revenue: BTreeMap<String, i64>,
}

fn date_of(path: &Path) -> Option<NaiveDate> {
    path.components().find_map(|c| {
        c.as_os_str().to_str()?.strip_prefix("date=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    })
}

fn batches(dir: &Path, from: NaiveDate, to: NaiveDate) -> anyhow::Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let Ok(dates) = std::fs::read_dir(dir) else { return Ok(out) };
    for d in dates.flatten() {
        let p = d.path();
        if !date_of(&p).is_some_and(|d| d >= from && d <= to) {
            continue;
        }
        for f in std::fs::read_dir(&p)?.flatten() {
            if f.path().extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(f.path())?;
                for b in ParquetRecordBatchReaderBuilder::try_new(file)?.build()? {
                    out.push(b?);
                }
            }
        }
    }
    Ok(out)
}

fn text(b: &RecordBatch, c: &str, r: usize) -> String {
    b.column_by_name(c).filter(|a| !a.is_null(r)).map(|a| string_at(a.as_ref(), r)).unwrap_or_default()
}

fn int(b: &RecordBatch, c: &str, r: usize) -> i64 {
    b.column_by_name(c).filter(|a| !a.is_null(r)).map(|a| a.as_primitive::<Int64Type>().value(r)).unwrap_or(0)
}

fn leaderboard(reports: &Path, from: NaiveDate, to: NaiveDate) -> anyhow::Result<HashMap<(String, String), Row>> {
    let mut rows: HashMap<(String, String), Row> = HashMap::new();
    for b in batches(&reports.join("clicks"), from, to)? {
        for r in 0..b.num_rows() {
            let row = rows.entry((text(&b, "offer_id", r), text(&b, "member_id", r))).or_default();
            row.clicks += int(&b, "clicks", r);
            row.unique += int(&b, "unique_clicks", r);
            row.bots += int(&b, "bot_clicks", r);
        }
    }
    for b in batches(&reports.join("conversions"), from, to)? {
        for r in 0..b.num_rows() {
            rows.entry((text(&b, "offer_id", r), text(&b, "member_id", r))).or_default().conversions += int(&b, "conversions", r);
        }
    }
    for b in batches(&reports.join("revenue"), from, to)? {
        for r in 0..b.num_rows() {
            *rows
                .entry((text(&b, "offer_id", r), text(&b, "member_id", r)))
                .or_default()
                .revenue
                .entry(text(&b, "currency", r))
                .or_default() += int(&b, "revenue_micros", r);
        }
    }
    Ok(rows)
}

fn money(m: &BTreeMap<String, i64>, per: i64) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(cur, v)| format!("{cur} {}", format_micros(if per > 0 { v / per } else { *v })))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_board(rows: &HashMap<(String, String), Row>, top: usize, from: NaiveDate, to: NaiveDate) {
    let mut list: Vec<_> = rows.iter().collect();
    // Most revenue first (all currencies' units summed only to rank), then most conversions.
    list.sort_by(|a, b| {
        let ra: i64 = a.1.revenue.values().sum();
        let rb: i64 = b.1.revenue.values().sum();
        rb.cmp(&ra).then(b.1.conversions.cmp(&a.1.conversions)).then(a.0.cmp(b.0))
    });
    println!("\nMember leaderboard, {from} .. {to}, 28-day last-click attribution ({} members; top {top}; unique = daily unique visitors, summed)\n", list.len());
    let header = ["#", "offer", "member", "clicks", "unique", "bots", "conv.", "conv. rate", "revenue", "earnings per click"];
    let mut table: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for (i, ((offer, member), r)) in list.iter().take(top).enumerate() {
        let rate = if r.clicks > 0 { format!("{:.1}%", 100.0 * r.conversions as f64 / r.clicks as f64) } else { "-".into() };
        table.push(vec![
            (i + 1).to_string(),
            offer.clone(),
            member.clone(),
            r.clicks.to_string(),
            r.unique.to_string(),
            r.bots.to_string(),
            r.conversions.to_string(),
            rate,
            money(&r.revenue, 0),
            if r.clicks > 0 { money(&r.revenue, r.clicks) } else { "-".into() },
        ]);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0)).collect();
    for (n, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, v)| if c <= 2 || c >= 8 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        println!("  {}", line.join("  ").trim_end());
        if n == 0 {
            println!("  {}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
}

/// A string cell, whichever Arrow string layout the writer chose (Utf8, LargeUtf8, Utf8View).
fn string_at(a: &dyn Array, row: usize) -> String {
    match a.data_type() {
        arrow_schema::DataType::LargeUtf8 => a.as_string::<i64>().value(row).to_string(),
        arrow_schema::DataType::Utf8View => a.as_string_view().value(row).to_string(),
        _ => a.as_string::<i32>().value(row).to_string(),
    }
}
