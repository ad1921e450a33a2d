//! Export to PostgreSQL: create the table if missing, then in one transaction delete the
//! rows of the exported window and dates and bulk-load the new ones with `COPY … FROM
//! STDIN (FORMAT csv)`. Re-exporting the same dates is idempotent; a failure anywhere rolls
//! the whole export back, so readers see the old rows or the new ones, never a mix.
//!
//! The table's first column is `window` (text): the same report exported for two windows
//! lives side by side. Money stays in its integer `X_micros` column (`bigint`) and a
//! generated `X numeric(24,6)` column beside it holds the exact decimal. Concurrent exports
//! to one table are serialized by a transaction-scoped advisory lock on its name.

use std::sync::mpsc::{Receiver, SyncSender};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use chrono::NaiveDate;
use futures::SinkExt;
use polars::prelude::*;

use crate::output::{money_decimal_name, CsvSink, Sink};

/// What to replace in the target table.
#[derive(Debug, Clone)]
pub struct Replace {
    pub window: String,
    /// `Some`: the result has a `date` column; rows of these dates (inclusive) are replaced.
    /// `None`: every row of the window is replaced.
    pub dates: Option<(NaiveDate, NaiveDate)>,
}

/// `"name"` with quotes doubled; `schema.table` quoted part by part.
pub fn quote_ident(name: &str) -> String {
    name.split('.').map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect::<Vec<_>>().join(".")
}

fn pg_type(dtype: &DataType) -> Result<&'static str> {
    Ok(match dtype {
        DataType::Boolean => "boolean",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint",
        DataType::Int32 | DataType::UInt16 => "integer",
        DataType::Int64 | DataType::UInt32 => "bigint",
        DataType::UInt64 | DataType::Int128 => "numeric(39,0)",
        DataType::Float32 => "real",
        DataType::Float64 => "double precision",
        DataType::String => "text",
        DataType::Date => "date",
        DataType::Datetime(_, Some(_)) => "timestamptz",
        DataType::Datetime(_, None) => "timestamp",
        DataType::Decimal(_, _) => "numeric",
        other => bail!("column type {other} cannot be exported to PostgreSQL"),
    })
}

/// The `CREATE TABLE` for a result schema.
pub fn create_table_sql(table: &str, schema: &Schema) -> Result<String> {
    let mut cols = vec!["\"window\" text NOT NULL".to_string()];
    for (name, dtype) in schema.iter() {
        if name.as_str() == "window" {
            bail!("the result has a column named window, which the export adds itself; rename it");
        }
        cols.push(format!("{} {}", quote_ident(name), pg_type(dtype)?));
        if let Some(base) = money_decimal_name(name, dtype, schema) {
            cols.push(format!(
                "{} numeric(24,6) GENERATED ALWAYS AS (({}::numeric / 1000000)::numeric(24,6)) STORED",
                quote_ident(&base),
                quote_ident(name)
            ));
        }
    }
    Ok(format!("CREATE TABLE IF NOT EXISTS {} (\n  {}\n)", quote_ident(table), cols.join(",\n  ")))
}

/// Exports batches arriving on `rx` (CSV rows for COPY, already encoded) to `table`.
/// Returns the rows loaded.
pub async fn export(url: &str, table: &str, schema: &Schema, replace: &Replace, rx: Receiver<Result<Bytes>>) -> Result<u64> {
    let target = crate::tls::parse(url).map_err(|e| anyhow!("--to {}: {e:#}", redact(url)))?;
    let (mut client, conn_task) = crate::tls::connect(&target).await.map_err(|e| anyhow!("--to {}: cannot connect: {e:#}", redact(url)))?;
    let result = async {
        let tx = client.transaction().await.context("starting a transaction")?;
        let (schema_name, bare) = match table.rsplit_once('.') {
            Some((s, t)) => (Some(s.to_string()), t.to_string()),
            None => (None, table.to_string()),
        };
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&table]).await.context("locking the table name")?;
        tx.batch_execute(&create_table_sql(table, schema)?).await.with_context(|| format!("creating table {table}"))?;
        // The table may have existed: its columns must be the export's.
        let rows = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_name = $1 AND table_schema = coalesce($2, current_schema()) AND is_generated = 'NEVER'
                 ORDER BY ordinal_position",
                &[&bare, &schema_name],
            )
            .await
            .context("reading the table's columns")?;
        let existing: Vec<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        let wanted: Vec<String> = std::iter::once("window".to_string()).chain(schema.iter_names().map(|n| n.to_string())).collect();
        let mut a = existing.clone();
        let mut b = wanted.clone();
        a.sort();
        b.sort();
        if a != b {
            bail!(
                "table {table} exists with columns ({}), but this export has ({}); drop it or export to another --table",
                existing.join(", "),
                wanted.join(", ")
            );
        }
        let deleted = match replace.dates {
            Some((from, to)) => {
                // Dates are checked values, put in as literals.
                tx.execute(
                    &format!("DELETE FROM {} WHERE \"window\" = $1 AND \"date\" BETWEEN DATE '{from}' AND DATE '{to}'", quote_ident(table)),
                    &[&replace.window],
                )
                .await
            }
            None => tx.execute(&format!("DELETE FROM {} WHERE \"window\" = $1", quote_ident(table)), &[&replace.window]).await,
        }
        .context("deleting the rows being replaced")?;
        let columns = wanted.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
        let copy = tx
            .copy_in::<_, Bytes>(&format!("COPY {} ({columns}) FROM STDIN (FORMAT csv)", quote_ident(table)))
            .await
            .context("starting COPY")?;
        futures::pin_mut!(copy);
        let mut rx = Some(rx);
        loop {
            let r = rx.take().ok_or_else(|| anyhow!("channel lost"))?;
            let (next, r) = tokio::task::spawn_blocking(move || (r.recv(), r)).await.map_err(|e| anyhow!("export stopped: {e}"))?;
            rx = Some(r);
            match next {
                Ok(Ok(chunk)) => copy.send(chunk).await.context("COPY")?,
                Ok(Err(e)) => return Err(e),
                Err(_) => break,
            }
        }
        let loaded = copy.finish().await.context("finishing COPY")?;
        tx.commit().await.context("committing")?;
        tracing::info!(table, deleted, loaded, "exported to PostgreSQL");
        Ok(loaded)
    }
    .await;
    drop(client);
    let _ = conn_task.await;
    result
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A sink that encodes batches as COPY CSV and sends them to [`export`].
pub struct CopySink {
    csv: CsvSink<Vec<u8>>,
    tx: SyncSender<Result<Bytes>>,
    rows: u64,
}

impl CopySink {
    pub fn new(schema: &Schema, window: &str, tx: SyncSender<Result<Bytes>>) -> CopySink {
        CopySink { csv: CsvSink::for_copy(Vec::new(), schema, vec![window.to_string()]), tx, rows: 0 }
    }
}

impl Sink for CopySink {
    fn write(&mut self, df: &DataFrame) -> Result<()> {
        self.csv.write_rows(df)?;
        self.rows += df.height() as u64;
        let bytes = self.csv.take_bytes();
        self.tx.send(Ok(Bytes::from(bytes))).map_err(|_| anyhow!("PostgreSQL export stopped"))
    }
    fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.rows)
    }
}
