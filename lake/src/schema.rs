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

    /// Every hit column, in the order the collector writes them.
    pub const ALL: [&str; 16] = [
        HIT_ID, KIND, TS, OFFER_ID, MEMBER_ID, LINK_CODE, CLICK_ID, VISITOR_ID, EVENT, ORDER_ID,
        AMOUNT_MICROS, CURRENCY, USER_AGENT, REFERER, IP_HASH, PARAMS,
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
}

/// The `kind` values of a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HitKind {
    Click,
    Pixel,
    Postback,
}

impl HitKind {
    pub const ALL: [HitKind; 3] = [HitKind::Click, HitKind::Pixel, HitKind::Postback];
    pub fn as_str(self) -> &'static str {
        match self {
            HitKind::Click => "click",
            HitKind::Pixel => "pixel",
            HitKind::Postback => "postback",
        }
    }
}

/// Attribution statuses (SPEC §5).
pub mod status {
    pub const ATTRIBUTED: &str = "attributed";
    pub const DUPLICATE: &str = "duplicate";
    pub const UNKNOWN_CLICK: &str = "unknown_click";
    pub const OFFER_MISMATCH: &str = "offer_mismatch";
    pub const OUTSIDE_WINDOW: &str = "outside_window";
    pub const NO_CLICK: &str = "no_click";
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
