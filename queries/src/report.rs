//! `queries report`: one self-contained HTML page for people who do not write SQL. The
//! member leaderboards (one per currency: amounts in different currencies are never ranked
//! against each other), the daily trend of clicks, conversions and revenue, the
//! conversion-lag histogram, why conversions were not attributed, a second window beside
//! this one, and what each member earned (SPEC §7). Charts are inline SVG drawn here:
//! nothing is fetched when the page opens, so it can be mailed or opened offline.
//!
//! Money is exact: every amount is the micros of the lake written as a decimal, with the
//! same number of decimals down a column (at least two, more only when an amount needs
//! them). Rates are percentages with two decimals, rounded half up for display only.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::NaiveDate;
use lake::window::Window;
use polars::prelude::DataFrame;

use crate::catalog::Value;
use crate::engine::{self, Scope};
use crate::source::Source;

/// What a report covers.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub window: Window,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// The window shown beside `window` (its section says so when it has no reports).
    pub compare: Option<Window>,
    /// Rows per leaderboard.
    pub top: usize,
}

/// The page, and the range and zone it covers.
pub struct Report {
    pub html: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub zone: String,
    /// Charts drawn (each with data).
    pub charts: usize,
}

struct Ctx<'a> {
    source: &'a Source,
    scope: Scope,
}

impl Ctx<'_> {
    async fn frame(&self, what: &str, sql: &str, values: BTreeMap<String, Value>) -> Result<(DataFrame, NaiveDate, NaiveDate)> {
        let what = format!("report ({what})");
        let prepared = engine::prepare(self.source, &what, sql, &self.scope, values).await?;
        let (from, to) = (prepared.from, prepared.to);
        let df = crate::collect(&what, prepared)?;
        Ok((df, from, to))
    }
    async fn sql(&self, what: &str, sql: &str) -> Result<DataFrame> {
        Ok(self.frame(what, sql, BTreeMap::new()).await?.0)
    }
}

fn strs(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    Ok(pipeline::settle::strs(df, name)?.into_iter().map(Option::unwrap_or_default).collect())
}

fn ints(df: &DataFrame, name: &str) -> Result<Vec<i64>> {
    Ok(pipeline::settle::ints(df, name)?.into_iter().map(|v| v.unwrap_or(0)).collect())
}

/// HTML text, escaped.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Decimals needed to write every amount of a column exactly (at least 2).
fn scale_of(micros: &[i64]) -> usize {
    crate::output::money_scale(micros.iter().copied())
}

/// `micros` as a decimal with exactly `scale` (2..=6) decimals; exact, since `scale` covers
/// every digit the column needs.
pub fn money(micros: i64, scale: usize) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let frac = format!("{:06}", abs % 1_000_000);
    let units = group_thousands(abs / 1_000_000);
    format!("{sign}{units}.{}", &frac[..scale.clamp(2, 6)])
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn count(n: i64) -> String {
    if n < 0 {
        format!("-{}", group_thousands(n.unsigned_abs()))
    } else {
        group_thousands(n as u64)
    }
}

/// `num / den` as a percentage with two decimals, rounded half up (display only); `–` when
/// `den` is 0.
pub fn pct(num: i64, den: i64) -> String {
    if den <= 0 {
        return "–".into();
    }
    let (num, den) = (i128::from(num), i128::from(den));
    let hundredths = (num * 10_000 * 2 + den) / (2 * den);
    format!("{}.{:02}%", hundredths / 100, (hundredths % 100).abs())
}

const COLORS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

/// A chart: the SVG and how many data points it draws.
struct Chart {
    svg: String,
    points: usize,
}

fn figure(out: &mut String, title: &str, chart: &Chart, legend: &[(&str, &str)], charts: &mut usize) {
    *charts += 1;
    let _ = write!(out, "<figure class=\"chart\" data-points=\"{}\"><figcaption>{}</figcaption>{}", chart.points, esc(title), chart.svg);
    if !legend.is_empty() {
        out.push_str("<div class=\"legend\">");
        for (name, color) in legend {
            let _ = write!(out, "<span><i style=\"background:{color}\"></i>{}</span>", esc(name));
        }
        out.push_str("</div>");
    }
    out.push_str("</figure>");
}

/// The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `v` (an axis' top), at least 1.
fn nice_max(v: i64) -> i64 {
    let mut step = 1i64;
    loop {
        for m in [10, 20, 25, 50] {
            let top = step.saturating_mul(m) / 10;
            if top >= v || top == i64::MAX {
                return top.max(1);
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Lines over dates, one per series, the y axis from 0 to a round value above the largest.
fn line_chart(labels: &[String], series: &[(String, Vec<i64>)], fmt: &dyn Fn(i64) -> String, axis: &dyn Fn(i64) -> String) -> Chart {
    let max = nice_max(series.iter().flat_map(|(_, v)| v.iter().copied()).max().unwrap_or(0));
    let ticks: Vec<(i64, String)> = (0..=4).map(|k| (max * k / 4, axis(max * k / 4))).collect();
    let widest = ticks.iter().map(|(_, t)| t.chars().count()).max().unwrap_or(1) as f64;
    let (w, h, right, top, bottom) = (640.0, 260.0, 16.0, 12.0, 30.0);
    let left = 14.0 + widest * 8.0;
    let n = labels.len().max(1);
    let x = |i: usize| if n == 1 { left + (w - left - right) / 2.0 } else { left + (w - left - right) * i as f64 / (n - 1) as f64 };
    let y = |v: i64| top + (h - top - bottom) * (1.0 - v as f64 / max as f64);
    let mut svg = format!("<svg viewBox=\"0 0 {w} {h}\" role=\"img\" preserveAspectRatio=\"xMidYMid meet\">");
    for (v, text) in &ticks {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            w - right,
            left - 6.0,
            y(*v) + 5.0,
            esc(text),
            yy = y(*v)
        );
    }
    let mut shown = vec![0, n / 2, n - 1];
    shown.dedup();
    for i in shown {
        if let Some(label) = labels.get(i) {
            let anchor = if n > 1 && i == 0 { "start" } else if n > 1 && i == n - 1 { "end" } else { "middle" };
            let _ = write!(svg, "<text class=\"axis\" x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>", x(i), h - 8.0, esc(label));
        }
    }
    let mut points = 0;
    for (k, (name, values)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>", path.join(" "));
        for (i, v) in values.iter().enumerate() {
            points += 1;
            let _ = write!(
                svg,
                "<circle class=\"mark\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} {}: {}</title></circle>",
                x(i),
                y(*v),
                esc(labels.get(i).map_or("", String::as_str)),
                esc(name),
                esc(&fmt(*v))
            );
        }
    }
    svg.push_str("</svg>");
    Chart { svg, points }
}

/// Horizontal bars, one per label, longest = the largest value.
fn bar_chart(bars: &[(String, i64)], fmt: &dyn Fn(i64) -> String, color: &str) -> Chart {
    let row = 30.0;
    let widest = |f: &dyn Fn(&(String, i64)) -> usize| bars.iter().map(f).max().unwrap_or(1) as f64;
    let label_w = (12.0 + 8.0 * widest(&|b| b.0.chars().count())).min(240.0);
    let value_w = 16.0 + 8.0 * widest(&|b| fmt(b.1).chars().count());
    let w = 640.0;
    let h = row * bars.len() as f64 + 8.0;
    let max = bars.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let mut svg = format!("<svg viewBox=\"0 0 {w} {h}\" role=\"img\" preserveAspectRatio=\"xMidYMid meet\">");
    for (i, (label, v)) in bars.iter().enumerate() {
        let y0 = 4.0 + row * i as f64;
        let len = ((w - label_w - value_w) * (*v).max(0) as f64 / max as f64).max(1.0);
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><rect class=\"mark\" x=\"{label_w}\" y=\"{:.1}\" width=\"{len:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{}: {}</title></rect><text class=\"value\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w - 8.0,
            y0 + row * 0.62,
            esc(label),
            y0 + 3.0,
            row - 8.0,
            esc(label),
            esc(&fmt(*v)),
            label_w + len + 6.0,
            y0 + row * 0.62,
            esc(&fmt(*v))
        );
    }
    svg.push_str("</svg>");
    Chart { svg, points: bars.len() }
}

/// A table; `numeric[i]` right-aligns column i.
fn table(out: &mut String, headers: &[&str], numeric: &[bool], rows: &[Vec<String>]) {
    out.push_str("<div class=\"scroll\"><table><thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", if numeric[i] { " class=\"n\"" } else { "" }, esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", if numeric[i] { " class=\"n\"" } else { "" }, esc(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

fn empty(out: &mut String, text: &str) {
    let _ = write!(out, "<p class=\"empty\">{}</p>", esc(text));
}

/// A member id as shown: `(none)` for clicks and conversions without one.
fn member(m: &str) -> String {
    if m.is_empty() {
        "(no member)".into()
    } else {
        m.to_string()
    }
}

const LAG_BUCKETS: [&str; 7] = ["under 1 hour", "1 hour to 1 day", "1 to 3 days", "3 to 7 days", "7 to 14 days", "14 to 28 days", "over 28 days"];

/// Builds the page.
pub async fn build(source: &Source, spec: &ReportSpec) -> Result<Report> {
    let ctx = Ctx { source, scope: Scope { window: spec.window, from: spec.from, to: spec.to } };
    let zone = source.check_zone(&spec.window, None).await?;
    let w = spec.window;
    let mut charts = 0;
    let mut body = String::new();

    // --- totals and the daily trend
    let (daily_clicks, from, to) = ctx
        .frame("daily clicks", "SELECT date, SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks, SUM(bot_clicks) AS bot_clicks FROM clicks GROUP BY date ORDER BY date", BTreeMap::new())
        .await?;
    let daily_conv = ctx.sql("daily conversions", "SELECT date, SUM(conversions) AS conversions FROM conversions GROUP BY date ORDER BY date").await?;
    let daily_rev = ctx
        .sql("daily revenue", "SELECT date, currency, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros, SUM(net_revenue_micros) AS net_micros FROM revenue WHERE currency IS NOT NULL GROUP BY date, currency ORDER BY date, currency")
        .await?;
    let dates: Vec<String> = from.iter_days().take_while(|d| *d <= to).map(|d| d.to_string()).collect();
    let index: BTreeMap<&str, usize> = dates.iter().enumerate().map(|(i, d)| (d.as_str(), i)).collect();
    let per_date = |df: &DataFrame, col: &str| -> Result<Vec<i64>> {
        let mut v = vec![0; dates.len()];
        for (d, n) in strs(df, "date")?.iter().zip(ints(df, col)?) {
            if let Some(i) = index.get(d.as_str()) {
                v[*i] += n;
            }
        }
        Ok(v)
    };
    let clicks = per_date(&daily_clicks, "clicks")?;
    let unique = per_date(&daily_clicks, "unique_clicks")?;
    let bots = per_date(&daily_clicks, "bot_clicks")?;
    let conversions = per_date(&daily_conv, "conversions")?;
    let mut revenue: BTreeMap<String, (Vec<i64>, i64, i64, i64)> = BTreeMap::new();
    {
        let (d, c, o, r, n) = (strs(&daily_rev, "date")?, strs(&daily_rev, "currency")?, ints(&daily_rev, "orders")?, ints(&daily_rev, "revenue_micros")?, ints(&daily_rev, "net_micros")?);
        for i in 0..d.len() {
            let e = revenue.entry(c[i].clone()).or_insert_with(|| (vec![0; dates.len()], 0, 0, 0));
            if let Some(k) = index.get(d[i].as_str()) {
                e.0[*k] += r[i];
            }
            e.1 += o[i];
            e.2 += r[i];
            e.3 += n[i];
        }
    }
    let total_clicks: i64 = clicks.iter().sum();
    let total_conv: i64 = conversions.iter().sum();

    body.push_str("<section><h2>At a glance</h2><div class=\"cards\">");
    let card = |out: &mut String, label: &str, value: String| {
        let _ = write!(out, "<div class=\"card\"><div class=\"label\">{}</div><div class=\"big\">{}</div></div>", esc(label), esc(&value));
    };
    card(&mut body, "Clicks", count(total_clicks));
    card(&mut body, "Unique clicks", count(unique.iter().sum()));
    card(&mut body, "Bot clicks", count(bots.iter().sum()));
    card(&mut body, "Attributed conversions", count(total_conv));
    card(&mut body, "Conversion rate", pct(total_conv, total_clicks));
    for (cur, (_, orders, gross, net)) in &revenue {
        let s = scale_of(&[*gross, *net]);
        card(&mut body, &format!("Revenue {cur} ({} orders)", count(*orders)), money(*gross, s));
        card(&mut body, &format!("Net revenue {cur}"), money(*net, s));
    }
    body.push_str("</div></section>");

    body.push_str("<section><h2>Daily trend</h2>");
    if dates.is_empty() || total_clicks + total_conv == 0 {
        empty(&mut body, "No clicks or conversions in this range.");
    } else {
        let chart = line_chart(&dates, &[("clicks".into(), clicks.clone()), ("attributed conversions".into(), conversions.clone())], &count, &count);
        figure(&mut body, "Clicks and attributed conversions per day", &chart, &[("clicks", COLORS[0]), ("attributed conversions", COLORS[1])], &mut charts);
        for (cur, (series, _, _, _)) in &revenue {
            let s = scale_of(series);
            let chart = line_chart(&dates, &[(format!("revenue {cur}"), series.clone())], &|v| money(v, s), &|v| money(v, scale_of(&[v])));
            figure(&mut body, &format!("Revenue per day, {cur}"), &chart, &[], &mut charts);
        }
    }
    body.push_str("</section>");

    // --- leaderboards
    let member_clicks = ctx
        .sql("clicks per member", "SELECT COALESCE(member_id, '') AS member_id, SUM(clicks) AS clicks, SUM(unique_clicks) AS unique_clicks FROM clicks GROUP BY COALESCE(member_id, '')")
        .await?;
    let member_conv = ctx
        .sql("conversions per member", "SELECT COALESCE(member_id, '') AS member_id, SUM(conversions) AS conversions FROM conversions GROUP BY COALESCE(member_id, '')")
        .await?;
    let money_rows = ctx
        .sql("revenue per member", "SELECT COALESCE(member_id, '') AS member_id, currency, SUM(orders) AS orders, SUM(revenue_micros) AS revenue_micros, SUM(net_revenue_micros) AS net_micros FROM revenue WHERE currency IS NOT NULL GROUP BY COALESCE(member_id, ''), currency")
        .await?;
    let mut by_member: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
    for ((m, c), u) in strs(&member_clicks, "member_id")?.into_iter().zip(ints(&member_clicks, "clicks")?).zip(ints(&member_clicks, "unique_clicks")?) {
        let e = by_member.entry(m).or_default();
        e.0 += c;
        e.1 += u;
    }
    for (m, v) in strs(&member_conv, "member_id")?.into_iter().zip(ints(&member_conv, "conversions")?) {
        by_member.entry(m).or_default().2 += v;
    }
    body.push_str("<section><h2>Members</h2>");
    let mut ranked: Vec<(&String, &(i64, i64, i64))> = by_member.iter().filter(|(m, _)| !m.is_empty()).collect();
    ranked.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(b.1 .0.cmp(&a.1 .0)).then(a.0.cmp(b.0)));
    if ranked.is_empty() {
        empty(&mut body, "No member had a click or a conversion in this range.");
    } else {
        body.push_str("<h3>By attributed conversions</h3>");
        let rows: Vec<Vec<String>> = ranked
            .iter()
            .take(spec.top)
            .enumerate()
            .map(|(i, (m, (c, u, v)))| vec![(i + 1).to_string(), member(m), count(*c), count(*u), count(*v), pct(*v, *c)])
            .collect();
        table(&mut body, &["#", "member", "clicks", "unique clicks", "attributed conversions", "conversion rate"], &[true, false, true, true, true, true], &rows);
        let bars: Vec<(String, i64)> = ranked.iter().take(10).map(|(m, (_, _, v))| (member(m), *v)).collect();
        figure(&mut body, "Attributed conversions, top members", &bar_chart(&bars, &count, COLORS[1]), &[], &mut charts);
    }
    let mut per_currency: BTreeMap<String, Vec<(String, i64, i64, i64)>> = BTreeMap::new();
    {
        let (m, c, o, r, n) = (strs(&money_rows, "member_id")?, strs(&money_rows, "currency")?, ints(&money_rows, "orders")?, ints(&money_rows, "revenue_micros")?, ints(&money_rows, "net_micros")?);
        for i in 0..m.len() {
            per_currency.entry(c[i].clone()).or_default().push((m[i].clone(), o[i], r[i], n[i]));
        }
    }
    for (cur, rows) in &mut per_currency {
        rows.sort_by(|a, b| b.2.cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(&b.0)));
        let s = scale_of(&rows.iter().flat_map(|r| [r.2, r.3]).collect::<Vec<_>>());
        let _ = write!(body, "<h3>Revenue in {}</h3>", esc(cur));
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .take(spec.top)
            .enumerate()
            .map(|(i, (m, o, r, n))| {
                let clicks = by_member.get(m).map_or(0, |e| e.0);
                vec![(i + 1).to_string(), member(m), count(clicks), count(*o), money(*r, s), money(*n, s)]
            })
            .collect();
        table(&mut body, &["#", "member", "clicks", "orders", &format!("revenue {cur}"), &format!("net {cur}")], &[true, false, true, true, true, true], &table_rows);
        let bars: Vec<(String, i64)> = rows.iter().take(10).map(|(m, _, r, _)| (member(m), *r)).collect();
        figure(&mut body, &format!("Revenue in {cur}, top members"), &bar_chart(&bars, &|v| money(v, s), COLORS[0]), &[], &mut charts);
    }
    body.push_str("</section>");

    // --- lag and statuses
    let lag = ctx
        .sql(
            "conversion lag",
            "SELECT CASE WHEN lag_seconds < 3600 THEN 0 WHEN lag_seconds < 86400 THEN 1 WHEN lag_seconds < 259200 THEN 2 \
             WHEN lag_seconds < 604800 THEN 3 WHEN lag_seconds < 1209600 THEN 4 WHEN lag_seconds <= 2419200 THEN 5 ELSE 6 END AS bucket, \
             COUNT(*) AS conversions FROM attributions WHERE status = 'attributed' GROUP BY bucket",
        )
        .await?;
    let mut buckets = [0i64; 7];
    for (b, n) in ints(&lag, "bucket")?.into_iter().zip(ints(&lag, "conversions")?) {
        if let Some(slot) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) {
            *slot += n;
        }
    }
    body.push_str("<section><h2>Time from click to conversion</h2>");
    let lag_total: i64 = buckets.iter().sum();
    if lag_total == 0 {
        empty(&mut body, "No attributed conversion in this range.");
    } else {
        let bars: Vec<(String, i64)> = LAG_BUCKETS.iter().zip(buckets).map(|(l, n)| (l.to_string(), n)).collect();
        figure(&mut body, "Attributed conversions by lag (conversion time minus click time)", &bar_chart(&bars, &|v| format!("{} ({})", count(v), pct(v, lag_total)), COLORS[2]), &[], &mut charts);
    }
    body.push_str("</section>");

    let statuses = ctx.sql("statuses", "SELECT status, COUNT(*) AS conversions FROM attributions GROUP BY status").await?;
    let mut status_rows: Vec<(String, i64)> = strs(&statuses, "status")?.into_iter().zip(ints(&statuses, "conversions")?).collect();
    status_rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let status_total: i64 = status_rows.iter().map(|r| r.1).sum();
    body.push_str("<section><h2>Why conversions were or were not attributed</h2>");
    if status_total == 0 {
        empty(&mut body, "No conversion in this range.");
    } else {
        figure(&mut body, "Conversions by status", &bar_chart(&status_rows, &|v| format!("{} ({})", count(v), pct(v, status_total)), COLORS[3]), &[], &mut charts);
        body.push_str("<p class=\"note\">attributed: a click of the member's link within the window; duplicate: an order already counted; unknown_click: a click id the lake has never seen; offer_mismatch: the click was for another offer; outside_window: the last click was too long before; no_click: neither a click id nor a visitor with a click; too_fast: faster after the click than the offer's minimum lag (SPEC §4, §8).</p>");
    }
    body.push_str("</section>");

    // --- the other window
    body.push_str("<section><h2>Another attribution window</h2>");
    match spec.compare.filter(|c| *c != w) {
        None => empty(&mut body, "No other window asked for (--compare 7d)."),
        Some(other) if source.report_dates(&other).await?.is_empty() => empty(
            &mut body,
            &format!("Window {other} has no reports in this lake: run `pipeline run --window {other} --from {from} --to {to}` to compare it."),
        ),
        Some(other) => {
            let other_zone = source.check_zone(&other, None).await?;
            if other_zone != zone {
                empty(&mut body, &format!("Window {other} was computed in {other_zone} and {w} in {zone}: their dates are different days, so they are not compared."));
            } else {
                let all = crate::catalog::builtin()?;
                let q = all.get("window_comparison").context("the built-in query window_comparison is missing")?;
                let values = q.bind(&[("other".to_string(), other.to_string())])?;
                let (df, _, _) = ctx.frame("window comparison", &q.sql, values).await?;
                let (m, c) = (strs(&df, "member_id")?, strs(&df, "currency")?);
                let (v1, v2) = (ints(&df, "conversions")?, ints(&df, "other_conversions")?);
                let (r1, r2) = (ints(&df, "revenue_micros")?, ints(&df, "other_revenue_micros")?);
                let (here, there): (i64, i64) = (v1.iter().sum(), v2.iter().sum());
                let chart = bar_chart(&[(format!("window {w}"), here), (format!("window {other}"), there)], &count, COLORS[4]);
                figure(&mut body, "Attributed conversions under each window", &chart, &[], &mut charts);
                let s = scale_of(&r1.iter().chain(&r2).copied().collect::<Vec<_>>());
                let rows: Vec<Vec<String>> = (0..m.len())
                    .take(spec.top)
                    .map(|i| {
                        let cur = if c[i].is_empty() { "(no amount)".to_string() } else { c[i].clone() };
                        let (a, b) = (r1[i], r2[i]);
                        let show = |x: i64| if c[i].is_empty() { "–".to_string() } else { money(x, s) };
                        vec![member(&m[i]), cur, count(v1[i]), count(v2[i]), count(v2[i] - v1[i]), show(a), show(b), show(b - a)]
                    })
                    .collect();
                let _ = write!(body, "<p class=\"note\">Biggest differences first; the difference is {other} minus {w}.</p>");
                table(
                    &mut body,
                    &["member", "currency", &format!("conversions {w}"), &format!("conversions {other}"), "difference", &format!("revenue {w}"), &format!("revenue {other}"), "difference"],
                    &[false, false, true, true, true, true, true, true],
                    &rows,
                );
            }
        }
    }
    body.push_str("</section>");

    // --- earnings
    let earnings = ctx
        .sql("earnings", "SELECT COALESCE(member_id, '') AS member_id, currency, SUM(conversions) AS conversions, SUM(gross_micros) AS gross_micros, SUM(refunded_micros) AS refunded_micros, SUM(net_micros) AS net_micros, SUM(commission_micros) AS commission_micros FROM earnings GROUP BY COALESCE(member_id, ''), currency")
        .await?;
    body.push_str("<section><h2>What each member earned</h2>");
    let mut per_cur: BTreeMap<String, Vec<[i64; 5]>> = BTreeMap::new();
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    {
        let (m, c) = (strs(&earnings, "member_id")?, strs(&earnings, "currency")?);
        let cols = [ints(&earnings, "conversions")?, ints(&earnings, "gross_micros")?, ints(&earnings, "refunded_micros")?, ints(&earnings, "net_micros")?, ints(&earnings, "commission_micros")?];
        let mut order: Vec<usize> = (0..m.len()).collect();
        order.sort_by(|a, b| cols[4][*b].cmp(&cols[4][*a]).then(cols[3][*b].cmp(&cols[3][*a])).then(m[*a].cmp(&m[*b])));
        for i in order {
            let cur = if c[i].is_empty() { "(no currency)".to_string() } else { c[i].clone() };
            per_cur.entry(cur.clone()).or_default().push([cols[0][i], cols[1][i], cols[2][i], cols[3][i], cols[4][i]]);
            names.entry(cur).or_default().push(m[i].clone());
        }
    }
    if per_cur.is_empty() {
        empty(&mut body, "No earnings in this range (earnings need commission rules: `collector commissions add`).");
    }
    for (cur, rows) in &per_cur {
        let who = &names[cur];
        let s = scale_of(&rows.iter().flat_map(|r| r[1..].to_vec()).collect::<Vec<_>>());
        let _ = write!(body, "<h3>{}</h3>", esc(cur));
        let table_rows: Vec<Vec<String>> = rows
            .iter()
            .zip(who)
            .take(spec.top)
            .map(|(r, m)| vec![member(m), count(r[0]), money(r[1], s), money(r[2], s), money(r[3], s), money(r[4], s)])
            .collect();
        table(&mut body, &["member", "conversions", "gross", "refunded", "net", "commission"], &[false, true, true, true, true, true], &table_rows);
        let bars: Vec<(String, i64)> = rows.iter().zip(who).take(10).map(|(r, m)| (member(m), r[4])).collect();
        if bars.iter().any(|b| b.1 != 0) {
            figure(&mut body, &format!("Commission in {cur}, top members"), &bar_chart(&bars, &|v| money(v, s), COLORS[5]), &[], &mut charts);
        }
    }
    body.push_str("<p class=\"note\">A date's refunds and rejections can still arrive until its lock period closes; `queries run payouts` says what is payable.</p></section>");

    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let title = format!("clicktrail report — window {w}, {from} to {to}");
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head><body><header><h1>{t}</h1>\
         <p>Dates are calendar dates in {zone} (the zone the window was computed in). Generated {generated} from lake {lake}.</p></header>{body}</body></html>\n",
        t = esc(&title),
        zone = esc(&zone),
        lake = esc(source.lake().url()),
    );
    Ok(Report { html, from, to, zone, charts })
}

const STYLE: &str = "\
*{box-sizing:border-box}body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1000px;padding:16px;color:#111;background:#fafafa}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.15rem;margin:1.6rem 0 .6rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1rem;margin:1rem 0 .4rem}\
header p,.note{color:#555;font-size:.85rem}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:8px}\
.card{background:#fff;border:1px solid #e5e5e5;border-radius:6px;padding:8px 10px}.label{font-size:.75rem;color:#666}.big{font-size:1.15rem;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}\
figure{margin:.6rem 0;background:#fff;border:1px solid #e5e5e5;border-radius:6px;padding:8px}figcaption{font-size:.85rem;color:#333;margin-bottom:4px}\
svg{width:100%;height:auto;display:block}.grid{stroke:#eee}.axis,.value{font-size:14px;fill:#555}\
.legend{font-size:.8rem;color:#333}.legend span{margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}\
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}table{border-collapse:collapse;width:100%;background:#fff;font-size:.85rem}\
th,td{padding:4px 8px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}th{background:#f3f3f3}.n{text-align:right;font-variant-numeric:tabular-nums}\
.empty{color:#777;font-style:italic}@media (max-width:600px){body{padding:8px}h1{font-size:1.15rem}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_exact_with_fixed_decimals() {
        assert_eq!(money(19_990_000, 2), "19.99");
        assert_eq!(money(1_234_567_890_000, 2), "1,234,567.89");
        assert_eq!(money(-500_000, 2), "-0.50");
        assert_eq!(money(1, 6), "0.000001");
        assert_eq!(scale_of(&[19_990_000, 1_000_000]), 2);
        assert_eq!(scale_of(&[19_990_000, 1_500]), 4);
        assert_eq!(scale_of(&[]), 2);
        // The scale covers every digit: formatting at it loses nothing.
        for m in [1_234_567i64, 10, 990_000, 7] {
            let s = scale_of(&[m]);
            let text = money(m, s).replace(',', "");
            assert_eq!(lake::money::parse_amount_micros(&text).unwrap(), m, "{text}");
        }
    }

    #[test]
    fn percentages_round_half_up() {
        assert_eq!(pct(1, 3), "33.33%");
        assert_eq!(pct(2, 3), "66.67%");
        assert_eq!(pct(1, 8), "12.50%");
        assert_eq!(pct(1, 80_000), "0.00%");
        assert_eq!(pct(1, 40_000), "0.00%");
        assert_eq!(pct(1, 20_000), "0.01%");
        assert_eq!(pct(5, 0), "–");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(9_076), 10_000);
        assert_eq!(nice_max(2_100), 2_500);
        assert_eq!(nice_max(135_677_170), 200_000_000);
        assert_eq!(nice_max(500), 500);
    }

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<b>\"x\" & 'y'</b>"), "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;");
    }
}
