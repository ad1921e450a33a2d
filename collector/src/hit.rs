//! One recorded hit as the collector holds it between the request and the lake, and its
//! conversion to Arrow rows of the hit schema (SPEC §2).

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use lake::schema::{hit_schema, HitKind};
use serde::{Deserialize, Serialize};

/// A hit, exactly as it will be stored. `ts` is the collector's receive time in
/// microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hit {
    pub hit_id: String,
    pub kind: HitKind,
    pub ts: i64,
    pub offer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_micros: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Adjustments (SPEC §7): `refund`, `reject` or `restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment_id: Option<String>,
    /// Conversions (SPEC §8): the coupon code, upper-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
}

impl Hit {
    /// A hit of `kind` received now, with a fresh UUIDv7 id and every optional field empty.
    pub fn new(kind: HitKind, offer_id: String) -> Hit {
        Hit {
            hit_id: uuid::Uuid::now_v7().to_string(),
            kind,
            ts: chrono::Utc::now().timestamp_micros(),
            offer_id,
            member_id: None,
            link_code: None,
            click_id: None,
            visitor_id: None,
            event: None,
            order_id: None,
            amount_micros: None,
            currency: None,
            user_agent: None,
            referer: None,
            ip_hash: None,
            params: None,
            action: None,
            adjustment_id: None,
            coupon: None,
        }
    }

    /// The UTC hour bucket (micros since the epoch, floored to the hour) of `ts`.
    pub fn hour_bucket(&self) -> i64 {
        self.ts.div_euclid(lake::window::MICROS_PER_HOUR) * lake::window::MICROS_PER_HOUR
    }
}

/// Builds one Arrow batch of the hit schema from hits.
pub fn to_record_batch(hits: &[&Hit]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let n = hits.len();
    let strings = |f: &dyn Fn(&Hit) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for h in hits {
            b.append_option(f(h));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut amount = Int64Builder::with_capacity(n);
    for h in hits {
        ts.append_value(h.ts);
        amount.append_option(h.amount_micros);
    }
    let columns: Vec<ArrayRef> = vec![
        strings(&|h| Some(h.hit_id.as_str())),
        strings(&|h| Some(h.kind.as_str())),
        Arc::new(ts.finish()),
        strings(&|h| Some(h.offer_id.as_str())),
        strings(&|h| h.member_id.as_deref()),
        strings(&|h| h.link_code.as_deref()),
        strings(&|h| h.click_id.as_deref()),
        strings(&|h| h.visitor_id.as_deref()),
        strings(&|h| h.event.as_deref()),
        strings(&|h| h.order_id.as_deref()),
        Arc::new(amount.finish()),
        strings(&|h| h.currency.as_deref()),
        strings(&|h| h.user_agent.as_deref()),
        strings(&|h| h.referer.as_deref()),
        strings(&|h| h.ip_hash.as_deref()),
        strings(&|h| h.params.as_deref()),
        strings(&|h| h.action.as_deref()),
        strings(&|h| h.adjustment_id.as_deref()),
        strings(&|h| h.coupon.as_deref()),
    ];
    RecordBatch::try_new(hit_schema(), columns)
}
