//! The collector as browsers and brands' proxies meet it: the first-party path (`/fp/…`)
//! over HTTP, behind the repo's nginx and Caddy configs for real, and Debian's Chromium
//! (headless, driven by puppeteer-core in `tests/browser/run.mjs`) clicking, landing and
//! converting with third-party cookies allowed and blocked. Every check ends in the lake's
//! Parquet. Tests needing a tool skip with a message when it is missing, and fail instead
//! when `CLICKTRAIL_REQUIRE_SERVICES=1`.

#![allow(clippy::unwrap_used)]

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use collector::hit::Hit;
use lake::registry::Offer;
use lake::schema::HitKind;
use lake::Lake;
use reqwest::StatusCode;
use serde_json::Value;
use util::*;

const OFFER: &str = "shoes";

async fn seeded() -> (tempfile::TempDir, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    seed_registry(&Lake::open(&lake_url).unwrap()).await;
    let server = TestServer::start(&lake_url, serve_args(&dir.path().join("spool"))).await;
    (dir, server)
}

fn set_cookie(resp: &reqwest::Response) -> String {
    resp.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

/// A click on `ann1` (offer shoes, 7-day cookies): its landing URL and click id.
async fn click(base: &str) -> (String, String) {
    let r = client().get(format!("{base}/l/ann1")).send().await.unwrap();
    let landing = r.headers()["location"].to_str().unwrap().to_string();
    let id = query_of(&landing)["ct_click_id"].clone();
    (landing, id)
}

fn pixel_by_order<'a>(hits: &'a [Hit], order: &str) -> Vec<&'a Hit> {
    hits.iter().filter(|h| h.kind == HitKind::Pixel && h.order_id.as_deref() == Some(order)).collect()
}

/// Whether `program` runs; when not, the test skips (or fails when services are required).
fn have(program: &str, arg: &str, why: &str) -> bool {
    let ok = Command::new(program).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !ok {
        assert!(!services_required(), "{program} is required ({why}) with CLICKTRAIL_REQUIRE_SERVICES=1");
        eprintln!("skipping: {program} is not installed ({why})");
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A child process killed (by its own pid) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(port: u16, child: &mut Child, what: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not listen on {port}");
}

#[tokio::test]
async fn redirect_carries_cookie_days_and_the_snippet_is_cacheable_and_typed() {
    let (_dir, server) = seeded().await;
    let (landing, _) = click(&server.base).await;
    assert_eq!(query_of(&landing)["ct_cd"], "7", "the offer's cookie days: {landing}");
    // A stale ct_cd in the incoming query or the destination is replaced, not doubled.
    let r = client().get(server.url("/l/ann1?ct_cd=99")).send().await.unwrap();
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc.matches("ct_cd=").count(), 1, "{loc}");
    assert!(loc.ends_with("&ct_cd=7"), "{loc}");

    let http = client();
    let r = http.get(server.url("/t.js")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10, "a strong ETag: {etag}");
    let js = r.text().await.unwrap();
    assert!(!js.contains("__CLICKTRAIL_"), "every placeholder filled");
    let again = http.get(server.url("/t.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert!(again.bytes().await.unwrap().is_empty());
    let other = http.get(server.url("/t.js?offer=shoes")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(other.status(), StatusCode::OK, "another offer is another script");
    assert_ne!(other.headers()["etag"].to_str().unwrap(), etag);
    // Behind a proxy that keeps its prefix.
    let kept = http.get(server.url("/ct/t.js")).send().await.unwrap();
    assert_eq!((kept.status(), kept.headers()["etag"].to_str().unwrap()), (StatusCode::OK, etag.as_str()));
    server.stop().await;
}

#[tokio::test]
async fn pixel_takes_beacon_posts_and_answers_cors_even_when_refusing() {
    let (dir, server) = seeded().await;
    let (_, click_id) = click(&server.base).await;
    let http = client();
    let form = http
        .post(server.url("/p.gif"))
        .header("origin", "https://shop.example.com")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("offer=shoes&amount=0.3&order_id=POST-1&click_id={click_id}&coupon=ann10&sub1=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::OK);
    assert_eq!(form.headers()["access-control-allow-origin"], "https://shop.example.com");
    assert_eq!(form.headers()["access-control-allow-credentials"], "true");
    // navigator.sendBeacon(url, string) sends text/plain.
    let beacon = http
        .post(server.url("/p.gif?offer=shoes"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body("order_id=POST-2&amount=12.5")
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), StatusCode::OK);
    let bad = http
        .post(server.url("/p.gif"))
        .header("origin", "https://shop.example.com")
        .body("offer=shoes&amount=0.30000000000000004&order_id=POST-3")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()["access-control-allow-origin"], "https://shop.example.com", "the snippet can read why");
    assert_eq!(bad.json::<Value>().await.unwrap()["field"], "amount");
    let json = http.post(server.url("/p.gif")).header("content-type", "application/json").body("{}").send().await.unwrap();
    assert_eq!(json.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let p1 = pixel_by_order(&hits, "POST-1");
    assert_eq!(p1.len(), 1);
    assert_eq!((p1[0].click_id.as_deref(), p1[0].amount_micros, p1[0].coupon.as_deref()), (Some(click_id.as_str()), Some(300_000), Some("ANN10")));
    assert_eq!(p1[0].params.as_deref(), Some("sub1=x"));
    assert_eq!(pixel_by_order(&hits, "POST-2")[0].amount_micros, Some(12_500_000));
    assert!(pixel_by_order(&hits, "POST-3").is_empty(), "a refused pixel is not half-recorded");
}

#[tokio::test]
async fn first_party_landing_sets_an_http_only_cookie_and_convert_reads_it() {
    let (dir, server) = seeded().await;
    let (_, click_id) = click(&server.base).await;
    let http = client();
    for path in ["/fp/landing", "/ct/fp/landing"] {
        let r = http.get(server.url(&format!("{path}?click_id={click_id}&cookie_days=7"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        let c = set_cookie(&r);
        assert!(c.starts_with(&format!("ct_fp={click_id}.")), "{c}");
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
            assert!(c.contains(attr), "{attr} in {c}");
        }
        assert!(!c.contains("Secure"), "an http page gets no Secure cookie: {c}");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    // An https page behind the proxy gets a Secure cookie; the offer's days without cookie_days.
    let r = http
        .post(server.url("/ct/fp/landing"))
        .header("x-forwarded-proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("click_id={click_id}&offer=bags"))
        .send()
        .await
        .unwrap();
    let c = set_cookie(&r);
    assert!(c.contains("Secure") && c.contains(&format!("Max-Age={}", 28 * 86400)), "{c}");
    let r = http.get(server.url(&format!("/fp/landing?click_id={click_id}"))).header("forwarded", "for=1.2.3.4;proto=https").send().await.unwrap();
    assert!(set_cookie(&r).contains("Secure"));
    // A second landing keeps the visitor id and takes the new click id.
    let first = set_cookie(&http.get(server.url(&format!("/fp/landing?click_id={click_id}"))).send().await.unwrap());
    let cookie_value = first.split(';').next().unwrap().to_string();
    let visitor = cookie_value.split_once('.').unwrap().1.to_string();
    let (_, second_click) = click(&server.base).await;
    let r = http.get(server.url(&format!("/fp/landing?click_id={second_click}"))).header("cookie", &cookie_value).send().await.unwrap();
    assert_eq!(set_cookie(&r).split(';').next().unwrap(), format!("ct_fp={second_click}.{visitor}"));
    for (q, field) in [("", "click_id"), ("?click_id=nope", "click_id"), (&*format!("?click_id={click_id}&cookie_days=0"), "cookie_days")] {
        let r = http.get(server.url(&format!("/fp/landing{q}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.json::<Value>().await.unwrap()["field"], field);
    }
    let r = http.get(server.url(&format!("/fp/landing?click_id={click_id}&offer=nope"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Conversions: from the cookie; an explicit click_id wins; a bad field records nothing.
    let conv = http
        .post(server.url("/ct/fp/convert"))
        .header("cookie", format!("other=1; {cookie_value}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("offer=shoes&amount=19.99&currency=eur&order_id=FP-1&coupon=ann10")
        .send()
        .await
        .unwrap();
    assert_eq!(conv.status(), StatusCode::OK);
    let body: Value = conv.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let r = http.get(server.url(&format!("/fp/convert?offer=shoes&order_id=FP-2&click_id={second_click}"))).header("cookie", &cookie_value).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("/fp/convert?offer=shoes&order_id=FP-3")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "no cookie: an unattributed conversion, still recorded");
    let r = http.post(server.url("/fp/convert")).header("cookie", &cookie_value).body("offer=shoes&order_id=FP-4&amount=-1").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = http.post(server.url("/fp/convert")).body(format!("offer=shoes&order_id=FP-5&token={TOKEN}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no postback token on a browser path");
    server.stop().await;

    let hits = read_hits(&dir.path().join("lake").display().to_string()).await;
    let fp1 = pixel_by_order(&hits, "FP-1");
    assert_eq!(fp1.len(), 1);
    assert_eq!(fp1[0].hit_id, body["hit_id"].as_str().unwrap());
    assert_eq!((fp1[0].click_id.as_deref(), fp1[0].visitor_id.as_deref()), (Some(click_id.as_str()), Some(visitor.as_str())));
    assert_eq!((fp1[0].amount_micros, fp1[0].currency.as_deref(), fp1[0].coupon.as_deref()), (Some(19_990_000), Some("EUR"), Some("ANN10")));
    assert_eq!(pixel_by_order(&hits, "FP-2")[0].click_id.as_deref(), Some(second_click.as_str()));
    let fp3 = pixel_by_order(&hits, "FP-3");
    assert_eq!((fp3[0].click_id.as_deref(), fp3[0].visitor_id.as_deref()), (None, None));
    assert!(pixel_by_order(&hits, "FP-4").is_empty() && pixel_by_order(&hits, "FP-5").is_empty());
}

/// Through a proxy on `proxy_port`: the cookie is set with the right attributes, the brand's
/// other cookies stay home, the snippet is served with its validator, and the conversion
/// lands in the lake with the click id.
async fn check_proxy(name: &str, proxy_port: u16, dir: &Path, server: TestServer) {
    let http = client();
    let base = format!("http://127.0.0.1:{proxy_port}");
    let (_, click_id) = click(&server.base).await;
    let r = http.get(format!("{base}/ct/fp/landing?click_id={click_id}&cookie_days=7")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{name}");
    let c = set_cookie(&r);
    assert!(c.starts_with(&format!("ct_fp={click_id}.")), "{name}: {c}");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=604800"] {
        assert!(c.contains(attr), "{name}: {attr} in {c}");
    }
    assert!(!c.contains("Secure"), "{name}: the proxy said http: {c}");
    let cookie_value = c.split(';').next().unwrap().to_string();
    let order = format!("{name}-1");
    let conv = http
        .post(format!("{base}/ct/fp/convert"))
        .header("cookie", format!("session=brand-secret; {cookie_value}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "Mozilla/5.0 (proxy test)")
        .body(format!("offer=shoes&amount=9.99&order_id={order}"))
        .send()
        .await
        .unwrap();
    assert_eq!(conv.status(), StatusCode::OK, "{name}: {}", conv.text().await.unwrap());
    let js = http.get(format!("{base}/ct/t.js")).send().await.unwrap();
    assert_eq!(js.status(), StatusCode::OK, "{name}");
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8", "{name}");
    assert_eq!(js.headers()["x-content-type-options"], "nosniff", "{name}");
    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = http.get(format!("{base}/ct/t.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{name}");
    for closed in ["/ct/postback?offer=shoes", "/ct/api/links", "/ct/l/ann1", "/ct/metrics"] {
        let r = http.get(format!("{base}{closed}")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "shop", "{name} exposes only the first-party path: {closed} is the brand's own");
    }
    server.stop().await;
    let hits = read_hits(&dir.join("lake").display().to_string()).await;
    let p = pixel_by_order(&hits, &order);
    assert_eq!(p.len(), 1, "{name}");
    assert_eq!(p[0].click_id.as_deref(), Some(click_id.as_str()), "{name}");
    assert_eq!(p[0].amount_micros, Some(9_990_000));
    assert_eq!(p[0].user_agent.as_deref(), Some("Mozilla/5.0 (proxy test)"));
    assert!(p[0].params.is_none(), "{name}: {:?}", p[0].params);
}

#[tokio::test]
async fn nginx_config_proxies_the_first_party_path() {
    if !have("nginx", "-v", "Debian's nginx, for deploy/nginx/clicktrail.conf") {
        return;
    }
    let (dir, server) = seeded().await;
    let collector_port = server.base.rsplit(':').next().unwrap().to_string();
    let port = free_port();
    let conf_dir = dir.path().join("nginx");
    std::fs::create_dir_all(conf_dir.join("tmp")).unwrap();
    let include = repo_root().join("deploy/nginx/clicktrail.conf");
    // As root, nginx's workers would switch to `nobody`, who cannot read the temp folder.
    let root_user = if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0") { "user root;" } else { "" };
    let t = conf_dir.join("tmp").display().to_string();
    let conf = format!(
        "daemon off; master_process off; pid {d}/nginx.pid; error_log stderr; worker_processes 1; {root_user}\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {t}; proxy_temp_path {t}; fastcgi_temp_path {t}; uwsgi_temp_path {t}; scgi_temp_path {t};\n\
           upstream clicktrail_collector {{ server 127.0.0.1:{collector_port}; keepalive 4; }}\n\
           server {{ listen 127.0.0.1:{port}; include {inc}; location / {{ return 200 \"shop\"; }} }} }}\n",
        d = conf_dir.display(),
        inc = include.display()
    );
    std::fs::write(conf_dir.join("nginx.conf"), conf).unwrap();
    let mut child = Command::new("nginx")
        .arg("-p")
        .arg(&conf_dir)
        .arg("-c")
        .arg(conf_dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child, "nginx").await;
    let _guard = Guard(child);
    check_proxy("nginx", port, dir.path(), server).await;
}

#[tokio::test]
async fn caddy_config_proxies_the_first_party_path() {
    if !have("caddy", "version", "Debian's caddy, for deploy/caddy/clicktrail.caddy") {
        return;
    }
    let (dir, server) = seeded().await;
    let collector = server.base.trim_start_matches("http://").to_string();
    let port = free_port();
    let include = repo_root().join("deploy/caddy/clicktrail.caddy");
    let caddyfile = dir.path().join("Caddyfile");
    std::fs::write(
        &caddyfile,
        format!("{{\n\tadmin off\n\tauto_https off\n}}\nhttp://:{port} {{\n\timport {}\n\thandle {{\n\t\trespond \"shop\"\n\t}}\n}}\n", include.display()),
    )
    .unwrap();
    let mut child = Command::new("caddy")
        .arg("run")
        .arg("--config")
        .arg(&caddyfile)
        .arg("--adapter")
        .arg("caddyfile")
        .env("CLICKTRAIL_COLLECTOR", &collector)
        .env("XDG_DATA_HOME", dir.path().join("caddy-data"))
        .env("XDG_CONFIG_HOME", dir.path().join("caddy-config"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child, "caddy").await;
    let _guard = Guard(child);
    check_proxy("caddy", port, dir.path(), server).await;
}

fn browser_suite_ready() -> bool {
    let folder = repo_root().join("collector/tests/browser");
    if !have("node", "--version", "to drive the browser") || !have("/usr/bin/chromium", "--version", "Debian's chromium") || !have("openssl", "version", "a test certificate") {
        return false;
    }
    if !folder.join("node_modules/puppeteer-core").is_dir() {
        assert!(!services_required(), "puppeteer-core is required: npm ci in {}", folder.display());
        eprintln!("skipping: puppeteer-core is not installed (npm ci in {})", folder.display());
        return false;
    }
    true
}

#[tokio::test]
async fn chromium_clicks_lands_and_converts_with_and_without_third_party_cookies() {
    if !browser_suite_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lake_url = dir.path().join("lake").display().to_string();
    let lake = Lake::open(&lake_url).unwrap();
    let (track_port, shop_port) = (free_port(), free_port());
    let shop = format!("http://shop.test:{shop_port}");
    collector::registry::add_offer(&lake, Offer::new(OFFER.into(), format!("{shop}/js/landing"), TOKEN.into(), "EUR".into(), 7), "test").await.unwrap();
    for (code, page) in [("js1", "js/landing?utm_source=ig&sub1=story%201"), ("fp1", "fpage/landing"), ("img1", "img/landing"), ("q1", "js/queue"), ("slow1", "js/landing")] {
        let link = collector::registry::NewLink {
            offer_id: OFFER.into(),
            member_id: format!("m-{code}"),
            destination_url: Some(format!("{shop}/{page}")),
            code: Some(code.into()),
        };
        collector::registry::add_link(&lake, link, "test").await.unwrap();
    }
    let mut args = serve_args(&dir.path().join("spool"));
    args.public_url = Some(format!("https://track.test:{track_port}").parse().unwrap());
    let server = TestServer::start(&lake_url, args).await;

    let folder = repo_root().join("collector/tests/browser");
    let out = tokio::process::Command::new("node")
        .arg(folder.join("run.mjs"))
        .current_dir(&folder)
        .env("COLLECTOR", &server.base)
        .env("TRACK_PORT", track_port.to_string())
        .env("SHOP_PORT", shop_port.to_string())
        .env("OFFER", OFFER)
        .env("CHROMIUM", "/usr/bin/chromium")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), out).await.expect("the browser run took over 4 minutes").unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "node: {stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(r["errors"], serde_json::json!([]), "{r:#}");
    server.stop().await;

    let hits = read_hits(&lake_url).await;
    let click_of = |id: &Value| -> Hit {
        let id = id.as_str().unwrap();
        hits.iter().find(|h| h.kind == HitKind::Click && h.click_id.as_deref() == Some(id)).cloned().unwrap_or_else(|| panic!("click {id} in the lake"))
    };
    let one = |order: &str| -> Hit {
        let p = pixel_by_order(&hits, order);
        assert_eq!(p.len(), 1, "{order}: {p:?}");
        p[0].clone()
    };
    for tag in ["allowed", "blocked"] {
        // The JavaScript snippet keeps the click in its own first-party cookie either way.
        let js = &r[format!("js_{tag}")];
        let c = click_of(&js["clickId"]);
        assert!(!c.user_agent.as_deref().unwrap().contains("Headless"), "a normal user agent: {:?}", c.user_agent);
        assert_eq!(js["addressBar"].as_str().unwrap(), format!("{shop}/js/landing?utm_source=ig&sub1=story%201"), "ours gone, the rest as written");
        let cookie = &js["cookie"];
        assert_eq!(cookie["value"], js["clickId"], "{js}");
        let lifetime = cookie["expires"].as_f64().unwrap() - js["now"].as_f64().unwrap();
        assert!((6.9 * 86400.0..7.01 * 86400.0).contains(&lifetime), "7 days from ct_cd without ?offer=: {lifetime}");
        assert_eq!(js["sentMethod"], "POST", "fetch keepalive");
        let p = one(&format!("JS-{tag}"));
        assert_eq!(p.click_id, c.click_id);
        assert_eq!((p.amount_micros, p.currency.as_deref(), p.coupon.as_deref()), (Some(300_000), Some("EUR"), Some("ANN10")), "0.1 + 0.2 sent as 0.3");
        // fetch(…, {credentials: "include"}) carries the collector's cookie where the browser allows it.
        let expected_visitor = if tag == "allowed" { c.visitor_id.clone() } else { None };
        assert_eq!(p.visitor_id, expected_visitor, "{tag}");
        assert_eq!(js["neverSent"], 0, "a negative or NaN amount is never sent");
        let warnings: Vec<&str> = js["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
        assert!(warnings.iter().any(|w| w.contains("amount -1")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("amount NaN")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("amount Infinity")), "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("refused by the collector (400)") && w.contains("amount")), "{warnings:?}");
        for bad in ["neg", "nan", "inf", "bad"] {
            assert!(pixel_by_order(&hits, &format!("JS-{tag}-{bad}")).is_empty());
        }
        // The image pixel's only link to the click is the collector's third-party cookie.
        let img = &r[format!("image_{tag}")];
        let c = click_of(&img["clickId"]);
        let p = one(&format!("IMG-{tag}"));
        assert_eq!(p.click_id, None);
        if tag == "allowed" {
            assert_eq!(p.visitor_id, c.visitor_id, "third-party cookies allowed: the pixel carries ct_vid: {img}");
        } else {
            assert_eq!(p.visitor_id, None, "third-party cookies blocked: the image pixel is unattributable");
            assert_eq!(img["vidCookie"].as_str(), c.visitor_id.as_deref(), "the cookie exists, first-party to the collector");
        }
    }

    // First-party path, third-party cookies blocked: attributed through the brand's cookie.
    let fp = &r["first_party"];
    let c = click_of(&fp["clickId"]);
    assert_eq!(fp["landingStatus"], 204);
    let set = fp["landingSetCookie"][0].as_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("Max-Age=604800") && set.contains("SameSite=Lax"), "set by an HTTP response: {set}");
    let cookie = &fp["cookie"];
    assert_eq!(cookie["httpOnly"], true, "{fp}");
    assert_eq!(cookie["sameSite"], "Lax");
    assert_eq!(cookie["domain"], "shop.test", "the brand's origin set it");
    let lifetime = cookie["expires"].as_f64().unwrap() - fp["now"].as_f64().unwrap();
    assert!((6.9 * 86400.0..7.01 * 86400.0).contains(&lifetime), "{lifetime}");
    assert!(!fp["scriptSees"].as_str().unwrap().contains("ct_fp"), "HttpOnly: no script reads it");
    assert!(!fp["addressBar"].as_str().unwrap().contains("ct_click_id"));
    assert_eq!(fp["convertStatus"], 200);
    let p = one("FP-1");
    assert_eq!(p.click_id, c.click_id, "the conversion is attributed to the click");
    let fp_visitor = cookie["value"].as_str().unwrap().split_once('.').unwrap().1;
    assert_eq!(p.visitor_id.as_deref(), Some(fp_visitor));
    assert_eq!(p.amount_micros, Some(19_990_000));
    assert!(!fp["convertBody"].as_str().unwrap().contains("click_id"), "a later page sends no click id: the cookie carries it");

    // The stub queue: a conversion made before t.js loaded is sent once it has.
    let q = one("Q-1");
    assert_eq!(q.click_id, click_of(&r["queue"]["clickId"]).click_id);
    assert_eq!(q.amount_micros, Some(5_000_000));

    // Convert, navigate away and close the tab on a slow link: the conversion arrives.
    assert_eq!(r["slow"]["status"], 200, "{}", r["slow"]);
    assert!(r["slow"]["emulatedFetchMs"].as_u64().unwrap() >= 1500, "the link was slow: {}", r["slow"]);
    let s = one("SLOW-1");
    assert_eq!(s.click_id, click_of(&r["slow"]["clickId"]).click_id);
    assert_eq!(s.amount_micros, Some(42_000_000));
}
