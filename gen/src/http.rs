//! Mode 1: simulated customers and brand servers talking HTTP to a collector.
//!
//! Each customer has a browser (user agent, the collector's `ct_vid` cookie, and the
//! brand site's first-party `ct_click_id` cookie that the `/t.js` snippet keeps from the
//! landing URL). A customer clicks one or more members' links of one offer, following the
//! redirect; some then convert through the JavaScript snippet (`/p.gif` with the click id),
//! an image pixel (cookie only) or the brand's server postback (click id and token). Some
//! orders are reported twice (pixel and postback), some postbacks carry a click id the
//! collector never issued or name another offer, some conversions come with no click at
//! all, and link-preview bots fetch links without converting. Everything happens within
//! seconds, well inside any window, so the truth follows from the order of events.
//!
//! After the customers, the brands correct some attributed purchases through `/adjust`
//! (SPEC §7): full and partial refunds, rejections, a rejection then a restore, and a
//! refund retried with the same `adjustment_id` (the retry is a `duplicate`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use lake::registry::{Link, Offer};
use lake::schema::{adjustment, status};
use lake::{layout, Lake};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// User agents of people: browsers and in-app browsers (which are people, not bots).
pub const PEOPLE_AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 355.0.0.36.108",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Mobile Safari/537.36 trill_370104 BytedanceWebview/d8a21c6",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/480.0.0.45.109;FBBV/123]",
];

/// Link-preview and crawler user agents.
pub const BOT_AGENTS: [&str; 5] = [
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.24.21.85 A",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.5.0",
];

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base URL of the collector, e.g. http://127.0.0.1:8080
    pub collector: String,
    pub customers: usize,
    pub seed: u64,
    /// Customers in flight at once.
    pub concurrency: usize,
}

/// What the rules must say about one conversion report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthConversion {
    /// `pixel` or `postback`.
    pub kind: String,
    pub offer_id: String,
    pub event: String,
    pub order_id: String,
    pub amount_micros: Option<i64>,
    pub currency: Option<String>,
    /// The status the pipeline must give it.
    pub status: String,
    /// The member it must be attributed to (attributed only), or the member a too-fast
    /// conversion is kept with (SPEC §8).
    pub member_id: Option<String>,
    /// The coupon code sent with it, as sent (SPEC §8; absent in older truth files).
    #[serde(default)]
    pub coupon: Option<String>,
}

/// One adjustment the simulated brand sent, and what the rules must say about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthAdjustment {
    pub offer_id: String,
    pub event: String,
    pub order_id: String,
    /// `refund`, `reject` or `restore`.
    pub action: String,
    /// A partial refund's amount (sent with the conversion's currency); none: everything.
    pub amount_micros: Option<i64>,
    pub currency: Option<String>,
    pub adjustment_id: Option<String>,
    /// The status the pipeline must give it in `adjustments`: `applied`, `duplicate` (a
    /// retry of an earlier adjustment id of the offer) or `late` (an offer locked at once).
    pub status: String,
    /// Whether this repeats an earlier adjustment (same offer and `adjustment_id`).
    pub duplicate: bool,
}

/// The ground truth of one run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Truth {
    /// People's clicks per (offer, member).
    pub clicks: HashMap<String, u64>,
    /// Bot clicks per (offer, member).
    pub bot_clicks: HashMap<String, u64>,
    pub conversions: Vec<TruthConversion>,
    /// Adjustments sent through `/adjust`, in the order sent (absent in older truth files).
    #[serde(default)]
    pub adjustments: Vec<TruthAdjustment>,
    /// Requests the collector refused (should be none).
    pub refused: u64,
}

/// `offer_id/member_id`, the key of the click maps.
pub fn member_key(offer: &str, member: &str) -> String {
    format!("{offer}/{member}")
}

struct World {
    offers: Vec<Offer>,
    links_by_offer: HashMap<String, Vec<Link>>,
    /// The registry's coupon codes (SPEC §8), valid or not today.
    coupons: Vec<lake::registry::Coupon>,
}

impl World {
    /// The verdict of SPEC §8 on a conversion of `offer_id` whose session (§4) said
    /// `session` (with `member`) and that sent `coupon`: a valid coupon attributes what
    /// the session leaves unattributed, or everything not duplicate when the offer puts
    /// coupons first; a click attribution under the offer's floor is too_fast. Every
    /// simulated conversion follows its click within seconds, so an offer with a floor of
    /// a minute or more makes all of them too fast.
    fn decide(&self, offer_id: &str, session: &str, member: Option<String>, coupon: Option<&str>) -> (String, Option<String>) {
        let offer = self.offers.iter().find(|o| o.offer_id == offer_id);
        let today = chrono::Utc::now().date_naive();
        let valid = coupon
            .map(str::to_ascii_uppercase)
            .and_then(|k| self.coupons.iter().find(|c| c.offer_id == offer_id && c.code == k && c.valid_on(today)));
        let coupon_first = offer.is_some_and(|o| o.coupon_priority == lake::registry::COUPON_PRIORITY_COUPON);
        let unattributed = [status::UNKNOWN_CLICK, status::OUTSIDE_WINDOW, status::OFFER_MISMATCH, status::NO_CLICK].contains(&session);
        match valid {
            Some(c) if session != status::DUPLICATE && (coupon_first || unattributed) => (status::ATTRIBUTED.into(), Some(c.member_id.clone())),
            _ if session == status::ATTRIBUTED && offer.is_some_and(|o| o.min_lag_seconds >= 60) => (status::TOO_FAST.into(), member),
            _ if session == status::ATTRIBUTED => (status::ATTRIBUTED.into(), member),
            _ => (session.to_string(), None),
        }
    }

    /// A coupon code to send: one of the registry's (for this offer or another, valid or
    /// expired), or one nobody listed.
    fn some_coupon(&self, rng: &mut StdRng, offer_id: &str) -> String {
        let own: Vec<&lake::registry::Coupon> = self.coupons.iter().filter(|c| c.offer_id == offer_id).collect();
        match rng.random_range(0..10) {
            0..=5 if !own.is_empty() => own[rng.random_range(0..own.len())].code.to_ascii_lowercase(),
            6..=7 if !self.coupons.is_empty() => self.coupons[rng.random_range(0..self.coupons.len())].code.clone(),
            _ => format!("NOPE{}", rng.random_range(0..100)),
        }
    }
}

/// Reads the registry the collector serves.
async fn load_world(lake: &Lake) -> anyhow::Result<World> {
    let offers = match lake.get_optional(&layout::offers()).await? {
        Some(b) => lake::registry::parse_offers(&b)?,
        None => Vec::new(),
    };
    let links = match lake.get_optional(&layout::links()).await? {
        Some(b) => lake::registry::parse_links(&b)?,
        None => Vec::new(),
    };
    let mut links_by_offer: HashMap<String, Vec<Link>> = HashMap::new();
    for l in links {
        links_by_offer.entry(l.offer_id.clone()).or_default().push(l);
    }
    for v in links_by_offer.values_mut() {
        v.sort_by(|a, b| a.code.cmp(&b.code));
    }
    let mut offers: Vec<Offer> = offers.into_iter().filter(|o| links_by_offer.contains_key(&o.offer_id)).collect();
    offers.sort_by(|a, b| a.offer_id.cmp(&b.offer_id));
    if offers.is_empty() {
        bail!("the registry in {} has no offer with links; add some with `collector offers add` and `collector links add`", lake.url());
    }
    let coupons = match lake.get_optional(&layout::coupons()).await? {
        Some(b) if !b.is_empty() => lake::registry::parse_coupons(&b)?,
        _ => Vec::new(),
    };
    Ok(World { offers, links_by_offer, coupons })
}

/// Skewed pick: index `i` has weight 1/(i+1) (a few members get most clicks).
fn skewed<T>(rng: &mut StdRng, items: &[T]) -> usize {
    let total: f64 = (1..=items.len()).map(|i| 1.0 / i as f64).sum();
    let mut x = rng.random::<f64>() * total;
    for i in 0..items.len() {
        x -= 1.0 / (i + 1) as f64;
        if x <= 0.0 {
            return i;
        }
    }
    items.len() - 1
}

/// A browser: its agent and cookies.
struct Browser {
    agent: &'static str,
    /// The collector's visitor cookie.
    vid: Option<String>,
    /// The brand site's first-party cookie kept by /t.js.
    brand_click_id: Option<String>,
}

struct Sim {
    http: reqwest::Client,
    base: String,
    truth: Mutex<Truth>,
}

impl Sim {
    fn refused(&self, what: &str, status: reqwest::StatusCode) {
        tracing::warn!(%status, what, "collector refused a request");
        self.truth.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
    }

    /// Clicks a link as `browser`; returns the click id from the landing URL.
    async fn click(&self, b: &mut Browser, link: &Link) -> anyhow::Result<Option<String>> {
        let mut req = self.http.get(format!("{}/l/{}?utm_source=gen&sub1=s{}", self.base, link.code, link.member_id.len())).header("user-agent", b.agent);
        if let Some(v) = &b.vid {
            req = req.header("cookie", format!("ct_vid={v}"));
        }
        let resp = req.send().await.context("while clicking a link")?;
        if resp.status() != reqwest::StatusCode::FOUND {
            self.refused("click", resp.status());
            return Ok(None);
        }
        if let Some(c) = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
            if let Some(v) = c.strip_prefix("ct_vid=").and_then(|r| r.split(';').next()) {
                b.vid = Some(v.to_string());
            }
        }
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let click_id = url::Url::parse(location)
            .ok()
            .and_then(|u| u.query_pairs().find(|(k, _)| k == "ct_click_id").map(|(_, v)| v.into_owned()));
        Ok(click_id)
    }

    /// A conversion from the browser: `/p.gif`, with the click id when sent by the snippet.
    async fn pixel(&self, b: &Browser, offer: &str, click_id: Option<&str>, conv: &TruthConversion) -> anyhow::Result<bool> {
        let mut q = vec![("offer", offer.to_string()), ("order_id", conv.order_id.clone()), ("event", conv.event.clone())];
        if let Some(a) = conv.amount_micros {
            q.push(("amount", lake::money::format_micros(a)));
        }
        if let Some(c) = &conv.currency {
            q.push(("currency", c.to_ascii_lowercase()));
        }
        if let Some(c) = click_id {
            q.push(("click_id", c.to_string()));
        }
        if let Some(k) = &conv.coupon {
            q.push(("coupon", k.clone()));
        }
        let mut req = self.http.get(format!("{}/p.gif", self.base)).query(&q).header("user-agent", b.agent);
        if let Some(v) = &b.vid {
            req = req.header("cookie", format!("ct_vid={v}"));
        }
        let resp = req.send().await.context("while sending a pixel")?;
        if resp.status() != reqwest::StatusCode::OK {
            self.refused("pixel", resp.status());
            return Ok(false);
        }
        Ok(true)
    }

    /// A conversion from the brand's server.
    async fn postback(&self, offer: &Offer, click_id: Option<&str>, conv: &TruthConversion) -> anyhow::Result<bool> {
        let mut body = serde_json::json!({"offer": offer.offer_id, "order_id": conv.order_id, "event": conv.event});
        if let Some(c) = click_id {
            body["click_id"] = serde_json::Value::String(c.to_string());
        }
        if let Some(k) = &conv.coupon {
            body["coupon"] = serde_json::Value::String(k.clone());
        }
        if let Some(a) = conv.amount_micros {
            body["amount"] = serde_json::Value::String(lake::money::format_micros(a));
        }
        if let Some(c) = &conv.currency {
            body["currency"] = serde_json::Value::String(c.clone());
        }
        let resp = self
            .http
            .post(format!("{}/postback", self.base))
            .bearer_auth(&offer.postback_token)
            .json(&body)
            .send()
            .await
            .context("while sending a postback")?;
        if resp.status() != reqwest::StatusCode::OK {
            self.refused("postback", resp.status());
            return Ok(false);
        }
        Ok(true)
    }

    /// An adjustment from the brand's server.
    async fn adjust(&self, offer: &Offer, adj: &TruthAdjustment) -> anyhow::Result<bool> {
        let mut body = serde_json::json!({"offer": offer.offer_id, "order_id": adj.order_id, "event": adj.event, "action": adj.action});
        if let Some(a) = adj.amount_micros {
            body["amount"] = serde_json::Value::String(lake::money::format_micros(a));
        }
        if let Some(c) = &adj.currency {
            body["currency"] = serde_json::Value::String(c.clone());
        }
        if let Some(id) = &adj.adjustment_id {
            body["adjustment_id"] = serde_json::Value::String(id.clone());
        }
        let resp = self
            .http
            .post(format!("{}/adjust", self.base))
            .bearer_auth(&offer.postback_token)
            .json(&body)
            .send()
            .await
            .context("while sending an adjustment")?;
        if resp.status() != reqwest::StatusCode::OK {
            self.refused("adjust", resp.status());
            return Ok(false);
        }
        Ok(true)
    }

    fn record(&self, conv: TruthConversion) {
        self.truth.lock().unwrap_or_else(|e| e.into_inner()).conversions.push(conv);
    }

    fn count_click(&self, offer: &str, member: &str, bot: bool) {
        let mut t = self.truth.lock().unwrap_or_else(|e| e.into_inner());
        let map = if bot { &mut t.bot_clicks } else { &mut t.clicks };
        *map.entry(member_key(offer, member)).or_default() += 1;
    }
}

/// One customer's visit, decided by `rng`.
async fn customer(sim: &Sim, world: &World, i: usize, rng: &mut StdRng) -> anyhow::Result<()> {
    let offer = &world.offers[skewed(rng, &world.offers)];
    let links = &world.links_by_offer[&offer.offer_id];
    // Link-preview bots and crawlers: fetch a link, never convert.
    if rng.random_bool(0.08) {
        let mut bot = Browser { agent: BOT_AGENTS[rng.random_range(0..BOT_AGENTS.len())], vid: None, brand_click_id: None };
        let link = &links[skewed(rng, links)];
        if sim.click(&mut bot, link).await?.is_some() {
            sim.count_click(&offer.offer_id, &link.member_id, true);
        }
        return Ok(());
    }
    let mut b = Browser { agent: PEOPLE_AGENTS[rng.random_range(0..PEOPLE_AGENTS.len())], vid: None, brand_click_id: None };
    let order = |n: u32| format!("gen-{i}-{n}");
    let amount = |rng: &mut StdRng| Some(rng.random_range(100..50_000i64) * 10_000 + rng.random_range(0..100) * 100);
    let conv = |order_id: String, rng: &mut StdRng, offer_id: &str| {
        let purchase = rng.random_bool(0.8);
        let amount_micros = if purchase { amount(rng) } else { None };
        TruthConversion {
            kind: String::new(),
            offer_id: offer_id.to_string(),
            event: if purchase { "purchase".into() } else { ["signup", "download", "form"][rng.random_range(0..3)].into() },
            order_id,
            amount_micros,
            // Sent without a currency, an amount takes the offer's.
            currency: amount_micros.map(|_| offer.currency.clone()),
            status: String::new(),
            member_id: None,
            coupon: None,
        }
    };

    // Organic conversion: no click, no cookie; often with a coupon code the follower typed
    // (SPEC §8), sent by the pixel or, for offers with a token, the brand's server.
    if rng.random_bool(0.08) {
        let mut c = conv(order(0), rng, &offer.offer_id);
        if rng.random_bool(0.6) {
            c.coupon = Some(world.some_coupon(rng, &offer.offer_id));
        }
        (c.status, c.member_id) = world.decide(&offer.offer_id, status::NO_CLICK, None, c.coupon.as_deref());
        let sent = if c.coupon.is_some() && !offer.postback_token.is_empty() && rng.random_bool(0.5) {
            c.kind = "postback".into();
            sim.postback(offer, None, &c).await?
        } else {
            c.kind = "pixel".into();
            sim.pixel(&b, &offer.offer_id, None, &c).await?
        };
        if sent {
            sim.record(c);
        }
        return Ok(());
    }

    // One or more clicks on members' links of this offer; the landing page keeps the last
    // click id in the brand's first-party cookie.
    let n_clicks = 1 + usize::from(rng.random_bool(0.3)) + usize::from(rng.random_bool(0.1));
    let mut last: Option<(String, String)> = None; // (click id, member)
    let mut clicks: Vec<(String, String)> = Vec::new();
    for _ in 0..n_clicks {
        let link = &links[skewed(rng, links)];
        if let Some(cid) = sim.click(&mut b, link).await? {
            sim.count_click(&offer.offer_id, &link.member_id, false);
            b.brand_click_id = Some(cid.clone());
            last = Some((cid.clone(), link.member_id.clone()));
            clicks.push((cid, link.member_id.clone()));
        }
    }
    let Some((last_cid, last_member)) = last else { return Ok(()) };
    if !rng.random_bool(0.45) {
        return Ok(());
    }
    let mut c = conv(order(1), rng, &offer.offer_id);
    if c.amount_micros.is_some() && rng.random_bool(0.2) {
        // Some shops report in another currency.
        c.currency = Some(["EUR", "USD", "GBP"][rng.random_range(0..3)].to_string());
    }
    let way = rng.random_range(0..100);
    let first_kind;
    if way < 35 {
        // The JavaScript snippet: /p.gif with the brand cookie's click id, now and then with
        // a coupon code too.
        c.kind = "pixel".into();
        if rng.random_bool(0.2) {
            c.coupon = Some(world.some_coupon(rng, &offer.offer_id));
        }
        (c.status, c.member_id) = world.decide(&offer.offer_id, status::ATTRIBUTED, Some(last_member.clone()), c.coupon.as_deref());
        first_kind = "js";
        let cid = b.brand_click_id.clone();
        if !sim.pixel(&b, &offer.offer_id, cid.as_deref(), &c).await? {
            return Ok(());
        }
    } else if way < 60 {
        // An image pixel: only the visitor cookie; the visitor's last click on the offer.
        c.kind = "pixel".into();
        (c.status, c.member_id) = world.decide(&offer.offer_id, status::ATTRIBUTED, Some(last_member.clone()), None);
        first_kind = "img";
        if !sim.pixel(&b, &offer.offer_id, None, &c).await? {
            return Ok(());
        }
    } else if way < 90 {
        // The brand's server postback with the click id it kept; a customer who clicked
        // several members may have kept an earlier one.
        let (cid, member) = if clicks.len() > 1 && rng.random_bool(0.2) { clicks[0].clone() } else { (last_cid.clone(), last_member.clone()) };
        c.kind = "postback".into();
        (c.status, c.member_id) = world.decide(&offer.offer_id, status::ATTRIBUTED, Some(member), None);
        first_kind = "postback";
        if !sim.postback(offer, Some(&cid), &c).await? {
            return Ok(());
        }
    } else if way < 95 {
        // A postback with a click id the collector never issued (not a UUIDv7).
        c.kind = "postback".into();
        c.status = status::UNKNOWN_CLICK.into();
        first_kind = "postback";
        if !sim.postback(offer, Some(&uuid::Uuid::new_v4().to_string()), &c).await? {
            return Ok(());
        }
    } else {
        // A postback naming another offer than the click's.
        let Some(other) = world.offers.iter().find(|o| o.offer_id != offer.offer_id) else { return Ok(()) };
        c.offer_id = other.offer_id.clone();
        c.kind = "postback".into();
        c.status = status::OFFER_MISMATCH.into();
        first_kind = "postback";
        if !sim.postback(other, Some(&last_cid), &c).await? {
            return Ok(());
        }
    }
    // Reported twice only when the session attributed it (the twin names the same click).
    let attributed_pixel = first_kind != "postback" && (c.status == status::ATTRIBUTED || c.status == status::TOO_FAST);
    sim.record(c.clone());
    // The same order reported again by the brand's server: a duplicate.
    if attributed_pixel && rng.random_bool(0.25) {
        let mut dup = c;
        dup.kind = "postback".into();
        dup.status = status::DUPLICATE.into();
        dup.member_id = None;
        dup.coupon = None;
        if sim.postback(offer, Some(&last_cid), &dup).await? {
            sim.record(dup);
        }
    }
    Ok(())
}

/// The brands' corrections, sent one after the other once every customer is done (so each
/// targets a conversion already recorded): among the attributed purchases of offers that
/// take postbacks, in a fixed order, the first five get one scenario each (full refund,
/// partial refund, reject, reject then restore, a refund retried with its adjustment id)
/// and about a tenth of the rest a random one.
async fn adjustments(sim: &Sim, world: &World, seed: u64) -> anyhow::Result<()> {
    let mut candidates: Vec<TruthConversion> = {
        let t = sim.truth.lock().unwrap_or_else(|e| e.into_inner());
        t.conversions
            .iter()
            .filter(|c| c.status == status::ATTRIBUTED && c.amount_micros.is_some_and(|a| a >= 2))
            .filter(|c| world.offers.iter().any(|o| o.offer_id == c.offer_id && !o.postback_token.is_empty()))
            .cloned()
            .collect()
    };
    candidates.sort_by(|a, b| (&a.offer_id, &a.event, &a.order_id).cmp(&(&b.offer_id, &b.event, &b.order_id)));
    candidates.dedup_by(|a, b| (&a.offer_id, &a.event, &a.order_id) == (&b.offer_id, &b.event, &b.order_id));
    let mut rng = StdRng::seed_from_u64(seed ^ 0xad1u64);
    let mut n = 0u64;
    for (i, conv) in candidates.iter().enumerate() {
        let scenario = if i < 5 {
            i
        } else if rng.random_bool(0.1) {
            rng.random_range(0..5)
        } else {
            continue;
        };
        let Some(offer) = world.offers.iter().find(|o| o.offer_id == conv.offer_id) else { continue };
        let on_time = if offer.lock_days == 0 { adjustment::LATE } else { adjustment::APPLIED };
        let mut next_id = || {
            n += 1;
            Some(format!("gen-adj-{n}"))
        };
        let adj = |action: &str, amount_micros: Option<i64>, adjustment_id: Option<String>| TruthAdjustment {
            offer_id: conv.offer_id.clone(),
            event: conv.event.clone(),
            order_id: conv.order_id.clone(),
            action: action.to_string(),
            amount_micros,
            currency: amount_micros.and(conv.currency.clone()),
            adjustment_id,
            status: on_time.to_string(),
            duplicate: false,
        };
        let gross = conv.amount_micros.unwrap_or_default();
        let sent: Vec<TruthAdjustment> = match scenario {
            0 => vec![adj(adjustment::REFUND, None, next_id())],
            1 => vec![adj(adjustment::REFUND, Some(gross / 2), next_id())],
            2 => vec![adj(adjustment::REJECT, None, next_id())],
            3 => vec![adj(adjustment::REJECT, None, next_id()), adj(adjustment::RESTORE, None, next_id())],
            _ => {
                let first = adj(adjustment::REFUND, Some(gross / 3), next_id());
                let retry = TruthAdjustment { status: adjustment::DUPLICATE.to_string(), duplicate: true, ..first.clone() };
                vec![first, retry]
            }
        };
        for a in sent {
            if sim.adjust(offer, &a).await? {
                sim.truth.lock().unwrap_or_else(|e| e.into_inner()).adjustments.push(a);
            }
        }
    }
    Ok(())
}

/// Runs `cfg.customers` customers against the collector and returns the ground truth.
pub async fn run(lake: &Lake, cfg: &HttpConfig) -> anyhow::Result<Truth> {
    let world = Arc::new(load_world(lake).await?);
    let sim = Arc::new(Sim {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(cfg.concurrency)
            .build()?,
        base: cfg.collector.trim_end_matches('/').to_string(),
        truth: Mutex::new(Truth::default()),
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency.max(1) {
        let (sim, world, next, cfg) = (sim.clone(), world.clone(), next.clone(), cfg.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= cfg.customers {
                    return Ok::<(), anyhow::Error>(());
                }
                let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_mul(1_000_003).wrapping_add(i as u64));
                customer(&sim, &world, i, &mut rng).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    adjustments(&sim, &world, cfg.seed).await?;
    let truth = std::mem::take(&mut *sim.truth.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(truth)
}
