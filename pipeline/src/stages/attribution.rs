//! Statuses and the `attributions` table (SPEC §4.4–5): one row per conversion hit.

use lake::schema::{hit, report, status, via};
use polars::prelude::*;

use super::{local_date, non_empty, ts_us, work};
use crate::params::Params;

/// A lower-case hyphenated UUID of version 7 (RFC 9562 variant).
const UUID_V7: &str = r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$";

/// The Unix time in µs embedded in a UUIDv7 `click_id` (its first 48 bits are
/// milliseconds), or null when the `click_id` is not a UUIDv7.
pub fn uuid_v7_micros() -> Expr {
    let key = col(work::CLICK_KEY);
    let hex = concat_str([key.clone().str().slice(lit(0), lit(8)), key.clone().str().slice(lit(9), lit(4))], "", false);
    when(key.str().contains(lit(UUID_V7), true).fill_null(lit(false)))
        .then(hex.str().to_integer(lit(16), Some(DataType::Int64), false) * lit(1000i64))
        .otherwise(lit(NULL).cast(DataType::Int64))
}

/// `floor(µs / 10⁶)` for a non-negative µs count, exactly: the remainder is taken off
/// first, so the division is exact whether polars divides integers or floats.
fn whole_seconds(micros: Expr) -> Expr {
    let rem = micros.clone() % lit(1_000_000i64);
    ((micros - rem) / lit(1_000_000i64)).cast(DataType::Int64)
}

/// Joins each conversion to its session (from [`super::sessions::find`]) and assigns its
/// status (SPEC §4.4–5, then §8: coupons and the fraud floor); returns the `attributions`
/// columns in file order. `offers` and `coupons` are [`crate::rules::Rules::attribution_frames`].
pub fn assign(conv: LazyFrame, sessions: LazyFrame, p: &Params, offers: &DataFrame, coupons: &DataFrame) -> LazyFrame {
    let w = p.window.micros();
    let ts = ts_us(hit::TS);
    let found = col(work::S_CLICK_TS).is_not_null();
    let embedded = uuid_v7_micros();
    let outside = embedded.clone().lt(ts.clone() - lit(w)).or(embedded.gt(ts.clone())).fill_null(lit(false));
    // §4: the session's verdict.
    let by_session = when(col(work::DUPLICATE))
        .then(lit(status::DUPLICATE))
        .when(col(work::CLICK_KEY).is_not_null())
        .then(
            when(found.clone().and(col(work::S_OFFER_ID).eq(col(hit::OFFER_ID))))
                .then(lit(status::ATTRIBUTED))
                .when(found.clone())
                .then(lit(status::OFFER_MISMATCH))
                .when(outside)
                .then(lit(status::OUTSIDE_WINDOW))
                .otherwise(lit(status::UNKNOWN_CLICK)),
        )
        .when(found.clone())
        .then(lit(status::ATTRIBUTED))
        .otherwise(lit(status::NO_CLICK));
    const SESSION: &str = "__session_status";
    let session = col(SESSION);
    // §8: a valid coupon is listed for the offer and the conversion's date is in its days.
    let day = local_date(p).cast(DataType::Int32);
    let valid = col(work::COUPON_MEMBER)
        .is_not_null()
        .and(col(work::COUPON_FROM).is_null().or(col(work::COUPON_FROM).lt_eq(day.clone())))
        .and(col(work::COUPON_TO).is_null().or(day.lt_eq(col(work::COUPON_TO))))
        .fill_null(lit(false));
    let unattributed = session
        .clone()
        .eq(lit(status::UNKNOWN_CLICK))
        .or(session.clone().eq(lit(status::OUTSIDE_WINDOW)))
        .or(session.clone().eq(lit(status::OFFER_MISMATCH)))
        .or(session.clone().eq(lit(status::NO_CLICK)));
    let coupon_first = col(work::COUPON_FIRST).fill_null(lit(false));
    let not_dup = col(work::DUPLICATE).not();
    let by_coupon = valid.and(not_dup).and(coupon_first.or(unattributed));
    const BY_COUPON: &str = "__by_coupon";
    const KEPT: &str = "__session_kept";
    const FAST: &str = "__too_fast";
    let kept = col(KEPT);
    let lag = whole_seconds(ts - col(work::S_CLICK_TS));
    let too_fast = kept.clone().and(lag.clone().lt(col(work::MIN_LAG_S).fill_null(lit(0i64))));
    let st = when(col(BY_COUPON)).then(lit(status::ATTRIBUTED)).when(col(FAST)).then(lit(status::TOO_FAST)).otherwise(session.clone());
    let if_kept = |e: Expr| when(kept.clone()).then(e).otherwise(lit(NULL));
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let via = when(col(BY_COUPON))
        .then(lit(via::COUPON))
        .when(kept.clone().and(col(FAST).not()))
        .then(when(col(work::CLICK_KEY).is_not_null()).then(lit(via::CLICK)).otherwise(lit(via::VISITOR)))
        .otherwise(lit(NULL).cast(DataType::String));
    conv.join(sessions, [col(hit::HIT_ID)], [col(hit::HIT_ID)], JoinArgs::new(JoinType::Left))
        .with_column(non_empty(hit::COUPON).str().to_uppercase().alias(work::COUPON_KEY))
        .join(offers.clone().lazy(), [col(hit::OFFER_ID)], [col(hit::OFFER_ID)], JoinArgs::new(JoinType::Left))
        .join(
            coupons.clone().lazy(),
            [col(hit::OFFER_ID), col(work::COUPON_KEY)],
            [col(hit::OFFER_ID), col(work::COUPON_KEY)],
            JoinArgs::new(JoinType::Left),
        )
        .with_column(by_session.alias(SESSION))
        .with_column(by_coupon.alias(BY_COUPON))
        .with_column(col(BY_COUPON).not().and(session.clone().eq(lit(status::ATTRIBUTED))).alias(KEPT))
        .with_column(too_fast.alias(FAST))
        .with_column(st.alias(report::STATUS))
        .select([
            col(hit::HIT_ID),
            col(hit::TS),
            local_date(p),
            col(hit::KIND),
            col(hit::OFFER_ID),
            col(hit::EVENT),
            col(hit::ORDER_ID),
            col(hit::AMOUNT_MICROS),
            col(hit::CURRENCY),
            // The click_id sent, or the session's when it was found through the visitor.
            when(col(hit::CLICK_ID).is_null().or(col(hit::CLICK_ID).eq(lit(""))).and(kept.clone()))
                .then(col(work::S_CLICK_ID))
                .otherwise(col(hit::CLICK_ID))
                .alias(hit::CLICK_ID),
            col(hit::VISITOR_ID),
            col(report::STATUS),
            when(col(BY_COUPON))
                .then(col(work::COUPON_MEMBER))
                .otherwise(if_kept(col(work::S_MEMBER_ID)))
                .cast(DataType::String)
                .alias(hit::MEMBER_ID),
            if_kept(col(work::S_LINK_CODE)).cast(DataType::String).alias(hit::LINK_CODE),
            if_kept(col(work::S_CLICK_TS)).cast(DataType::Int64).cast(utc).alias(report::CLICK_TS),
            if_kept(lag).cast(DataType::Int64).alias(report::LAG_SECONDS),
            col(work::COUPON_KEY).alias(hit::COUPON),
            via.alias(report::VIA),
        ])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v7_time() {
        let ms: i64 = 1_767_225_600_123; // 2026-01-01T00:00:00.123Z
        let u = uuid::Builder::from_unix_timestamp_millis(ms as u64, &[7; 10]).into_uuid().to_string();
        let df = df!(work::CLICK_KEY => [Some(u.as_str()), Some("0190c3a4-0000-4000-8000-000000000000"), Some("nope"), None]).unwrap();
        let out = df.lazy().select([uuid_v7_micros().alias("t")]).collect().unwrap();
        let t: Vec<Option<i64>> = out.column("t").unwrap().i64().unwrap().iter().collect();
        assert_eq!(t, vec![Some(ms * 1000), None, None, None]);
    }
}
