//! `queries`: named SQL, ad-hoc SQL and exports over a clicktrail lake.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use lake::window::Window;
use lake::Lake;
use queries::catalog::{self, Value};
use queries::engine::{self, Scope};
use queries::output::Format;
use queries::source::Source;
use queries::Target;

#[derive(Parser, Debug)]
#[command(name = "queries", version, about = "Named SQL, ad-hoc SQL and exports over a clicktrail lake")]
struct Cli {
    /// The lake: a folder, file://, s3://, gs://, az:// or memory:// URL
    #[arg(long, env = "CLICKTRAIL_LAKE", default_value = "data/lake", global = true)]
    lake: String,
    /// A folder of your own .sql files, added to (or replacing) the built-in queries
    #[arg(long, env = "CLICKTRAIL_QUERIES_DIR", global = true)]
    queries_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the named queries: name, purpose, parameters
    List {
        /// table (for people) or json (one object per line, for tools)
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Print a named query's SQL
    Show { name: String },
    /// Run a named query
    Run {
        name: String,
        /// A query parameter, NAME=VALUE (repeatable; `queries list` shows each query's)
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Run one SQL statement over the lake's tables: clicks, conversions, revenue and
    /// attributions (of --window), hits, offers, links
    Sql {
        statement: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        out: OutArgs,
    },
    /// Export a report table (clicks, conversions, revenue, attributions, earnings,
    /// adjustments), the raw hits or a named query to a CSV, JSON lines or Parquet file
    /// (--out FILE), or to PostgreSQL (--into postgres://…)
    Export {
        /// A table name or a named query
        source: String,
        /// A named query's parameter, NAME=VALUE (repeatable; `queries list` shows each query's)
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_kv)]
        params: Vec<(String, String)>,
        /// Report window
        #[arg(long, default_value = "28d")]
        window: String,
        /// First date (YYYY-MM-DD; default: the first date with reports)
        #[arg(long)]
        from: Option<String>,
        /// Last date (YYYY-MM-DD). (Deprecated: a postgres:// URL here still works, as --into)
        #[arg(long = "to", value_name = "DATE")]
        to: Vec<String>,
        /// One date (same as --from D --to D)
        #[arg(long, conflicts_with = "from")]
        date: Option<String>,
        /// The database to load: postgres://user:pass@host/db (the table is replaced for the
        /// exported dates in one transaction)
        #[arg(long, value_name = "URL")]
        into: Option<String>,
        /// Check that the window was computed in this zone (IANA name); refused if it was not
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// Output file (.csv, .jsonl, .parquet)
        #[arg(long)]
        out: Option<PathBuf>,
        /// File format (default: from the file name)
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// PostgreSQL table (default: the source's name); schema.table allowed
        #[arg(long)]
        table: Option<String>,
    },
    /// Write a self-contained HTML report (no network needed to open it): member
    /// leaderboards per currency, the daily trend, the conversion-lag histogram, the status
    /// breakdown, another window beside this one, and earnings
    Report {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The window shown beside --window (skipped, with a note, when it has no reports)
        #[arg(long, default_value = "7d")]
        compare: String,
        /// Rows per leaderboard
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        top: u32,
        /// The HTML file to write (written whole or not at all)
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the lake's tables as views for your own DuckDB (and pandas through it):
    /// `queries connect --duckdb > views.sql && duckdb -init views.sql`
    Connect {
        /// Print DuckDB SQL (the only client so far; the flag keeps the command open to others)
        #[arg(long, required = true)]
        duckdb: bool,
        /// The window whose tables get the plain names (every window is in <table>_all)
        #[arg(long, default_value = "28d")]
        window: String,
    },
    /// Explain how one conversion was attributed (SPEC §8): its order twins, every candidate
    /// click and why it lost, the coupon check, the fraud floor, the adjustments applied, the
    /// commission rule and its arithmetic, decided again from the lake and compared with
    /// what the last run wrote
    Explain {
        /// The conversion's hit_id (a pixel or postback hit)
        hit_id: String,
        /// Report window
        #[arg(long, default_value = "28d")]
        window: String,
        /// text (for a terminal) or json (for tools)
        #[arg(long, value_enum, default_value = "text")]
        format: ExplainFormat,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ListFormat {
    Table,
    Json,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ExplainFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
struct ScopeArgs {
    /// Report window whose tables are read
    #[arg(long, default_value = "28d")]
    window: String,
    /// First date (YYYY-MM-DD; default: the first date with reports)
    #[arg(long)]
    from: Option<String>,
    /// Last date (YYYY-MM-DD; default: the last date with reports)
    #[arg(long)]
    to: Option<String>,
    /// One date (same as --from D --to D)
    #[arg(long, conflicts_with_all = ["from", "to"])]
    date: Option<String>,
    /// Check that the window was computed in this zone (IANA name); refused if it was not.
    /// Dates are always the zone of the window's pipeline run, which every answer names
    #[arg(long, value_name = "ZONE")]
    tz: Option<String>,
}

#[derive(Args, Debug)]
struct OutArgs {
    /// Output format (default: table, or from --out's extension)
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write to this file instead of standard output (written whole or not at all)
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_kv(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

fn date(flag: &str, text: &str) -> Result<NaiveDate> {
    match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        Ok(d) => Ok(d),
        Err(_) => bail!("--{flag} {text:?} is not a date (YYYY-MM-DD)"),
    }
}

fn window(text: &str) -> Result<Window> {
    text.parse().map_err(|e| anyhow::anyhow!("--window {text:?}: {e}"))
}

fn scope(window_text: &str, from: Option<&str>, to: Option<&str>, one: Option<&str>) -> Result<Scope> {
    let window = window(window_text)?;
    if let Some(d) = one {
        let d = date("date", d)?;
        return Ok(Scope { window, from: Some(d), to: Some(d) });
    }
    Ok(Scope { window, from: from.map(|t| date("from", t)).transpose()?, to: to.map(|t| date("to", t)).transpose()? })
}

fn main() -> ExitCode {
    // A panic deep in the SQL engine surfaces as one error line naming the query (see
    // `queries::stopped`); its backtrace is for developers who ask (CLICKTRAIL_BACKTRACE=1).
    if std::env::var_os("CLICKTRAIL_BACKTRACE").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
    let cli: Cli = lake::cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(lake::cli::log_ansi())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("queries: error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("queries: error: {}", text.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::FAILURE
        }
    }
}

/// The reader went away (`queries … | head`): not an error.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

async fn run(cli: Cli) -> Result<()> {
    let all = catalog::load(cli.queries_dir.as_deref())?;
    match cli.command {
        Command::List { format } => Ok(list(&all, format)?),
        Command::Explain { hit_id, window, format } => {
            let window: Window = window.parse().map_err(|e| anyhow::anyhow!("--window {window:?}: {e}"))?;
            let source = Source::new(Lake::open(&cli.lake)?);
            let (receipt, written) = queries::explain::explain(&source, &hit_id, &window).await?;
            match format {
                ExplainFormat::Text => print!("{}", queries::explain::render(&receipt, written.as_ref())),
                ExplainFormat::Json => {
                    let mut v = serde_json::to_value(&receipt)?;
                    v["last_run"] = match &written {
                        Some((st, m, via, c)) => serde_json::json!({"status": st, "member_id": m, "via": via, "commission_micros": c}),
                        None => serde_json::Value::Null,
                    };
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            Ok(())
        }
        Command::Report { scope: s, compare, top, out } => {
            let scope = scope(&s.window, s.from.as_deref(), s.to.as_deref(), s.date.as_deref())?;
            let compare = window(&compare).map_err(|e| anyhow::anyhow!("{}", e.to_string().replacen("--window", "--compare", 1)))?;
            let source = Source::new(Lake::open(&cli.lake)?);
            source.check_zone(&scope.window, s.tz.as_deref()).await?;
            let spec = queries::report::ReportSpec { window: scope.window, from: scope.from, to: scope.to, compare: Some(compare), top: top as usize };
            let report = queries::report::build(&source, &spec).await?;
            let (file, mut handle) = queries::output::AtomicFile::create(&out)?;
            std::io::Write::write_all(&mut handle, report.html.as_bytes()).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            drop(handle);
            file.commit()?;
            eprintln!("wrote {} ({} charts): window {}, dates {} .. {} in {}", out.display(), report.charts, scope.window, report.from, report.to, report.zone);
            Ok(())
        }
        Command::Connect { duckdb: _, window: w } => {
            let w = window(&w)?;
            let source = Source::new(Lake::open(&cli.lake)?);
            print!("{}", queries::connect::duckdb_script(&source, &w).await?);
            Ok(())
        }
        Command::Show { name } => {
            let q = find(&all, &name)?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), q.sql.as_bytes())?;
            Ok(())
        }
        Command::Run { name, params, scope: s, out } => {
            let q = find(&all, &name)?;
            let values = q.bind(&params)?;
            let scope = scope(&s.window, s.from.as_deref(), s.to.as_deref(), s.date.as_deref())?;
            let target = Target::from_flags(out.out, out.format)?;
            let source = Source::new(Lake::open(&cli.lake)?);
            let what = format!("query {name}");
            let zone = source.check_zone(&scope.window, s.tz.as_deref()).await?;
            let prepared = engine::prepare(&source, &what, &q.sql, &scope, values).await?;
            let (from, to) = (prepared.from, prepared.to);
            let rows = queries::deliver(&what, prepared, &target, &scope.window.to_string()).await?;
            report(&target, rows);
            note_zone(&scope.window, from, to, &zone);
            Ok(())
        }
        Command::Sql { statement, scope: s, out } => {
            let scope = scope(&s.window, s.from.as_deref(), s.to.as_deref(), s.date.as_deref())?;
            let target = Target::from_flags(out.out, out.format)?;
            let source = Source::new(Lake::open(&cli.lake)?);
            let zone = source.check_zone(&scope.window, s.tz.as_deref()).await?;
            let prepared = engine::prepare(&source, "SQL", &statement, &scope, Default::default()).await?;
            let (from, to) = (prepared.from, prepared.to);
            let rows = queries::deliver("SQL", prepared, &target, &scope.window.to_string()).await?;
            report(&target, rows);
            note_zone(&scope.window, from, to, &zone);
            Ok(())
        }
        Command::Export { source: name, params, window: w, from, to, date: one, out, format, table, into, tz } => {
            let mut to_date = None;
            let mut dest = into;
            for t in to {
                if t.contains("://") {
                    if dest.is_some() {
                        bail!("two destinations given: use --into URL once");
                    }
                    eprintln!("note: --to {} is deprecated for the destination; use --into (--to is the last date)", queries::pg::redact(&t));
                    dest = Some(t);
                } else if to_date.replace(date("to", &t)?).is_some() {
                    bail!("--to is given twice: it is the last date, once");
                }
            }
            let scope = scope(&w, from.as_deref(), to_date.map(|d| d.to_string()).as_deref(), one.as_deref())?;
            let target = match (dest, out) {
                (Some(_), Some(_)) => bail!("give --out FILE or --into postgres://…, not both"),
                (Some(url), None) => {
                    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                        bail!("--into {}: only postgres:// and postgresql:// destinations are known", queries::pg::redact(&url));
                    }
                    if format.is_some() {
                        bail!("--format is for files; a PostgreSQL export is loaded with COPY");
                    }
                    Target::Postgres { url, table: table.clone().unwrap_or_else(|| name.clone()) }
                }
                (None, Some(path)) => Target::from_flags(Some(path), format)?,
                (None, None) => bail!("export needs a destination: --out FILE or --into postgres://…"),
            };
            let source = Source::new(Lake::open(&cli.lake)?);
            let (what, sql, values) = if lake::layout::REPORT_TABLES.contains(&name.as_str()) || name == "hits" {
                if !params.is_empty() {
                    bail!("--param is for named queries; {name} is a table");
                }
                if name == "hits" && matches!(target, Target::Postgres { .. }) {
                    bail!("hits are exported to files; PostgreSQL takes the report tables and named queries");
                }
                (format!("table {name}"), engine::table_select(&name), Default::default())
            } else {
                let q = find(&all, &name)?;
                let values: std::collections::BTreeMap<String, Value> = q.bind(&params)?;
                (format!("query {name}"), q.sql.clone(), values)
            };
            let zone = source.check_zone(&scope.window, tz.as_deref()).await?;
            let prepared = engine::prepare(&source, &what, &sql, &scope, values).await?;
            let (from, to) = (prepared.from, prepared.to);
            let rows = queries::deliver(&what, prepared, &target, &scope.window.to_string()).await?;
            match &target {
                Target::Postgres { url, table } => eprintln!(
                    "exported {rows} rows of {what} (window {}, {from} .. {to}) to {} table {table}",
                    scope.window,
                    queries::pg::redact(url)
                ),
                _ => report(&target, rows),
            }
            note_zone(&scope.window, from, to, &zone);
            Ok(())
        }
    }
}

fn find<'a>(all: &'a std::collections::BTreeMap<String, catalog::Query>, name: &str) -> Result<&'a catalog::Query> {
    match all.get(name) {
        Some(q) => Ok(q),
        None => bail!(
            "no query named {name:?}; `queries list` shows them ({})",
            all.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Every answer names the window, its dates and the zone they are dates in (standard error,
/// so that standard output stays the data).
fn note_zone(window: &Window, from: NaiveDate, to: NaiveDate, zone: &str) {
    eprintln!("window {window}: dates {from} .. {to} in {zone} (the zone of its pipeline run)");
}

fn report(target: &Target, rows: u64) {
    if let Target::File(path, _) = target {
        eprintln!("wrote {rows} rows to {}", path.display());
    }
}

fn list(all: &std::collections::BTreeMap<String, catalog::Query>, format: ListFormat) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if format == ListFormat::Json {
        for q in all.values() {
            let line = serde_json::json!({
                "name": q.name,
                "purpose": q.purpose,
                "tables": q.tables,
                "params": q.params.iter().map(|p| serde_json::json!({
                    "name": p.name, "type": p.ty.as_str(), "default": p.default, "help": p.help,
                })).collect::<Vec<_>>(),
            });
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    for q in all.values() {
        writeln!(out, "{}", q.name)?;
        writeln!(out, "    {}", q.purpose)?;
        for p in &q.params {
            let default = match &p.default {
                Some(d) if d.is_empty() => "''".to_string(),
                Some(d) => d.clone(),
                None => "required".to_string(),
            };
            writeln!(out, "    --param {}=… ({}, default {default}): {}", p.name, p.ty.as_str(), p.help)?;
        }
        writeln!(out, "    tables: {}", q.tables.join(", "))?;
    }
    writeln!(out, "\nEvery query also takes --window, --from, --to (or --date), --format and --out; see `queries run --help`.")?;
    Ok(())
}
