//! The registry (SPEC §1, §7): `registry/offers.csv`, `registry/links.csv` and
//! `registry/commissions.csv`, with a header row, read and written by every collector
//! sharing a lake and read by the pipeline. Columns are found by name; a column added
//! after a file was written reads as its default.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::money::normalize_currency;
use crate::LakeError;

pub const OFFER_COLUMNS: [&str; 8] = [
    "offer_id", "destination_url", "postback_token", "currency", "cookie_days", "lock_days", "min_lag_seconds",
    "coupon_priority",
];
pub const LINK_COLUMNS: [&str; 5] = ["code", "offer_id", "member_id", "destination_url", "created_at"];
pub const COMMISSION_COLUMNS: [&str; 6] = ["offer_id", "member_id", "event", "percent", "flat", "valid_from"];
/// Columns of `registry/coupons.csv` (SPEC §8), in file order.
pub const COUPON_COLUMNS: [&str; 5] = ["code", "offer_id", "member_id", "valid_from", "valid_to"];
pub const DEFAULT_CURRENCY: &str = "USD";
pub const DEFAULT_COOKIE_DAYS: u32 = 28;
/// Days after a conversion during which adjustments still change it (SPEC §7).
pub const DEFAULT_LOCK_DAYS: u32 = 30;
/// Longest lock period accepted.
pub const MAX_LOCK_DAYS: u32 = 3650;
pub const COUPON_PRIORITY_CLICK: &str = "click";
pub const COUPON_PRIORITY_COUPON: &str = "coupon";
pub const GENERATED_CODE_LEN: usize = 8;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub offer_id: String,
    pub destination_url: String,
    pub postback_token: String,
    pub currency: String,
    pub cookie_days: u32,
    /// Adjustments count until `conversion ts + lock_days` (SPEC §7).
    pub lock_days: u32,
    /// Conversions attributed through a click faster than this are `too_fast` (SPEC §8).
    pub min_lag_seconds: u64,
    /// `click` or `coupon` (SPEC §8).
    pub coupon_priority: String,
}

impl Offer {
    /// An offer with the defaults of every optional column.
    pub fn new(offer_id: String, destination_url: String, postback_token: String, currency: String, cookie_days: u32) -> Offer {
        Offer {
            offer_id,
            destination_url,
            postback_token,
            currency,
            cookie_days,
            lock_days: DEFAULT_LOCK_DAYS,
            min_lag_seconds: 0,
            coupon_priority: COUPON_PRIORITY_CLICK.to_string(),
        }
    }

    /// The lock period in µs.
    pub fn lock_micros(&self) -> i64 {
        i64::from(self.lock_days) * 86_400 * 1_000_000
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub code: String,
    pub offer_id: String,
    pub member_id: String,
    /// Empty: the offer's destination.
    pub destination_url: String,
    pub created_at: String,
}

impl Link {
    pub fn new(code: String, offer_id: String, member_id: String, destination_url: Option<String>, now: DateTime<Utc>) -> Link {
        Link {
            code,
            offer_id,
            member_id,
            destination_url: destination_url.unwrap_or_default(),
            created_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }
}

/// `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// First characters a spreadsheet takes for a formula (tab and CR, also dangerous there,
/// are control characters, refused anywhere in an id).
pub const FORMULA_LEADS: [char; 4] = ['=', '+', '-', '@'];

/// Offer and member ids: 1 to 128 characters, no control characters, no surrounding spaces,
/// and not starting with [`FORMULA_LEADS`], so that an id like `=HYPERLINK("…")` never
/// becomes a formula in a spreadsheet opening an export. Every new id must pass this.
pub fn is_valid_id(id: &str) -> bool {
    is_readable_id(id) && !id.starts_with(FORMULA_LEADS)
}

/// The rule registry files are read with: [`is_valid_id`] without the formula rule, which
/// came later, so that a file holding an id created before it still loads (a refused file
/// would stop every link on the lake) while no such id can be created any more.
pub fn is_readable_id(id: &str) -> bool {
    (1..=128).contains(&id.chars().count()) && !id.chars().any(char::is_control) && id.trim() == id
}

/// What an id must be, for messages.
const ID_RULE: &str = "1 to 128 printable characters, not starting with = + - or @";

/// A destination must be an absolute http(s) URL with a host.
pub fn validate_destination(url_text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(url_text).map_err(|e| format!("destination_url {url_text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("destination_url {url_text:?} must be an http or https URL"));
    }
    Ok(url)
}

/// A new random base62 code of 8 characters.
pub fn generate_code() -> String {
    let mut rng = rand::rng();
    (0..GENERATED_CODE_LEN)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

impl Offer {
    /// Checks a new or changed offer.
    pub fn validate(&self) -> Result<(), String> {
        self.check(is_valid_id)
    }

    fn check(&self, id_ok: fn(&str) -> bool) -> Result<(), String> {
        if !id_ok(&self.offer_id) {
            return Err(format!("offer_id {:?} must be {ID_RULE}", self.offer_id));
        }
        validate_destination(&self.destination_url)?;
        // Empty: the offer takes no postbacks (browser conversions only).
        if self.postback_token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("postback_token must not contain spaces or control characters".into());
        }
        if normalize_currency(&self.currency).as_deref() != Some(self.currency.as_str()) {
            return Err(format!("currency {:?} must be 3 upper-case letters", self.currency));
        }
        if self.cookie_days > 3650 {
            return Err(format!("cookie_days {} must be from 0 to 3650", self.cookie_days));
        }
        if self.lock_days > MAX_LOCK_DAYS {
            return Err(format!("lock_days {} must be from 0 to {MAX_LOCK_DAYS}", self.lock_days));
        }
        if self.min_lag_seconds > 366 * 86_400 {
            return Err(format!("min_lag_seconds {} must be at most a year", self.min_lag_seconds));
        }
        if self.coupon_priority != COUPON_PRIORITY_CLICK && self.coupon_priority != COUPON_PRIORITY_COUPON {
            return Err(format!("coupon_priority {:?} must be click or coupon", self.coupon_priority));
        }
        Ok(())
    }
}

impl Link {
    /// Checks a new link.
    pub fn validate(&self) -> Result<(), String> {
        self.check(is_valid_id)
    }

    fn check(&self, id_ok: fn(&str) -> bool) -> Result<(), String> {
        if !is_valid_code(&self.code) {
            return Err(format!("code {:?} must match [A-Za-z0-9_-]{{1,64}}", self.code));
        }
        if !id_ok(&self.offer_id) {
            return Err(format!("offer_id {:?} must be {ID_RULE}", self.offer_id));
        }
        if !id_ok(&self.member_id) {
            return Err(format!("member_id {:?} must be {ID_RULE}", self.member_id));
        }
        if !self.destination_url.is_empty() {
            validate_destination(&self.destination_url)?;
        }
        Ok(())
    }
}

fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    // flexible: a short row (trailing columns left out) takes the defaults.
    csv::ReaderBuilder::new().has_headers(true).flexible(true).trim(csv::Trim::None).from_reader(bytes)
}

fn header_index(file: &str, headers: &csv::StringRecord, wanted: &[&str]) -> Result<Vec<Option<usize>>, LakeError> {
    let idx: Vec<Option<usize>> = wanted.iter().map(|w| headers.iter().position(|h| h.trim() == *w)).collect();
    for (name, i) in wanted.iter().zip(&idx) {
        // The first two columns of each file are required; the rest have defaults.
        if i.is_none() && (*name == wanted[0] || *name == wanted[1]) {
            return Err(LakeError::Registry { file: file.into(), line: 1, reason: format!("missing column {name:?}") });
        }
    }
    Ok(idx)
}

fn field(rec: &csv::StringRecord, i: Option<usize>) -> &str {
    i.and_then(|i| rec.get(i)).unwrap_or("").trim()
}

/// Parses `offers.csv`, selecting columns by name; empty `currency` and `cookie_days` take
/// their defaults.
pub fn parse_offers(bytes: &[u8]) -> Result<Vec<Offer>, LakeError> {
    const FILE: &str = crate::layout::OFFERS_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &OFFER_COLUMNS)?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let cookie = field(&rec, idx[4]);
        let number = |i: usize, name: &str, default: u64| -> Result<u64, LakeError> {
            match field(&rec, idx[i]) {
                "" => Ok(default),
                t => t.parse().map_err(|_| LakeError::Registry { file: FILE.into(), line, reason: format!("{name} {t:?} is not a whole number") }),
            }
        };
        let lock_days = number(5, "lock_days", u64::from(DEFAULT_LOCK_DAYS))?;
        let min_lag_seconds = number(6, "min_lag_seconds", 0)?;
        let offer = Offer {
            offer_id: field(&rec, idx[0]).to_string(),
            destination_url: field(&rec, idx[1]).to_string(),
            postback_token: field(&rec, idx[2]).to_string(),
            currency: match field(&rec, idx[3]) {
                "" => DEFAULT_CURRENCY.to_string(),
                c => c.to_ascii_uppercase(),
            },
            cookie_days: if cookie.is_empty() {
                DEFAULT_COOKIE_DAYS
            } else {
                cookie.parse().map_err(|_| LakeError::Registry { file: FILE.into(), line, reason: format!("cookie_days {cookie:?} is not a whole number") })?
            },
            lock_days: u32::try_from(lock_days).unwrap_or(u32::MAX),
            min_lag_seconds,
            coupon_priority: match field(&rec, idx[7]) {
                "" => COUPON_PRIORITY_CLICK.to_string(),
                c => c.to_ascii_lowercase(),
            },
        };
        offer.check(is_readable_id).map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
        out.push(offer);
    }
    Ok(out)
}

/// Parses `links.csv`, selecting columns by name.
pub fn parse_links(bytes: &[u8]) -> Result<Vec<Link>, LakeError> {
    const FILE: &str = crate::layout::LINKS_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &LINK_COLUMNS)?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let link = Link {
            code: field(&rec, idx[0]).to_string(),
            offer_id: field(&rec, idx[1]).to_string(),
            member_id: field(&rec, idx[2]).to_string(),
            destination_url: field(&rec, idx[3]).to_string(),
            created_at: field(&rec, idx[4]).to_string(),
        };
        link.check(is_readable_id).map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
        out.push(link);
    }
    Ok(out)
}

/// A commission rule (SPEC §7), as written in `registry/commissions.csv`. Empty `member_id`:
/// every member of the offer; empty `event`: every conversion event; `event = click`: a
/// per-click payout of `flat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommissionRule {
    pub offer_id: String,
    pub member_id: String,
    pub event: String,
    /// A decimal with at most 4 fractional digits, as written (empty: none).
    pub percent: String,
    /// An amount (money rules of SPEC §3), as written (empty: none).
    pub flat: String,
    /// `YYYY-MM-DD` in the report zone (empty: always).
    pub valid_from: String,
}

/// Largest accepted `percent`.
pub const MAX_PERCENT: &str = "1000";

/// Parses a commission percent (`12.5`, `0.0001`) into units of 10⁻⁴ percent, exactly.
pub fn parse_percent_e4(text: &str) -> Result<i64, String> {
    let bad = || format!("percent {text:?} must be a non-negative decimal with at most 4 decimal places, at most {MAX_PERCENT}");
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 4
        || !frac.bytes().all(|b| b.is_ascii_digit()) || (text.contains('.') && frac.is_empty())
        || int_part.len() > 6
    {
        return Err(bad());
    }
    let units: i64 = int_part.parse().map_err(|_| bad())?;
    let mut e4 = units * 10_000;
    for (i, b) in frac.bytes().enumerate() {
        e4 += i64::from(b - b'0') * 10i64.pow(3 - i as u32);
    }
    if e4 > 1000 * 10_000 {
        return Err(bad());
    }
    Ok(e4)
}

impl CommissionRule {
    /// `percent` in units of 10⁻⁴ percent (`12.5` → 125000), when set.
    pub fn percent_e4(&self) -> Option<i64> {
        (!self.percent.is_empty()).then(|| parse_percent_e4(&self.percent).ok()).flatten()
    }
    /// `flat` in micros, when set.
    pub fn flat_micros(&self) -> Option<i64> {
        (!self.flat.is_empty()).then(|| crate::money::parse_amount_micros(&self.flat).ok()).flatten()
    }
    /// `valid_from`, when set.
    pub fn valid_from_date(&self) -> Option<chrono::NaiveDate> {
        chrono::NaiveDate::parse_from_str(&self.valid_from, "%Y-%m-%d").ok()
    }
    /// Is this a per-click rule?
    pub fn is_click_rule(&self) -> bool {
        self.event == crate::schema::CLICK_EVENT
    }
    /// The fields that make two rules the same rule.
    pub fn identity(&self) -> (&str, &str, &str, &str) {
        (&self.offer_id, &self.member_id, &self.event, &self.valid_from)
    }

    /// Checks a new rule.
    pub fn validate(&self) -> Result<(), String> {
        self.check(is_valid_id)
    }

    fn check(&self, id_ok: fn(&str) -> bool) -> Result<(), String> {
        if !id_ok(&self.offer_id) {
            return Err(format!("offer_id {:?} must be {ID_RULE}", self.offer_id));
        }
        if !self.member_id.is_empty() && !id_ok(&self.member_id) {
            return Err(format!("member_id {:?} must be empty or {ID_RULE}", self.member_id));
        }
        if !self.event.is_empty() && !crate::schema::is_valid_event(&self.event) {
            return Err(format!("event {:?} must be empty, click, or match [a-z0-9_]{{1,32}}", self.event));
        }
        if !self.percent.is_empty() {
            parse_percent_e4(&self.percent)?;
        }
        if !self.flat.is_empty() {
            crate::money::parse_amount_micros(&self.flat).map_err(|e| format!("flat {:?}: {e}", self.flat))?;
        }
        if self.percent.is_empty() && self.flat.is_empty() {
            return Err("a rule needs a percent, a flat amount or both".into());
        }
        if self.is_click_rule() && !self.percent.is_empty() {
            return Err("a click rule pays a flat amount per click; it takes no percent".into());
        }
        if !self.valid_from.is_empty() && self.valid_from_date().is_none() {
            return Err(format!("valid_from {:?} must be a YYYY-MM-DD date", self.valid_from));
        }
        Ok(())
    }
}

/// Parses `commissions.csv`, selecting columns by name. Two rules equal in offer, member,
/// event and `valid_from` are an error naming both lines.
pub fn parse_commissions(bytes: &[u8]) -> Result<Vec<CommissionRule>, LakeError> {
    const FILE: &str = crate::layout::COMMISSIONS_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &COMMISSION_COLUMNS)?;
    let mut out: Vec<CommissionRule> = Vec::new();
    let mut seen: HashMap<(String, String, String, String), u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let rule = CommissionRule {
            offer_id: field(&rec, idx[0]).to_string(),
            member_id: field(&rec, idx[1]).to_string(),
            event: field(&rec, idx[2]).to_ascii_lowercase(),
            percent: field(&rec, idx[3]).to_string(),
            flat: field(&rec, idx[4]).to_string(),
            valid_from: field(&rec, idx[5]).to_string(),
        };
        rule.check(is_readable_id).map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
        let (o, m, e, v) = rule.identity();
        let key = (o.to_string(), m.to_string(), e.to_string(), v.to_string());
        if let Some(first) = seen.get(&key) {
            return Err(LakeError::Registry {
                file: FILE.into(),
                line,
                reason: format!(
                    "this rule repeats the rule of line {first} (same offer {o:?}, member {m:?}, event {e:?} and valid_from {v:?})"
                ),
            });
        }
        seen.insert(key, line);
        out.push(rule);
    }
    Ok(out)
}

pub fn write_commissions(rules: &[CommissionRule]) -> Vec<u8> {
    write_csv(&COMMISSION_COLUMNS, rules)
}

fn write_csv<T: Serialize>(header: &[&str], rows: &[T]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    // Writing to a Vec cannot fail; the records are plain strings and numbers.
    w.write_record(header).expect("write to memory");
    for row in rows {
        w.serialize(row).expect("write to memory");
    }
    w.into_inner().expect("flush to memory")
}

pub fn write_offers(offers: &[Offer]) -> Vec<u8> {
    write_csv(&OFFER_COLUMNS, offers)
}

pub fn write_links(links: &[Link]) -> Vec<u8> {
    write_csv(&LINK_COLUMNS, links)
}

/// A coupon code of an offer (SPEC §8): a conversion of the offer that sends it, on a date
/// (report zone) in `[valid_from, valid_to]`, can be attributed to `member_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    /// Upper-case, `[A-Z0-9_-]{1,64}`; unique per offer.
    pub code: String,
    pub offer_id: String,
    pub member_id: String,
    /// `YYYY-MM-DD` or empty (open).
    pub valid_from: String,
    /// `YYYY-MM-DD` or empty (open), inclusive.
    pub valid_to: String,
}

fn parse_day(text: &str) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().filter(|d| d.format("%Y-%m-%d").to_string() == text)
}

impl Coupon {
    pub fn valid_from_date(&self) -> Option<chrono::NaiveDate> {
        parse_day(&self.valid_from)
    }

    pub fn valid_to_date(&self) -> Option<chrono::NaiveDate> {
        parse_day(&self.valid_to)
    }

    /// Whether the coupon is valid on `date` (a date in the report zone).
    pub fn valid_on(&self, date: chrono::NaiveDate) -> bool {
        self.valid_from_date().is_none_or(|f| f <= date) && self.valid_to_date().is_none_or(|t| date <= t)
    }

    pub fn validate(&self) -> Result<(), String> {
        if crate::schema::normalize_coupon(&self.code).as_deref() != Some(self.code.as_str()) {
            return Err(format!("code {:?} must match [A-Z0-9_-]{{1,64}} (codes are upper-cased)", self.code));
        }
        if !is_valid_id(&self.offer_id) {
            return Err(format!("offer_id {:?} must be 1 to 128 printable characters", self.offer_id));
        }
        if !is_valid_id(&self.member_id) {
            return Err(format!("member_id {:?} must be 1 to 128 printable characters", self.member_id));
        }
        for (name, text) in [("valid_from", &self.valid_from), ("valid_to", &self.valid_to)] {
            if !text.is_empty() && parse_day(text).is_none() {
                return Err(format!("{name} {text:?} must be a YYYY-MM-DD date"));
            }
        }
        if let (Some(f), Some(t)) = (self.valid_from_date(), self.valid_to_date()) {
            if t < f {
                return Err(format!("valid_to {t} is before valid_from {f}"));
            }
        }
        Ok(())
    }
}

/// Parses `coupons.csv`, selecting columns by name; codes are upper-cased. A code listed
/// twice for one offer (in any case) is an error naming both lines.
pub fn parse_coupons(bytes: &[u8]) -> Result<Vec<Coupon>, LakeError> {
    const FILE: &str = crate::layout::COUPONS_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &COUPON_COLUMNS)?;
    if idx[2].is_none() {
        return Err(LakeError::Registry { file: FILE.into(), line: 1, reason: "missing column \"member_id\"".into() });
    }
    let mut out: Vec<Coupon> = Vec::new();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let coupon = Coupon {
            code: field(&rec, idx[0]).to_ascii_uppercase(),
            offer_id: field(&rec, idx[1]).to_string(),
            member_id: field(&rec, idx[2]).to_string(),
            valid_from: field(&rec, idx[3]).to_string(),
            valid_to: field(&rec, idx[4]).to_string(),
        };
        coupon.validate().map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
        let key = (coupon.offer_id.clone(), coupon.code.clone());
        if let Some(first) = seen.get(&key) {
            return Err(LakeError::Registry {
                file: FILE.into(),
                line,
                reason: format!("code {:?} of offer {:?} is already on line {first} (codes are unique per offer)", key.1, key.0),
            });
        }
        seen.insert(key, line);
        out.push(coupon);
    }
    Ok(out)
}

pub fn write_coupons(coupons: &[Coupon]) -> Vec<u8> {
    write_csv(&COUPON_COLUMNS, coupons)
}

/// Columns of `registry/adjustment_imports.csv`, the ledger of `collector adjustments import`.
pub const ADJUSTMENT_IMPORT_COLUMNS: [&str; 8] =
    ["import_id", "offer_id", "sha256", "rows", "skipped", "hits_file", "source", "imported_at"];

/// One import of an adjustments CSV (SPEC §7): which file (by the SHA-256 of its bytes) was
/// imported for which offer, how many rows it wrote and skipped, and the hits file holding
/// them. Importing the same bytes for the same offer again writes nothing, and rows whose
/// `adjustment_id` is in an earlier import's hits file are skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentImport {
    /// A UUIDv7, also the name of the hits file.
    pub import_id: String,
    pub offer_id: String,
    /// Lower-case hex SHA-256 of the imported file's bytes.
    pub sha256: String,
    /// Rows written as adjustment hits.
    pub rows: u64,
    /// Rows skipped because their `adjustment_id` was already imported for the offer.
    pub skipped: u64,
    /// The hits file, relative to the lake root; empty when every row was skipped.
    pub hits_file: String,
    /// The imported file's name, for people reading the ledger.
    pub source: String,
    /// RFC 3339, UTC; also the `ts` of every hit the import wrote.
    pub imported_at: String,
}

/// Parses the adjustment-import ledger, selecting columns by name.
pub fn parse_adjustment_imports(bytes: &[u8]) -> Result<Vec<AdjustmentImport>, LakeError> {
    const FILE: &str = crate::layout::ADJUSTMENT_IMPORTS_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &ADJUSTMENT_IMPORT_COLUMNS)?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let count = |i: usize, name: &str| -> Result<u64, LakeError> {
            match field(&rec, idx[i]) {
                "" => Ok(0),
                t => t.parse().map_err(|_| LakeError::Registry { file: FILE.into(), line, reason: format!("{name} {t:?} is not a whole number") }),
            }
        };
        out.push(AdjustmentImport {
            import_id: field(&rec, idx[0]).to_string(),
            offer_id: field(&rec, idx[1]).to_string(),
            sha256: field(&rec, idx[2]).to_ascii_lowercase(),
            rows: count(3, "rows")?,
            skipped: count(4, "skipped")?,
            hits_file: field(&rec, idx[5]).to_string(),
            source: field(&rec, idx[6]).to_string(),
            imported_at: field(&rec, idx[7]).to_string(),
        });
    }
    Ok(out)
}

pub fn write_adjustment_imports(imports: &[AdjustmentImport]) -> Vec<u8> {
    write_csv(&ADJUSTMENT_IMPORT_COLUMNS, imports)
}

/// Columns of `registry/paused.csv`, in file order.
pub const PAUSE_COLUMNS: [&str; 3] = ["kind", "id", "paused_at"];
pub const PAUSE_KIND_OFFER: &str = "offer";
pub const PAUSE_KIND_LINK: &str = "link";

/// A paused offer (`kind = offer`, `id` its offer id) or link (`kind = link`, `id` its code).
/// A paused link, or any link of a paused offer, still redirects to its destination but
/// records no click and adds no click id; conversions are still recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub kind: String,
    pub id: String,
    /// RFC 3339, UTC.
    pub paused_at: String,
}

/// Parses `paused.csv`, selecting columns by name.
pub fn parse_pauses(bytes: &[u8]) -> Result<Vec<Pause>, LakeError> {
    const FILE: &str = crate::layout::PAUSED_CSV;
    let mut rdr = reader(bytes);
    let headers = rdr.headers().map_err(|e| LakeError::Registry { file: FILE.into(), line: 1, reason: e.to_string() })?.clone();
    let idx = header_index(FILE, &headers, &PAUSE_COLUMNS)?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| LakeError::Registry { file: FILE.into(), line: e.position().map_or(0, |p| p.line()), reason: e.to_string() })?;
        let line = rec.position().map_or(0, |p| p.line());
        let pause = Pause { kind: field(&rec, idx[0]).to_string(), id: field(&rec, idx[1]).to_string(), paused_at: field(&rec, idx[2]).to_string() };
        if pause.kind != PAUSE_KIND_OFFER && pause.kind != PAUSE_KIND_LINK {
            return Err(LakeError::Registry { file: FILE.into(), line, reason: format!("kind {:?} must be offer or link", pause.kind) });
        }
        out.push(pause);
    }
    Ok(out)
}

pub fn write_pauses(pauses: &[Pause]) -> Vec<u8> {
    write_csv(&PAUSE_COLUMNS, pauses)
}

/// Offers and links indexed for the collector's lookups.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub offers: HashMap<String, Offer>,
    pub links: HashMap<String, Link>,
    /// Paused offer ids and link codes.
    pub paused_offers: HashMap<String, String>,
    pub paused_links: HashMap<String, String>,
}

impl Registry {
    pub fn new(offers: Vec<Offer>, links: Vec<Link>) -> Registry {
        Registry {
            offers: offers.into_iter().map(|o| (o.offer_id.clone(), o)).collect(),
            links: links.into_iter().map(|l| (l.code.clone(), l)).collect(),
            paused_offers: HashMap::new(),
            paused_links: HashMap::new(),
        }
    }
    /// With the pauses of `paused.csv`.
    pub fn with_pauses(mut self, pauses: &[Pause]) -> Registry {
        for p in pauses {
            let map = if p.kind == PAUSE_KIND_OFFER { &mut self.paused_offers } else { &mut self.paused_links };
            map.insert(p.id.clone(), p.paused_at.clone());
        }
        self
    }
    /// When the link, or its offer, was paused (the link's own pause first); `None`: active.
    pub fn paused_since(&self, link: &Link) -> Option<&str> {
        self.paused_links.get(&link.code).or_else(|| self.paused_offers.get(&link.offer_id)).map(String::as_str)
    }
    pub fn offer(&self, id: &str) -> Option<&Offer> {
        self.offers.get(id)
    }
    pub fn link(&self, code: &str) -> Option<&Link> {
        self.links.get(code)
    }
    /// The destination a link redirects to: its own, or its offer's.
    pub fn destination(&self, link: &Link) -> Option<String> {
        if !link.destination_url.is_empty() {
            return Some(link.destination_url.clone());
        }
        self.offer(&link.offer_id).map(|o| o.destination_url.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_a_spreadsheet_would_take_for_formulas_are_refused_for_new_records_only() {
        for bad in ["=HYPERLINK(\"http://evil\")", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "a\tb", " ann", ""] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
        for good in ["ann", "bob", "sneakers", "newsletter", "Ann Smith", "a=b", "x-1", "ann@ig", "élodie"] {
            assert!(is_valid_id(good), "{good:?}");
        }
        let link = Link::new("c1".into(), "shoes".into(), "=HYPERLINK(\"http://evil\")".into(), None, chrono::Utc::now());
        assert!(link.validate().unwrap_err().starts_with("member_id"));
        // A file written before the rule still loads: refusing it would stop every link.
        let legacy = b"code,offer_id,member_id,destination_url,created_at\nc1,shoes,-ann,,2026-01-01T00:00:00Z\n";
        assert_eq!(parse_links(legacy).unwrap()[0].member_id, "-ann");
    }

    #[test]
    fn the_sample_registry_passes_the_rules_for_new_records() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/registry");
        let offers = parse_offers(&std::fs::read(dir.join("offers.csv")).unwrap()).unwrap();
        let links = parse_links(&std::fs::read(dir.join("links.csv")).unwrap()).unwrap();
        let rules = parse_commissions(&std::fs::read(dir.join("commissions.csv")).unwrap()).unwrap();
        assert!(!offers.is_empty() && !links.is_empty() && !rules.is_empty());
        offers.iter().for_each(|o| o.validate().unwrap());
        links.iter().for_each(|l| l.validate().unwrap());
        rules.iter().for_each(|r| r.validate().unwrap());
    }

    #[test]
    fn hand_written_offers_short_rows_and_short_tokens_read() {
        // The spec fixes columns and defaults only: a short token, a short row, an empty
        // token (browser conversions only) and cookie_days 0 are all a brand's choice.
        let csv = "offer_id,destination_url,postback_token,currency,cookie_days\n\
                   a,https://a.example/,tok\n\
                   b,https://b.example/,,eur,0\n";
        let offers = parse_offers(csv.as_bytes()).unwrap();
        assert_eq!(offers[0].postback_token, "tok");
        assert_eq!((offers[0].currency.as_str(), offers[0].cookie_days), ("USD", 28));
        assert_eq!((offers[1].postback_token.as_str(), offers[1].currency.as_str(), offers[1].cookie_days), ("", "EUR", 0));
        let e = parse_offers(b"offer_id,destination_url,postback_token\nc,https://c.example/,a b\n").unwrap_err().to_string();
        assert!(e.contains("postback_token") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn offers_round_trip_with_defaults() {
        let csv = b"offer_id,destination_url,postback_token,currency,cookie_days\nshoes,https://shop.example.com/,secret-token-1,,\nbags,https://bags.example.com/x,secret-token-2,eur,7\n";
        let offers = parse_offers(csv).unwrap();
        assert_eq!(offers[0].currency, "USD");
        assert_eq!(offers[0].cookie_days, 28);
        assert_eq!(offers[1].currency, "EUR");
        assert_eq!(offers[1].cookie_days, 7);
        assert_eq!(parse_offers(&write_offers(&offers)).unwrap(), offers);
    }

    #[test]
    fn columns_by_name_not_position() {
        let csv = b"member_id,code,offer_id,created_at,destination_url\n\"ann, the \"\"best\"\"\",abc,shoes,2026-01-01T00:00:00Z,\n";
        let links = parse_links(csv).unwrap();
        assert_eq!(links[0].code, "abc");
        assert_eq!(links[0].member_id, "ann, the \"best\"");
        assert_eq!(parse_links(&write_links(&links)).unwrap(), links);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let csv = b"code,offer_id,member_id,destination_url,created_at\nok,o,m,,\nbad code!,o,m,,\n";
        let err = parse_links(csv).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("code"), "{err}");
    }

    #[test]
    fn sample_registry_parses() {
        let offers = parse_offers(include_bytes!("../../data/registry/offers.csv")).unwrap();
        let links = parse_links(include_bytes!("../../data/registry/links.csv")).unwrap();
        let reg = Registry::new(offers, links);
        for link in reg.links.values() {
            assert!(reg.offer(&link.offer_id).is_some(), "{} names an unknown offer", link.code);
        }
    }

    #[test]
    fn offers_from_before_the_new_columns_take_defaults() {
        let csv = "offer_id,destination_url,postback_token,currency,cookie_days\na,https://a.example/,t,EUR,7\n";
        let o = &parse_offers(csv.as_bytes()).unwrap()[0];
        assert_eq!((o.lock_days, o.min_lag_seconds, o.coupon_priority.as_str()), (30, 0, "click"));
        let csv = "offer_id,destination_url,postback_token,currency,cookie_days,lock_days,min_lag_seconds,coupon_priority\n\
                   a,https://a.example/,t,EUR,7,14,10,Coupon\n";
        let offers = parse_offers(csv.as_bytes()).unwrap();
        assert_eq!((offers[0].lock_days, offers[0].min_lag_seconds, offers[0].coupon_priority.as_str()), (14, 10, "coupon"));
        assert_eq!(parse_offers(&write_offers(&offers)).unwrap(), offers);
        let e = parse_offers(b"offer_id,destination_url,coupon_priority\na,https://a.example/,first\n").unwrap_err().to_string();
        assert!(e.contains("coupon_priority") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn coupons() {
        let csv = b"code,offer_id,member_id,valid_from,valid_to\nann10,shoes,ann,2026-03-01,2026-03-31\nBOB,shoes,bob,,\nANN10,news,ann,,\n";
        let c = parse_coupons(csv).unwrap();
        assert_eq!(c[0].code, "ANN10");
        let d = |m, day| chrono::NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert!(c[0].valid_on(d(3, 1)) && c[0].valid_on(d(3, 31)));
        assert!(!c[0].valid_on(d(2, 28)) && !c[0].valid_on(d(4, 1)));
        assert!(c[1].valid_on(d(1, 1)));
        assert_eq!(parse_coupons(&write_coupons(&c)).unwrap(), c);
        let e = parse_coupons(b"code,offer_id,member_id\nA,o,m\na,o,n\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("line 2"), "{e}");
        let e = parse_coupons(b"code,offer_id,member_id\nA B,o,m\n").unwrap_err().to_string();
        assert!(e.contains("code") && e.contains("line 2"), "{e}");
        let e = parse_coupons(b"code,offer_id,member_id,valid_from,valid_to\nA,o,m,2026-03-05,2026-03-01\n").unwrap_err().to_string();
        assert!(e.contains("before valid_from"), "{e}");
        let e = parse_coupons(b"code,offer_id,member_id,valid_from\nA,o,m,2026-3-5\n").unwrap_err().to_string();
        assert!(e.contains("valid_from"), "{e}");
        assert!(parse_coupons(b"code,offer_id\nA,o\n").unwrap_err().to_string().contains("member_id"));
    }

    #[test]
    fn commission_rules() {
        let csv = "offer_id,member_id,event,percent,flat,valid_from\n\
                   shoes,,,10,,\n\
                   shoes,ann,purchase,12.5,1.50,2026-03-01\n\
                   shoes,,click,,0.05,\n";
        let rules = parse_commissions(csv.as_bytes()).unwrap();
        assert_eq!(rules[0].percent_e4(), Some(100_000));
        assert_eq!(rules[1].percent_e4(), Some(125_000));
        assert_eq!(rules[1].flat_micros(), Some(1_500_000));
        assert!(rules[2].is_click_rule());
        assert_eq!(parse_commissions(&write_commissions(&rules)).unwrap(), rules);
        let dup = format!("{csv}shoes,ann,purchase,5,,2026-03-01\n");
        let e = parse_commissions(dup.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("line 3"), "{e}");
        for bad in ["shoes,,,10.12345,,", "shoes,,,-1,,", "shoes,,,,,", "shoes,,click,5,,", "shoes,,,1,1.1234567,", "shoes,,,1,,2026-02-30"] {
            let text = format!("offer_id,member_id,event,percent,flat,valid_from\n{bad}\n");
            assert!(parse_commissions(text.as_bytes()).is_err(), "{bad} should be refused");
        }
        assert_eq!(parse_percent_e4("0.0001"), Ok(1));
        assert_eq!(parse_percent_e4("100"), Ok(1_000_000));
        assert!(parse_percent_e4("1.").is_err() && parse_percent_e4(".5").is_err());
    }

    #[test]
    fn adjustment_import_ledger_round_trips() {
        let imports = vec![AdjustmentImport {
            import_id: "0190".into(),
            offer_id: "shoes".into(),
            sha256: "ab".repeat(32),
            rows: 3,
            skipped: 1,
            hits_file: "hits/date=2026-03-01/hour=07/adjustments-0190.parquet".into(),
            source: "march, refunds.csv".into(),
            imported_at: "2026-03-01T07:00:00Z".into(),
        }];
        assert_eq!(parse_adjustment_imports(&write_adjustment_imports(&imports)).unwrap(), imports);
        assert!(parse_adjustment_imports(b"import_id,offer_id,rows\na,b,x\n").unwrap_err().to_string().contains("line 2"));
    }

    #[test]
    fn codes() {
        let c = generate_code();
        assert_eq!(c.len(), 8);
        assert!(is_valid_code(&c));
        assert!(!is_valid_code(""));
        assert!(!is_valid_code(&"a".repeat(65)));
        assert!(!is_valid_code("a/b"));
    }
}
