//! `queries explain HIT_ID`: the attribution receipt of one conversion (SPEC §8), decided
//! again from the lake alone: its order twins, every candidate click and why it lost, the
//! coupon check, the fraud floor, the adjustments applied, the commission rule and its
//! arithmetic. The decision here is a third, deliberately plain implementation of §4, §7
//! and §8 (one conversion at a time, over the hits that can matter to it), so a test can
//! hold it against the pipeline's `attributions` for every conversion of a lake.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use lake::schema::{adjustment as adj, hit, report, status, via, HitKind, DEFAULT_EVENT};
use lake::window::Window;
use pipeline::rules::{commission_micros, Rules};
use pipeline::settle::Adjustment;
use polars::prelude::*;
use serde::Serialize;

use crate::engine::{self, Scope};
use crate::source::Source;

/// The hit columns a decision reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawHit {
    pub hit_id: String,
    pub kind: String,
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
    pub coupon: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl RawHit {
    fn is_conversion(&self) -> bool {
        self.kind == HitKind::Pixel.as_str() || self.kind == HitKind::Postback.as_str()
    }

    fn event(&self) -> &str {
        non_empty(&self.event).unwrap_or(DEFAULT_EVENT)
    }

    fn click_key(&self) -> Option<String> {
        non_empty(&self.click_id).map(str::to_ascii_lowercase)
    }

    fn order_key(&self) -> Option<(String, String, String)> {
        non_empty(&self.order_id).map(|o| (self.offer_id.clone(), self.event().to_string(), o.to_string()))
    }
}

/// Reads hit rows out of a frame with the hit columns.
pub fn raw_hits(df: &DataFrame) -> Result<Vec<RawHit>> {
    let (s, i) = (|name: &str| pipeline::settle::strs(df, name), |name: &str| pipeline::settle::ints(df, name));
    let (id, kind, ts, offer, member, link) = (s(hit::HIT_ID)?, s(hit::KIND)?, i(hit::TS)?, s(hit::OFFER_ID)?, s(hit::MEMBER_ID)?, s(hit::LINK_CODE)?);
    let (click, visitor, event, order, amount, currency, coupon) =
        (s(hit::CLICK_ID)?, s(hit::VISITOR_ID)?, s(hit::EVENT)?, s(hit::ORDER_ID)?, i(hit::AMOUNT_MICROS)?, s(hit::CURRENCY)?, s(hit::COUPON)?);
    Ok((0..df.height())
        .map(|r| RawHit {
            hit_id: id[r].clone().unwrap_or_default(),
            kind: kind[r].clone().unwrap_or_default(),
            ts: ts[r].unwrap_or(0),
            offer_id: offer[r].clone().unwrap_or_default(),
            member_id: member[r].clone(),
            link_code: link[r].clone(),
            click_id: click[r].clone(),
            visitor_id: visitor[r].clone(),
            event: event[r].clone(),
            order_id: order[r].clone(),
            amount_micros: amount[r],
            currency: currency[r].clone().map(|c| c.to_ascii_uppercase()),
            coupon: coupon[r].clone(),
        })
        .collect())
}

/// Hits indexed the three ways a decision looks them up (deduplicated by `hit_id`, SPEC §4.1).
pub struct Index {
    hits: Vec<RawHit>,
    by_click: HashMap<String, Vec<usize>>,
    by_visitor: HashMap<(String, String), Vec<usize>>,
    by_order: HashMap<(String, String, String), Vec<usize>>,
}

impl Index {
    pub fn new(mut hits: Vec<RawHit>) -> Index {
        let mut seen = std::collections::HashSet::new();
        hits.retain(|h| seen.insert(h.hit_id.clone()));
        let mut by_click: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_visitor: HashMap<(String, String), Vec<usize>> = HashMap::new();
        let mut by_order: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
        for (i, h) in hits.iter().enumerate() {
            if h.kind == HitKind::Click.as_str() {
                if let Some(k) = h.click_key() {
                    by_click.entry(k).or_default().push(i);
                }
                if let Some(v) = non_empty(&h.visitor_id) {
                    by_visitor.entry((h.offer_id.clone(), v.to_string())).or_default().push(i);
                }
            } else if h.is_conversion() {
                if let Some(k) = h.order_key() {
                    by_order.entry(k).or_default().push(i);
                }
            }
        }
        Index { hits, by_click, by_visitor, by_order }
    }

    pub fn get(&self, hit_id: &str) -> Option<&RawHit> {
        self.hits.iter().find(|h| h.hit_id == hit_id)
    }

    pub fn hits(&self) -> &[RawHit] {
        &self.hits
    }
}

/// A click considered for the session, and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Candidate {
    pub click_hit_id: String,
    pub click_id: Option<String>,
    pub ts: String,
    pub offer_id: String,
    pub member_id: Option<String>,
    pub link_code: Option<String>,
    pub in_window: bool,
    /// `chosen`, or why it lost.
    pub outcome: String,
}

/// An adjustment counted for the conversion.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Applied {
    pub hit_id: String,
    pub ts: String,
    pub action: String,
    pub amount_micros: Option<i64>,
}

/// What the last run wrote for a conversion: status, member, via, commission.
pub type Written = (String, Option<String>, Option<String>, Option<i64>);

/// The receipt.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Receipt {
    pub hit_id: String,
    pub kind: String,
    pub ts: String,
    pub date: NaiveDate,
    pub zone: String,
    pub window: String,
    pub offer_id: String,
    pub event: String,
    pub order_id: Option<String>,
    pub amount_micros: Option<i64>,
    pub currency: Option<String>,
    pub click_id: Option<String>,
    pub visitor_id: Option<String>,
    pub coupon: Option<String>,
    /// The earlier twin that makes this a duplicate (same offer, event and order id within W).
    pub duplicate_of: Option<String>,
    /// `click_id`, `visitor` or `none`: how a session was looked for.
    pub session_by: String,
    pub candidates: Vec<Candidate>,
    /// The verdict of §4 alone.
    pub session_status: String,
    /// What the coupon check found (SPEC §8).
    pub coupon_check: String,
    pub min_lag_seconds: u64,
    pub coupon_priority: String,
    pub status: String,
    pub via: Option<String>,
    pub member_id: Option<String>,
    pub link_code: Option<String>,
    pub lag_seconds: Option<i64>,
    pub adjustments: Vec<Applied>,
    pub adjusted_state: String,
    pub refunded_micros: i64,
    pub net_amount_micros: Option<i64>,
    pub lock_ts: String,
    /// The commission rule chosen, as text, and the arithmetic.
    pub rule: Option<String>,
    pub arithmetic: Option<String>,
    pub commission_micros: Option<i64>,
    /// When the hit asked about was an adjustment: what became of it (this receipt is then
    /// its target's).
    pub asked_adjustment: Option<AdjustmentNote>,
}

/// An adjustment's row of the `adjustments` table, as `explain` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AdjustmentNote {
    pub hit_id: String,
    pub action: Option<String>,
    pub amount_micros: Option<i64>,
    pub status: String,
    pub target_hit_id: Option<String>,
}

fn ts_text(us: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string()).unwrap_or_default()
}

fn local_date(tz: &Tz, us: i64) -> NaiveDate {
    pipeline::params::local_date(tz, us)
}

/// The embedded time (µs) of a UUIDv7, when `id` is one.
fn uuid_v7_micros(id: &str) -> Option<i64> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    if u.get_version_num() != 7 || id != u.hyphenated().to_string() {
        return None;
    }
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    Some(secs as i64 * 1_000_000 + i64::from(nanos / 1000))
}

/// Decides one conversion over `index` (SPEC §4, §7, §8). `applied`: the adjustments that
/// counted for it (from the `adjustments` table), in `(ts, hit_id)` order.
pub fn decide(conv: &RawHit, index: &Index, window: &Window, tz: &Tz, rules: &Rules, applied: &[Adjustment]) -> Receipt {
    let w = window.micros();
    let (lo, t) = (conv.ts - w, conv.ts);
    let date = local_date(tz, conv.ts);
    // §4.3 order twins.
    let duplicate_of = conv.order_key().and_then(|k| {
        index.by_order.get(&k).and_then(|ids| {
            ids.iter()
                .map(|i| &index.hits[*i])
                .filter(|h| (h.ts, &h.hit_id) < (conv.ts, &conv.hit_id) && h.ts >= lo)
                .max_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)))
                .map(|h| h.hit_id.clone())
        })
    });
    // §4.4 the session.
    let ckey = conv.click_key();
    let visitor = non_empty(&conv.visitor_id).map(str::to_string);
    let (session_by, pool): (&str, Vec<&RawHit>) = match (&ckey, &visitor) {
        (Some(k), _) => ("click_id", index.by_click.get(k).map(|v| v.iter().map(|i| &index.hits[*i]).collect()).unwrap_or_default()),
        (None, Some(v)) => (
            "visitor",
            index.by_visitor.get(&(conv.offer_id.clone(), v.clone())).map(|v| v.iter().map(|i| &index.hits[*i]).collect()).unwrap_or_default(),
        ),
        (None, None) => ("none", Vec::new()),
    };
    let in_window = |c: &RawHit| c.ts >= lo && c.ts <= t;
    let chosen: Option<&RawHit> = if duplicate_of.is_some() {
        None
    } else {
        pool.iter()
            .copied()
            .filter(|c| in_window(c))
            .max_by(|a, b| (a.ts, a.click_id.as_deref(), &a.hit_id).cmp(&(b.ts, b.click_id.as_deref(), &b.hit_id)))
    };
    let mut candidates: Vec<Candidate> = pool
        .iter()
        .map(|c| Candidate {
            click_hit_id: c.hit_id.clone(),
            click_id: c.click_id.clone(),
            ts: ts_text(c.ts),
            offer_id: c.offer_id.clone(),
            member_id: c.member_id.clone(),
            link_code: c.link_code.clone(),
            in_window: in_window(c),
            outcome: if duplicate_of.is_some() {
                "not looked at: the conversion is a duplicate".into()
            } else if chosen.is_some_and(|x| x.hit_id == c.hit_id) {
                "chosen: the latest click in [ts − W, ts]".into()
            } else if !in_window(c) {
                if c.ts > t { "after the conversion".into() } else { format!("older than the window ({window})") }
            } else {
                "a later click in the window won".into()
            },
        })
        .collect();
    candidates.sort_by(|a, b| (&a.ts, &a.click_hit_id).cmp(&(&b.ts, &b.click_hit_id)));
    let session_status = if duplicate_of.is_some() {
        status::DUPLICATE
    } else if let Some(k) = &ckey {
        match chosen {
            Some(c) if c.offer_id == conv.offer_id => status::ATTRIBUTED,
            Some(_) => status::OFFER_MISMATCH,
            None => match uuid_v7_micros(k) {
                Some(e) if e < lo || e > t => status::OUTSIDE_WINDOW,
                _ => status::UNKNOWN_CLICK,
            },
        }
    } else if chosen.is_some() {
        status::ATTRIBUTED
    } else {
        status::NO_CLICK
    };
    // §8 coupons and the floor.
    let offer = rules.offer(&conv.offer_id);
    let (min_lag, coupon_first) = offer.map_or((0, false), |o| (o.min_lag_seconds, o.coupon_priority == lake::registry::COUPON_PRIORITY_COUPON));
    let code = non_empty(&conv.coupon).map(str::to_ascii_uppercase);
    let listed = code.as_ref().and_then(|c| rules.coupons.iter().find(|k| k.offer_id == conv.offer_id && &k.code == c));
    let valid = listed.is_some_and(|k| k.valid_on(date));
    let coupon_check = match (&code, listed) {
        (None, _) => "no coupon sent".to_string(),
        (Some(c), None) => format!("{c}: not listed for offer {}", conv.offer_id),
        (Some(c), Some(k)) => {
            let days = format!(
                "{} .. {}",
                if k.valid_from.is_empty() { "open" } else { &k.valid_from },
                if k.valid_to.is_empty() { "open" } else { &k.valid_to }
            );
            format!("{c}: member {}, valid {days}: {} on {date}", k.member_id, if valid { "valid" } else { "not valid" })
        }
    };
    let unattributed = [status::UNKNOWN_CLICK, status::OUTSIDE_WINDOW, status::OFFER_MISMATCH, status::NO_CLICK].contains(&session_status);
    let by_coupon = valid && duplicate_of.is_none() && (coupon_first || unattributed);
    let kept = !by_coupon && session_status == status::ATTRIBUTED;
    let lag = chosen.map(|c| {
        let d = conv.ts - c.ts;
        (d - d % 1_000_000) / 1_000_000
    });
    let too_fast = kept && lag.is_some_and(|l| l < min_lag as i64);
    let status = if by_coupon {
        status::ATTRIBUTED
    } else if too_fast {
        status::TOO_FAST
    } else {
        session_status
    };
    let via = if by_coupon {
        Some(via::COUPON.to_string())
    } else if kept && !too_fast {
        Some(if ckey.is_some() { via::CLICK } else { via::VISITOR }.to_string())
    } else {
        None
    };
    let member_id = if by_coupon { listed.map(|k| k.member_id.clone()) } else if kept { chosen.and_then(|c| c.member_id.clone()) } else { None };
    // §7 the state and the commission.
    let refs: Vec<&Adjustment> = applied.iter().collect();
    let st = pipeline::settle::state(conv.amount_micros, &refs);
    let (rule, arithmetic, commission) = if status != status::ATTRIBUTED {
        (None, None, None)
    } else if st.adjusted_state == adj::REJECTED || st.adjusted_state == adj::REFUNDED {
        (None, Some(format!("{}: no commission", st.adjusted_state)), Some(0))
    } else {
        match rules.conversion_rule_text(&conv.offer_id, member_id.as_deref().unwrap_or(""), conv.event(), date) {
            None => (None, Some("no commission rule applies: 0".into()), Some(0)),
            Some((text, c)) => {
                let total = commission_micros(st.net_amount_micros, c);
                let pct = match (st.net_amount_micros, c.percent_e4) {
                    (Some(net), Some(p)) => format!("round_half_even({net} × {p} / 1000000)"),
                    _ => "0".into(),
                };
                (Some(text), Some(format!("{pct} + {} = {total}", c.flat_micros.unwrap_or(0))), Some(total))
            }
        }
    };
    Receipt {
        hit_id: conv.hit_id.clone(),
        kind: conv.kind.clone(),
        ts: ts_text(conv.ts),
        date,
        zone: tz.name().to_string(),
        window: window.to_string(),
        offer_id: conv.offer_id.clone(),
        event: conv.event().to_string(),
        order_id: conv.order_id.clone(),
        amount_micros: conv.amount_micros,
        currency: conv.currency.clone(),
        click_id: conv.click_id.clone(),
        visitor_id: conv.visitor_id.clone(),
        coupon: code,
        duplicate_of,
        session_by: session_by.to_string(),
        candidates,
        session_status: session_status.to_string(),
        coupon_check,
        min_lag_seconds: min_lag,
        coupon_priority: if coupon_first { "coupon" } else { "click" }.to_string(),
        status: status.to_string(),
        via,
        member_id,
        link_code: if kept { chosen.and_then(|c| c.link_code.clone()) } else { None },
        lag_seconds: if kept { lag } else { None },
        adjustments: applied
            .iter()
            .map(|a| Applied { hit_id: a.hit_id.clone(), ts: ts_text(a.ts), action: a.action.clone().unwrap_or_default(), amount_micros: a.amount_micros })
            .collect(),
        adjusted_state: st.adjusted_state.to_string(),
        refunded_micros: st.refunded_micros,
        net_amount_micros: st.net_amount_micros,
        lock_ts: ts_text(conv.ts + rules.lock_micros(&conv.offer_id)),
        rule,
        arithmetic,
        commission_micros: commission,
        asked_adjustment: None,
    }
}

/// The applied adjustments of each target, from an `adjustments` table.
pub fn applied_by_target(adjustments: &DataFrame) -> Result<HashMap<String, Vec<Adjustment>>> {
    let rows = pipeline::settle::read_adjustments(adjustments)?;
    let st = pipeline::settle::strs(adjustments, report::STATUS)?;
    let target = pipeline::settle::strs(adjustments, report::TARGET_HIT_ID)?;
    let mut out: HashMap<String, Vec<Adjustment>> = HashMap::new();
    for (i, a) in rows.into_iter().enumerate() {
        if st[i].as_deref() == Some(adj::APPLIED) {
            if let Some(t) = &target[i] {
                out.entry(t.clone()).or_default().push(a);
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)));
    }
    Ok(out)
}

async fn sql(source: &Source, window: &Window, statement: &str) -> Result<DataFrame> {
    let scope = Scope { window: *window, from: None, to: None };
    let p = engine::prepare(source, "explain", statement, &scope, Default::default()).await?;
    crate::collect("explain", p)
}

/// Explains one conversion from the lake: loads the hit, the hits that can matter to it,
/// the registry and its applied adjustments, and decides. Also returns what the last run
/// wrote for it (status, member, via, commission), when it wrote it.
pub async fn explain(source: &Source, hit_id: &str, window: &Window) -> Result<(Receipt, Option<Written>)> {
    let id = hit_id.trim().to_ascii_lowercase();
    if uuid::Uuid::parse_str(&id).is_err() {
        bail!("HIT_ID {hit_id:?} is not a UUID");
    }
    let quoted = id.replace('\'', "''");
    // A UUIDv7 hit id says its hour; otherwise every hit is scanned.
    let around = uuid_v7_micros(&id).map(|us| {
        let d = local_date(&Tz::UTC, us);
        (d.pred_opt().unwrap_or(d), d.succ_opt().unwrap_or(d))
    });
    let found = source.scan_hits(around).await?.filter(col(hit::HIT_ID).eq(lit(quoted.as_str()))).limit(1).collect()?;
    let found = if found.height() == 0 && around.is_some() {
        source.scan_hits(None).await?.filter(col(hit::HIT_ID).eq(lit(quoted.as_str()))).limit(1).collect()?
    } else {
        found
    };
    let conv = raw_hits(&found)?.into_iter().next().ok_or_else(|| anyhow!("no hit {id} in lake {}", source.lake().url()))?;
    if conv.kind == HitKind::Adjustment.as_str() {
        // An adjustment: its row of the adjustments table, then its target's receipt.
        let df = sql(source, window, &format!("SELECT * FROM adjustments WHERE hit_id = '{quoted}'")).await?;
        if df.height() == 0 {
            bail!("adjustment {id} has no row in window {window}'s adjustments table: run the pipeline over its date first");
        }
        let s = |c: &str| df.column(c).ok().and_then(|c| c.str().ok().and_then(|s| s.get(0).map(str::to_string)));
        let note = AdjustmentNote {
            hit_id: id.clone(),
            action: s(hit::ACTION),
            amount_micros: df.column(hit::AMOUNT_MICROS).ok().and_then(|c| c.i64().ok().and_then(|s| s.get(0))),
            status: s(report::STATUS).unwrap_or_default(),
            target_hit_id: s(report::TARGET_HIT_ID),
        };
        let Some(target) = note.target_hit_id.clone() else {
            bail!("adjustment {id} is {}: no conversion with its offer, event and order id came before it", note.status);
        };
        let (mut receipt, written) = Box::pin(explain(source, &target, window)).await?;
        receipt.asked_adjustment = Some(note);
        return Ok((receipt, written));
    }
    if !conv.is_conversion() {
        bail!("hit {id} is a {} (explain takes a conversion or an adjustment)", conv.kind);
    }
    let tz = source.zone(window).await?;
    let rules = Rules::load(source.lake()).await?;
    // The hits that can matter: W before it (sessions, twins) to the conversion itself.
    let from = local_date(&Tz::UTC, conv.ts - window.micros()).pred_opt().unwrap_or(NaiveDate::MIN);
    let to = local_date(&Tz::UTC, conv.ts);
    let mut wanted = col(hit::HIT_ID).eq(lit(quoted.as_str()));
    if let Some(k) = conv.click_key() {
        wanted = wanted.or(col(hit::CLICK_ID).str().to_lowercase().eq(lit(k)));
    }
    if let Some(v) = non_empty(&conv.visitor_id) {
        wanted = wanted.or(col(hit::OFFER_ID).eq(lit(conv.offer_id.clone())).and(col(hit::VISITOR_ID).eq(lit(v.to_string()))));
    }
    if let Some(o) = non_empty(&conv.order_id) {
        wanted = wanted.or(col(hit::OFFER_ID).eq(lit(conv.offer_id.clone())).and(col(hit::ORDER_ID).eq(lit(o.to_string()))));
    }
    let related = source.scan_hits(Some((from, to))).await?.filter(wanted).collect()?;
    let mut hits = raw_hits(&related)?;
    hits.push(conv.clone());
    let index = Index::new(hits);
    let adjustments = sql(source, window, &format!("SELECT * FROM adjustments WHERE target_hit_id = '{quoted}'")).await?;
    let applied = applied_by_target(&adjustments)?.remove(&id).unwrap_or_default();
    let receipt = decide(&conv, &index, window, &tz, &rules, &applied);
    let written = sql(source, window, &format!("SELECT status, member_id, via, commission_micros FROM attributions WHERE hit_id = '{quoted}'")).await;
    let written = match written {
        Ok(df) if df.height() > 0 => {
            let s = |c: &str| df.column(c).ok().and_then(|c| c.str().ok().and_then(|s| s.get(0).map(str::to_string)));
            let n = df.column(report::COMMISSION_MICROS).ok().and_then(|c| c.i64().ok().and_then(|s| s.get(0)));
            Some((s(report::STATUS).unwrap_or_default(), s(hit::MEMBER_ID), s(report::VIA), n))
        }
        _ => None,
    };
    Ok((receipt, written))
}

fn money(micros: Option<i64>, currency: Option<&str>) -> String {
    match micros {
        Some(m) => format!("{} {}", lake::money::format_micros(m), currency.unwrap_or("")).trim_end().to_string(),
        None => "(none)".into(),
    }
}

/// The receipt as people read it in a terminal.
pub fn render(r: &Receipt, written: Option<&Written>) -> String {
    let mut o = String::new();
    let cur = r.currency.as_deref();
    if let Some(a) = &r.asked_adjustment {
        o += &format!(
            "adjustment {}: {} {}: {} (its target below)\n\n",
            a.hit_id,
            a.action.as_deref().unwrap_or("?"),
            a.amount_micros.map(|m| money(Some(m), cur)).unwrap_or_else(|| "(all)".into()),
            a.status
        );
    }
    o += &format!("conversion {} ({}, offer {}, event {}", r.hit_id, r.kind, r.offer_id, r.event);
    if let Some(id) = &r.order_id {
        o += &format!(", order {id}");
    }
    o += &format!(", amount {})\n", money(r.amount_micros, cur));
    o += &format!("  at {}: report date {} in {}, window {}\n", r.ts, r.date, r.zone, r.window);
    o += &match &r.duplicate_of {
        Some(t) => format!("order twins: {t} is earlier with the same offer, event and order id within {}: duplicate\n", r.window),
        None => "order twins: none earlier within the window\n".into(),
    };
    o += &match r.session_by.as_str() {
        "click_id" => format!("session: by click_id {}\n", r.click_id.as_deref().unwrap_or("")),
        "visitor" => format!("session: by visitor {} on offer {}\n", r.visitor_id.as_deref().unwrap_or(""), r.offer_id),
        _ => "session: no click_id and no visitor: none\n".into(),
    };
    if r.candidates.is_empty() && r.session_by != "none" {
        o += "  no click found\n";
    }
    for c in &r.candidates {
        o += &format!(
            "  click {} at {} offer {} member {} link {}: {}\n",
            c.click_id.as_deref().unwrap_or(&c.click_hit_id),
            c.ts,
            c.offer_id,
            c.member_id.as_deref().unwrap_or("-"),
            c.link_code.as_deref().unwrap_or("-"),
            c.outcome
        );
    }
    o += &format!("  session verdict: {}\n", r.session_status);
    o += &format!("coupon: {} (coupon_priority {})\n", r.coupon_check, r.coupon_priority);
    o += &match r.lag_seconds {
        Some(l) => format!(
            "fraud floor: min_lag_seconds {}; lag {l} s: {}\n",
            r.min_lag_seconds,
            if r.status == status::TOO_FAST { "below it: too_fast" } else { "not below it" }
        ),
        None => format!("fraud floor: min_lag_seconds {}; no click lag to check\n", r.min_lag_seconds),
    };
    o += &format!(
        "status: {}{}{}\n",
        r.status,
        r.via.as_ref().map(|v| format!(" via {v}")).unwrap_or_default(),
        r.member_id.as_ref().map(|m| format!(", member {m}")).unwrap_or_default()
    );
    if r.adjustments.is_empty() {
        o += "adjustments: none applied\n";
    }
    for a in &r.adjustments {
        o += &format!("adjustment {} at {}: {} {}\n", a.hit_id, a.ts, a.action, a.amount_micros.map(|m| money(Some(m), cur)).unwrap_or_else(|| "(all)".into()));
    }
    o += &format!(
        "state: {}, refunded {}, net {}, lock until {}\n",
        r.adjusted_state,
        money(Some(r.refunded_micros), cur),
        money(r.net_amount_micros, cur),
        r.lock_ts
    );
    if let Some(rule) = &r.rule {
        o += &format!("commission rule: {rule}\n");
    }
    o += &match (&r.arithmetic, r.commission_micros) {
        (Some(a), Some(c)) => format!("commission: {} {} (in micros: {a})\n", lake::money::format_micros(c), cur.unwrap_or("")),
        _ => "commission: none (not attributed)\n".into(),
    };
    if let Some((st, m, v, c)) = written {
        let agrees = *st == r.status && *m == r.member_id && *v == r.via && *c == r.commission_micros;
        o += &format!(
            "the last run wrote: {st}{}{}, commission {}: {}\n",
            v.as_ref().map(|v| format!(" via {v}")).unwrap_or_default(),
            m.as_ref().map(|m| format!(", member {m}")).unwrap_or_default(),
            c.map(lake::money::format_micros).unwrap_or_else(|| "none".into()),
            if agrees { "the same" } else { "DIFFERENT (the lake changed since that run: run the pipeline again)" }
        );
    } else {
        o += "the last run wrote nothing for it (its date was not run with this window)\n";
    }
    o
}
