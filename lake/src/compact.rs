//! Compaction of hit hours (issue 14): each closed hour's small files (one per collector per
//! flush) rewritten into one file sorted by `(ts, hit_id)`, so that a run lists and opens one
//! object per hour instead of hundreds.
//!
//! **Rules.** The new file is durable before any old one is deleted (a local lake writes a
//! dot-named temporary file, fsyncs it, renames it and fsyncs the folder; an object store's
//! single PUT is durable when it returns). No row is dropped, deduplicated or changed: rows
//! are cast to the SPEC's Arrow types only where the cast is lossless, and the union of the
//! inputs' columns is kept. Between the write and the last delete a reader may see a row
//! twice; the pipeline's `hit_id` dedup makes that harmless.
//!
//! **Names.** A compacted file is `compacted-<S>-<F>.parquet`: `S` is the sum of the
//! digests of the raw files it holds (what lets the nightly fingerprint of an hour stay
//! the same whether its rows sit in raw files or in compacted ones), `F` the fingerprint
//! of the hour as it was just before (what nightly sees when the file is alone). Collector
//! files are named after spool segments and never start with `compacted-`.
//!
//! **Leaves.** The Parquet footer of a compacted file lists every raw file (name, size,
//! e-tag) whose rows it holds, transitively. A later compaction treats a file as *covered*
//! when a compacted file of the hour holds all its leaves (a raw file left by a killed
//! compaction, an older compacted file, the loser of two concurrent compactions): covered
//! files are deleted without being read again, the others are merged. So a kill at any
//! point, a late collector file, or two compactions at once end, after the next run, with
//! every row exactly once. A re-upload of a compacted file's source under its old name
//! gets another e-tag on most stores and is merged again: a duplicate (harmless), never a
//! loss.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow::compute::{cast, concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::layout::{self, HITS_DIR, PARQUET_EXT};
use crate::schema::{hit, hit_schema};
use crate::{Lake, LakeError};

/// File names of compacted files start with this.
pub const COMPACTED_PREFIX: &str = "compacted-";
/// Footer key of a compacted file's leaves (JSON list of [`Leaf`]).
pub const LEAVES_KEY: &str = "clicktrail.compacted.leaves";
/// Rows per row group: a hit row decodes to about 300 bytes, so a group is some 40 MiB in
/// memory and a few MiB on disk: big enough that per-group overhead vanishes, small enough
/// that a scan streams a busy hour and prunes by `ts` instead of holding it whole.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// The default grace period: an hour counts as closed this long after its end. Collectors
/// upload every `--flush-interval` (60 s by default) and retry failed uploads with a
/// backoff up to that interval; 15 minutes leaves room for that and for clock skew. A file
/// that arrives later still is safe: the next compaction merges it.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);
/// Temporary files of a local compaction older than this are left-overs of a killed run.
const STALE_TMP: Duration = Duration::from_secs(3600);
/// Downloads at once within an hour.
const FETCH_CONCURRENCY: usize = 16;
/// Plan–act rounds per hour: one to compact, one to see it done (or clean up after a
/// concurrent compaction), one spare.
const ROUNDS: usize = 3;
const MICROS_PER_HOUR: i64 = 3_600_000_000;
const HOUR_V2: &[u8] = b"clicktrail hour v2\n";

/// One listed hits object: what fingerprints and leaves are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

impl Listed {
    fn from_meta(m: &object_store::ObjectMeta) -> Listed {
        Listed { path: m.location.to_string(), size: m.size, e_tag: m.e_tag.clone() }
    }
    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// A raw file whose rows a compacted file holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Leaf {
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// The two values a compacted file's name carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactedName {
    /// Sum (mod 2¹²⁸) of the digests of the raw files it holds.
    pub sum: u128,
    /// Fingerprint of its hour just before it was written.
    pub fingerprint: [u8; 32],
}

/// `compacted-<32 hex>-<64 hex>.parquet`, or `None` for any other name.
pub fn parse_compacted_name(file_name: &str) -> Option<CompactedName> {
    let rest = file_name.strip_prefix(COMPACTED_PREFIX)?.strip_suffix(PARQUET_EXT)?;
    let (sum, fp) = rest.split_once('-')?;
    if sum.len() != 32 || fp.len() != 64 {
        return None;
    }
    let sum = u128::from_str_radix(sum, 16).ok()?;
    let mut fingerprint = [0u8; 32];
    for (i, b) in fingerprint.iter_mut().enumerate() {
        *b = u8::from_str_radix(fp.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(CompactedName { sum, fingerprint })
}

fn compacted_file_name(name: &CompactedName) -> String {
    let fp: String = name.fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    format!("{COMPACTED_PREFIX}{:032x}-{fp}{PARQUET_EXT}", name.sum)
}

fn line(h: &mut blake3::Hasher, f: &Listed) {
    h.update(f.path.as_bytes());
    h.update(&f.size.to_le_bytes());
    h.update(f.e_tag.as_deref().unwrap_or("").as_bytes());
    h.update(b"\n");
}

/// The digest of one listed file: a compacted file's `S`, a raw file's own.
fn digest(f: &Listed) -> u128 {
    if let Some(c) = parse_compacted_name(f.name()) {
        return c.sum;
    }
    let mut h = blake3::Hasher::new();
    line(&mut h, f);
    let mut first = [0u8; 16];
    first.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// The fingerprint of one hour folder's files (sorted by path), as nightly records it.
///
/// * No compacted file: a hash of every file's path, size and e-tag, in order (the
///   fingerprint nightly has always taken, so states recorded before compaction existed
///   stay valid).
/// * One compacted file and nothing else: the fingerprint its name carries, the one the
///   hour had just before it was written.
/// * Otherwise: a hash of the sum of the digests, which stays the same however the
///   hour's raw files are spread over compacted ones.
///
/// So compacting an hour never changes its fingerprint; only a state with copies (a killed
/// or concurrent compaction's left-overs, present until the next compaction) differs.
pub fn hour_fingerprint(files: &[Listed]) -> [u8; 32] {
    let compacted: Vec<CompactedName> = files.iter().filter_map(|f| parse_compacted_name(f.name())).collect();
    if compacted.is_empty() {
        let mut h = blake3::Hasher::new();
        for f in files {
            line(&mut h, f);
        }
        return *h.finalize().as_bytes();
    }
    if let ([only], 1) = (compacted.as_slice(), files.len()) {
        return only.fingerprint;
    }
    let sum = files.iter().fold(0u128, |acc, f| acc.wrapping_add(digest(f)));
    let mut h = blake3::Hasher::new();
    h.update(HOUR_V2);
    h.update(&sum.to_le_bytes());
    *h.finalize().as_bytes()
}

/// How to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// An hour is closed once `now` is this long past its end.
    pub grace: Duration,
    pub now: DateTime<Utc>,
    /// Only hours that end at or before this instant (µs), if set (nightly: its today's start).
    pub until_us: Option<i64>,
    /// Hours compacted at once.
    pub concurrency: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions { grace: DEFAULT_GRACE, now: Utc::now(), until_us: None, concurrency: 2 }
    }
}

impl CompactOptions {
    fn closed(&self, hour_start_us: i64) -> bool {
        let end = hour_start_us + MICROS_PER_HOUR;
        let grace = i64::try_from(self.grace.as_micros()).unwrap_or(i64::MAX);
        end.saturating_add(grace) <= self.now.timestamp_micros() && self.until_us.is_none_or(|u| end <= u)
    }
}

/// What compaction did to one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HourOutcome {
    /// One compacted file and nothing else: left alone, nothing read.
    AlreadyCompact,
    /// Files merged into `written`; `removed` old files deleted (covered ones included).
    Compacted { written: String, inputs: usize, rows: u64, removed: usize },
    /// Only covered left-overs were deleted.
    Cleaned { removed: usize },
}

/// What a compaction did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Closed hours looked at.
    pub hours: usize,
    pub already_compact: usize,
    pub compacted: usize,
    pub cleaned: usize,
    /// Files before, in the hours compacted or cleaned.
    pub files_in: usize,
    pub files_removed: usize,
    pub rows: u64,
    /// Hours left as they were, with the reason (an unreadable file, a store error).
    pub failed: Vec<(String, LakeError)>,
}

impl Summary {
    /// Whether any file was written or deleted.
    pub fn changed(&self) -> bool {
        self.compacted + self.cleaned > 0
    }
}

/// Compacts every closed hour of the UTC dates `[from, to]` (every date: `None`).
pub async fn compact(lake: &Lake, dates: Option<(NaiveDate, NaiveDate)>, opts: &CompactOptions) -> Result<Summary, LakeError> {
    let prefixes: Vec<Path> = match dates {
        None => vec![Path::from(HITS_DIR)],
        Some((from, to)) => from.iter_days().take_while(|d| *d <= to).map(layout::hits_date_dir).collect(),
    };
    let mut listed = Vec::new();
    for prefix in prefixes {
        let metas: Vec<object_store::ObjectMeta> =
            lake.store().list(Some(&prefix)).try_collect().await.map_err(|e| LakeError::store(&prefix, e))?;
        listed.extend(metas.iter().map(Listed::from_meta));
    }
    compact_listed(lake, listed, opts).await
}

/// Compacts the closed hours of a listing already taken (nightly lists the lake anyway).
/// Objects that are not a `.parquet` file directly in an hour folder are ignored.
pub async fn compact_listed(lake: &Lake, listed: Vec<Listed>, opts: &CompactOptions) -> Result<Summary, LakeError> {
    let mut hours: BTreeMap<(NaiveDate, u32), Vec<Listed>> = BTreeMap::new();
    for f in listed {
        let Some(key) = hour_child(&f.path) else { continue };
        hours.entry(key).or_default().push(f);
    }
    hours.retain(|(date, hour), _| opts.closed(hour_start_us(*date, *hour)));
    let mut summary = Summary { hours: hours.len(), ..Default::default() };
    let mut jobs = Vec::with_capacity(hours.len());
    for ((date, hour), files) in hours {
        let lake = lake.clone();
        jobs.push(async move {
            let n = files.len();
            ((date, hour), n, compact_hour(&lake, date, hour, Some(files)).await)
        });
    }
    let results: Vec<_> = futures::stream::iter(jobs).buffer_unordered(opts.concurrency.max(1)).collect().await;
    for ((date, hour), n, result) in results {
        match result {
            Ok(HourOutcome::AlreadyCompact) => summary.already_compact += 1,
            Ok(HourOutcome::Compacted { rows, removed, .. }) => {
                summary.compacted += 1;
                summary.files_in += n;
                summary.files_removed += removed;
                summary.rows += rows;
            }
            Ok(HourOutcome::Cleaned { removed }) => {
                summary.cleaned += 1;
                summary.files_in += n;
                summary.files_removed += removed;
            }
            Err(e) => {
                let dir = layout::hits_hour_dir(date, hour).to_string();
                tracing::warn!(hour = %dir, error = %e, "hour not compacted; left as it was");
                summary.failed.push((dir, e));
            }
        }
    }
    summary.failed.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(summary)
}

fn hour_start_us(date: NaiveDate, hour: u32) -> i64 {
    date.and_hms_opt(hour, 0, 0).unwrap_or_default().and_utc().timestamp_micros()
}

/// `hits/date=D/hour=H/<name>.parquet` → (D, H); deeper or other paths: `None`.
fn hour_child(path: &str) -> Option<(NaiveDate, u32)> {
    if !path.ends_with(PARQUET_EXT) {
        return None;
    }
    let p = Path::from(path);
    let parts: Vec<_> = p.parts().collect();
    if parts.len() != 4 || parts[0].as_ref() != HITS_DIR {
        return None;
    }
    let key = layout::parse_hits_path(&p)?;
    (layout::hits_hour_dir(key.0, key.1).join(parts[3].as_ref()) == p).then_some(key)
}

async fn list_hour(lake: &Lake, date: NaiveDate, hour: u32) -> Result<Vec<Listed>, LakeError> {
    let dir = layout::hits_hour_dir(date, hour);
    let metas: Vec<object_store::ObjectMeta> =
        lake.store().list(Some(&dir)).try_collect().await.map_err(|e| LakeError::store(&dir, e))?;
    Ok(metas.iter().map(Listed::from_meta).filter(|f| hour_child(&f.path) == Some((date, hour))).collect())
}

/// The compacted file (path and bytes) that holds the rows of `path`, a raw hits file
/// compaction has removed; `None` when no compacted file of its hour does. For readers that
/// recorded a hits file by name (the adjustment-import ledger).
pub async fn holder_of(lake: &Lake, path: &str) -> Result<Option<(String, Bytes)>, LakeError> {
    let Some((date, hour)) = hour_child(path) else { return Ok(None) };
    let name = path.rsplit('/').next().unwrap_or(path);
    for f in list_hour(lake, date, hour).await? {
        if parse_compacted_name(f.name()).is_none() {
            continue;
        }
        let bytes = match lake.store().get(&Path::from(f.path.as_str())).await {
            Ok(r) => r.bytes().await.map_err(|e| LakeError::store(&f.path, e))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(LakeError::store(&f.path, e)),
        };
        if read_leaves(&f.path, &bytes)?.is_some_and(|leaves| leaves.iter().any(|l| l.name == name)) {
            return Ok(Some((f.path, bytes)));
        }
    }
    Ok(None)
}

/// One file of an hour, as planned.
struct Entry {
    listed: Listed,
    compacted: bool,
    leaves: BTreeSet<Leaf>,
    bytes: Option<Bytes>,
}

impl Entry {
    fn raw_leaf(l: &Listed) -> Leaf {
        Leaf { name: l.name().to_string(), size: l.size, e_tag: l.e_tag.clone() }
    }
    /// Whether `other` (a compacted file) holds every row of `self`.
    fn covered_by(&self, other: &Entry) -> bool {
        if !other.compacted || other.listed.path == self.listed.path || !self.leaves.is_subset(&other.leaves) {
            return false;
        }
        self.leaves.len() < other.leaves.len() || !self.compacted || self.listed.name() > other.listed.name()
    }
}

/// Compacts one hour: merges the files no compacted file covers into one new file, then
/// deletes every file it covers. `listed`: the hour's files if already listed (else they
/// are listed here). Reruns until the hour is one compacted file (at most [`ROUNDS`]).
pub async fn compact_hour(lake: &Lake, date: NaiveDate, hour: u32, listed: Option<Vec<Listed>>) -> Result<HourOutcome, LakeError> {
    clean_stale_tmp(lake, date, hour).await;
    let mut listed = match listed {
        Some(l) => l,
        None => list_hour(lake, date, hour).await?,
    };
    let mut outcome = HourOutcome::AlreadyCompact;
    for round in 0..ROUNDS {
        if round > 0 {
            listed = list_hour(lake, date, hour).await?;
        }
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        match compact_round(lake, date, hour, &listed).await {
            Ok(None) => return Ok(outcome),
            Ok(Some(step)) => outcome = merge_outcomes(outcome, step),
            // A file vanished under us: another compaction is at work; list again.
            Err(LakeError::Store { source: object_store::Error::NotFound { .. }, .. }) if round + 1 < ROUNDS => {}
            Err(e) => return Err(e),
        }
    }
    Ok(outcome)
}

fn merge_outcomes(before: HourOutcome, step: HourOutcome) -> HourOutcome {
    let removed_before = match &before {
        HourOutcome::Compacted { removed, .. } | HourOutcome::Cleaned { removed } => *removed,
        HourOutcome::AlreadyCompact => 0,
    };
    match (before, step) {
        (_, HourOutcome::Compacted { written, inputs, rows, removed }) => {
            HourOutcome::Compacted { written, inputs, rows, removed: removed + removed_before }
        }
        (HourOutcome::Compacted { written, inputs, rows, removed }, HourOutcome::Cleaned { removed: more }) => {
            HourOutcome::Compacted { written, inputs, rows, removed: removed + more }
        }
        (_, HourOutcome::Cleaned { removed }) => HourOutcome::Cleaned { removed: removed + removed_before },
        (before, HourOutcome::AlreadyCompact) => before,
    }
}

/// One plan–act round; `None` when the hour needs nothing.
async fn compact_round(lake: &Lake, date: NaiveDate, hour: u32, listed: &[Listed]) -> Result<Option<HourOutcome>, LakeError> {
    let single_compacted = matches!(listed, [only] if parse_compacted_name(only.name()).is_some());
    if listed.is_empty() || single_compacted {
        return Ok(None);
    }
    // Read the compacted files (their leaves are in the footer; their rows are needed if
    // they are merged).
    let mut entries: Vec<Entry> = Vec::with_capacity(listed.len());
    let compacted_paths: Vec<String> = listed.iter().filter(|f| parse_compacted_name(f.name()).is_some()).map(|f| f.path.clone()).collect();
    let compacted_bytes = fetch_all(lake, compacted_paths).await?;
    for f in listed {
        let mut entry = Entry { listed: f.clone(), compacted: false, leaves: BTreeSet::from([Entry::raw_leaf(f)]), bytes: None };
        if let Some(bytes) = compacted_bytes.get(&f.path) {
            if let Some(leaves) = read_leaves(&f.path, bytes)? {
                entry.compacted = true;
                entry.leaves = leaves;
            }
            entry.bytes = Some(bytes.clone());
        }
        entries.push(entry);
    }
    let covered: Vec<bool> = entries.iter().map(|e| entries.iter().any(|o| e.covered_by(o))).collect();
    let (mut inputs, mut leftovers) = (Vec::new(), Vec::new());
    for (e, c) in entries.into_iter().zip(covered) {
        if c {
            leftovers.push(e);
        } else {
            inputs.push(e);
        }
    }
    if let [only] = inputs.as_slice() {
        if only.compacted {
            let removed = delete_all(lake, leftovers.iter().map(|e| e.listed.path.clone()).collect(), None).await?;
            tracing::info!(hour = %layout::hits_hour_dir(date, hour), removed, "removed files a compacted file already holds");
            return Ok(Some(HourOutcome::Cleaned { removed }));
        }
    }
    // Merge the inputs.
    let missing = fetch_all(lake, inputs.iter().filter(|e| e.bytes.is_none()).map(|e| e.listed.path.clone()).collect()).await?;
    for e in &mut inputs {
        if e.bytes.is_none() {
            e.bytes = missing.get(&e.listed.path).cloned();
        }
    }
    let input_listing: Vec<Listed> = inputs.iter().map(|e| e.listed.clone()).collect();
    let name = CompactedName {
        sum: input_listing.iter().fold(0u128, |acc, f| acc.wrapping_add(digest(f))),
        fingerprint: hour_fingerprint(&input_listing),
    };
    let target = layout::hits_hour_dir(date, hour).join(compacted_file_name(&name));
    let leaves: BTreeSet<Leaf> = inputs.iter().flat_map(|e| e.leaves.iter().cloned()).collect();
    let files: Vec<(String, Bytes)> =
        inputs.iter().map(|e| (e.listed.path.clone(), e.bytes.clone().unwrap_or_default())).collect();
    let (encoded, rows) = tokio::task::spawn_blocking(move || merge(&files, &leaves))
        .await
        .map_err(|e| LakeError::Invalid(format!("compaction task failed: {e}")))??;
    put_durable_atomic(lake, &target, encoded).await?;
    let removed = delete_all(lake, inputs.iter().chain(&leftovers).map(|e| e.listed.path.clone()).collect(), Some(&target)).await?;
    tracing::info!(hour = %layout::hits_hour_dir(date, hour), inputs = inputs.len(), removed, rows, file = %target, "compacted hour");
    Ok(Some(HourOutcome::Compacted { written: target.to_string(), inputs: inputs.len(), rows, removed }))
}

async fn fetch_all(lake: &Lake, paths: Vec<String>) -> Result<BTreeMap<String, Bytes>, LakeError> {
    let mut gets = Vec::with_capacity(paths.len());
    for path in paths {
        let store: Arc<dyn ObjectStore> = lake.store().clone();
        gets.push(async move {
            let location = Path::from(path.as_str());
            let got = store.get(&location).await.map_err(|e| LakeError::store(&path, e))?;
            let bytes = got.bytes().await.map_err(|e| LakeError::store(&path, e))?;
            Ok::<_, LakeError>((path, bytes))
        });
    }
    futures::stream::iter(gets).buffer_unordered(FETCH_CONCURRENCY).try_collect().await
}

/// Deletes `paths` (a missing one is already gone), never `keep`. Returns how many.
async fn delete_all(lake: &Lake, paths: Vec<String>, keep: Option<&Path>) -> Result<usize, LakeError> {
    let mut deletes = Vec::with_capacity(paths.len());
    for path in paths.into_iter().map(Path::from).filter(|p| Some(p) != keep) {
        let store: Arc<dyn ObjectStore> = lake.store().clone();
        deletes.push(async move {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(LakeError::store(&path, e)),
            }
        });
    }
    let n = deletes.len();
    futures::stream::iter(deletes).buffer_unordered(FETCH_CONCURRENCY).try_collect::<Vec<()>>().await?;
    Ok(n)
}

fn bad(path: &str, reason: impl std::fmt::Display) -> LakeError {
    LakeError::BadFile { path: path.to_string(), reason: reason.to_string() }
}

/// The leaves in a compacted file's footer; `None` when the file has none (a file that
/// only looks like ours is taken as raw).
fn read_leaves(path: &str, bytes: &Bytes) -> Result<Option<BTreeSet<Leaf>>, LakeError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|e| bad(path, format!("not a valid Parquet file ({e})")))?;
    let kv = builder.metadata().file_metadata().key_value_metadata();
    let Some(text) = kv.and_then(|kv| kv.iter().find(|k| k.key == LEAVES_KEY)).and_then(|k| k.value.as_deref()) else {
        return Ok(None);
    };
    let leaves: Vec<Leaf> = serde_json::from_str(text).map_err(|e| bad(path, format!("unreadable {LEAVES_KEY} ({e})")))?;
    Ok(Some(leaves.into_iter().collect()))
}

/// Decodes every file, builds the union schema, sorts by `(ts, hit_id)` and encodes one
/// Parquet file with `leaves` in its footer. Returns the bytes and the row count.
fn merge(files: &[(String, Bytes)], leaves: &BTreeSet<Leaf>) -> Result<(Bytes, u64), LakeError> {
    let mut decoded: Vec<(&str, Vec<RecordBatch>, SchemaRef)> = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).map_err(|e| bad(path, format!("not a valid Parquet file ({e})")))?;
        let schema = builder.schema().clone();
        let reader = builder.with_batch_size(64 * 1024).build().map_err(|e| bad(path, e))?;
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(|e| bad(path, format!("corrupt data ({e})")))?;
        decoded.push((path.as_str(), batches, schema));
    }
    let schema = union_schema(decoded.iter().map(|(p, b, s)| (*p, b.as_slice(), s)))?;
    let mut aligned = Vec::new();
    for (path, batches, _) in &decoded {
        for b in batches {
            aligned.push(align(path, b, &schema)?);
        }
    }
    let all = concat_batches(&schema, &aligned).map_err(|e| LakeError::Invalid(format!("concatenating hits: {e}")))?;
    drop(aligned);
    drop(decoded);
    let sorted = sort_by_ts_hit_id(&all)?;
    let rows = sorted.num_rows() as u64;
    let props = writer_properties(&schema, leaves)?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(props)).map_err(|e| LakeError::Invalid(format!("writing the compacted file: {e}")))?;
    writer.write(&sorted).map_err(|e| LakeError::Invalid(format!("writing the compacted file: {e}")))?;
    writer.close().map_err(|e| LakeError::Invalid(format!("writing the compacted file: {e}")))?;
    Ok((Bytes::from(out), rows))
}

/// The columns of the merged file: the SPEC's hit columns any input has, in SPEC order and
/// with the SPEC's Arrow types, then any other column in order of first appearance with its
/// first type. A column is nullable when the SPEC says so, when an input lacks it, or when
/// an input has nulls in it.
fn union_schema<'a>(inputs: impl Iterator<Item = (&'a str, &'a [RecordBatch], &'a SchemaRef)> + Clone) -> Result<SchemaRef, LakeError> {
    let spec = hit_schema();
    let mut extras: Vec<Field> = Vec::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    for (path, _, s) in inputs.clone() {
        for required in [hit::HIT_ID, hit::KIND, hit::TS, hit::OFFER_ID] {
            if s.field_with_name(required).is_err() {
                return Err(bad(path, format!("required column {required:?} is missing")));
            }
        }
        for f in s.fields() {
            present.insert(f.name().clone());
            if spec.field_with_name(f.name()).is_err() && !extras.iter().any(|e| e.name() == f.name()) {
                extras.push(f.as_ref().clone());
            }
        }
    }
    let wanted: Vec<Field> = spec
        .fields()
        .iter()
        .filter(|f| present.contains(f.name()))
        .map(|f| f.as_ref().clone())
        .chain(extras)
        .collect();
    let fields: Vec<Field> = wanted
        .into_iter()
        .map(|f| {
            let nullable = f.is_nullable()
                || inputs.clone().any(|(_, batches, s)| match s.index_of(f.name()) {
                    Err(_) => true,
                    Ok(i) => batches.iter().any(|b| b.column(i).null_count() > 0),
                });
            f.with_nullable(nullable)
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// One batch in the union schema: columns by name, missing ones null, casts lossless.
fn align(path: &str, batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, LakeError> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), batch.num_rows()),
            Some(c) if c.data_type() == field.data_type() => c.clone(),
            Some(c) => lossless_cast(path, field.name(), c, field.data_type())?,
        };
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| bad(path, e))
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

/// Casts `c` to `to`, refusing any cast that would change a value (checked by casting
/// back), so compaction never changes a row.
fn lossless_cast(path: &str, name: &str, c: &ArrayRef, to: &DataType) -> Result<ArrayRef, LakeError> {
    let refuse = |why: String| bad(path, format!("column {name:?} of type {} cannot become {to} without change ({why})", c.data_type()));
    let out = cast(c, to).map_err(|e| refuse(e.to_string()))?;
    if is_string(c.data_type()) && *to == DataType::Utf8 {
        return Ok(out);
    }
    let back = cast(&out, c.data_type()).map_err(|e| refuse(e.to_string()))?;
    if back.as_ref() != c.as_ref() || out.null_count() != c.null_count() {
        return Err(refuse("values differ after the cast".into()));
    }
    Ok(out)
}

fn sort_by_ts_hit_id(batch: &RecordBatch) -> Result<RecordBatch, LakeError> {
    let column = |name: &str| {
        batch.column_by_name(name).cloned().ok_or_else(|| LakeError::Invalid(format!("merged hits have no {name} column")))
    };
    let keys = [SortColumn { values: column(hit::TS)?, options: None }, SortColumn { values: column(hit::HIT_ID)?, options: None }];
    let indices = lexsort_to_indices(&keys, None).map_err(|e| LakeError::Invalid(format!("sorting hits: {e}")))?;
    take_record_batch(batch, &indices).map_err(|e| LakeError::Invalid(format!("sorting hits: {e}")))
}

/// zstd as the collector writes, row groups of [`ROW_GROUP_ROWS`], page statistics (min/max
/// per page and row group) on `ts`, `kind` and `click_id`, the sort order declared, and the
/// leaves in the footer.
fn writer_properties(schema: &Schema, leaves: &BTreeSet<Leaf>) -> Result<WriterProperties, LakeError> {
    let leaves: Vec<&Leaf> = leaves.iter().collect();
    let json = serde_json::to_string(&leaves).map_err(|e| LakeError::Invalid(format!("leaves: {e}")))?;
    let index = |name: &str| schema.index_of(name).map_err(|e| LakeError::Invalid(e.to_string()));
    let sorting = vec![
        SortingColumn { column_idx: index(hit::TS)? as i32, descending: false, nulls_first: false },
        SortingColumn { column_idx: index(hit::HIT_ID)? as i32, descending: false, nulls_first: false },
    ];
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .set_key_value_metadata(Some(vec![KeyValue::new(LEAVES_KEY.to_string(), json)]));
    for column in [hit::TS, hit::KIND, hit::CLICK_ID] {
        b = b.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::Page);
    }
    Ok(b.build())
}

/// Writes `bytes` at `path` so that the object appears whole or not at all, and is durable
/// when this returns. Local lake: a dot-named temporary file in the same folder (no reader
/// takes it for a hits file), fsync'd, renamed, and the folder fsync'd.
async fn put_durable_atomic(lake: &Lake, path: &Path, bytes: Bytes) -> Result<(), LakeError> {
    let (Some(root), Some(file)) = (lake.local_root().map(ToOwned::to_owned), lake.local_path(path)) else {
        lake.store().put(path, PutPayload::from_bytes(bytes)).await.map_err(|e| LakeError::store(path, e))?;
        return Ok(());
    };
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let dir = file.parent().ok_or_else(|| LakeError::Invalid(format!("{} has no folder", file.display())))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &file)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(LakeError::io(&file, e));
        }
        crate::store::sync_path_and_parents(&file, &root)
    })
    .await
    .map_err(|e| LakeError::Invalid(format!("write task failed: {e}")))?
}

/// Removes temporary files of killed local compactions (older than [`STALE_TMP`]).
async fn clean_stale_tmp(lake: &Lake, date: NaiveDate, hour: u32) {
    let Some(dir) = lake.local_path(&layout::hits_hour_dir(date, hour)) else { return };
    let _ = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with(&format!(".{COMPACTED_PREFIX}")) && name.ends_with(".tmp");
            let old = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok()).is_some_and(|age| age > STALE_TMP);
            if ours && old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    })
    .await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, LargeStringArray, StringArray, TimestampMicrosecondArray, TimestampNanosecondArray};
    use arrow::util::display::array_value_to_string;

    fn hour0() -> (NaiveDate, u32) {
        (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), 5)
    }

    fn ts0() -> i64 {
        hour_start_us(hour0().0, hour0().1)
    }

    fn opts() -> CompactOptions {
        CompactOptions { grace: Duration::ZERO, ..Default::default() }
    }

    /// A hits batch of the full schema: one row per (hit_id, ts offset µs).
    fn full(rows: &[(&str, i64)]) -> RecordBatch {
        let s = hit_schema();
        let columns: Vec<ArrayRef> = s
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                hit::TS => Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|r| ts0() + r.1).collect::<Vec<_>>()).with_timezone("UTC")) as ArrayRef,
                hit::AMOUNT_MICROS => Arc::new(Int64Array::from(rows.iter().map(|r| Some(r.1)).collect::<Vec<_>>())),
                hit::HIT_ID => Arc::new(StringArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                hit::KIND => Arc::new(StringArray::from(vec!["click"; rows.len()])),
                hit::OFFER_ID => Arc::new(StringArray::from(vec!["o"; rows.len()])),
                name => Arc::new(StringArray::from(rows.iter().map(|r| Some(format!("{name}-{}", r.0))).collect::<Vec<_>>())),
            })
            .collect();
        RecordBatch::try_new(s, columns).unwrap()
    }

    /// An older writer's file: without the last three columns.
    fn old(rows: &[(&str, i64)]) -> RecordBatch {
        let b = full(rows);
        let keep: Vec<usize> = (0..b.num_columns()).filter(|i| ![hit::ACTION, hit::ADJUSTMENT_ID, hit::COUPON].contains(&b.schema().field(*i).name().as_str())).collect();
        b.project(&keep).unwrap()
    }

    fn parquet(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
        w.write(batch).unwrap();
        w.close().unwrap();
        out
    }

    async fn put(lake: &Lake, name: &str, batch: &RecordBatch) {
        let (d, h) = hour0();
        lake.store().put(&layout::hits_hour_dir(d, h).join(name), PutPayload::from(parquet(batch))).await.unwrap();
    }

    async fn listing(lake: &Lake) -> Vec<Listed> {
        let (d, h) = hour0();
        let mut l = list_hour(lake, d, h).await.unwrap();
        l.sort_by(|a, b| a.path.cmp(&b.path));
        l
    }

    /// Every row of the hour as text (column=value, by name, nulls left out), sorted.
    async fn rows(lake: &Lake) -> Vec<String> {
        let mut out = Vec::new();
        for f in listing(lake).await {
            let bytes = lake.store().get(&Path::from(f.path.as_str())).await.unwrap().bytes().await.unwrap();
            for b in ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap() {
                let b = b.unwrap();
                for r in 0..b.num_rows() {
                    let mut cells: Vec<String> = (0..b.num_columns())
                        .filter(|c| !b.column(*c).is_null(r))
                        .map(|c| format!("{}={}", b.schema().field(c).name(), cell(b.column(c), r)))
                        .collect();
                    cells.sort();
                    out.push(cells.join(","));
                }
            }
        }
        out.sort();
        out
    }

    /// A cell as text (timestamps as µs: displaying a zone needs chrono-tz).
    fn cell(c: &ArrayRef, r: usize) -> String {
        match c.data_type() {
            DataType::Timestamp(unit, _) => format!("{unit:?}:{}", array_value_to_string(&cast(c, &DataType::Int64).unwrap(), r).unwrap()),
            _ => array_value_to_string(c, r).unwrap(),
        }
    }

    fn deduped(mut rows: Vec<String>) -> Vec<String> {
        rows.dedup();
        rows
    }

    #[test]
    fn names_round_trip_and_others_are_not_ours() {
        let n = CompactedName { sum: 0x0123_4567_89ab_cdef_0011_2233_4455_6677, fingerprint: [7; 32] };
        let text = compacted_file_name(&n);
        assert_eq!(parse_compacted_name(&text), Some(n));
        assert_eq!(parse_compacted_name("0190a1b2-c3d4.parquet"), None);
        assert_eq!(parse_compacted_name("compacted-zz.parquet"), None);
        assert_eq!(hour_child("hits/date=2026-01-01/hour=05/a.parquet"), Some(hour0()));
        assert_eq!(hour_child("hits/date=2026-01-01/hour=05/sub/a.parquet"), None);
        assert_eq!(hour_child("hits/date=2026-01-01/hour=05/.a.parquet.tmp"), None);
    }

    #[tokio::test]
    async fn merges_every_row_sorted_with_the_union_of_columns() {
        let lake = Lake::open("memory://compact-merge").unwrap();
        put(&lake, "b.parquet", &full(&[("h3", 30), ("h1", 10)])).await;
        put(&lake, "a.parquet", &old(&[("h2", 20), ("h0", 10)])).await;
        // A foreign writer: large strings, and a column of its own.
        let foreign = old(&[("h4", 5)]);
        let mut fields: Vec<Field> = foreign.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut cols: Vec<ArrayRef> = foreign.columns().to_vec();
        let i = foreign.schema().index_of(hit::REFERER).unwrap();
        fields[i] = Field::new(hit::REFERER, DataType::LargeUtf8, true);
        cols[i] = Arc::new(LargeStringArray::from(vec![Some("r")]));
        fields.push(Field::new("extra", DataType::Utf8, true));
        cols.push(Arc::new(StringArray::from(vec![Some("x")])));
        put(&lake, "c.parquet", &RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()).await;
        let before = rows(&lake).await;
        let before_fp = hour_fingerprint(&listing(&lake).await);

        let s = compact(&lake, None, &opts()).await.unwrap();
        assert_eq!((s.hours, s.compacted, s.files_removed, s.rows), (1, 1, 3, 5), "{s:?}");
        let after = listing(&lake).await;
        assert_eq!(after.len(), 1);
        assert!(parse_compacted_name(after[0].name()).is_some(), "{after:?}");
        assert_eq!(rows(&lake).await, before, "no row lost or changed");
        assert_eq!(hour_fingerprint(&after), before_fp, "compaction keeps the hour's fingerprint");

        let bytes = lake.store().get(&Path::from(after[0].path.as_str())).await.unwrap().bytes().await.unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut expected: Vec<&str> = hit::ALL.to_vec();
        expected.push("extra");
        assert_eq!(names, expected, "SPEC columns in SPEC order, then the foreign one");
        for f in hit_schema().fields() {
            assert_eq!(schema.field_with_name(f.name()).unwrap().data_type(), f.data_type(), "{}", f.name());
        }
        let meta = builder.metadata().clone();
        let rg = meta.row_group(0);
        let ts_col = rg.columns().iter().find(|c| c.column_path().string() == hit::TS).unwrap();
        assert!(ts_col.statistics().is_some_and(|s| s.min_bytes_opt().is_some()), "ts statistics");
        assert_eq!(rg.sorting_columns().map(Vec::len), Some(2));
        let batch = builder.build().unwrap().next().unwrap().unwrap();
        let ids: Vec<&str> = batch.column_by_name(hit::HIT_ID).unwrap().as_any().downcast_ref::<StringArray>().unwrap().iter().flatten().collect();
        assert_eq!(ids, ["h4", "h0", "h1", "h2", "h3"], "sorted by (ts, hit_id)");
        let leaves = read_leaves("x", &lake.store().get(&Path::from(after[0].path.as_str())).await.unwrap().bytes().await.unwrap()).unwrap().unwrap();
        assert_eq!(leaves.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["a.parquet", "b.parquet", "c.parquet"]);

        // Who holds a removed file's rows (the adjustment-import ledger asks).
        let (d, h) = hour0();
        let held = holder_of(&lake, layout::hits_hour_dir(d, h).join("b.parquet").as_ref()).await.unwrap();
        assert_eq!(held.map(|(p, _)| p), Some(after[0].path.clone()));
        assert!(holder_of(&lake, layout::hits_hour_dir(d, h).join("zz.parquet").as_ref()).await.unwrap().is_none());

        // Idempotent: a compacted hour with nothing new is left alone, not even read.
        let s = compact(&lake, None, &opts()).await.unwrap();
        assert_eq!((s.already_compact, s.compacted), (1, 0));
        assert_eq!(listing(&lake).await, after, "same object, same e-tag");
    }

    #[tokio::test]
    async fn a_late_file_is_merged_and_fingerprints_follow_the_rows() {
        let lake = Lake::open("memory://compact-late").unwrap();
        put(&lake, "a.parquet", &full(&[("h1", 1)])).await;
        put(&lake, "b.parquet", &full(&[("h2", 2)])).await;
        compact(&lake, None, &opts()).await.unwrap();
        put(&lake, "late.parquet", &full(&[("h0", 0)])).await;
        let with_late = hour_fingerprint(&listing(&lake).await);
        let before = rows(&lake).await;
        let s = compact(&lake, None, &opts()).await.unwrap();
        assert_eq!((s.compacted, s.files_removed), (1, 2));
        assert_eq!(rows(&lake).await, before);
        assert_eq!(listing(&lake).await.len(), 1);
        assert_eq!(hour_fingerprint(&listing(&lake).await), with_late, "the late file changed it once, compaction did not");
    }

    /// The states a kill leaves (compacted file written, sources partly deleted), with a
    /// late collector file on top, end with every row exactly once.
    #[tokio::test]
    async fn a_half_done_compaction_is_finished_without_duplicates() {
        for deleted in 0..=3 {
            let lake = Lake::open(&format!("memory://compact-half-{deleted}")).unwrap();
            let sources = [("a.parquet", full(&[("h1", 1)])), ("b.parquet", old(&[("h2", 2)])), ("c.parquet", full(&[("h3", 3), ("h3b", 3)]))];
            for (n, b) in &sources {
                put(&lake, n, b).await;
            }
            let original = rows(&lake).await;
            // What a first compaction does up to its deletes.
            let (d, h) = hour0();
            let listed = listing(&lake).await;
            let files: Vec<(String, Bytes)> = fetch_all(&lake, listed.iter().map(|f| f.path.clone()).collect()).await.unwrap().into_iter().collect();
            let leaves: BTreeSet<Leaf> = listed.iter().map(Entry::raw_leaf).collect();
            let (bytes, _) = merge(&files, &leaves).unwrap();
            let name = CompactedName { sum: listed.iter().fold(0u128, |a, f| a.wrapping_add(digest(f))), fingerprint: hour_fingerprint(&listed) };
            put_durable_atomic(&lake, &layout::hits_hour_dir(d, h).join(compacted_file_name(&name)), bytes).await.unwrap();
            for f in listed.iter().take(deleted) {
                lake.store().delete(&Path::from(f.path.as_str())).await.unwrap();
            }
            assert_eq!(deduped(rows(&lake).await), original, "mid-way, dedup gives every row");
            put(&lake, "late.parquet", &full(&[("h9", 9)])).await;
            compact(&lake, None, &opts()).await.unwrap();
            let mut expected = original.clone();
            expected.extend(rows_of_batch(&full(&[("h9", 9)])));
            expected.sort();
            assert_eq!(rows(&lake).await, expected, "every row exactly once ({deleted} deleted before the kill)");
            assert_eq!(listing(&lake).await.len(), 1);
        }
    }

    fn rows_of_batch(b: &RecordBatch) -> Vec<String> {
        (0..b.num_rows())
            .map(|r| {
                let mut cells: Vec<String> = (0..b.num_columns())
                    .filter(|c| !b.column(*c).is_null(r))
                    .map(|c| format!("{}={}", b.schema().field(c).name(), cell(b.column(c), r)))
                    .collect();
                cells.sort();
                cells.join(",")
            })
            .collect()
    }

    async fn concurrent_compactions_end_with_the_right_rows(lake: Lake) {
        let (d, h) = hour0();
        let mut expected = Vec::new();
        for round in 0..12 {
            for i in 0..4 {
                let id = format!("r{round}-{i}");
                let b = full(&[(id.as_str(), i64::from(round * 10 + i))]);
                expected.extend(rows_of_batch(&b));
                put(&lake, &format!("f{round}-{i}.parquet"), &b).await;
            }
            expected.sort();
            let (a, b) = tokio::join!(
                tokio::spawn({
                    let lake = lake.clone();
                    async move { compact_hour(&lake, d, h, None).await }
                }),
                tokio::spawn({
                    let lake = lake.clone();
                    async move { compact_hour(&lake, d, h, None).await }
                })
            );
            a.unwrap().unwrap();
            b.unwrap().unwrap();
            assert_eq!(deduped(rows(&lake).await), expected, "round {round}: right rows after dedup");
        }
        compact_hour(&lake, d, h, None).await.unwrap();
        assert_eq!(rows(&lake).await, expected, "and exactly once after the next compaction");
        assert_eq!(listing(&lake).await.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_compactions_at_once_memory() {
        concurrent_compactions_end_with_the_right_rows(Lake::open("memory://compact-concurrent").unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_compactions_at_once_local() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        concurrent_compactions_end_with_the_right_rows(lake.clone()).await;
        // No temporary file is left behind.
        let hour = lake.local_path(&layout::hits_hour_dir(hour0().0, hour0().1)).unwrap();
        let names: Vec<String> = std::fs::read_dir(hour).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[tokio::test]
    async fn open_hours_and_lossy_casts_are_left_alone() {
        let lake = Lake::open("memory://compact-open").unwrap();
        put(&lake, "a.parquet", &full(&[("h1", 1)])).await;
        put(&lake, "b.parquet", &full(&[("h2", 2)])).await;
        // The hour ended at 06:00; with a grace of 15 minutes it is open until 06:15.
        let now = DateTime::<Utc>::from_timestamp_micros(ts0() + MICROS_PER_HOUR + 10 * 60_000_000).unwrap();
        let s = compact(&lake, None, &CompactOptions { now, ..Default::default() }).await.unwrap();
        assert_eq!(s.hours, 0);
        assert_eq!(listing(&lake).await.len(), 2);
        // A file whose ts has nanoseconds cannot be written as µs without change.
        let b = full(&[("h3", 3)]);
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        let i = b.schema().index_of(hit::TS).unwrap();
        fields[i] = Field::new(hit::TS, DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, Some("UTC".into())), false);
        cols[i] = Arc::new(TimestampNanosecondArray::from(vec![ts0() * 1000 + 3_001]).with_timezone("UTC"));
        let ns_schema = Arc::new(Schema::new(fields));
        put(&lake, "ns.parquet", &RecordBatch::try_new(ns_schema.clone(), cols.clone()).unwrap()).await;
        let before = listing(&lake).await;
        let s = compact(&lake, None, &opts()).await.unwrap();
        assert_eq!(s.failed.len(), 1, "{s:?}");
        assert!(s.failed[0].1.to_string().contains("ns.parquet"), "{}", s.failed[0].1);
        assert_eq!(listing(&lake).await, before, "untouched");
        // Whole microseconds in nanoseconds are kept, as µs.
        cols[i] = Arc::new(TimestampNanosecondArray::from(vec![ts0() * 1000 + 3_000]).with_timezone("UTC"));
        put(&lake, "ns.parquet", &RecordBatch::try_new(ns_schema, cols).unwrap()).await;
        let s = compact(&lake, None, &opts()).await.unwrap();
        assert_eq!((s.compacted, s.failed.len(), s.rows), (1, 0, 3), "{s:?}");
        assert!(rows(&lake).await.iter().any(|r| r.contains("hit_id=h3") && r.contains(&format!("ts=Microsecond:{}", ts0() + 3))));
    }

    #[test]
    fn the_fingerprint_of_an_hour_without_compacted_files_is_the_old_one() {
        // The formula nightly recorded before compaction existed.
        let files = vec![
            Listed { path: "hits/date=2026-01-01/hour=05/a.parquet".into(), size: 10, e_tag: Some("e1".into()) },
            Listed { path: "hits/date=2026-01-01/hour=05/b.parquet".into(), size: 11, e_tag: None },
        ];
        let mut h = blake3::Hasher::new();
        for f in &files {
            h.update(f.path.as_bytes());
            h.update(&f.size.to_le_bytes());
            h.update(f.e_tag.as_deref().unwrap_or("").as_bytes());
            h.update(b"\n");
        }
        assert_eq!(hour_fingerprint(&files), *h.finalize().as_bytes());
    }
}
