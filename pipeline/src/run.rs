//! `pipeline run`: one date range, read once, written date by date.
//!
//! 1. List the hit files whose UTC hour overlaps `[start − W, end)`: the range plus its
//!    lookback (sessions and order twins reach back at most `W`). Hour folders, not whole
//!    days, so a zone's offset needs no more than the hours it covers.
//! 2. Conversions over that span are deduplicated and flagged, then kept if in the range;
//!    this frame is small and materialized once.
//! 3. Clicks over the span stream past the conversions' keys in one pass and only those
//!    sharing a key are kept (materialized); sessions and statuses are computed on them:
//!    the `attributions` rows.
//! 4. `conversions` and `revenue` are aggregated from `attributions`.
//! 5. `clicks` is computed date by date from that date's hour folders only, so memory
//!    follows one day's clicks, not the range's.
//! 6. Each date's four files are replaced, then the manifest is written.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use lake::layout::{TABLE_ATTRIBUTIONS, TABLE_CLICKS, TABLE_CONVERSIONS, TABLE_REVENUE};
use lake::schema::hit;
use lake::Lake;
use polars::prelude::*;

use crate::error::Result;
use crate::params::Params;
use crate::progress::Progress;
use crate::read::{self, HitFile};
use crate::stages::{attribution, bots, conversions, dedup, reports, sessions, ts_in};
use crate::write::{self, InputRecord, Manifest};

/// Columns read for attribution; `user_agent` and the rest are never read for it.
const ATTRIBUTION_COLUMNS: [&str; 12] = [
    hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::MEMBER_ID, hit::LINK_CODE, hit::CLICK_ID, hit::VISITOR_ID,
    hit::EVENT, hit::ORDER_ID, hit::AMOUNT_MICROS, hit::CURRENCY,
];
/// Columns read for the `clicks` table.
const CLICK_TABLE_COLUMNS: [&str; 7] =
    [hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID, hit::MEMBER_ID, hit::VISITOR_ID, hit::USER_AGENT];

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub manifest: Manifest,
    pub manifest_path: String,
}

/// Runs `p` over the lake. `files`: a listing taken earlier (nightly passes its snapshot so
/// that what it fingerprints is exactly what is read); `None` lists the lake now.
pub async fn run(lake: &Lake, p: &Params, files: Option<Vec<HitFile>>, command: &str, progress: &Progress) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at = Utc::now();
    let run_id = format!("{}-{}", started_at.format("%Y%m%dT%H%M%S%.6fZ"), uuid::Uuid::new_v4().simple());
    let (lo, hi) = p.range_micros();
    let lb = p.lookback_micros();
    let dates = p.dates();
    progress.add(4 + 2 * dates.len() as u64);

    progress.step("listing hits");
    let files = match files {
        Some(all) => all.into_iter().filter(|f| f.hour_start + read::MICROS_PER_HOUR > lb && f.hour_start < hi).collect(),
        None => read::list_hits(lake, Some((lb, hi))).await?,
    };
    progress.done();
    progress.step(&format!("fetching and checking {} hit files", files.len()));
    let inputs = read::fetch(lake, files).await?;
    tracing::info!(files = inputs.files.len(), rows = inputs.files.iter().map(|f| f.rows).sum::<i64>(), "inputs ready");
    progress.done();

    progress.step("conversions");
    let span = inputs.overlapping(lb, hi);
    let conv_plan = conversions::prepare(read::scan(&span, &ATTRIBUTION_COLUMNS, lb, hi)?, p).filter(ts_in(lo, hi));
    let conv = write::collect(conv_plan, "deduplicating conversions", &inputs).await?;
    progress.done();

    progress.step("sessions");
    let clicks = sessions::candidates(read::scan(&span, &ATTRIBUTION_COLUMNS, lb, hi)?, conv.clone().lazy(), p);
    let clicks = write::collect(clicks, "selecting the clicks conversions name", &inputs).await?;
    tracing::info!(conversions = conv.height(), candidate_clicks = clicks.height(), "sessions");
    let found = sessions::find(clicks.lazy(), conv.clone().lazy(), p);
    let attributions = write::collect(attribution::assign(conv.lazy(), found, p), "finding sessions", &inputs).await?;
    let conversions_table = write::collect(reports::conversions(attributions.clone().lazy(), p), "counting conversions", &inputs).await?;
    let revenue_table = write::collect(reports::revenue(attributions.clone().lazy(), p), "summing revenue", &inputs).await?;
    progress.done();

    let mut per_date: BTreeMap<chrono::NaiveDate, BTreeMap<String, u64>> = BTreeMap::new();
    for date in &dates {
        progress.step(&format!("clicks {date}"));
        let (ds, de) = p.date_micros(*date);
        let day = inputs.overlapping(ds, de);
        let plan = reports::clicks(bots::flag(dedup::hits(read::scan(&day, &CLICK_TABLE_COLUMNS, ds, de)?, p), p), p);
        let clicks = write::collect(plan, &format!("counting clicks of {date}"), &inputs).await?;
        progress.done();

        progress.step(&format!("writing {date}"));
        let mut rows = BTreeMap::new();
        for (table, df) in [
            (TABLE_ATTRIBUTIONS, write::rows_of_date(&attributions, *date)?),
            (TABLE_CONVERSIONS, write::rows_of_date(&conversions_table, *date)?),
            (TABLE_REVENUE, write::rows_of_date(&revenue_table, *date)?),
            (TABLE_CLICKS, clicks),
        ] {
            let n = write::replace_date(lake, &p.window, table, *date, df).await?;
            rows.insert(table.to_string(), n as u64);
        }
        per_date.insert(*date, rows);
        progress.done();
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
        dates: per_date,
    };
    let path = write::write_manifest(lake, &p.window, &manifest).await?;
    progress.done();
    tracing::info!(
        window = %p.window, tz = p.tz_name(), from = %p.from, to = %p.to,
        duration_ms = manifest.duration_ms, manifest = %path, "run finished"
    );
    Ok(RunSummary { manifest, manifest_path: path.to_string() })
}
