//! `pipeline run --engine spark`: the same run computed by Apache Spark
//! (`spark/clicktrail_spark.py`, embedded in this binary so that the job and the launcher
//! never disagree), for lakes beyond one machine.
//!
//! 1. The registry is loaded and checked here, as for a polars run (same errors), and the
//!    hits files are listed here over the span the twin's rules reach
//!    (`[from − 1 day − L − 2W, to + 2 days + L)`); the list goes to the job in the lake,
//!    so the job reads exactly these files, in client or cluster mode.
//! 2. `spark-submit` runs the job; its log is streamed to stderr line by line. The job
//!    stages every table under `reports/_spark/<run>/<table>/_d=<date>/` (one file per
//!    date with rows, its `date` column kept).
//! 3. Only when the job succeeded is anything published: each table's staged schema is
//!    checked against [`lake::reports::table_schema`], then every date's file (an empty
//!    date: the polars run's empty file) is put in
//!    place exactly as a polars run puts its own ([`write::put_date`]: one put, atomic on
//!    object stores and on a local lake). A failed or killed job leaves the report dates
//!    as they were.
//! 4. The manifest (engine `spark`) and nightly's record of the dates are written as a
//!    polars run writes them, and the staging folder is deleted.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Instant;

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use futures::TryStreamExt;
use lake::layout::{REPORTS_DIR, REPORT_TABLES};
use lake::Lake;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::file::reader::{FileReader, SerializedFileReader};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{PipelineError, Result};
use crate::params::Params;
use crate::read::{self, HitFile};
use crate::run::RunSummary;
use crate::write::{self, InputRecord, Manifest};

/// The job, as shipped in `spark/` (README, "When one machine is not enough").
pub const JOB: &str = include_str!("../../spark/clicktrail_spark.py");
/// [`Manifest::engine`] of a Spark run.
pub const ENGINE_SPARK: &str = "spark";
/// Where a run's tables are staged, under `reports/` (a `_` folder: hive readers skip it).
pub const STAGING_DIR: &str = "_spark";
const DAY_MICROS: i64 = 86_400_000_000;

/// How to reach Spark.
#[derive(Debug, Clone)]
pub struct SparkEngine {
    /// The `spark-submit` to run (a name on PATH or a path).
    pub submit: String,
    /// `--master` (`local[2]`, `yarn`, `spark://host:7077`, `k8s://…`).
    pub master: String,
    /// The lake as Spark's Hadoop file systems name it; default: [`spark_url`] of the lake.
    pub lake_url: Option<String>,
    /// Extra `--conf KEY=VALUE` for spark-submit.
    pub conf: Vec<String>,
}

impl Default for SparkEngine {
    fn default() -> Self {
        SparkEngine { submit: "spark-submit".into(), master: "local[2]".into(), lake_url: None, conf: Vec::new() }
    }
}

/// The lake's URL for Hadoop: a local folder as `file:///…`, `s3://` as `s3a://` (the
/// S3A connector); `gs://`, `abfs(s)://` and `s3a://` as given. Azure's `az://container`
/// names no account, and `memory://` is this process's alone: both need `--spark-lake`.
pub fn spark_url(lake: &Lake) -> Result<String> {
    if let Some(root) = lake.local_root() {
        return Ok(format!("file://{}", root.display()));
    }
    let url = lake.url().trim_end_matches('/');
    match url.split_once("://") {
        Some(("s3", rest)) => Ok(format!("s3a://{rest}")),
        Some(("s3a" | "gs" | "abfs" | "abfss", _)) => Ok(url.to_string()),
        _ => Err(PipelineError::Invalid(format!(
            "the Spark engine cannot name the lake {url} for Hadoop; pass --spark-lake (e.g. abfss://container@account.dfs.core.windows.net/prefix)"
        ))),
    }
}

/// Runs `p` on Spark and publishes its tables (see the module docs). `files`: a listing
/// taken earlier (nightly's), else the lake is listed here.
pub async fn run(lake: &Lake, p: &Params, engine: &SparkEngine, files: Option<Vec<HitFile>>, command: &str) -> Result<RunSummary> {
    let started = Instant::now();
    let started_at = Utc::now();
    let run_id = format!("{}-{}", started_at.format("%Y%m%dT%H%M%S%.6fZ"), uuid::Uuid::new_v4().simple());
    let rules = crate::rules::Rules::load_for(lake, &p.window).await?;
    let base = match &engine.lake_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => spark_url(lake)?,
    };
    let (lo, hi) = p.range_micros();
    let (w, lock) = (p.window.micros(), rules.max_lock_micros());
    let (lb, ub) = (lo - DAY_MICROS - lock - 2 * w, hi + 2 * DAY_MICROS + lock);
    let listed = match files {
        Some(all) => all.into_iter().filter(|f| f.hour_start + read::MICROS_PER_HOUR > lb && f.hour_start < ub).collect(),
        None => read::list_hits(lake, Some((lb, ub))).await?,
    };

    // SPEC §1: any `.parquet` is part of the lake, but Spark skips files named `_…` or `.…`
    // even when named explicitly (checked on Spark 4.3): refuse rather than differ.
    if let Some(f) = listed.iter().find(|f| f.path.rsplit('/').next().is_some_and(|n| n.starts_with('_') || n.starts_with('.'))) {
        return Err(PipelineError::Invalid(format!(
            "hits file {} starts with '_' or '.', which Spark skips; rename it (or use the polars engine)",
            f.path
        )));
    }
    let staging = Path::from(format!("{REPORTS_DIR}/{STAGING_DIR}/{run_id}"));
    let hits_list = staging.clone().join("hits.txt");
    let list: String = listed.iter().map(|f| format!("{base}/{}\n", f.path)).collect();
    lake.put_durable(&hits_list, PutPayload::from(list.into_bytes())).await?;
    let job_dir = tempfile::tempdir().map_err(PipelineError::io("a temporary folder for the Spark job"))?;
    let job = job_dir.path().join("clicktrail_spark.py");
    std::fs::write(&job, JOB).map_err(PipelineError::io(job.display()))?;

    let mut args: Vec<String> = vec![
        "--master".into(),
        engine.master.clone(),
        "--name".into(),
        format!("clicktrail {} {}..{}", p.window, p.from, p.to),
        // UTC in the JVMs as well as in the session (SPEC §4 dates; the pitfalls).
        "--conf".into(),
        "spark.driver.extraJavaOptions=-Duser.timezone=UTC".into(),
        "--conf".into(),
        "spark.executor.extraJavaOptions=-Duser.timezone=UTC".into(),
        "--conf".into(),
        "spark.sql.session.timeZone=UTC".into(),
        "--conf".into(),
        "spark.ui.showConsoleProgress=false".into(),
    ];
    if !engine.conf.iter().any(|c| c.starts_with("spark.log.level=")) {
        args.extend(["--conf".into(), "spark.log.level=WARN".into()]);
    }
    if engine.master.starts_with("local") && !engine.conf.iter().any(|c| c.starts_with("spark.sql.shuffle.partitions=")) {
        // 200 shuffle partitions (Spark's default) are far too many for one machine.
        args.extend(["--conf".into(), "spark.sql.shuffle.partitions=4".into()]);
    }
    for c in &engine.conf {
        args.extend(["--conf".into(), c.clone()]);
    }
    args.push(job.display().to_string());
    args.extend([
        "--lake".into(),
        base.clone(),
        "--window-name".into(),
        p.window.to_string(),
        "--window-us".into(),
        w.to_string(),
        "--tz".into(),
        p.tz_name().to_string(),
        "--from".into(),
        p.from.to_string(),
        "--to".into(),
        p.to.to_string(),
        "--staging".into(),
        format!("{base}/{staging}"),
        "--hits-list".into(),
        format!("{base}/{hits_list}"),
    ]);
    tracing::info!(submit = %engine.submit, master = %engine.master, files = listed.len(), staging = %staging, "starting the Spark job");
    let outcome = submit(&engine.submit, &args).await;
    let published = match outcome {
        Ok(()) => publish(lake, p, &staging).await,
        Err(e) => Err(e),
    };
    if let Err(e) = delete_prefix(lake, &staging).await {
        tracing::warn!(error = %e, staging = %staging, "could not delete the Spark staging folder");
    }
    let (per_date, job) = published?;

    let mut output_rows: BTreeMap<String, u64> = BTreeMap::new();
    for rows in per_date.values() {
        for (t, n) in rows {
            *output_rows.entry(t.clone()).or_default() += n;
        }
    }
    let manifest = Manifest {
        run_id,
        command: command.to_string(),
        window: p.window.to_string(),
        tz: p.tz_name().to_string(),
        from: p.from,
        to: p.to,
        started_at: started_at.to_rfc3339(),
        finished_at: Utc::now().to_rfc3339(),
        duration_ms: started.elapsed().as_millis() as u64,
        // Rows are counted by the job (it reads the footers, not this process).
        input_files: listed.iter().map(|f| InputRecord { path: f.path.clone(), size: f.size, rows: -1 }).collect(),
        input_rows: job.get("input_rows").and_then(|v| v.as_i64()).unwrap_or(-1),
        output_rows,
        dates: per_date,
        settled: Vec::new(),
        engine: ENGINE_SPARK.to_string(),
    };
    let path = write::write_manifest(lake, &p.window, &manifest).await?;
    crate::nightly::record_dates(lake, p, &listed, &rules).await?;
    tracing::info!(
        window = %p.window, tz = p.tz_name(), from = %p.from, to = %p.to, engine = ENGINE_SPARK,
        duration_ms = manifest.duration_ms, manifest = %path, "run finished"
    );
    Ok(RunSummary { manifest, manifest_path: path.to_string() })
}

/// Runs spark-submit with `args`, its stdout and stderr streamed to our stderr. Fails with
/// one line: spark-submit missing, or the job's exit status and its last error line.
async fn submit(program: &str, args: &[String]) -> Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            PipelineError::Invalid(if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} not found: install Spark (pip install pyspark) or pass --spark-submit PATH")
            } else {
                format!("cannot start {program}: {e}")
            })
        })?;
    let forward = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        tokio::spawn(async move {
            let mut last_error: Option<String> = None;
            let Some(stream) = stream else { return last_error };
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("spark: {line}");
                let l = line.trim();
                if l.starts_with("error: ") || l.contains("Exception:") || l.contains("Error:") || l.starts_with("JAVA_HOME") {
                    last_error = Some(l.trim_start_matches("error: ").to_string());
                }
            }
            last_error
        })
    };
    let out = forward(child.stdout.take().map(|s| Box::new(s) as _));
    let err = forward(child.stderr.take().map(|s| Box::new(s) as _));
    let status = child.wait().await.map_err(|e| PipelineError::Invalid(format!("waiting for {program}: {e}")))?;
    let last = err.await.ok().flatten().or(out.await.ok().flatten());
    if status.success() {
        return Ok(());
    }
    let why = last.map(|l| format!(": {l}")).unwrap_or_default();
    Err(PipelineError::Invalid(format!("the Spark job failed ({status}){why}; no report date was changed (its log is above)")))
}

/// Checks the staged tables and puts every date in place; returns the rows per date and
/// table, and the job's `_job.json`.
async fn publish(lake: &Lake, p: &Params, staging: &Path) -> Result<(BTreeMap<NaiveDate, BTreeMap<String, u64>>, serde_json::Value)> {
    let job: serde_json::Value = match lake.get_optional(&staging.clone().join("_job.json")).await? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| PipelineError::Invalid(format!("{staging}/_job.json: {e}")))?,
        None => return Err(PipelineError::Invalid(format!("the Spark job ended without writing {staging}/_job.json; nothing published"))),
    };
    // Every staged file first: a table of other types publishes nothing. A date without
    // rows has no staged file; it gets the polars run's empty file.
    let mut staged: BTreeMap<(&str, NaiveDate), Path> = BTreeMap::new();
    let mut empty: BTreeMap<&str, Bytes> = BTreeMap::new();
    for table in REPORT_TABLES {
        let columns: Vec<polars::prelude::Column> = lake::reports::columns(table)
            .iter()
            .map(|c| polars::prelude::Column::new_empty((*c).into(), &write::report_dtype(c)))
            .collect();
        let frame = polars::prelude::DataFrame::new_infer_height(columns)
            .map_err(|e| PipelineError::Invalid(format!("an empty {table} table: {e}")))?;
        empty.insert(table, write::to_parquet(write::conform(frame, table)?)?);
        let prefix = staging.clone().join(table);
        let listed: Vec<Path> = lake
            .store()
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_filter(|l| futures::future::ready(l.as_ref().ends_with(lake::layout::PARQUET_EXT) && !l.filename().unwrap_or("").starts_with('.')))
            .try_collect()
            .await
            .map_err(PipelineError::store(&prefix))?;
        for path in listed {
            let folder = path.parts().nth_back(1).map(|s| s.as_ref().to_string()).unwrap_or_default();
            if let Some(d) = folder.strip_prefix("_d=").and_then(|d| d.parse::<NaiveDate>().ok()) {
                if let Some(other) = staged.insert((table, d), path.clone()) {
                    return Err(PipelineError::Invalid(format!("the Spark job staged two files for {table} {d}: {other} and {path}")));
                }
            }
        }
        // All of a table's files come from one write of one frame: one footer tells them all.
        if let Some(path) = staged.iter().find(|((t, _), _)| *t == table).map(|(_, p)| p.clone()) {
            check_schema(table, &path, &get(lake, &path).await?)?;
        }
    }
    let mut per_date = BTreeMap::new();
    for date in p.dates() {
        let mut rows = BTreeMap::new();
        for table in REPORT_TABLES {
            let bytes = match staged.get(&(table, date)) {
                Some(path) => get(lake, path).await?,
                None => empty[table].clone(),
            };
            let n = SerializedFileReader::new(bytes.clone())
                .map_err(|e| PipelineError::Invalid(format!("staged {table} {date}: {e}")))?
                .metadata()
                .file_metadata()
                .num_rows();
            write::put_date(lake, &p.window, table, date, bytes).await?;
            rows.insert(table.to_string(), n as u64);
        }
        per_date.insert(date, rows);
    }
    Ok((per_date, job))
}

async fn get(lake: &Lake, path: &Path) -> Result<Bytes> {
    lake.get_optional(path).await?.ok_or_else(|| PipelineError::Invalid(format!("{path} vanished while publishing")))
}

/// The staged file's Arrow schema must be the table's (names, order, types, nullability).
fn check_schema(table: &str, path: &Path, bytes: &Bytes) -> Result<()> {
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
        .map_err(|e| PipelineError::Invalid(format!("{path}: {e}")))?;
    let got: Vec<_> = builder.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
    let want: Vec<_> =
        lake::reports::table_schema(table).fields().iter().map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable())).collect();
    if got != want {
        return Err(PipelineError::Invalid(format!("the Spark job staged {table} as {got:?}, not {want:?}; nothing published")));
    }
    Ok(())
}

async fn delete_prefix(lake: &Lake, prefix: &Path) -> Result<()> {
    let listed: Vec<Path> =
        lake.store().list(Some(prefix)).map_ok(|m| m.location).try_collect().await.map_err(PipelineError::store(prefix))?;
    for path in listed {
        match lake.store().delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(PipelineError::store(&path)(e)),
        }
    }
    if let Some(root) = lake.local_path(prefix) {
        let _ = std::fs::remove_dir_all(root);
    }
    Ok(())
}
