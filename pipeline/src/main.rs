//! `pipeline`: the attribution job's command line (SPEC §5–6). Parses and checks every
//! flag up front, then hands over to the library; errors print as one line and exit 1.

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use lake::Lake;
use pipeline::nightly::{self, Outcome};
use pipeline::params::{parse_date, parse_tz, parse_window, Params};
use pipeline::progress::Progress;

/// jemalloc: memory a pass frees is reused by the next one instead of staying scattered
/// over glibc's per-thread arenas (see BENCH.md, "Passes under a memory budget").
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "pipeline", version, about = "Attributes conversions to members and writes the report tables.")]
struct Cli {
    /// The lake: s3://bucket/prefix, gs://…, az://…, file:///path, a folder, or memory://.
    #[arg(long, global = true, env = lake::LAKE_ENV, default_value = lake::DEFAULT_LAKE)]
    lake: String,
    /// Memory a run may use (12GiB, 800M…); a range that would need more runs in passes of
    /// consecutive dates. Default: 60% of the machine's (or the cgroup's) memory.
    #[arg(long, global = true, env = "CLICKTRAIL_MEMORY_BUDGET")]
    memory_budget: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct WindowZone {
    /// Attribution window, written Nd or Nh (28d, 7d, 36h).
    #[arg(long, env = "CLICKTRAIL_WINDOW", default_value = "28d")]
    window: String,
    /// Report time zone (IANA name); a date is a calendar date in this zone.
    #[arg(long, env = "CLICKTRAIL_TZ", default_value = "UTC")]
    tz: String,
}

/// Nightly's windows: several are kept current in one run.
#[derive(Args, Clone)]
struct WindowsZone {
    /// Attribution windows to keep current, comma-separated (28d or 28d,7d); each is brought
    /// up to date in turn, under its own lock.
    #[arg(long, env = "CLICKTRAIL_WINDOW", default_value = "28d", value_delimiter = ',')]
    window: Vec<String>,
    /// Report time zone (IANA name); a date is a calendar date in this zone.
    #[arg(long, env = "CLICKTRAIL_TZ", default_value = "UTC")]
    tz: String,
}

fn windows_zone(wz: &WindowsZone) -> anyhow::Result<(Vec<lake::window::Window>, chrono_tz::Tz)> {
    let mut windows = Vec::new();
    for w in &wz.window {
        let w = parse_window(w.trim())?;
        if !windows.contains(&w) {
            windows.push(w);
        }
    }
    Ok((windows, parse_tz(&wz.tz)?))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EngineName {
    /// This binary, on this machine.
    Polars,
    /// Apache Spark through spark-submit (the same rules and tables; README, "When one machine is not enough").
    Spark,
}

#[derive(Args, Clone)]
struct EngineArgs {
    /// What computes the tables: polars (this process) or spark (spark-submit runs spark/clicktrail_spark.py).
    #[arg(long, env = "CLICKTRAIL_ENGINE", value_enum, default_value = "polars")]
    engine: EngineName,
    /// With --engine spark: the spark-submit to run (a name on PATH or a path).
    #[arg(long, env = "CLICKTRAIL_SPARK_SUBMIT", default_value = "spark-submit", value_name = "PATH")]
    spark_submit: String,
    /// With --engine spark: the Spark master (local[2], yarn, spark://host:7077, k8s://…).
    #[arg(long, env = "CLICKTRAIL_SPARK_MASTER", default_value = "local[2]", value_name = "URL")]
    master: String,
    /// With --engine spark: the lake as Spark's Hadoop file systems name it; default: --lake, with s3:// read as s3a://.
    #[arg(long, env = "CLICKTRAIL_SPARK_LAKE", value_name = "URL")]
    spark_lake: Option<String>,
    /// With --engine spark: extra spark-submit --conf KEY=VALUE (repeatable).
    #[arg(long = "spark-conf", env = "CLICKTRAIL_SPARK_CONF", value_name = "KEY=VALUE", value_delimiter = ',')]
    spark_conf: Vec<String>,
}

impl EngineArgs {
    /// The Spark engine when chosen; Spark-only flags without it are an error.
    fn spark(&self) -> anyhow::Result<Option<pipeline::spark::SparkEngine>> {
        if self.engine == EngineName::Polars {
            if self.spark_lake.is_some() || !self.spark_conf.is_empty() {
                anyhow::bail!("--spark-lake and --spark-conf need --engine spark");
            }
            return Ok(None);
        }
        if let Some(bad) = self.spark_conf.iter().find(|c| !c.contains('=')) {
            anyhow::bail!("invalid --spark-conf {bad:?}: not KEY=VALUE");
        }
        Ok(Some(pipeline::spark::SparkEngine {
            submit: self.spark_submit.clone(),
            master: self.master.clone(),
            lake_url: self.spark_lake.clone(),
            conf: self.spark_conf.clone(),
        }))
    }
}

#[derive(Args, Clone)]
struct Grace {
    /// How long after its end an hour counts as closed and is compacted (15m, 1h, 0s): the collectors' --flush-interval (60 s) plus their upload retries and clock skew. A file arriving later is still safe: the next compaction merges it.
    #[arg(long = "grace", env = "CLICKTRAIL_COMPACT_GRACE", default_value = "15m")]
    grace: String,
}

#[derive(Args, Clone)]
struct NightlyCompact {
    /// Do not compact closed hours before computing.
    #[arg(long, env = "CLICKTRAIL_NO_COMPACT")]
    no_compact: bool,
    /// How long after its end an hour counts as closed and is compacted (see `compact --grace`).
    #[arg(long = "compact-grace", env = "CLICKTRAIL_COMPACT_GRACE", default_value = "15m")]
    grace: String,
}

fn parse_grace(flag: &str, text: &str) -> anyhow::Result<std::time::Duration> {
    humantime::parse_duration(text).map_err(|e| anyhow::anyhow!("invalid {flag} {text:?}: {e} (write it like 15m, 1h or 0s)"))
}

impl NightlyCompact {
    fn options(&self) -> anyhow::Result<Option<lake::compact::CompactOptions>> {
        let grace = parse_grace("--compact-grace", &self.grace)?;
        Ok((!self.no_compact).then(|| lake::compact::CompactOptions { grace, ..Default::default() }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Computes the reports of one date or a range of dates, replacing earlier output.
    Run {
        /// One date, YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_DATE", conflicts_with_all = ["from", "to"])]
        date: Option<String>,
        /// First date of a range, YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_FROM", requires = "to")]
        from: Option<String>,
        /// Last date of a range (inclusive), YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_TO", requires = "from")]
        to: Option<String>,
        /// What-if: a folder whose offers.csv, commissions.csv and coupons.csv (those present) replace the lake's for this run; needs a scenario window such as --window 28d+coupons-first, so production reports stay as they are
        #[arg(long, value_name = "DIR")]
        registry_override: Option<std::path::PathBuf>,
        #[command(flatten)]
        wz: WindowZone,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Brings every date up to yesterday up to date, including dates whose inputs changed; first compacts the closed hours before today (see `compact`).
    Nightly {
        /// Act as if today were this date, YYYY-MM-DD (catching up as of a past day, benchmarks); default: today in --tz.
        #[arg(long, env = "CLICKTRAIL_TODAY")]
        today: Option<String>,
        #[command(flatten)]
        wz: WindowsZone,
        #[command(flatten)]
        engine: EngineArgs,
        #[command(flatten)]
        compact: NightlyCompact,
    },
    /// Runs `nightly` every day at a time of day, in-process.
    Schedule {
        /// Time of day, HH:MM (24-hour), in --tz.
        #[arg(long, env = "CLICKTRAIL_AT")]
        at: String,
        #[command(flatten)]
        wz: WindowsZone,
        #[command(flatten)]
        compact: NightlyCompact,
    },
    /// Rewrites each closed hour's small hit files into one file sorted by ts.
    ///
    /// Each closed hour's files (hits/date=D/hour=H/*.parquet) become one file sorted by ts, written durably before the old ones are deleted. No row is lost or changed; an hour already compacted with nothing new is left alone; safe to kill or to run twice at once. While it runs, a reader listing an hour may see a row twice: dedup on hit_id (the pipeline does).
    Compact {
        /// One UTC date of hits folders, YYYY-MM-DD (default: every date in the lake).
        #[arg(long, env = "CLICKTRAIL_DATE", conflicts_with_all = ["from", "to"])]
        date: Option<String>,
        /// First UTC date of a range, YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_FROM", requires = "to")]
        from: Option<String>,
        /// Last UTC date of a range (inclusive), YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_TO", requires = "from")]
        to: Option<String>,
        #[command(flatten)]
        grace: Grace,
    },
    /// Writes a deterministic synthetic hits lake (for tests and benchmarks).
    Gen {
        /// Seed; the same seed and sizes give the same files.
        #[arg(long, env = "CLICKTRAIL_GEN_SEED", default_value_t = 42)]
        seed: u64,
        /// Roughly how many hit rows.
        #[arg(long, env = "CLICKTRAIL_GEN_HITS", default_value_t = 1_000_000)]
        hits: u64,
        /// First UTC date, YYYY-MM-DD.
        #[arg(long, env = "CLICKTRAIL_GEN_START", default_value = "2026-01-01")]
        start: String,
        /// Number of days of hits.
        #[arg(long, env = "CLICKTRAIL_GEN_DAYS", default_value_t = 60)]
        days: u32,
        /// Distinct visitors (returning visitors are drawn from this pool).
        #[arg(long, env = "CLICKTRAIL_GEN_VISITORS", default_value_t = 300_000)]
        visitors: u64,
        /// Use the lake's registry (registry/offers.csv, links.csv): its offers, currencies,
        /// members and link codes, instead of synthetic ones.
        #[arg(long)]
        from_registry: bool,
        /// Files per hour, as collectors flushing leave them: up to 60, one collector flushing every 60/N minutes; above, ceil(N/60) collectors flushing every minute (600: ten collectors). The rows are the same as with 1.
        #[arg(long, env = "CLICKTRAIL_GEN_FILES_PER_HOUR", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=6000))]
        files_per_hour: u32,
    },
}

fn window_zone(wz: &WindowZone) -> anyhow::Result<(lake::window::Window, chrono_tz::Tz)> {
    Ok((parse_window(&wz.window)?, parse_tz(&wz.tz)?))
}

async fn main_inner(cli: Cli) -> anyhow::Result<()> {
    if let Some(text) = &cli.memory_budget {
        match pipeline::run::parse_bytes(text) {
            Some(b) if b > 0 => pipeline::run::set_memory_budget(b),
            _ => anyhow::bail!("invalid --memory-budget {text:?}: not a size (like 12GiB, 800M or 1000000000)"),
        }
    }
    let lake = Lake::open(&cli.lake).with_context(|| format!("while opening the lake {:?}", cli.lake))?;
    match cli.command {
        Command::Run { date, from, to, registry_override, wz, engine } => {
            let (window, tz) = window_zone(&wz)?;
            let spark = engine.spark()?;
            if spark.is_some() && registry_override.is_some() {
                anyhow::bail!("--registry-override is for the polars engine; a what-if on Spark is not supported");
            }
            if let Some(dir) = registry_override {
                let Some(label) = window.label() else {
                    anyhow::bail!(
                        "--registry-override needs a scenario window, e.g. --window {window}+what-if: the what-if is written beside window {window}, never over it"
                    );
                };
                if !dir.is_dir() {
                    anyhow::bail!("--registry-override {}: not a folder", dir.display());
                }
                let known = ["offers.csv", "commissions.csv", "coupons.csv"];
                if !known.iter().any(|f| dir.join(f).is_file()) {
                    anyhow::bail!("--registry-override {}: holds none of {}", dir.display(), known.join(", "));
                }
                pipeline::rules::set_registry_override(label, dir);
            }
            let (from, to): (NaiveDate, NaiveDate) = match (date, from, to) {
                (Some(d), _, _) => {
                    let d = parse_date("--date", &d)?;
                    (d, d)
                }
                (None, Some(f), Some(t)) => (parse_date("--from", &f)?, parse_date("--to", &t)?),
                _ => anyhow::bail!("which dates? give --date YYYY-MM-DD, or --from YYYY-MM-DD --to YYYY-MM-DD for a range"),
            };
            let today = nightly::today_in(&tz);
            if to > today {
                let flag = if from == to { "--date" } else { "--to" };
                anyhow::bail!("{flag} {to} is in the future in {} (today there is {today}): nothing to attribute yet", tz.name());
            }
            let p = Params::new(window, tz, from, to)?;
            let summary = match &spark {
                Some(engine) => {
                    pipeline::spark::run(&lake, &p, engine, None, "run").await.context("while running the pipeline on Spark")?
                }
                None => {
                    let progress = Progress::new(true);
                    let summary = pipeline::run(&lake, &p, None, "run", &progress).await.context("while running the pipeline")?;
                    progress.finish();
                    summary
                }
            };
            println!(
                "wrote {} date(s) of window {} ({}) with {} from {} input rows; manifest {}",
                summary.manifest.dates.len(),
                summary.manifest.window,
                summary.manifest.tz,
                summary.manifest.engine,
                summary.manifest.input_rows,
                summary.manifest_path
            );
        }
        Command::Nightly { today, wz, engine, compact } => {
            let (windows, tz) = windows_zone(&wz)?;
            let spark = engine.spark()?;
            let compact = compact.options()?;
            let today = match today {
                Some(t) => parse_date("--today", &t)?,
                None => nightly::today_in(&tz),
            };
            let mut failed = Vec::new();
            for window in windows {
                let progress = Progress::new(spark.is_none());
                let outcome = nightly::nightly_with(&lake, window, tz, today, &progress, spark.as_ref(), compact.clone()).await;
                progress.finish();
                match outcome {
                    Ok(Outcome::Busy { owner, until }) => {
                        println!("window {window}: another nightly ({owner}) holds the lock until {until}; nothing done")
                    }
                    Ok(Outcome::Done { runs }) if runs.is_empty() => println!("window {window}: every date is up to date"),
                    Ok(Outcome::Done { runs }) => {
                        for r in runs {
                            let settled = r.manifest.settled.len();
                            let note = if settled > 0 { format!(" ({settled} of its dates only re-settled: adjustments)") } else { String::new() };
                            println!("window {window}: recomputed {} to {}{note}; manifest {}", r.manifest.from, r.manifest.to, r.manifest_path);
                        }
                    }
                    // The other windows still run: one window's failure must not leave them stale.
                    Err(e) => {
                        eprintln!("error: nightly of window {window} failed: {e:#}");
                        failed.push(window.to_string());
                    }
                }
            }
            if !failed.is_empty() {
                anyhow::bail!("nightly failed for window {}; its dates stay stale and the next nightly retries them", failed.join(", "));
            }
        }
        Command::Schedule { at, wz, compact } => {
            let (windows, tz) = windows_zone(&wz)?;
            let compact = compact.options()?;
            let at = nightly::parse_at(&at)?;
            nightly::schedule(&lake, windows, tz, at, compact).await?;
        }
        Command::Compact { date, from, to, grace } => {
            let grace = parse_grace("--grace", &grace.grace)?;
            let dates = match (date, from, to) {
                (Some(d), _, _) => {
                    let d = parse_date("--date", &d)?;
                    Some((d, d))
                }
                (None, Some(f), Some(t)) => Some((parse_date("--from", &f)?, parse_date("--to", &t)?)),
                _ => None,
            };
            if let Some((from, to)) = dates.filter(|(f, t)| f > t) {
                anyhow::bail!("--from {from} is after --to {to}");
            }
            let opts = lake::compact::CompactOptions { grace, ..Default::default() };
            let s = lake::compact::compact(&lake, dates, &opts).await.context("while compacting")?;
            println!(
                "{} closed hour(s): {} compacted and {} cleaned up ({} files before, {} removed, {} written, {} rows), {} already compact",
                s.hours, s.compacted, s.cleaned, s.files_in, s.files_removed, s.compacted, s.rows, s.already_compact
            );
            if !s.failed.is_empty() {
                let list: Vec<String> = s.failed.iter().map(|(hour, e)| format!("{hour}: {e}")).collect();
                anyhow::bail!("{} hour(s) left as they were: {}", s.failed.len(), list.join("; "));
            }
        }
        Command::Gen { seed, hits, start, days, visitors, from_registry, files_per_hour } => {
            let start = parse_date("--start", &start)?;
            let registry = if from_registry {
                let read = |path: object_store::path::Path| {
                    let lake = &lake;
                    async move {
                        lake.get_optional(&path).await?.ok_or_else(|| anyhow::anyhow!("--from-registry: {path} is not in lake {}", lake.url()))
                    }
                };
                let offers = lake::registry::parse_offers(&read(lake::layout::offers()).await?)?;
                let links = lake::registry::parse_links(&read(lake::layout::links()).await?)?;
                Some(pipeline::gen::GenRegistry::from_registry(&offers, &links)?)
            } else {
                None
            };
            let cfg = pipeline::gen::GenConfig { seed, hits, start, days, visitors, registry, files_per_hour, ..Default::default() };
            let n = pipeline::gen::generate(&lake, &cfg).await.context("while generating hits")?;
            println!("wrote {n} hit rows into {}", cli.lake);
        }
    }
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("CLICKTRAIL_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(lake::cli::log_ansi())
        .init();
    let cli: Cli = lake::cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(main_inner(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
