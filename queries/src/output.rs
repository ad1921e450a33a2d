//! Writing results: a readable table, CSV (RFC 4180), JSON lines and Parquet, batch by
//! batch so a large result streams through.
//!
//! **Money.** Every integer column named `X_micros` is money in millionths (SPEC §2). It is
//! kept as it is, and a column `X` is added right after it holding the same amount as an
//! exact decimal: text such as `12.50` in the table, CSV and JSON (a JSON string, so no
//! reader turns it into a float), and `DECIMAL(38, 6)` in Parquet, which DuckDB, pandas and
//! Spark read as a decimal without options. No floating point is involved.
//!
//! Text rendering: dates `YYYY-MM-DD`, timestamps ISO 8601 in UTC (`2026-03-01T12:00:00.123456Z`),
//! nulls empty in CSV and the table, `null` in JSON.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, NaiveDate};
use polars::prelude::*;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A readable table
    Table,
    /// CSV, RFC 4180, with a header
    Csv,
    /// JSON lines: one object per row
    #[value(alias = "jsonl", alias = "ndjson")]
    Json,
    /// Parquet (zstd)
    Parquet,
}

impl Format {
    /// The format a file name implies (`.csv`, `.json`/`.jsonl`/`.ndjson`, `.parquet`).
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "json" | "jsonl" | "ndjson" => Some(Format::Json),
            "parquet" | "pq" => Some(Format::Parquet),
            "txt" => Some(Format::Table),
            _ => None,
        }
    }
}

/// The decimal column added beside a money column, if `name` is one.
pub fn money_decimal_name(name: &str, dtype: &DataType, schema: &Schema) -> Option<String> {
    let base = name.strip_suffix("_micros")?;
    (dtype.is_integer() && !base.is_empty() && schema.get(base).is_none()).then(|| base.to_string())
}

/// How one output column is rendered as text.
#[derive(Debug, Clone)]
pub struct OutColumn {
    pub header: String,
    /// Index in the result's columns.
    pub source: usize,
    /// Render the source (integer micros) as an exact decimal.
    pub money: bool,
    pub numeric: bool,
    /// A percentage (`*_pct`): written with exactly two decimals.
    pub pct: bool,
}

/// The output columns of a result schema: every column, plus a decimal beside each money one.
pub fn out_columns(schema: &Schema) -> Vec<OutColumn> {
    let mut out = Vec::new();
    for (i, (name, dtype)) in schema.iter().enumerate() {
        let numeric = dtype.is_primitive_numeric() || dtype.is_decimal();
        out.push(OutColumn { header: name.to_string(), source: i, money: false, numeric, pct: numeric && name.ends_with("_pct") });
        if let Some(base) = money_decimal_name(name, dtype, schema) {
            out.push(OutColumn { header: base, source: i, money: true, numeric: true, pct: false });
        }
    }
    out
}

/// A column made ready for reading by row index.
enum Cells {
    Str(StringChunked),
    Int(Int64Chunked),
    Float(Float64Chunked),
    Bool(BooleanChunked),
    Date(Int32Chunked),
    /// The values, their unit, and whether they are UTC instants (else wall-clock times).
    Datetime(Int64Chunked, TimeUnit, bool),
    Decimal(Int128Chunked, usize),
    Other(Series),
}

fn cells(c: &Column) -> Result<Cells> {
    let s = c.as_materialized_series().rechunk();
    Ok(match s.dtype() {
        DataType::String => Cells::Str(s.str()?.clone()),
        DataType::Boolean => Cells::Bool(s.bool()?.clone()),
        DataType::Float32 | DataType::Float64 => Cells::Float(s.cast(&DataType::Float64)?.f64()?.clone()),
        d if d.is_integer() => Cells::Int(s.cast(&DataType::Int64)?.i64()?.clone()),
        DataType::Date => Cells::Date(s.to_physical_repr().i32()?.clone()),
        DataType::Datetime(unit, tz) => Cells::Datetime(s.to_physical_repr().i64()?.clone(), *unit, tz.is_some()),
        DataType::Decimal(_, scale) => Cells::Decimal(s.to_physical_repr().i128()?.clone(), *scale),
        _ => Cells::Other(s),
    })
}

/// A rendered value: `None` is null; `quoted` says it is text (for JSON and COPY).
struct Rendered {
    text: Option<String>,
    is_text: bool,
}

/// Decimals of a money column in machine formats: all six of the micros, like Parquet's
/// DECIMAL(38,6), so every value of a column has the same form and nothing is rounded.
pub const MONEY_SCALE: usize = 6;

fn render_col(c: &Cells, i: usize, col: &OutColumn) -> Rendered {
    if col.pct {
        // Two decimals; the queries round their percentages (half up) to two already.
        let two = |v: f64| format!("{:.2}", (v * 100.0).round() / 100.0);
        return match c {
            Cells::Float(a) => Rendered { text: a.get(i).filter(|v| v.is_finite()).map(two), is_text: false },
            Cells::Int(a) => Rendered { text: a.get(i).map(|v| format!("{v}.00")), is_text: false },
            Cells::Decimal(a, scale) => Rendered { text: a.get(i).map(|v| two(format_decimal(v, *scale).parse().unwrap_or(f64::NAN))), is_text: false },
            other => render(other, i, false),
        };
    }
    render(c, i, col.money)
}

fn render(c: &Cells, i: usize, money: bool) -> Rendered {
    let num = |t: Option<String>| Rendered { text: t, is_text: false };
    match c {
        Cells::Str(a) => Rendered { text: a.get(i).map(str::to_string), is_text: true },
        Cells::Int(a) if money => Rendered { text: a.get(i).map(|v| format_decimal(i128::from(v), MONEY_SCALE)), is_text: true },
        Cells::Int(a) => num(a.get(i).map(|v| v.to_string())),
        Cells::Float(a) => num(a.get(i).filter(|v| v.is_finite()).map(|v| v.to_string())),
        Cells::Bool(a) => num(a.get(i).map(|v| v.to_string())),
        Cells::Date(a) => Rendered {
            text: a.get(i).map(|d| {
                NaiveDate::from_num_days_from_ce_opt(d + 719_163).map(|d| d.to_string()).unwrap_or_else(|| d.to_string())
            }),
            is_text: true,
        },
        Cells::Datetime(a, unit, utc) => Rendered {
            text: a.get(i).map(|v| {
                let micros = match unit {
                    TimeUnit::Nanoseconds => v.div_euclid(1000),
                    TimeUnit::Microseconds => v,
                    TimeUnit::Milliseconds => v.saturating_mul(1000),
                };
                // A UTC instant ends in Z; a wall-clock time (`ts AT TIME ZONE …`) has none.
                let format = if *utc { "%Y-%m-%dT%H:%M:%S%.6fZ" } else { "%Y-%m-%dT%H:%M:%S%.6f" };
                DateTime::from_timestamp_micros(micros)
                    .map(|t| t.format(format).to_string())
                    .unwrap_or_else(|| v.to_string())
            }),
            is_text: true,
        },
        Cells::Decimal(a, scale) => num(a.get(i).map(|v| format_decimal(v, *scale))),
        Cells::Other(s) => match s.get(i) {
            Ok(AnyValue::Null) | Err(_) => Rendered { text: None, is_text: true },
            Ok(v) => Rendered { text: Some(v.to_string()), is_text: true },
        },
    }
}

/// An exact decimal from its unscaled integer and scale.
pub fn format_decimal(v: i128, scale: usize) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let digits = v.unsigned_abs().to_string();
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// Where rows go, one batch at a time.
pub trait Sink: Send {
    fn write(&mut self, df: &DataFrame) -> Result<()>;
    /// Completes the output; returns the rows written.
    fn finish(self: Box<Self>) -> Result<u64>;
}

/// CSV per RFC 4180: a header, CRLF line ends, a field quoted when it holds a comma, a
/// quote, CR or LF (quotes doubled). With `quote_text` every non-null text field is quoted,
/// which PostgreSQL's COPY needs to tell an empty string from a null.
pub struct CsvSink<W: Write + Send> {
    out: W,
    columns: Vec<OutColumn>,
    quote_text: bool,
    rows: u64,
    /// Constant leading fields written before each row (e.g. the window for PostgreSQL).
    prefix: String,
}

impl<W: Write + Send> CsvSink<W> {
    pub fn new(mut out: W, schema: &Schema, header: bool) -> Result<Self> {
        let columns = out_columns(schema);
        if header {
            let line: Vec<String> = columns.iter().map(|c| csv_field(&c.header, true, false)).collect();
            write!(out, "{}\r\n", line.join(",")).context("writing the CSV header")?;
        }
        Ok(CsvSink { out, columns, quote_text: false, rows: 0, prefix: String::new() })
    }

    /// For PostgreSQL COPY: no header, text always quoted, `prefix` before each row.
    /// The money decimals are not sent: PostgreSQL computes them (generated columns).
    pub fn for_copy(out: W, schema: &Schema, prefix: Vec<String>) -> Self {
        let prefix = prefix.iter().map(|p| format!("{},", csv_field(p, true, true))).collect::<String>();
        let columns = out_columns(schema).into_iter().filter(|c| !c.money).collect();
        CsvSink { out, columns, quote_text: true, rows: 0, prefix }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn columns(&self) -> &[OutColumn] {
        &self.columns
    }
}

fn csv_field(text: &str, is_text: bool, force: bool) -> String {
    if (force && is_text) || text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

impl CsvSink<Vec<u8>> {
    /// The bytes written so far, leaving the buffer empty.
    pub fn take_bytes(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

impl<W: Write + Send> CsvSink<W> {
    pub fn write_rows(&mut self, df: &DataFrame) -> Result<()> {
        let cols: Vec<Cells> = df.columns().iter().map(cells).collect::<Result<_>>()?;
        let mut line = String::new();
        for i in 0..df.height() {
            line.clear();
            line.push_str(&self.prefix);
            for (k, c) in self.columns.iter().enumerate() {
                if k > 0 {
                    line.push(',');
                }
                let r = render_col(&cols[c.source], i, c);
                match r.text {
                    // An empty text is "" and a null is nothing, so readers can tell them apart.
                    Some(t) if t.is_empty() && r.is_text => line.push_str("\"\""),
                    Some(t) => line.push_str(&csv_field(&t, r.is_text, self.quote_text)),
                    None => {}
                }
            }
            line.push_str("\r\n");
            self.out.write_all(line.as_bytes()).context("writing CSV")?;
        }
        self.rows += df.height() as u64;
        Ok(())
    }
}

impl<W: Write + Send> Sink for CsvSink<W> {
    fn write(&mut self, df: &DataFrame) -> Result<()> {
        self.write_rows(df)
    }
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out.flush().context("writing CSV")?;
        Ok(self.rows)
    }
}

/// JSON lines: one object per row, keys in column order.
pub struct JsonSink<W: Write + Send> {
    out: W,
    columns: Vec<OutColumn>,
    rows: u64,
}

impl<W: Write + Send> JsonSink<W> {
    pub fn new(out: W, schema: &Schema) -> Self {
        JsonSink { out, columns: out_columns(schema), rows: 0 }
    }
}

impl<W: Write + Send> Sink for JsonSink<W> {
    fn write(&mut self, df: &DataFrame) -> Result<()> {
        let cols: Vec<Cells> = df.columns().iter().map(cells).collect::<Result<_>>()?;
        let keys: Vec<String> = self.columns.iter().map(|c| serde_json::Value::from(c.header.as_str()).to_string()).collect();
        let mut line = String::new();
        for i in 0..df.height() {
            line.clear();
            line.push('{');
            for (k, c) in self.columns.iter().enumerate() {
                if k > 0 {
                    line.push(',');
                }
                line.push_str(&keys[k]);
                line.push(':');
                let r = render_col(&cols[c.source], i, c);
                match (r.text, r.is_text) {
                    (None, _) => line.push_str("null"),
                    (Some(t), true) => line.push_str(&serde_json::Value::from(t).to_string()),
                    (Some(t), false) => line.push_str(&t),
                }
            }
            line.push_str("}\n");
            self.out.write_all(line.as_bytes()).context("writing JSON")?;
        }
        self.rows += df.height() as u64;
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out.flush().context("writing JSON")?;
        Ok(self.rows)
    }
}

/// Adds the decimal beside each money column (for Parquet): same integer, scale 6.
pub fn with_money_decimals(df: &DataFrame) -> Result<DataFrame> {
    let schema = df.schema().clone();
    let mut cols: Vec<Column> = Vec::with_capacity(df.width() + 2);
    for c in df.columns() {
        cols.push(c.clone());
        if let Some(base) = money_decimal_name(c.name(), c.dtype(), &schema) {
            let dec = c
                .as_materialized_series()
                .cast(&DataType::Int128)?
                .into_decimal(38, 6)?
                .with_name(base.into());
            cols.push(dec.into_column());
        }
    }
    Ok(DataFrame::new(df.height(), cols)?)
}

/// The Parquet schema of a result: money decimals added.
pub fn parquet_schema(schema: &Schema) -> Schema {
    let mut out = Schema::with_capacity(schema.len() + 2);
    for (name, dtype) in schema.iter() {
        out.insert(name.clone(), dtype.clone());
        if let Some(base) = money_decimal_name(name, dtype, schema) {
            out.insert(base.into(), DataType::Decimal(38, 6));
        }
    }
    out
}

/// Parquet (zstd) with plain Arrow types: strings are `Utf8`, which pyarrow, pandas,
/// DuckDB and Spark all read and filter.
pub struct ParquetSink<W: Write + Send> {
    writer: pipeline::arrow_out::FrameWriter<W>,
    rows: u64,
}

impl<W: Write + Send> ParquetSink<W> {
    pub fn new(out: W, schema: &Schema) -> Result<Self> {
        let writer = pipeline::arrow_out::FrameWriter::new(out, &parquet_schema(schema)).map_err(|e| anyhow!("starting the Parquet file: {e}"))?;
        Ok(ParquetSink { writer, rows: 0 })
    }
}

impl<W: Write + Send> Sink for ParquetSink<W> {
    fn write(&mut self, df: &DataFrame) -> Result<()> {
        if df.height() == 0 {
            return Ok(());
        }
        self.writer.write(&with_money_decimals(df)?).map_err(|e| anyhow!("{e}"))?;
        self.rows += df.height() as u64;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<u64> {
        self.writer.finish().map_err(|e| anyhow!("{e}"))?;
        Ok(self.rows)
    }
}

/// A readable table: held until the end (a table is for people, who read a screenful). The
/// same columns as every other format; money with the same decimals down a column (at least
/// two, as many as its exact amounts need); a null shows as `NULL`, an empty text as nothing.
pub struct TableSink<W: Write + Send> {
    out: W,
    columns: Vec<OutColumn>,
    rows: Vec<Vec<TableCell>>,
}

enum TableCell {
    Text(Option<String>),
    Micros(Option<i64>),
}

/// How a null shows in a table (an empty string shows as nothing).
pub const TABLE_NULL: &str = "NULL";

impl<W: Write + Send> TableSink<W> {
    pub fn new(out: W, schema: &Schema) -> Self {
        TableSink { out, columns: out_columns(schema), rows: Vec::new() }
    }
}

/// Decimals needed to write every amount of a column exactly (at least 2).
pub fn money_scale(micros: impl Iterator<Item = i64>) -> usize {
    micros
        .map(|m| {
            let mut frac = m.unsigned_abs() % 1_000_000;
            if frac == 0 {
                return 2;
            }
            let mut digits = 6;
            while frac % 10 == 0 {
                frac /= 10;
                digits -= 1;
            }
            digits.max(2)
        })
        .max()
        .unwrap_or(2)
}

impl<W: Write + Send> Sink for TableSink<W> {
    fn write(&mut self, df: &DataFrame) -> Result<()> {
        let cols: Vec<Cells> = df.columns().iter().map(cells).collect::<Result<_>>()?;
        for i in 0..df.height() {
            self.rows.push(
                self.columns
                    .iter()
                    .map(|c| match &cols[c.source] {
                        Cells::Int(a) if c.money => TableCell::Micros(a.get(i)),
                        other => TableCell::Text(render_col(other, i, c).text),
                    })
                    .collect(),
            );
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let scales: Vec<usize> = (0..self.columns.len())
            .map(|k| money_scale(self.rows.iter().filter_map(|r| match &r[k] { TableCell::Micros(m) => *m, TableCell::Text(_) => None })))
            .collect();
        let text: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(k, cell)| match cell {
                        TableCell::Micros(Some(m)) => {
                            let full = format_decimal(i128::from(*m), 6);
                            full[..full.len() - (6 - scales[k])].to_string()
                        }
                        TableCell::Micros(None) | TableCell::Text(None) => TABLE_NULL.to_string(),
                        TableCell::Text(Some(t)) => t.clone(),
                    })
                    .collect()
            })
            .collect();
        let out = format_table(&self.columns, &text);
        self.out.write_all(out.as_bytes()).context("writing the table")?;
        self.out.flush().context("writing the table")?;
        Ok(self.rows.len() as u64)
    }
}

/// Lays out rows under their headers, numbers right-aligned.
pub fn format_table(columns: &[OutColumn], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(k, c)| rows.iter().map(|r| r[k].chars().count()).chain([c.header.chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &mut dyn Iterator<Item = (usize, &str)>| -> String {
        let parts: Vec<String> = cells
            .map(|(k, t)| {
                let pad = widths[k].saturating_sub(t.chars().count());
                if columns[k].numeric {
                    format!("{}{t}", " ".repeat(pad))
                } else {
                    format!("{t}{}", " ".repeat(pad))
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = line(&mut columns.iter().enumerate().map(|(k, c)| (k, c.header.as_str())));
    out.push_str(&format!("{}\n", rule.join("  ")));
    for r in rows {
        out.push_str(&line(&mut r.iter().enumerate().map(|(k, t)| (k, t.as_str()))));
    }
    out.push_str(&format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" }));
    out
}

/// A file written beside its final name and renamed into place when complete, so a failed
/// export never leaves a half-written file under the name asked for.
pub struct AtomicFile {
    tmp: Option<tempfile::NamedTempFile>,
    path: std::path::PathBuf,
}

impl AtomicFile {
    pub fn create(path: &std::path::Path) -> Result<(AtomicFile, std::fs::File)> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        if !dir.is_dir() {
            bail!("--out {}: folder {} does not exist", path.display(), dir.display());
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", path.file_name().and_then(|n| n.to_str()).unwrap_or("out")))
            .suffix(".partial")
            .tempfile_in(&dir)
            .with_context(|| format!("--out {}: cannot create a file in {}", path.display(), dir.display()))?;
        let file = tmp.reopen().with_context(|| format!("--out {}", path.display()))?;
        Ok((AtomicFile { tmp: Some(tmp), path: path.to_path_buf() }, file))
    }

    /// Syncs and renames the finished file into place.
    pub fn commit(mut self) -> Result<()> {
        let tmp = self.tmp.take().ok_or_else(|| anyhow!("file already committed"))?;
        // A temporary file is private (0600); an export is an ordinary file for other tools.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
                .with_context(|| format!("--out {}", self.path.display()))?;
        }
        tmp.as_file().sync_all().with_context(|| format!("--out {}", self.path.display()))?;
        tmp.persist(&self.path).map_err(|e| anyhow!("--out {}: {}", self.path.display(), e.error))?;
        Ok(())
    }
}

/// A sink of `format` writing to `out`.
pub fn sink<W: Write + Send + 'static>(format: Format, out: W, schema: &Schema) -> Result<Box<dyn Sink>> {
    Ok(match format {
        Format::Table => Box::new(TableSink::new(out, schema)),
        Format::Csv => Box::new(CsvSink::new(out, schema, true)?),
        Format::Json => Box::new(JsonSink::new(out, schema)),
        Format::Parquet => Box::new(ParquetSink::new(out, schema)?),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(format_decimal(12_500_000, 6), "12.500000");
        assert_eq!(format_decimal(-5, 6), "-0.000005");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn csv_quotes_per_rfc_4180() {
        assert_eq!(csv_field("plain", true, false), "plain");
        assert_eq!(csv_field("a,b", true, false), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"", true, false), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("", true, true), "\"\"");
        assert_eq!(csv_field("12", false, true), "12");
    }
}
