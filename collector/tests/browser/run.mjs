// Browser scenarios for collector/tests/browser.rs: Debian's Chromium, headless, driven by
// puppeteer-core, against a real collector. Two host names map to loopback: track.test
// (the collector, behind an https front made here so that its ct_vid cookie can be
// SameSite=None; Secure, as in production) and shop.test (the brand's site: a tiny page
// server that also runs deploy/worker/clicktrail-worker.mjs on /ct/*, the first-party path).
//
// Environment: COLLECTOR (http://127.0.0.1:PORT), TRACK_PORT (the https front's port, which
// the collector's public URL names), SHOP_PORT, OFFER, CHROMIUM. Prints one JSON object:
// what each scenario saw (click ids, cookies, warnings); the Rust side checks the lake.

import { execFileSync } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const worker = (await import(path.join(here, "../../../deploy/worker/clicktrail-worker.mjs"))).default;
const COLLECTOR = process.env.COLLECTOR;
const TRACK_PORT = +process.env.TRACK_PORT;
const SHOP_PORT = +process.env.SHOP_PORT;
const OFFER = process.env.OFFER;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const TRACK = `https://track.test:${TRACK_PORT}`;
const SHOP = `http://shop.test:${SHOP_PORT}`;
const UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "clicktrail-browser-"));

// --- the collector's https front: every request and its answer, for waiting on them.
execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=track.test",
  "-addext", "subjectAltName=DNS:track.test", "-keyout", path.join(tmp, "key.pem"), "-out", path.join(tmp, "cert.pem")], { stdio: "ignore" });
const seen = []; // {path, method, body, status, setCookie}
const waiters = [];
function note(entry) {
  seen.push(entry);
  for (const w of waiters.slice()) if (w.test(entry)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(entry); }
}
function waitFor(test, what, ms = 15000) {
  const found = seen.find(test);
  if (found) return Promise.resolve(found);
  return new Promise((resolve, reject) => {
    const w = { test, resolve };
    waiters.push(w);
    setTimeout(() => reject(new Error("timed out waiting for " + what + "; seen: " + JSON.stringify(seen.map(s => s.method + " " + s.path + " " + s.status)))), ms);
  });
}
function readBody(req) {
  return new Promise(r => { const c = []; req.on("data", d => c.push(d)); req.on("end", () => r(Buffer.concat(c))); });
}
const front = https.createServer({ key: fs.readFileSync(path.join(tmp, "key.pem")), cert: fs.readFileSync(path.join(tmp, "cert.pem")) }, async (req, res) => {
  const body = await readBody(req);
  const up = http.request(COLLECTOR + req.url, { method: req.method, headers: req.headers }, upRes => {
    res.writeHead(upRes.statusCode, upRes.headers);
    upRes.pipe(res);
    upRes.on("end", () => note({ host: "track", method: req.method, path: req.url, body: body.toString(), status: upRes.statusCode, setCookie: upRes.headers["set-cookie"] || [] }));
  });
  up.on("error", e => { res.writeHead(502); res.end(String(e)); });
  up.end(body);
});
await new Promise(r => front.listen(TRACK_PORT, "127.0.0.1", r));

// --- the shop: pages, and the worker on /ct/*.
const STUB = `window.clicktrail=window.clicktrail||{q:[],init:function(o){this.q.push(["init",o])},convert:function(o){this.q.push(["convert",o])}};`;
function page(title, head, bodyHtml = "") {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>${head}</head><body><h1>${title}</h1>${bodyHtml}</body></html>`;
}
const shop = http.createServer(async (req, res) => {
  const url = new URL(req.url, SHOP);
  const body = await readBody(req);
  if (url.pathname.startsWith("/ct/")) {
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) headers.set(k, Array.isArray(v) ? v.join(", ") : v);
    headers.set("cf-connecting-ip", req.socket.remoteAddress);
    const request = new Request(SHOP + req.url, { method: req.method, headers, body: body.length ? body : undefined });
    const answer = await worker.fetch(request, { CLICKTRAIL_COLLECTOR: COLLECTOR });
    const out = {};
    answer.headers.forEach((v, k) => { if (k !== "set-cookie") out[k] = v; });
    const cookies = answer.headers.getSetCookie();
    if (cookies.length) out["set-cookie"] = cookies;
    const bytes = Buffer.from(await answer.arrayBuffer());
    delete out["content-length"]; delete out["content-encoding"]; delete out["transfer-encoding"];
    res.writeHead(answer.status, out);
    res.end(bytes);
    note({ host: "shop", method: req.method, path: req.url, body: body.toString(), status: answer.status, setCookie: cookies });
    return;
  }
  const [, mode, name] = url.pathname.split("/");
  const script = { js: `<script async src="${TRACK}/t.js"></script>`, fpage: `<script async src="/ct/t.js" data-first-party="/ct"></script>` }[mode];
  let html;
  if (mode === "js" && name === "queue") {
    // A conversion made before the script has loaded: the stub queues it.
    html = page("queue", `<script>${STUB} clicktrail.convert({offer: ${JSON.stringify(OFFER)}, orderId: "Q-1", amount: "5.00"});</script>${script}`);
  } else if (mode === "img") {
    const order = url.searchParams.get("order");
    html = page("image", "", order ? `<img src="${TRACK}/p.gif?offer=${OFFER}&order_id=${order}&amount=10" width="1" height="1" alt="">` : "");
  } else if (script) {
    html = page(name, `<script>${STUB}</script>${script}`);
  } else {
    res.writeHead(404); res.end("no such page\n"); return;
  }
  res.writeHead(200, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(html);
});
await new Promise(r => shop.listen(SHOP_PORT, "127.0.0.1", r));

// --- the browser.
async function launch(blockThirdPartyCookies) {
  const args = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--ignore-certificate-errors",
    `--host-resolver-rules=MAP shop.test 127.0.0.1, MAP track.test 127.0.0.1`,
  ];
  // A fresh profile says which way, as a user's setting would (0: allow third-party
  // cookies, 2: block them); the flag blocks them the way Chrome's phase-out tests do.
  const profile = fs.mkdtempSync(path.join(tmp, "profile-"));
  fs.mkdirSync(path.join(profile, "Default"));
  fs.writeFileSync(path.join(profile, "Default", "Preferences"), JSON.stringify({ profile: { cookie_controls_mode: blockThirdPartyCookies ? 2 : 0, block_third_party_cookies: blockThirdPartyCookies } }));
  args.push(`--user-data-dir=${profile}`);
  if (blockThirdPartyCookies) args.push("--test-third-party-cookie-phaseout");
  return puppeteer.launch({ executablePath: CHROMIUM, headless: true, args, ignoreDefaultArgs: ["--disable-extensions"] });
}

async function newPage(browser) {
  const p = await browser.newPage();
  await p.setUserAgent(UA);
  const cdp = await p.createCDPSession();
  await cdp.send("Network.enable");
  await cdp.send("Network.clearBrowserCookies");
  const warnings = [];
  p.on("console", m => { if (m.type() === "warn" || m.type() === "warning") warnings.push(m.text()); });
  p.on("pageerror", e => warnings.push("pageerror: " + e.message));
  return { p, cdp, warnings };
}

// Follows a tracking link; returns the click id the redirect gave and the page's final URL.
async function click(p, code, withScript = true) {
  const resp = await p.goto(`${TRACK}/l/${code}`, { waitUntil: "load" });
  const hop = resp.request().redirectChain()[0].response();
  const landing = hop.headers().location;
  const clickId = new URL(landing).searchParams.get("ct_click_id");
  if (withScript) await p.waitForFunction(() => window.clicktrail && window.clicktrail.loaded === true);
  return { clickId, landing, addressBar: p.url() };
}

async function cookies(cdp) {
  return (await cdp.send("Network.getAllCookies")).cookies;
}

const out = {};
const errors = [];
async function scenario(name, f) {
  try {
    out[name] = await f();
  } catch (e) {
    errors.push(name + ": " + (e.stack || e));
  }
}

for (const blocked of [false, true]) {
  const browser = await launch(blocked);
  const tag = blocked ? "blocked" : "allowed";

  // The image pixel alone: the only link to the click is the collector's ct_vid cookie.
  await scenario("image_" + tag, async () => {
    const { p, cdp } = await newPage(browser);
    const c = await click(p, "img1", false);
    const order = "IMG-" + tag;
    await p.goto(`${SHOP}/img/thanks?order=${order}`, { waitUntil: "load" });
    await waitFor(e => e.path.startsWith("/p.gif") && e.path.includes(order) && e.status === 200, order);
    const vid = (await cookies(cdp)).find(k => k.name === "ct_vid");
    await p.close();
    return { clickId: c.clickId, order, vidCookie: vid ? vid.value : null };
  });

  // The JavaScript snippet: click → landing → a later page → convert().
  await scenario("js_" + tag, async () => {
    const { p, cdp, warnings } = await newPage(browser);
    const c = await click(p, "js1");
    const jar = await cookies(cdp);
    const ck = jar.find(k => k.name === "ct_click_id" && k.domain.replace(/^\./, "") === "shop.test");
    await p.goto(`${SHOP}/js/checkout`, { waitUntil: "load" });
    await p.waitForFunction(() => window.clicktrail && window.clicktrail.loaded === true);
    const order = "JS-" + tag;
    await p.evaluate((o, offer) => {
      window.clicktrail.convert({ offer, amount: 0.1 + 0.2, currency: "eur", orderId: o, coupon: "ann10" });
      window.clicktrail.convert({ offer, amount: -1, orderId: o + "-neg" });
      window.clicktrail.convert({ offer, amount: NaN, orderId: o + "-nan" });
      window.clicktrail.convert({ offer, amount: Infinity, orderId: o + "-inf" });
      window.clicktrail.convert({ offer, amount: "1.2345678", orderId: o + "-bad" });
    }, order, OFFER);
    const sent = await waitFor(e => e.path.startsWith("/p.gif") && e.body.includes("order_id=" + order + "&") && e.status === 200, order);
    await waitFor(e => e.path.startsWith("/p.gif") && e.body.includes(order + "-bad") && e.status === 400, order + "-bad");
    await new Promise(r => setTimeout(r, 300)); // the refusal's console.warn
    await p.close();
    return { ...c, cookie: ck ? { value: ck.value, expires: ck.expires, httpOnly: ck.httpOnly } : null, sentMethod: sent.method, sentBody: sent.body, warnings, now: Date.now() / 1000,
      neverSent: seen.filter(e => e.body.includes(order + "-neg") || e.body.includes(order + "-nan") || e.body.includes(order + "-inf")).length };
  });
  await browser.close();
}

// First-party path, third-party cookies blocked; the stub queue; convert-then-navigate on a
// slow link. One browser, cookies cleared between scenarios.
{
  const browser = await launch(true);
  await scenario("first_party", async () => {
    const { p, cdp, warnings } = await newPage(browser);
    const c = await click(p, "fp1");
    const landing = await waitFor(e => e.host === "shop" && e.path.startsWith("/ct/fp/landing"), "fp landing");
    const fp = (await cookies(cdp)).find(k => k.name === "ct_fp");
    const scriptSees = await p.evaluate(() => document.cookie);
    await p.goto(`${SHOP}/fpage/checkout`, { waitUntil: "load" });
    await p.waitForFunction(() => window.clicktrail && window.clicktrail.loaded === true);
    await p.evaluate(offer => window.clicktrail.convert({ offer, amount: 19.99, orderId: "FP-1" }), OFFER);
    const conv = await waitFor(e => e.host === "shop" && e.path.startsWith("/ct/fp/convert") && e.body.includes("FP-1"), "FP-1");
    await p.close();
    return { ...c, landingSetCookie: landing.setCookie, landingStatus: landing.status, cookie: fp ? { value: fp.value, expires: fp.expires, httpOnly: fp.httpOnly, sameSite: fp.sameSite, secure: fp.secure, domain: fp.domain } : null,
      scriptSees, convertStatus: conv.status, convertBody: conv.body, warnings, now: Date.now() / 1000 };
  });

  await scenario("queue", async () => {
    const { p, warnings } = await newPage(browser);
    const resp = await p.goto(`${TRACK}/l/q1`, { waitUntil: "load" });
    const clickId = new URL(resp.request().redirectChain()[0].response().headers().location).searchParams.get("ct_click_id");
    await waitFor(e => e.path.startsWith("/p.gif") && e.body.includes("Q-1") && e.status === 200, "Q-1");
    await p.close();
    return { clickId, warnings };
  });

  await scenario("slow", async () => {
    const { p, cdp } = await newPage(browser);
    const c = await click(p, "slow1");
    await p.goto(`${SHOP}/js/checkout`, { waitUntil: "load" });
    await p.waitForFunction(() => window.clicktrail && window.clicktrail.loaded === true);
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 1500, downloadThroughput: 20 * 1024, uploadThroughput: 20 * 1024 });
    // The link is slow for this page: a plain request takes over a second.
    let started = Date.now();
    await p.evaluate(shop => fetch(shop + "/js/ping").then(r => r.text()), SHOP);
    const emulatedFetchMs = Date.now() - started;
    started = Date.now();
    // Convert, then leave at once, then close the tab: a keepalive request outlives both.
    await p.evaluate((offer, shop) => {
      window.clicktrail.convert({ offer, amount: 42, orderId: "SLOW-1" });
      window.location.href = shop + "/js/next";
    }, OFFER, SHOP);
    await new Promise(r => setTimeout(r, 100));
    await p.close();
    const arrived = await waitFor(e => e.path.startsWith("/p.gif") && e.body.includes("SLOW-1"), "SLOW-1", 20000);
    return { clickId: c.clickId, status: arrived.status, afterMs: Date.now() - started, emulatedFetchMs };
  });
  await browser.close();
}

front.close();
shop.close();
fs.rmSync(tmp, { recursive: true, force: true });
console.log(JSON.stringify({ ...out, errors }));
process.exit(0);
