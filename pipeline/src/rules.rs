//! The registry as a run sees it (SPEC §7): each offer's lock period and currency, and the
//! commission rules, with the rule choice of §7 (most specific, then latest `valid_from`).
//! Offers missing from `offers.csv` take every default.

use std::collections::HashMap;

use chrono::NaiveDate;
use lake::registry::{self, CommissionRule, Coupon, Offer, COUPON_PRIORITY_COUPON, DEFAULT_CURRENCY, DEFAULT_LOCK_DAYS};
use polars::prelude::*;
use lake::{layout, Lake};

use crate::error::Result;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

type Overrides = std::sync::Mutex<HashMap<&'static str, std::path::PathBuf>>;
static REGISTRY_OVERRIDES: std::sync::OnceLock<Overrides> = std::sync::OnceLock::new();

/// What-if runs (`pipeline run --window 28d+LABEL --registry-override DIR`): for runs of
/// windows labelled `label`, registry files found in `dir` (`offers.csv`,
/// `commissions.csv`, `coupons.csv`) replace the lake's. Production windows (unlabelled)
/// always read the lake's registry.
pub fn set_registry_override(label: &'static str, dir: std::path::PathBuf) {
    let map = REGISTRY_OVERRIDES.get_or_init(Default::default);
    map.lock().unwrap_or_else(|e| e.into_inner()).insert(label, dir);
}

fn override_for(window: &lake::window::Window) -> Option<std::path::PathBuf> {
    let label = window.label()?;
    REGISTRY_OVERRIDES.get()?.lock().unwrap_or_else(|e| e.into_inner()).get(label).cloned()
}

/// One usable rule: its parsed parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    member_id: String,
    event: String,
    percent_e4: Option<i64>,
    flat_micros: Option<i64>,
    valid_from: Option<NaiveDate>,
}

impl Rule {
    fn commission(&self) -> Commission {
        Commission { percent_e4: self.percent_e4, flat_micros: self.flat_micros }
    }
}

/// What a conversion's commission is made of: the percent (×10⁴) and the flat amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Commission {
    pub percent_e4: Option<i64>,
    pub flat_micros: Option<i64>,
}

/// Offers and commission rules, indexed for a run.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    offers: HashMap<String, Offer>,
    by_offer: HashMap<String, Vec<Rule>>,
    /// The raw bytes of the registry files read, for nightly's fingerprints.
    pub offers_csv: Vec<u8>,
    pub commissions_csv: Vec<u8>,
    pub coupons_csv: Vec<u8>,
    /// The coupon codes (SPEC §8).
    pub coupons: Vec<Coupon>,
    /// Every commission rule as (valid_from, its parsed parts as text), sorted: nightly's
    /// fingerprint of a date covers the rules that can apply on it.
    pub rule_lines: Vec<(Option<NaiveDate>, String)>,
}

impl Rules {
    pub fn new(offers: Vec<Offer>, rules: Vec<CommissionRule>) -> Rules {
        let mut by_offer: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut rule_lines: Vec<(Option<NaiveDate>, String)> = rules
            .iter()
            .map(|r| {
                let text = format!("{}|{}|{}|{:?}|{:?}", r.offer_id, r.member_id, r.event, r.percent_e4(), r.flat_micros());
                (r.valid_from_date(), text)
            })
            .collect();
        rule_lines.sort();
        for r in rules {
            by_offer.entry(r.offer_id.clone()).or_default().push(Rule {
                member_id: r.member_id.clone(),
                event: r.event.clone(),
                percent_e4: r.percent_e4(),
                flat_micros: r.flat_micros(),
                valid_from: r.valid_from_date(),
            });
        }
        Rules { offers: offers.into_iter().map(|o| (o.offer_id.clone(), o)).collect(), by_offer, rule_lines, ..Default::default() }
    }

    /// Reads `registry/offers.csv`, `registry/commissions.csv` and `registry/coupons.csv`
    /// (any may be missing) from the lake.
    pub async fn load(lake: &Lake) -> Result<Rules> {
        Rules::load_from(lake, None).await
    }

    /// The registry a run of `window` reads: the lake's, with the files of the window's
    /// what-if override folder in their place ([`set_registry_override`]).
    pub async fn load_for(lake: &Lake, window: &lake::window::Window) -> Result<Rules> {
        Rules::load_from(lake, override_for(window)).await
    }

    async fn load_from(lake: &Lake, dir: Option<std::path::PathBuf>) -> Result<Rules> {
        let read = |path: object_store::path::Path| {
            let dir = dir.clone();
            async move {
                if let Some(file) = dir.map(|d| d.join(path.filename().unwrap_or_default())).filter(|f| f.is_file()) {
                    return std::fs::read(&file).map_err(|e| {
                        crate::error::PipelineError::Invalid(format!("--registry-override: cannot read {}: {e}", file.display()))
                    });
                }
                Ok(lake.get_optional(&path).await?.map(|b| b.to_vec()).unwrap_or_default())
            }
        };
        let offers_csv = read(layout::offers()).await?;
        let commissions_csv = read(layout::commissions()).await?;
        let coupons_csv = read(layout::coupons()).await?;
        let offers = if offers_csv.is_empty() { Vec::new() } else { registry::parse_offers(&offers_csv)? };
        let rules = if commissions_csv.is_empty() { Vec::new() } else { registry::parse_commissions(&commissions_csv)? };
        let coupons = if coupons_csv.is_empty() { Vec::new() } else { registry::parse_coupons(&coupons_csv)? };
        Ok(Rules { offers_csv, commissions_csv, coupons_csv, coupons, ..Rules::new(offers, rules) })
    }

    /// What attribution needs from the registry (SPEC §8), as frames to join: per offer
    /// `min_lag_seconds` and whether coupons come first (offers not listed take the
    /// defaults: 0 and click first); per (offer, code) the coupon's member and validity in
    /// days since the epoch (null: open).
    pub fn attribution_frames(&self) -> Result<(DataFrame, DataFrame)> {
        use lake::schema::hit;
        use crate::stages::work;
        let polars = crate::error::PipelineError::polars;
        let mut offers: Vec<&Offer> = self.offers.values().collect();
        offers.sort_by(|a, b| a.offer_id.cmp(&b.offer_id));
        let o = DataFrame::new_infer_height(vec![
            Series::new(hit::OFFER_ID.into(), offers.iter().map(|o| o.offer_id.clone()).collect::<Vec<_>>()).into_column(),
            Series::new(work::MIN_LAG_S.into(), offers.iter().map(|o| o.min_lag_seconds as i64).collect::<Vec<_>>()).into_column(),
            Series::new(work::COUPON_FIRST.into(), offers.iter().map(|o| o.coupon_priority == COUPON_PRIORITY_COUPON).collect::<Vec<_>>())
                .into_column(),
        ])
        .map_err(polars("the offers frame"))?;
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days = |d: Option<NaiveDate>| d.map(|d| (d - epoch).num_days() as i32);
        let c = &self.coupons;
        let k = DataFrame::new_infer_height(vec![
            Series::new(hit::OFFER_ID.into(), c.iter().map(|c| c.offer_id.clone()).collect::<Vec<_>>()).into_column(),
            Series::new(work::COUPON_KEY.into(), c.iter().map(|c| c.code.clone()).collect::<Vec<_>>()).into_column(),
            Series::new(work::COUPON_MEMBER.into(), c.iter().map(|c| c.member_id.clone()).collect::<Vec<_>>()).into_column(),
            Series::new(work::COUPON_FROM.into(), c.iter().map(|c| days(c.valid_from_date())).collect::<Vec<_>>()).into_column(),
            Series::new(work::COUPON_TO.into(), c.iter().map(|c| days(c.valid_to_date())).collect::<Vec<_>>()).into_column(),
        ])
        .map_err(polars("the coupons frame"))?;
        Ok((o, k))
    }

    /// The commission rules that can apply on `date` (valid_from empty or ≤ it), as text.
    pub fn rules_on(&self, date: NaiveDate) -> impl Iterator<Item = &str> {
        self.rule_lines.iter().filter(move |(from, _)| from.is_none_or(|f| f <= date)).map(|(_, t)| t.as_str())
    }

    /// The offer's lock period in µs (default 30 days).
    pub fn lock_micros(&self, offer_id: &str) -> i64 {
        self.offers.get(offer_id).map_or(i64::from(DEFAULT_LOCK_DAYS) * MICROS_PER_DAY, Offer::lock_micros)
    }

    /// The longest lock period of any offer (at least the default's).
    pub fn max_lock_micros(&self) -> i64 {
        self.offers.values().map(Offer::lock_micros).fold(i64::from(DEFAULT_LOCK_DAYS) * MICROS_PER_DAY, i64::max)
    }

    /// The offer's currency (default USD).
    pub fn currency(&self, offer_id: &str) -> &str {
        self.offers.get(offer_id).map_or(DEFAULT_CURRENCY, |o| o.currency.as_str())
    }

    /// The rule that applies to a conversion (SPEC §7), if any. `click` rules never apply.
    pub fn conversion_rule(&self, offer_id: &str, member_id: &str, event: &str, date: NaiveDate) -> Option<Commission> {
        self.conversion_pick(offer_id, member_id, event, date).map(Rule::commission)
    }

    /// The rule behind [`Rules::conversion_rule`].
    fn conversion_pick(&self, offer_id: &str, member_id: &str, event: &str, date: NaiveDate) -> Option<&Rule> {
        self.pick_rule(offer_id, date, |r| {
            if r.event == lake::schema::CLICK_EVENT {
                return None;
            }
            let member = if r.member_id.is_empty() { false } else if r.member_id == member_id { true } else { return None };
            let ev = if r.event.is_empty() { false } else if r.event == event { true } else { return None };
            Some(u8::from(member) * 2 + u8::from(ev))
        })
    }

    /// The flat per-click payout for a member's clicks on a date, if a `click` rule applies.
    pub fn click_rule(&self, offer_id: &str, member_id: &str, date: NaiveDate) -> Option<i64> {
        self.pick(offer_id, date, |r| {
            if r.event != lake::schema::CLICK_EVENT {
                return None;
            }
            if r.member_id.is_empty() {
                Some(0)
            } else if r.member_id == member_id {
                Some(1)
            } else {
                None
            }
        })
        .map(|c| c.flat_micros.unwrap_or(0))
    }

    /// Of the offer's rules valid on `date` that `rank` accepts, the highest rank, then the
    /// latest `valid_from` (empty counts as the oldest).
    fn pick(&self, offer_id: &str, date: NaiveDate, rank: impl Fn(&Rule) -> Option<u8>) -> Option<Commission> {
        self.pick_rule(offer_id, date, rank).map(Rule::commission)
    }

    fn pick_rule(&self, offer_id: &str, date: NaiveDate, rank: impl Fn(&Rule) -> Option<u8>) -> Option<&Rule> {
        self.by_offer
            .get(offer_id)?
            .iter()
            .filter(|r| r.valid_from.is_none_or(|v| v <= date))
            .filter_map(|r| rank(r).map(|k| (k, r.valid_from, r)))
            .max_by_key(|(k, v, _)| (*k, *v))
            .map(|(_, _, r)| r)
    }

    /// The offer as listed in `offers.csv`, if it is.
    pub fn offer(&self, offer_id: &str) -> Option<&Offer> {
        self.offers.get(offer_id)
    }

    /// [`Rules::conversion_rule`] with the rule chosen as people read it.
    pub fn conversion_rule_text(&self, offer_id: &str, member_id: &str, event: &str, date: NaiveDate) -> Option<(String, Commission)> {
        let r = self.conversion_pick(offer_id, member_id, event, date)?;
        let or = |v: &str, empty: &str| if v.is_empty() { empty.to_string() } else { v.to_string() };
        let percent = r.percent_e4.map_or("-".to_string(), |p| {
            let text = format!("{}.{:04}", p / 10_000, p % 10_000);
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        });
        let flat = r.flat_micros.map_or("-".to_string(), lake::money::format_micros);
        let text = format!(
            "offer={offer_id} member={} event={} percent={percent} flat={flat} valid_from={} (the most specific, then the latest valid_from, of the rules valid on {date})",
            or(&r.member_id, "(every)"),
            or(&r.event, "(every)"),
            r.valid_from.map_or("(always)".to_string(), |d| d.to_string())
        );
        Some((text, r.commission()))
    }
}

/// `round_half_to_even(n / d)` for `n ≥ 0`, `d > 0`, in integers.
pub fn div_round_half_even(n: i128, d: i128) -> i128 {
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 != 0 => q + 1,
        _ => q,
    }
}

/// The commission of a conversion that is attributed and neither rejected nor refunded:
/// `round_half_even(net × percent / 100) + flat` (SPEC §7). `percent_e4` is percent × 10⁴.
pub fn commission_micros(net_micros: Option<i64>, c: Commission) -> i64 {
    let pct = match (net_micros, c.percent_e4) {
        (Some(net), Some(p)) => div_round_half_even(i128::from(net) * i128::from(p), 1_000_000),
        _ => 0,
    };
    let total = pct + i128::from(c.flat_micros.unwrap_or(0));
    i64::try_from(total).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(member: &str, event: &str, percent: &str, flat: &str, from: &str) -> CommissionRule {
        CommissionRule {
            offer_id: "o".into(),
            member_id: member.into(),
            event: event.into(),
            percent: percent.into(),
            flat: flat.into(),
            valid_from: from.into(),
        }
    }

    #[test]
    fn half_micros_round_to_even() {
        // net 5 µ × 10% = 0.5 µ → 0; 15 µ × 10% = 1.5 µ → 2; 25 µ × 10% = 2.5 µ → 2.
        let ten = Commission { percent_e4: Some(100_000), flat_micros: None };
        assert_eq!(commission_micros(Some(5), ten), 0);
        assert_eq!(commission_micros(Some(15), ten), 2);
        assert_eq!(commission_micros(Some(25), ten), 2);
        assert_eq!(commission_micros(Some(26), ten), 3);
        assert_eq!(commission_micros(Some(24), ten), 2);
        assert_eq!(commission_micros(None, Commission { percent_e4: Some(1), flat_micros: Some(7) }), 7);
        // The product of the largest amount and percent does not overflow (i128 inside).
        let max = Commission { percent_e4: Some(1_000_000), flat_micros: None };
        assert_eq!(commission_micros(Some(lake::money::MAX_AMOUNT_MICROS), max), lake::money::MAX_AMOUNT_MICROS);
        let thousand = Commission { percent_e4: Some(10_000_000), flat_micros: None };
        assert_eq!(commission_micros(Some(lake::money::MAX_AMOUNT_MICROS / 10), thousand), lake::money::MAX_AMOUNT_MICROS);
    }

    #[test]
    fn most_specific_then_latest() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let r = Rules::new(
            Vec::new(),
            vec![
                rule("", "", "5", "", ""),
                rule("", "purchase", "6", "", ""),
                rule("ann", "", "7", "", ""),
                rule("ann", "purchase", "8", "", "2026-03-01"),
                rule("ann", "purchase", "9", "", "2026-04-01"),
                rule("", "click", "", "0.05", ""),
                rule("ann", "click", "", "0.10", "2026-03-01"),
            ],
        );
        let p = |m: &str, e: &str, day: &str| r.conversion_rule("o", m, e, d(day)).and_then(|c| c.percent_e4).map(|p| p / 10_000);
        assert_eq!(p("bob", "signup", "2026-01-01"), Some(5));
        assert_eq!(p("bob", "purchase", "2026-01-01"), Some(6));
        assert_eq!(p("ann", "signup", "2026-01-01"), Some(7));
        assert_eq!(p("ann", "purchase", "2026-02-28"), Some(7));
        assert_eq!(p("ann", "purchase", "2026-03-01"), Some(8));
        assert_eq!(p("ann", "purchase", "2026-04-01"), Some(9));
        assert_eq!(r.conversion_rule("other", "ann", "purchase", d("2026-04-01")), None);
        assert_eq!(r.click_rule("o", "ann", d("2026-02-01")), Some(50_000));
        assert_eq!(r.click_rule("o", "ann", d("2026-03-01")), Some(100_000));
        assert_eq!(r.click_rule("o", "bob", d("2026-03-01")), Some(50_000));
    }
}
