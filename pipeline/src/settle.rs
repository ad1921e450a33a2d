//! Adjustments and earnings (SPEC §7; the exact rules and the decisions where the spec is
//! silent are in `pipeline/README.md`): which conversion each adjustment targets and whether
//! it counts, each conversion's adjusted state, its commission, and the click payouts.
//!
//! These are per-key state machines over small, already materialized frames (adjustments,
//! the conversions sharing their keys, one row per conversion of the range), so they are
//! written as plain Rust over the frames' columns rather than as polars expressions: the
//! ordering rules (`(ts, hit_id)`, "the last reject/restore") and the integer rounding read
//! directly, and nothing here touches the hits again.

use std::collections::HashMap;

use chrono::NaiveDate;
use lake::schema::{adjustment as adj, hit, report, status};
use polars::prelude::*;

use crate::error::{PipelineError, Result};
use crate::params::Params;
use crate::rules::{commission_micros, Rules};
use crate::stages::work;

fn column<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Column> {
    df.column(name).map_err(PipelineError::polars(format!("reading column {name}")))
}

/// A column as strings (cast first), nulls as `None`.
pub fn strs(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>> {
    let c = column(df, name)?.cast(&DataType::String).map_err(PipelineError::polars(format!("reading column {name}")))?;
    let ca = c.str().map_err(PipelineError::polars(format!("reading column {name}")))?;
    Ok(ca.iter().map(|s| s.map(str::to_string)).collect())
}

/// A column as `i64` (cast first: timestamps give their µs), nulls as `None`.
pub fn ints(df: &DataFrame, name: &str) -> Result<Vec<Option<i64>>> {
    let c = column(df, name)?.cast(&DataType::Int64).map_err(PipelineError::polars(format!("reading column {name}")))?;
    let ca = c.i64().map_err(PipelineError::polars(format!("reading column {name}")))?;
    Ok(ca.iter().collect())
}

fn bools(df: &DataFrame, name: &str) -> Result<Vec<bool>> {
    let c = column(df, name)?.cast(&DataType::Boolean).map_err(PipelineError::polars(format!("reading column {name}")))?;
    let ca = c.bool().map_err(PipelineError::polars(format!("reading column {name}")))?;
    Ok(ca.iter().map(|b| b.unwrap_or(false)).collect())
}

fn dates(df: &DataFrame, name: &str) -> Result<Vec<Option<NaiveDate>>> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let c = column(df, name)?.cast(&DataType::Int32).map_err(PipelineError::polars(format!("reading column {name}")))?;
    let ca = c.i32().map_err(PipelineError::polars(format!("reading column {name}")))?;
    Ok(ca.iter().map(|d| d.and_then(|d| epoch.checked_add_signed(chrono::Duration::days(i64::from(d))))).collect())
}

type Key = (String, String, String);

/// One adjustment hit, as read.
#[derive(Debug, Clone)]
pub struct Adjustment {
    pub hit_id: String,
    pub ts: i64,
    pub offer_id: String,
    pub event: String,
    pub order_id: Option<String>,
    pub action: Option<String>,
    pub amount_micros: Option<i64>,
    pub currency: Option<String>,
    pub adjustment_id: Option<String>,
}

/// What became of an adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub status: &'static str,
    pub target_hit_id: Option<String>,
}

/// Reads the adjustments frame (see [`crate::stages::conversions::adjustments`]), sorted by
/// `(ts, hit_id)`.
pub fn read_adjustments(df: &DataFrame) -> Result<Vec<Adjustment>> {
    let (id, ts, offer, event, order, action, amount, currency, aid) = (
        strs(df, hit::HIT_ID)?,
        ints(df, hit::TS)?,
        strs(df, hit::OFFER_ID)?,
        strs(df, hit::EVENT)?,
        strs(df, hit::ORDER_ID)?,
        strs(df, hit::ACTION)?,
        ints(df, hit::AMOUNT_MICROS)?,
        strs(df, hit::CURRENCY)?,
        strs(df, hit::ADJUSTMENT_ID)?,
    );
    let mut out: Vec<Adjustment> = (0..df.height())
        .map(|i| Adjustment {
            hit_id: id[i].clone().unwrap_or_default(),
            ts: ts[i].unwrap_or_default(),
            offer_id: offer[i].clone().unwrap_or_default(),
            event: event[i].clone().unwrap_or_else(|| lake::schema::DEFAULT_EVENT.into()),
            order_id: order[i].clone().filter(|o| !o.is_empty()),
            action: action[i].clone(),
            amount_micros: amount[i],
            currency: currency[i].clone(),
            adjustment_id: aid[i].clone().filter(|a| !a.is_empty()),
        })
        .collect();
    out.sort_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)));
    Ok(out)
}

/// A conversion an adjustment may target.
#[derive(Debug, Clone)]
struct Candidate {
    ts: i64,
    hit_id: String,
    currency: Option<String>,
}

/// Resolves every adjustment (SPEC §7.1–2): its target among the non-duplicate conversions
/// of `index` (the output of [`crate::stages::conversions::prepare_selected`], holding every
/// conversion sharing a key with an adjustment) and its status.
pub fn resolve(adjustments: &[Adjustment], index: &DataFrame, rules: &Rules, p: &Params) -> Result<Vec<Resolved>> {
    let (id, ts, offer, event, order, currency, dup) = (
        strs(index, hit::HIT_ID)?,
        ints(index, hit::TS)?,
        strs(index, hit::OFFER_ID)?,
        strs(index, hit::EVENT)?,
        strs(index, hit::ORDER_ID)?,
        strs(index, hit::CURRENCY)?,
        bools(index, work::DUPLICATE)?,
    );
    let mut by_key: HashMap<Key, Vec<Candidate>> = HashMap::new();
    for i in 0..index.height() {
        let Some(o) = order[i].clone().filter(|o| !o.is_empty()) else { continue };
        if dup[i] {
            continue;
        }
        by_key
            .entry((offer[i].clone().unwrap_or_default(), event[i].clone().unwrap_or_default(), o))
            .or_default()
            .push(Candidate { ts: ts[i].unwrap_or_default(), hit_id: id[i].clone().unwrap_or_default(), currency: currency[i].clone() });
    }
    for list in by_key.values_mut() {
        list.sort_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)));
    }
    let w = p.window.micros();
    // (offer, adjustment_id) → ts of the latest earlier adjustment with that id.
    let mut seen: HashMap<(String, String), i64> = HashMap::new();
    let mut out = Vec::with_capacity(adjustments.len());
    for a in adjustments {
        let lock = rules.lock_micros(&a.offer_id);
        let reach = lock + w;
        let target = a.order_id.as_ref().and_then(|o| {
            let list = by_key.get(&(a.offer_id.clone(), a.event.clone(), o.clone()))?;
            let upto = list.partition_point(|c| c.ts <= a.ts);
            upto.checked_sub(1).map(|i| &list[i]).filter(|c| c.ts >= a.ts - reach)
        });
        let duplicate = match &a.adjustment_id {
            Some(aid) => {
                let key = (a.offer_id.clone(), aid.clone());
                let earlier = seen.get(&key).is_some_and(|t| *t >= a.ts - reach);
                seen.insert(key, a.ts);
                earlier
            }
            None => false,
        };
        let status = match target {
            None => adj::NO_CONVERSION,
            Some(_) if duplicate => adj::DUPLICATE,
            Some(t) if a.ts > t.ts + lock => adj::LATE,
            Some(t) if a.currency.is_some() && a.currency != t.currency => adj::CURRENCY_MISMATCH,
            Some(_) => adj::APPLIED,
        };
        out.push(Resolved { status, target_hit_id: target.map(|t| t.hit_id.clone()) });
    }
    Ok(out)
}

/// The adjusted state of one conversion (SPEC §7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub adjusted_state: &'static str,
    pub refunded_micros: i64,
    pub net_amount_micros: Option<i64>,
}

/// The state of a conversion of amount `amount` after `applied` (in `(ts, hit_id)` order).
pub fn state(amount: Option<i64>, applied: &[&Adjustment]) -> State {
    let gross = amount.unwrap_or(0);
    let mut refunds: i128 = 0;
    let mut whole = false;
    let mut rejected = false;
    for a in applied {
        match a.action.as_deref() {
            Some(adj::REFUND) => match a.amount_micros {
                Some(m) => refunds += i128::from(m),
                None => {
                    whole = true;
                    refunds += i128::from(gross);
                }
            },
            Some(adj::REJECT) => rejected = true,
            Some(adj::RESTORE) => rejected = false,
            _ => {}
        }
    }
    let refunded = i64::try_from(refunds.min(i128::from(gross))).unwrap_or(gross);
    let adjusted_state = if rejected {
        adj::REJECTED
    } else if whole || (refunded == gross && gross > 0) {
        adj::REFUNDED
    } else if refunded > 0 {
        adj::PARTIALLY_REFUNDED
    } else {
        adj::VALID
    };
    State { adjusted_state, refunded_micros: refunded, net_amount_micros: amount.map(|a| a - refunded) }
}

/// Adds the §7 columns to `attributions` (which already has `coupon` and `via`):
/// `adjusted_state`, `refunded_micros`, `net_amount_micros`, `lock_ts`, `commission_micros`.
pub fn settle(mut attributions: DataFrame, adjustments: &[Adjustment], resolved: &[Resolved], rules: &Rules) -> Result<DataFrame> {
    let mut applied: HashMap<&str, Vec<&Adjustment>> = HashMap::new();
    for (a, r) in adjustments.iter().zip(resolved) {
        if r.status == adj::APPLIED {
            if let Some(t) = &r.target_hit_id {
                applied.entry(t.as_str()).or_default().push(a);
            }
        }
    }
    let (id, ts, offer, event, member, st, amount, date) = (
        strs(&attributions, hit::HIT_ID)?,
        ints(&attributions, hit::TS)?,
        strs(&attributions, hit::OFFER_ID)?,
        strs(&attributions, hit::EVENT)?,
        strs(&attributions, hit::MEMBER_ID)?,
        strs(&attributions, report::STATUS)?,
        ints(&attributions, hit::AMOUNT_MICROS)?,
        dates(&attributions, report::DATE)?,
    );
    let n = attributions.height();
    let (mut states, mut refunded, mut net, mut lock_ts, mut commission) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let none: Vec<&Adjustment> = Vec::new();
    for i in 0..n {
        let hit_id = id[i].as_deref().unwrap_or("");
        let offer_id = offer[i].as_deref().unwrap_or("");
        let s = state(amount[i], applied.get(hit_id).unwrap_or(&none));
        lock_ts.push(ts[i].map(|t| t + rules.lock_micros(offer_id)));
        commission.push(if st[i].as_deref() == Some(status::ATTRIBUTED) {
            Some(if s.adjusted_state == adj::REJECTED || s.adjusted_state == adj::REFUNDED {
                0
            } else {
                let rule = date[i].and_then(|d| {
                    rules.conversion_rule(offer_id, member[i].as_deref().unwrap_or(""), event[i].as_deref().unwrap_or(""), d)
                });
                rule.map_or(0, |c| commission_micros(s.net_amount_micros, c))
            })
        } else {
            None
        });
        states.push(s.adjusted_state);
        refunded.push(s.refunded_micros);
        net.push(s.net_amount_micros);
    }
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let lock = Series::new(report::LOCK_TS.into(), lock_ts).cast(&utc).map_err(PipelineError::polars("lock_ts"))?;
    for c in [
        Series::new(report::ADJUSTED_STATE.into(), states).into_column(),
        Series::new(report::REFUNDED_MICROS.into(), refunded).into_column(),
        Series::new(report::NET_AMOUNT_MICROS.into(), net).into_column(),
        lock.into_column(),
        Series::new(report::COMMISSION_MICROS.into(), commission).into_column(),
    ] {
        attributions.with_column(c).map_err(PipelineError::polars("adding the adjusted columns"))?;
    }
    Ok(attributions)
}

/// The `adjustments` table for the adjustments whose report date is in the run's range:
/// each with its status, target and the target's member when the target is attributed.
/// `members`: conversion `hit_id` → (status, member_id) of every target the run knows.
pub fn adjustments_table(
    adjustments: &[Adjustment],
    resolved: &[Resolved],
    members: &HashMap<String, (String, Option<String>)>,
    p: &Params,
) -> Result<DataFrame> {
    let (lo, hi) = p.range_micros();
    let rows: Vec<(&Adjustment, &Resolved)> =
        adjustments.iter().zip(resolved).filter(|(a, _)| a.ts >= lo && a.ts < hi).collect();
    let s = |f: &dyn Fn(&Adjustment, &Resolved) -> Option<String>| -> Vec<Option<String>> { rows.iter().map(|(a, r)| f(a, r)).collect() };
    let utc = DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC));
    let ts = Series::new(hit::TS.into(), rows.iter().map(|(a, _)| a.ts).collect::<Vec<i64>>())
        .cast(&utc)
        .map_err(PipelineError::polars("adjustment ts"))?;
    let df = DataFrame::new_infer_height(vec![
        Series::new(hit::HIT_ID.into(), s(&|a, _| Some(a.hit_id.clone()))).into_column(),
        ts.into_column(),
        Series::new(hit::OFFER_ID.into(), s(&|a, _| Some(a.offer_id.clone()))).into_column(),
        Series::new(hit::EVENT.into(), s(&|a, _| Some(a.event.clone()))).into_column(),
        Series::new(hit::ORDER_ID.into(), s(&|a, _| a.order_id.clone())).into_column(),
        Series::new(hit::ACTION.into(), s(&|a, _| a.action.clone())).into_column(),
        Series::new(hit::AMOUNT_MICROS.into(), rows.iter().map(|(a, _)| a.amount_micros).collect::<Vec<_>>()).into_column(),
        Series::new(hit::CURRENCY.into(), s(&|a, _| a.currency.clone())).into_column(),
        Series::new(hit::ADJUSTMENT_ID.into(), s(&|a, _| a.adjustment_id.clone())).into_column(),
        Series::new(report::STATUS.into(), s(&|_, r| Some(r.status.to_string()))).into_column(),
        Series::new(report::TARGET_HIT_ID.into(), s(&|_, r| r.target_hit_id.clone())).into_column(),
        Series::new(
            hit::MEMBER_ID.into(),
            s(&|_, r| {
                r.target_hit_id
                    .as_ref()
                    .and_then(|t| members.get(t))
                    .filter(|(st, _)| st == status::ATTRIBUTED)
                    .and_then(|(_, m)| m.clone())
            }),
        )
        .into_column(),
    ])
    .map_err(PipelineError::polars("building the adjustments table"))?;
    df.lazy()
        .with_column(crate::stages::local_date(p))
        .sort([hit::TS, hit::HIT_ID], SortMultipleOptions::default())
        .collect()
        .map_err(PipelineError::polars("dating the adjustments"))
}

/// `earnings` for one date (SPEC §7): the conversion columns from `attributions` (settled)
/// joined with the click payouts computed from that date's `clicks` table.
pub fn earnings(attributions: &DataFrame, clicks: &DataFrame, rules: &Rules, date: NaiveDate) -> Result<DataFrame> {
    // Click payouts.
    let (offer, member, n) = (strs(clicks, hit::OFFER_ID)?, strs(clicks, hit::MEMBER_ID)?, ints(clicks, report::CLICKS)?);
    let mut pay: Vec<(String, String, String, i64, i64)> = Vec::new();
    for i in 0..clicks.height() {
        let (o, m, c) = (offer[i].clone().unwrap_or_default(), member[i].clone().unwrap_or_default(), n[i].unwrap_or(0));
        if c <= 0 {
            continue;
        }
        if let Some(flat) = rules.click_rule(&o, &m, date) {
            let cur = rules.currency(&o).to_string();
            pay.push((o, m, cur, c, c.saturating_mul(flat)));
        }
    }
    let click_df = DataFrame::new_infer_height(vec![
        Series::new(hit::OFFER_ID.into(), pay.iter().map(|r| r.0.clone()).collect::<Vec<_>>()).into_column(),
        Series::new(hit::MEMBER_ID.into(), pay.iter().map(|r| r.1.clone()).collect::<Vec<_>>()).into_column(),
        Series::new(hit::CURRENCY.into(), pay.iter().map(|r| r.2.clone()).collect::<Vec<_>>()).into_column(),
        Series::new(report::CLICKS_PAID.into(), pay.iter().map(|r| r.3).collect::<Vec<_>>()).into_column(),
        Series::new(report::CLICK_COMMISSION_MICROS.into(), pay.iter().map(|r| r.4).collect::<Vec<_>>()).into_column(),
    ])
    .map_err(PipelineError::polars("click payouts"))?;

    // Conversion side: a conversion without a currency takes its offer's.
    let offers = strs(attributions, hit::OFFER_ID)?;
    let currency = strs(attributions, hit::CURRENCY)?;
    let cur: Vec<String> =
        offers.iter().zip(&currency).map(|(o, c)| c.clone().unwrap_or_else(|| rules.currency(o.as_deref().unwrap_or("")).to_string())).collect();
    let keys = [hit::OFFER_ID, hit::MEMBER_ID, hit::CURRENCY];
    let conv = attributions
        .clone()
        .lazy()
        .with_column(lit(Series::new(hit::CURRENCY.into(), cur)).alias(hit::CURRENCY))
        .filter(col(report::STATUS).eq(lit(status::ATTRIBUTED)).and(col(report::ADJUSTED_STATE).neq(lit(adj::REJECTED))))
        .group_by(keys.map(col))
        .agg([
            len().cast(DataType::Int64).alias(report::CONVERSIONS),
            col(hit::AMOUNT_MICROS).fill_null(lit(0i64)).sum().cast(DataType::Int64).alias(report::GROSS_MICROS),
            col(report::REFUNDED_MICROS).sum().cast(DataType::Int64).alias(report::REFUNDED_MICROS),
            col(report::NET_AMOUNT_MICROS).fill_null(lit(0i64)).sum().cast(DataType::Int64).alias(report::NET_MICROS),
            col(report::COMMISSION_MICROS).fill_null(lit(0i64)).sum().cast(DataType::Int64).alias(report::CONVERSION_COMMISSION_MICROS),
        ]);
    let zero = |c: &str| col(c).fill_null(lit(0i64)).cast(DataType::Int64).alias(c);
    let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32;
    conv.join(click_df.lazy(), keys.map(col), keys.map(col), JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns))
        .select([
            lit(days).cast(DataType::Date).alias(report::DATE),
            col(hit::OFFER_ID),
            col(hit::MEMBER_ID),
            col(hit::CURRENCY),
            zero(report::CONVERSIONS),
            zero(report::GROSS_MICROS),
            zero(report::REFUNDED_MICROS),
            zero(report::NET_MICROS),
            zero(report::CLICKS_PAID),
            zero(report::CONVERSION_COMMISSION_MICROS),
            zero(report::CLICK_COMMISSION_MICROS),
            (col(report::CONVERSION_COMMISSION_MICROS).fill_null(lit(0i64)) + col(report::CLICK_COMMISSION_MICROS).fill_null(lit(0i64)))
                .cast(DataType::Int64)
                .alias(report::COMMISSION_MICROS),
        ])
        .sort(keys, SortMultipleOptions::default().with_nulls_last(true))
        .collect()
        .map_err(PipelineError::polars(format!("earnings of {date}")))
}

/// `hit_id` → (status, member_id) of every row of an attributions frame.
pub fn members_of(attributions: &DataFrame, into: &mut HashMap<String, (String, Option<String>)>) -> Result<()> {
    let (id, st, m) = (strs(attributions, hit::HIT_ID)?, strs(attributions, report::STATUS)?, strs(attributions, hit::MEMBER_ID)?);
    for i in 0..attributions.height() {
        if let Some(h) = &id[i] {
            into.insert(h.clone(), (st[i].clone().unwrap_or_default(), m[i].clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(action: &str, amount: Option<i64>) -> Adjustment {
        Adjustment {
            hit_id: String::new(),
            ts: 0,
            offer_id: "o".into(),
            event: "purchase".into(),
            order_id: Some("1".into()),
            action: Some(action.into()),
            amount_micros: amount,
            currency: None,
            adjustment_id: None,
        }
    }

    #[test]
    fn states() {
        let s = |amount, list: &[Adjustment]| state(amount, &list.iter().collect::<Vec<_>>());
        assert_eq!(s(Some(100), &[]).adjusted_state, adj::VALID);
        let big = s(Some(100), &[a("refund", Some(500))]);
        assert_eq!((big.adjusted_state, big.refunded_micros, big.net_amount_micros), (adj::REFUNDED, 100, Some(0)));
        let two = s(Some(100), &[a("refund", Some(10)), a("refund", Some(20))]);
        assert_eq!((two.adjusted_state, two.refunded_micros, two.net_amount_micros), (adj::PARTIALLY_REFUNDED, 30, Some(70)));
        let full = s(Some(100), &[a("refund", Some(10)), a("refund", Some(20)), a("refund", None)]);
        assert_eq!((full.adjusted_state, full.refunded_micros), (adj::REFUNDED, 100));
        assert_eq!(s(Some(100), &[a("reject", None), a("restore", None), a("reject", None)]).adjusted_state, adj::REJECTED);
        assert_eq!(s(Some(100), &[a("reject", None), a("restore", None)]).adjusted_state, adj::VALID);
        let none = s(None, &[a("refund", None)]);
        assert_eq!((none.adjusted_state, none.refunded_micros, none.net_amount_micros), (adj::REFUNDED, 0, None));
        assert_eq!(s(None, &[a("refund", Some(5))]).adjusted_state, adj::VALID);
    }
}
