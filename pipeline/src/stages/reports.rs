//! The aggregate report tables (SPEC §5): `clicks` from click hits, `conversions` and
//! `revenue` from `attributions`. Counts are int64; money is summed as int64 micros.

use lake::schema::{adjustment, hit, report, status, HitKind};
use polars::prelude::*;

use super::{local_date, work};
use crate::params::Params;

/// `clicks`: per date × offer × member, people's clicks, their distinct visitors, and bot
/// clicks. Expects hits flagged by [`super::bots::flag`], deduplicated or not: clicks are
/// counted as distinct `hit_id`s (SPEC §4.1), which is what counting the rows of
/// deduplicated hits gives, since copies of a hit are identical (same date, offer, member
/// and user agent, so the same group and flag), without holding the rows to deduplicate.
pub fn clicks(hits: LazyFrame, p: &Params) -> LazyFrame {
    let people = col(work::IS_BOT).not();
    hits.filter(col(hit::KIND).eq(lit(HitKind::Click.as_str())))
        .with_column(local_date(p))
        .group_by([col(report::DATE), col(hit::OFFER_ID), col(hit::MEMBER_ID)])
        .agg([
            col(hit::HIT_ID).filter(people.clone()).n_unique().cast(DataType::Int64).alias(report::CLICKS),
            col(hit::VISITOR_ID)
                .filter(people.and(col(hit::VISITOR_ID).is_not_null()))
                .n_unique()
                .cast(DataType::Int64)
                .alias(report::UNIQUE_CLICKS),
            col(hit::HIT_ID).filter(col(work::IS_BOT)).n_unique().cast(DataType::Int64).alias(report::BOT_CLICKS),
        ])
        .sort([report::DATE, hit::OFFER_ID, hit::MEMBER_ID], SortMultipleOptions::default().with_nulls_last(true))
}

fn attributed(attributions: LazyFrame) -> LazyFrame {
    attributions.filter(col(report::STATUS).eq(lit(status::ATTRIBUTED)))
}

/// `conversions`: attributed conversions per date × offer × member × event.
pub fn conversions(attributions: LazyFrame, _p: &Params) -> LazyFrame {
    let keys = [report::DATE, hit::OFFER_ID, hit::MEMBER_ID, hit::EVENT];
    attributed(attributions)
        .group_by(keys.map(col))
        .agg([len().cast(DataType::Int64).alias(report::CONVERSIONS)])
        .sort(keys, SortMultipleOptions::default().with_nulls_last(true))
}

/// `revenue`: attributed conversions with an amount, per date × offer × member × currency;
/// `refunded_micros` and `net_revenue_micros` over those not rejected (SPEC §7). Expects
/// settled attributions ([`crate::settle::settle`]).
pub fn revenue(attributions: LazyFrame, _p: &Params) -> LazyFrame {
    let kept = col(report::ADJUSTED_STATE).neq(lit(adjustment::REJECTED));
    let keys = [report::DATE, hit::OFFER_ID, hit::MEMBER_ID, hit::CURRENCY];
    attributed(attributions)
        .filter(col(hit::AMOUNT_MICROS).is_not_null())
        .group_by(keys.map(col))
        .agg([
            len().cast(DataType::Int64).alias(report::ORDERS),
            col(hit::AMOUNT_MICROS).sum().cast(DataType::Int64).alias(report::REVENUE_MICROS),
            col(report::REFUNDED_MICROS).filter(kept.clone()).sum().cast(DataType::Int64).alias(report::REFUNDED_MICROS),
            col(report::NET_AMOUNT_MICROS).filter(kept).sum().cast(DataType::Int64).alias(report::NET_REVENUE_MICROS),
        ])
        .sort(keys, SortMultipleOptions::default().with_nulls_last(true))
}
