//! A deterministic, seeded generator of synthetic hit lakes for tests and benchmarks
//! (`pipeline gen`). Same seed and sizes, same files, byte for byte.
//!
//! Realistic enough to exercise every rule: skewed offer and member popularity, returning
//! visitors, conversion lags with a tail past 28 days, pixel and postback reports of the
//! same order, unknown and expired click ids, offer mismatches, bots and in-app browsers,
//! several currencies, duplicate hits within a file and whole hour files uploaded twice.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{NaiveDate, TimeZone, Timelike, Utc};
use lake::schema::{hit_schema, HitKind};
use lake::{layout, Lake};
use object_store::{ObjectStoreExt, PutPayload};
use rand::rngs::StdRng;
use futures::{StreamExt, TryStreamExt};
use rand::{Rng, SeedableRng};

use crate::error::{PipelineError, Result};
use crate::read::MICROS_PER_HOUR;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenConfig {
    pub seed: u64,
    /// First UTC date with hits.
    pub start: NaiveDate,
    pub days: u32,
    /// Roughly how many hit rows in all.
    pub hits: u64,
    pub offers: u32,
    pub members: u32,
    pub visitors: u64,
    /// Offers and members taken from a registry instead of synthetic `offerN`/`mN` ids
    /// (`offers` and `members` are then ignored).
    pub registry: Option<GenRegistry>,
    /// Files per hour ([`split_hour`]); 1 writes one file per hour as before.
    pub files_per_hour: u32,
}

/// The offers, currencies and links to generate traffic for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRegistry {
    pub offers: Vec<GenOffer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOffer {
    pub offer_id: String,
    pub currency: String,
    /// (link code, member id)
    pub links: Vec<(String, String)>,
}

impl GenRegistry {
    /// Every offer of the registry that has at least one link.
    pub fn from_registry(offers: &[lake::registry::Offer], links: &[lake::registry::Link]) -> Result<GenRegistry> {
        let offers: Vec<GenOffer> = offers
            .iter()
            .map(|o| GenOffer {
                offer_id: o.offer_id.clone(),
                currency: o.currency.clone(),
                links: links.iter().filter(|l| l.offer_id == o.offer_id).map(|l| (l.code.clone(), l.member_id.clone())).collect(),
            })
            .filter(|o| !o.links.is_empty())
            .collect();
        if offers.is_empty() {
            return Err(PipelineError::Invalid("the registry has no offer with a link to generate traffic for".into()));
        }
        Ok(GenRegistry { offers })
    }
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 42,
            start: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap_or_default(),
            days: 60,
            hits: 1_000_000,
            offers: 12,
            members: 2_000,
            visitors: 300_000,
            registry: None,
            files_per_hour: 1,
        }
    }
}

/// One hit row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hit {
    pub hit_id: String,
    pub kind: &'static str,
    pub ts: i64,
    pub offer_id: String,
    pub member_id: Option<String>,
    pub link_code: Option<String>,
    pub click_id: Option<String>,
    pub visitor_id: Option<String>,
    pub event: Option<String>,
    pub order_id: Option<String>,
    pub amount_micros: Option<i64>,
    pub currency: Option<String>,
    pub user_agent: Option<String>,
    pub action: Option<String>,
    pub adjustment_id: Option<String>,
    pub coupon: Option<String>,
}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts, &self.hit_id).cmp(&(other.ts, &other.hit_id))
    }
}

/// Hits as one Arrow batch of the hit schema (`referer`, `ip_hash`, `params` filled
/// plausibly).
pub fn to_batch(hits: &[Hit]) -> Result<RecordBatch> {
    let s = |f: &dyn Fn(&Hit) -> Option<&str>| Arc::new(hits.iter().map(f).collect::<StringArray>()) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        s(&|h| Some(h.hit_id.as_str())),
        s(&|h| Some(h.kind)),
        Arc::new(TimestampMicrosecondArray::from(hits.iter().map(|h| h.ts).collect::<Vec<_>>()).with_timezone("UTC")),
        s(&|h| Some(h.offer_id.as_str())),
        s(&|h| h.member_id.as_deref()),
        s(&|h| h.link_code.as_deref()),
        s(&|h| h.click_id.as_deref()),
        s(&|h| h.visitor_id.as_deref()),
        s(&|h| h.event.as_deref()),
        s(&|h| h.order_id.as_deref()),
        Arc::new(hits.iter().map(|h| h.amount_micros).collect::<Int64Array>()),
        s(&|h| h.currency.as_deref()),
        s(&|h| h.user_agent.as_deref()),
        s(&|_| Some("https://instagram.com/")),
        s(&|h| Some(if h.hit_id.ends_with('0') { "3f2a9c" } else { "a81b7e" })),
        s(&|_| Some("utm_source=ig")),
        s(&|h| h.action.as_deref()),
        s(&|h| h.adjustment_id.as_deref()),
        s(&|h| h.coupon.as_deref()),
    ];
    RecordBatch::try_new(hit_schema(), columns).map_err(|e| PipelineError::Invalid(format!("building a hits batch: {e}")))
}

/// Hits encoded as one Parquet file (zstd).
pub fn to_parquet(hits: &[Hit]) -> Result<Vec<u8>> {
    crate::arrow_out::batch_to_parquet_bytes(&to_batch(hits)?)
}

/// Writes hits into their hour folders (one file per hour, named `name`).
pub async fn write_hits(lake: &Lake, hits: &[Hit], name: &str) -> Result<()> {
    let mut by_hour: std::collections::BTreeMap<i64, Vec<Hit>> = Default::default();
    for h in hits {
        by_hour.entry(h.ts.div_euclid(MICROS_PER_HOUR)).or_default().push(h.clone());
    }
    for (hour, rows) in by_hour {
        let ts = Utc.timestamp_micros(hour * MICROS_PER_HOUR).single().unwrap_or_default();
        let path = layout::hits_file(ts, name);
        lake.store().put(&path, PutPayload::from(to_parquet(&rows)?)).await.map_err(PipelineError::store(&path))?;
    }
    Ok(())
}

const BROWSERS: [&str; 4] = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 320.0.0.34.109",
];
const BOTS: [&str; 4] = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.24.6.77 A",
    "curl/8.5.0",
];
const CURRENCIES: [&str; 4] = ["USD", "EUR", "GBP", "JPY"];
const DAY_US: i64 = 24 * MICROS_PER_HOUR;

struct Gen {
    rng: StdRng,
    cfg: GenConfig,
}

impl Gen {
    /// Index in `0..n`, skewed towards 0.
    fn skewed(&mut self, n: u64, power: i32) -> u64 {
        let u: f64 = self.rng.random();
        ((u.powi(power) * n as f64) as u64).min(n.saturating_sub(1))
    }
    fn uuid_v7(&mut self, ts: i64) -> String {
        let bytes: [u8; 10] = self.rng.random();
        uuid::Builder::from_unix_timestamp_millis((ts / 1000).max(0) as u64, &bytes).into_uuid().to_string()
    }
    fn uuid_v4(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
    }
    fn offer_count(&self) -> u32 {
        match &self.cfg.registry {
            Some(r) => r.offers.len() as u32,
            None => self.cfg.offers,
        }
    }
    fn offer(&mut self) -> u32 {
        self.skewed(u64::from(self.offer_count()), 2) as u32
    }
    fn offer_id(&self, offer: u32) -> String {
        match &self.cfg.registry {
            Some(r) => r.offers[offer as usize % r.offers.len()].offer_id.clone(),
            None => format!("offer{offer}"),
        }
    }
    /// A member of `offer`, skewed towards the popular ones: (member id, link code).
    fn member(&mut self, offer: u32) -> (String, String) {
        let n = match &self.cfg.registry {
            Some(r) => r.offers[offer as usize % r.offers.len()].links.len() as u64,
            None => u64::from(self.cfg.members),
        };
        let i = self.skewed(n, 3);
        match &self.cfg.registry {
            Some(r) => {
                let (code, member) = &r.offers[offer as usize % r.offers.len()].links[i as usize];
                (member.clone(), code.clone())
            }
            None => (format!("m{i}"), format!("L{offer}x{i}")),
        }
    }
    fn currency(&self, offer: u32) -> String {
        match &self.cfg.registry {
            Some(r) => r.offers[offer as usize % r.offers.len()].currency.clone(),
            None => CURRENCIES[offer as usize % CURRENCIES.len()].to_string(),
        }
    }
}

/// Coupon codes that generated conversions send (SPEC §8); tests list some of them in
/// `registry/coupons.csv`, so that others are unknown.
pub const GEN_COUPONS: [&str; 5] = ["save1", "SAVE2", "Save3", "SAVE4", "NOPE5"];

/// Generates the lake. Returns the number of hit rows written (copies included).
pub async fn generate(lake: &Lake, cfg: &GenConfig) -> Result<u64> {
    let mut g = Gen { rng: StdRng::seed_from_u64(cfg.seed), cfg: cfg.clone() };
    let start = cfg.start.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
    let end = start + i64::from(cfg.days) * DAY_US;
    let hours = u64::from(cfg.days) * 24;
    let clicks_per_hour = (cfg.hits as f64 / 1.06 / hours as f64).max(1.0);
    let mut pending: BinaryHeap<Reverse<Hit>> = BinaryHeap::new();
    let mut order_seq = 0u64;
    let mut written = 0u64;
    for hour in 0..hours as i64 {
        let h0 = start + hour * MICROS_PER_HOUR;
        let local_hour = Utc.timestamp_micros(h0).single().map(|t| t.hour()).unwrap_or(0);
        // Busier in the afternoon; the factor averages 1 over a day.
        let diurnal = (0.5 + (f64::from(local_hour) / 24.0 * std::f64::consts::PI).sin()) / (0.5 + 2.0 / std::f64::consts::PI);
        let n = (clicks_per_hour * diurnal).round() as u64;
        let mut rows: Vec<Hit> = Vec::with_capacity(n as usize * 11 / 10);
        for _ in 0..n {
            let ts = h0 + g.rng.random_range(0..MICROS_PER_HOUR);
            let offer = g.offer();
            let (member_id, link_code) = g.member(offer);
            let visitor = g.skewed(cfg.visitors, 2);
            let bot = g.rng.random_bool(0.04);
            let ua = if bot { BOTS[g.rng.random_range(0..BOTS.len())] } else { BROWSERS[g.rng.random_range(0..BROWSERS.len())] };
            let click_id = g.uuid_v7(ts);
            let visitor_id = uuid::Uuid::from_u64_pair(cfg.seed, visitor).to_string();
            let click = Hit {
                hit_id: g.uuid_v7(ts),
                kind: HitKind::Click.as_str(),
                ts,
                offer_id: g.offer_id(offer),
                member_id: Some(member_id),
                link_code: Some(link_code),
                click_id: Some(click_id.clone()),
                visitor_id: Some(visitor_id.clone()),
                user_agent: Some(ua.to_string()),
                ..Default::default()
            };
            if !bot && g.rng.random_bool(0.045) {
                // This click converts, after a lag: mostly days, with a tail past 28 days.
                let lag = if g.rng.random_bool(0.1) {
                    g.rng.random_range(0..40 * DAY_US)
                } else {
                    let u: f64 = g.rng.random::<f64>().max(1e-12);
                    (-u.ln() * 1.5 * DAY_US as f64) as i64
                };
                let cts = ts + lag;
                if cts < end {
                    order_seq += 1;
                    let conv_offer = if g.rng.random_bool(0.01) { (offer + 1) % g.offer_count().max(1) } else { offer };
                    let (event, amount) = match g.rng.random_range(0..100) {
                        // Whole cents, mostly 5–150 with a tail to 600; now and then a sub-cent
                        // amount (fuel, FX-converted) to keep the sums honest.
                        0..=84 => {
                            let u: f64 = g.rng.random();
                            let cents = 500 + (u * u * 59_500.0) as i64;
                            let sub_cent = if g.rng.random_bool(0.02) { g.rng.random_range(1..10_000i64) } else { 0 };
                            ("purchase", Some(cents * 10_000 + sub_cent))
                        }
                        85..=94 => ("signup", None),
                        _ => ("download", None),
                    };
                    let style = g.rng.random_range(0..100);
                    let conv = Hit {
                        hit_id: g.uuid_v7(cts),
                        kind: if style < 45 { HitKind::Postback.as_str() } else { HitKind::Pixel.as_str() },
                        ts: cts,
                        offer_id: g.offer_id(conv_offer),
                        click_id: (style < 75).then(|| click_id.clone()),
                        visitor_id: (style >= 45).then(|| visitor_id.clone()),
                        event: Some(event.to_string()),
                        order_id: (event == "purchase").then(|| format!("ord{order_seq}")),
                        amount_micros: amount,
                        currency: Some(g.currency(conv_offer)),
                        user_agent: Some(BROWSERS[0].to_string()),
                        ..Default::default()
                    };
                    // SPEC §8: some conversions send a coupon code (as typed: any case),
                    // a few of them with no click or visitor at all (a follower who typed
                    // the code). Drawn from the order number, so the rest of the lake is
                    // the same as without coupons.
                    let roll = (order_seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize;
                    let mut conv = conv;
                    if roll < 60 {
                        conv.coupon = Some(GEN_COUPONS[roll % GEN_COUPONS.len()].to_string());
                        if roll < 12 {
                            conv.click_id = None;
                            conv.visitor_id = None;
                        }
                    }
                    if conv.order_id.is_some() && g.rng.random_bool(0.15) {
                        // The brand has both a pixel and a postback: the order is reported twice.
                        let later = cts + if g.rng.random_bool(0.9) { g.rng.random_range(0..600_000_000) } else { g.rng.random_range(0..35 * DAY_US) };
                        if later < end {
                            let twin = Hit {
                                hit_id: g.uuid_v7(later),
                                ts: later,
                                kind: HitKind::Postback.as_str(),
                                click_id: Some(click_id.clone()),
                                visitor_id: None,
                                ..conv.clone()
                            };
                            pending.push(Reverse(twin));
                        }
                    }
                    if let Some(order) = conv.order_id.clone() {
                        // Corrections (SPEC §7): refunds (whole or part), rejections and
                        // restores, mostly within the lock period, some late, some sent twice.
                        let roll = g.rng.random_range(0..1000);
                        let mut actions: Vec<(&'static str, Option<i64>)> = Vec::new();
                        match roll {
                            0..=29 => actions.push(("refund", None)),
                            30..=54 => actions.push(("refund", conv.amount_micros.map(|a| a / 2 + 1))),
                            55..=64 => actions.push(("reject", None)),
                            65..=69 => actions.extend([("reject", None), ("restore", None)]),
                            70..=72 => actions.extend([("refund", conv.amount_micros.map(|a| a / 3)), ("refund", None)]),
                            _ => {}
                        }
                        let mut at = cts;
                        for (k, (action, amount)) in actions.into_iter().enumerate() {
                            at += if g.rng.random_bool(0.1) { g.rng.random_range(30 * DAY_US..40 * DAY_US) } else { g.rng.random_range(0..20 * DAY_US) };
                            if at >= end {
                                break;
                            }
                            let adjustment = Hit {
                                hit_id: g.uuid_v7(at),
                                kind: HitKind::Adjustment.as_str(),
                                ts: at,
                                offer_id: conv.offer_id.clone(),
                                event: Some("purchase".into()),
                                order_id: Some(order.clone()),
                                amount_micros: amount,
                                currency: amount.and(conv.currency.clone()),
                                action: Some(action.into()),
                                adjustment_id: Some(format!("adj-{order_seq}-{k}")),
                                user_agent: Some("brand-server/1.0".into()),
                                ..Default::default()
                            };
                            if g.rng.random_bool(0.1) && at + 60_000_000 < end {
                                // A retried call: the same adjustment_id a minute later.
                                pending.push(Reverse(Hit { hit_id: g.uuid_v7(at + 60_000_000), ts: at + 60_000_000, ..adjustment.clone() }));
                            }
                            pending.push(Reverse(adjustment));
                        }
                    }
                    pending.push(Reverse(conv));
                }
            }
            rows.push(click);
        }
        // Conversions nobody clicked for: unknown or expired click ids, no ids at all.
        let noise = (n / 300).max(1);
        for _ in 0..noise {
            let ts = h0 + g.rng.random_range(0..MICROS_PER_HOUR);
            let offer = g.offer();
            let (click_id, visitor_id) = match g.rng.random_range(0..3) {
                0 => (Some(g.uuid_v4()), None),
                1 => (Some(g.uuid_v7(ts - 60 * DAY_US)), None),
                _ => (None, None),
            };
            rows.push(Hit {
                hit_id: g.uuid_v7(ts),
                kind: HitKind::Pixel.as_str(),
                ts,
                offer_id: g.offer_id(offer),
                click_id,
                visitor_id,
                event: Some("purchase".into()),
                amount_micros: Some(1_000_000),
                currency: Some("usd".to_uppercase()),
                user_agent: Some(BROWSERS[1].to_string()),
                ..Default::default()
            });
        }
        while pending.peek().is_some_and(|Reverse(h)| h.ts < h0 + MICROS_PER_HOUR) {
            if let Some(Reverse(h)) = pending.pop() {
                rows.push(h);
            }
        }
        // A few hits written twice in the same file (a retried append).
        if !rows.is_empty() && g.rng.random_bool(0.3) {
            let i = g.rng.random_range(0..rows.len());
            rows.push(rows[i].clone());
        }
        rows.sort();
        if rows.is_empty() {
            continue;
        }
        let ts = Utc.timestamp_micros(h0).single().unwrap_or_default();
        let copies = if g.rng.random_bool(0.01) { 2 } else { 1 };
        if cfg.files_per_hour <= 1 {
            let bytes = to_parquet(&rows)?;
            for copy in 0..copies {
                let path = layout::hits_file(ts, &format!("gen-{}-{hour:06}-{copy}", cfg.seed));
                lake.store().put(&path, PutPayload::from(bytes.clone())).await.map_err(PipelineError::store(&path))?;
                written += rows.len() as u64;
            }
            continue;
        }
        let parts = split_hour(&rows, h0, cfg.files_per_hour);
        let mut puts = Vec::new();
        for (part, part_rows) in parts.iter().enumerate() {
            if part_rows.is_empty() {
                continue;
            }
            let bytes = bytes::Bytes::from(to_parquet(part_rows)?);
            for copy in 0..copies {
                let path = layout::hits_file(ts, &format!("gen-{}-{hour:06}-{copy}-p{part:04}", cfg.seed));
                let store = lake.store().clone();
                let bytes = bytes.clone();
                puts.push(async move { store.put(&path, PutPayload::from(bytes)).await.map_err(PipelineError::store(&path)) });
                written += part_rows.len() as u64;
            }
        }
        futures::stream::iter(puts).buffer_unordered(16).try_collect::<Vec<_>>().await?;
    }
    Ok(written)
}

/// Deals one hour's rows (sorted) out to `n` files as collectors flushing would leave
/// them: for `n` ≤ 60 one collector flushing every `60/n` minutes (time slices); above,
/// `ceil(n/60)` collectors flushing every minute, each hit on one of them (by its id).
pub fn split_hour(rows: &[Hit], hour_start: i64, n: u32) -> Vec<Vec<Hit>> {
    let slots = n.min(60) as usize;
    let collectors = n.div_ceil(60) as usize;
    let mut parts: Vec<Vec<Hit>> = vec![Vec::new(); slots * collectors];
    for h in rows {
        let offset = (h.ts - hour_start).clamp(0, MICROS_PER_HOUR - 1);
        let slot = (offset as i128 * slots as i128 / i128::from(MICROS_PER_HOUR)) as usize;
        let collector = (blake3::hash(h.hit_id.as_bytes()).as_bytes()[0] as usize) % collectors;
        parts[slot * collectors + collector].push(h.clone());
    }
    parts
}
