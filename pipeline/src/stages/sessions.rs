//! Sessions (SPEC §4.4): for each conversion that is not a duplicate, the click it belongs
//! to, if any.
//!
//! - click-id path: the click whose `click_id` equals the conversion's (compared
//!   case-insensitively, as UUIDs are), with `ts` in `[conv.ts − W, conv.ts]`;
//! - visitor path (no `click_id`): the visitor's last click on the conversion's offer in
//!   that interval, the greater `click_id` winning a same-microsecond tie.
//!
//! Both ends are inclusive to the microsecond. Clicks are first cut down to those sharing a
//! key with some conversion (joins against small key tables, which stream), so the session joins work on small
//! frames whatever the click volume.

use std::hash::BuildHasher;

use lake::schema::{hit, HitKind};
use polars::prelude::*;

use super::{ts_us, work};
use crate::params::Params;

/// Columns of the frame [`find`] returns, besides the conversion's `hit_id`.
pub const SESSION_COLUMNS: [&str; 5] = [work::S_CLICK_ID, work::S_OFFER_ID, work::S_MEMBER_ID, work::S_LINK_CODE, work::S_CLICK_TS];

/// The conversions that look for a session, with the columns the joins need.
fn live(conv: LazyFrame) -> LazyFrame {
    conv.filter(col(work::DUPLICATE).not()).select([
        col(hit::HIT_ID),
        col(hit::OFFER_ID),
        col(work::CLICK_KEY),
        col(work::VISITOR_KEY),
        ts_us(hit::TS).alias(work::TS_US),
    ])
}

fn by_click(live: LazyFrame) -> LazyFrame {
    live.filter(col(work::CLICK_KEY).is_not_null())
}

fn by_visitor(live: LazyFrame) -> LazyFrame {
    live.filter(col(work::CLICK_KEY).is_null().and(col(work::VISITOR_KEY).is_not_null()))
}

/// The clicks (any other kind of hit is dropped) that share a key with some conversion of
/// `conv` (the output of [`super::conversions::prepare_selected`]): its `click_id`, or its (offer,
/// visitor) when it has no `click_id`. One pass over `hits`: two left joins against small
/// key tables (unique keys, so no row repeats), flagged [`work::BY_CLICK`] and
/// [`work::BY_VISITOR`], deduplicated by the click's `hit_id`.
pub fn candidates(hits: LazyFrame, conv: LazyFrame, _p: &Params) -> LazyFrame {
    let clicks = hits.filter(col(hit::KIND).eq(lit(HitKind::Click.as_str()))).select([
        col(hit::HIT_ID).alias(work::S_CLICK_HIT),
        col(hit::CLICK_ID).alias(work::S_CLICK_ID),
        col(hit::CLICK_ID).str().to_lowercase().alias(work::CLICK_KEY),
        col(hit::OFFER_ID).alias(work::S_OFFER_ID),
        col(hit::VISITOR_ID).alias(work::VISITOR_KEY),
        col(hit::MEMBER_ID).alias(work::S_MEMBER_ID),
        col(hit::LINK_CODE).alias(work::S_LINK_CODE),
        ts_us(hit::TS).alias(work::S_CLICK_TS),
    ]);
    let live = live(conv);
    let click_keys = by_click(live.clone())
        .select([col(work::CLICK_KEY)])
        .unique(None, UniqueKeepStrategy::Any)
        .with_column(lit(true).alias(work::BY_CLICK));
    let visitor_keys = by_visitor(live)
        .select([col(hit::OFFER_ID).alias(work::S_OFFER_ID), col(work::VISITOR_KEY)])
        .unique(None, UniqueKeepStrategy::Any)
        .with_column(lit(true).alias(work::BY_VISITOR));
    let on = [col(work::S_OFFER_ID), col(work::VISITOR_KEY)];
    clicks
        .join(click_keys, [col(work::CLICK_KEY)], [col(work::CLICK_KEY)], JoinArgs::new(JoinType::Left))
        .join(visitor_keys, on.clone(), on, JoinArgs::new(JoinType::Left))
        .filter(col(work::BY_CLICK).is_not_null().or(col(work::BY_VISITOR).is_not_null()))
        .unique(Some(by_name([work::S_CLICK_HIT], true, false)), UniqueKeepStrategy::Any)
}

/// A filter on hits that keeps every click [`candidates`] can keep for `conv` (a collected
/// output of [`super::conversions::prepare_selected`]), and few others: its lower-cased
/// `click_id` is some live conversion's click key, or its (`offer_id`, `visitor_id`) is
/// the offer and visitor of some live conversion without a click id. Tested on the raw
/// columns, so a scan decodes the other columns only for the rows it keeps: about one
/// click in twenty on a lake where one click in twenty converts.
///
/// The keys are held as 64-bit hashes, not strings: a compact set that is probed without
/// comparing strings. A hash collision can only keep a click that [`candidates`]'s exact
/// joins then drop, so the filter keeps a superset of what they keep, never less. The
/// visitor test is on the pair, not the visitor alone: a visitor who converted on one
/// offer without a click id clicks other offers too, and on `pipeline gen` lakes the
/// visitor alone kept about three times the clicks the pair keeps.
pub fn key_filter(conv: &DataFrame) -> PolarsResult<Expr> {
    let live = live(conv.clone().lazy()).collect()?;
    let ck = live.column(work::CLICK_KEY)?.str()?;
    let vk = live.column(work::VISITOR_KEY)?.str()?;
    let offers = live.column(hit::OFFER_ID)?.str()?;
    // One hasher state for building and probing (a fixed seed: the sets never leave the
    // process, and the same state must hash both sides).
    let state = PlFixedStateQuality::with_seed(0x636c_6963_6b74_7261);
    let mut click_keys: PlHashSet<u64> = PlHashSet::new();
    let mut visits: PlHashSet<u64> = PlHashSet::new();
    for ((c, v), o) in ck.iter().zip(vk.iter()).zip(offers.iter()) {
        match (c, v, o) {
            (Some(c), _, _) => {
                click_keys.insert(state.hash_one(c));
            }
            // A null offer matches nothing in the join (nulls are not equal there).
            (None, Some(v), Some(o)) => {
                visits.insert(state.hash_one((o, v)));
            }
            _ => {}
        }
    }
    // One pass over the three columns: the pair is looked up only for a click whose id is
    // no key, and not at all when no conversion goes by visitor.
    Ok(col(hit::CLICK_ID).map_many(
        move |cols: &mut [Column]| {
            let ids = cols[0].as_materialized_series().str()?;
            let visitor_ids = cols[1].as_materialized_series().str()?;
            let offer_ids = cols[2].as_materialized_series().str()?;
            let is_key = |id: &str| {
                // What `str().to_lowercase()` gives, without a copy when nothing changes.
                if id.is_ascii() && !id.bytes().any(|b| b.is_ascii_uppercase()) {
                    click_keys.contains(&state.hash_one(id))
                } else {
                    click_keys.contains(&state.hash_one(id.to_lowercase().as_str()))
                }
            };
            let is_visit = |offer: Option<&str>, visitor: Option<&str>| match (offer, visitor) {
                (Some(o), Some(v)) => visits.contains(&state.hash_one((o, v))),
                _ => false,
            };
            let keep: NoNull<BooleanChunked> = ids
                .iter()
                .zip(visitor_ids.iter())
                .zip(offer_ids.iter())
                .map(|((id, visitor), offer)| id.is_some_and(is_key) || (!visits.is_empty() && is_visit(offer, visitor)))
                .collect();
            Ok(keep.into_inner().with_name(cols[0].name().clone()).into_series().into_column())
        },
        &[col(hit::VISITOR_ID), col(hit::OFFER_ID)],
        |_, fields| Ok(Field::new(fields[0].name().clone(), DataType::Boolean)),
    ))
}

/// `candidates`: the output of [`candidates`]; `conv`: of [`super::conversions::prepare_selected`].
/// Returns one row per conversion with a session: `hit_id` and [`SESSION_COLUMNS`].
pub fn find(candidates: LazyFrame, conv: LazyFrame, p: &Params) -> LazyFrame {
    let w = p.window.micros();
    let live = live(conv);
    let in_window = col(work::S_CLICK_TS)
        .gt_eq(col(work::TS_US) - lit(w))
        .and(col(work::S_CLICK_TS).lt_eq(col(work::TS_US)));

    // Click-id path.
    let click_path = pick_latest(
        by_click(live.clone())
            .select([col(hit::HIT_ID), col(work::CLICK_KEY), col(work::TS_US)])
            .inner_join(
                candidates.clone().filter(col(work::BY_CLICK).is_not_null()).drop(by_name([work::VISITOR_KEY], true, false)),
                col(work::CLICK_KEY),
                col(work::CLICK_KEY),
            )
            .filter(in_window.clone()),
    );

    // Visitor path.
    let on = [col(work::S_OFFER_ID), col(work::VISITOR_KEY)];
    let visitor_path = pick_latest(
        by_visitor(live)
            .select([col(hit::HIT_ID), col(hit::OFFER_ID).alias(work::S_OFFER_ID), col(work::VISITOR_KEY), col(work::TS_US)])
            .join(
                candidates.filter(col(work::BY_VISITOR).is_not_null()).drop(by_name([work::CLICK_KEY], true, false)),
                on.clone(),
                on,
                JoinArgs::new(JoinType::Inner),
            )
            .filter(in_window),
    );

    concat([click_path, visitor_path], UnionArgs::default()).unwrap_or_else(|_| empty_sessions())
}

/// Per conversion, the latest click; on a same-microsecond tie the greater `click_id`
/// (then the greater click `hit_id`, so the pick is deterministic even for a repeated
/// `click_id`).
fn pick_latest(matches: LazyFrame) -> LazyFrame {
    matches
        .sort(
            [hit::HIT_ID, work::S_CLICK_TS, work::S_CLICK_ID, work::S_CLICK_HIT],
            SortMultipleOptions::default()
                .with_order_descending_multi([false, true, true, true])
                .with_nulls_last(true),
        )
        .unique_stable(Some(by_name([hit::HIT_ID], true, false)), UniqueKeepStrategy::First)
        .select(
            std::iter::once(col(hit::HIT_ID))
                .chain(SESSION_COLUMNS.iter().map(|c| col(*c)))
                .collect::<Vec<_>>(),
        )
}

fn empty_sessions() -> LazyFrame {
    let mut schema = Schema::default();
    schema.insert(hit::HIT_ID.into(), DataType::String);
    for c in SESSION_COLUMNS {
        let dt = if c == work::S_CLICK_TS { DataType::Int64 } else { DataType::String };
        schema.insert(c.into(), dt);
    }
    DataFrame::empty_with_schema(&schema).lazy()
}
