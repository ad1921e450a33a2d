//! The collector's view of the registry: offers and links from the lake, cached in
//! memory and re-read when their e-tags change, so a link created through any collector
//! (or the CLI) is served by every collector on the lake within seconds. Creating a link
//! or an offer is a compare-and-swap update of the CSV, so concurrent creates lose nothing.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lake::registry::{self, CommissionRule, Link, Offer, Registry};
use lake::{layout, Lake, LakeError};
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no offer {0:?} (`collector offers list` shows them)")]
    UnknownOffer(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// A link to create.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub offer_id: String,
    pub member_id: String,
    #[serde(default)]
    pub destination_url: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
}

async fn load_offers(lake: &Lake) -> Result<Vec<Offer>, LakeError> {
    match lake.get_optional(&layout::offers()).await? {
        Some(b) => registry::parse_offers(&b),
        None => Ok(Vec::new()),
    }
}

/// Reads `paused.csv` (none: nothing paused).
pub async fn load_pauses(lake: &Lake) -> Result<Vec<registry::Pause>, LakeError> {
    match lake.get_optional(&layout::paused()).await? {
        Some(b) if !b.is_empty() => registry::parse_pauses(&b),
        _ => Ok(Vec::new()),
    }
}

/// Reads the offers, links and pauses.
pub async fn load(lake: &Lake) -> Result<Registry, LakeError> {
    let offers = load_offers(lake).await?;
    let links = match lake.get_optional(&layout::links()).await? {
        Some(b) => registry::parse_links(&b)?,
        None => Vec::new(),
    };
    Ok(Registry::new(offers, links).with_pauses(&load_pauses(lake).await?))
}

/// What [`add_offer`] and [`update_offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferChange {
    Added,
    /// The flags given changed the existing offer ([`update_offer`] only).
    Updated,
    /// The offer existed as given: nothing written.
    Unchanged,
}

/// The settings an `offers add --update` changes: only those given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfferEdit {
    pub destination_url: Option<String>,
    pub postback_token: Option<String>,
    pub currency: Option<String>,
    pub cookie_days: Option<u32>,
    pub lock_days: Option<u32>,
    pub min_lag_seconds: Option<u64>,
    pub coupon_priority: Option<String>,
}

impl OfferEdit {
    /// Sets the given settings on `o`.
    pub fn apply_to(&self, o: &mut Offer) {
        let set = |to: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                to.clone_from(v);
            }
        };
        set(&mut o.destination_url, &self.destination_url);
        set(&mut o.postback_token, &self.postback_token);
        set(&mut o.currency, &self.currency);
        set(&mut o.coupon_priority, &self.coupon_priority);
        o.cookie_days = self.cookie_days.unwrap_or(o.cookie_days);
        o.lock_days = self.lock_days.unwrap_or(o.lock_days);
        o.min_lag_seconds = self.min_lag_seconds.unwrap_or(o.min_lag_seconds);
    }
}

/// The settings in which two versions of an offer differ, for messages (the token is
/// named, never shown).
fn offer_differences(old: &Offer, new: &Offer) -> Vec<String> {
    let mut out = Vec::new();
    let mut diff = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} (given: {b})"));
        }
    };
    diff("destination", old.destination_url.clone(), new.destination_url.clone());
    diff("currency", old.currency.clone(), new.currency.clone());
    diff("cookie days", old.cookie_days.to_string(), new.cookie_days.to_string());
    diff("lock days", old.lock_days.to_string(), new.lock_days.to_string());
    diff("min lag", format!("{}s", old.min_lag_seconds), format!("{}s", new.min_lag_seconds));
    diff("coupon priority", old.coupon_priority.clone(), new.coupon_priority.clone());
    if old.postback_token != new.postback_token {
        out.push("postback token (another value given)".into());
    }
    out
}

/// Adds an offer (compare-and-swap). An existing offer with the same settings is left as it
/// is; one with other settings is refused, naming them: changing an offer takes
/// [`update_offer`] (`offers add --update`), so that re-running a set-up script without
/// `--currency` cannot silently turn an EUR offer into USD or replace its token.
pub async fn add_offer(lake: &Lake, offer: Offer, by: &str) -> Result<OfferChange, RegistryError> {
    offer.validate().map_err(RegistryError::Invalid)?;
    let row = offer.clone();
    let change = lake
        .update(&layout::offers(), move |current| {
            let mut offers = match current {
                Some(b) => registry::parse_offers(b)?,
                None => Vec::new(),
            };
            match offers.iter().find(|o| o.offer_id == offer.offer_id) {
                Some(existing) if *existing == offer => Ok((None, Ok(OfferChange::Unchanged))),
                Some(existing) => Ok((
                    None,
                    Err(RegistryError::Conflict(format!(
                        "offer {} exists with other settings: {}. Pass --update to change only the flags given",
                        offer.offer_id,
                        offer_differences(existing, &offer).join(", ")
                    ))),
                )),
                None => {
                    offers.push(offer.clone());
                    Ok((Some(Bytes::from(registry::write_offers(&offers))), Ok(OfferChange::Added)))
                }
            }
        })
        .await??;
    if change == OfferChange::Added {
        log_changes(lake, by, vec![Change::new(layout::OFFERS_CSV, "add", ("offer_id", &row.offer_id), None, Some(offer_row(&row)))]).await?;
    }
    Ok(change)
}

/// Changes the given settings of an existing offer and keeps the rest (compare-and-swap).
pub async fn update_offer(lake: &Lake, offer_id: &str, edit: OfferEdit, by: &str) -> Result<OfferChange, RegistryError> {
    let id = offer_id.to_string();
    let result = lake
        .update(&layout::offers(), move |current| {
            let mut offers = match current {
                Some(b) => registry::parse_offers(b)?,
                None => Vec::new(),
            };
            let Some(existing) = offers.iter_mut().find(|o| o.offer_id == id) else {
                return Ok((None, Err(RegistryError::UnknownOffer(id.clone()))));
            };
            let old = existing.clone();
            let mut new = old.clone();
            edit.apply_to(&mut new);
            if let Err(e) = new.validate() {
                return Ok((None, Err(RegistryError::Invalid(e))));
            }
            if new == old {
                return Ok((None, Ok((OfferChange::Unchanged, old, new))));
            }
            *existing = new.clone();
            Ok((Some(Bytes::from(registry::write_offers(&offers))), Ok((OfferChange::Updated, old, new))))
        })
        .await??;
    let (change, old, new) = result;
    if change == OfferChange::Updated {
        log_changes(lake, by, vec![Change::new(layout::OFFERS_CSV, "update", ("offer_id", offer_id), Some(offer_row(&old)), Some(offer_row(&new)))]).await?;
    }
    Ok(change)
}

/// What [`set_paused`] pauses or resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pausable {
    Offer,
    Link,
}

impl Pausable {
    fn kind(self) -> &'static str {
        match self {
            Pausable::Offer => registry::PAUSE_KIND_OFFER,
            Pausable::Link => registry::PAUSE_KIND_LINK,
        }
    }
}

/// Pauses (`paused = true`) or resumes an offer or a link; returns whether anything changed
/// (pausing a paused one, or resuming an active one, writes nothing). The offer or link
/// must exist.
pub async fn set_paused(lake: &Lake, what: Pausable, id: &str, paused: bool, by: &str) -> Result<bool, RegistryError> {
    let reg = load(lake).await?;
    let exists = match what {
        Pausable::Offer => reg.offers.contains_key(id),
        Pausable::Link => reg.links.contains_key(id),
    };
    if !exists {
        return Err(match what {
            Pausable::Offer => RegistryError::UnknownOffer(id.to_string()),
            Pausable::Link => RegistryError::Invalid(format!("there is no link with code {id:?} (`collector links list` shows them)")),
        });
    }
    let (kind, key) = (what.kind(), id.to_string());
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let done = lake
        .update(&layout::paused(), move |current| {
            let mut pauses = match current {
                Some(b) if !b.is_empty() => registry::parse_pauses(b)?,
                _ => Vec::new(),
            };
            let at = pauses.iter().position(|p| p.kind == kind && p.id == key);
            let old = at.map(|i| pauses[i].clone());
            match (paused, at) {
                (true, Some(_)) | (false, None) => return Ok((None, None)),
                (true, None) => pauses.push(registry::Pause { kind: kind.into(), id: key.clone(), paused_at: now.clone() }),
                (false, Some(i)) => {
                    pauses.remove(i);
                }
            }
            let new = paused.then(|| registry::Pause { kind: kind.into(), id: key.clone(), paused_at: now.clone() });
            Ok((Some(Bytes::from(registry::write_pauses(&pauses))), Some((old, new))))
        })
        .await?;
    let Some((old, new)) = done else { return Ok(false) };
    let json = |p: &registry::Pause| serde_json::json!({"kind": p.kind, "id": p.id, "paused_at": p.paused_at});
    let action = if paused { "pause" } else { "resume" };
    log_changes(lake, by, vec![Change::new(layout::PAUSED_CSV, action, (kind, id), old.as_ref().map(json), new.as_ref().map(json))]).await?;
    Ok(true)
}

/// One line of `registry/_changes.jsonl`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// RFC 3339, UTC, with milliseconds.
    pub ts: String,
    /// The command line (secrets masked) or the HTTP request that made the change.
    pub by: String,
    /// The registry file changed.
    pub file: &'static str,
    /// `add`, `update`, `pause` or `resume`.
    pub action: &'static str,
    /// The row's key: `{"offer_id": "shoes"}`, `{"code": "ann1"}`.
    pub key: serde_json::Value,
    /// The row before (null: added) and after (null: removed). Postback tokens are
    /// replaced by the first 12 hex digits of their SHA-256.
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
}

impl Change {
    pub fn new(file: &'static str, action: &'static str, key: (&str, &str), old: Option<serde_json::Value>, new: Option<serde_json::Value>) -> Change {
        let mut k = serde_json::Map::new();
        k.insert(key.0.to_string(), key.1.into());
        Change { ts: String::new(), by: String::new(), file, action, key: k.into(), old, new }
    }
}

/// An offer as logged: its row, with the postback token replaced by a digest (changes to
/// it still show, the secret does not).
pub fn offer_row(o: &Offer) -> serde_json::Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(t) = v.get_mut("postback_token") {
        *t = if o.postback_token.is_empty() {
            "".into()
        } else {
            use sha2::Digest;
            let d = sha2::Sha256::digest(o.postback_token.as_bytes());
            let hex: String = d.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}").into()
        };
    }
    v
}

/// Appends changes to `registry/_changes.jsonl` (compare-and-swap, so concurrent writers
/// lose no line). Called after the registry file itself was written: a crash in between
/// leaves a change without its line, never a line without its change.
pub async fn log_changes(lake: &Lake, by: &str, mut changes: Vec<Change>) -> Result<(), RegistryError> {
    if changes.is_empty() {
        return Ok(());
    }
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut lines = Vec::new();
    for c in &mut changes {
        c.ts.clone_from(&ts);
        c.by = by.to_string();
        lines.extend(serde_json::to_vec(c).map_err(|e| RegistryError::Invalid(e.to_string()))?);
        lines.push(b'\n');
    }
    lake.update(&layout::changes(), move |current| {
        let mut all = current.map(<[u8]>::to_vec).unwrap_or_default();
        if !all.is_empty() && !all.ends_with(b"\n") {
            all.push(b'\n');
        }
        all.extend_from_slice(&lines);
        Ok((Some(Bytes::from(all)), ()))
    })
    .await?;
    Ok(())
}

/// This process's command line for the change log, with the values of secret flags
/// (`--token`, `--admin-token`, `--ip-salt`) masked.
pub fn command_line() -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for a in std::env::args() {
        if mask_next {
            out.push("***".to_string());
            mask_next = false;
            continue;
        }
        let name = a.split('=').next().unwrap_or("");
        let secret = matches!(name, "--token" | "--admin-token" | "--ip-salt");
        if secret && a.contains('=') {
            out.push(format!("{name}=***"));
        } else {
            mask_next = secret;
            out.push(a);
        }
    }
    if let Some(first) = out.first_mut() {
        if let Some(base) = std::path::Path::new(first.as_str()).file_name().and_then(|b| b.to_str()) {
            *first = base.to_string();
        }
    }
    out.join(" ")
}

/// Creates a link: checks the offer exists and the code is free, generating a code when
/// none is given, and appends it to `links.csv` with a compare-and-swap update.
pub async fn add_link(lake: &Lake, new: NewLink, by: &str) -> Result<Link, RegistryError> {
    let offers = load_offers(lake).await?;
    if !offers.iter().any(|o| o.offer_id == new.offer_id) {
        return Err(RegistryError::UnknownOffer(new.offer_id));
    }
    let given_code = new.code.clone();
    let mut link = Link::new(
        given_code.clone().unwrap_or_else(registry::generate_code),
        new.offer_id,
        new.member_id,
        new.destination_url.filter(|d| !d.is_empty()),
        chrono::Utc::now(),
    );
    link.validate().map_err(RegistryError::Invalid)?;
    let link = lake.update(&layout::links(), move |current| {
        let mut links = match current {
            Some(b) => registry::parse_links(b)?,
            None => Vec::new(),
        };
        while links.iter().any(|l| l.code == link.code) {
            if given_code.is_some() {
                return Ok((None, Err(RegistryError::Conflict(format!("code {:?} is already taken", link.code)))));
            }
            link.code = registry::generate_code();
        }
        links.push(link.clone());
        Ok((Some(Bytes::from(registry::write_links(&links))), Ok(link.clone())))
    })
    .await??;
    log_changes(lake, by, vec![Change::new(layout::LINKS_CSV, "add", ("code", &link.code), None, serde_json::to_value(&link).ok())]).await?;
    Ok(link)
}

/// Reads `commissions.csv` (none: no rules).
pub async fn load_commissions(lake: &Lake) -> Result<Vec<CommissionRule>, LakeError> {
    match lake.get_optional(&layout::commissions()).await? {
        Some(b) if !b.is_empty() => registry::parse_commissions(&b),
        _ => Ok(Vec::new()),
    }
}

/// Adds a commission rule (SPEC §7) with a compare-and-swap update of `commissions.csv`.
/// The offer must exist, and no rule may already have the same offer, member, event and
/// `valid_from` (the pipeline refuses such a file): that one is named in the error.
pub async fn add_commission(lake: &Lake, rule: CommissionRule, by: &str) -> Result<(), RegistryError> {
    rule.validate().map_err(RegistryError::Invalid)?;
    let offers = load_offers(lake).await?;
    if !offers.iter().any(|o| o.offer_id == rule.offer_id) {
        return Err(RegistryError::UnknownOffer(rule.offer_id));
    }
    let row = rule.clone();
    lake.update(&layout::commissions(), move |current| {
        let mut rules = match current {
            Some(b) if !b.is_empty() => registry::parse_commissions(b)?,
            _ => Vec::new(),
        };
        if let Some(existing) = rules.iter().find(|r| r.identity() == rule.identity()) {
            return Ok((None, Err(RegistryError::Conflict(format!("a rule for this offer, member, event and valid_from exists already: {}", describe_rule(existing))))));
        }
        rules.push(rule.clone());
        Ok((Some(Bytes::from(registry::write_commissions(&rules))), Ok(())))
    })
    .await??;
    let key = format!("{} {} {} {}", row.offer_id, row.member_id, row.event, row.valid_from);
    log_changes(lake, by, vec![Change::new(layout::COMMISSIONS_CSV, "add", ("rule", key.trim()), None, serde_json::to_value(&row).ok())]).await
}

/// Reads `coupons.csv` (none: no coupons).
pub async fn load_coupons(lake: &Lake) -> Result<Vec<registry::Coupon>, LakeError> {
    match lake.get_optional(&layout::coupons()).await? {
        Some(b) if !b.is_empty() => registry::parse_coupons(&b),
        _ => Ok(Vec::new()),
    }
}

/// Adds coupon codes (SPEC §8) with one compare-and-swap update of `coupons.csv`: every
/// code is checked, its offer must exist, and a code already listed for the offer (in any
/// case) is refused, naming the member it belongs to. All or nothing.
pub async fn add_coupons(lake: &Lake, coupons: Vec<registry::Coupon>, by: &str) -> Result<usize, RegistryError> {
    let offers = load_offers(lake).await?;
    let mut seen = std::collections::HashSet::new();
    for c in &coupons {
        c.validate().map_err(|e| RegistryError::Invalid(format!("coupon {}: {e}", c.code)))?;
        if !offers.iter().any(|o| o.offer_id == c.offer_id) {
            return Err(RegistryError::UnknownOffer(c.offer_id.clone()));
        }
        if !seen.insert((c.offer_id.clone(), c.code.clone())) {
            return Err(RegistryError::Invalid(format!("code {} is given twice for offer {}", c.code, c.offer_id)));
        }
    }
    let rows = coupons.clone();
    let n = lake.update(&layout::coupons(), move |current| {
        let mut all = match current {
            Some(b) if !b.is_empty() => registry::parse_coupons(b)?,
            _ => Vec::new(),
        };
        for c in &coupons {
            if let Some(existing) = all.iter().find(|e| e.offer_id == c.offer_id && e.code == c.code) {
                return Ok((
                    None,
                    Err(RegistryError::Conflict(format!(
                        "code {} of offer {} exists already (member {})",
                        existing.code, existing.offer_id, existing.member_id
                    ))),
                ));
            }
        }
        all.extend(coupons.iter().cloned());
        Ok((Some(Bytes::from(registry::write_coupons(&all))), Ok(coupons.len())))
    })
    .await??;
    let changes = rows
        .iter()
        .map(|c| Change::new(layout::COUPONS_CSV, "add", ("code", &format!("{}/{}", c.offer_id, c.code)), None, serde_json::to_value(c).ok()))
        .collect();
    log_changes(lake, by, changes).await?;
    Ok(n)
}

/// Reads a brand's discount export for one offer: a CSV whose header names the code column
/// (`code`, `discount_code` or `name`; any case, spaces read as `_`) and the member column (`member_id` or
/// `member`), and optionally `valid_from`/`starts_at` and `valid_to`/`ends_at` (a date, or
/// an ISO timestamp whose date part is taken). Other columns are ignored (exports have
/// many). Every row is checked; an error names the line and the field.
pub fn parse_coupon_export(bytes: &[u8], offer: &str) -> Result<Vec<registry::Coupon>, String> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(bytes);
    let headers = rdr.headers().map_err(|e| format!("line 1: {e}"))?.clone();
    // Header names compared in lower case with spaces as underscores (`Starts At` = starts_at).
    let find = |names: &[&str]| headers.iter().position(|h| names.contains(&h.trim().to_ascii_lowercase().replace(' ', "_").as_str()));
    let code = find(&["code", "discount_code", "name"]).ok_or("line 1: no code column (code, discount_code or name)")?;
    let member = find(&["member_id", "member"]).ok_or("line 1: no member column (member_id or member)")?;
    let from = find(&["valid_from", "starts_at"]);
    let to = find(&["valid_to", "ends_at"]);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("line {line}: {e}"));
                continue;
            }
        };
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).unwrap_or("").trim().to_string();
        let day = |t: String| if t.len() > 10 && t.as_bytes()[10] == b'T' { t[..10].to_string() } else { t };
        let c = registry::Coupon {
            code: get(Some(code)).to_ascii_uppercase(),
            offer_id: offer.to_string(),
            member_id: get(Some(member)),
            valid_from: day(get(from)),
            valid_to: day(get(to)),
        };
        match c.validate() {
            Ok(()) => out.push(c),
            Err(e) => errors.push(format!("line {line}: {e}")),
        }
    }
    if !errors.is_empty() {
        let more = if errors.len() > 20 { format!(" (and {} more)", errors.len() - 20) } else { String::new() };
        return Err(format!("nothing imported: {}{more}", errors.into_iter().take(20).collect::<Vec<_>>().join("; ")));
    }
    Ok(out)
}

/// A rule as people read it: `offer=shoes member=(every) event=(every) percent=10 flat= valid_from=(always)`.
pub fn describe_rule(r: &CommissionRule) -> String {
    let or = |v: &str, empty: &str| if v.is_empty() { empty.to_string() } else { v.to_string() };
    format!(
        "offer={} member={} event={} percent={} flat={} valid_from={}",
        r.offer_id,
        or(&r.member_id, "(every)"),
        or(&r.event, "(every)"),
        or(&r.percent, "-"),
        or(&r.flat, "-"),
        or(&r.valid_from, "(always)")
    )
}

/// The in-memory registry of a running collector.
pub struct RegistryCache {
    lake: Lake,
    /// Where the last good registry is copied (the spool), so a collector can start while
    /// object storage is down.
    copy_dir: Option<PathBuf>,
    current: RwLock<Arc<Registry>>,
    state: tokio::sync::Mutex<Files>,
    last_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct Files {
    offers_tag: Option<String>,
    links_tag: Option<String>,
    paused_tag: Option<String>,
    offers: Vec<Offer>,
    links: Vec<Link>,
    pauses: Vec<registry::Pause>,
    /// When the last read of the lake began.
    check_started: Option<Instant>,
}

/// Missed codes re-read the registry at most this often: a link created a moment ago on
/// another instance is served at once, and a flood of bad codes costs at most 10 reads/s.
pub const MISS_REFRESH_EVERY: Duration = Duration::from_millis(100);
const COPY_OFFERS: &str = "registry-offers.csv";
const COPY_LINKS: &str = "registry-links.csv";
const COPY_PAUSED: &str = "registry-paused.csv";

impl RegistryCache {
    /// Loads the registry; fails when the lake cannot be read or a file is malformed.
    pub async fn load(lake: Lake) -> Result<Arc<RegistryCache>, LakeError> {
        Self::load_with_copy(lake, None).await
    }

    /// Loads the registry from the lake and keeps a copy of every good version in
    /// `copy_dir`. When the lake cannot be read (or holds a malformed file) at start, the
    /// copy is served instead, with the error in `/healthz`, until a refresh succeeds.
    pub async fn load_with_copy(lake: Lake, copy_dir: Option<PathBuf>) -> Result<Arc<RegistryCache>, LakeError> {
        let cache = Arc::new(RegistryCache {
            lake,
            copy_dir,
            current: RwLock::new(Arc::new(Registry::default())),
            state: tokio::sync::Mutex::new(Files::default()),
            last_error: Mutex::new(None),
        });
        if let Err(e) = cache.refresh().await {
            let Some(copy) = cache.read_copy() else { return Err(e) };
            tracing::warn!(error = %e, offers = copy.offers.len(), links = copy.links.len(),
                "cannot read the registry from the lake; serving the copy saved in the spool");
            *cache.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(copy);
            *cache.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
        Ok(cache)
    }

    fn read_copy(&self) -> Option<Registry> {
        let dir = self.copy_dir.as_ref()?;
        let offers = registry::parse_offers(&std::fs::read(dir.join(COPY_OFFERS)).ok()?).ok()?;
        let links = match std::fs::read(dir.join(COPY_LINKS)) {
            Ok(b) => registry::parse_links(&b).ok()?,
            Err(_) => Vec::new(),
        };
        let pauses = match std::fs::read(dir.join(COPY_PAUSED)) {
            Ok(b) => registry::parse_pauses(&b).ok()?,
            Err(_) => Vec::new(),
        };
        Some(Registry::new(offers, links).with_pauses(&pauses))
    }

    fn write_copy(&self, files: &Files) {
        let Some(dir) = &self.copy_dir else { return };
        let write = |name: &str, bytes: Vec<u8>| -> std::io::Result<()> {
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&tmp)?;
            std::io::Write::write_all(&mut f, &bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(name))
        };
        let result = write(COPY_OFFERS, registry::write_offers(&files.offers))
            .and_then(|_| write(COPY_LINKS, registry::write_links(&files.links)))
            .and_then(|_| write(COPY_PAUSED, registry::write_pauses(&files.pauses)));
        if let Err(e) = result {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot save the registry copy");
        }
    }

    /// For a link code or offer not found: re-reads the registry unless a read began after
    /// the request arrived (concurrent misses share one read), waiting first if the last
    /// read began less than [`MISS_REFRESH_EVERY`] ago. Returns the registry to look in
    /// again; gives up after 2 s (a slow store must not hold the request).
    async fn refresh_on_miss(&self) -> Arc<Registry> {
        let arrived = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let files = self.state.lock().await;
            if let Some(started) = files.check_started {
                if started >= arrived {
                    return;
                }
                tokio::time::sleep_until((started + MISS_REFRESH_EVERY).into()).await;
            }
            let _ = self.refresh_locked(files).await;
        })
        .await;
        self.get()
    }

    /// The registry in which `has` holds, re-read first when it does not hold for the
    /// current one (a link or offer created a moment ago elsewhere). Callers still check:
    /// the code or offer may not exist at all.
    pub async fn get_having(&self, has: impl Fn(&Registry) -> bool) -> Arc<Registry> {
        let current = self.get();
        if has(&current) {
            current
        } else {
            self.refresh_on_miss().await
        }
    }

    pub fn get(&self) -> Arc<Registry> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Re-reads whichever file changed (conditional gets); returns whether anything did.
    /// A malformed file leaves the previous registry in place.
    pub async fn refresh(&self) -> Result<bool, LakeError> {
        let files = self.state.lock().await;
        self.refresh_locked(files).await
    }

    async fn refresh_locked(&self, mut files: tokio::sync::MutexGuard<'_, Files>) -> Result<bool, LakeError> {
        files.check_started = Some(Instant::now());
        let mut changed = false;
        if let Some((bytes, tag)) = self.lake.get_if_changed(&layout::offers(), files.offers_tag.as_deref()).await? {
            files.offers = if bytes.is_empty() { Vec::new() } else { registry::parse_offers(&bytes)? };
            files.offers_tag = Some(tag);
            changed = true;
        }
        if let Some((bytes, tag)) = self.lake.get_if_changed(&layout::links(), files.links_tag.as_deref()).await? {
            files.links = if bytes.is_empty() { Vec::new() } else { registry::parse_links(&bytes)? };
            files.links_tag = Some(tag);
            changed = true;
        }
        if let Some((bytes, tag)) = self.lake.get_if_changed(&layout::paused(), files.paused_tag.as_deref()).await? {
            files.pauses = if bytes.is_empty() { Vec::new() } else { registry::parse_pauses(&bytes)? };
            files.paused_tag = Some(tag);
            changed = true;
        }
        if changed {
            self.write_copy(&files);
            let reg = Registry::new(files.offers.clone(), files.links.clone()).with_pauses(&files.pauses);
            tracing::debug!(offers = reg.offers.len(), links = reg.links.len(), "registry loaded");
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reg);
        }
        Ok(changed)
    }

    /// Creates a link and makes it visible here at once.
    pub async fn add_link(&self, new: NewLink, by: &str) -> Result<Link, RegistryError> {
        let link = add_link(&self.lake, new, by).await?;
        self.refresh().await?;
        Ok(link)
    }

    /// The last refresh error, if the last refresh failed.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Refreshes every `every` until shutdown; errors are logged and retried.
    pub async fn run(self: Arc<Self>, every: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let result = self.refresh().await;
            let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok(_) => *last = None,
                Err(e) => {
                    if last.as_deref() != Some(&e.to_string()) {
                        tracing::warn!(error = %e, "registry refresh failed; serving the last good registry");
                    }
                    *last = Some(e.to_string());
                }
            }
        }
    }
}
