//! Running SQL over the lake in DuckDB: which tables a statement names, the date range,
//! the views that make those tables, and streaming the answer into a sink.
//!
//! Tables a statement can name:
//!
//! | name | what |
//! |---|---|
//! | `clicks`, `conversions`, `revenue`, `attributions`, `earnings`, `adjustments` | the report tables of `--window`, dates `--from..--to` |
//! | `<table>_<p>` | the same tables of the window given by the query's `window` parameter `p` |
//! | `<table>_all` | the same tables of every window with reports, and a `"window"` column |
//! | `hits` | the raw hits whose `ts` is on a UTC date in the range (not deduplicated), with their UTC `date` and `hour` |
//! | `offers`, `links` | the registry (offers without their postback tokens) |
//!
//! Each table is a view over the Parquet files of its dates (`read_parquet` with the
//! table's fixed column types), so DuckDB reads only the files, row groups and columns a
//! statement needs. Only the tables a statement names are listed (all of them for `SHOW
//! TABLES`, `DESCRIBE` and the catalog views).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use lake::layout::REPORT_TABLES;
use lake::window::Window;
use polars::prelude::{DataFrame, Schema};

use crate::catalog::Value;
use crate::output::Sink;
use crate::source::Source;

/// The date range and window a statement runs over.
#[derive(Debug, Clone)]
pub struct Scope {
    pub window: Window,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

/// A statement ready to run: the views it needs, and the statement with its parameters
/// put in.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Names the statement in errors (`query top_members`, `SQL`).
    pub what: String,
    /// `CREATE VIEW`/`CREATE TABLE` statements making the tables the statement names.
    pub setup: Vec<String>,
    pub sql: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tables: Vec<String>,
}

/// The identifiers of a statement, lower-cased (strings and comments skipped).
fn words(sql: &str) -> BTreeSet<String> {
    words_of(&tokens(sql))
}

/// The identifiers among `tokens`.
fn words_of(tokens: &[Token]) -> BTreeSet<String> {
    tokens
        .iter()
        .filter_map(|t| match t {
            Token::Word(w) if !w.is_empty() => Some(w.clone()),
            _ => None,
        })
        .collect()
}

/// A statement's tokens: identifiers (lower-cased, quoted ones unquoted) and the other
/// characters one by one; strings and comments skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Punct(char),
}

fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                }
                // A string is a value: it ends whatever came before, like a number.
                out.push(Token::Word(String::new()));
            }
            '"' => {
                let mut name = String::new();
                for d in chars.by_ref() {
                    if d == '"' {
                        break;
                    }
                    name.push(d.to_ascii_lowercase());
                }
                out.push(Token::Word(name));
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = c.to_ascii_lowercase().to_string();
                while let Some(&d) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        word.push(d.to_ascii_lowercase());
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(word));
            }
            c if c.is_whitespace() => {}
            c => out.push(Token::Punct(c)),
        }
    }
    out
}

/// Words that can follow a table in a FROM clause and are not its alias.
const NOT_ALIASES: [&str; 30] = [
    "where", "join", "left", "right", "inner", "outer", "full", "cross", "on", "using", "group", "order", "limit", "offset",
    "union", "except", "intersect", "having", "window", "qualify", "natural", "positional", "asof", "anti", "semi",
    "lateral", "select", "tablesample", "pivot", "unpivot",
];

/// Whether a statement (its tokens `t`) names every column it reads from the tables
/// `views`, so that a remote lake's files need only the named columns fetched. Conservative: no for anything that
/// can read a column without naming it: `*` (but `count(*)`), NATURAL joins, `COLUMNS(…)`,
/// PIVOT/UNPIVOT (which group by the columns they do not name), a FROM-first select
/// (`FROM clicks`, `(FROM clicks EXCEPT …)`), and a table or its alias used as a value,
/// a whole row (`SELECT c FROM clicks c`, `count(DISTINCT c)`), or reached other than
/// by `FROM t`/`JOIN t` (a comma join, a schema prefix).
fn names_its_columns(t: &[Token], views: &BTreeSet<String>) -> bool {
    let word = |i: usize| match t.get(i) {
        Some(Token::Word(w)) => Some(w.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| t.get(i) == Some(&Token::Punct(c));
    let mut aliases: BTreeSet<(String, usize)> = BTreeSet::new();
    for (i, tok) in t.iter().enumerate() {
        match tok {
            // `count(*)` only: another function's `(*)` may expand to every column.
            Token::Punct('*') if !(i > 1 && punct(i - 1, '(') && punct(i + 1, ')') && word(i - 2) == Some("count")) => return false,
            Token::Word(w) if matches!(w.as_str(), "natural" | "columns" | "pivot" | "unpivot" | "pivot_wider" | "pivot_longer") => {
                return false;
            }
            Token::Word(w) if w == "from" => {
                let first = i == 0
                    || punct(i - 1, '(')
                    || punct(i - 1, ';')
                    || matches!(word(i - 1), Some("union" | "except" | "intersect" | "all"))
                    || (i > 1 && word(i - 1) == Some("name") && word(i - 2) == Some("by"));
                if first {
                    return false;
                }
            }
            Token::Word(w) if views.contains(w) => {
                if punct(i + 1, '.') {
                    continue;
                }
                if i == 0 || !matches!(word(i - 1), Some("from" | "join")) {
                    return false;
                }
                let mut j = i + 1;
                if word(j) == Some("as") {
                    j += 1;
                }
                if let Some(a) = word(j) {
                    if !a.is_empty() && !NOT_ALIASES.contains(&a) {
                        aliases.insert((a.to_string(), j));
                    }
                }
            }
            _ => {}
        }
    }
    for (alias, at) in &aliases {
        for (i, tok) in t.iter().enumerate() {
            if i != *at && *tok == Token::Word(alias.clone()) && !punct(i + 1, '.') {
                return false;
            }
        }
    }
    true
}

/// The columns of `all` among `named` (the statement's words), and `always`.
fn named_columns(named: &BTreeSet<String>, all: &[&str], always: &[&str]) -> BTreeSet<String> {
    all.iter().filter(|c| always.contains(c) || named.contains(**c)).map(|c| c.to_string()).collect()
}

/// The report tables (with their windows), and whether hits and the registry are named.
struct Needs {
    reports: Vec<(String, Window, &'static str)>,
    /// Report tables named with `_all`: every window at once.
    all: Vec<&'static str>,
    /// The statement looks at the catalog (`SHOW TABLES`, …).
    catalog: bool,
    hits: bool,
    offers: bool,
    links: bool,
}

/// Words that look at the catalog rather than a table: every table is made for them.
const CATALOG_WORDS: [&str; 8] =
    ["show", "describe", "information_schema", "duckdb_tables", "duckdb_views", "duckdb_columns", "pragma", "summarize"];

fn needs(sql: &str, window: &Window, window_params: &BTreeMap<String, Window>) -> Needs {
    let w = words(sql);
    let catalog = CATALOG_WORDS.iter().any(|c| w.contains(*c));
    let mut reports = Vec::new();
    let mut all = Vec::new();
    for t in REPORT_TABLES {
        if catalog || w.contains(&format!("{t}_all")) {
            all.push(t);
        }
        if catalog || w.contains(t) {
            reports.push((t.to_string(), *window, t));
        }
        for (p, pw) in window_params {
            let name = format!("{t}_{p}");
            if w.contains(&name) {
                reports.push((name, *pw, t));
            }
        }
    }
    Needs {
        reports,
        all,
        catalog,
        hits: catalog || w.contains("hits"),
        offers: catalog || w.contains("offers"),
        links: catalog || w.contains("links"),
    }
}

/// Settles the range: `--from`/`--to` as given, otherwise the first/last date the window
/// has reports for (or, for a statement over hits alone, the first/last hits date).
async fn range(source: &Source, scope: &Scope, needs: &Needs) -> Result<(NaiveDate, NaiveDate)> {
    if let (Some(f), Some(t)) = (scope.from, scope.to) {
        if f > t {
            bail!("--from {f} is after --to {t}");
        }
        return Ok((f, t));
    }
    let mut dates = source.report_dates(&scope.window).await?;
    if dates.is_empty() && (needs.reports.is_empty() || needs.catalog) {
        dates = pipeline::read::list_hits(source.lake(), None)
            .await?
            .iter()
            .map(|f| pipeline::params::local_date(&chrono_tz::Tz::UTC, f.hour_start))
            .collect();
    }
    if dates.is_empty() {
        if !needs.reports.is_empty() && !needs.catalog {
            let known = source.windows().await?;
            bail!(
                "lake {} has no reports for window {} (run `pipeline run --window {} …` first{})",
                source.lake().url(),
                scope.window,
                scope.window,
                if known.is_empty() {
                    String::new()
                } else {
                    format!("; windows with reports: {}", known.iter().map(|w| w.to_string()).collect::<Vec<_>>().join(", "))
                }
            );
        }
        let today = chrono::Utc::now().date_naive();
        return Ok((scope.from.unwrap_or(today), scope.to.unwrap_or(today)));
    }
    let first = *dates.first().unwrap_or(&NaiveDate::MIN);
    let last = *dates.last().unwrap_or(&NaiveDate::MIN);
    let (f, t) = (scope.from.unwrap_or(first), scope.to.unwrap_or(last));
    if f > t {
        bail!("--from {f} is after --to {t}");
    }
    Ok((f, t))
}

/// The first instant of the day after `date` in `zone`, in µs since the epoch.
pub fn day_end_micros(date: NaiveDate, zone: &chrono_tz::Tz) -> i64 {
    pipeline::params::day_start_micros(zone, pipeline::params::next_day(date))
}

/// Registers what `sql` names and plans it. `values` are the query's checked parameters
/// (for a named query); `from`, `to` and `window` are added. `what` names the statement in
/// errors (`query top_members`, `SQL`).
pub async fn prepare(source: &Source, what: &str, sql: &str, scope: &Scope, mut values: BTreeMap<String, Value>) -> Result<Prepared> {
    let window_params: BTreeMap<String, Window> = values
        .iter()
        .filter_map(|(k, v)| match v {
            Value::Window(w) => Some((k.clone(), *w)),
            _ => None,
        })
        .collect();
    let needs = needs(sql, &scope.window, &window_params);
    let (from, to) = range(source, scope, &needs).await?;
    values.insert("from".into(), Value::Date(from));
    values.insert("to".into(), Value::Date(to));
    values.insert("window".into(), Value::Window(scope.window));
    if sql.contains("_end") {
        let zone = source.zone(&scope.window).await?;
        let ends: Vec<(String, Value)> = values
            .iter()
            .filter_map(|(k, v)| match v {
                Value::Date(d) => Some((format!("{k}_end"), Value::Timestamp(day_end_micros(*d, &zone)))),
                _ => None,
            })
            .collect();
        values.extend(ends);
    }
    let sql = crate::catalog::substitute(what, sql, &values)?;

    // Two windows compared in one statement must report in one zone: otherwise their
    // "dates" are different days and every per-date comparison is silently off.
    let mut compared: Vec<Window> = Vec::new();
    for (_, w, _) in &needs.reports {
        if !compared.contains(w) {
            compared.push(*w);
        }
    }
    if let Some(((w1, z1), (w2, z2))) = zone_conflict(source, &compared).await? {
        bail!(
            "{what}: window {w1} was computed in {z1} and window {w2} in {z2}, so their dates are different days; recompute one (`pipeline run --window {w2} --tz {z1} …`) before comparing"
        );
    }
    // From a remote lake, only the columns the statement names are fetched (when it names
    // every column it reads); a local lake is scanned in place, where DuckDB reads only
    // what it needs anyway.
    let remote = source.lake().local_root().is_none() && !needs.catalog;
    let mut views: BTreeSet<String> = needs.reports.iter().map(|(n, _, _)| n.clone()).collect();
    views.extend(needs.all.iter().map(|t| format!("{t}_all")));
    views.extend(["hits", "offers", "links"].map(String::from));
    // The statement's words when only they need fetching; `None`: every column.
    let named = if remote {
        let t = tokens(&sql);
        names_its_columns(&t, &views).then(|| words_of(&t))
    } else {
        None
    };
    let wanted = |all: &[&str], always: &[&str]| named.as_ref().map(|n| named_columns(n, all, always));
    let mut setup = Vec::new();
    let mut tables = Vec::new();
    for (name, window, table) in &needs.reports {
        if *window != scope.window && source.report_dates(window).await?.is_empty() {
            bail!(
                "{what}: table {name} needs reports for window {window}, and lake {} has none (run `pipeline run --window {window} …` first)",
                source.lake().url()
            );
        }
        let cols = wanted(lake::reports::columns(table), &["date"]);
        let files = source.report_paths(window, table, from, to, cols.as_ref()).await?;
        setup.push(report_view(name, &view_columns(lake::reports::columns(table), cols.as_ref()), &files, from, to));
        tables.push(name.clone());
    }
    if !needs.all.is_empty() {
        let windows = source.windows().await?;
        if let Some(((w1, z1), (w2, z2))) = zone_conflict(source, &windows).await? {
            bail!(
                "{what}: the <table>_all views put every window side by side, but window {w1} was computed in {z1} and window {w2} in {z2}, so their dates are different days; recompute one (`pipeline run --window {w2} --tz {z1} …`) first"
            );
        }
        for table in &needs.all {
            let cols = wanted(lake::reports::columns(table), &["date"]);
            let columns = view_columns(lake::reports::columns(table), cols.as_ref());
            let mut parts = Vec::new();
            for w in &windows {
                let files = source.report_paths(w, table, from, to, cols.as_ref()).await?;
                parts.push((w.to_string(), files));
            }
            setup.push(all_view(table, &columns, &parts, from, to));
            tables.push(format!("{table}_all"));
        }
    }
    if needs.hits {
        let cols = wanted(&lake::schema::hit::ALL, &[lake::schema::hit::TS]);
        let files = source.hits_paths(Some((from, to)), cols.as_ref()).await?;
        setup.push(hits_view(&view_columns(&lake::schema::hit::ALL, cols.as_ref()), &files, from, to));
        tables.push("hits".into());
    }
    if needs.offers || needs.links {
        let (offers, links) = source.registry_rows().await?;
        setup.push(values_table("offers", &[("offer_id", "VARCHAR"), ("destination_url", "VARCHAR"), ("currency", "VARCHAR"), ("cookie_days", "BIGINT")], &offers));
        setup.push(values_table(
            "links",
            &[("code", "VARCHAR"), ("offer_id", "VARCHAR"), ("member_id", "VARCHAR"), ("destination_url", "VARCHAR"), ("created_at", "VARCHAR")],
            &links,
        ));
        tables.extend(["offers".to_string(), "links".to_string()]);
    }
    Ok(Prepared { what: what.to_string(), setup, sql, from, to, tables })
}

/// The first two of `windows` (those with reports) computed in different zones, with
/// their zones' names.
#[allow(clippy::type_complexity)]
async fn zone_conflict(source: &Source, windows: &[Window]) -> Result<Option<((Window, String), (Window, String))>> {
    let mut first: Option<(Window, String)> = None;
    for w in windows {
        if source.report_dates(w).await?.is_empty() {
            continue;
        }
        let zone = source.zone(w).await?.name().to_string();
        match &first {
            None => first = Some((*w, zone)),
            Some((_, z)) if *z != zone => return Ok(first.map(|f| (f, (*w, zone)))),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// `SELECT *` of a lake table (`hits` or a report table) for an export: its timestamps
/// as UTC instants (`TIMESTAMPTZ`), so files and PostgreSQL get them marked as UTC.
pub fn table_select(table: &str) -> String {
    let columns: Vec<&str> = if table == "hits" { lake::schema::hit::ALL.to_vec() } else { lake::reports::columns(table).to_vec() };
    let instants: Vec<String> = columns
        .iter()
        .filter(|c| matches!(lake::reports::column_type(c), arrow::datatypes::DataType::Timestamp(_, _)))
        .map(|c| format!("CAST({} AS TIMESTAMPTZ) AS {}", ident(c), ident(c)))
        .collect();
    if instants.is_empty() {
        format!("SELECT * FROM {}", ident(table))
    } else {
        format!("SELECT * REPLACE ({}) FROM {}", instants.join(", "), ident(table))
    }
}

/// A SQL string literal.
pub fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The DuckDB type of a lake column (report tables and hits share one type per name).
fn duck_type(column: &str) -> &'static str {
    match lake::reports::column_type(column) {
        arrow::datatypes::DataType::Date32 => "DATE",
        arrow::datatypes::DataType::Int64 => "BIGINT",
        // UTC instants as plain TIMESTAMPs: DuckDB without ICU has its date functions,
        // casts and interval arithmetic for TIMESTAMP only (see `crate::tz`).
        arrow::datatypes::DataType::Timestamp(_, _) => "TIMESTAMP",
        _ => "VARCHAR",
    }
}

fn date_lit(d: NaiveDate) -> String {
    format!("DATE '{d}'")
}

/// The rows of `files` with exactly `columns`, each with its fixed type: a file without an
/// optional column reads it as null, a column the files have beyond these is left out, and
/// no files at all is an empty relation of the same shape.
fn typed_scan(columns: &[&str], files: &[PathBuf]) -> String {
    let typed: Vec<String> = columns.iter().map(|c| format!("CAST({} AS {}) AS {}", ident(c), duck_type(c), ident(c))).collect();
    let empty: Vec<String> = columns.iter().map(|c| format!("CAST(NULL AS {}) AS {}", duck_type(c), ident(c))).collect();
    let mut out = format!("SELECT {} FROM (SELECT {} WHERE false", typed.join(", "), empty.join(", "));
    if !files.is_empty() {
        let list: Vec<String> = files.iter().map(|f| quote(&f.display().to_string())).collect();
        let _ = write!(out, " UNION ALL BY NAME SELECT * FROM read_parquet([{}], union_by_name = true, hive_partitioning = false)", list.join(", "));
    }
    out.push(')');
    out
}

/// The columns a view shows: `all` (a table's, in order), or those of them that were
/// fetched.
fn view_columns<'a>(all: &[&'a str], fetched: Option<&BTreeSet<String>>) -> Vec<&'a str> {
    all.iter().copied().filter(|c| fetched.is_none_or(|f| f.contains(*c))).collect()
}

/// A report table's rows in `files` of the dates `from..=to`, with `columns`.
fn dated_scan(columns: &[&str], files: &[PathBuf], from: NaiveDate, to: NaiveDate) -> String {
    format!("SELECT * FROM ({}) WHERE \"date\" BETWEEN {} AND {}", typed_scan(columns, files), date_lit(from), date_lit(to))
}

/// The view `name` over a report table's files of the dates `from..=to`, with `columns`.
fn report_view(name: &str, columns: &[&str], files: &[PathBuf], from: NaiveDate, to: NaiveDate) -> String {
    format!("CREATE OR REPLACE VIEW {} AS {}", ident(name), dated_scan(columns, files, from, to))
}

/// `<table>_all`: every window's rows of the dates, with a `"window"` column first.
fn all_view(table: &str, columns: &[&str], parts: &[(String, Vec<PathBuf>)], from: NaiveDate, to: NaiveDate) -> String {
    let mut selects: Vec<String> =
        parts.iter().map(|(w, files)| format!("SELECT {} AS \"window\", * FROM ({})", quote(w), dated_scan(columns, files, from, to))).collect();
    if selects.is_empty() {
        selects.push(format!("SELECT CAST(NULL AS VARCHAR) AS \"window\", * FROM ({})", dated_scan(columns, &[], from, to)));
    }
    format!("CREATE OR REPLACE VIEW {} AS {}", ident(&format!("{table}_all")), selects.join(" UNION ALL "))
}

/// `hits`: every column of the hit schema, the UTC `date` and `hour` of `ts`, the hits
/// whose `ts` is on a UTC date in `from..=to`.
fn hits_view(columns: &[&str], files: &[PathBuf], from: NaiveDate, to: NaiveDate) -> String {
    let next = to.succ_opt().unwrap_or(to);
    format!(
        "CREATE OR REPLACE VIEW hits AS SELECT *, CAST(ts AS DATE) AS \"date\", CAST(hour(ts) AS INTEGER) AS \"hour\" FROM ({}) WHERE ts >= TIMESTAMP '{from} 00:00:00' AND ts < TIMESTAMP '{next} 00:00:00'",
        typed_scan(columns, files)
    )
}

/// A small table from rows of text (the registry); `BIGINT` columns take integers.
fn values_table(name: &str, columns: &[(&str, &str)], rows: &[Vec<String>]) -> String {
    let typed: Vec<String> = columns.iter().map(|(c, t)| format!("CAST({} AS {t}) AS {}", ident(c), ident(c))).collect();
    if rows.is_empty() {
        let empty: Vec<String> = columns.iter().map(|(c, t)| format!("CAST(NULL AS {t}) AS {}", ident(c))).collect();
        return format!("CREATE OR REPLACE TABLE {} AS SELECT {} WHERE false", ident(name), empty.join(", "));
    }
    let values: Vec<String> = rows
        .iter()
        .map(|r| format!("({})", r.iter().map(|v| quote(v)).collect::<Vec<_>>().join(", ")))
        .collect();
    let names: Vec<String> = columns.iter().map(|(c, _)| ident(c)).collect();
    format!(
        "CREATE OR REPLACE TABLE {} AS SELECT {} FROM (VALUES {}) AS t({})",
        ident(name),
        typed.join(", "),
        values.join(", "),
        names.join(", ")
    )
}

/// DuckDB's error as one line: its first lines (the error and its hints), without the
/// caret drawing of the statement.
pub fn clean(e: &duckdb::Error) -> String {
    let text = e.to_string();
    let mut lines = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("LINE ") || l.starts_with('^') {
            break;
        }
        if !l.is_empty() {
            lines.push(l);
        }
    }
    let mut text = lines.join(" ");
    // A function that does not take these types: DuckDB lists every overload of it (dozens
    // for `-`); the first sentence says what is wrong.
    if let Some((head, _)) = text.split_once(" Candidate functions:") {
        text = format!("{head} (DuckDB's documentation lists the types each function takes)");
    }
    // "Binder Error: Referenced column "x" not found in FROM clause! Candidate bindings: …"
    if let Some(rest) = text.split_once("Referenced column ").map(|(_, r)| r) {
        if let Some((name, _)) = rest.split_once(" not found") {
            let hint = rest.split_once("Candidate bindings: ").map(|(_, c)| format!("; did you mean {}?", c.trim_end_matches('.'))).unwrap_or_default();
            return format!("there is no column {name} here{hint} (`DESCRIBE table` lists a table's columns)");
        }
    }
    // "Catalog Error: Table with name nope does not exist! Did you mean …"
    if let Some(rest) = text.split_once("Table with name ").map(|(_, r)| r) {
        if let Some((name, _)) = rest.split_once(" does not exist") {
            let mut tables: Vec<String> = REPORT_TABLES.iter().map(|t| t.to_string()).collect();
            tables.extend(["hits", "offers", "links"].map(String::from));
            return format!(
                "there is no table {name:?}; the tables are {} (and <table>_all for every window, <table>_<p> for a query's window parameter p)",
                tables.join(", ")
            );
        }
    }
    text
}

/// An in-memory DuckDB with clicktrail's functions and the statement's tables.
pub fn open(p: &Prepared) -> Result<duckdb::Connection> {
    // Nothing is ever downloaded: an extension DuckDB would fetch (ICU for a time zone
    // function, httpfs for a URL) is an error naming it instead.
    let config = duckdb::Config::default()
        .with("autoinstall_known_extensions", "false")
        .and_then(|c| c.with("autoload_known_extensions", "false"))
        .map_err(|e| anyhow!("{}: configuring DuckDB: {e}", p.what))?;
    let conn = duckdb::Connection::open_in_memory_with_flags(config).map_err(|e| anyhow!("{}: starting DuckDB: {e}", p.what))?;
    conn.register_scalar_function::<crate::tz::Timezone>("timezone")
        .and_then(|()| conn.register_scalar_function::<crate::tz::LocalToUtc>("local_to_utc"))
        .map_err(|e| anyhow!("{}: registering the time zone functions: {e}", p.what))?;
    for statement in &p.setup {
        conn.execute_batch(statement).map_err(|e| anyhow!("{}: making its tables: {}", p.what, clean(&e)))?;
    }
    Ok(conn)
}

/// Runs the statement: `start` gets the answer's schema before the first batch, then
/// `each` every batch in order. Blocks (call from a blocking context).
fn answer(p: &Prepared, start: impl FnOnce(&Schema) -> Result<()>, mut each: impl FnMut(DataFrame) -> Result<()>) -> Result<()> {
    let what = p.what.as_str();
    let conn = open(p)?;
    let mut stmt = conn.prepare(&p.sql).map_err(|e| anyhow!("{what}: {}", clean(&e)))?;
    let stream = stmt.stream_arrow([]).map_err(|e| anyhow!("{what}: {}", clean(&e)))?;
    let arrow_schema = stream.get_schema();
    crate::frame::check_names(&arrow_schema).map_err(|e| anyhow!("{what}: {e}"))?;
    start(&crate::frame::schema(&arrow_schema))?;
    for batch in stream {
        let batch = batch.map_err(|e| anyhow!("{what}: {}", clean(&e)))?;
        each(crate::frame::to_polars(&batch).map_err(|e| anyhow!("{what}: {e}"))?)?;
    }
    Ok(())
}

/// Runs the statement into the sink `make` builds from the answer's schema; returns the
/// rows written. Blocks (call from a blocking context).
pub fn run(p: &Prepared, make: impl FnOnce(&Schema) -> Result<Box<dyn Sink>>) -> Result<u64> {
    let sink: std::cell::RefCell<Option<Box<dyn Sink>>> = std::cell::RefCell::new(None);
    answer(
        p,
        |schema| {
            *sink.borrow_mut() = Some(make(schema)?);
            Ok(())
        },
        |df| sink.borrow_mut().as_mut().ok_or_else(|| anyhow!("output not started"))?.write(&df),
    )?;
    let out = sink.into_inner().ok_or_else(|| anyhow!("output not started"))?;
    out.finish().context("finishing the output")
}

/// The answer whole (for small results and tests).
pub fn collect(p: &Prepared) -> Result<DataFrame> {
    let out = std::cell::RefCell::new(DataFrame::empty());
    answer(
        p,
        |schema| {
            *out.borrow_mut() = DataFrame::empty_with_schema(schema);
            Ok(())
        },
        |df| Ok(out.borrow_mut().vstack_mut_owned(df).map(|_| ())?),
    )?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_skip_strings_and_comments() {
        let w = words("SELECT a FROM revenue_other -- clicks\nWHERE x = 'hits'");
        assert!(w.contains("revenue_other") && w.contains("select"));
        assert!(!w.contains("clicks") && !w.contains("hits"));
    }

    #[test]
    fn a_statement_names_its_columns_unless_it_can_read_others() {
        let views: BTreeSet<String> = ["hits", "clicks", "attributions_all", "offers"].map(String::from).into();
        for sql in [
            "SELECT count(*) FROM hits WHERE kind = 'click'",
            "SELECT h.member_id, COUNT( * ) FROM hits AS h GROUP BY ALL",
            "SELECT a.status FROM attributions_all a JOIN offers o ON o.offer_id = a.offer_id",
            "SELECT extract(hour FROM ts) FROM hits -- SELECT * FROM hits",
            "SELECT x IS DISTINCT FROM y FROM hits WHERE user_agent <> '*'",
            "SELECT member_id FROM hits UNION ALL SELECT member_id FROM clicks",
            "SELECT \"member_id\" FROM \"hits\" /* t.* */",
        ] {
            assert!(names_its_columns(&tokens(sql), &views), "{sql}");
        }
        for sql in [
            "SELECT * FROM hits",
            "SELECT h.* FROM hits h",
            "SELECT amount_micros * 2 FROM hits",
            "FROM hits",
            "SELECT count(*) FROM (FROM hits EXCEPT FROM clicks)",
            "SELECT 1 UNION ALL BY NAME FROM hits",
            "SELECT count(DISTINCT h) FROM hits h",
            "SELECT to_json(hits) FROM hits",
            "SELECT x FROM hits NATURAL JOIN clicks",
            "SELECT COLUMNS('member.*') FROM hits",
            "PIVOT hits ON kind USING count(*)",
            "SELECT a.kind FROM hits a, clicks b",
            "SELECT kind FROM main.hits",
            "SELECT sum(clicks) FROM clicks",
            "SELECT struct_pack(*) FROM hits",
            "SELECT (*) FROM hits",
        ] {
            assert!(!names_its_columns(&tokens(sql), &views), "{sql}");
        }
        let cols = named_columns(&words("SELECT count(*) FROM hits WHERE kind = 'click'"), &lake::schema::hit::ALL, &["ts"]);
        assert_eq!(cols.into_iter().collect::<Vec<_>>(), vec!["kind", "ts"]);
    }
}
