//! Finding and scanning the hit files a run needs.
//!
//! Hits are partitioned by the UTC date and hour of `ts` (SPEC §1), so a run lists only the
//! hour folders that overlap the instants it needs and reads only the columns it needs.
//! Files are first made local (a local lake is read in place; any other store is
//! downloaded through our [`Lake`] store into a temporary folder, so polars never needs a
//! second object-store client), then each file's Parquet footer is checked so that a
//! truncated or foreign file fails the run with its name instead of giving wrong numbers.
//! Polars then scans the files with the hit schema: a missing optional column reads as
//! null, extra columns are ignored, and timestamps of another unit are converted.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_schema::DataType as ArrowType;
use futures::{StreamExt, TryStreamExt};
use lake::layout::{self, HITS_DIR, PARQUET_EXT};
use lake::schema::hit;
use lake::Lake;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
/// Columns a hits file must have; the others may be missing and read as null.
pub const REQUIRED: [&str; 4] = [hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID];
/// How many downloads run at once from a remote lake.
const FETCH_CONCURRENCY: usize = 8;

/// One hits object as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitFile {
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// Start of its UTC hour folder, µs.
    pub hour_start: i64,
}

/// Lists hits files whose hour folder overlaps `[lo, hi)` (µs), or every hits file.
pub async fn list_hits(lake: &Lake, range: Option<(i64, i64)>) -> Result<Vec<HitFile>> {
    let prefixes: Vec<Path> = match range {
        None => vec![Path::from(HITS_DIR)],
        Some((lo, hi)) if lo < hi => {
            let first = crate::params::local_date(&chrono_tz::Tz::UTC, lo);
            let last = crate::params::local_date(&chrono_tz::Tz::UTC, hi - 1);
            first.iter_days().take_while(|d| *d <= last).map(layout::hits_date_dir).collect()
        }
        Some(_) => Vec::new(),
    };
    let mut out = Vec::new();
    for prefix in prefixes {
        let metas: Vec<_> = lake
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(PipelineError::store(&prefix))?;
        for m in metas {
            if !m.location.as_ref().ends_with(PARQUET_EXT) {
                continue;
            }
            let Some((date, hour)) = layout::parse_hits_path(&m.location) else { continue };
            let hour_start = date.and_hms_opt(hour, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
            if let Some((lo, hi)) = range {
                if hour_start + MICROS_PER_HOUR <= lo || hour_start >= hi {
                    continue;
                }
            }
            out.push(HitFile { path: m.location.to_string(), size: m.size, e_tag: m.e_tag.clone(), hour_start });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A hits file available on local disk, its footer checked.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub file: HitFile,
    pub local: PathBuf,
    pub rows: i64,
}

/// The local copies of a run's input files; the temporary folder lives as long as this.
#[derive(Debug, Default)]
pub struct Inputs {
    pub files: Vec<LocalFile>,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl Inputs {
    /// The files whose hour folder overlaps `[lo, hi)`.
    pub fn overlapping(&self, lo: i64, hi: i64) -> Vec<&LocalFile> {
        self.files
            .iter()
            .filter(|f| f.file.hour_start + MICROS_PER_HOUR > lo && f.file.hour_start < hi)
            .collect()
    }
}

/// Makes the files local (downloading from a remote lake) and checks every footer.
///
/// A local lake's files are hard-linked into a dot-folder of the lake (same filesystem),
/// so that a compaction deleting them while the run reads (`pipeline compact`) takes
/// nothing from under it; where links cannot be made the files are read in place.
pub async fn fetch(lake: &Lake, files: Vec<HitFile>) -> Result<Inputs> {
    let (locals, tmp): (Vec<(HitFile, PathBuf)>, _) = match lake.local_root() {
        Some(root) => {
            let tmp = tempfile::Builder::new().prefix(".clicktrail-read-").tempdir_in(root).ok();
            let mut out = Vec::with_capacity(files.len());
            for (i, f) in files.into_iter().enumerate() {
                let mut local = lake.local_path(&Path::from(f.path.as_str())).unwrap_or_default();
                if let Some(dir) = &tmp {
                    let link = dir.path().join(format!("{i:08}{PARQUET_EXT}"));
                    match std::fs::hard_link(&local, &link) {
                        Ok(()) => local = link,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            return Err(PipelineError::BadHitsFile { path: f.path.clone(), reason: "gone since it was listed".into() });
                        }
                        Err(_) => {}
                    }
                }
                out.push((f, local));
            }
            (out, tmp.map(Arc::new))
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("clicktrail-hits-").tempdir().map_err(PipelineError::io("temporary folder"))?;
            let dir = tmp.path().to_path_buf();
            let fetched: Vec<(HitFile, PathBuf)> = futures::stream::iter(files.into_iter().enumerate())
                .map(|(i, f)| {
                    let dir = dir.clone();
                    async move {
                        let local = dir.join(format!("{i:08}{PARQUET_EXT}"));
                        download(lake, &f.path, &local).await?;
                        Ok::<_, PipelineError>((f, local))
                    }
                })
                .buffered(FETCH_CONCURRENCY)
                .try_collect()
                .await?;
            (fetched, Some(Arc::new(tmp)))
        }
    };
    let files = tokio::task::spawn_blocking(move || {
        locals
            .into_iter()
            .map(|(file, local)| {
                let rows = check_footer(&file.path, &local)?;
                Ok(LocalFile { file, local, rows })
            })
            .collect::<Result<Vec<_>>>()
    })
    .await
    .map_err(|e| PipelineError::Invalid(format!("footer check task failed: {e}")))??;
    Ok(Inputs { files, _tmp: tmp })
}

/// Whether any of `files` is no longer in the lake (deleted since it was listed).
pub async fn any_gone(lake: &Lake, files: &[HitFile]) -> bool {
    for f in files {
        if let Err(object_store::Error::NotFound { .. }) = lake.store().head(&Path::from(f.path.as_str())).await {
            return true;
        }
    }
    false
}

/// Streams one object of the lake into a local file.
pub async fn download(lake: &Lake, path: &str, local: &std::path::Path) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let location = Path::from(path);
    let got = lake.store().get(&location).await.map_err(PipelineError::store(path))?;
    let mut stream = got.into_stream();
    let mut out = tokio::fs::File::create(local).await.map_err(PipelineError::io(local.display()))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(PipelineError::store(path))?;
        out.write_all(&chunk).await.map_err(PipelineError::io(local.display()))?;
    }
    out.flush().await.map_err(PipelineError::io(local.display()))?;
    Ok(())
}

/// Reads the Parquet footer of a hits file: it must be Parquet, have the required columns,
/// and each known column must have a type polars can read as the hit schema's. Returns the
/// row count.
pub fn check_footer(name: &str, local: &std::path::Path) -> Result<i64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad = |reason: String| PipelineError::BadHitsFile { path: name.to_string(), reason };
    let file = std::fs::File::open(local).map_err(|e| bad(e.to_string()))?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(format!("not a valid Parquet file ({e})")))?;
    let meta = reader.metadata().file_metadata();
    let schema = parquet::arrow::parquet_to_arrow_schema(meta.schema_descr(), meta.key_value_metadata())
        .map_err(|e| bad(format!("unreadable schema ({e})")))?;
    for column in REQUIRED {
        if schema.field_with_name(column).is_err() {
            return Err(bad(format!("required column {column:?} is missing")));
        }
    }
    for field in schema.fields() {
        let name = field.name().as_str();
        if !hit::ALL.contains(&name) {
            continue;
        }
        let ok = match name {
            hit::TS => matches!(field.data_type(), ArrowType::Timestamp(_, _)),
            hit::AMOUNT_MICROS => matches!(
                field.data_type(),
                ArrowType::Int64 | ArrowType::Int32 | ArrowType::Int16 | ArrowType::Int8 | ArrowType::UInt32 | ArrowType::UInt16 | ArrowType::UInt8 | ArrowType::Null
            ),
            _ => matches!(
                field.data_type(),
                ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Utf8View | ArrowType::Null
            ),
        };
        if !ok {
            return Err(bad(format!("column {name:?} has type {}, not the hit schema's", field.data_type())));
        }
    }
    Ok(meta.num_rows())
}

/// Reads every row of a file with the `parquet` crate; used after polars fails, to name the
/// file whose pages are corrupt.
pub fn check_pages(name: &str, local: &std::path::Path) -> Result<()> {
    let bad = |reason: String| PipelineError::BadHitsFile { path: name.to_string(), reason };
    let file = std::fs::File::open(local).map_err(|e| bad(e.to_string()))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("not a valid Parquet file ({e})")))?;
    for batch in reader {
        batch.map_err(|e| bad(format!("corrupt data ({e})")))?;
    }
    Ok(())
}

/// The polars type of a hit column.
pub fn hit_dtype(column: &str) -> DataType {
    match column {
        hit::TS => DataType::Datetime(TimeUnit::Microseconds, Some(TimeZone::UTC)),
        hit::AMOUNT_MICROS => DataType::Int64,
        _ => DataType::String,
    }
}

/// The hit schema as polars sees it.
pub fn hit_polars_schema() -> SchemaRef {
    Arc::new(hit::ALL.iter().map(|c| Field::new((*c).into(), hit_dtype(c))).collect())
}

/// A lazy scan of local Parquet files with `schema`: columns selected by name, a missing
/// column read as null, extra columns ignored, integers widened and timestamps of another
/// unit or zone converted. No file: an empty frame with the schema.
pub fn scan_parquet_files(paths: &[PathBuf], schema: SchemaRef) -> PolarsResult<LazyFrame> {
    if paths.is_empty() {
        return Ok(DataFrame::empty_with_schema(&schema).lazy());
    }
    let paths: Vec<PlRefPath> = paths.iter().map(|p| PlRefPath::new(p.to_string_lossy().as_ref())).collect();
    let options = ParquetOptions { schema: Some(schema.clone()), ..Default::default() };
    let args = UnifiedScanArgs {
        schema: Some(schema),
        hive_options: HiveOptions { enabled: Some(false), ..HiveOptions::new_disabled() },
        glob: false,
        cast_columns_policy: CastColumnsPolicy {
            integer_upcast: true,
            datetime_nanoseconds_downcast: true,
            datetime_milliseconds_upcast: true,
            datetime_convert_timezone: true,
            null_upcast: true,
            categorical_to_string: true,
            ..CastColumnsPolicy::ERROR_ON_MISMATCH
        },
        missing_columns_policy: MissingColumnsPolicy::Insert,
        extra_columns_policy: ExtraColumnsPolicy::Ignore,
        ..Default::default()
    };
    Ok(LazyFrame::from(DslBuilder::scan_parquet(ScanSources::Paths(paths.into_iter().collect()), options, args)?.build()))
}

/// `column` as is, except that a string column is copied into buffers of its own.
///
/// polars decodes a Parquet page's long strings as views into the page's bytes, and a
/// filter keeps the views: a frame holding 5% of a scan's rows would hold every page
/// of its string columns. Applied after a selective filter, this keeps only what is kept.
pub fn compacted(column: &str) -> Expr {
    col(column).map(
        |c: Column| {
            let s = c.as_materialized_series();
            if s.dtype() != &DataType::String {
                return Ok(c);
            }
            let copy: StringChunked = s.str()?.iter().collect();
            Ok(copy.with_name(c.name().clone()).into_series().into_column())
        },
        |_, field| Ok(field.clone()),
    )
}

/// Scans `files` for `columns`, keeping rows with `ts` in `[lo, hi)`. No file: an empty
/// frame with the same schema.
pub fn scan(files: &[&LocalFile], columns: &[&str], lo: i64, hi: i64) -> Result<LazyFrame> {
    let selected: Vec<Expr> = columns.iter().map(|c| col(*c)).collect();
    let paths: Vec<PathBuf> = files.iter().map(|f| f.local.clone()).collect();
    let lf = scan_parquet_files(&paths, hit_polars_schema()).map_err(PipelineError::polars("planning the hits scan"))?;
    let ts = col(hit::TS).cast(DataType::Int64);
    Ok(lf.select(selected).filter(ts.clone().gt_eq(lit(lo)).and(ts.lt(lit(hi)))))
}
