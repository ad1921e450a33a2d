//! The lake's tables for the SQL engine: the local paths of the report tables' files of a
//! window (only the date folders a query needs), of the raw hits, and the registry's rows;
//! and the raw hits as a polars lazy frame for `explain`.
//!
//! A local lake is scanned in place. Files of any other store are downloaded once into a
//! temporary folder that lives as long as the [`Source`], so DuckDB and polars need no
//! object-store client and its credentials. Every report file's Parquet footer is read
//! before the scan, so a truncated or foreign file is named instead of failing anonymously
//! in the middle of a query.
//!
//! From a remote lake, a statement that names every column it reads (see
//! `engine::names_its_columns`) fetches only those columns: the footer first, then each row
//! group's chunks of those columns (with their bloom filters and page indexes) by range,
//! written at their offsets into a local file of the object's size. The footer stays the
//! object's own, so the copy is a valid Parquet file whose other columns are holes, and the
//! views over it expose only the fetched columns: a column that was not fetched cannot be
//! read as anything, not even as null.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use lake::layout::{PARQUET_EXT, REPORTS_DIR};
use lake::registry;
use lake::window::Window;
use lake::Lake;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use polars::prelude::*;

/// How many downloads run at once from a remote lake.
const FETCH_CONCURRENCY: usize = 8;

/// Reads tables out of one lake.
pub struct Source {
    lake: Lake,
    tmp: Mutex<Option<tempfile::TempDir>>,
    /// Things that must outlive the scans (the hits' temporary copies).
    keep: Mutex<Vec<pipeline::read::Inputs>>,
    /// Bytes read from a remote lake's Parquet files so far.
    fetched: AtomicU64,
}

impl Source {
    pub fn new(lake: Lake) -> Source {
        Source { lake, tmp: Mutex::new(None), keep: Mutex::new(Vec::new()), fetched: AtomicU64::new(0) }
    }

    /// Bytes of Parquet files fetched from a remote lake so far (0 for a local lake, which
    /// is scanned in place).
    pub fn bytes_fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The report files of `window`'s `table`, by date.
    pub async fn report_files(&self, window: &Window, table: &str) -> Result<BTreeMap<NaiveDate, Vec<Path>>> {
        let prefix = Path::from(format!("{REPORTS_DIR}/window={window}/{table}"));
        let metas: Vec<_> = self
            .lake
            .store()
            .list(Some(&prefix))
            .try_collect()
            .await
            .with_context(|| format!("listing {prefix} in lake {}", self.lake.url()))?;
        let mut out: BTreeMap<NaiveDate, Vec<Path>> = BTreeMap::new();
        for m in metas {
            if !m.location.as_ref().ends_with(PARQUET_EXT) {
                continue;
            }
            let date = m.location.parts().find_map(|p| {
                p.as_ref().strip_prefix("date=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            });
            if let Some(date) = date {
                out.entry(date).or_default().push(m.location);
            }
        }
        Ok(out)
    }

    /// The dates `window` has reports for (its `clicks` table: the pipeline writes the four
    /// tables of a date together).
    pub async fn report_dates(&self, window: &Window) -> Result<BTreeSet<NaiveDate>> {
        Ok(self.report_files(window, lake::layout::TABLE_CLICKS).await?.into_keys().collect())
    }

    /// Whether the lake holds any hits file.
    pub async fn scan_hits_listing(&self) -> Result<bool> {
        let prefix = Path::from(lake::layout::HITS_DIR);
        let mut listing = self.lake.store().list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.with_context(|| format!("listing {prefix} in lake {}", self.lake.url()))?;
            if meta.location.as_ref().ends_with(PARQUET_EXT) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every window that has reports in the lake.
    pub async fn windows(&self) -> Result<Vec<Window>> {
        let listed = self
            .lake
            .store()
            .list_with_delimiter(Some(&Path::from(REPORTS_DIR)))
            .await
            .with_context(|| format!("listing {REPORTS_DIR} in lake {}", self.lake.url()))?;
        let mut out: Vec<Window> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().and_then(|f| f.strip_prefix("window=")).and_then(|w| w.parse().ok()))
            .collect();
        out.sort_by_key(|w| w.hours());
        Ok(out)
    }

    /// The report zone of `window`: the zone of its latest run (run ids start with their
    /// start time, so the greatest is the latest), UTC when it has none.
    pub async fn zone(&self, window: &Window) -> Result<chrono_tz::Tz> {
        Ok(self.computed_zone(window).await?.unwrap_or(chrono_tz::Tz::UTC))
    }

    /// The zone `window` was computed in, from its latest run manifest; `None`: no run yet.
    pub async fn computed_zone(&self, window: &Window) -> Result<Option<chrono_tz::Tz>> {
        let dir = lake::layout::runs_dir(window);
        let metas: Vec<_> = self
            .lake
            .store()
            .list(Some(&dir))
            .try_collect()
            .await
            .with_context(|| format!("listing {dir} in lake {}", self.lake.url()))?;
        let Some(latest) = metas.iter().map(|m| &m.location).filter(|p| p.as_ref().ends_with(".json")).max() else {
            return Ok(None);
        };
        let bytes = self.lake.get_optional(latest).await?.ok_or_else(|| anyhow!("run manifest {latest} vanished while read"))?;
        #[derive(serde::Deserialize)]
        struct Run {
            tz: String,
        }
        let run: Run = serde_json::from_slice(&bytes).with_context(|| format!("reading the run manifest {latest}"))?;
        pipeline::params::parse_tz(&run.tz).map(Some).with_context(|| format!("the zone of run manifest {latest}"))
    }

    /// Checks `--tz` (when given) against the zone `window` was computed in, and returns
    /// that zone's name for the note printed with every answer. The zone is the pipeline
    /// run's: a query can only read dates as they were computed.
    pub async fn check_zone(&self, window: &Window, tz_flag: Option<&str>) -> Result<String> {
        let computed = self.computed_zone(window).await?;
        if let Some(flag) = tz_flag {
            let want = pipeline::params::parse_tz(flag).map_err(|e| anyhow!("{e}"))?;
            match computed {
                None => anyhow::bail!("--tz {flag}: window {window} has no pipeline run yet, so there is no zone to check it against"),
                Some(z) if z != want => anyhow::bail!(
                    "--tz {flag}: window {window} was computed in {z} (its last pipeline run), so its dates are {z} dates; drop --tz, or compute the window in {flag} with `pipeline run --window {window} --tz {flag}`",
                    z = z.name()
                ),
                Some(_) => {}
            }
        }
        Ok(computed.map_or_else(|| "UTC".to_string(), |z| z.name().to_string()))
    }

    /// The raw hits whose `ts` falls on a UTC date in `from..=to` (every hit when `None`),
    /// lazily, with every column of the hit schema (a file missing an optional column reads
    /// it as null). Raw means raw: a retried upload shows twice; the pipeline deduplicates.
    pub async fn scan_hits(&self, range: Option<(NaiveDate, NaiveDate)>) -> Result<LazyFrame> {
        let micros = range.map(utc_micros);
        let files = pipeline::read::list_hits(&self.lake, micros).await?;
        let inputs = pipeline::read::fetch(&self.lake, files).await?;
        let (lo, hi) = micros.unwrap_or((i64::MIN, i64::MAX));
        let all: Vec<&pipeline::read::LocalFile> = inputs.files.iter().collect();
        let lf = pipeline::read::scan(&all, &lake::schema::hit::ALL, lo, hi)?;
        self.keep.lock().map_err(|_| anyhow!("source lock poisoned"))?.push(inputs);
        Ok(lf)
    }

    /// The local paths of `window`'s `table` files for the dates `from..=to` (fetched from a
    /// remote lake: only `columns`' chunks when given, whole files otherwise), each footer
    /// checked.
    pub async fn report_paths(
        &self,
        window: &Window,
        table: &str,
        from: NaiveDate,
        to: NaiveDate,
        columns: Option<&BTreeSet<String>>,
    ) -> Result<Vec<PathBuf>> {
        let files: Vec<Path> = self
            .report_files(window, table)
            .await?
            .into_iter()
            .filter(|(d, _)| *d >= from && *d <= to)
            .flat_map(|(_, f)| f)
            .collect();
        self.localize(files, columns).await
    }

    /// The local paths of the hits files that can hold a `ts` on a UTC date in `from..=to`
    /// (every hits file when `None`), kept (downloaded, or linked against a compaction under
    /// way) as long as this source lives. From a remote lake with `columns` given, only
    /// those columns' chunks are fetched; a file compacted away between the listing and its
    /// fetch makes the listing start again.
    pub async fn hits_paths(&self, range: Option<(NaiveDate, NaiveDate)>, columns: Option<&BTreeSet<String>>) -> Result<Vec<PathBuf>> {
        let micros = range.map(utc_micros);
        if let (None, Some(columns)) = (self.lake.local_root(), columns) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let files = pipeline::read::list_hits(&self.lake, micros).await?;
                let names: Vec<Path> = files.iter().map(|f| Path::from(f.path.as_str())).collect();
                match self.fetch_all_columns(names, columns).await {
                    Ok(pairs) => {
                        return checked(pairs, |name, local| pipeline::read::check_footer(name, local).map(|_| ()).map_err(|e| anyhow!("{e}"))).await;
                    }
                    Err(e) if attempt < 3 && is_not_found(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        let files = pipeline::read::list_hits(&self.lake, micros).await?;
        if self.lake.local_root().is_none() {
            self.fetched.fetch_add(files.iter().map(|f| f.size).sum::<u64>(), Ordering::Relaxed);
        }
        let inputs = pipeline::read::fetch(&self.lake, files).await?;
        let paths = inputs.files.iter().map(|f| f.local.clone()).collect();
        self.keep.lock().map_err(|_| anyhow!("source lock poisoned"))?.push(inputs);
        Ok(paths)
    }

    /// The registry as rows of text: offers (`offer_id, destination_url, currency,
    /// cookie_days`, never the postback token, a secret) and links (`code, offer_id,
    /// member_id, destination_url, created_at`). A lake without a registry has none.
    pub async fn registry_rows(&self) -> Result<(Vec<Vec<String>>, Vec<Vec<String>>)> {
        let offers = match self.lake.get_optional(&lake::layout::offers()).await? {
            Some(b) => registry::parse_offers(&b)?,
            None => Vec::new(),
        };
        let links = match self.lake.get_optional(&lake::layout::links()).await? {
            Some(b) => registry::parse_links(&b)?,
            None => Vec::new(),
        };
        let offers = offers
            .iter()
            .map(|o| vec![o.offer_id.clone(), o.destination_url.clone(), o.currency.clone(), o.cookie_days.to_string()])
            .collect();
        let links = links
            .iter()
            .map(|l| vec![l.code.clone(), l.offer_id.clone(), l.member_id.clone(), l.destination_url.clone(), l.created_at.clone()])
            .collect();
        Ok((offers, links))
    }

    /// The temporary folder for copies of a remote lake's files.
    fn tmp_dir(&self) -> Result<PathBuf> {
        let mut tmp = self.tmp.lock().map_err(|_| anyhow!("source lock poisoned"))?;
        if tmp.is_none() {
            *tmp = Some(tempfile::Builder::new().prefix("clicktrail-queries-").tempdir().context("creating a temporary folder")?);
        }
        Ok(tmp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_default())
    }

    /// Copies `files` of a remote lake with only `columns`' chunks, returning each file's
    /// local path. A copy made earlier by this source (another view of the same table, an
    /// earlier statement of a report) is used again.
    async fn fetch_all_columns(&self, files: Vec<Path>, columns: &BTreeSet<String>) -> Result<Vec<(Path, PathBuf)>> {
        let dir = self.tmp_dir()?;
        let tag = columns_tag(columns);
        futures::stream::iter(files)
            .map(|f| {
                let local = dir.join(format!("{}.{tag}{PARQUET_EXT}", uuid_like(&f)));
                async move {
                    if tokio::fs::try_exists(&local).await.unwrap_or(false) {
                        return Ok((f, local));
                    }
                    let n = fetch_columns(self.lake.store(), &f, columns, &local).await?;
                    self.fetched.fetch_add(n, Ordering::Relaxed);
                    Ok::<_, anyhow::Error>((f, local))
                }
            })
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// Local paths of `files`, fetched from a remote lake (only `columns`' chunks when
    /// given), each footer checked.
    async fn localize(&self, files: Vec<Path>, columns: Option<&BTreeSet<String>>) -> Result<Vec<PathBuf>> {
        let pairs: Vec<(Path, PathBuf)> = match (self.lake.local_root(), columns) {
            (Some(_), _) => files.into_iter().map(|f| (f.clone(), self.lake.local_path(&f).unwrap_or_default())).collect(),
            (None, Some(columns)) => self.fetch_all_columns(files, columns).await?,
            (None, None) => {
                let dir = self.tmp_dir()?;
                futures::stream::iter(files)
                    .map(|f| {
                        let local = dir.join(format!("{}{PARQUET_EXT}", uuid_like(&f)));
                        async move {
                            pipeline::read::download(&self.lake, f.as_ref(), &local).await?;
                            let size = tokio::fs::metadata(&local).await.map(|m| m.len()).unwrap_or(0);
                            self.fetched.fetch_add(size, Ordering::Relaxed);
                            Ok::<_, anyhow::Error>((f, local))
                        }
                    })
                    .buffered(FETCH_CONCURRENCY)
                    .try_collect()
                    .await?
            }
        };
        checked(pairs, check_footer).await
    }
}

/// The UTC dates `from..=to` as `[start, end)` in µs since the epoch.
fn utc_micros((from, to): (NaiveDate, NaiveDate)) -> (i64, i64) {
    let lo = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
    let hi = to.succ_opt().unwrap_or(to).and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
    (lo, hi)
}

/// The local paths of `pairs` (a lake path and its local copy), each copy's footer checked
/// by `check` off the async threads.
async fn checked(pairs: Vec<(Path, PathBuf)>, check: fn(&str, &std::path::Path) -> Result<()>) -> Result<Vec<PathBuf>> {
    tokio::task::spawn_blocking(move || {
        for (name, local) in &pairs {
            check(name.as_ref(), local)?;
        }
        Ok::<_, anyhow::Error>(pairs.into_iter().map(|(_, l)| l).collect())
    })
    .await
    .map_err(|e| anyhow!("footer check stopped: {e}"))?
}

/// Whether `e` is an object that is not (any longer) in the store.
fn is_not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| matches!(c.downcast_ref::<object_store::Error>(), Some(object_store::Error::NotFound { .. })))
}

/// A short, stable name for a column set (copies of one object with other columns differ).
fn columns_tag(columns: &BTreeSet<String>) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    columns.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// How many bytes of an object's end are fetched first: its footer, usually whole.
const TAIL_GUESS: u64 = 64 * 1024;

/// Copies the Parquet object `path` into `local` with only the chunks of `columns` (top-level
/// column names), their bloom filters and page indexes, the header magic and the footer,
/// each at its offset in a file of the object's size; the rest is a hole. Returns the bytes
/// fetched. The ranges come from the object's own footer, so a column chunk is either
/// copied whole or not at all; the copy is written under another name and renamed, so a
/// file at `local` is a whole copy.
async fn fetch_columns(store: &Arc<dyn ObjectStore>, path: &Path, columns: &BTreeSet<String>, local: &std::path::Path) -> Result<u64> {
    use parquet::file::metadata::{FooterTail, ParquetMetaDataReader};
    let bad = |why: String| anyhow!("lake file {path} is not a valid Parquet file ({why})");
    let got = store
        .get_opts(path, GetOptions { range: Some(GetRange::Suffix(TAIL_GUESS)), ..Default::default() })
        .await
        .with_context(|| format!("reading lake file {path}"))?;
    let size = got.meta.size;
    let mut tail_start = got.range.start;
    let mut tail = got.bytes().await.with_context(|| format!("reading lake file {path}"))?;
    let mut fetched = tail.len() as u64;
    if size < 12 || tail.len() < 8 {
        return Err(bad(format!("{size} bytes")));
    }
    let mut last8 = [0u8; 8];
    last8.copy_from_slice(&tail[tail.len() - 8..]);
    let foot = FooterTail::try_new(&last8).map_err(|e| bad(e.to_string()))?;
    if foot.is_encrypted_footer() {
        return Err(bad("its footer is encrypted".into()));
    }
    let meta_len = foot.metadata_length() as u64;
    if meta_len + 12 > size {
        return Err(bad(format!("a footer of {meta_len} bytes in {size}")));
    }
    let footer_start = size - 8 - meta_len;
    if footer_start < tail_start {
        tail = store.get_range(path, footer_start..size).await.with_context(|| format!("reading lake file {path}"))?;
        fetched += tail.len() as u64;
        tail_start = footer_start;
    }
    let footer = &tail[(footer_start - tail_start) as usize..tail.len() - 8];
    let meta = ParquetMetaDataReader::decode_metadata(footer).map_err(|e| bad(e.to_string()))?;
    // The header magic, then the chunks.
    let mut ranges: Vec<std::ops::Range<u64>> = Vec::with_capacity(1 + meta.num_row_groups() * columns.len() * 4);
    ranges.push(0..4);
    let in_file = |start: i64, len: i64| -> Result<std::ops::Range<u64>> {
        let (s, l) = (u64::try_from(start).ok(), u64::try_from(len).ok());
        match (s, l) {
            (Some(s), Some(l)) if s.checked_add(l).is_some_and(|e| e <= footer_start) => Ok(s..s + l),
            _ => Err(bad(format!("a column range of {len} bytes at {start}, outside its {footer_start} data bytes"))),
        }
    };
    for rg in meta.row_groups() {
        for c in rg.columns() {
            let top = c.column_path().parts().first().map(|p| p.to_ascii_lowercase());
            if !top.is_some_and(|t| columns.contains(&t)) {
                continue;
            }
            let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
            ranges.push(in_file(start, c.compressed_size())?);
            if let (Some(o), Some(l)) = (c.bloom_filter_offset(), c.bloom_filter_length()) {
                ranges.push(in_file(o, i64::from(l))?);
            }
            for r in [c.column_index_range(), c.offset_index_range()].into_iter().flatten() {
                ranges.push(in_file(r.start as i64, (r.end - r.start) as i64)?);
            }
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let parts = store.get_ranges(path, &merged).await.with_context(|| format!("reading lake file {path}"))?;
    fetched += parts.iter().map(|p| p.len() as u64).sum::<u64>();
    let local = local.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let part = local.with_extension("part");
        let mut f = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        f.set_len(size).with_context(|| format!("sizing {}", part.display()))?;
        for (r, bytes) in merged.iter().map(|r| r.start).zip(parts.iter()).chain(std::iter::once((tail_start, &tail))) {
            f.seek(SeekFrom::Start(r)).and_then(|_| f.write_all(bytes)).with_context(|| format!("writing {}", part.display()))?;
        }
        std::fs::rename(&part, &local).with_context(|| format!("renaming {} to {}", part.display(), local.display()))
    })
    .await
    .map_err(|e| anyhow!("copy of {path} stopped: {e}"))??;
    Ok(fetched)
}

/// A file name for a downloaded object: its path with separators replaced.
fn uuid_like(path: &Path) -> String {
    path.as_ref().replace(['/', '='], "_")
}

/// Reads a report file's Parquet footer, naming the file when it is not Parquet.
fn check_footer(name: &str, local: &std::path::Path) -> Result<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(local).with_context(|| format!("report file {name}"))?;
    let reader = SerializedFileReader::new(file).map_err(|e| anyhow!("report file {name} is not a valid Parquet file ({e})"))?;
    let _ = reader.metadata().file_metadata().num_rows();
    Ok(())
}
