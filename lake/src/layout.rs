//! Where every file of a lake lives (SPEC §1). All paths are relative to the lake root.

use chrono::{NaiveDate, Timelike};
use object_store::path::Path;

use crate::window::Window;

pub const REGISTRY_DIR: &str = "registry";
pub const OFFERS_CSV: &str = "registry/offers.csv";
pub const LINKS_CSV: &str = "registry/links.csv";
pub const COMMISSIONS_CSV: &str = "registry/commissions.csv";
pub const COUPONS_CSV: &str = "registry/coupons.csv";
/// The ledger of `collector adjustments import`: one row per imported file (offer, SHA-256,
/// the hits file written), so that importing the same file twice writes nothing new and
/// adjustment ids already imported for the offer are skipped.
pub const ADJUSTMENT_IMPORTS_CSV: &str = "registry/adjustment_imports.csv";
/// Paused offers and links (`collector offers pause`, `links pause`): one row each, removed
/// on resume. Not read by the pipeline: a pause stops new clicks, it changes no attribution.
pub const PAUSED_CSV: &str = "registry/paused.csv";
/// The append-only log of registry changes: one JSON object per line (when, which command,
/// which file and row, the row before and after). Payouts depend on the registry.
pub const CHANGES_JSONL: &str = "registry/_changes.jsonl";
pub const HITS_DIR: &str = "hits";
pub const REPORTS_DIR: &str = "reports";
pub const RUNS_DIR: &str = "_runs";
/// Nightly's bookkeeping (not manifests): `_runs/` holds one manifest per run and nothing else.
pub const NIGHTLY_DIR: &str = "_nightly";
pub const PARQUET_EXT: &str = ".parquet";

/// Report tables written by the pipeline (SPEC §5).
pub const TABLE_CLICKS: &str = "clicks";
pub const TABLE_CONVERSIONS: &str = "conversions";
pub const TABLE_REVENUE: &str = "revenue";
pub const TABLE_ATTRIBUTIONS: &str = "attributions";
pub const TABLE_EARNINGS: &str = "earnings";
pub const TABLE_ADJUSTMENTS: &str = "adjustments";
pub const REPORT_TABLES: [&str; 6] =
    [TABLE_CLICKS, TABLE_CONVERSIONS, TABLE_REVENUE, TABLE_ATTRIBUTIONS, TABLE_EARNINGS, TABLE_ADJUSTMENTS];

pub fn offers() -> Path {
    Path::from(OFFERS_CSV)
}

pub fn links() -> Path {
    Path::from(LINKS_CSV)
}

pub fn commissions() -> Path {
    Path::from(COMMISSIONS_CSV)
}

pub fn coupons() -> Path {
    Path::from(COUPONS_CSV)
}

pub fn paused() -> Path {
    Path::from(PAUSED_CSV)
}

pub fn changes() -> Path {
    Path::from(CHANGES_JSONL)
}

pub fn adjustment_imports() -> Path {
    Path::from(ADJUSTMENT_IMPORTS_CSV)
}

/// `hits/date=YYYY-MM-DD/hour=HH`: the folder for one UTC hour.
pub fn hits_hour_dir(date: NaiveDate, hour: u32) -> Path {
    Path::from(format!("{HITS_DIR}/date={}/hour={hour:02}", date.format("%Y-%m-%d")))
}

/// `hits/date=YYYY-MM-DD`: the folder for one UTC date.
pub fn hits_date_dir(date: NaiveDate) -> Path {
    Path::from(format!("{HITS_DIR}/date={}", date.format("%Y-%m-%d")))
}

/// A hits file named `name.parquet` in the folder of the UTC hour of `ts`.
pub fn hits_file(ts: chrono::DateTime<chrono::Utc>, name: &str) -> Path {
    hits_hour_dir(ts.date_naive(), ts.hour()).join(format!("{name}{PARQUET_EXT}"))
}

/// `reports/window=<W>/<table>/date=YYYY-MM-DD`.
pub fn report_date_dir(window: &Window, table: &str, date: NaiveDate) -> Path {
    Path::from(format!(
        "{REPORTS_DIR}/window={window}/{table}/date={}",
        date.format("%Y-%m-%d")
    ))
}

/// `reports/window=<W>/_nightly`.
pub fn nightly_dir(window: &Window) -> Path {
    Path::from(format!("{REPORTS_DIR}/window={window}/{NIGHTLY_DIR}"))
}

/// `reports/window=<W>/_runs`.
pub fn runs_dir(window: &Window) -> Path {
    Path::from(format!("{REPORTS_DIR}/window={window}/{RUNS_DIR}"))
}

/// Parses the `date=YYYY-MM-DD` and `hour=HH` parts of a hits file path.
pub fn parse_hits_path(path: &Path) -> Option<(NaiveDate, u32)> {
    let mut date = None;
    let mut hour = None;
    for part in path.parts() {
        let part = part.as_ref();
        if let Some(d) = part.strip_prefix("date=") {
            date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        } else if let Some(h) = part.strip_prefix("hour=") {
            hour = h.parse::<u32>().ok().filter(|h| *h < 24);
        }
    }
    Some((date?, hour?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn hits_file_is_in_its_utc_hour() {
        let ts = chrono::Utc.with_ymd_and_hms(2026, 3, 9, 7, 59, 59).unwrap();
        let p = hits_file(ts, "abc");
        assert_eq!(p.as_ref(), "hits/date=2026-03-09/hour=07/abc.parquet");
        assert_eq!(
            parse_hits_path(&p),
            Some((NaiveDate::from_ymd_opt(2026, 3, 9).unwrap(), 7))
        );
    }

    #[test]
    fn report_paths() {
        let w: Window = "28d".parse().unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(
            report_date_dir(&w, TABLE_CLICKS, d).as_ref(),
            "reports/window=28d/clicks/date=2026-01-02"
        );
        assert_eq!(runs_dir(&w).as_ref(), "reports/window=28d/_runs");
    }
}
