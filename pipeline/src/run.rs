//! `pipeline run`: one date range, read once, written date by date.
//!
//! 1. List the hit files whose UTC hour overlaps `[start − L − 2W, end + L)`: the range,
//!    its lookback (sessions and order twins reach back at most `W`) and what adjustments
//!    reach (a lock period `L` after the range, and the conversions they target a lock
//!    period and two windows before it). Hour folders, not whole days, so a zone's offset
//!    needs no more than the hours it covers.
//! 2. One scan of that span keeps the hits that are not clicks (about one in twenty):
//!    conversions and adjustments, held in memory. Conversions are deduplicated and
//!    flagged once; the pass's own are cut from them, and so is the index adjustments
//!    are resolved against.
//! 3. One scan of the clicks that can be sessions (W before the earliest conversion, or
//!    earlier target of an adjustment, to the range's end) keeps those sharing a key with
//!    them: a filter on the raw click and visitor ids decides which rows the other columns
//!    are decoded for. Sessions and statuses are computed on them: the `attributions` rows.
//! 4. `conversions` and `revenue` are aggregated from `attributions`.
//! 5. `clicks` is computed date by date from that date's hour folders only, so memory
//!    follows one day's clicks, not the range's; the bot test runs once per distinct user
//!    agent.
//! 6. Each date's files are replaced (while the next date's clicks are counted), then the
//!    manifest is written.
//!
//! **Memory.** What a pass holds grows with the hits it streams past (its lookback) and,
//! faster, with the conversions and candidate clicks of its own dates. When the estimate
//! for the whole range is over the memory budget, steps 2–6 run in passes over consecutive
//! chunks of dates, each with its own lookback. Every rule is per conversion, so a chunked
//! run writes exactly what one pass would (nightly day by day relies on the same fact).
//! The budget is `--memory-budget` / `CLICKTRAIL_MEMORY_BUDGET`, by default 60% of the
//! memory of the machine (or of the cgroup, when lower).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use std::collections::HashMap;

use lake::layout::{TABLE_ADJUSTMENTS, TABLE_ATTRIBUTIONS, TABLE_CLICKS, TABLE_CONVERSIONS, TABLE_EARNINGS, TABLE_REVENUE};
use lake::reports::ATTRIBUTIONS_COLUMNS;
use lake::schema::{hit, report, HitKind};
use lake::Lake;
use polars::prelude::*;

use crate::error::Result;
use crate::params::Params;
use crate::progress::Progress;
use crate::read::{self, HitFile};
use crate::stages::{attribution, bots, conversions, reports, sessions, ts_in};
use crate::write::{self, InputRecord, Manifest};

/// Columns read for attribution; `user_agent` and the rest are never read for it.
const ATTRIBUTION_COLUMNS: [&str; 13] = [
    hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::MEMBER_ID, hit::LINK_CODE, hit::CLICK_ID, hit::VISITOR_ID,
    hit::EVENT, hit::ORDER_ID, hit::AMOUNT_MICROS, hit::CURRENCY, hit::COUPON,
];
/// Columns read for adjustments (SPEC §7).
const ADJUSTMENT_COLUMNS: [&str; 10] = [
    hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::EVENT, hit::ORDER_ID, hit::AMOUNT_MICROS, hit::CURRENCY,
    hit::ACTION, hit::ADJUSTMENT_ID,
];
/// Columns of the one scan of a pass's non-click hits: conversions and adjustments.
const NON_CLICK_COLUMNS: [&str; 15] = [
    hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::MEMBER_ID, hit::LINK_CODE, hit::CLICK_ID, hit::VISITOR_ID,
    hit::EVENT, hit::ORDER_ID, hit::AMOUNT_MICROS, hit::CURRENCY, hit::COUPON, hit::ACTION, hit::ADJUSTMENT_ID,
];
/// Columns read for the `clicks` table.
const CLICK_TABLE_COLUMNS: [&str; 7] =
    [hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::MEMBER_ID, hit::VISITOR_ID, hit::USER_AGENT];

/// Bytes a pass holds per hit row it streams past in its lookback, and per hit row of its
/// own dates: peak RSS, jemalloc's not yet returned pages included. Measured on
/// `pipeline gen` lakes (60 days, 28d window, release build, 2026-12-03): a one-day run
/// over 23M lookback rows of the 50M lake peaked at 3.32 GiB, over 4.6M of the 10M lake at
/// 0.72 GiB; a 28-day run over 23M lookback and 23M range rows at 5.74 GiB, over 4.6M and
/// 4.7M at 1.21 GiB. These constants round those up (the one scan of the clicks that can be
/// sessions, which now covers the lookback, is what grows).
const BYTES_PER_LOOKBACK_ROW: u64 = 170;
const BYTES_PER_RANGE_ROW: u64 = 150;

/// The memory budget of a run: `CLICKTRAIL_MEMORY_BUDGET` (bytes, or with a K/M/G/T or
/// KiB/MiB/GiB/TiB suffix) when set, else 60% of the memory this process may use (the
/// cgroup's limit or the machine's, whichever is lower), else 8 GiB.
pub fn memory_budget() -> Result<u64> {
    if let Some(b) = BUDGET.get() {
        return Ok(*b);
    }
    if let Ok(text) = std::env::var("CLICKTRAIL_MEMORY_BUDGET") {
        return parse_bytes(&text).ok_or_else(|| crate::error::PipelineError::Flag {
            flag: "--memory-budget",
            value: text.clone(),
            reason: "not a size (like 12GiB, 800M or 1000000000)".into(),
        });
    }
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()))
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<u64>().ok());
    let limit = match (total.map(|k| k * 1024), cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(limit.map(|l| l / 10 * 6).unwrap_or(8 << 30))
}

static BUDGET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets this process's memory budget (`--memory-budget`); the first call wins.
pub fn set_memory_budget(bytes: u64) {
    let _ = BUDGET.set(bytes);
}

/// `12GiB`, `800M`, `1000000000`.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Splits the range into chunks of consecutive dates whose estimated memory fits `budget`
/// (at least one date each). `rows_in(lo, hi)`: hit rows in `[lo, hi)` µs.
pub fn plan_passes(p: &Params, budget: u64, rows_in: impl Fn(i64, i64) -> u64) -> Vec<(chrono::NaiveDate, chrono::NaiveDate)> {
    let dates = p.dates();
    let w = p.window.micros();
    let mut out = Vec::new();
    let mut i = 0;
    while i < dates.len() {
        let start = p.date_micros(dates[i]).0;
        let lookback = rows_in(start - w, start) * BYTES_PER_LOOKBACK_ROW;
        let mut j = i;
        while j + 1 < dates.len() {
            let end = p.date_micros(dates[j + 1]).1;
            if lookback + rows_in(start, end) * BYTES_PER_RANGE_ROW > budget {
                break;
            }
            j += 1;
        }
        out.push((dates[i], dates[j]));
        i = j + 1;
    }
    out
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub manifest: Manifest,
    pub manifest_path: String,
}

/// Runs `p` over the lake. `files`: a listing taken earlier (nightly passes its snapshot so
/// that what it fingerprints is exactly what is read); `None` lists the lake now.
pub async fn run(lake: &Lake, p: &Params, files: Option<Vec<HitFile>>, command: &str, progress: &Progress) -> Result<RunSummary> {
    run_with_budget(lake, p, files, command, progress, memory_budget()?).await
}

/// [`run`], except that the dates in `settle` are only re-settled: their attributions
/// (without the five columns settling adds) and clicks are read back from the window's
/// stored tables instead of being recomputed, and only `attributions`, `revenue` and
/// `earnings` are rewritten. Nightly passes the dates whose inputs up to their end are
/// unchanged since they were computed, so that only hits after them (adjustments, SPEC §7)
/// are news: for those the stored rows are exactly what a session search would find again,
/// and the `clicks`, `conversions` and `adjustments` tables cannot have changed.
pub async fn run_settling(
    lake: &Lake,
    p: &Params,
    files: Option<Vec<HitFile>>,
    command: &str,
    progress: &Progress,
    settle: &BTreeSet<NaiveDate>,
) -> Result<RunSummary> {
    run_inner(lake, p, files, command, progress, memory_budget()?, settle).await
}

/// [`run`] with an explicit memory budget in bytes (see the module docs).
pub async fn run_with_budget(
    lake: &Lake,
    p: &Params,
    files: Option<Vec<HitFile>>,
    command: &str,
    progress: &Progress,
    budget: u64,
) -> Result<RunSummary> {
    run_inner(lake, p, files, command, progress, budget, &BTreeSet::new()).await
}

async fn run_inner(
    lake: &Lake,
    p: &Params,
    files: Option<Vec<HitFile>>,
    command: &str,
    progress: &Progress,
    budget: u64,
    settle: &BTreeSet<NaiveDate>,
) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at = Utc::now();
    let run_id = format!("{}-{}", started_at.format("%Y%m%dT%H%M%S%.6fZ"), uuid::Uuid::new_v4().simple());
    let rules = crate::rules::Rules::load_for(lake, &p.window).await?;
    let (lo, hi) = p.range_micros();
    // Besides sessions (W back), adjustments reach a lock period past the range, and the
    // conversions they target a lock period and two windows before it (SPEC §7, README).
    let reach = rules.max_lock_micros() + p.window.micros();
    let lb = lo - reach - p.window.micros();
    let hi_ext = hi + rules.max_lock_micros();
    progress.add(3 + 2 * p.dates().len() as u64);

    progress.step("listing hits");
    let mut files: Vec<HitFile> = match files {
        Some(all) => all.into_iter().filter(|f| f.hour_start + read::MICROS_PER_HOUR > lb && f.hour_start < hi_ext).collect(),
        None => read::list_hits(lake, Some((lb, hi_ext))).await?,
    };
    progress.done();
    progress.step(&format!("fetching and checking {} hit files", files.len()));
    // A compaction may delete listed files before they are fetched (its new file is in
    // place by then): list again and retry.
    let mut attempt = 0;
    let (inputs, listed) = loop {
        match read::fetch(lake, files.clone()).await {
            Ok(inputs) => break (inputs, files),
            Err(e) if attempt < 3 && read::any_gone(lake, &files).await => {
                attempt += 1;
                tracing::info!(error = %e, attempt, "hit files changed while fetching (a compaction?); listing again");
                files = read::list_hits(lake, Some((lb, hi_ext))).await?;
            }
            Err(e) => return Err(e),
        }
    };
    tracing::debug!(files = inputs.files.len(), rows = inputs.files.iter().map(|f| f.rows).sum::<i64>(), "inputs ready");
    progress.done();

    let rows_in = |lo: i64, hi: i64| -> u64 { inputs.overlapping(lo, hi).iter().map(|f| f.rows.max(0) as u64).sum() };
    let passes = plan_passes(p, budget, rows_in);
    if passes.len() > 1 {
        tracing::info!(passes = passes.len(), budget, "the range runs in passes to stay within the memory budget");
    }
    progress.add(4 * passes.len() as u64);
    let mut per_date: BTreeMap<chrono::NaiveDate, BTreeMap<String, u64>> = BTreeMap::new();
    for (from, to) in passes {
        attribute_and_write(lake, &p.with_range(from, to)?, &inputs, &rules, progress, &mut per_date, settle).await?;
    }

    progress.step("manifest");
    let mut output_rows: BTreeMap<String, u64> = BTreeMap::new();
    for rows in per_date.values() {
        for (t, n) in rows {
            *output_rows.entry(t.clone()).or_default() += n;
        }
    }
    let finished_at = Utc::now();
    let manifest = Manifest {
        run_id,
        command: command.to_string(),
        window: p.window.to_string(),
        tz: p.tz_name().to_string(),
        from: p.from,
        to: p.to,
        started_at: started_at.to_rfc3339(),
        finished_at: finished_at.to_rfc3339(),
        duration_ms: started.elapsed().as_millis() as u64,
        input_rows: inputs.files.iter().map(|f| f.rows).sum(),
        input_files: inputs
            .files
            .iter()
            .map(|f| InputRecord { path: f.file.path.clone(), size: f.file.size, rows: f.rows })
            .collect(),
        output_rows,
        settled: per_date.keys().filter(|d| settle.contains(d)).copied().collect(),
        dates: per_date,
        engine: write::ENGINE_POLARS.to_string(),
    };
    let path = write::write_manifest(lake, &p.window, &manifest).await?;
    // The dates written are current as of this listing: the next nightly skips them unless
    // their inputs change (the listing covers every hour their fingerprints read).
    crate::nightly::record_dates(lake, p, &listed, &rules).await?;
    progress.done();
    tracing::info!(
        window = %p.window, tz = p.tz_name(), from = %p.from, to = %p.to,
        duration_ms = manifest.duration_ms, manifest = %path, "run finished"
    );
    Ok(RunSummary { manifest, manifest_path: path.to_string() })
}

/// The `attributions` columns that attribution decides (SPEC §5, `coupon`, `via`): all but
/// the five that settling adds.
fn attributed_columns() -> Vec<&'static str> {
    let settled = [report::ADJUSTED_STATE, report::REFUNDED_MICROS, report::NET_AMOUNT_MICROS, report::LOCK_TS, report::COMMISSION_MICROS];
    ATTRIBUTIONS_COLUMNS.iter().copied().filter(|c| !settled.contains(c)).collect()
}

fn shaped(df: LazyFrame, columns: &[&str]) -> LazyFrame {
    df.select(columns.iter().map(|c| col(*c).cast(write::report_dtype(c))).collect::<Vec<_>>())
}

/// `[start, end)` of each run of consecutive dates, in µs.
fn spans(p: &Params, dates: &[NaiveDate]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for d in dates {
        let (s, e) = p.date_micros(*d);
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// Dates whose files may be being written while the next is computed.
const MAX_DATES_WRITING: usize = 2;

/// A date written: the date, whether it was only re-settled, the rows of each table.
type DateWritten = (NaiveDate, bool, BTreeMap<String, u64>);

/// Waits for a date's writes, then logs the date and records its rows.
async fn finish_date(
    task: tokio::task::JoinHandle<Result<DateWritten>>,
    p: &Params,
    per_date: &mut BTreeMap<NaiveDate, BTreeMap<String, u64>>,
) -> Result<()> {
    let (date, stored, rows) = task.await.map_err(|e| crate::error::PipelineError::Invalid(format!("writing a date's tables: the task failed: {e}")))??;
    // The one line per date at the default level (steps are at debug).
    let n = |t: &str| rows.get(t).copied().unwrap_or(0);
    tracing::info!(
        window = %p.window, date = %date, attributions = n(TABLE_ATTRIBUTIONS), clicks = n(TABLE_CLICKS),
        conversions = n(TABLE_CONVERSIONS), revenue = n(TABLE_REVENUE), earnings = n(TABLE_EARNINGS),
        adjustments = n(TABLE_ADJUSTMENTS), "{}", if stored { "date re-settled (rows per table)" } else { "date written (rows per table)" }
    );
    per_date.insert(date, rows);
    Ok(())
}

/// Steps 2–6 for one pass over `p`'s dates, scanning only the inputs its span overlaps.
/// Dates in `settle` are re-settled from their stored tables (see [`run_settling`]).
async fn attribute_and_write(
    lake: &Lake,
    p: &Params,
    inputs: &read::Inputs,
    rules: &crate::rules::Rules,
    progress: &Progress,
    per_date: &mut BTreeMap<NaiveDate, BTreeMap<String, u64>>,
    settle: &BTreeSet<NaiveDate>,
) -> Result<()> {
    let dates = p.dates();
    let fresh: Vec<NaiveDate> = dates.iter().filter(|d| !settle.contains(d)).copied().collect();
    let settled: Vec<NaiveDate> = dates.iter().filter(|d| settle.contains(d)).copied().collect();
    let fresh_spans = spans(p, &fresh);
    let in_fresh = fresh_spans.iter().map(|(s, e)| ts_in(*s, *e)).reduce(|a, b| a.or(b)).unwrap_or(lit(false));
    let columns = attributed_columns();

    // Conversions, adjustments and the conversions adjustments target are the few hits that
    // are not clicks: one scan of the widest span any of them needs (a lock period and two
    // windows before the pass, a lock period after), held in memory and cut by time for
    // each use, instead of a scan of the lake for each.
    let (lo, hi) = p.range_micros();
    let (w, lock) = (p.window.micros(), rules.max_lock_micros());
    let (n_lo, n_hi) = (lo - lock - 2 * w, hi + lock);
    progress.step("reading conversions and adjustments");
    let non_click_kind = [HitKind::Pixel, HitKind::Postback, HitKind::Adjustment]
        .iter()
        .map(|k| col(hit::KIND).eq(lit(k.as_str())))
        .reduce(|a, b| a.or(b))
        .unwrap_or(lit(false));
    let non_clicks = write::collect(
        read::scan(&inputs.overlapping(n_lo, n_hi), &NON_CLICK_COLUMNS, n_lo, n_hi)?
            .filter(non_click_kind)
            .select(NON_CLICK_COLUMNS.iter().map(|c| read::compacted(c)).collect::<Vec<_>>()),
        "reading conversions and adjustments",
        inputs,
    )
    .await?;
    tracing::debug!(rows = non_clicks.height(), "non-click hits");
    progress.done();
    let non_click = |columns: &[&str], lo: i64, hi: i64| {
        non_clicks.clone().lazy().filter(ts_in(lo, hi)).select(columns.iter().map(|c| col(*c)).collect::<Vec<_>>())
    };

    progress.step("adjustments");
    let a_lo = lo - lock - w;
    let adj_df = write::collect(conversions::adjustments(non_click(&ADJUSTMENT_COLUMNS, a_lo, n_hi), p), "reading adjustments", inputs).await?;
    progress.done();
    let on = [col(hit::OFFER_ID), col(hit::EVENT), col(hit::ORDER_ID)];
    let adjustment_keys = adj_df
        .clone()
        .lazy()
        .filter(col(hit::ORDER_ID).is_not_null())
        .select(on.clone())
        .unique(None, UniqueKeepStrategy::Any);

    // The pass's conversions and those sharing an order key with them or with an
    // adjustment, over the widest span adjustments' targets need (duplicate flags depend
    // only on earlier conversions of the same key within W, all inside the span for every
    // conversion of the pass): the pass's own are cut from them, and so is the index
    // adjustments are resolved against. Other conversions of the span are not sorted.
    progress.step("conversions");
    let prepared = write::collect(
        conversions::prepare_selected(non_click(&ATTRIBUTION_COLUMNS, n_lo, n_hi), in_fresh.clone(), adjustment_keys.clone(), p),
        "deduplicating conversions",
        inputs,
    )
    .await?;
    let conv = match fresh.is_empty() {
        true => None,
        false => Some(
            prepared
                .clone()
                .lazy()
                .filter(in_fresh.clone())
                .collect()
                .map_err(crate::error::PipelineError::polars("selecting the pass's conversions"))?,
        ),
    };
    let adjustments = crate::settle::read_adjustments(&adj_df)?;
    let (index, resolved) = if adjustments.is_empty() {
        (None, Vec::new())
    } else {
        let index = prepared
            .clone()
            .lazy()
            .join(adjustment_keys, on.clone(), on, JoinArgs::new(JoinType::Semi))
            .collect()
            .map_err(crate::error::PipelineError::polars("finding the conversions adjustments target"))?;
        let resolved = crate::settle::resolve(&adjustments, &index, rules, p)?;
        (Some(index), resolved)
    };
    drop(prepared);
    progress.done();

    // The stored attributions of re-settled dates.
    let mut stored_parts: Vec<LazyFrame> = Vec::new();
    if !settled.is_empty() {
        progress.step(&format!("reading the stored attributions of {} dates", settled.len()));
        for date in &settled {
            stored_parts.push(shaped(write::read_date(lake, &p.window, TABLE_ATTRIBUTIONS, *date).await?.lazy(), &columns));
        }
        progress.done();
    }
    let stored = match stored_parts.is_empty() {
        true => None,
        false => Some(
            write::collect(
                concat(stored_parts, UnionArgs::default()).map_err(crate::error::PipelineError::polars("joining stored attributions"))?,
                "reading stored attributions",
                inputs,
            )
            .await?,
        ),
    };

    // Targets before the range of adjustments dated in its freshly computed dates, known
    // neither as the pass's conversions nor as stored attributions: their own sessions are
    // found (for the adjustments table's member_id) in the same scan of the clicks as the
    // pass's conversions.
    let mut known: HashMap<String, (String, Option<String>)> = HashMap::new();
    if let Some(st) = &stored {
        crate::settle::members_of(st, &mut known)?;
    }
    let conv_ids: std::collections::HashSet<String> = match &conv {
        Some(c) => crate::settle::strs(c, hit::HIT_ID)?.into_iter().flatten().collect(),
        None => Default::default(),
    };
    let missing: Vec<String> = adjustments
        .iter()
        .zip(&resolved)
        .filter(|(a, _)| fresh_spans.iter().any(|(s, e)| a.ts >= *s && a.ts < *e))
        .filter_map(|(_, r)| r.target_hit_id.clone())
        .filter(|t| !known.contains_key(t) && !conv_ids.contains(t))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let targets = match (&index, missing.is_empty()) {
        (Some(index), false) => {
            let ids = DataFrame::new_infer_height(vec![Series::new(hit::HIT_ID.into(), missing).into_column()])
                .map_err(crate::error::PipelineError::polars("target ids"))?;
            Some(
                index
                    .clone()
                    .lazy()
                    .join(ids.lazy(), [col(hit::HIT_ID)], [col(hit::HIT_ID)], JoinArgs::new(JoinType::Semi))
                    .collect()
                    .map_err(crate::error::PipelineError::polars("selecting earlier targets"))?,
            )
        }
        _ => None,
    };

    let (offers, coupons) = rules.attribution_frames()?;
    let mut parts: Vec<LazyFrame> = Vec::new();
    let mut members = HashMap::new();
    if let (Some(first), Some(last), Some(conv)) = (fresh.first(), fresh.last(), &conv) {
        let pf = p.with_range(*first, *last)?;
        progress.step("sessions");
        // The clicks any session can be: W before the earliest conversion or target, up to
        // the end of the pass.
        let mut c_lo = pf.lookback_micros();
        let mut keyed = conv.clone();
        if let Some(t) = &targets {
            let ts = crate::settle::ints(t, hit::TS)?;
            c_lo = c_lo.min(ts.iter().flatten().min().copied().unwrap_or(c_lo) - w);
            keyed = concat([conv.clone().lazy(), t.clone().lazy()], UnionArgs::default())
                .and_then(|u| u.collect())
                .map_err(crate::error::PipelineError::polars("joining conversions and earlier targets"))?;
        }
        let c_hi = pf.range_micros().1;
        let span = inputs.overlapping(c_lo, c_hi);
        let prefilter = sessions::key_filter(&keyed).map_err(crate::error::PipelineError::polars("the conversions' keys"))?;
        let scan = read::scan(&span, &ATTRIBUTION_COLUMNS, c_lo, c_hi)?
            .filter(col(hit::KIND).eq(lit(HitKind::Click.as_str())).and(prefilter))
            .select(ATTRIBUTION_COLUMNS.iter().map(|c| read::compacted(c)).collect::<Vec<_>>());
        let clicks = sessions::candidates(scan, keyed.lazy(), &pf);
        let clicks = write::collect(clicks, "selecting the clicks conversions name", inputs).await?;
        tracing::debug!(conversions = conv.height(), targets = targets.as_ref().map_or(0, |t| t.height()), candidate_clicks = clicks.height(), "sessions");
        let found = sessions::find(clicks.clone().lazy(), conv.clone().lazy(), &pf);
        parts.push(shaped(attribution::assign(conv.clone().lazy(), found, &pf, &offers, &coupons), &columns));
        if let Some(t) = &targets {
            let found = sessions::find(clicks.lazy(), t.clone().lazy(), p);
            let att = write::collect(attribution::assign(t.clone().lazy(), found, p, &offers, &coupons), "attributing earlier targets", inputs).await?;
            crate::settle::members_of(&att, &mut members)?;
        }
        progress.done();
    }
    if let Some(st) = stored {
        parts.push(st.lazy());
    }
    let attributions = write::collect(
        concat(parts, UnionArgs::default()).map_err(crate::error::PipelineError::polars("joining attributions"))?,
        "finding sessions",
        inputs,
    )
    .await?;
    crate::settle::members_of(&attributions, &mut members)?;

    let adjustments_table = crate::settle::adjustments_table(&adjustments, &resolved, &members, p)?;
    let attributions = crate::settle::settle(attributions, &adjustments, &resolved, rules)?;
    tracing::debug!(adjustments = adjustments.len(), in_range = adjustments_table.height(), settled_dates = settled.len(), "adjustments settled");
    let conversions_table = write::collect(reports::conversions(attributions.clone().lazy(), p), "counting conversions", inputs).await?;
    let revenue_table = write::collect(reports::revenue(attributions.clone().lazy(), p), "summing revenue", inputs).await?;
    progress.done();

    let mut writing: std::collections::VecDeque<tokio::task::JoinHandle<Result<DateWritten>>> = std::collections::VecDeque::new();
    for date in &dates {
        let stored = settle.contains(date);
        progress.step(&format!("clicks {date}"));
        let clicks = if stored {
            write::read_date(lake, &p.window, TABLE_CLICKS, *date).await?
        } else {
            let (ds, de) = p.date_micros(*date);
            let day = inputs.overlapping(ds, de);
            let plan = reports::clicks(bots::flag(read::scan(&day, &CLICK_TABLE_COLUMNS, ds, de)?, p), p);
            write::collect(plan, &format!("counting clicks of {date}"), inputs).await?
        };
        progress.done();

        progress.step(&format!("writing {date}"));
        let day_attributions = write::rows_of_date(&attributions, *date)?;
        let earnings = crate::settle::earnings(&day_attributions, &clicks, rules, *date)?;
        let mut tables = vec![
            (TABLE_ATTRIBUTIONS, day_attributions),
            (TABLE_EARNINGS, earnings),
            (TABLE_REVENUE, write::rows_of_date(&revenue_table, *date)?),
        ];
        if !stored {
            tables.push((TABLE_ADJUSTMENTS, write::rows_of_date(&adjustments_table, *date)?));
            tables.push((TABLE_CONVERSIONS, write::rows_of_date(&conversions_table, *date)?));
            tables.push((TABLE_CLICKS, clicks));
        }
        // The date's files are written by a task of their own, each file waiting on its own
        // fsync, while the next date's clicks are counted; a few dates at most are in flight.
        let (lake, window, date) = (lake.clone(), p.window, *date);
        writing.push_back(tokio::spawn(async move {
            let written = futures::future::try_join_all(tables.into_iter().map(|(table, df)| {
                let lake = &lake;
                async move { write::replace_date(lake, &window, table, date, df).await.map(|n| (table.to_string(), n as u64)) }
            }))
            .await?;
            Ok::<_, crate::error::PipelineError>((date, stored, written.into_iter().collect::<BTreeMap<String, u64>>()))
        }));
        progress.done();
        while writing.len() > MAX_DATES_WRITING {
            if let Some(task) = writing.pop_front() {
                finish_date(task, p, per_date).await?;
            }
        }
    }
    while let Some(task) = writing.pop_front() {
        finish_date(task, p, per_date).await?;
    }

    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("12GiB"), Some(12 << 30));
        assert_eq!(parse_bytes("800M"), Some(800_000_000));
        assert_eq!(parse_bytes(" 1000 "), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("5 parsecs"), None);
    }

    #[test]
    fn passes_fit_the_budget() {
        let d = |day| NaiveDate::from_ymd_opt(2026, 2, day).unwrap();
        let p = Params::new("28d".parse().unwrap(), chrono_tz::Tz::UTC, d(1), d(28)).unwrap();
        // 1M rows an hour: a day's lookback costs 28 × 24M × 70 B.
        let rows = |lo: i64, hi: i64| ((hi - lo) / read::MICROS_PER_HOUR) as u64 * 1_000_000;
        assert_eq!(plan_passes(&p, u64::MAX, rows), vec![(d(1), d(28))]);
        let day = 24_000_000 * BYTES_PER_RANGE_ROW;
        let lookback = 28 * 24_000_000 * BYTES_PER_LOOKBACK_ROW;
        let passes = plan_passes(&p, lookback + 7 * day, rows);
        assert_eq!(passes, vec![(d(1), d(7)), (d(8), d(14)), (d(15), d(21)), (d(22), d(28))]);
        // Too small for even one day: one day a pass.
        assert_eq!(plan_passes(&p, 1, rows).len(), 28);
    }
}
