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
/// by key then `(ts, hit_id)`, looking one row back within the key is exact.
pub fn orders(conv: LazyFrame, p: &Params) -> LazyFrame {
    let key = [col(hit::OFFER_ID), col(hit::EVENT), col(hit::ORDER_ID)];
    let prev_ts = ts_us(hit::TS).shift(lit(1)).over(key).unwrap_or_else(|_| lit(NULL));
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
