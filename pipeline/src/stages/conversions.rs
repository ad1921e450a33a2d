//! Conversions (SPEC §4.3): `pixel` and `postback` hits, with their join keys normalized and
//! the order-duplicate flag set.

use lake::schema::{hit, HitKind, DEFAULT_EVENT};
use polars::prelude::*;

use super::{dedup, non_empty, work};
use crate::params::Params;

/// `event`, with null or empty read as the default `purchase`.
fn event_or_default() -> Expr {
    when(col(hit::EVENT).is_null().or(col(hit::EVENT).eq(lit(""))))
        .then(lit(DEFAULT_EVENT))
        .otherwise(col(hit::EVENT))
        .alias(hit::EVENT)
}

fn is_conversion() -> Expr {
    col(hit::KIND).eq(lit(HitKind::Pixel.as_str())).or(col(hit::KIND).eq(lit(HitKind::Postback.as_str())))
}

fn normalizing() -> [Expr; 4] {
    [
        // An empty event is the default too; currencies are upper case (another writer
        // than the collector may have put `eur` in the lake).
        event_or_default(),
        col(hit::CURRENCY).str().to_uppercase().alias(hit::CURRENCY),
        non_empty(hit::CLICK_ID).str().to_lowercase().alias(work::CLICK_KEY),
        non_empty(hit::VISITOR_ID).alias(work::VISITOR_KEY),
    ]
}

/// The conversions (`pixel` and `postback` hits) `keep` selects and those sharing an order
/// key `(offer_id, event, order_id)` with one of them or with a row of `keys` (a frame of
/// those three columns), deduplicated by `hit_id`; `event` defaults to `purchase` (null or
/// empty), `currency` upper case; adds [`work::CLICK_KEY`], [`work::VISITOR_KEY`] and
/// [`work::DUPLICATE`]. `hits` must reach `W` before every kept conversion, so every
/// earlier twin is present. A duplicate flag depends only on conversions of its key, all
/// of which are kept, so the other conversions of `hits` need not be sorted. Copies of a
/// hit share its kind and key, so filtering and normalizing before deduplicating changes
/// nothing.
pub fn prepare_selected(hits: LazyFrame, keep: Expr, keys: LazyFrame, p: &Params) -> LazyFrame {
    const KEYED: &str = "__keyed";
    let conv = hits.filter(is_conversion()).with_columns(normalizing());
    let key = [hit::OFFER_ID, hit::EVENT, hit::ORDER_ID];
    let on = key.map(col);
    let wanted = concat(
        [conv.clone().filter(keep.clone()).select(on.clone()), keys.select(on.clone())],
        UnionArgs::default(),
    )
    .unwrap_or_else(|_| conv.clone().filter(lit(false)).select(on.clone()))
    .filter(col(hit::ORDER_ID).is_not_null())
    .unique(None, UniqueKeepStrategy::Any)
    .with_column(lit(true).alias(KEYED));
    let kept = conv
        .join(wanted, on.clone(), on, JoinArgs::new(JoinType::Left))
        .filter(keep.or(col(KEYED).is_not_null()))
        .drop(by_name([KEYED], true, false));
    dedup::orders(dedup::hits(kept, p), p)
}

/// Adjustment hits (SPEC §7), deduplicated by `hit_id`: `event` defaults to `purchase`,
/// `currency` upper case (kept null when not sent), empty `order_id` and `adjustment_id`
/// read as null.
pub fn adjustments(hits: LazyFrame, p: &Params) -> LazyFrame {
    dedup::hits(hits.filter(col(hit::KIND).eq(lit(HitKind::Adjustment.as_str()))), p).with_columns([
        event_or_default(),
        non_empty(hit::CURRENCY).str().to_uppercase().alias(hit::CURRENCY),
        non_empty(hit::ORDER_ID).alias(hit::ORDER_ID),
        non_empty(hit::ADJUSTMENT_ID).alias(hit::ADJUSTMENT_ID),
        col(hit::ACTION).str().to_lowercase().alias(hit::ACTION),
    ])
}
