//! The report tables the pipeline writes (SPEC §5): their columns in order, their Arrow
//! schemas, and where a window's bookkeeping (nightly state, lock) lives.
//!
//! Each `reports/window=<W>/<table>/date=YYYY-MM-DD/` folder holds exactly one object,
//! [`DATE_FILE`]. Its in-file `date` column (date32) always equals the folder's `date=`
//! value, so a hive-partitioned reader (DuckDB `hive_partitioning=true`, Spark, pandas)
//! sees the same date either way.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use object_store::path::Path;

use crate::layout::{
    self, TABLE_ADJUSTMENTS, TABLE_ATTRIBUTIONS, TABLE_CLICKS, TABLE_CONVERSIONS, TABLE_EARNINGS, TABLE_REVENUE,
};
use crate::schema::{hit, report, ts_type};
use crate::window::Window;

/// The one data object of a report date folder. Replaced whole by a single put, which is
/// atomic on object stores and (write-then-rename) on a local lake: a reader sees the old
/// or the new date, never half of one.
pub const DATE_FILE: &str = "part-0.parquet";

/// Columns of `clicks`, in file order.
pub const CLICKS_COLUMNS: [&str; 6] = [
    report::DATE, hit::OFFER_ID, hit::MEMBER_ID, report::CLICKS, report::UNIQUE_CLICKS, report::BOT_CLICKS,
];
/// Columns of `conversions`, in file order.
pub const CONVERSIONS_COLUMNS: [&str; 5] = [report::DATE, hit::OFFER_ID, hit::MEMBER_ID, hit::EVENT, report::CONVERSIONS];
/// Columns of `revenue`, in file order (the last two: SPEC §7).
pub const REVENUE_COLUMNS: [&str; 8] = [
    report::DATE, hit::OFFER_ID, hit::MEMBER_ID, hit::CURRENCY, report::ORDERS, report::REVENUE_MICROS,
    report::REFUNDED_MICROS, report::NET_REVENUE_MICROS,
];
/// Columns of `attributions`, in file order (SPEC §5, then the columns §7 adds).
pub const ATTRIBUTIONS_COLUMNS: [&str; 23] = [
    hit::HIT_ID, hit::TS, report::DATE, hit::KIND, hit::OFFER_ID, hit::EVENT, hit::ORDER_ID, hit::AMOUNT_MICROS,
    hit::CURRENCY, hit::CLICK_ID, hit::VISITOR_ID, report::STATUS, hit::MEMBER_ID, hit::LINK_CODE, report::CLICK_TS,
    report::LAG_SECONDS, hit::COUPON, report::VIA, report::ADJUSTED_STATE, report::REFUNDED_MICROS,
    report::NET_AMOUNT_MICROS, report::LOCK_TS, report::COMMISSION_MICROS,
];
/// Columns of `earnings` (SPEC §7), in file order.
pub const EARNINGS_COLUMNS: [&str; 12] = [
    report::DATE, hit::OFFER_ID, hit::MEMBER_ID, hit::CURRENCY, report::CONVERSIONS, report::GROSS_MICROS,
    report::REFUNDED_MICROS, report::NET_MICROS, report::CLICKS_PAID, report::CONVERSION_COMMISSION_MICROS,
    report::CLICK_COMMISSION_MICROS, report::COMMISSION_MICROS,
];
/// Columns of `adjustments` (SPEC §7), in file order.
pub const ADJUSTMENTS_COLUMNS: [&str; 13] = [
    hit::HIT_ID, hit::TS, report::DATE, hit::OFFER_ID, hit::EVENT, hit::ORDER_ID, hit::ACTION, hit::AMOUNT_MICROS,
    hit::CURRENCY, hit::ADJUSTMENT_ID, report::STATUS, report::TARGET_HIT_ID, hit::MEMBER_ID,
];

/// The Arrow type of a report column.
pub fn column_type(name: &str) -> DataType {
    match name {
        report::DATE => DataType::Date32,
        hit::TS | report::CLICK_TS | report::LOCK_TS => ts_type(),
        report::CLICKS | report::UNIQUE_CLICKS | report::BOT_CLICKS | report::CONVERSIONS | report::ORDERS
        | report::REVENUE_MICROS | report::LAG_SECONDS | hit::AMOUNT_MICROS | report::REFUNDED_MICROS
        | report::NET_AMOUNT_MICROS | report::COMMISSION_MICROS | report::NET_REVENUE_MICROS | report::GROSS_MICROS
        | report::NET_MICROS | report::CLICKS_PAID | report::CONVERSION_COMMISSION_MICROS
        | report::CLICK_COMMISSION_MICROS => DataType::Int64,
        _ => DataType::Utf8,
    }
}

/// The columns of a report table, in file order.
pub fn columns(table: &str) -> &'static [&'static str] {
    match table {
        TABLE_CLICKS => &CLICKS_COLUMNS,
        TABLE_CONVERSIONS => &CONVERSIONS_COLUMNS,
        TABLE_REVENUE => &REVENUE_COLUMNS,
        TABLE_ATTRIBUTIONS => &ATTRIBUTIONS_COLUMNS,
        TABLE_EARNINGS => &EARNINGS_COLUMNS,
        TABLE_ADJUSTMENTS => &ADJUSTMENTS_COLUMNS,
        _ => &[],
    }
}

/// The Arrow schema of a report table (all columns nullable).
pub fn table_schema(table: &str) -> SchemaRef {
    Arc::new(Schema::new(
        columns(table).iter().map(|c| Field::new(*c, column_type(c), true)).collect::<Vec<_>>(),
    ))
}

/// `reports/window=<W>/<table>/date=YYYY-MM-DD/part-0.parquet`.
pub fn date_file(window: &Window, table: &str, date: chrono::NaiveDate) -> Path {
    layout::report_date_dir(window, table, date).join(DATE_FILE)
}

/// `reports/window=<W>/_nightly/state.json`: what `pipeline nightly` knows of each date's inputs.
pub fn state_file(window: &Window) -> Path {
    layout::nightly_dir(window).join("state.json")
}

/// `reports/window=<W>/_nightly/lock.json`: the lease one running `pipeline nightly` holds.
pub fn lock_file(window: &Window) -> Path {
    layout::nightly_dir(window).join("lock.json")
}

/// `reports/window=<W>/_runs/run-<id>.json`: one manifest per run.
pub fn run_manifest(window: &Window, run_id: &str) -> Path {
    layout::runs_dir(window).join(format!("run-{run_id}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_schema() {
        for t in layout::REPORT_TABLES {
            assert_eq!(table_schema(t).fields().len(), columns(t).len());
            assert!(!columns(t).is_empty());
        }
        let w: Window = "7d".parse().unwrap();
        let d = chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(date_file(&w, TABLE_REVENUE, d).as_ref(), "reports/window=7d/revenue/date=2026-03-01/part-0.parquet");
    }
}
