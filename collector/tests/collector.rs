//! Integration tests of the collector: real HTTP on port 0, real Parquet read back from
//! the lake, the real binary killed with SIGKILL, and (when CI provides one) a real
//! S3-speaking server.

#![allow(clippy::unwrap_used)]

mod util;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use lake::schema::HitKind;
use lake::Lake;
use reqwest::StatusCode;
use serde_json::{json, Value};
use util::*;

async fn seeded() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let server = TestServer::start(&lake_url, serve_args(&dir.path().join("spool"))).await;
    (dir, server)
}

fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers().get("set-cookie").unwrap().to_str().unwrap().to_string()
}

#[tokio::test]
async fn click_redirects_with_params_cookie_and_records_it() {
    let (_dir, server) = seeded().await;
    let http = client();
    let resp = http
        .get(server.url("/l/ann1?utm_source=ig&sub1=story%201"))
        .header("user-agent", "Mozilla/5.0 (iPhone) Instagram 300.0")
        .header("referer", "https://instagram.com/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("https://shop.example.com/landing?"), "{location}");
    let q = query_of(&location);
    assert_eq!(q["src"], "ct", "the destination's own query is kept");
    assert_eq!(q["utm_source"], "ig");
    assert_eq!(q["sub1"], "story 1");
    assert!(location.contains("&utm_source=ig&sub1=story%201&ct_click_id="), "passed on as sent: {location}");
    let click_id = q["ct_click_id"].clone();
    assert_eq!(uuid::Uuid::parse_str(&click_id).unwrap().get_version_num(), 7);
    let cookie = set_cookie(&resp);
    assert!(cookie.starts_with("ct_vid="), "{cookie}");
    assert!(cookie.contains("Max-Age=604800"), "offer shoes keeps cookies 7 days: {cookie}");
    assert!(cookie.contains("Path=/") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    let vid = cookie.trim_start_matches("ct_vid=").split(';').next().unwrap().to_string();
    uuid::Uuid::parse_str(&vid).unwrap();

    // A returning visitor keeps their id.
    let again = http.get(server.url("/l/bob1")).header("cookie", format!("ct_vid={vid}")).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::FOUND);
    assert!(set_cookie(&again).starts_with(&format!("ct_vid={vid};")));
    assert!(set_cookie(&again).contains("Max-Age=2419200"));
    assert!(again.headers()["location"].to_str().unwrap().starts_with("https://bags.example.org/sale?ct_click_id="));
    // A visitor id that is not a UUID (set by an earlier version, or the brand) is kept as it is;
    // a cookie that could not be ours is replaced.
    let kept = http.get(server.url("/l/bob1")).header("cookie", "ct_vid=Visitor_7").send().await.unwrap();
    assert!(set_cookie(&kept).starts_with("ct_vid=Visitor_7;"), "{}", set_cookie(&kept));
    let replaced = http.get(server.url("/l/bob1")).header("cookie", "ct_vid=a%20b").send().await.unwrap();
    assert!(!set_cookie(&replaced).starts_with("ct_vid=a%20b;"));

    server.stop().await;
    let hits = read_hits(&_dir.path().join("lake").display().to_string()).await;
    let clicks = by_kind(&hits, HitKind::Click);
    assert_eq!(clicks.len(), 4);
    assert!(clicks.iter().any(|h| h.visitor_id.as_deref() == Some("Visitor_7")));
    let c = clicks.iter().find(|h| h.link_code.as_deref() == Some("ann1")).unwrap();
    assert_eq!(c.offer_id, "shoes");
    assert_eq!(c.member_id.as_deref(), Some("ann"));
    assert_eq!(c.click_id.as_deref(), Some(click_id.as_str()));
    assert_eq!(c.visitor_id.as_deref(), Some(vid.as_str()));
    assert_eq!(c.user_agent.as_deref(), Some("Mozilla/5.0 (iPhone) Instagram 300.0"));
    assert_eq!(c.referer.as_deref(), Some("https://instagram.com/"));
    // Stored as sent, byte for byte (not re-encoded: `%20` stays `%20`).
    assert_eq!(c.params.as_deref(), Some("utm_source=ig&sub1=story%201"));
    let ip_hash = c.ip_hash.clone().unwrap();
    assert_eq!(ip_hash.len(), 32);
    assert!(!ip_hash.contains("127"), "the raw IP is never stored");
    let b = clicks.iter().find(|h| h.link_code.as_deref() == Some("bob1") && h.visitor_id.as_deref() == Some(vid.as_str())).unwrap();
    assert_eq!(b.visitor_id.as_deref(), Some(vid.as_str()));
    assert_eq!(b.params, None);
}

#[tokio::test]
async fn deep_links_only_on_the_destinations_site() {
    let (dir, server) = seeded().await;
    let http = client();
    let ok = http.get(server.url("/l/ann1?url=https%3A%2F%2Fwww.example.com%2Fp%2F42%3Fcolor%3Dred&utm_source=tt")).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::FOUND);
    let loc = ok.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("https://www.example.com/p/42?color=red&utm_source=tt&ct_click_id="), "{loc}");
    // A path is on the destination's site by definition.
    let rel = http.get(server.url("/l/ann1?url=%2Fp%2F7%3Fsize%3D42")).send().await.unwrap();
    assert_eq!(rel.status(), StatusCode::FOUND);
    let loc = rel.headers()["location"].to_str().unwrap().to_string();
    assert!(loc.starts_with("https://shop.example.com/p/7?size=42&ct_click_id="), "{loc}");
    for evil in ["https://evil.com/", "https://example.com.evil.com/x", "javascript:alert(1)", "//evil.com", "https://[bad"] {
        let resp = http.get(server.url("/l/ann1")).query(&[("url", evil)]).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{evil}");
        assert!(resp.headers().get("location").is_none());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], "url");
    }
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.len(), 2, "refused deep links record nothing");
}

#[tokio::test]
async fn head_and_unknown_links_record_nothing() {
    let (dir, server) = seeded().await;
    let http = client();
    let head = http.head(server.url("/l/ann1")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::FOUND);
    assert!(head.headers().contains_key("location"));
    for code in ["nope", "bad%20code", &"x".repeat(65)] {
        let resp = http.get(server.url(&format!("/l/{code}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{code}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    }
    server.stop().await;
    assert!(read_hits(&dir.path().join("lake").display().to_string()).await.is_empty());
}

/// Regression: axum answers `HEAD` with the `GET` handler, so `HEAD /p.gif`, `/postback`
/// and `/adjust` used to record hits.
#[tokio::test]
async fn head_records_nothing_on_any_endpoint() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    let pixel = http.head(server.url(&format!("/p.gif?offer=shoes&amount=1&click_id={cid}"))).send().await.unwrap();
    assert_eq!(pixel.status(), StatusCode::OK);
    assert_eq!(pixel.headers()["content-type"], "image/gif");
    assert_eq!(pixel.headers()["cache-control"], "no-store");
    assert!(pixel.bytes().await.unwrap().is_empty());
    // Checked like a GET.
    assert_eq!(http.head(server.url("/p.gif?offer=nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    for path in [
        format!("/postback?offer=shoes&click_id={cid}&amount=1&token={TOKEN}"),
        format!("/adjust?offer=shoes&order_id=A-1&action=refund&token={TOKEN}"),
    ] {
        let r = http.head(server.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(r.headers()["allow"], "GET, POST", "{path}");
    }
    assert_eq!(http.head(server.url("/l/ann1")).send().await.unwrap().status(), StatusCode::FOUND);
    let m = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for kind in ["click", "pixel", "postback", "adjustment"] {
        assert!(m.contains(&format!("clicktrail_hits_total{{kind=\"{kind}\"}} 0")), "{kind}: {m}");
    }
    server.stop().await;
    assert!(read_hits(&dir.path().join("lake").display().to_string()).await.is_empty(), "HEAD records nothing");
}

#[tokio::test]
async fn pixel_records_conversion_with_cookie_and_exact_amount() {
    let (dir, server) = seeded().await;
    let http = client();
    let click_id = uuid::Uuid::now_v7().to_string();
    let vid = uuid::Uuid::new_v4().to_string();
    let resp = http
        .get(server.url(&format!("/p.gif?offer=shoes&amount=19.99&order_id=A-1&event=signup&click_id={click_id}&utm_campaign=bf")))
        .header("cookie", format!("other=1; ct_vid={vid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/gif");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.bytes().await.unwrap().starts_with(b"GIF89a"));
    // No cookie, no amount: defaults.
    let plain = http.get(server.url("/p.gif?offer=bags")).send().await.unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    // Amount with its own currency, any case.
    let usd = http.get(server.url("/p.gif?offer=shoes&amount=5&currency=gbp")).send().await.unwrap();
    assert_eq!(usd.status(), StatusCode::OK);

    for (query, field, status) in [
        ("amount=1", "offer", StatusCode::BAD_REQUEST),
        ("offer=nope", "offer", StatusCode::NOT_FOUND),
        ("offer=shoes&click_id=123", "click_id", StatusCode::BAD_REQUEST),
        ("offer=shoes&event=Buy!", "event", StatusCode::BAD_REQUEST),
        ("offer=shoes&amount=1&currency=EURO", "currency", StatusCode::BAD_REQUEST),
        ("offer=shoes&amount=-1", "amount", StatusCode::BAD_REQUEST),
        ("offer=shoes&token=x", "token", StatusCode::BAD_REQUEST),
    ] {
        let resp = http.get(server.url(&format!("/p.gif?{query}"))).send().await.unwrap();
        assert_eq!(resp.status(), status, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let long = "x".repeat(129);
    let resp = http.get(server.url(&format!("/p.gif?offer=shoes&order_id={long}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let pixels = by_kind(&hits, HitKind::Pixel);
    assert_eq!(pixels.len(), 3, "rejected pixels record nothing");
    let p = pixels.iter().find(|h| h.order_id.as_deref() == Some("A-1")).unwrap();
    assert_eq!(p.amount_micros, Some(19_990_000));
    assert_eq!(p.currency.as_deref(), Some("EUR"), "the offer's currency");
    assert_eq!(p.event.as_deref(), Some("signup"));
    assert_eq!(p.click_id.as_deref(), Some(click_id.as_str()));
    assert_eq!(p.visitor_id.as_deref(), Some(vid.as_str()));
    assert_eq!(p.params.as_deref(), Some("utm_campaign=bf"));
    let d = pixels.iter().find(|h| h.offer_id == "bags").unwrap();
    assert_eq!((d.event.as_deref(), d.amount_micros, d.currency.as_deref(), d.visitor_id.as_deref()), (Some("purchase"), None, None, None));
    let g = pixels.iter().find(|h| h.amount_micros == Some(5_000_000)).unwrap();
    assert_eq!(g.currency.as_deref(), Some("GBP"));
}

#[tokio::test]
async fn amounts_are_exact_and_malformed_ones_refused() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    for i in 0..10 {
        let resp = http
            .get(server.url(&format!("/postback?offer=shoes&click_id={cid}&amount=0.1&order_id=tenth-{i}&token={TOKEN}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    for bad in ["1e3", "-1", "NaN", "1.1234567", "99999999999999", "", "1,5", "0x1", "+2"] {
        let resp = http
            .get(server.url("/postback"))
            .query(&[("offer", "shoes"), ("click_id", cid.as_str()), ("amount", bad), ("token", TOKEN)])
            .send()
            .await
            .unwrap();
        // An empty amount counts as not sent.
        if bad.is_empty() {
            assert_eq!(resp.status(), StatusCode::OK);
            continue;
        }
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], "amount", "{bad}");
    }
    // JSON numbers are taken by their literal text, never through a float.
    for (amount, micros) in [(json!(0.1), 100_000i64), (json!(1000000000000u64), 1_000_000_000_000_000_000)] {
        let resp = http
            .post(server.url("/postback"))
            .json(&json!({"offer": "shoes", "click_id": cid, "amount": amount, "token": TOKEN, "order_id": format!("json-{micros}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = http
        .post(server.url("/postback"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"offer":"shoes","click_id":"{cid}","amount":1e3,"token":"{TOKEN}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let tenths: i64 = hits.iter().filter(|h| h.order_id.as_deref().is_some_and(|o| o.starts_with("tenth-"))).map(|h| h.amount_micros.unwrap()).sum();
    assert_eq!(tenths, 1_000_000);
    assert_eq!(hits.iter().find(|h| h.order_id.as_deref() == Some("json-100000")).unwrap().amount_micros, Some(100_000));
    assert_eq!(
        hits.iter().find(|h| h.order_id.as_deref() == Some("json-1000000000000000000")).unwrap().amount_micros,
        Some(1_000_000_000_000_000_000)
    );
    assert_eq!(hits.len(), 13);
}

#[tokio::test]
async fn postback_forms_tokens_and_errors() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    let mut accepted = HashSet::new();
    let mut accept = |resp_body: Value| {
        assert_eq!(resp_body["status"], "accepted");
        accepted.insert(resp_body["hit_id"].as_str().unwrap().to_string());
    };
    // Query string with token=.
    let r = http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&amount=10&currency=usd&order_id=Q1&token={TOKEN}&sub_id=42"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accept(r.json().await.unwrap());
    // Form body with a bearer token.
    let r = http
        .post(server.url("/postback"))
        .bearer_auth(TOKEN)
        .form(&[("offer", "bags"), ("click_id", cid.as_str()), ("amount", "7.5"), ("event", "download"), ("order_id", "F1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accept(r.json().await.unwrap());
    // JSON body.
    let r = http
        .post(server.url("/postback"))
        .bearer_auth(TOKEN)
        .json(&json!({"offer": "shoes", "click_id": cid, "amount": "3.333333", "order_id": "J1", "event": "form"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accept(r.json().await.unwrap());
    // JSON sent as text/plain (some postback tools do), with a key we do not know.
    let r = http
        .post(server.url("/postback"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body(json!({"offer": "shoes", "click_id": cid, "amount": 2, "order_id": "T1", "test": true}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accept(r.json().await.unwrap());

    let cases: Vec<(reqwest::RequestBuilder, StatusCode, Option<&str>)> = vec![
        (http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}"))), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&token=wrong-token"))), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}"))).bearer_auth("wrong"), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url(&format!("/postback?offer=nope&click_id={cid}&token={TOKEN}"))), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url(&format!("/postback?click_id={cid}&token={TOKEN}"))), StatusCode::BAD_REQUEST, Some("offer")),
        (http.get(server.url(&format!("/postback?offer=shoes&token={TOKEN}"))), StatusCode::BAD_REQUEST, Some("click_id")),
        (http.get(server.url(&format!("/postback?offer=shoes&click_id=abc&token={TOKEN}"))), StatusCode::BAD_REQUEST, Some("click_id")),
        (http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&token={TOKEN}&event=a-b"))), StatusCode::BAD_REQUEST, Some("event")),
        (http.post(server.url("/postback")).bearer_auth(TOKEN).header("content-type", "application/json").body("{not json"), StatusCode::BAD_REQUEST, Some("body")),
        (http.post(server.url("/postback")).bearer_auth(TOKEN).json(&json!({"offer": "shoes", "click_id": cid, "amount": true})), StatusCode::BAD_REQUEST, Some("amount")),
        (http.post(server.url("/postback")).bearer_auth(TOKEN).header("content-type", "application/xml").body("<x/>"), StatusCode::BAD_REQUEST, Some("body")),
        (http.post(server.url("/postback")).bearer_auth(TOKEN).form(&[("offer", "shoes"), ("click_id", cid.as_str()), ("pad", &"x".repeat(17 * 1024))]), StatusCode::PAYLOAD_TOO_LARGE, None),
    ];
    for (i, (req, status, field)) in cases.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "case {i}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "case {i}: {body}");
        if let Some(f) = field {
            assert_eq!(body["field"], f, "case {i}: {body}");
        }
    }
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.len(), 4, "refused postbacks record nothing");
    let t1 = hits.iter().find(|h| h.order_id.as_deref() == Some("T1")).unwrap();
    assert_eq!((t1.amount_micros, t1.params.as_deref()), (Some(2_000_000), Some("test=true")));
    assert_eq!(hits.iter().map(|h| h.hit_id.clone()).collect::<HashSet<_>>(), accepted);
    let q1 = hits.iter().find(|h| h.order_id.as_deref() == Some("Q1")).unwrap();
    assert_eq!((q1.amount_micros, q1.currency.as_deref()), (Some(10_000_000), Some("USD")));
    assert_eq!(q1.params.as_deref(), Some("sub_id=42"), "the token is never stored");
    assert_eq!(q1.kind, HitKind::Postback);
    let f1 = hits.iter().find(|h| h.order_id.as_deref() == Some("F1")).unwrap();
    assert_eq!((f1.offer_id.as_str(), f1.event.as_deref(), f1.amount_micros), ("bags", Some("download"), Some(7_500_000)));
    assert_eq!(hits.iter().find(|h| h.order_id.as_deref() == Some("J1")).unwrap().amount_micros, Some(3_333_333));
}

#[tokio::test]
async fn a_link_added_elsewhere_is_served_at_once_and_the_registry_copy_survives_a_lake_outage() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    let lake = Lake::open(&lake_url).unwrap();
    seed_registry(&lake).await;
    let mut args = serve_args(&dir.path().join("spool"));
    args.registry_refresh = Duration::from_secs(3600);
    let server = TestServer::start(&lake_url, args.clone()).await;
    let http = client();
    // Created by the CLI (another process): no periodic refresh would see it for an hour.
    collector::registry::add_link(&lake, collector::registry::NewLink { offer_id: "shoes".into(), member_id: "dee".into(), destination_url: None, code: Some("dee1".into()) }, "test")
        .await
        .unwrap();
    let r = http.get(server.url("/l/dee1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "a code missed re-reads the registry");

    // An offer without a postback token, added elsewhere: its pixels are taken at once, and
    // no postback passes for it, not even one with an empty token.
    let offer = |currency: &str| {
        lake::registry::Offer::new("app".into(), "https://app.example.net/".into(), String::new(), currency.into(), 28)
    };
    use collector::registry::{add_offer, OfferChange};
    assert_eq!(add_offer(&lake, offer("USD"), "test").await.unwrap(), OfferChange::Added);
    assert_eq!(add_offer(&lake, offer("USD"), "test").await.unwrap(), OfferChange::Unchanged);
    let refused = add_offer(&lake, offer("GBP"), "test").await.unwrap_err().to_string();
    assert!(refused.contains("currency USD (given: GBP)") && refused.contains("--update"), "{refused}");
    let edit = collector::registry::OfferEdit { currency: Some("GBP".into()), ..Default::default() };
    assert_eq!(collector::registry::update_offer(&lake, "app", edit, "test").await.unwrap(), OfferChange::Updated);
    let r = http.get(server.url("/p.gif?offer=app&amount=1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cid = uuid::Uuid::now_v7().to_string();
    for req in [
        http.get(server.url(&format!("/postback?offer=app&click_id={cid}&token="))),
        http.get(server.url(&format!("/postback?offer=app&click_id={cid}"))).header("authorization", "Bearer "),
        http.get(server.url(&format!("/postback?offer=app&click_id={cid}&token={TOKEN}"))),
    ] {
        assert_eq!(req.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    server.stop().await;
    let hits = read_hits(&lake_url).await;
    let pixel = hits.iter().find(|h| h.offer_id == "app").unwrap();
    assert_eq!((pixel.amount_micros, pixel.currency.as_deref()), (Some(1_000_000), Some("GBP")));
    assert_eq!(hits.iter().filter(|h| h.offer_id == "app").count(), 1);

    // The lake's registry becomes unreadable (an outage, or a bad edit): a collector still
    // starts, from the copy in its spool, and says so in /healthz.
    std::fs::write(dir.path().join("lake/registry/links.csv"), "code,offer_id\nbad code!,shoes\n").unwrap();
    let server = TestServer::start(&lake_url, args).await;
    let r = http.get(server.url("/l/dee1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let health: Value = http.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert!(health["registry_error"].as_str().unwrap().contains("links.csv"), "{health}");
    server.stop().await;
}

#[tokio::test]
async fn links_api_creates_and_lists_across_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let mut args_b = serve_args(&dir.path().join("spool-b"));
    args_b.registry_refresh = Duration::from_secs(2);
    let a = TestServer::start(&lake_url, serve_args(&dir.path().join("spool-a"))).await;
    let b = TestServer::start(&lake_url, args_b).await;
    let http = client();

    let r = http.post(a.url("/api/links")).json(&json!({"offer_id": "shoes", "member_id": "cara"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.get(a.url("/api/links")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = http.post(a.url("/api/links")).bearer_auth(ADMIN).json(&json!({"offer_id": "shoes", "member_id": "cara"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let code = created["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8);
    assert!(code.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(created["url"], format!("{}/l/{code}", a.base));

    // The creating collector serves it at once; the other within 10 s, without a restart.
    assert_eq!(http.get(a.url(&format!("/l/{code}"))).send().await.unwrap().status(), StatusCode::FOUND);
    let start = std::time::Instant::now();
    loop {
        let s = http.get(b.url(&format!("/l/{code}"))).send().await.unwrap().status();
        if s == StatusCode::FOUND {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "collector b never served the new link");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for (body, status, field) in [
        (json!({"offer_id": "shoes", "member_id": "dan", "code": "ann1"}), StatusCode::CONFLICT, None),
        (json!({"offer_id": "shoes", "member_id": "dan", "code": "no spaces"}), StatusCode::BAD_REQUEST, Some("code")),
        (json!({"offer_id": "nope", "member_id": "dan"}), StatusCode::NOT_FOUND, Some("offer_id")),
        (json!({"offer_id": "shoes"}), StatusCode::BAD_REQUEST, Some("member_id")),
        (json!({"offer_id": "shoes", "member_id": "dan", "destination_url": "ftp://x"}), StatusCode::BAD_REQUEST, Some("destination_url")),
    ] {
        let r = http.post(a.url("/api/links")).bearer_auth(ADMIN).json(&body).send().await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{body}: {v}");
        }
    }

    // Concurrent creates through both collectors lose nothing.
    let mut tasks = Vec::new();
    for i in 0..24 {
        let url = if i % 2 == 0 { a.url("/api/links") } else { b.url("/api/links") };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(ADMIN).json(&json!({"offer_id": "bags", "member_id": format!("m{i}"), "code": format!("c{i}")})).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let links = lake::registry::parse_links(&std::fs::read(dir.path().join("lake/registry/links.csv")).unwrap()).unwrap();
    let codes: HashSet<_> = links.iter().map(|l| l.code.clone()).collect();
    for i in 0..24 {
        assert!(codes.contains(&format!("c{i}")), "c{i} lost");
    }
    assert_eq!(links.len(), 2 + 1 + 24);

    let listed: Vec<Value> = http.get(a.url("/api/links?offer_id=bags&member_id=m3")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["code"], "c3");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn health_metrics_and_limits() {
    let (dir, server) = seeded().await;
    let http = client();
    let h: Value = http.get(server.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    http.get(server.url("/l/ann1")).send().await.unwrap();
    http.get(server.url("/l/ann1")).send().await.unwrap();
    http.get(server.url("/p.gif?offer=nope")).send().await.unwrap();
    http.get(server.url("/p.gif?offer=shoes&amount=x")).send().await.unwrap();
    let r = http.get(server.url("/metrics")).send().await.unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let m = r.text().await.unwrap();
    assert!(m.contains("clicktrail_hits_total{kind=\"click\"} 2"), "{m}");
    let om = http.get(server.url("/metrics")).header("accept", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5").send().await.unwrap();
    assert!(om.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    assert!(m.contains("clicktrail_rejects_total{reason=\"not_found\"} 1"), "{m}");
    assert!(m.contains("clicktrail_rejects_total{reason=\"bad_request\"} 1"), "{m}");
    assert!(m.contains("clicktrail_spool_bytes "), "{m}");
    assert!(m.contains("clicktrail_upload_lag_seconds "), "{m}");
    // Oversized request heads are refused.
    let r = http.get(server.url("/healthz")).header("x-big", "a".repeat(20 * 1024)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(http.get(server.url("/nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    server.stop().await;
    assert_eq!(read_hits(&dir.path().join("lake").display().to_string()).await.len(), 2);
}

/// Captures what the collector logs on this thread (the test's current-thread runtime runs
/// the server's handlers) at WARN and above.
fn capture_warnings() -> (std::sync::Arc<std::sync::Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || W(sink.clone()))
        .finish();
    (buf, tracing::subscriber::set_default(subscriber))
}

fn count_lines(buf: &std::sync::Mutex<Vec<u8>>, needle: &str) -> usize {
    String::from_utf8_lossy(&buf.lock().unwrap()).lines().filter(|l| l.contains(needle)).count()
}

#[tokio::test]
async fn full_spool_refuses_with_503_and_recovers() {
    let (logs, _guard) = capture_warnings();
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let mut args = serve_args(&dir.path().join("spool"));
    args.spool_max_bytes = 2000;
    args.flush_interval = Duration::from_millis(300);
    // The lake cannot take hits: a file stands where the hits folder must be.
    std::fs::write(dir.path().join("lake/hits"), b"in the way").unwrap();
    let server = TestServer::start(&lake_url, args).await;
    let http = client();
    let ready = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");
    let mut acked = Vec::new();
    let mut refused = 0;
    for _ in 0..20 {
        let r = http.get(server.url("/l/ann1")).send().await.unwrap();
        match r.status() {
            StatusCode::FOUND => acked.push(query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone()),
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key("retry-after"));
                refused += 1;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(!acked.is_empty() && refused > 0, "acked {} refused {refused}", acked.len());
    let r = http.get(server.url(&format!("/postback?offer=shoes&click_id={}&token={TOKEN}", acked[0]))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let m = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("clicktrail_rejects_total{reason=\"spool_full\"}"), "{m}");

    // Regression: /healthz said ok while every hit got 503. /readyz says why hits are
    // refused; /healthz stays liveness (200) and tells readiness in a field.
    let r = http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(body["reason"].as_str().unwrap().contains("spool is full"), "{body}");
    let h = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(h.json::<Value>().await.unwrap()["ready"], false);

    // Regression: every refused hit logged a line (39k lines in 40 s). Now one a second.
    let before = count_lines(&logs, "cannot be stored");
    let burst = std::time::Instant::now();
    for _ in 0..40 {
        assert_eq!(http.get(server.url("/l/ann1")).send().await.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let lines = count_lines(&logs, "cannot be stored") - before;
    assert!(lines <= 2 + burst.elapsed().as_secs() as usize, "{lines} lines for 40 refusals");

    // The store comes back: everything acknowledged reaches the lake and the spool drains.
    std::fs::remove_file(dir.path().join("lake/hits")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let r = http.get(server.url("/l/ann1")).send().await.unwrap();
        if r.status() == StatusCode::FOUND {
            acked.push(query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "spool never drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        if http.get(server.url("/readyz")).send().await.unwrap().status() == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    let hits = read_hits(&lake_url).await;
    let got: Vec<_> = hits.iter().filter_map(|h| h.click_id.clone()).collect();
    let got_set: HashSet<_> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "no duplicates");
    assert_eq!(got_set, acked.into_iter().collect::<HashSet<_>>(), "exactly the acknowledged clicks");
}

/// Regression: once the spool was full, every hit got 503 until the next scheduled flush
/// (up to `--flush-interval`) although the lake was reachable. A refusal now flushes at once.
#[tokio::test]
async fn full_spool_flushes_at_once_without_waiting_for_the_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let mut args = serve_args(&dir.path().join("spool"));
    args.spool_max_bytes = 2000;
    args.flush_interval = Duration::from_secs(600);
    let server = TestServer::start(&lake_url, args).await;
    let http = client();
    let click = || async {
        let r = http.get(server.url("/l/ann1")).send().await.unwrap();
        match r.status() {
            StatusCode::FOUND => Some(query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone()),
            StatusCode::SERVICE_UNAVAILABLE => None,
            s => panic!("unexpected {s}"),
        }
    };
    let mut acked = Vec::new();
    let mut refused = false;
    for _ in 0..50 {
        match click().await {
            Some(id) => acked.push(id),
            None => {
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "a 2000-byte spool fills within 50 clicks");
    let start = std::time::Instant::now();
    let mut taken = 0;
    // Fills and is flushed again several times, each refusal brief.
    while taken < 30 {
        match click().await {
            Some(id) => {
                acked.push(id);
                taken += 1;
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still refusing after {:?} ({taken} taken)", start.elapsed());
    }
    server.stop().await;
    let got: HashSet<_> = read_hits(&lake_url).await.into_iter().filter_map(|h| h.click_id).collect();
    assert_eq!(got, acked.into_iter().collect::<HashSet<_>>(), "exactly the acknowledged clicks");
}

/// Regression, with a real full disk: the spool on a 64 KiB tmpfs (mounting one needs
/// root; skipped otherwise). Writes fail with ENOSPC; each refusal flushes at once, so a
/// stretch of 503s ends as soon as the lake has the data, not at `--flush-interval`.
#[tokio::test]
async fn full_spool_disk_enospc_flushes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&spool)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs for the spool (needs root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(spool.clone());
    let mut args = serve_args(&spool);
    args.flush_interval = Duration::from_secs(600);
    let server = TestServer::start(&lake_url, args).await;
    let http = client();
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut refused_since: Option<std::time::Instant> = None;
    while acked.len() < 500 {
        let r = http.get(server.url("/l/ann1")).send().await.unwrap();
        match r.status() {
            StatusCode::FOUND => {
                acked.push(query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone());
                refused_since = None;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                let since = *refused_since.get_or_insert_with(std::time::Instant::now);
                assert!(since.elapsed() < Duration::from_secs(5), "refused for {:?} with the lake reachable", since.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(refused > 0, "500 clicks fill a 64 KiB spool");
    server.stop().await;
    let got: HashSet<_> = read_hits(&lake_url).await.into_iter().filter_map(|h| h.click_id).collect();
    assert_eq!(got, acked.into_iter().collect::<HashSet<_>>(), "exactly the acknowledged clicks");
}

#[tokio::test]
async fn leftover_spool_is_uploaded_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // What a killed process leaves: an open segment with a torn last frame, spanning two
    // hours, and a sealed one.
    let mut a = collector::hit::Hit::new(HitKind::Click, "shoes".into());
    a.ts = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:59:59.999999Z").unwrap().timestamp_micros();
    let mut b = collector::hit::Hit::new(HitKind::Postback, "shoes".into());
    b.ts = a.ts + 1;
    b.amount_micros = Some(1);
    let frame = |h: &collector::hit::Hit| {
        let payload = serde_json::to_vec(h).unwrap();
        let mut f = (payload.len() as u32).to_le_bytes().to_vec();
        f.extend(crc32fast::hash(&payload).to_le_bytes());
        f.extend(payload);
        f
    };
    let mut open = frame(&a);
    open.extend(frame(&b));
    open.extend(&frame(&a)[..20]);
    std::fs::write(spool.join(format!("{}.open", uuid::Uuid::now_v7())), open).unwrap();
    let c = collector::hit::Hit::new(HitKind::Pixel, "bags".into());
    std::fs::write(spool.join(format!("{}.sealed", uuid::Uuid::now_v7())), frame(&c)).unwrap();

    let mut args = serve_args(&spool);
    args.flush_interval = Duration::from_secs(3600);
    let server = TestServer::start(&lake_url, args).await;
    let start = std::time::Instant::now();
    while read_hits(&lake_url).await.len() < 3 {
        assert!(start.elapsed() < Duration::from_secs(10), "leftovers were not uploaded at start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
    let hits = read_hits(&lake_url).await;
    let ids: HashMap<_, _> = hits.iter().map(|h| (h.hit_id.clone(), h.clone())).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[&a.hit_id], a);
    assert_eq!(ids[&b.hit_id], b);
    assert_eq!(ids[&c.hit_id], c);
    let files: Vec<_> = walk(&dir.path().join("lake/hits"));
    assert!(files.iter().any(|f| f.contains("date=2026-03-01/hour=10/")));
    assert!(files.iter().any(|f| f.contains("date=2026-03-01/hour=11/")));
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".open") || n.ends_with(".sealed")).collect();
    assert!(left.is_empty(), "uploaded segments are deleted: {left:?}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn second_collector_on_the_same_spool_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    let server = TestServer::start(&lake_url, serve_args(&dir.path().join("spool"))).await;
    let err = collector::Collector::start(Lake::open(&lake_url).unwrap(), serve_args(&dir.path().join("spool")), url::Url::parse("http://x/").unwrap())
        .await
        .err()
        .expect("the spool is locked");
    assert!(format!("{err:#}").contains("in use by another collector"), "{err:#}");
    server.stop().await;
}

#[tokio::test]
async fn javascript_snippet_keeps_click_id_and_converts() {
    let (dir, server) = seeded().await;
    let http = client();
    let r = http.get(server.url("/t.js?offer=shoes")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    let js = r.text().await.unwrap();
    assert!(js.contains(&format!("\"{}\"", server.base)));
    assert!(!js.contains("__CLICKTRAIL_"));
    assert_eq!(http.get(server.url("/t.js?offer=nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    if std::process::Command::new("node").arg("--version").output().is_err() {
        assert!(!services_required(), "node is required to run the snippet");
        eprintln!("skipping the snippet run: node is not installed");
        server.stop().await;
        return;
    }
    // A click gives the landing URL; the snippet runs on the brand's page in node with a
    // browser-like document whose cookie jar refuses public suffixes, as browsers do.
    let land = http.get(server.url("/l/ann1")).send().await.unwrap();
    let landing = land.headers()["location"].to_str().unwrap().to_string();
    let click_id = query_of(&landing)["ct_click_id"].clone();
    let script_path = dir.path().join("t.js");
    std::fs::write(&script_path, &js).unwrap();
    let harness = r#"
const fs = require("fs"); const vm = require("vm");
const [scriptPath, landing] = process.argv.slice(1);
const u = new URL(landing);
const jar = {}; const sets = [];
const document = {
  get cookie() { return Object.entries(jar).map(([k, v]) => k + "=" + v).join("; "); },
  set cookie(s) {
    sets.push(s);
    const [kv, ...attrs] = s.split(";").map(x => x.trim());
    const domain = attrs.find(a => a.toLowerCase().startsWith("domain="));
    if (domain) {
      const d = domain.slice(7);
      if (!d.includes(".") || !u.hostname.endsWith(d)) return; // a public suffix or another site
    }
    const i = kv.indexOf("="); jar[kv.slice(0, i)] = kv.slice(i + 1);
  }
};
const images = [];
class Image { constructor() { images.push(this); } }
const window = { location: { hostname: u.hostname, search: u.search, protocol: u.protocol }, Image };
vm.runInNewContext(fs.readFileSync(scriptPath, "utf8"), { window, document, URLSearchParams });
// Later page, same site, no click id in the URL:
window.location.search = "";
window.clicktrail.convert({ amount: "19.99", currency: "eur", orderId: "JS-1", event: "purchase", coupon: "ann10" });
console.log(JSON.stringify({ sets, src: images.map(i => i.src) }));
"#;
    let out = std::process::Command::new("node").arg("-e").arg(harness).arg(&script_path).arg(&landing).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sets: Vec<String> = result["sets"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let kept = sets.iter().find(|s| s.contains("Domain=example.com")).expect("cookie set on the registrable domain");
    assert!(kept.starts_with(&format!("ct_click_id={click_id};")), "{kept}");
    assert!(kept.contains("Max-Age=604800"), "the offer's cookie days: {kept}");
    assert!(kept.contains("Secure"), "https landing page: {kept}");
    let src = result["src"][0].as_str().unwrap().to_string();
    assert!(src.starts_with(&format!("{}/p.gif?", server.base)), "{src}");
    // The browser would now load the pixel: do it.
    assert_eq!(http.get(&src).send().await.unwrap().status(), StatusCode::OK);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let p = by_kind(&hits, HitKind::Pixel)[0].clone();
    assert_eq!(p.click_id.as_deref(), Some(click_id.as_str()));
    assert_eq!((p.amount_micros, p.currency.as_deref(), p.order_id.as_deref()), (Some(19_990_000), Some("EUR"), Some("JS-1")));
    assert_eq!(p.coupon.as_deref(), Some("ANN10"), "convert({{coupon}}) reaches /p.gif");
}

/// The real binary, started on a free port, waited on until healthy.
struct Proc {
    child: std::process::Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn spawn_binary(lake: &str, spool: &std::path::Path, port: u16) -> Proc {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .args(["--lake", lake, "serve", "--listen", &format!("127.0.0.1:{port}"), "--flush-interval", "500ms", "--ip-salt", "s"])
        .arg("--spool")
        .arg(spool)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let start = std::time::Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "collector did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Proc { child, base }
}

#[derive(Default)]
struct Acked {
    clicks: Vec<String>,
    pixels: Vec<String>,
    postbacks: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_no_acknowledged_hit() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let spool = dir.path().join("spool");
    let port = free_port();
    let mut proc = spawn_binary(&lake_url, &spool, port).await;

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Acked::default()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..48 {
        let (acked, stop, base) = (acked.clone(), stop.clone(), proc.base.clone());
        workers.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let order = format!("w{w}-{i}");
                match i % 3 {
                    0 => {
                        if let Ok(r) = http.get(format!("{base}/l/ann1?sub={order}")).send().await {
                            if r.status() == StatusCode::FOUND {
                                let id = query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone();
                                acked.lock().unwrap().clicks.push(id);
                            }
                        }
                    }
                    1 => {
                        if let Ok(r) = http.get(format!("{base}/p.gif?offer=shoes&amount=1.5&order_id={order}")).send().await {
                            if r.status() == StatusCode::OK {
                                acked.lock().unwrap().pixels.push(order);
                            }
                        }
                    }
                    _ => {
                        let cid = uuid::Uuid::now_v7();
                        let r = http.post(format!("{base}/postback")).bearer_auth(TOKEN).form(&[("offer", "bags"), ("click_id", &cid.to_string()), ("order_id", &order), ("amount", "2")]).send().await;
                        if let Ok(r) = r {
                            if r.status() == StatusCode::OK {
                                if let Ok(v) = r.json::<Value>().await {
                                    acked.lock().unwrap().postbacks.push(v["hit_id"].as_str().unwrap().to_string());
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    // Let the load run across a few flushes, then kill -9 in the middle of it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proc.child.kill().unwrap();
    proc.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let total = acked.clicks.len() + acked.pixels.len() + acked.postbacks.len();
    assert!(total >= 1000, "only {total} hits acknowledged before the kill");

    // Restart on the same spool: leftovers are uploaded; SIGTERM flushes and exits 0.
    let mut proc = spawn_binary(&lake_url, &spool, port).await;
    let status = std::process::Command::new("kill").args(["-TERM", &proc.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = proc.child.wait().unwrap();
    assert!(exit.success(), "SIGTERM exits 0, got {exit}");

    let hits = read_hits(&lake_url).await;
    let mut hit_ids = HashSet::new();
    for h in &hits {
        assert!(hit_ids.insert(h.hit_id.clone()), "hit {} is in the lake twice", h.hit_id);
    }
    let count = |kind: HitKind, key: &dyn Fn(&collector::hit::Hit) -> Option<String>| {
        let mut m: HashMap<String, usize> = HashMap::new();
        for h in hits.iter().filter(|h| h.kind == kind) {
            *m.entry(key(h).unwrap()).or_default() += 1;
        }
        m
    };
    let clicks = count(HitKind::Click, &|h| h.click_id.clone());
    let pixels = count(HitKind::Pixel, &|h| h.order_id.clone());
    let postbacks = count(HitKind::Postback, &|h| Some(h.hit_id.clone()));
    for id in &acked.clicks {
        assert_eq!(clicks.get(id), Some(&1), "acknowledged click {id}");
    }
    for id in &acked.pixels {
        assert_eq!(pixels.get(id), Some(&1), "acknowledged pixel {id}");
    }
    for id in &acked.postbacks {
        assert_eq!(postbacks.get(id), Some(&1), "acknowledged postback {id}");
    }
    eprintln!(
        "kill -9: {} clicks, {} pixels, {} postbacks acknowledged; {} hits in the lake",
        acked.clicks.len(),
        acked.pixels.len(),
        acked.postbacks.len(),
        hits.len()
    );
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.ends_with(".open") || n.ends_with(".sealed")).collect();
    assert!(left.is_empty(), "spool drained after SIGTERM: {left:?}");
}

/// The collector against a real S3-speaking server (CI starts one and sets
/// `CLICKTRAIL_TEST_S3_URL`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` and credentials).
#[tokio::test]
async fn s3_lake_end_to_end() {
    let Ok(base) = std::env::var("CLICKTRAIL_TEST_S3_URL") else {
        assert!(!services_required(), "CLICKTRAIL_TEST_S3_URL must be set when services are required");
        eprintln!("skipping: CLICKTRAIL_TEST_S3_URL is not set");
        return;
    };
    let lake_url = format!("{}/collector-{}", base.trim_end_matches('/'), uuid::Uuid::new_v4());
    let lake = Lake::open(&lake_url).unwrap();
    seed_registry(&lake).await;
    let dir = tempfile::tempdir().unwrap();
    let a = TestServer::start(&lake_url, serve_args(&dir.path().join("spool-a"))).await;
    let b = TestServer::start(&lake_url, serve_args(&dir.path().join("spool-b"))).await;
    let http = client();
    let r = http.get(a.url("/l/ann1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let click_id = query_of(r.headers()["location"].to_str().unwrap())["ct_click_id"].clone();
    let r = http.get(b.url(&format!("/postback?offer=shoes&click_id={click_id}&amount=12.34&order_id=S3-1&token={TOKEN}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Concurrent link creates through both collectors: conditional puts on S3.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let url = if i % 2 == 0 { a.url("/api/links") } else { b.url("/api/links") };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(ADMIN).json(&json!({"offer_id": "bags", "member_id": format!("m{i}")})).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    a.stop().await;
    b.stop().await;
    let reg = collector::registry::load(&lake).await.unwrap();
    assert_eq!(reg.links.len(), 12, "no link lost to a concurrent create");
    let hits = read_hits(&lake_url).await;
    assert_eq!(hits.len(), 2);
    let p = by_kind(&hits, HitKind::Postback)[0];
    assert_eq!((p.click_id.as_deref(), p.amount_micros), (Some(click_id.as_str()), Some(12_340_000)));
}

#[tokio::test]
async fn adjust_records_refunds_rejects_and_restores_once_durable() {
    let (dir, server) = seeded().await;
    let http = client();
    let mut accepted = HashSet::new();
    // Query string with token=: a full refund (no amount), event defaulting to purchase.
    let r = http.get(server.url(&format!("/adjust?offer=shoes&order_id=A-1&action=refund&token={TOKEN}&reason=fraud"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    accepted.insert(body["hit_id"].as_str().unwrap().to_string());
    // Form body with a bearer token: a partial refund in another currency, with an id.
    let r = http
        .post(server.url("/adjust"))
        .bearer_auth(TOKEN)
        .form(&[("offer", "shoes"), ("order_id", "A-2"), ("action", "refund"), ("amount", "4.25"), ("currency", "usd"), ("adjustment_id", "rf-2")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accepted.insert(r.json::<Value>().await.unwrap()["hit_id"].as_str().unwrap().to_string());
    // JSON body: an amount as a JSON number is taken by its literal; the offer's currency.
    let r = http
        .post(server.url("/adjust"))
        .bearer_auth(TOKEN)
        .json(&json!({"offer": "bags", "order_id": "B-1", "action": "refund", "amount": 0.1, "event": "signup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    accepted.insert(r.json::<Value>().await.unwrap()["hit_id"].as_str().unwrap().to_string());
    for action in ["reject", "restore"] {
        let r = http
            .post(server.url("/adjust"))
            .bearer_auth(TOKEN)
            .json(&json!({"offer": "shoes", "order_id": "A-3", "action": action, "adjustment_id": format!("{action}-3")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{action}");
        accepted.insert(r.json::<Value>().await.unwrap()["hit_id"].as_str().unwrap().to_string());
    }

    let long_id = "x".repeat(129);
    let long_order = "o".repeat(129);
    let q = |rest: &str| server.url(&format!("/adjust?token={TOKEN}&{rest}"));
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, Option<&str>)> = vec![
        (http.get(q("order_id=A&action=refund")), StatusCode::BAD_REQUEST, Some("offer")),
        (http.get(q("offer=shoes&action=refund")), StatusCode::BAD_REQUEST, Some("order_id")),
        (http.get(q("offer=shoes&order_id=A")), StatusCode::BAD_REQUEST, Some("action")),
        (http.get(q("offer=shoes&order_id=A&action=cancel")), StatusCode::BAD_REQUEST, Some("action")),
        (http.get(q("offer=shoes&order_id=A&action=refund&amount=-1")), StatusCode::BAD_REQUEST, Some("amount")),
        (http.get(q("offer=shoes&order_id=A&action=refund&amount=1.1234567")), StatusCode::BAD_REQUEST, Some("amount")),
        (http.get(q("offer=shoes&order_id=A&action=reject&amount=1")), StatusCode::BAD_REQUEST, Some("amount")),
        (http.get(q("offer=shoes&order_id=A&action=restore&amount=1")), StatusCode::BAD_REQUEST, Some("amount")),
        (http.get(q("offer=shoes&order_id=A&action=refund&amount=1&currency=EURO")), StatusCode::BAD_REQUEST, Some("currency")),
        (http.get(q("offer=shoes&order_id=A&action=refund&event=Buy!")), StatusCode::BAD_REQUEST, Some("event")),
        (http.get(q(&format!("offer=shoes&order_id={long_order}&action=refund"))), StatusCode::BAD_REQUEST, Some("order_id")),
        (http.get(q("offer=shoes&order_id=A%0A&action=refund")), StatusCode::BAD_REQUEST, Some("order_id")),
        (http.get(q(&format!("offer=shoes&order_id=A&action=refund&adjustment_id={long_id}"))), StatusCode::BAD_REQUEST, Some("adjustment_id")),
        (http.get(q("offer=shoes&order_id=A&action=refund&adjustment_id=a%07b")), StatusCode::BAD_REQUEST, Some("adjustment_id")),
        (http.post(server.url("/adjust")).bearer_auth(TOKEN).json(&json!({"offer": "shoes", "order_id": "A", "action": true})), StatusCode::BAD_REQUEST, Some("action")),
        (http.post(server.url("/adjust")).bearer_auth(TOKEN).header("content-type", "application/json").body("{nope"), StatusCode::BAD_REQUEST, Some("body")),
        (http.get(q("offer=nope&order_id=A&action=refund")), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url("/adjust?offer=shoes&order_id=A&action=refund")), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url("/adjust?offer=shoes&order_id=A&action=refund&token=wrong")), StatusCode::UNAUTHORIZED, None),
        (http.get(server.url("/adjust?offer=shoes&order_id=A&action=refund")).bearer_auth("wrong"), StatusCode::UNAUTHORIZED, None),
        (http.post(server.url("/adjust")).bearer_auth(TOKEN).form(&[("offer", "shoes"), ("pad", &"x".repeat(17 * 1024))]), StatusCode::PAYLOAD_TOO_LARGE, None),
    ];
    for (i, (req, status, field)) in cases.into_iter().enumerate() {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), status, "case {i}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "case {i}: {body}");
        if let Some(f) = field {
            assert_eq!(body["field"], f, "case {i}: {body}");
        }
    }
    let m = http.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("clicktrail_hits_total{kind=\"adjustment\"} 5"), "{m}");
    server.stop().await;

    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.len(), 5, "refused adjustments record nothing");
    assert!(hits.iter().all(|h| h.kind == HitKind::Adjustment));
    assert_eq!(hits.iter().map(|h| h.hit_id.clone()).collect::<HashSet<_>>(), accepted);
    let a1 = hits.iter().find(|h| h.order_id.as_deref() == Some("A-1")).unwrap();
    assert_eq!(
        (a1.offer_id.as_str(), a1.action.as_deref(), a1.event.as_deref(), a1.amount_micros, a1.currency.as_deref(), a1.adjustment_id.as_deref()),
        ("shoes", Some("refund"), Some("purchase"), None, None, None)
    );
    assert_eq!(a1.params.as_deref(), Some("reason=fraud"), "the token is never stored");
    let a2 = hits.iter().find(|h| h.order_id.as_deref() == Some("A-2")).unwrap();
    assert_eq!((a2.amount_micros, a2.currency.as_deref(), a2.adjustment_id.as_deref()), (Some(4_250_000), Some("USD"), Some("rf-2")));
    let b1 = hits.iter().find(|h| h.order_id.as_deref() == Some("B-1")).unwrap();
    assert_eq!((b1.amount_micros, b1.currency.as_deref(), b1.event.as_deref()), (Some(100_000), Some("USD"), Some("signup")));
    let a3: Vec<_> = hits.iter().filter(|h| h.order_id.as_deref() == Some("A-3")).map(|h| (h.action.clone().unwrap(), h.adjustment_id.clone().unwrap())).collect();
    assert_eq!(a3.len(), 2);
    assert!(a3.contains(&("reject".into(), "reject-3".into())) && a3.contains(&("restore".into(), "restore-3".into())));
}

#[tokio::test]
async fn coupons_on_pixels_and_postbacks() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    // A pixel with a coupon, stored upper-cased.
    let r = http.get(server.url("/p.gif?offer=shoes&order_id=C-1&amount=10&coupon=ann_10-x")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A postback with a coupon and no click id is accepted (SPEC §3).
    let r = http.get(server.url(&format!("/postback?offer=shoes&order_id=C-2&coupon=SPRING&token={TOKEN}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Both, in JSON.
    let r = http
        .post(server.url("/postback"))
        .bearer_auth(TOKEN)
        .json(&json!({"offer": "bags", "order_id": "C-3", "click_id": cid, "coupon": "bob5"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let long = "c".repeat(65);
    for (req, field) in [
        (http.get(server.url("/p.gif?offer=shoes&coupon=bad%20code")), "coupon"),
        (http.get(server.url(&format!("/p.gif?offer=shoes&coupon={long}"))), "coupon"),
        (http.get(server.url(&format!("/postback?offer=shoes&coupon=a.b&token={TOKEN}"))), "coupon"),
        (http.post(server.url("/postback")).bearer_auth(TOKEN).json(&json!({"offer": "shoes", "click_id": cid, "coupon": false})), "coupon"),
        // Neither a click id nor a coupon: still click_id.
        (http.get(server.url(&format!("/postback?offer=shoes&order_id=C-9&token={TOKEN}"))), "click_id"),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["field"], field, "{body}");
    }
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.len(), 3, "refused conversions record nothing");
    let coupon = |order: &str| hits.iter().find(|h| h.order_id.as_deref() == Some(order)).unwrap();
    assert_eq!((coupon("C-1").kind, coupon("C-1").coupon.as_deref()), (HitKind::Pixel, Some("ANN_10-X")));
    assert_eq!((coupon("C-2").click_id.as_deref(), coupon("C-2").coupon.as_deref()), (None, Some("SPRING")));
    assert_eq!((coupon("C-3").click_id.as_deref(), coupon("C-3").coupon.as_deref()), (Some(cid.as_str()), Some("BOB5")));
    assert!(hits.iter().all(|h| h.params.is_none()), "the coupon is a column, not a param");
}

/// Runs the real binary on `lake`; returns (success, stdout, stderr).
fn cli(lake: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
        .arg("--lake")
        .arg(lake)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn hits_files(lake_dir: &std::path::Path) -> Vec<String> {
    walk(lake_dir).into_iter().filter(|p| p.contains("hits/") && p.ends_with(".parquet")).collect()
}

#[tokio::test]
async fn adjustments_import_checks_every_row_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };

    // A bad row anywhere: nothing written, the line and field named.
    let bad = write("bad.csv", "order_id,action,amount\nA-1,refund,5\nA-2,reject,3\nA-3,cancel,\n");
    let (ok, _, err) = cli(&lake_url, &["adjustments", "import", &bad, "--offer", "shoes"]);
    assert!(!ok);
    assert!(err.contains("line 3") && err.contains("amount"), "{err}");
    assert!(err.contains("line 4") && err.contains("action"), "{err}");
    let unknown = write("unknown.csv", "order_id,action,note,Reason\nA-1,refund,x,y\n");
    let (ok, _, err) = cli(&lake_url, &["adjustments", "import", &unknown, "--offer", "shoes"]);
    assert!(!ok && err.contains("\"note\"") && err.contains("\"reason\""), "{err}");
    let missing = write("missing.csv", "order_id,amount\nA-1,5\n");
    let (ok, _, err) = cli(&lake_url, &["adjustments", "import", &missing, "--offer", "shoes"]);
    assert!(!ok && err.contains("\"action\""), "{err}");
    let good = write("march.csv", "adjustment_id,action,order_id,amount,currency,event\nr-1,refund,A-1,5.50,,\nr-2,reject,A-2,,,\n,restore,A-2,,,\nr-3,refund,S-1,,,signup\n");
    let (ok, _, err) = cli(&lake_url, &["adjustments", "import", &good, "--offer", "nope"]);
    assert!(!ok && err.contains("there is no offer \"nope\""), "{err}");
    assert!(hits_files(&lake_dir).is_empty(), "refused imports write nothing");
    assert!(!lake_dir.join("registry/adjustment_imports.csv").exists());

    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &good, "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("4 rows written, 0 skipped"), "{out}");
    let files = hits_files(&lake_dir);
    assert_eq!(files.len(), 1, "one Parquet file: {files:?}");
    let rel = files[0].strip_prefix(&format!("{}/", lake_dir.display())).unwrap();
    assert!(rel.contains("/adjustments-") && out.contains(rel), "the summary names the file: {out}");

    // The same file again: nothing written.
    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &good, "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("already imported"), "{out}");
    assert_eq!(hits_files(&lake_dir).len(), 1);

    // Next month's export overlaps: r-2 and r-3 are skipped, the rest written.
    let april = write("april.csv", "order_id,action,amount,adjustment_id\nA-2,reject,,r-2\nS-1,refund,,r-3\nA-9,refund,1,r-9\nA-1,refund,0.5,\n");
    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &april, "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("2 rows written, 2 skipped"), "{out}");
    // Adjustment ids are per offer: the same ids for another offer are all written.
    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &april, "--offer", "bags"]);
    assert!(ok, "{err}");
    assert!(out.contains("4 rows written, 0 skipped"), "{out}");
    // Everything already imported: recorded, nothing written.
    let again = write("again.csv", "order_id,action,adjustment_id\nA-2,reject,r-2\n");
    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &again, "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("0 rows written, 1 skipped"), "{out}");
    assert_eq!(hits_files(&lake_dir).len(), 3);

    let ledger = lake::registry::parse_adjustment_imports(&std::fs::read(lake_dir.join("registry/adjustment_imports.csv")).unwrap()).unwrap();
    assert_eq!(ledger.len(), 4);
    assert_eq!(ledger.iter().map(|i| (i.offer_id.as_str(), i.rows, i.skipped)).collect::<Vec<_>>(), [("shoes", 4, 0), ("shoes", 2, 2), ("bags", 4, 0), ("shoes", 0, 1)]);
    assert_eq!(ledger[0].source, "march.csv");
    assert_eq!(ledger[0].sha256.len(), 64);
    assert!(ledger[3].hits_file.is_empty());

    let hits = read_hits(&lake_url).await;
    assert_eq!(hits.len(), 10);
    assert!(hits.iter().all(|h| h.kind == HitKind::Adjustment));
    assert!(ledger[0].hits_file.ends_with(&format!("adjustments-{}.parquet", ledger[0].import_id)));
    let first = hits.iter().find(|h| h.adjustment_id.as_deref() == Some("r-1")).unwrap();
    assert_eq!(
        (first.order_id.as_deref(), first.action.as_deref(), first.amount_micros, first.currency.as_deref(), first.event.as_deref()),
        (Some("A-1"), Some("refund"), Some(5_500_000), Some("EUR"), Some("purchase"))
    );
    let imported_at = chrono::DateTime::parse_from_rfc3339(&ledger[0].imported_at).unwrap().timestamp_micros();
    assert_eq!(first.ts, imported_at, "ts is the time of the import");
    // Within one import the rows keep their order by (ts, hit_id): the reject, then the restore.
    let mut a2: Vec<_> = hits.iter().filter(|h| h.offer_id == "shoes" && h.order_id.as_deref() == Some("A-2") && h.ts == imported_at).collect();
    a2.sort_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)));
    assert_eq!(a2.iter().map(|h| h.action.as_deref().unwrap()).collect::<Vec<_>>(), ["reject", "restore"]);
    assert!(hits.iter().all(|h| uuid::Uuid::parse_str(&h.hit_id).unwrap().get_version_num() == 7));
    assert_eq!(hits.iter().map(|h| h.hit_id.clone()).collect::<HashSet<_>>().len(), 10);
    let s1 = hits.iter().find(|h| h.adjustment_id.as_deref() == Some("r-3") && h.offer_id == "shoes").unwrap();
    assert_eq!(s1.event.as_deref(), Some("signup"));

    // Regression (issue 14): once `pipeline compact` has merged the imports' files into
    // their hour's compacted file, the ids they wrote are still found and skipped.
    let lake = Lake::open(&lake_url).unwrap();
    let opts = lake::compact::CompactOptions { grace: std::time::Duration::ZERO, now: chrono::Utc::now() + chrono::Duration::hours(2), ..Default::default() };
    let s = lake::compact::compact(&lake, None, &opts).await.unwrap();
    assert!(s.compacted >= 1 && s.failed.is_empty(), "{s:?}");
    assert!(hits_files(&lake_dir).iter().all(|f| f.contains("/compacted-")));
    let again = write("again2.csv", "order_id,action,adjustment_id\nA-2,reject,r-2\nA-1,refund,r-1\nA-7,reject,r-7\n");
    let (ok, out, err) = cli(&lake_url, &["adjustments", "import", &again, "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 rows written, 2 skipped"), "{out}");
}

#[tokio::test]
async fn commissions_add_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let (ok, out, err) = cli(&lake_url, &["commissions", "add", "--offer", "shoes", "--percent", "10"]);
    assert!(ok, "{err}");
    assert!(out.contains("added"), "{out}");
    let (ok, _, err) = cli(&lake_url, &["commissions", "add", "--offer", "shoes", "--member", "ann", "--event", "purchase", "--percent", "12.5", "--flat", "1.50", "--valid-from", "2026-03-01"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&lake_url, &["commissions", "add", "--offer", "bags", "--event", "click", "--flat", "0.05"]);
    assert!(ok, "{err}");
    // The same offer, member, event and valid_from as an existing rule: refused, naming it.
    let (ok, _, err) = cli(&lake_url, &["commissions", "add", "--offer", "shoes", "--member", "ann", "--event", "purchase", "--percent", "5", "--valid-from", "2026-03-01"]);
    assert!(!ok);
    assert!(err.contains("exists already") && err.contains("percent=12.5"), "{err}");
    for (args, what) in [
        (vec!["--offer", "nope", "--percent", "1"], "there is no offer"),
        (vec!["--offer", "shoes", "--percent", "1.12345"], "percent"),
        (vec!["--offer", "shoes", "--member", "bob"], "percent"),
        (vec!["--offer", "shoes", "--event", "click", "--percent", "3"], "click"),
        (vec!["--offer", "shoes", "--flat=-1"], "flat"),
        (vec!["--offer", "shoes", "--flat", "1", "--valid-from", "2026-02-30"], "valid_from"),
    ] {
        let mut full = vec!["commissions", "add"];
        full.extend(args.iter());
        let (ok, _, err) = cli(&lake_url, &full);
        assert!(!ok, "{args:?}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    let rules = lake::registry::parse_commissions(&std::fs::read(lake_dir.join("registry/commissions.csv")).unwrap()).unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!((rules[1].member_id.as_str(), rules[1].percent_e4(), rules[1].flat_micros()), ("ann", Some(125_000), Some(1_500_000)));
    let (ok, out, _) = cli(&lake_url, &["commissions", "list"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "offer_id\tmember_id\tevent\tpercent\tflat\tvalid_from");
    assert_eq!(lines.len(), 4);
    assert!(lines.contains(&"shoes\tann\tpurchase\t12.5\t1.50\t2026-03-01"), "{out}");
    let (_, out, _) = cli(&lake_url, &["commissions", "list", "--offer", "bags"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["offer_id\tmember_id\tevent\tpercent\tflat\tvalid_from", "bags\t\tclick\t\t0.05\t"]);
}

#[tokio::test]
async fn coupons_add_import_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let (ok, out, err) = cli(&lake_url, &["coupons", "add", "--offer", "shoes", "--member", "ann", "--code", "ann10", "--valid-from", "2026-03-01", "--valid-to", "2026-03-31"]);
    assert!(ok, "{err}");
    assert!(out.contains("ANN10") && out.contains("added"), "{out}");
    // Codes are unique per offer, whatever their case; another offer may reuse one.
    let (ok, _, err) = cli(&lake_url, &["coupons", "add", "--offer", "shoes", "--member", "bob", "--code", "Ann10"]);
    assert!(!ok);
    assert!(err.contains("exists already") && err.contains("ann"), "{err}");
    let (ok, _, err) = cli(&lake_url, &["coupons", "add", "--offer", "bags", "--member", "bob", "--code", "ANN10"]);
    assert!(ok, "{err}");
    for (args, what) in [
        (vec!["--offer", "nope", "--member", "a", "--code", "X"], "there is no offer"),
        (vec!["--offer", "shoes", "--member", "a", "--code", "NO SPACES"], "code"),
        (vec!["--offer", "shoes", "--member", "a", "--code", "X", "--valid-from", "2026-02-30"], "valid_from"),
        (vec!["--offer", "shoes", "--member", "a", "--code", "X", "--valid-from", "2026-03-05", "--valid-to", "2026-03-01"], "before valid_from"),
    ] {
        let mut full = vec!["coupons", "add"];
        full.extend(args.iter());
        let (ok, _, err) = cli(&lake_url, &full);
        assert!(!ok, "{args:?}");
        assert!(err.contains(what), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    // A discount export: extra columns ignored, timestamps cut to their date; a bad row
    // anywhere means nothing is imported.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "Name,Value,Member,Starts At,Ends At\nSUMMER,10,cara,2026-06-01T00:00:00Z,\nbad code,5,dan,,\n").unwrap();
    let (ok, _, err) = cli(&lake_url, &["coupons", "import", bad.to_str().unwrap(), "--offer", "shoes"]);
    assert!(!ok);
    assert!(err.contains("line 3") && err.contains("nothing imported"), "{err}");
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "Name,Value,Member,Starts At,Ends At\nsummer,10,cara,2026-06-01T00:00:00Z,2026-08-31T23:59:59Z\nWINTER,5,dan,,\n").unwrap();
    let (ok, out, err) = cli(&lake_url, &["coupons", "import", good.to_str().unwrap(), "--offer", "shoes"]);
    assert!(ok, "{err}");
    assert!(out.contains("imported 2"), "{out}");
    let coupons = lake::registry::parse_coupons(&std::fs::read(lake_dir.join("registry/coupons.csv")).unwrap()).unwrap();
    assert_eq!(coupons.len(), 4);
    let (ok, out, _) = cli(&lake_url, &["coupons", "list", "--offer", "shoes"]);
    assert!(ok);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "code\toffer_id\tmember_id\tvalid_from\tvalid_to",
            "ANN10\tshoes\tann\t2026-03-01\t2026-03-31",
            "SUMMER\tshoes\tcara\t2026-06-01\t2026-08-31",
            "WINTER\tshoes\tdan\t\t",
        ]
    );
}

#[tokio::test]
async fn offers_add_takes_lock_days_min_lag_and_coupon_priority() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    let base = ["offers", "add", "--destination", "https://shop.example.com/", "--token", "t0ken"];
    let with = |offer: &str, extra: &[&str]| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["--offer".to_string(), offer.to_string()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: Vec<String>| cli(&lake_url, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run(with("plain", &[])).0);
    let (ok, _, err) = run(with("strict", &["--lock-days", "14", "--min-lag", "10s", "--coupon-priority", "coupon"]));
    assert!(ok, "{err}");
    assert!(run(with("minute", &["--min-lag", "2m", "--lock-days", "0"])).0);
    for bad in [vec!["--min-lag", "500ms"], vec!["--min-lag", "soon"], vec!["--coupon-priority", "first"], vec!["--lock-days", "-1"], vec!["--lock-days", "4000"]] {
        let (ok, _, err) = run(with("bad", &bad));
        assert!(!ok, "{bad:?}");
        assert!(!err.is_empty());
    }
    let offers = lake::registry::parse_offers(&std::fs::read(lake_dir.join("registry/offers.csv")).unwrap()).unwrap();
    let get = |id: &str| offers.iter().find(|o| o.offer_id == id).unwrap();
    assert_eq!((get("plain").lock_days, get("plain").min_lag_seconds, get("plain").coupon_priority.as_str()), (30, 0, "click"));
    assert_eq!((get("strict").lock_days, get("strict").min_lag_seconds, get("strict").coupon_priority.as_str()), (14, 10, "coupon"));
    assert_eq!((get("minute").lock_days, get("minute").min_lag_seconds), (0, 120));
    assert!(offers.iter().all(|o| o.offer_id != "bad"));
    let (ok, out, _) = cli(&lake_url, &["offers", "list"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "offer_id\tcurrency\tcookie_days\tlock_days\tmin_lag_seconds\tcoupon_priority\tpaused_at\tdestination_url");
    assert!(lines.contains(&"strict\tUSD\t28\t14\t10\tcoupon\t\thttps://shop.example.com/"), "{out}");
}

#[tokio::test]
async fn registry_edits_are_explicit_pauses_track_nothing_and_every_change_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    let run = |args: &[&str]| cli(&lake_url, args);
    let add = ["offers", "add", "--offer", "shoes", "--destination", "https://shop.example.com/in", "--token", "first-secret", "--currency", "EUR"];
    let (ok, out, err) = run(&add);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "offer shoes added");
    assert_eq!(run(&add).1.trim(), "offer shoes unchanged", "re-running a set-up script is harmless");
    // Re-run without --currency and with another token: refused, naming what differs.
    let (ok, _, err) = run(&["offers", "add", "--offer", "shoes", "--destination", "https://shop.example.com/in", "--token", "other-secret"]);
    assert!(!ok);
    assert!(err.contains("currency EUR (given: USD)") && err.contains("postback token") && err.contains("--update"), "{err}");
    assert!(!err.contains("first-secret") && !err.contains("other-secret"), "tokens are never shown: {err}");
    let offers = || lake::registry::parse_offers(&std::fs::read(lake_dir.join("registry/offers.csv")).unwrap()).unwrap();
    assert_eq!((offers()[0].currency.as_str(), offers()[0].postback_token.as_str()), ("EUR", "first-secret"));
    // --update changes only the flags given.
    let (ok, out, err) = run(&["offers", "add", "--update", "--offer", "shoes", "--cookie-days", "14"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "offer shoes updated");
    let o = offers()[0].clone();
    assert_eq!((o.currency.as_str(), o.postback_token.as_str(), o.cookie_days, o.destination_url.as_str()), ("EUR", "first-secret", 14, "https://shop.example.com/in"));
    let (ok, _, err) = run(&["offers", "add", "--update", "--offer", "nosuch", "--cookie-days", "3"]);
    assert!(!ok && err.contains("nosuch"), "{err}");
    let (ok, _, err) = run(&["offers", "add", "--offer", "bags", "--destination", "https://bags.example.org/"]);
    assert!(!ok && err.contains("--token"), "{err}");
    let (ok, _, err) = run(&["offers", "add", "--update", "--offer", "shoes", "--currency", "euro"]);
    assert!(!ok && err.contains("currency"), "{err}");
    assert!(run(&["links", "add", "--offer", "shoes", "--member", "ann", "--code", "ann1"]).0);
    assert!(run(&["links", "add", "--offer", "shoes", "--member", "bob", "--code", "bob1"]).0);

    let mut args = serve_args(&dir.path().join("spool"));
    args.registry_refresh = Duration::from_millis(50);
    let server = TestServer::start(&lake_url, args).await;
    let http = client();
    let click = |code: &'static str| {
        let http = http.clone();
        let url = server.url(&format!("/l/{code}?utm_source=ig"));
        async move { http.get(url).header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0").send().await.unwrap() }
    };
    let tracked = click("ann1").await;
    let location = tracked.headers()["location"].to_str().unwrap().to_string();
    let click_id = query_of(&location)["ct_click_id"].clone();

    let settle = || tokio::time::sleep(Duration::from_millis(400));
    let (ok, out, _) = run(&["links", "pause", "--code", "ann1"]);
    assert!(ok && out.trim() == "link ann1 paused", "{out}");
    assert_eq!(run(&["links", "pause", "--code", "ann1"]).1.trim(), "link ann1 was paused already");
    assert!(!run(&["links", "pause", "--code", "nosuch"]).0);
    settle().await;
    let paused = click("ann1").await;
    assert_eq!(paused.status(), StatusCode::FOUND, "a paused link still redirects");
    assert_eq!(paused.headers()["location"], "https://shop.example.com/in?utm_source=ig", "no click id added");
    assert!(paused.headers().get("set-cookie").is_none(), "no cookie set");
    assert!(click("bob1").await.headers()["location"].to_str().unwrap().contains("ct_click_id="), "other links are not paused");
    let (ok, out, _) = run(&["links", "list"]);
    assert!(ok && out.lines().next().unwrap().ends_with("\tpaused_at"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ann1\t") && l.contains("Z")), "{out}");
    assert_eq!(run(&["links", "resume", "--code", "ann1"]).1.trim(), "link ann1 resumed");

    // A paused offer pauses every link; its conversions are still recorded.
    assert_eq!(run(&["offers", "pause", "--offer", "shoes"]).1.trim(), "offer shoes paused");
    settle().await;
    for code in ["ann1", "bob1"] {
        assert!(!click(code).await.headers()["location"].to_str().unwrap().contains("ct_click_id"), "{code}");
    }
    let conv = http.get(server.url(&format!("/postback?offer=shoes&click_id={click_id}&order_id=o1&amount=12.50&token=first-secret"))).send().await.unwrap();
    assert_eq!(conv.status(), StatusCode::OK, "a paused offer's conversions are recorded");
    assert!(run(&["offers", "list"]).1.lines().any(|l| l.starts_with("shoes\t") && l.contains("Z\thttps://")));
    assert_eq!(run(&["offers", "resume", "--offer", "shoes"]).1.trim(), "offer shoes resumed");
    assert_eq!(run(&["offers", "resume", "--offer", "shoes"]).1.trim(), "offer shoes was not paused");
    settle().await;
    assert!(click("ann1").await.headers()["location"].to_str().unwrap().contains("ct_click_id="));
    server.stop().await;

    let hits = read_hits(&lake_url).await;
    let clicks = by_kind(&hits, HitKind::Click);
    // Tracked: ann1 before the pause, bob1 during ann1's pause, ann1 after the resume.
    assert_eq!(clicks.len(), 3, "paused clicks record nothing");
    let conversions: Vec<_> = hits.iter().filter(|h| h.kind != HitKind::Click).collect();
    assert_eq!(conversions.len(), 1);
    assert_eq!((conversions[0].click_id.as_deref(), conversions[0].amount_micros), (Some(click_id.as_str()), Some(12_500_000)));

    // The change log: one line per change, in order, secrets masked.
    let log = std::fs::read_to_string(lake_dir.join("registry/_changes.jsonl")).unwrap();
    assert!(!log.contains("first-secret") && !log.contains("other-secret"), "{log}");
    let lines: Vec<Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<(String, String)> = lines.iter().map(|l| (l["file"].as_str().unwrap().to_string(), l["action"].as_str().unwrap().to_string())).collect();
    let want = [
        ("offers.csv", "add"),
        ("offers.csv", "update"),
        ("links.csv", "add"),
        ("links.csv", "add"),
        ("paused.csv", "pause"),
        ("paused.csv", "resume"),
        ("paused.csv", "pause"),
        ("paused.csv", "resume"),
    ];
    assert_eq!(actions, want.iter().map(|(f, a)| (format!("registry/{f}"), a.to_string())).collect::<Vec<_>>());
    let update = &lines[1];
    assert_eq!((update["old"]["cookie_days"].as_u64(), update["new"]["cookie_days"].as_u64()), (Some(28), Some(14)));
    assert_eq!(update["old"]["postback_token"], update["new"]["postback_token"]);
    assert!(update["new"]["postback_token"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(update["key"]["offer_id"], "shoes");
    assert!(update["by"].as_str().unwrap().starts_with("collector --lake"), "{}", update["by"]);
    assert!(update["by"].as_str().unwrap().contains("offers add --update"));
    assert!(lines[0]["by"].as_str().unwrap().contains("--token ***"), "{}", lines[0]["by"]);
    assert!(lines[0]["old"].is_null() && lines[5]["new"].is_null());
    chrono::DateTime::parse_from_rfc3339(lines[0]["ts"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn concurrent_imports_of_overlapping_files_write_each_adjustment_id_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_url = lake_dir.display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, "order_id,action,adjustment_id\nA-1,refund,r-1\nA-2,refund,r-2\nA-3,reject,r-3\n").unwrap();
    std::fs::write(&b, "order_id,action,adjustment_id\nA-2,refund,r-2\nA-3,reject,r-3\nA-4,refund,r-4\nA-5,reject,r-5\n").unwrap();
    // Each file twice, all four at once: the ledger's compare-and-swap decides who is first.
    let children: Vec<_> = [&a, &b, &a, &b]
        .iter()
        .map(|f| {
            std::process::Command::new(env!("CARGO_BIN_EXE_collector"))
                .arg("--lake")
                .arg(&lake_url)
                .args(["adjustments", "import"])
                .arg(f)
                .args(["--offer", "shoes"])
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut already = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        already += usize::from(String::from_utf8_lossy(&out.stdout).contains("already imported"));
    }
    assert_eq!(already, 2, "each file is imported once");
    let hits = read_hits(&lake_url).await;
    let mut ids: Vec<String> = hits.iter().map(|h| h.adjustment_id.clone().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["r-1", "r-2", "r-3", "r-4", "r-5"], "no id written twice, none lost");
    let ledger = lake::registry::parse_adjustment_imports(&std::fs::read(lake_dir.join("registry/adjustment_imports.csv")).unwrap()).unwrap();
    assert_eq!(ledger.len(), 2);
    assert_eq!(ledger.iter().map(|i| i.rows).sum::<u64>(), 5);
    assert_eq!(hits_files(&lake_dir).len(), 2, "files of imports that lost the race are deleted");
}

/// Opens a raw TCP connection to a test server (for requests reqwest will not send).
async fn raw(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads a response head (through the blank line), or `None` if none comes within `wait`.
async fn read_head(stream: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(wait, read).await.ok()?;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// A request head with more header fields than `MAX_HEADERS` gets 431; one at the limit
/// is served.
#[tokio::test]
async fn too_many_header_fields_get_431() {
    let (_dir, server) = seeded().await;
    for (fields, want) in [(collector::MAX_HEADERS - 1, "HTTP/1.1 200"), (collector::MAX_HEADERS + 1, "HTTP/1.1 431")] {
        let mut s = raw(&server).await;
        let mut req = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\n");
        for i in 0..fields {
            req.push_str(&format!("X-Field-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_head(&mut s, Duration::from_secs(5)).await.expect("an answer");
        assert!(head.starts_with(want), "{} header fields: {head}", fields + 1);
    }
    server.stop().await;
}

/// Regression: a malformed chunk size got 413 (not 400); `Expect: 100-continue` with a
/// `Content-Length` over the limit got `100 Continue` before its 413; a `Content-Length`
/// of 10¹² with a short body got 408 after the request timeout instead of 413 at once.
#[tokio::test]
async fn body_limits_are_checked_before_the_body_is_read() {
    let (dir, server) = seeded().await;
    let form = "Content-Type: application/x-www-form-urlencoded";
    let auth = format!("Authorization: Bearer {TOKEN}");

    let mut s = raw(&server).await;
    let req = format!("POST /postback HTTP/1.1\r\nHost: t\r\n{auth}\r\n{form}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\noffer=shoes\r\n0\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await.expect("an answer to a malformed chunk size");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    for path in ["/postback", "/adjust", "/api/links"] {
        let mut s = raw(&server).await;
        let req = format!("POST {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n{form}\r\nContent-Length: 20000\r\nExpect: 100-continue\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let head = read_head(&mut s, Duration::from_secs(5)).await.expect("an answer without the body");
        assert!(head.starts_with("HTTP/1.1 413"), "{path}: no 100 Continue for a body that will be refused: {head}");
    }

    let mut s = raw(&server).await;
    let started = std::time::Instant::now();
    let req = format!("POST /postback HTTP/1.1\r\nHost: t\r\n{auth}\r\n{form}\r\nContent-Length: 1000000000000\r\n\r\noffer=shoes");
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await.expect("an answer before the request timeout");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());

    // A well-formed chunked body within the limit is taken.
    let cid = uuid::Uuid::now_v7().to_string();
    let body = format!("offer=shoes&click_id={cid}&order_id=CH1");
    let mut s = raw(&server).await;
    let req = format!("POST /postback HTTP/1.1\r\nHost: t\r\n{auth}\r\n{form}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let m = client().get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("clicktrail_rejects_total{reason=\"too_large\"} 4"), "{m}");
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.iter().filter_map(|h| h.order_id.as_deref()).collect::<Vec<_>>(), ["CH1"]);
}

/// Regression: the offer was looked up before authentication, so a caller without a token
/// could tell real offer ids (401) from others (404) on the token-authenticated endpoints.
#[tokio::test]
async fn unknown_offers_and_bad_tokens_get_the_same_answer() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    let answer = |r: reqwest::Response| async move {
        let status = r.status();
        let auth = r.headers().get("www-authenticate").cloned();
        (status, auth, r.text().await.unwrap())
    };
    for (unknown, bad) in [
        (format!("/postback?offer=nope&click_id={cid}&token={TOKEN}"), format!("/postback?offer=shoes&click_id={cid}&token=wrong")),
        (format!("/adjust?offer=nope&order_id=A&action=refund&token={TOKEN}"), "/adjust?offer=shoes&order_id=A&action=refund&token=wrong".to_string()),
        // A token of another length than the real one: refused the same way.
        (format!("/postback?offer=nope&click_id={cid}&token=x"), format!("/postback?offer=shoes&click_id={cid}&token={TOKEN}{TOKEN}")),
    ] {
        let u = answer(http.get(server.url(&unknown)).send().await.unwrap()).await;
        let b = answer(http.get(server.url(&bad)).send().await.unwrap()).await;
        assert_eq!(u.0, StatusCode::UNAUTHORIZED, "{unknown}");
        assert_eq!(u, b, "{unknown} vs {bad}");
        let json = http.post(server.url(unknown.split('?').next().unwrap())).bearer_auth(TOKEN).json(&json!({"offer": "nope", "click_id": cid, "order_id": "A", "action": "refund"})).send().await.unwrap();
        assert_eq!(answer(json).await, b, "bearer token, JSON body");
    }
    // Without a token the answer does not depend on the offer either.
    let u = answer(http.get(server.url(&format!("/postback?offer=nope&click_id={cid}"))).send().await.unwrap()).await;
    let k = answer(http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}"))).send().await.unwrap()).await;
    assert_eq!((u.0, &u), (StatusCode::UNAUTHORIZED, &k));
    // The pixel is unauthenticated by design, and links are public: 404 there.
    assert_eq!(http.get(server.url("/p.gif?offer=nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    assert_eq!(http.get(server.url("/l/nope")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    server.stop().await;
    assert!(read_hits(&dir.path().join("lake").display().to_string()).await.is_empty());
}

/// Regression: query and form kept the first of two equal fields and JSON the last, so
/// `{"token":"bad","token":"<real>"}` was accepted where the query form was refused. Now a
/// known field sent twice is refused everywhere, naming it; unknown fields may repeat.
#[tokio::test]
async fn a_known_field_sent_twice_is_refused_everywhere() {
    let (dir, server) = seeded().await;
    let http = client();
    let cid = uuid::Uuid::now_v7().to_string();
    let json_body = |text: String| http.post(server.url("/postback")).header("content-type", "application/json").body(text);
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        ("query bad,real", http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&token=bad&token={TOKEN}"))), "token"),
        ("query real,bad", http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&token={TOKEN}&token=bad"))), "token"),
        ("query empty,real", http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&token=&token={TOKEN}"))), "token"),
        ("form", http.post(server.url("/postback")).form(&[("offer", "shoes"), ("click_id", &cid), ("token", "bad"), ("token", TOKEN)]), "token"),
        ("json bad,real", json_body(format!(r#"{{"offer":"shoes","click_id":"{cid}","token":"bad","token":"{TOKEN}"}}"#)), "token"),
        ("json null,real", json_body(format!(r#"{{"offer":"shoes","click_id":"{cid}","token":null,"token":"{TOKEN}"}}"#)), "token"),
        ("json alias", json_body(format!(r#"{{"offer":"shoes","offer_id":"bags","click_id":"{cid}","token":"{TOKEN}"}}"#)), "offer"),
        ("json amount", json_body(format!(r#"{{"offer":"shoes","click_id":"{cid}","token":"{TOKEN}","amount":1,"amount":1000}}"#)), "amount"),
        ("query and body", http.post(server.url(&format!("/postback?offer=bags&token={TOKEN}"))).form(&[("offer", "shoes"), ("click_id", &cid)]), "offer"),
        ("pixel", http.get(server.url("/p.gif?offer=shoes&amount=1&amount=100")), "amount"),
        ("adjust query", http.get(server.url(&format!("/adjust?offer=shoes&order_id=A&action=restore&action=refund&token={TOKEN}"))), "action"),
        ("adjust json", http.post(server.url("/adjust")).bearer_auth(TOKEN).header("content-type", "application/json").body(r#"{"offer":"shoes","order_id":"A","order_id":"B","action":"refund"}"#), "order_id"),
    ];
    for (name, req, field) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], field, "{name}: {body}");
    }
    // Unknown fields may repeat, and are kept as sent.
    let r = http.get(server.url(&format!("/postback?offer=shoes&click_id={cid}&order_id=D1&token={TOKEN}&sub=1&sub=2"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = json_body(format!(r#"{{"offer":"shoes","click_id":"{cid}","order_id":"D2","token":"{TOKEN}","tag":"a","tag":"b"}}"#)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(hits.len(), 2, "refused requests record nothing");
    let d1 = hits.iter().find(|h| h.order_id.as_deref() == Some("D1")).unwrap();
    assert_eq!(d1.params.as_deref(), Some("sub=1&sub=2"));
    let d2 = hits.iter().find(|h| h.order_id.as_deref() == Some("D2")).unwrap();
    assert_eq!(d2.params.as_deref(), Some("tag=a&tag=b"));
}

/// Regression: `/api/links` and `collector links add` took member ids such as
/// `=HYPERLINK("http://evil")`, a formula for whoever opens an export in a spreadsheet.
#[tokio::test]
async fn ids_a_spreadsheet_would_run_as_formulas_are_refused() {
    let (dir, server) = seeded().await;
    let lake_url = dir.path().join("lake").display().to_string();
    let http = client();
    for member in ["=HYPERLINK(\"http://evil\")", "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
        let r = http.post(server.url("/api/links")).bearer_auth(ADMIN).json(&json!({"offer_id": "shoes", "member_id": member})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{member:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["field"], "member_id", "{member:?}: {body}");
    }
    let r = http.post(server.url("/api/links")).bearer_auth(ADMIN).json(&json!({"offer_id": "shoes", "member_id": "ann@ig-2"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "an @ or - inside an id is fine");
    server.stop().await;

    let (ok, _, err) = cli(&lake_url, &["links", "add", "--offer", "shoes", "--member", "=HYPERLINK(\"http://evil\")"]);
    assert!(!ok && err.contains("member_id"), "{err}");
    let (ok, _, err) = cli(&lake_url, &["offers", "add", "--offer=@evil", "--destination", "https://a.example.com/", "--token", "t0ken"]);
    assert!(!ok && err.contains("offer_id"), "{err}");
    let (ok, out, _) = cli(&lake_url, &["links", "list"]);
    assert!(ok);
    assert!(!out.contains("HYPERLINK") && out.contains("ann@ig-2"), "{out}");
}

/// `--max-connections`: with every slot taken, a new connection waits (in the kernel's
/// backlog) until one closes, then is served.
#[tokio::test]
async fn max_connections_holds_new_connections_until_a_slot_frees() {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let mut args = serve_args(&dir.path().join("spool"));
    args.max_connections = 2;
    let server = TestServer::start(&lake_url, args).await;
    let req = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = raw(&server).await;
        s.write_all(req).await.unwrap();
        let head = read_head(&mut s, Duration::from_secs(5)).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(s); // kept alive, holding its slot
    }
    let mut third = raw(&server).await;
    third.write_all(req).await.unwrap();
    assert_eq!(read_head(&mut third, Duration::from_millis(700)).await, None, "served past --max-connections");
    drop(open.pop());
    let head = read_head(&mut third, Duration::from_secs(5)).await.expect("served once a slot is free");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(open);
    drop(third);
    server.stop().await;
}

// ---- The click fast path (`collector::conn`): raw sockets, what a client sees. ----

/// A raw connection with a read buffer, for pipelined answers.
struct Wire {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn open(server: &TestServer) -> Wire {
        Wire { s: raw(server).await, buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false on EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), self.s.read(&mut chunk)).await.expect("an answer within 5 s").unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// One whole response (its head, and its body by `content-length`; none for `HEAD`),
    /// as bytes.
    async fn response(&mut self, head_request: bool) -> Vec<u8> {
        let head_len = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(self.fill().await, "connection closed mid-answer: {:?}", String::from_utf8_lossy(&self.buf));
        };
        let head = String::from_utf8_lossy(&self.buf[..head_len]).to_ascii_lowercase();
        let body_len = if head_request {
            0
        } else {
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap())
        };
        while self.buf.len() < head_len + body_len {
            assert!(self.fill().await, "connection closed mid-body");
        }
        self.buf.drain(..head_len + body_len).collect()
    }

    /// Whether the server closes the connection within `wait` with nothing more sent.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(wait, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => self.buf.is_empty(),
            Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(_) => false,
        }
    }
}

/// A response with its ids (UUIDs) and `date` value masked, to compare two answers.
fn masked(resp: &[u8]) -> String {
    let text = String::from_utf8_lossy(resp).into_owned();
    let mut out = String::new();
    let b = text.as_bytes();
    let mut i = 0;
    let is_uuid = |s: &[u8]| {
        s.len() == 36 && s.iter().enumerate().all(|(j, c)| if [8, 13, 18, 23].contains(&j) { *c == b'-' } else { c.is_ascii_hexdigit() })
    };
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
            out.push_str("<uuid>");
            i += 36;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out.lines()
        .map(|l| if l.starts_with("date: ") { "date: <date>" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

fn status_of(resp: &[u8]) -> String {
    String::from_utf8_lossy(resp).lines().next().unwrap_or_default().to_string()
}

/// The fast path's answers are byte for byte hyper's: each request is sent first on a new
/// connection (the fast path) and then on a connection that a `/healthz` request has
/// handed to hyper (where `serve_click` answers as before).
#[tokio::test]
async fn fast_path_answers_are_hypers_bytes() {
    let (_dir, server) = seeded().await;
    let requests = [
        "GET /l/ann1?utm_source=ig&sub1=story%201 HTTP/1.1\r\nHost: t\r\nUser-Agent: ua\r\n\r\n",
        "GET /l/bob1 HTTP/1.1\r\nHost: t\r\nCookie: ct_vid=Visitor_7\r\nConnection: keep-alive\r\n\r\n",
        "HEAD /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /l/nope HTTP/1.1\r\nHost: t\r\n\r\n",
        "HEAD /l/nope HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /l/ann1?url=https%3A%2F%2Fevil.com%2F HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /l/ann1?url=%2Fp%2F7 HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /l/x.y HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for req in requests {
        let head = req.starts_with("HEAD");
        let mut fast = Wire::open(&server).await;
        fast.send(req.as_bytes()).await;
        let a = fast.response(head).await;
        let mut hyper = Wire::open(&server).await;
        hyper.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(status_of(&hyper.response(false).await).starts_with("HTTP/1.1 200"));
        hyper.send(req.as_bytes()).await;
        let b = hyper.response(head).await;
        assert_eq!(masked(&a), masked(&b), "{req:?}");
        assert!(a.windows(6).any(|w| w == b"date: "), "{}", masked(&a));
        // Both stay open for another request.
        fast.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(status_of(&fast.response(false).await).starts_with("HTTP/1.1 200"));
    }
    server.stop().await;
}

/// Clicks pipelined in one write are each answered, in order, and each recorded.
#[tokio::test]
async fn pipelined_clicks_in_one_write_are_all_answered_and_recorded() {
    let (dir, server) = seeded().await;
    let mut w = Wire::open(&server).await;
    let mut req = String::new();
    for i in 0..5 {
        req.push_str(&format!("GET /l/ann1?n={i} HTTP/1.1\r\nHost: t\r\n\r\n"));
    }
    req.push_str("HEAD /l/bob1 HTTP/1.1\r\nHost: t\r\n\r\nGET /l/nope HTTP/1.1\r\nHost: t\r\n\r\n");
    w.send(req.as_bytes()).await;
    let mut ids = HashSet::new();
    for i in 0..5 {
        let r = String::from_utf8(w.response(false).await).unwrap();
        assert!(r.starts_with("HTTP/1.1 302 Found\r\n"), "{r}");
        let loc = r.lines().find_map(|l| l.strip_prefix("location: ")).unwrap();
        assert!(loc.contains(&format!("?src=ct&n={i}&ct_click_id=")), "answers in order: {loc}");
        ids.insert(query_of(loc)["ct_click_id"].clone());
    }
    assert_eq!(ids.len(), 5);
    let head = String::from_utf8(w.response(true).await).unwrap();
    assert!(head.starts_with("HTTP/1.1 302") && head.contains("bags.example.org/sale"), "{head}");
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 404"));
    assert!(!w.closed_within(Duration::from_millis(300)).await, "kept alive");
    drop(w);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let clicks = by_kind(&hits, HitKind::Click);
    assert_eq!(clicks.len(), 5, "HEAD and the unknown link record nothing");
    let got: HashSet<String> = clicks.iter().map(|h| h.click_id.clone().unwrap()).collect();
    assert_eq!(got, ids, "every answered click id is in the lake");
}

/// A click, then a postback and a pixel on the same keep-alive connection (handed to
/// hyper, also when pipelined behind a click), then clicks again: all answered right.
#[tokio::test]
async fn a_click_then_other_requests_on_one_connection() {
    let (dir, server) = seeded().await;
    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let click = String::from_utf8(w.response(false).await).unwrap();
    assert!(click.starts_with("HTTP/1.1 302"), "{click}");
    let cid = query_of(click.lines().find_map(|l| l.strip_prefix("location: ")).unwrap())["ct_click_id"].clone();
    let body = format!("offer=shoes&click_id={cid}&order_id=O1&amount=10");
    w.send(
        format!(
            "POST /postback HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let pb = String::from_utf8(w.response(false).await).unwrap();
    assert!(pb.starts_with("HTTP/1.1 200") && pb.contains("\"accepted\""), "{pb}");
    // Pipelined: a click answered by the fast path, a pixel that hands over mid-buffer,
    // and a click after it, now answered by hyper.
    w.send(format!("GET /l/bob1 HTTP/1.1\r\nHost: t\r\n\r\nGET /p.gif?offer=shoes&click_id={cid}&order_id=O2 HTTP/1.1\r\nHost: t\r\n\r\nGET /l/ann1?after=1 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 302"));
    let pixel = w.response(false).await;
    assert!(status_of(&pixel).starts_with("HTTP/1.1 200") && masked(&pixel).contains("content-type: image/gif"), "{}", masked(&pixel));
    let last = String::from_utf8(w.response(false).await).unwrap();
    assert!(last.starts_with("HTTP/1.1 302") && last.contains("after=1"), "{last}");
    drop(w);

    // A connection that starts with a pixel, then clicks.
    let mut w = Wire::open(&server).await;
    w.send(b"GET /p.gif?offer=shoes&order_id=O3 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 200"));
    w.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 302"));
    drop(w);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(by_kind(&hits, HitKind::Click).len(), 4);
    assert_eq!(by_kind(&hits, HitKind::Postback).len(), 1);
    assert_eq!(by_kind(&hits, HitKind::Pixel).len(), 2);
}

/// A click head arriving a few bytes at a time is answered once complete.
#[tokio::test]
async fn a_click_head_split_over_many_writes() {
    let (_dir, server) = seeded().await;
    let mut w = Wire::open(&server).await;
    let req = b"GET /l/ann1?utm_source=slow HTTP/1.1\r\nHost: t\r\nUser-Agent: trickle\r\n\r\nGET /l/bob1 HTTP/1.1\r\n\r\n";
    for piece in req.chunks(3) {
        w.send(piece).await;
        w.s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = String::from_utf8(w.response(false).await).unwrap();
    assert!(a.starts_with("HTTP/1.1 302") && a.contains("utm_source=slow"), "{a}");
    let b = String::from_utf8(w.response(false).await).unwrap();
    assert!(b.starts_with("HTTP/1.1 302") && b.contains("bags.example.org/sale"), "{b}");
    server.stop().await;
}

/// The head limits hold for clicks: 16 KiB of head is served, more gets 431, and so do
/// more than `MAX_HEADERS` fields (also when the click arrives on a kept-alive connection).
#[tokio::test]
async fn click_heads_over_the_limits_get_431() {
    let (_dir, server) = seeded().await;
    let with_filler = |n: usize| format!("GET /l/ann1 HTTP/1.1\r\nHost: t\r\nX-Filler: {}\r\n\r\n", "a".repeat(n));
    let base = with_filler(0).len();
    for (len, want) in [(collector::MAX_HEAD_BYTES, "HTTP/1.1 302"), (collector::MAX_HEAD_BYTES + 1, "HTTP/1.1 431"), (40_000, "HTTP/1.1 431")] {
        let mut w = Wire::open(&server).await;
        let req = with_filler(len - base);
        assert_eq!(req.len(), len);
        w.send(req.as_bytes()).await;
        let r = w.response(false).await;
        assert!(status_of(&r).starts_with(want), "{len}-byte head: {}", status_of(&r));
    }
    for (fields, want) in [(collector::MAX_HEADERS, "HTTP/1.1 302"), (collector::MAX_HEADERS + 1, "HTTP/1.1 431")] {
        let mut w = Wire::open(&server).await;
        // A click first, so the limit is met by the fast path's own parse.
        w.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 302"));
        let mut req = String::from("GET /l/ann1 HTTP/1.1\r\nHost: t\r\n");
        for i in 0..fields - 1 {
            req.push_str(&format!("X-Field-{i}: {i}\r\n"));
        }
        req.push_str("\r\n");
        w.send(req.as_bytes()).await;
        let r = w.response(false).await;
        assert!(status_of(&r).starts_with(want), "{fields} fields: {}", status_of(&r));
    }
    // Not a valid head: hyper's 400.
    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.1 400"));
    server.stop().await;
}

/// `HEAD` gets the redirect's head and no body: the next answer follows at once.
#[tokio::test]
async fn head_click_has_no_body() {
    let (_dir, server) = seeded().await;
    let mut w = Wire::open(&server).await;
    w.send(b"HEAD /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /l/nope HTTP/1.1\r\nHost: t\r\n\r\nGET /l/bob1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let a = String::from_utf8(w.response(true).await).unwrap();
    assert!(a.starts_with("HTTP/1.1 302") && !a.contains("content-length"), "{a}");
    let b = String::from_utf8(w.response(true).await).unwrap();
    assert!(b.starts_with("HTTP/1.1 404") && b.contains("content-length: 193"), "the length, no body: {b}");
    let c = String::from_utf8(w.response(false).await).unwrap();
    assert!(c.starts_with("HTTP/1.1 302 Found\r\n"), "no body bytes before the next answer: {c}");
    server.stop().await;
}

/// `Connection: close` and HTTP/1.0 get hyper's answers: closed after the answer, unless
/// a 1.0 client asks for keep-alive.
#[tokio::test]
async fn connection_close_and_http_1_0() {
    let (_dir, server) = seeded().await;
    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let r = String::from_utf8(w.response(false).await).unwrap();
    assert!(r.starts_with("HTTP/1.1 302") && r.contains("\r\nconnection: close\r\n"), "{r}");
    assert!(w.closed_within(Duration::from_secs(2)).await);

    // On a connection the fast path has served already.
    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\nGET /l/ann1 HTTP/1.1\r\nHost: t\r\nConnection: Close\r\n\r\n").await;
    assert!(!String::from_utf8(w.response(false).await).unwrap().contains("connection:"));
    assert!(String::from_utf8(w.response(false).await).unwrap().contains("\r\nconnection: close\r\n"));
    assert!(w.closed_within(Duration::from_secs(2)).await);

    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.0\r\n\r\n").await;
    let r = String::from_utf8(w.response(false).await).unwrap();
    assert!(r.starts_with("HTTP/1.0 302 Found\r\n"), "{r}");
    assert!(w.closed_within(Duration::from_secs(2)).await);

    let mut w = Wire::open(&server).await;
    w.send(b"GET /l/ann1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    let r = String::from_utf8(w.response(false).await).unwrap();
    assert!(r.starts_with("HTTP/1.0 302") && r.contains("\r\nconnection: keep-alive\r\n"), "{r}");
    w.send(b"GET /l/bob1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    assert!(status_of(&w.response(false).await).starts_with("HTTP/1.0 302"));
    server.stop().await;
}

/// Shutdown closes an idle kept-alive connection at once, also one with part of its next
/// head read (as hyper does); a new connection's first click in flight is still answered
/// (with `connection: close`) and recorded.
#[tokio::test]
async fn shutdown_closes_idle_connections_and_answers_requests_in_flight() {
    let (dir, server) = seeded().await;
    let mut idle = Wire::open(&server).await;
    idle.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert!(status_of(&idle.response(false).await).starts_with("HTTP/1.1 302"));
    let mut kept = Wire::open(&server).await;
    kept.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\nGET /l/ann1 HTTP/1.1\r\nHo").await;
    assert!(status_of(&kept.response(false).await).starts_with("HTTP/1.1 302"));
    // Half a head sent: the request is in progress when the shutdown comes.
    let mut busy = Wire::open(&server).await;
    busy.send(b"GET /l/bob1 HTTP/1.1\r\nHo").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    assert!(idle.closed_within(Duration::from_secs(3)).await, "the idle connection is closed");
    assert!(kept.closed_within(Duration::from_secs(1)).await, "a kept-alive connection with a partial head is closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    busy.send(b"st: t\r\n\r\n").await;
    let r = String::from_utf8(busy.response(false).await).unwrap();
    assert!(r.starts_with("HTTP/1.1 302") && r.contains("\r\nconnection: close\r\n"), "{r}");
    assert!(busy.closed_within(Duration::from_secs(2)).await);
    stopping.await.unwrap();
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    assert_eq!(by_kind(&hits, HitKind::Click).len(), 3, "the click answered during shutdown is in the lake");
}

/// A head must arrive within `HEADER_READ_TIMEOUT` of when the server starts waiting for
/// it, also on a connection kept alive after a click; each answer starts the wait anew.
#[tokio::test]
async fn click_heads_must_arrive_within_the_header_read_timeout() {
    let (_dir, server) = seeded().await;
    let limit = collector::HEADER_READ_TIMEOUT;
    assert_eq!(limit, Duration::from_secs(10), "the waits below are written for 10 s");
    let click = b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n\r\n";
    let started = std::time::Instant::now();
    let mut partial = Wire::open(&server).await;
    partial.send(b"GET /l/ann1 HTTP/1.1\r\nHost: t\r\n").await;
    let mut idle = Wire::open(&server).await;
    idle.send(click).await;
    assert!(status_of(&idle.response(false).await).starts_with("HTTP/1.1 302"));
    let mut later = Wire::open(&server).await;
    later.send(click).await;
    assert!(status_of(&later.response(false).await).starts_with("HTTP/1.1 302"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    // A second click at 5 s: this connection has until 15 s for its next head.
    later.send(click).await;
    assert!(status_of(&later.response(false).await).starts_with("HTTP/1.1 302"));
    let until = |t: u64| Duration::from_secs(t).saturating_sub(started.elapsed());
    assert!(!partial.closed_within(until(8)).await, "closed early");
    assert!(partial.closed_within(until(13)).await, "partial head not closed after the timeout");
    assert!(idle.closed_within(until(13)).await, "idle connection not closed after the timeout");
    assert!(!later.closed_within(until(13)).await, "closed 10 s after its first answer, not its last");
    assert!(later.closed_within(until(18)).await, "not closed after the timeout");
    server.stop().await;
}
