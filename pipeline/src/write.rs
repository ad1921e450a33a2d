//! The only place that materializes frames and stores them.
//!
//! **Replacing a date.** Each `reports/window=<W>/<table>/date=D/` folder holds exactly one
//! object, `part-0.parquet`, replaced by a single put. A put is atomic on S3, GCS and Azure
//! (the object appears whole when the upload completes, multipart included) and on a local
//! lake (`object_store` writes a temporary file and renames it). So a reader listing the
//! folder sees either the previous run's file or the new one, never a partial file and never
//! both; there is no rename on S3 to rely on and none is needed. Any other `.parquet` left
//! in the folder (another writer, an older layout) is deleted after the new file is in place.
//! The four tables of a date are replaced one after the other, each atomically.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::NaiveDate;
use futures::TryStreamExt;
use lake::layout;
use lake::reports;
use lake::window::Window;
use lake::Lake;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};
use crate::read::Inputs;

/// Collects a plan on a blocking thread with the streaming engine, so inputs larger than
/// memory flow through in batches. On failure, re-reads each input file to name a corrupt
/// one rather than report polars' anonymous error.
pub async fn collect(lf: LazyFrame, step: &str, inputs: &Inputs) -> Result<DataFrame> {
    if tracing::enabled!(tracing::Level::DEBUG) {
        match lf.explain(true) {
            Ok(plan) => tracing::debug!(step, "optimized plan:\n{plan}"),
            Err(e) => tracing::debug!(step, error = %e, "no plan"),
        }
    }
    let result = tokio::task::spawn_blocking(move || lf.collect_with_engine(Engine::Streaming).map(|r| r.unwrap_single()))
        .await
        .map_err(|e| format!("polars stopped: {e}"))
        .and_then(|r| r.map_err(|e| e.to_string()));
    match result {
        Ok(df) => Ok(df),
        Err(reason) => {
            let files: Vec<(String, std::path::PathBuf)> =
                inputs.files.iter().map(|f| (f.file.path.clone(), f.local.clone())).collect();
            tokio::task::spawn_blocking(move || {
                for (name, local) in files {
                    crate::read::check_pages(&name, &local)?;
                }
                Ok::<_, PipelineError>(())
            })
            .await
            .map_err(|e| PipelineError::Invalid(format!("{step}: task failed: {e}")))??;
            Err(PipelineError::Invalid(format!("polars failed while {step}: {reason}")))
        }
    }
}

/// The polars type of a report column.
pub fn report_dtype(column: &str) -> DataType {
    match reports::column_type(column) {
        arrow_schema::DataType::Date32 => DataType::Date,
        arrow_schema::DataType::Int64 => DataType::Int64,
        arrow_schema::DataType::Timestamp(_, _) => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        _ => DataType::String,
    }
}

/// `df` with exactly the table's columns, in file order, with the report types.
pub fn conform(df: DataFrame, table: &str) -> Result<DataFrame> {
    let exprs: Vec<Expr> = reports::columns(table).iter().map(|c| col(*c).cast(report_dtype(c))).collect();
    df.lazy().select(exprs).collect().map_err(PipelineError::polars(format!("shaping table {table}")))
}

/// The rows of `df` whose `date` is `date`.
pub fn rows_of_date(df: &DataFrame, date: NaiveDate) -> Result<DataFrame> {
    let days = (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32;
    df.clone()
        .lazy()
        .filter(col(lake::schema::report::DATE).cast(DataType::Int32).eq(lit(days)))
        .collect()
        .map_err(PipelineError::polars(format!("selecting date {date}")))
}

/// Encodes a frame as Parquet (zstd) with plain Arrow types (see [`crate::arrow_out`]).
pub fn to_parquet(df: DataFrame) -> Result<Bytes> {
    Ok(Bytes::from(crate::arrow_out::to_parquet_bytes(&df)?))
}

/// One table's stored date, as written by [`replace_date`]. A missing file is an error: the
/// caller (nightly's settle path) only reads dates it knows were written.
pub async fn read_date(lake: &Lake, window: &Window, table: &str, date: NaiveDate) -> Result<DataFrame> {
    let path = reports::date_file(window, table, date);
    let bytes = lake
        .get_optional(&path)
        .await?
        .ok_or_else(|| PipelineError::Invalid(format!("{path} is missing: the {table} table of {date} was never written")))?;
    ParquetReader::new(std::io::Cursor::new(bytes.to_vec()))
        .finish()
        .map_err(PipelineError::polars(format!("reading {path}")))
}

/// Replaces one table's date with `df` (see the module docs for why this is atomic).
pub async fn replace_date(lake: &Lake, window: &Window, table: &str, date: NaiveDate, df: DataFrame) -> Result<usize> {
    let rows = df.height();
    put_date(lake, window, table, date, to_parquet(conform(df, table)?)?).await?;
    Ok(rows)
}

/// Replaces one table's date with an encoded Parquet file (the polars run's frames, or a
/// file the Spark engine staged): one put of the whole object, then any other `.parquet`
/// in the folder is deleted.
pub async fn put_date(lake: &Lake, window: &Window, table: &str, date: NaiveDate, bytes: Bytes) -> Result<()> {
    let target = reports::date_file(window, table, date);
    lake.put_durable(&target, PutPayload::from_bytes(bytes)).await?;
    let dir = layout::report_date_dir(window, table, date);
    let others: Vec<Path> = lake
        .store()
        .list(Some(&dir))
        .map_ok(|m| m.location)
        .try_filter(|p| futures::future::ready(*p != target && p.as_ref().ends_with(layout::PARQUET_EXT)))
        .try_collect()
        .await
        .map_err(PipelineError::store(&dir))?;
    for other in others {
        match lake.store().delete(&other).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(PipelineError::store(&other)(e)),
        }
    }
    Ok(())
}

/// One input file as recorded in a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputRecord {
    pub path: String,
    pub size: u64,
    pub rows: i64,
}

/// One run's manifest, `reports/window=<W>/_runs/run-<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub command: String,
    pub window: String,
    pub tz: String,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub started_at: String,
    pub finished_at: String,
    pub duration_ms: u64,
    pub input_files: Vec<InputRecord>,
    pub input_rows: i64,
    /// Rows written per table, over all dates.
    pub output_rows: BTreeMap<String, u64>,
    /// Rows written per date and table.
    pub dates: BTreeMap<NaiveDate, BTreeMap<String, u64>>,
    /// What computed the tables: `polars` (this crate) or `spark` (`--engine spark`).
    #[serde(default = "polars_engine")]
    pub engine: String,
    /// Dates only re-settled from their stored tables (nightly: only adjustments were new),
    /// which rewrote `attributions`, `revenue` and `earnings` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled: Vec<NaiveDate>,
}

fn polars_engine() -> String {
    ENGINE_POLARS.to_string()
}

/// [`Manifest::engine`] of a polars run; manifests written before engines had none.
pub const ENGINE_POLARS: &str = "polars";

pub async fn write_manifest(lake: &Lake, window: &Window, manifest: &Manifest) -> Result<Path> {
    let path = reports::run_manifest(window, &manifest.run_id);
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| PipelineError::Invalid(format!("manifest: {e}")))?;
    lake.put_durable(&path, PutPayload::from(json)).await?;
    Ok(path)
}
