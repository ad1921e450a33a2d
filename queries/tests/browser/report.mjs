// Opens a `queries report` page in Debian's Chromium (headless, puppeteer-core from
// collector/tests/browser, never a downloaded browser) at desktop and phone width, with
// the network cut off: the page must need nothing from it. Prints one JSON object that
// queries/tests/report.rs checks: console messages, failed requests, every chart's data
// points and marks, the numbers shown, and whether the phone layout scrolls sideways.
//
// Usage: node report.mjs REPORT.html SCREENSHOT_PREFIX

import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "../../../collector/tests/browser/package.json"));
const puppeteer = require("puppeteer-core");
const [file, shots] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

const profile = fs.mkdtempSync(path.join(os.tmpdir(), "clicktrail-report-"));
const browser = await puppeteer.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", `--user-data-dir=${profile}`,
  ],
});
const out = { console: [], errors: [], requests: [], views: {} };
try {
  for (const [name, width, height] of [["desktop", 1200, 900], ["phone", 390, 844]]) {
    const page = await browser.newPage();
    await page.setViewport({ width, height, deviceScaleFactor: 1 });
    await page.setRequestInterception(true);
    page.on("request", (req) => {
      // Only the file itself may load: anything else would need the network.
      if (req.url().startsWith("file:")) req.continue();
      else { out.requests.push(req.url()); req.abort(); }
    });
    page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => out.errors.push(String(e)));
    await page.goto(pathToFileURL(path.resolve(file)).href, { waitUntil: "load" });
    out.views[name] = await page.evaluate(() => ({
      title: document.title,
      charts: [...document.querySelectorAll("figure.chart")].map((f) => ({
        caption: f.querySelector("figcaption")?.textContent ?? "",
        points: +f.dataset.points,
        marks: f.querySelectorAll("svg .mark").length,
        width: f.querySelector("svg")?.getBoundingClientRect().width ?? 0,
      })),
      sections: [...document.querySelectorAll("section h2")].map((h) => h.textContent),
      cards: Object.fromEntries([...document.querySelectorAll(".card")].map((c) => [c.querySelector(".label").textContent, c.querySelector(".big").textContent])),
      tables: [...document.querySelectorAll("table")].map((t) => [...t.querySelectorAll("tr")].map((r) => [...r.children].map((c) => c.textContent))),
      empty: [...document.querySelectorAll(".empty")].map((e) => e.textContent),
      scrollWidth: document.documentElement.scrollWidth,
      clientWidth: document.documentElement.clientWidth,
    }));
    await page.screenshot({ path: `${shots}-${name}.png`, fullPage: true });
    await page.close();
  }
} finally {
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));
