//! `demo`: the first run of clicktrail on a fresh checkout. Builds the binaries, fills the
//! local lake with some weeks of synthetic history (`pipeline gen`), starts a collector,
//! drives live simulated traffic through it over HTTP, stops it with SIGTERM, runs the
//! attribution pipeline over the whole range and prints a member leaderboard.
//!
//! `cargo run --release --bin demo` (options: `-- --help`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::{Days, Utc};
use clap::Parser;

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
    #[arg(long, default_value_t = 20)]
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
    // `cargo run` gave us its package's variables and a library path into target/; a nested
    // build that sees them fingerprints some build scripts differently and rebuilds half the
    // tree (then the next plain `cargo build` rebuilds it back). Hand it the user's
    // environment instead.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_run = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(key, "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_RUSTC_CURRENT_DIR");
        if set_by_cargo_run {
            cmd.env_remove(key);
        }
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        let target = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let kept: Vec<PathBuf> =
            std::env::split_paths(&paths).filter(|p| !p.starts_with(&target) && !p.to_string_lossy().contains("/rustlib/")).collect();
        if kept.is_empty() {
            cmd.env_remove("LD_LIBRARY_PATH");
        } else if let Ok(joined) = std::env::join_paths(kept) {
            cmd.env("LD_LIBRARY_PATH", joined);
        }
    }
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("while running cargo build")?;
    if !status.success() {
        bail!("building the binaries failed");
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
    for f in ["offers.csv", "links.csv", "commissions.csv", "coupons.csv"] {
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
        step("building collector, pipeline and queries");
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
            "--from-registry",
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

    step(&format!("member leaderboard, {from} .. {today}, 28-day last-click attribution"));
    eprintln!("    (queries run member_summary: one row per offer, member and currency, counts on a member's first currency row only; unique clicks are daily unique visitors, summed)\n");
    let from_s = from.to_string();
    let today_s = today.to_string();
    let limit = format!("limit={}", args.top);
    check(
        Command::new(bin.join("queries"))
            .arg("--lake")
            .arg(&args.lake)
            .args(["run", "member_summary", "--from", &from_s, "--to", &today_s, "--param", &limit]),
        "queries run member_summary",
    )?;

    step("what each member earned: gross, refunded, net and commission (SPEC §7)");
    eprintln!(
        "    (queries run earnings: attributed conversions that were not rejected, refunds and rejections sent through /adjust\n     \
         counted; commission from registry/commissions.csv; amounts as exact decimals)\n"
    );
    check(
        Command::new(bin.join("queries"))
            .arg("--lake")
            .arg(&args.lake)
            .args(["run", "earnings", "--from", &from_s, "--to", &today_s, "--param", &limit]),
        "queries run earnings",
    )?;
    let bin_rel = if bin.ends_with("release") { "target/release" } else { "target/debug" };
    println!(
        "\nQuery further (the lake is {lake_url}):\n  \
         {bin_rel}/queries list                                          # every named question and its parameters\n  \
         {bin_rel}/queries run top_members --param currency=EUR          # the top earners in one currency\n  \
         {bin_rel}/queries run daily_trend --format csv --out trend.csv  # for a spreadsheet\n  \
         {bin_rel}/queries run payouts --param as_of={today}         # what is payable now (locks closed) and what is pending\n  \
         {bin_rel}/queries run refunds                                   # refund and rejection rates per member\n  \
         {bin_rel}/queries report --out report.html                     # one HTML page: leaderboards, trend, lag, statuses, earnings\n  \
         {bin_rel}/queries sql \"SELECT status, COUNT(*) AS n FROM attributions GROUP BY status\"\n  \
         {bin_rel}/pipeline run --from {from} --to {today} --window 7d    # the same range with a 7-day window, beside the 28-day one\n  \
         {bin_rel}/queries run window_comparison --param other=7d        # then compare the two windows per member\n  \
         {bin_rel}/queries export revenue --into postgres://user:pass@host/db   # load into PostgreSQL for a BI tool"
    );
    Ok(())
}
