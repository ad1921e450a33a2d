//! `pipeline nightly` and `pipeline schedule`: keep every date up to yesterday current.
//!
//! **State** lives in the lake, beside the runs' manifests: `reports/window=<W>/_nightly/state.json`
//! maps each computed date to a fingerprint of everything its output depends on: the
//! window, the zone, the pipeline's rules version, the registry files, and the listing
//! (path, size, e-tag) of every hit file in the hour folders from `lock + 2W` before the
//! date's start to `lock` after its end (sessions and order twins reach back `W`; the
//! conversions its adjustments target `lock + 2W`; adjustments of its conversions arrive
//! up to `lock` after it, SPEC §7). A date is stale when its fingerprint differs: a late
//! upload into an old hour, or a late click that changes a later conversion, changes the
//! fingerprint of every date that can see it. Stale dates are recomputed in contiguous
//! ranges, each from the listing the fingerprints were taken from; each range's
//! fingerprints are recorded only after its files are written, so a crash leaves its dates
//! stale and the next night redoes them.
//!
//! **Settling only.** A stale date whose inputs up to its end are unchanged (only hours
//! after it changed: in practice, refunds and rejections arriving during its lock period)
//! is re-settled from its stored attributions and clicks, with no session search
//! ([`crate::run::run_settling`]). A date whose lock has closed is final once computed.
//!
//! **Lock.** One nightly per window at a time: a lease in `_nightly/lock.json`, taken and
//! renewed with compare-and-swap ([`Lake::update`]), expiring after [`LEASE`] if its holder
//! dies. A second nightly finds it held and stops without touching anything. Writing a date
//! is idempotent (one object replaced whole), so even a run that outlived its lease cannot
//! double-count; it stops at the next date once it sees the lease gone.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use lake::compact::CompactOptions;
use lake::reports;
use lake::window::Window;
use lake::{Lake, LakeError};
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::params::{local_date, Params};
use crate::progress::Progress;
use crate::read::{self, HitFile, MICROS_PER_HOUR};
use crate::run::{run_settling, RunSummary};

/// Bumped whenever a rule changes what a date's output is, so every date is recomputed.
pub const RULES_VERSION: u32 = 3;
/// How long a nightly's lock lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(600);
/// The longest range computed at once, to bound memory on a first run over a long history.
pub const MAX_RANGE_DAYS: usize = 31;

/// What `nightly` knows about each computed date.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The zone the dates were computed in; another zone makes every date stale.
    pub tz: Option<String>,
    pub dates: BTreeMap<NaiveDate, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lease {
    owner: String,
    host: String,
    pid: u32,
    expires_at_us: i64,
}

/// What a nightly did.
#[derive(Debug)]
pub enum Outcome {
    /// Another nightly holds the lock.
    Busy { owner: String, until: String },
    /// These ranges were recomputed (none: everything was current).
    Done { runs: Vec<RunSummary> },
}

/// What besides the hit files a date's output depends on (SPEC §7): the longest lock
/// period, the offers file, and the commission rules.
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    /// The longest `lock_days` of any offer, in µs.
    pub lock_micros: i64,
    /// A hash of `offers.csv` and `coupons.csv` as read (lock periods, currencies, the
    /// fraud floor and coupons: every table of a date).
    pub offers: String,
    /// The commission rules, parsed (they change commissions only, so a date whose rules
    /// in force changed is only re-settled).
    pub rules: crate::rules::Rules,
}

impl Dependencies {
    pub fn of(rules: &crate::rules::Rules) -> Dependencies {
        Dependencies {
            lock_micros: rules.max_lock_micros(),
            offers: {
                let mut h = blake3::Hasher::new();
                h.update(&rules.offers_csv);
                h.update(b"\0");
                h.update(&rules.coupons_csv);
                h.finalize().to_hex().to_string()
            },
            rules: rules.clone(),
        }
    }
}

/// The fingerprint of every date in `[first, last]`, from one listing of all hit files.
/// A date depends on the hours from `lock + 2W` before it (the conversions its adjustments
/// target, and their order twins) to `lock` after it (the adjustments that still change
/// its conversions), and on the registry. The fingerprint is `HEAD.TAIL`: `HEAD` covers
/// the offers and the hours up to the date's end, everything its sessions, clicks and
/// adjustments table depend on; `TAIL` the commission rules in force on the date and the
/// hours of the lock period after it. A rule with `valid_from` D changes only the dates
/// from D on. A date whose
/// `HEAD` is unchanged only needs re-settling ([`settle_only`]).
pub fn fingerprints(
    files: &[HitFile],
    window: &Window,
    tz: &Tz,
    first: NaiveDate,
    last: NaiveDate,
    deps: &Dependencies,
) -> BTreeMap<NaiveDate, String> {
    // Each hour's fingerprint is the lake's (`lake::compact::hour_fingerprint`): compacting
    // an hour leaves it as it was, so compaction never makes a date stale.
    let mut listed: BTreeMap<i64, Vec<lake::compact::Listed>> = BTreeMap::new();
    for f in files {
        listed.entry(f.hour_start).or_default().push(lake::compact::Listed { path: f.path.clone(), size: f.size, e_tag: f.e_tag.clone() });
    }
    let hours: BTreeMap<i64, [u8; 32]> = listed
        .into_iter()
        .map(|(k, mut fs)| {
            fs.sort_by(|a, b| a.path.cmp(&b.path));
            (k, lake::compact::hour_fingerprint(&fs))
        })
        .collect();
    let mut out = BTreeMap::new();
    for date in first.iter_days().take_while(|d| *d <= last) {
        let p = Params { window: *window, tz: *tz, from: date, to: date };
        let (ds, de) = p.date_micros(date);
        let mut head = blake3::Hasher::new();
        head.update(format!("v{RULES_VERSION} {window} {} {date} {}\n", tz.name(), deps.offers).as_bytes());
        let back = deps.lock_micros + 2 * window.micros();
        for (hour, fp) in hours.range((ds - back - MICROS_PER_HOUR + 1)..de) {
            head.update(&hour.to_le_bytes());
            head.update(fp);
        }
        let mut tail = blake3::Hasher::new();
        for rule in deps.rules.rules_on(date) {
            tail.update(rule.as_bytes());
            tail.update(b"\n");
        }
        for (hour, fp) in hours.range(de..(de + deps.lock_micros)) {
            tail.update(&hour.to_le_bytes());
            tail.update(fp);
        }
        out.insert(date, format!("{}.{}", head.finalize().to_hex(), tail.finalize().to_hex()));
    }
    out
}

/// Whether a date computed with fingerprint `before` now only needs re-settling: nothing
/// up to its end changed (same `HEAD`), only the hours after it.
pub fn settle_only(before: &str, now: &str) -> bool {
    match (before.split_once('.'), now.split_once('.')) {
        (Some((a, _)), Some((b, _))) => a == b && before != now,
        _ => false,
    }
}

/// The dates whose fingerprint differs from the state's, grouped in contiguous ranges of at
/// most [`MAX_RANGE_DAYS`].
pub fn stale_ranges(state: &State, tz: &Tz, current: &BTreeMap<NaiveDate, String>) -> Vec<(NaiveDate, NaiveDate)> {
    let same_zone = state.tz.as_deref() == Some(tz.name());
    let mut ranges: Vec<(NaiveDate, NaiveDate)> = Vec::new();
    for (date, fp) in current {
        if same_zone && state.dates.get(date) == Some(fp) {
            continue;
        }
        match ranges.last_mut() {
            Some((start, end))
                if crate::params::next_day(*end) == *date && (*date - *start).num_days() < MAX_RANGE_DAYS as i64 =>
            {
                *end = *date
            }
            _ => ranges.push((*date, *date)),
        }
    }
    ranges
}

async fn read_state(lake: &Lake, window: &Window) -> Result<State> {
    let path = reports::state_file(window);
    match lake.get_optional(&path).await? {
        None => Ok(State::default()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| PipelineError::Invalid(format!("{path} is not a nightly state file: {e}"))),
    }
}

/// Records `p`'s dates as computed from `files` (a listing covering their fingerprints'
/// hours), so that the next nightly does not recompute what a `pipeline run` just wrote.
pub async fn record_dates(lake: &Lake, p: &Params, files: &[HitFile], rules: &crate::rules::Rules) -> Result<()> {
    let current = fingerprints(files, &p.window, &p.tz, p.from, p.to, &Dependencies::of(rules));
    record(lake, &p.window, &p.tz, current).await
}

async fn record(lake: &Lake, window: &Window, tz: &Tz, done: BTreeMap<NaiveDate, String>) -> Result<()> {
    let path = reports::state_file(window);
    let zone = tz.name().to_string();
    lake.update(&path, move |current| {
        let mut state: State = match current {
            Some(b) => serde_json::from_slice(b).map_err(|e| LakeError::Invalid(format!("nightly state: {e}")))?,
            None => State::default(),
        };
        if state.tz.as_deref() != Some(zone.as_str()) {
            state = State { tz: Some(zone.clone()), dates: BTreeMap::new() };
        }
        state.dates.extend(done.clone());
        let json = serde_json::to_vec_pretty(&state).map_err(|e| LakeError::Invalid(format!("nightly state: {e}")))?;
        Ok((Some(Bytes::from(json)), ()))
    })
    .await?;
    Ok(())
}

/// Takes (`take`) or renews/releases the lease; `Err(holder)` when someone else holds it.
async fn lease(lake: &Lake, window: &Window, owner: &str, until_us: i64, take: bool) -> Result<std::result::Result<(), Lease>> {
    let path = reports::lock_file(window);
    let me = Lease {
        owner: owner.to_string(),
        host: std::env::var("HOSTNAME").unwrap_or_default(),
        pid: std::process::id(),
        expires_at_us: until_us,
    };
    let now = Utc::now().timestamp_micros();
    Ok(lake
        .update(&path, move |current| {
            let held: Option<Lease> = current.and_then(|b| serde_json::from_slice(b).ok());
            match held {
                Some(h) if h.owner != me.owner && h.expires_at_us > now => Ok((None, Err(h))),
                Some(h) if h.owner != me.owner && !take => Ok((None, Err(h))),
                _ => {
                    let json = serde_json::to_vec(&me).map_err(|e| LakeError::Invalid(e.to_string()))?;
                    Ok((Some(Bytes::from(json)), Ok(())))
                }
            }
        })
        .await?)
}

/// Brings every date from the first hit's date up to the day before `today` (in `tz`) up
/// to date, compacting the closed hours before `today` first (default options).
pub async fn nightly(lake: &Lake, window: Window, tz: Tz, today: NaiveDate, progress: &Progress) -> Result<Outcome> {
    nightly_with(lake, window, tz, today, progress, None, Some(CompactOptions::default())).await
}

/// [`nightly`] with its two choices: `spark`, the engine that computes the stale ranges
/// (`None`: this process; with Spark the same decisions, lease, fingerprints and stale
/// ranges, each range one Spark run, and dates a polars nightly would only re-settle are
/// recomputed whole), and `compact`, the compaction of closed hours done first (`None`:
/// none). Only hours that end before `today` starts in `tz` are compacted: the hours of
/// the dates nightly computes. Compaction keeps every hour's fingerprint, so it makes no
/// date stale.
pub async fn nightly_with(
    lake: &Lake,
    window: Window,
    tz: Tz,
    today: NaiveDate,
    progress: &Progress,
    spark: Option<&crate::spark::SparkEngine>,
    compact: Option<CompactOptions>,
) -> Result<Outcome> {
    let owner = uuid::Uuid::new_v4().to_string();
    let expiry = || Utc::now().timestamp_micros() + LEASE.as_micros() as i64;
    if let Err(holder) = lease(lake, &window, &owner, expiry(), true).await? {
        let until = chrono::DateTime::<Utc>::from_timestamp_micros(holder.expires_at_us).unwrap_or_default().to_rfc3339();
        tracing::warn!(owner = %holder.owner, host = %holder.host, pid = holder.pid, until = %until, "another nightly holds the lock; nothing done");
        return Ok(Outcome::Busy { owner: holder.owner, until });
    }
    let lost = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (lake, owner, lost) = (lake.clone(), owner.clone(), lost.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE / 3).await;
                let until = Utc::now().timestamp_micros() + LEASE.as_micros() as i64;
                match lease(&lake, &window, &owner, until, false).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => {
                        lost.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew the nightly lock; retrying"),
                }
            }
        })
    };
    let result = catch_up(lake, window, tz, today, progress, &lost, spark, compact).await;
    heartbeat.abort();
    // Release: an expired lease in our name lets the next nightly start at once.
    if let Err(e) = lease(lake, &window, &owner, 0, false).await {
        tracing::warn!(error = %e, "could not release the nightly lock; it expires by itself");
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn catch_up(
    lake: &Lake,
    window: Window,
    tz: Tz,
    today: NaiveDate,
    progress: &Progress,
    lost: &AtomicBool,
    spark: Option<&crate::spark::SparkEngine>,
    compact: Option<CompactOptions>,
) -> Result<Outcome> {
    progress.step("listing the lake");
    let mut files = read::list_hits(lake, None).await?;
    if let Some(mut opts) = compact {
        progress.step("compacting closed hours");
        opts.until_us = Some(crate::params::day_start_micros(&tz, today));
        let listed = files.iter().map(|f| lake::compact::Listed { path: f.path.clone(), size: f.size, e_tag: f.e_tag.clone() }).collect();
        let summary = lake::compact::compact_listed(lake, listed, &opts).await?;
        tracing::info!(
            hours = summary.hours,
            compacted = summary.compacted,
            cleaned = summary.cleaned,
            files_removed = summary.files_removed,
            failed = summary.failed.len(),
            "compacted closed hours"
        );
        if summary.changed() {
            progress.step("listing the lake again");
            files = read::list_hits(lake, None).await?;
        }
    }
    let Some(first_hour) = files.iter().map(|f| f.hour_start).min() else {
        tracing::info!("no hits in the lake; nothing to do");
        return Ok(Outcome::Done { runs: Vec::new() });
    };
    let first = local_date(&tz, first_hour);
    let Some(last) = today.pred_opt().filter(|l| *l >= first) else {
        return Ok(Outcome::Done { runs: Vec::new() });
    };
    let deps = Dependencies::of(&crate::rules::Rules::load_for(lake, &window).await?);
    let mut current = fingerprints(&files, &window, &tz, first, last, &deps);
    let state = read_state(lake, &window).await?;
    // A date whose lock has closed (no adjustment can change it any more) is final once
    // computed: its numbers are what members were paid from (SPEC §7).
    let today_start = crate::params::day_start_micros(&tz, today);
    let same_zone = state.tz.as_deref() == Some(tz.name());
    current.retain(|date, _| {
        let (_, de) = Params { window, tz, from: *date, to: *date }.date_micros(*date);
        let closed = de + deps.lock_micros <= today_start;
        !(closed && same_zone && state.dates.contains_key(date))
    });
    let ranges = stale_ranges(&state, &tz, &current);
    tracing::info!(first = %first, last = %last, stale_ranges = ranges.len(), "nightly plan");
    let stored = if ranges.is_empty() { BTreeSet::new() } else { stored_dates(lake, &window).await? };
    let mut runs = Vec::new();
    for (from, to) in ranges {
        if lost.load(Ordering::SeqCst) {
            return Err(PipelineError::Invalid("lost the nightly lock to another process; stopping".into()));
        }
        let p = Params::new(window, tz, from, to)?;
        // Dates whose inputs up to their end are unchanged, and whose tables are there,
        // are only re-settled: no session search (the cost bound of SPEC §7 nightly).
        let settle: BTreeSet<NaiveDate> = from
            .iter_days()
            .take_while(|d| *d <= to)
            .filter(|d| {
                same_zone
                    && match (state.dates.get(d), current.get(d)) {
                        (Some(before), Some(now)) => settle_only(before, now),
                        _ => false,
                    }
                    && stored.contains(d)
            })
            .collect();
        // The run records its dates' fingerprints once its files are written
        // ([`record_dates`]), from the same listing these were computed from.
        let summary = match spark {
            Some(engine) => crate::spark::run(lake, &p, engine, Some(files.clone()), "nightly").await?,
            None => run_settling(lake, &p, Some(files.clone()), "nightly", progress, &settle).await?,
        };
        runs.push(summary);
    }
    Ok(Outcome::Done { runs })
}

/// The dates whose `attributions` and `clicks` files are both in the lake.
async fn stored_dates(lake: &Lake, window: &Window) -> Result<BTreeSet<NaiveDate>> {
    let mut per_table = Vec::new();
    for table in [lake::layout::TABLE_ATTRIBUTIONS, lake::layout::TABLE_CLICKS] {
        let prefix = object_store::path::Path::from(format!("{}/window={window}/{table}", lake::layout::REPORTS_DIR));
        let listed: Vec<object_store::ObjectMeta> =
            lake.store().list(Some(&prefix)).try_collect().await.map_err(PipelineError::store(&prefix))?;
        let dates: BTreeSet<NaiveDate> = listed
            .iter()
            .filter(|m| m.location.filename() == Some(reports::DATE_FILE))
            .filter_map(|m| {
                m.location.parts().find_map(|part| part.as_ref().strip_prefix("date=").and_then(|d| d.parse().ok()))
            })
            .collect();
        per_table.push(dates);
    }
    Ok(per_table[0].intersection(&per_table[1]).copied().collect())
}

/// Today's date in `tz`.
pub fn today_in(tz: &Tz) -> NaiveDate {
    Utc::now().with_timezone(tz).date_naive()
}

/// Parses `HH:MM`, naming the flag on error.
pub fn parse_at(text: &str) -> Result<NaiveTime> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| PipelineError::Flag {
        flag: "--at",
        value: text.to_string(),
        reason: "not a time of day written HH:MM (24-hour)".into(),
    })
}

/// How long until the next `at` o'clock in `tz` (a time skipped by DST runs at the next
/// valid instant).
pub fn until_next(at: NaiveTime, tz: &Tz, now: chrono::DateTime<Utc>) -> Duration {
    let local_today = now.with_timezone(tz).date_naive();
    for day in local_today.iter_days().take(3) {
        let mut t = day.and_time(at);
        for _ in 0..8 {
            if let Some(when) = tz.from_local_datetime(&t).earliest() {
                let when = when.with_timezone(&Utc);
                if when > now {
                    return (when - now).to_std().unwrap_or_default();
                }
                break;
            }
            t += chrono::Duration::minutes(15);
        }
    }
    Duration::from_secs(24 * 3600)
}

/// Runs `nightly` for each window every day at `at` in `tz`, forever. A failed night is
/// logged and retried the next day (its dates stay stale, so nothing is skipped); one
/// window's failure does not stop the others.
pub async fn schedule(lake: &Lake, windows: Vec<Window>, tz: Tz, at: NaiveTime, compact: Option<CompactOptions>) -> Result<()> {
    let names: Vec<String> = windows.iter().map(ToString::to_string).collect();
    loop {
        let wait = until_next(at, &tz, Utc::now());
        tracing::info!(windows = %names.join(","), tz = tz.name(), at = %at.format("%H:%M"), wait_s = wait.as_secs(), "next nightly scheduled");
        tokio::time::sleep(wait).await;
        for window in &windows {
            let compact = compact.clone().map(|o| CompactOptions { now: Utc::now(), ..o });
            match nightly_with(lake, *window, tz, today_in(&tz), &Progress::quiet(), None, compact).await {
                Ok(Outcome::Done { runs }) => tracing::info!(window = %window, ranges = runs.len(), "nightly finished"),
                Ok(Outcome::Busy { owner, until }) => tracing::warn!(window = %window, %owner, %until, "nightly skipped: lock held"),
                Err(e) => tracing::error!(window = %window, error = %e, "nightly failed; its dates stay stale and are retried next time"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn next_run_time() {
        let tz: Tz = "Europe/Paris".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap(); // 00:00 Paris on the 29th
        // 02:30 does not exist on 2026-03-29 in Paris: runs at 03:00 local (01:00 UTC).
        let wait = until_next(parse_at("02:30").unwrap(), &tz, now);
        assert_eq!(wait, Duration::from_secs(2 * 3600));
        assert!(parse_at("25:00").is_err());
    }

    #[test]
    fn late_file_marks_later_dates_stale() {
        let w: Window = "2d".parse().unwrap();
        let tz = Tz::UTC;
        let d = |day| NaiveDate::from_ymd_opt(2026, 1, day).unwrap();
        let file = |day: u32, name: &str| HitFile {
            path: format!("hits/date=2026-01-{day:02}/hour=05/{name}.parquet"),
            size: 10,
            e_tag: None,
            hour_start: d(day).and_hms_opt(5, 0, 0).unwrap().and_utc().timestamp_micros(),
        };
        let deps = Dependencies::default();
        let before = fingerprints(&[file(1, "a")], &w, &tz, d(1), d(10), &deps);
        let state = State { tz: Some("UTC".into()), dates: before.clone() };
        let after = fingerprints(&[file(1, "a"), file(4, "late")], &w, &tz, d(1), d(10), &deps);
        // Without a lock period, day 4's hour is seen by days 4 to 8 (its adjustments' targets
        // reach back 2W: from day 8's start to day 4's start).
        assert_eq!(stale_ranges(&state, &tz, &after), vec![(d(4), d(8))]);
        // With a 1-day lock, days 3 (whose adjustments reach a day past it) to 9 see it.
        let deps = Dependencies { lock_micros: 86_400_000_000, ..Default::default() };
        let before = fingerprints(&[file(1, "a")], &w, &tz, d(1), d(10), &deps);
        let state = State { tz: Some("UTC".into()), dates: before.clone() };
        let after = fingerprints(&[file(1, "a"), file(4, "late")], &w, &tz, d(1), d(10), &deps);
        assert_eq!(stale_ranges(&state, &tz, &after), vec![(d(3), d(9))]);
        // Day 3 only sees it after its end: it is only re-settled; days 4–9 see it before.
        assert!(settle_only(&state.dates[&d(3)], &after[&d(3)]));
        assert!(!settle_only(&state.dates[&d(4)], &after[&d(4)]));
        assert!(!settle_only(&state.dates[&d(2)], &after[&d(2)]), "unchanged is not stale");
        // An offers change makes every date stale, in full.
        let changed = Dependencies { offers: "other".into(), ..deps.clone() };
        let now = fingerprints(&[file(1, "a")], &w, &tz, d(1), d(10), &changed);
        assert_eq!(stale_ranges(&state, &tz, &now), vec![(d(1), d(10))]);
        assert!(!settle_only(&state.dates[&d(5)], &now[&d(5)]));
        // A commission rule valid from day 6 changes days 6 on, which are only re-settled.
        let rule = |valid_from: &str| lake::registry::CommissionRule {
            offer_id: "o".into(),
            member_id: String::new(),
            event: String::new(),
            percent: "10".into(),
            flat: String::new(),
            valid_from: valid_from.into(),
        };
        let with_rule = Dependencies { rules: crate::rules::Rules::new(Vec::new(), vec![rule("2026-01-06")]), ..deps.clone() };
        let now = fingerprints(&[file(1, "a")], &w, &tz, d(1), d(10), &with_rule);
        assert_eq!(stale_ranges(&state, &tz, &now), vec![(d(6), d(10))]);
        assert!((6..=10).all(|day| settle_only(&state.dates[&d(day)], &now[&d(day)])));
        // The same rule written with another spelling of the same numbers changes nothing.
        let state = State { tz: Some("UTC".into()), dates: now.clone() };
        let mut same = rule("2026-01-06");
        same.percent = "10.00".into();
        let respelled = Dependencies { rules: crate::rules::Rules::new(Vec::new(), vec![same]), ..deps.clone() };
        assert!(stale_ranges(&state, &tz, &fingerprints(&[file(1, "a")], &w, &tz, d(1), d(10), &respelled)).is_empty());
        let other_zone: Tz = "Asia/Tokyo".parse().unwrap();
        assert_eq!(stale_ranges(&state, &other_zone, &after).len(), 1);
    }
}
