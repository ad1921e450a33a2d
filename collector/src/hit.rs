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

/// A fresh UUIDv7 (SPEC §2) for a time in microseconds since the epoch, hyphenated: the
/// millisecond timestamp and 74 random bits from the thread's generator. (`Uuid::now_v7`
/// reads the clock again and takes a lock shared by every thread to keep ids of one
/// millisecond in order; hit ids need only be unique and of their time.)
pub fn uuid_v7(ts_micros: i64) -> String {
    let ms = u64::try_from(ts_micros.div_euclid(1000)).unwrap_or_default();
    hyphenated(uuid::Builder::from_unix_timestamp_millis(ms, &rand::random()).into_uuid())
}

/// A fresh random UUID (v4), hyphenated.
pub fn uuid_v4() -> String {
    hyphenated(uuid::Builder::from_random_bytes(rand::random()).into_uuid())
}

/// `u` in its hyphenated lower-case form, without going through `fmt`.
fn hyphenated(u: uuid::Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    u.hyphenated().encode_lower(&mut buf).to_owned()
}

impl Hit {
    /// A hit of `kind` received now, with a fresh UUIDv7 id and every optional field empty.
    pub fn new(kind: HitKind, offer_id: String) -> Hit {
        let ts = chrono::Utc::now().timestamp_micros();
        Hit {
            hit_id: uuid_v7(ts),
            kind,
            ts,
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
        HitRef::of(self).hour_bucket()
    }
}

/// A hit's fields borrowed from where they are (a [`Hit`], or a spool frame read in
/// place): what the spool encodes and the sink's columns take, without a copy of each string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HitRef<'a> {
    pub kind: HitKind,
    pub ts: i64,
    pub amount_micros: Option<i64>,
    /// The string fields in [`HitRef::STRINGS`] order.
    pub strings: [Option<&'a str>; HitRef::STRINGS],
}

impl<'a> HitRef<'a> {
    /// The string fields: `hit_id`, `offer_id`, `member_id`, `link_code`, `click_id`,
    /// `visitor_id`, `event`, `order_id`, `currency`, `user_agent`, `referer`, `ip_hash`,
    /// `params`, `action`, `adjustment_id`, `coupon` (the schema's order, less `kind`).
    pub const STRINGS: usize = 16;

    pub fn of(h: &'a Hit) -> HitRef<'a> {
        HitRef {
            kind: h.kind,
            ts: h.ts,
            amount_micros: h.amount_micros,
            strings: [
                Some(h.hit_id.as_str()),
                Some(h.offer_id.as_str()),
                h.member_id.as_deref(),
                h.link_code.as_deref(),
                h.click_id.as_deref(),
                h.visitor_id.as_deref(),
                h.event.as_deref(),
                h.order_id.as_deref(),
                h.currency.as_deref(),
                h.user_agent.as_deref(),
                h.referer.as_deref(),
                h.ip_hash.as_deref(),
                h.params.as_deref(),
                h.action.as_deref(),
                h.adjustment_id.as_deref(),
                h.coupon.as_deref(),
            ],
        }
    }

    /// The hit as an owned [`Hit`]; `None` without a `hit_id` or an `offer_id`.
    pub fn to_hit(&self) -> Option<Hit> {
        let [hit_id, offer_id, member_id, link_code, click_id, visitor_id, event, order_id, currency, user_agent, referer, ip_hash, params, action, adjustment_id, coupon] =
            self.strings.map(|s| s.map(str::to_string));
        Some(Hit {
            hit_id: hit_id?,
            kind: self.kind,
            ts: self.ts,
            offer_id: offer_id?,
            member_id,
            link_code,
            click_id,
            visitor_id,
            event,
            order_id,
            amount_micros: self.amount_micros,
            currency,
            user_agent,
            referer,
            ip_hash,
            params,
            action,
            adjustment_id,
            coupon,
        })
    }

    /// The UTC hour bucket of `ts`, as [`Hit::hour_bucket`].
    pub fn hour_bucket(&self) -> i64 {
        self.ts.div_euclid(lake::window::MICROS_PER_HOUR) * lake::window::MICROS_PER_HOUR
    }
}

/// Hits gathered into the columns of the hit schema, to be taken as a batch (a row group
/// of a hits file) when enough have come.
pub struct HitBatchBuilder {
    strings: [StringBuilder; STRING_COLUMNS],
    ts: TimestampMicrosecondBuilder,
    amount: Int64Builder,
    rows: usize,
}

/// The string columns of the hit schema, in order, but `ts` and `amount_micros`.
const STRING_COLUMNS: usize = HitRef::STRINGS + 1;

impl HitBatchBuilder {
    pub fn with_capacity(rows: usize) -> HitBatchBuilder {
        HitBatchBuilder {
            strings: std::array::from_fn(|_| StringBuilder::with_capacity(rows, rows * 16)),
            ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            amount: Int64Builder::with_capacity(rows),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn push(&mut self, h: &Hit) {
        self.push_ref(&HitRef::of(h));
    }

    pub fn push_ref(&mut self, h: &HitRef<'_>) {
        // The builders are in schema order: `hit_id`, `kind`, then the rest of `strings`.
        let (first, rest) = self.strings.split_at_mut(2);
        first[0].append_option(h.strings[0]);
        first[1].append_value(h.kind.as_str());
        for (b, v) in rest.iter_mut().zip(&h.strings[1..]) {
            b.append_option(*v);
        }
        self.ts.append_value(h.ts);
        self.amount.append_option(h.amount_micros);
        self.rows += 1;
    }

    /// The rows pushed since the last call, as one batch of the hit schema; the builder
    /// is empty again.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow_schema::ArrowError> {
        self.rows = 0;
        let mut s = self.strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut next = || s.next().expect("one builder per string column");
        // Schema order (SPEC §2): the string columns around `ts` and `amount_micros`.
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(STRING_COLUMNS + 2);
        columns.extend([next(), next()]);
        columns.push(Arc::new(self.ts.finish()));
        columns.extend([next(), next(), next(), next(), next(), next(), next()]);
        columns.push(Arc::new(self.amount.finish()));
        columns.extend(std::iter::from_fn(|| s.next()));
        RecordBatch::try_new(hit_schema(), columns)
    }
}

/// Builds one Arrow batch of the hit schema from hits.
pub fn to_record_batch(hits: &[&Hit]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let mut b = HitBatchBuilder::with_capacity(hits.len());
    for h in hits {
        b.push(h);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuids_of_their_version_and_time() {
        let ts = 1_764_000_000_123_456;
        let a = uuid::Uuid::parse_str(&uuid_v7(ts)).unwrap();
        assert_eq!(a.get_version_num(), 7);
        let (secs, nanos) = a.get_timestamp().unwrap().to_unix();
        assert_eq!(secs * 1000 + u64::from(nanos) / 1_000_000, 1_764_000_000_123);
        assert_ne!(uuid_v7(ts), uuid_v7(ts));
        let v = uuid::Uuid::parse_str(&uuid_v4()).unwrap();
        assert_eq!(v.get_version_num(), 4);
        assert_eq!(uuid_v4().len(), 36);
        let hit = Hit::new(HitKind::Click, "o".into());
        let id = uuid::Uuid::parse_str(&hit.hit_id).unwrap();
        let (secs, _) = id.get_timestamp().unwrap().to_unix();
        assert_eq!(secs as i64, hit.ts.div_euclid(1_000_000));
    }
}
