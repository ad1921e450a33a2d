//! The registry (SPEC §1): `registry/offers.csv` and `registry/links.csv`, with a header
//! row, read and written by every collector sharing a lake.

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::money::normalize_currency;
use crate::LakeError;

pub const OFFER_COLUMNS: [&str; 5] = ["offer_id", "destination_url", "postback_token", "currency", "cookie_days"];
pub const LINK_COLUMNS: [&str; 5] = ["code", "offer_id", "member_id", "destination_url", "created_at"];
pub const DEFAULT_CURRENCY: &str = "USD";
pub const DEFAULT_COOKIE_DAYS: u32 = 28;
pub const GENERATED_CODE_LEN: usize = 8;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub offer_id: String,
    pub destination_url: String,
    pub postback_token: String,
    pub currency: String,
    pub cookie_days: u32,
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

/// Offer and member ids: 1 to 128 characters, no control characters, no surrounding spaces.
pub fn is_valid_id(id: &str) -> bool {
    (1..=128).contains(&id.chars().count()) && !id.chars().any(char::is_control) && id.trim() == id
}

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
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_id(&self.offer_id) {
            return Err(format!("offer_id {:?} must be 1 to 128 printable characters", self.offer_id));
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
        Ok(())
    }
}

impl Link {
    pub fn validate(&self) -> Result<(), String> {
        if !is_valid_code(&self.code) {
            return Err(format!("code {:?} must match [A-Za-z0-9_-]{{1,64}}", self.code));
        }
        if !is_valid_id(&self.offer_id) {
            return Err(format!("offer_id {:?} must be 1 to 128 printable characters", self.offer_id));
        }
        if !is_valid_id(&self.member_id) {
            return Err(format!("member_id {:?} must be 1 to 128 printable characters", self.member_id));
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
        };
        offer.validate().map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
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
        link.validate().map_err(|reason| LakeError::Registry { file: FILE.into(), line, reason })?;
        out.push(link);
    }
    Ok(out)
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

/// Offers and links indexed for the collector's lookups.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub offers: HashMap<String, Offer>,
    pub links: HashMap<String, Link>,
}

impl Registry {
    pub fn new(offers: Vec<Offer>, links: Vec<Link>) -> Registry {
        Registry {
            offers: offers.into_iter().map(|o| (o.offer_id.clone(), o)).collect(),
            links: links.into_iter().map(|l| (l.code.clone(), l)).collect(),
        }
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
    fn codes() {
        let c = generate_code();
        assert_eq!(c.len(), 8);
        assert!(is_valid_code(&c));
        assert!(!is_valid_code(""));
        assert!(!is_valid_code(&"a".repeat(65)));
        assert!(!is_valid_code("a/b"));
    }
}
