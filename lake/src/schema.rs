//! Column names and Arrow schemas of hits (SPEC §2) and of the report tables (SPEC §5).
//! Readers select columns by these names, never by position.

use std::sync::{Arc, OnceLock};

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Hit columns.
pub mod hit {
    pub const HIT_ID: &str = "hit_id";
    pub const KIND: &str = "kind";
    pub const TS: &str = "ts";
    pub const OFFER_ID: &str = "offer_id";
    pub const MEMBER_ID: &str = "member_id";
    pub const LINK_CODE: &str = "link_code";
    pub const CLICK_ID: &str = "click_id";
    pub const VISITOR_ID: &str = "visitor_id";
    pub const EVENT: &str = "event";
    pub const ORDER_ID: &str = "order_id";
    pub const AMOUNT_MICROS: &str = "amount_micros";
    pub const CURRENCY: &str = "currency";
    pub const USER_AGENT: &str = "user_agent";
    pub const REFERER: &str = "referer";
    pub const IP_HASH: &str = "ip_hash";
    pub const PARAMS: &str = "params";
    /// `refund`, `reject`, `restore` (adjustments, SPEC §7).
    pub const ACTION: &str = "action";
    /// The brand's id of an adjustment, when sent (SPEC §7).
    pub const ADJUSTMENT_ID: &str = "adjustment_id";
    /// The coupon code sent with a conversion, upper-cased (SPEC §8).
    pub const COUPON: &str = "coupon";

    /// Every hit column, in the order the collector writes them. Files written before the
    /// last three existed read them as null.
    pub const ALL: [&str; 19] = [
        HIT_ID, KIND, TS, OFFER_ID, MEMBER_ID, LINK_CODE, CLICK_ID, VISITOR_ID, EVENT, ORDER_ID,
        AMOUNT_MICROS, CURRENCY, USER_AGENT, REFERER, IP_HASH, PARAMS, ACTION, ADJUSTMENT_ID, COUPON,
    ];
}

/// Report columns (SPEC §5) shared by several tables.
pub mod report {
    pub const DATE: &str = "date";
    pub const CLICKS: &str = "clicks";
    pub const UNIQUE_CLICKS: &str = "unique_clicks";
    pub const BOT_CLICKS: &str = "bot_clicks";
    pub const CONVERSIONS: &str = "conversions";
    pub const ORDERS: &str = "orders";
    pub const REVENUE_MICROS: &str = "revenue_micros";
    pub const STATUS: &str = "status";
    pub const CLICK_TS: &str = "click_ts";
    pub const LAG_SECONDS: &str = "lag_seconds";
    // SPEC §7–8: added to `attributions`.
    pub const VIA: &str = "via";
    pub const ADJUSTED_STATE: &str = "adjusted_state";
    pub const REFUNDED_MICROS: &str = "refunded_micros";
    pub const NET_AMOUNT_MICROS: &str = "net_amount_micros";
    pub const LOCK_TS: &str = "lock_ts";
    pub const COMMISSION_MICROS: &str = "commission_micros";
    // Added to `revenue`.
    pub const NET_REVENUE_MICROS: &str = "net_revenue_micros";
    // `earnings`.
    pub const GROSS_MICROS: &str = "gross_micros";
    pub const NET_MICROS: &str = "net_micros";
    pub const CLICKS_PAID: &str = "clicks_paid";
    pub const CONVERSION_COMMISSION_MICROS: &str = "conversion_commission_micros";
    pub const CLICK_COMMISSION_MICROS: &str = "click_commission_micros";
    // `adjustments`.
    pub const TARGET_HIT_ID: &str = "target_hit_id";
}

/// The `kind` values of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HitKind {
    Click,
    Pixel,
    Postback,
    /// A refund, rejection or restore of an earlier conversion (SPEC §7).
    Adjustment,
}

impl HitKind {
    pub const ALL: [HitKind; 4] = [HitKind::Click, HitKind::Pixel, HitKind::Postback, HitKind::Adjustment];
    pub fn as_str(self) -> &'static str {
        match self {
            HitKind::Click => "click",
            HitKind::Pixel => "pixel",
            HitKind::Postback => "postback",
            HitKind::Adjustment => "adjustment",
        }
    }
}

/// Adjustments (SPEC §7): actions, their statuses in the `adjustments` table, and the
/// `adjusted_state` of a conversion in `attributions`.
pub mod adjustment {
    pub const REFUND: &str = "refund";
    pub const REJECT: &str = "reject";
    pub const RESTORE: &str = "restore";
    pub const ACTIONS: [&str; 3] = [REFUND, REJECT, RESTORE];

    pub const APPLIED: &str = "applied";
    pub const LATE: &str = "late";
    pub const NO_CONVERSION: &str = "no_conversion";
    pub const CURRENCY_MISMATCH: &str = "currency_mismatch";
    pub const DUPLICATE: &str = "duplicate";
    pub const STATUSES: [&str; 5] = [APPLIED, LATE, NO_CONVERSION, CURRENCY_MISMATCH, DUPLICATE];

    pub const VALID: &str = "valid";
    pub const PARTIALLY_REFUNDED: &str = "partially_refunded";
    pub const REFUNDED: &str = "refunded";
    pub const REJECTED: &str = "rejected";
    pub const STATES: [&str; 4] = [VALID, PARTIALLY_REFUNDED, REFUNDED, REJECTED];

    /// Longest accepted `adjustment_id`.
    pub const MAX_ADJUSTMENT_ID_LEN: usize = 128;

    /// The action named `text` (lower case), if it is one.
    pub fn parse_action(text: &str) -> Option<&'static str> {
        ACTIONS.iter().copied().find(|a| *a == text)
    }

    /// `adjustment_id` is at most [`MAX_ADJUSTMENT_ID_LEN`] characters without control
    /// characters.
    pub fn is_valid_adjustment_id(id: &str) -> bool {
        id.chars().count() <= MAX_ADJUSTMENT_ID_LEN && !id.chars().any(char::is_control)
    }
}

/// How a conversion was attributed (`via`, SPEC §7–8).
pub mod via {
    pub const CLICK: &str = "click";
    pub const VISITOR: &str = "visitor";
    pub const COUPON: &str = "coupon";
}

/// The event name of per-click commission rules (SPEC §7).
pub const CLICK_EVENT: &str = "click";

/// A coupon code is `[A-Za-z0-9_-]{1,64}`; it is stored and compared upper-cased.
pub fn normalize_coupon(code: &str) -> Option<String> {
    ((1..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        .then(|| code.to_ascii_uppercase())
}

/// Attribution statuses (SPEC §5).
pub mod status {
    pub const ATTRIBUTED: &str = "attributed";
    pub const DUPLICATE: &str = "duplicate";
    pub const UNKNOWN_CLICK: &str = "unknown_click";
    pub const OFFER_MISMATCH: &str = "offer_mismatch";
    pub const OUTSIDE_WINDOW: &str = "outside_window";
    pub const NO_CLICK: &str = "no_click";
    /// Attributed through a click faster than the offer's `min_lag_seconds` (SPEC §8).
    pub const TOO_FAST: &str = "too_fast";
    /// The statuses of SPEC §4–5.
    pub const ALL: [&str; 6] = [ATTRIBUTED, DUPLICATE, UNKNOWN_CLICK, OFFER_MISMATCH, OUTSIDE_WINDOW, NO_CLICK];
}

/// The conversion event used when none is sent.
pub const DEFAULT_EVENT: &str = "purchase";
/// Longest accepted `order_id`.
pub const MAX_ORDER_ID_LEN: usize = 128;

/// `event` is `[a-z0-9_]{1,32}`.
pub fn is_valid_event(event: &str) -> bool {
    (1..=32).contains(&event.len())
        && event.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `order_id` is at most 128 characters of printable text (no control characters).
pub fn is_valid_order_id(order_id: &str) -> bool {
    order_id.chars().count() <= MAX_ORDER_ID_LEN && !order_id.chars().any(char::is_control)
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// The Arrow timestamp type of `ts`: microseconds, UTC.
pub fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of every hits file (SPEC §2).
pub fn hit_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use hit::*;
            Arc::new(Schema::new(vec![
                utf8(HIT_ID, false),
                utf8(KIND, false),
                Field::new(TS, ts_type(), false),
                utf8(OFFER_ID, false),
                utf8(MEMBER_ID, true),
                utf8(LINK_CODE, true),
                utf8(CLICK_ID, true),
                utf8(VISITOR_ID, true),
                utf8(EVENT, true),
                utf8(ORDER_ID, true),
                Field::new(AMOUNT_MICROS, DataType::Int64, true),
                utf8(CURRENCY, true),
                utf8(USER_AGENT, true),
                utf8(REFERER, true),
                utf8(IP_HASH, true),
                utf8(PARAMS, true),
                utf8(ACTION, true),
                utf8(ADJUSTMENT_ID, true),
                utf8(COUPON, true),
            ]))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_match_constants() {
        let s = hit_schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, hit::ALL);
    }

    #[test]
    fn events_and_orders() {
        assert!(is_valid_event("purchase"));
        assert!(is_valid_event("trial_7d"));
        assert!(!is_valid_event("Purchase"));
        assert!(!is_valid_event(""));
        assert!(!is_valid_event(&"a".repeat(33)));
        assert!(is_valid_order_id(&"x".repeat(128)));
        assert!(!is_valid_order_id(&"x".repeat(129)));
        assert!(!is_valid_order_id("a\nb"));
    }
}
