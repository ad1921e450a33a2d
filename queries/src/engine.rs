//! Running SQL over the lake: which tables a statement names, the date range, registering
//! the tables with polars' SQL context, and streaming the result into a sink.
//!
//! Tables a statement can name:
//!
//! | name | what |
//! |---|---|
//! | `clicks`, `conversions`, `revenue`, `attributions` | the report tables of `--window`, dates `--from..--to` |
//! | `<table>_<p>` | the same tables of the window given by the query's `window` parameter `p` |
//! | `hits` | the raw hits whose `ts` is on a UTC date in the range (not deduplicated) |
//! | `offers`, `links` | the registry (offers without their postback tokens) |
//!
//! Only the tables a statement names are listed and scanned, and only the date folders of
//! the range.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use lake::layout::REPORT_TABLES;
use lake::window::Window;
use polars::prelude::*;
use polars::sql::SQLContext;

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

/// A statement ready to run.
pub struct Prepared {
    pub lf: LazyFrame,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub tables: Vec<String>,
}

/// The identifiers of a statement, lower-cased (strings and comments skipped).
fn words(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut cur = String::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            for d in chars.by_ref() {
                if d == '\'' {
                    break;
                }
            }
            continue;
        }
        if c == '-' && chars.peek() == Some(&'-') {
            for d in chars.by_ref() {
                if d == '\n' {
                    break;
                }
            }
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            cur.push(c.to_ascii_lowercase());
        } else if !cur.is_empty() {
            out.insert(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.insert(cur);
    }
    out
}

/// The report tables (with their windows), and whether hits and the registry are named.
struct Needs {
    reports: Vec<(String, Window, &'static str)>,
    hits: bool,
    offers: bool,
    links: bool,
}

fn needs(sql: &str, window: &Window, window_params: &BTreeMap<String, Window>) -> Needs {
    let w = words(sql);
    let mut reports = Vec::new();
    for t in REPORT_TABLES {
        if w.contains(t) {
            reports.push((t.to_string(), *window, t));
        }
        for (p, pw) in window_params {
            let name = format!("{t}_{p}");
            if w.contains(&name) {
                reports.push((name, *pw, t));
            }
        }
    }
    Needs { reports, hits: w.contains("hits"), offers: w.contains("offers"), links: w.contains("links") }
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
    if dates.is_empty() && needs.reports.is_empty() {
        dates = pipeline::read::list_hits(source.lake(), None)
            .await?
            .iter()
            .map(|f| pipeline::params::local_date(&chrono_tz::Tz::UTC, f.hour_start))
            .collect();
    }
    if dates.is_empty() {
        if !needs.reports.is_empty() {
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
    let windows: std::collections::BTreeSet<String> = needs.reports.iter().map(|(_, w, _)| w.to_string()).collect();
    if windows.len() > 1 {
        let mut zones: Vec<(String, String)> = Vec::new();
        for w in &windows {
            let parsed: Window = w.parse()?;
            if !source.report_dates(&parsed).await?.is_empty() {
                zones.push((w.clone(), source.zone(&parsed).await?.name().to_string()));
            }
        }
        if let Some((w2, z2)) = zones.iter().find(|(_, z)| *z != zones[0].1) {
            let (w1, z1) = &zones[0];
            bail!(
                "{what}: window {w1} was computed in {z1} and window {w2} in {z2}, so their dates are different days; recompute one (`pipeline run --window {w2} --tz {z1} …`) before comparing"
            );
        }
    }
    let mut ctx = SQLContext::new();
    let mut tables = Vec::new();
    for (name, window, table) in &needs.reports {
        if *window != scope.window && source.report_dates(window).await?.is_empty() {
            bail!(
                "{what}: table {name} needs reports for window {window}, and lake {} has none (run `pipeline run --window {window} …` first)",
                source.lake().url()
            );
        }
        ctx.register(name, source.scan_report(window, table, from, to).await?);
        tables.push(name.clone());
    }
    if needs.hits {
        ctx.register("hits", source.scan_hits(Some((from, to))).await?);
        tables.push("hits".into());
    }
    if needs.offers || needs.links {
        let (offers, links) = source.registry().await?;
        ctx.register("offers", offers.lazy());
        ctx.register("links", links.lazy());
        tables.extend(["offers".to_string(), "links".to_string()]);
    }
    let lf = ctx.execute(&sql).map_err(|e| anyhow!("{what}: {}", clean(&e)))?;
    Ok(Prepared { lf, from, to, tables })
}

/// A polars error as one readable line.
pub fn clean(e: &PolarsError) -> String {
    let text = e.to_string();
    let text = text.split("\n\nResolved plan").next().unwrap_or(&text);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // polars: "not found: unable to find column "x"; valid columns: [...]": a sentence.
    if let Some(rest) = text.strip_prefix("not found: unable to find column ") {
        if let Some((name, cols)) = rest.split_once("; valid columns: ") {
            let cols = cols.trim_matches(|c| c == '[' || c == ']').replace('"', "");
            return format!("there is no column {name} here; the columns are {cols}");
        }
    }
    // polars: "relation 'nope' was not found": say what there is.
    if let Some(name) = text.strip_prefix("relation '").and_then(|t| t.split_once("' was not found")).map(|(n, _)| n) {
        let mut tables: Vec<&str> = lake::layout::REPORT_TABLES.to_vec();
        tables.extend(["hits", "offers", "links"]);
        return format!("there is no table {name:?}; the tables are {} (and <table>_<p> for a query's window parameter p)", tables.join(", "));
    }
    text
}

/// The result's schema (to start an output before the first batch).
pub fn schema(what: &str, lf: &mut LazyFrame) -> Result<SchemaRef> {
    lf.collect_schema().map_err(|e| anyhow!("{what}: {}", clean(&e)))
}

/// Runs `lf` with the streaming engine, handing each batch to `sink` in order; returns the
/// rows written. Runs on the calling thread (call from a blocking context).
pub fn stream(what: &str, lf: LazyFrame, sink: Box<dyn Sink>) -> Result<u64> {
    let sink: Arc<Mutex<Option<Box<dyn Sink>>>> = Arc::new(Mutex::new(Some(sink)));
    let failed: Arc<Mutex<Option<anyhow::Error>>> = Arc::new(Mutex::new(None));
    let (s, f) = (sink.clone(), failed.clone());
    let callback = PlanCallback::Rust(SpecialEq::new(Arc::new(move |df: DataFrame| -> PolarsResult<bool> {
        let mut guard = s.lock().map_err(|_| polars_err!(ComputeError: "output lock poisoned"))?;
        let Some(out) = guard.as_mut() else { return Ok(true) };
        match out.write(&df) {
            Ok(()) => Ok(false),
            Err(e) => {
                if let Ok(mut slot) = f.lock() {
                    *slot = Some(e);
                }
                Ok(true)
            }
        }
    })));
    let run = lf.sink_batches(callback, true, None).and_then(|lf| lf.collect_with_engine(Engine::Streaming));
    if let Some(e) = failed.lock().map_err(|_| anyhow!("output lock poisoned"))?.take() {
        return Err(e);
    }
    run.map_err(|e| anyhow!("{what}: {}", clean(&e)))?;
    let out = sink.lock().map_err(|_| anyhow!("output lock poisoned"))?.take().ok_or_else(|| anyhow!("output already finished"))?;
    out.finish().context("finishing the output")
}

/// Collects `lf` whole (for small results and tests).
pub fn collect(what: &str, lf: LazyFrame) -> Result<DataFrame> {
    lf.collect_with_engine(Engine::Streaming).map(|r| r.unwrap_single()).map_err(|e| anyhow!("{what}: {}", clean(&e)))
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
}
