//! Deduplication: of hits by `hit_id` (SPEC §4.1), and of conversions by order key within
//! the window (SPEC §4.3).

use lake::schema::hit;
use polars::prelude::*;

use super::{ts_us, work};
use crate::params::Params;

/// One row per `hit_id`. Copies of a hit (the same file uploaded twice, a retried upload
/// under another name) are identical, so which copy survives does not matter.
pub fn hits(lf: LazyFrame, _p: &Params) -> LazyFrame {
    lf.unique(Some(by_name([hit::HIT_ID], true, false)), UniqueKeepStrategy::Any)
}

/// Adds [`work::DUPLICATE`] to conversions: true when another conversion with the same
/// `(offer_id, event, order_id)` (order non-empty) and an earlier `(ts, hit_id)` has
/// `ts ≥ this.ts − W`. The latest earlier twin is the one to compare with, so after sorting
/// by key then `(ts, hit_id)`, looking one row back within the key is exact: the row
/// before, when it has the same key (nulls equal, as a group-by has them).
pub fn orders(conv: LazyFrame, p: &Params) -> LazyFrame {
    let same_key = [hit::OFFER_ID, hit::EVENT, hit::ORDER_ID]
        .map(|c| col(c).eq_missing(col(c).shift(lit(1))))
        .into_iter()
        .reduce(|a, b| a.and(b))
        .unwrap_or(lit(false));
    let prev_ts = when(same_key).then(ts_us(hit::TS).shift(lit(1))).otherwise(lit(NULL).cast(DataType::Int64));
    conv.sort(
        [hit::OFFER_ID, hit::EVENT, hit::ORDER_ID, hit::TS, hit::HIT_ID],
        SortMultipleOptions::default().with_maintain_order(true),
    )
    .with_column(
        col(hit::ORDER_ID)
            .is_not_null()
            .and(col(hit::ORDER_ID).neq(lit("")))
            .and(prev_ts.clone().is_not_null())
            .and(prev_ts.gt_eq(ts_us(hit::TS) - lit(p.window.micros())))
            .fill_null(lit(false))
            .alias(work::DUPLICATE),
    )
}
