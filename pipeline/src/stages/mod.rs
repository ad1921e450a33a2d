//! The stages of attribution, each a pure `LazyFrame` → `LazyFrame` transformation over
//! the hit columns of `lake::schema` (SPEC §4–5). Nothing here reads, collects or writes.
//!
//! Order: split by kind → conversions: [`conversions::prepare_selected`] (which applies
//! [`dedup::hits`] and [`dedup::orders`]); clicks: [`bots::flag`] for the clicks table
//! (which counts distinct `hit_id`s), and [`sessions::key_filter`] then
//! [`sessions::candidates`] and [`sessions::find`] for attribution →
//! [`attribution::assign`] → [`reports`].

pub mod attribution;
pub mod bots;
pub mod conversions;
pub mod dedup;
pub mod reports;
pub mod sessions;

use lake::schema::hit;
use polars::prelude::*;

use crate::params::Params;

/// Working columns, never written.
pub mod work {
    /// Conversion is a duplicate of an earlier one (SPEC §4.3).
    pub const DUPLICATE: &str = "__duplicate";
    /// Click is from a bot (SPEC §4.2).
    pub const IS_BOT: &str = "__is_bot";
    /// `click_id` lower-cased, null when empty: the join key of the click-id path.
    pub const CLICK_KEY: &str = "__click_key";
    /// `visitor_id`, null when empty: the join key of the visitor path.
    pub const VISITOR_KEY: &str = "__visitor_key";
    /// `ts` as µs since the epoch.
    pub const TS_US: &str = "__ts_us";
    /// The session found for a conversion: the click's columns.
    pub const S_CLICK_ID: &str = "__s_click_id";
    pub const S_OFFER_ID: &str = "__s_offer_id";
    pub const S_MEMBER_ID: &str = "__s_member_id";
    pub const S_LINK_CODE: &str = "__s_link_code";
    pub const S_CLICK_TS: &str = "__s_click_ts";
    pub const S_CLICK_HIT: &str = "__s_click_hit";
    /// A click shares its `click_id` with some conversion.
    pub const BY_CLICK: &str = "__by_click";
    /// A click shares its (offer, visitor) with some conversion without a `click_id`.
    pub const BY_VISITOR: &str = "__by_visitor";
    /// SPEC §8: the conversion's coupon upper-cased (null when empty), the registry's
    /// coupon it names (member, validity as days since the epoch), and its offer's
    /// settings.
    pub const COUPON_KEY: &str = "__coupon_key";
    pub const COUPON_MEMBER: &str = "__coupon_member";
    pub const COUPON_FROM: &str = "__coupon_from";
    pub const COUPON_TO: &str = "__coupon_to";
    pub const MIN_LAG_S: &str = "__min_lag_s";
    pub const COUPON_FIRST: &str = "__coupon_first";
}

/// `ts` as µs since the epoch.
pub(crate) fn ts_us(column: &str) -> Expr {
    col(column).cast(DataType::Int64)
}

/// A string column with empty strings read as null.
pub(crate) fn non_empty(column: &str) -> Expr {
    when(col(column).eq(lit(""))).then(lit(NULL).cast(DataType::String)).otherwise(col(column))
}

/// The report date of `ts` in the run's zone, as a polars `Date`.
pub(crate) fn local_date(p: &Params) -> Expr {
    let ts = col(hit::TS);
    let local = if p.tz == chrono_tz::Tz::UTC {
        ts
    } else {
        // The zone was parsed by chrono-tz, which polars uses too, so this cannot fail.
        let tz = TimeZone::opt_try_new(Some(p.tz_name())).ok().flatten().unwrap_or(TimeZone::UTC);
        ts.dt().convert_time_zone(tz)
    };
    local.dt().date().alias(lake::schema::report::DATE)
}

/// Keeps rows whose `ts` (µs) is in `[lo, hi)`.
pub(crate) fn ts_in(lo: i64, hi: i64) -> Expr {
    ts_us(hit::TS).gt_eq(lit(lo)).and(ts_us(hit::TS).lt(lit(hi)))
}
