//! `queries`: the analysts' side of clicktrail. Named SQL questions (`queries/*.sql`), ad-hoc
//! SQL over the lake's tables, and exports to files and PostgreSQL for BI tools. SQL runs
//! in DuckDB (built in, from its bundled sources) over views of the lake's Parquet files, so
//! only the tables, dates and columns a statement touches are read, and results stream to
//! their destination batch by batch.

pub mod catalog;
pub mod connect;
pub mod engine;
pub mod explain;
pub mod frame;
pub mod output;
pub mod pg;
pub mod report;
pub mod source;
pub mod tls;
pub mod tz;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use polars::prelude::DataFrame;

use crate::engine::Prepared;
use crate::output::Format;

/// Where a result goes.
#[derive(Debug, Clone)]
pub enum Target {
    Stdout(Format),
    File(PathBuf, Format),
    Postgres { url: String, table: String },
}

impl Target {
    /// `--out`/`--format` as given: a file (format from `--format` or its extension) or
    /// standard output (format from `--format`, a table by default).
    pub fn from_flags(out: Option<PathBuf>, format: Option<Format>) -> Result<Target> {
        match out {
            Some(path) if path.as_os_str() == "-" => Ok(Target::Stdout(format.unwrap_or(Format::Table))),
            Some(path) => {
                let format = match format.or_else(|| Format::from_path(&path)) {
                    Some(f) => f,
                    None => bail!("--out {}: say --format (csv, json, parquet or table); the file name does not tell", path.display()),
                };
                Ok(Target::File(path, format))
            }
            None => {
                let format = format.unwrap_or(Format::Table);
                if format == Format::Parquet && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    bail!("--format parquet is binary: give --out FILE (or redirect standard output)");
                }
                Ok(Target::Stdout(format))
            }
        }
    }
}

/// Sends a prepared result to `target`; returns the rows written. `what` names it in
/// errors; `window` labels the rows in PostgreSQL.
pub async fn deliver(what: &str, prepared: Prepared, target: &Target, window: &str) -> Result<u64> {
    match target {
        Target::Stdout(format) => {
            let format = *format;
            blocking(what, move || {
                engine::run(&prepared, |schema| output::sink(format, std::io::BufWriter::new(std::io::stdout()), schema))
            })
            .await
        }
        Target::File(path, format) => {
            let (file, handle) = output::AtomicFile::create(path)?;
            let format = *format;
            let rows = blocking(what, move || {
                engine::run(&prepared, move |schema| output::sink(format, std::io::BufWriter::with_capacity(1 << 20, handle), schema))
            })
            .await?;
            file.commit()?;
            Ok(rows)
        }
        Target::Postgres { url, table } => {
            let (from, to) = (prepared.from, prepared.to);
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<bytes::Bytes>>(4);
            let (schema_tx, schema_rx) = tokio::sync::oneshot::channel::<polars::prelude::Schema>();
            let label = window.to_string();
            let producer = tokio::task::spawn_blocking(move || {
                let copy_tx = tx.clone();
                let r = engine::run(&prepared, move |schema| {
                    let _ = schema_tx.send(schema.clone());
                    Ok(Box::new(pg::CopySink::new(schema, &label, copy_tx)))
                });
                if let Err(e) = &r {
                    let _ = tx.send(Err(anyhow!("{e:#}")));
                }
                r
            });
            let Ok(schema) = schema_rx.await else {
                // The statement failed before its first batch: its error says why.
                let produced = producer.await.map_err(|e| stopped(what, &e))?;
                produced?;
                bail!("{what}: the statement gave no answer");
            };
            let replace = pg::Replace {
                window: window.to_string(),
                dates: schema.get(lake::schema::report::DATE).is_some().then_some((from, to)),
            };
            let loaded = pg::export(url, table, &schema, &replace, rx).await;
            let produced = producer.await.map_err(|e| stopped(what, &e))?;
            let loaded = loaded?;
            produced?;
            Ok(loaded)
        }
    }
}

async fn blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| stopped(what, &e))?
}

/// A task that died: a panic reads as one sentence naming the query, never a backtrace
/// (the binary's panic hook keeps those quiet unless `CLICKTRAIL_BACKTRACE` is set).
pub fn stopped(what: &str, e: &tokio::task::JoinError) -> anyhow::Error {
    if e.is_panic() {
        let text = e.to_string();
        let message = text.split_once("panicked with message ").map_or(text.as_str(), |(_, m)| m).trim_matches('"');
        anyhow!("{what}: the query stopped on an internal error ({message}); nothing was written")
    } else {
        anyhow!("{what}: stopped: {e}")
    }
}

/// A result collected whole (tests and small answers).
pub fn collect(what: &str, prepared: Prepared) -> Result<DataFrame> {
    engine::collect(&prepared).map_err(|e| {
        if prepared.what == what {
            e
        } else {
            anyhow!("{what}: {e:#}")
        }
    })
}
