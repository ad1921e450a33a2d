//! Named queries: the `.sql` files of the `queries/` folder, their headers, and their
//! parameters.
//!
//! A named query is a `.sql` file that starts with a header of `--` comment lines:
//!
//! ```sql
//! -- purpose: One row per member: clicks, conversions and revenue.
//! --   (an indented comment line continues the purpose)
//! -- param: offer (string, default '') only this offer; empty: every offer
//! -- param: other (window, default 7d) the window to compare with
//! -- tables: clicks, revenue, revenue_other
//! SELECT …
//! ```
//!
//! `param:` declares `NAME (TYPE[, default VALUE]) HELP`; a parameter without a default is
//! required. Types are `string`, `int`, `date` (`YYYY-MM-DD`) and `window` (`28d`, `36h`).
//! In the SQL a parameter is written `:name`; its value is checked against its type and
//! put in as a literal (strings quoted, never spliced raw). Three parameters exist in every
//! query: `:from` and `:to` (the first and last report date of the run, as dates) and
//! `:window` (the run's window, as a string). A `window` parameter `p` also makes the
//! report tables of that window available as `clicks_p`, `conversions_p`, `revenue_p` and
//! `attributions_p`. A `date` parameter `p` (and `from`, `to`) also gives `:p_end`, the
//! instant the day after `p` starts in the window's report zone (the zone of its latest
//! run), as a timestamp: `lock_ts < :as_of_end` is "closed by the end of as_of".
//!
//! `queries/attribution.sql` has no `purpose:` header: it is the pipeline's DuckDB twin, a
//! script rather than a question, and is not listed.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use chrono::NaiveDate;
use lake::window::Window;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The parameters every query has.
pub const BUILTIN_PARAMS: [&str; 3] = ["from", "to", "window"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Int,
    Date,
    Window,
}

impl ParamType {
    fn parse(text: &str) -> Option<ParamType> {
        Some(match text {
            "string" => ParamType::String,
            "int" => ParamType::Int,
            "date" => ParamType::Date,
            "window" => ParamType::Window,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Date => "date",
            ParamType::Window => "window",
        }
    }
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
    pub default: Option<String>,
    pub help: String,
}

/// A checked parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Int(i64),
    Date(NaiveDate),
    Window(Window),
    /// An instant, in microseconds since the epoch (UTC): the `:p_end` of a date `p`.
    Timestamp(i64),
}

impl Value {
    /// The value as a SQL literal.
    pub fn literal(&self) -> String {
        match self {
            Value::String(s) => format!("'{}'", s.replace('\'', "''")),
            Value::Int(i) => i.to_string(),
            Value::Date(d) => format!("CAST('{d}' AS DATE)"),
            Value::Window(w) => format!("'{w}'"),
            Value::Timestamp(us) => timestamp_literal(*us),
        }
    }
}

/// A UTC instant as a literal that compares with the lake's timestamp columns (UTC
/// `TIMESTAMP`s in SQL).
fn timestamp_literal(us: i64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
    format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

impl Param {
    /// Checks `text` against the parameter's type.
    pub fn check(&self, text: &str) -> Result<Value> {
        let bad = |what: &str| anyhow!("parameter {}: {text:?} is not {what}", self.name);
        Ok(match self.ty {
            ParamType::String => Value::String(text.to_string()),
            ParamType::Int => Value::Int(text.trim().parse().map_err(|_| bad("an integer"))?),
            ParamType::Date => {
                Value::Date(NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| bad("a date (YYYY-MM-DD)"))?)
            }
            ParamType::Window => Value::Window(text.trim().parse().map_err(|_| bad("a window (like 28d or 36h)"))?),
        })
    }
}

/// A named query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub purpose: String,
    pub params: Vec<Param>,
    pub tables: Vec<String>,
    pub sql: String,
}

impl Query {
    /// Parses a `.sql` file's text. `None`: the file has no `purpose:` header (not a named
    /// query).
    pub fn parse(name: &str, text: &str) -> Result<Option<Query>> {
        let mut purpose: Option<String> = None;
        let mut params: Vec<Param> = Vec::new();
        let mut tables = Vec::new();
        let mut in_purpose = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                in_purpose = false;
                continue;
            }
            let Some(comment) = trimmed.strip_prefix("--") else { break };
            let body = comment.trim();
            if let Some(rest) = body.strip_prefix("purpose:") {
                purpose = Some(rest.trim().to_string());
                in_purpose = true;
            } else if let Some(rest) = body.strip_prefix("param:") {
                in_purpose = false;
                let p = parse_param(rest.trim()).with_context(|| format!("query {name}: header line {trimmed:?}"))?;
                if BUILTIN_PARAMS.contains(&p.name.as_str()) || params.iter().any(|q| q.name == p.name) {
                    bail!("query {name}: parameter {} is declared twice (from, to and window always exist)", p.name);
                }
                params.push(p);
            } else if let Some(rest) = body.strip_prefix("tables:") {
                in_purpose = false;
                tables = rest.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            } else if in_purpose && comment.starts_with("   ") {
                if let Some(p) = purpose.as_mut() {
                    p.push(' ');
                    p.push_str(body);
                }
            } else {
                in_purpose = false;
            }
        }
        let Some(purpose) = purpose else { return Ok(None) };
        Ok(Some(Query { name: name.to_string(), purpose, params, tables, sql: text.to_string() }))
    }

    /// Checks the `--param` values given and fills in defaults. Every `:name` used in the
    /// SQL must be declared (or built in); every declared parameter without a default must
    /// be given.
    pub fn bind(&self, given: &[(String, String)]) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for (k, v) in given {
            let Some(p) = self.params.iter().find(|p| &p.name == k) else {
                let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                if BUILTIN_PARAMS.contains(&k.as_str()) {
                    bail!("query {}: {k} is set with --{k}, not --param", self.name);
                }
                bail!(
                    "query {}: no parameter {k:?} (it takes: {})",
                    self.name,
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            };
            if out.contains_key(k) {
                bail!("query {}: parameter {k} is given twice", self.name);
            }
            out.insert(k.clone(), p.check(v).with_context(|| format!("query {}", self.name))?);
        }
        for p in &self.params {
            if out.contains_key(&p.name) {
                continue;
            }
            match &p.default {
                Some(d) => {
                    out.insert(p.name.clone(), p.check(d).with_context(|| format!("query {}: default", self.name))?);
                }
                None => bail!("query {}: parameter {} ({}) is required: --param {}=…", self.name, p.name, p.ty.as_str(), p.name),
            }
        }
        Ok(out)
    }
}

fn parse_param(text: &str) -> Result<Param> {
    let (name, rest) = text.split_once('(').ok_or_else(|| anyhow!("expected `NAME (TYPE[, default VALUE]) HELP`"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || name.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("parameter name {name:?} is not an identifier");
    }
    let (inner, help) = rest.split_once(')').ok_or_else(|| anyhow!("missing `)`"))?;
    let (ty, default) = match inner.split_once(',') {
        Some((ty, d)) => {
            let d = d.trim().strip_prefix("default").ok_or_else(|| anyhow!("expected `default VALUE` after the type"))?.trim();
            let d = d.strip_prefix('\'').and_then(|d| d.strip_suffix('\'')).unwrap_or(d);
            (ty.trim(), Some(d.to_string()))
        }
        None => (inner.trim(), None),
    };
    let ty = ParamType::parse(ty).ok_or_else(|| anyhow!("unknown type {ty:?} (string, int, date or window)"))?;
    let p = Param { name: name.to_string(), ty, default, help: help.trim().to_string() };
    if let Some(d) = &p.default {
        p.check(d)?;
    }
    Ok(p)
}

/// Every named query built into the binary, by name.
pub fn builtin() -> Result<BTreeMap<String, Query>> {
    let mut out = BTreeMap::new();
    for (name, text) in BUILTIN {
        if let Some(q) = Query::parse(name, text)? {
            out.insert(q.name.clone(), q);
        }
    }
    Ok(out)
}

/// The built-in queries plus the `.sql` files of `dir` (which replace built-ins of the same
/// name), so a team can keep its own questions beside ours.
pub fn load(dir: Option<&std::path::Path>) -> Result<BTreeMap<String, Query>> {
    let mut out = builtin()?;
    if let Some(dir) = dir {
        let entries = std::fs::read_dir(dir).with_context(|| format!("reading the queries folder {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_none_or(|x| x != "sql") {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            match Query::parse(&name, &text)? {
                Some(q) => {
                    out.insert(name, q);
                }
                // The SQL twin (`attribution.sql`) is a script, not a question.
                None if name == "attribution" => {}
                None => bail!(
                    "query file {} has no `-- purpose:` header; a named query starts with one (see `queries show member_summary`)",
                    path.display()
                ),
            }
        }
    }
    Ok(out)
}

/// Replaces each `:name` outside strings, quoted names and comments with its value's
/// literal. `::` (a cast) is left alone. A `:name` that is not in `values` is an error.
pub fn substitute(query: &str, sql: &str, values: &BTreeMap<String, Value>) -> Result<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let end = (i + 1..chars.len()).find(|&j| chars[j] == c).unwrap_or(chars.len() - 1);
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            '-' if chars.get(i + 1) == Some(&'-') => {
                let end = (i..chars.len()).find(|&j| chars[j] == '\n').unwrap_or(chars.len() - 1);
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                let end = (i + 2..chars.len().saturating_sub(1))
                    .find(|&j| chars[j] == '*' && chars[j + 1] == '/')
                    .map(|j| j + 1)
                    .unwrap_or(chars.len() - 1);
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push_str("::");
                i += 2;
            }
            ':' if chars.get(i + 1).is_some_and(|n| n.is_ascii_alphabetic() || *n == '_') => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                let v = values.get(&name).ok_or_else(|| {
                    anyhow!("{query}: the SQL uses :{name}, which is not a declared parameter (add `-- param: {name} (TYPE) …` to its header)")
                })?;
                out.push_str(&v.literal());
                i = end;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_and_params() {
        let text = "-- purpose: Top members.\n--   By revenue.\n-- param: limit (int, default 10) rows\n-- param: cur (string) currency\n-- tables: revenue\nSELECT :limit, ':limit', x::date, :cur -- :nothing\nFROM revenue";
        let q = Query::parse("top", text).unwrap().unwrap();
        assert_eq!(q.purpose, "Top members. By revenue.");
        assert_eq!(q.params.len(), 2);
        assert_eq!(q.params[0].default.as_deref(), Some("10"));
        assert_eq!(q.tables, vec!["revenue"]);
        assert!(q.bind(&[]).unwrap_err().to_string().contains("cur (string) is required"));
        let v = q.bind(&[("cur".into(), "it's".into())]).unwrap();
        let sql = substitute("top", &q.sql, &v).unwrap();
        assert!(sql.contains("SELECT 10, ':limit', x::date, 'it''s' -- :nothing"), "{sql}");
        let e = q.bind(&[("limit".into(), "ten".into()), ("cur".into(), "USD".into())]).unwrap_err();
        assert_eq!(format!("{e:#}"), "query top: parameter limit: \"ten\" is not an integer");
        let e = q.bind(&[("nope".into(), "1".into())]).unwrap_err();
        assert_eq!(e.to_string(), "query top: no parameter \"nope\" (it takes: limit, cur)");
        let e = substitute("query top", "SELECT :undeclared", &v).unwrap_err();
        assert!(e.to_string().starts_with("query top: the SQL uses :undeclared,"), "{e}");
    }

    #[test]
    fn files_without_purpose_are_not_queries() {
        assert!(Query::parse("attribution", "-- a script\nCREATE TABLE x AS SELECT 1").unwrap().is_none());
    }

    #[test]
    fn every_builtin_parses_and_has_a_purpose() {
        let all = builtin().unwrap();
        assert!(all.len() >= 8, "{:?}", all.keys());
        for q in all.values() {
            assert!(!q.purpose.is_empty() && !q.tables.is_empty(), "{}", q.name);
            let values: BTreeMap<String, Value> = q
                .params
                .iter()
                .map(|p| {
                    let example = if p.ty == ParamType::Date { "2026-01-02" } else { "1" };
                    (p.name.clone(), p.check(p.default.as_deref().unwrap_or(example)).unwrap())
                })
                .chain([
                    ("from".to_string(), Value::Date(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap())),
                    ("to".to_string(), Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap())),
                    ("window".to_string(), Value::Window("28d".parse().unwrap())),
                ])
                .collect();
            // The engine adds `:p_end` for each date parameter.
            let mut values = values;
            let ends: Vec<(String, Value)> = values
                .iter()
                .filter(|(_, v)| matches!(v, Value::Date(_)))
                .map(|(k, _)| (format!("{k}_end"), Value::Timestamp(0)))
                .collect();
            values.extend(ends);
            substitute(&q.name, &q.sql, &values).unwrap();
        }
    }
}
