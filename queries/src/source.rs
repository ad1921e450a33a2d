//! The lake's tables for the SQL engine: the local paths of the report tables' files of a
//! window (only the date folders a query needs), of the raw hits, and the registry's rows;
//! and the raw hits as a polars lazy frame for `explain`.
//!
//! A local lake is scanned in place. Files of any other store are downloaded once into a
//! temporary folder that lives as long as the [`Source`], so DuckDB and polars need no
//! object-store client and its credentials. Every report file's Parquet footer is read
//! before the scan, so a truncated or foreign file is named instead of failing anonymously
//! in the middle of a query.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use lake::layout::{PARQUET_EXT, REPORTS_DIR};
use lake::registry;
use lake::window::Window;
use lake::Lake;
use object_store::path::Path;
use polars::prelude::*;

/// How many downloads run at once from a remote lake.
const FETCH_CONCURRENCY: usize = 8;

/// Reads tables out of one lake.
pub struct Source {
    lake: Lake,
    tmp: Mutex<Option<tempfile::TempDir>>,
    /// Things that must outlive the scans (the hits' temporary copies).
    keep: Mutex<Vec<pipeline::read::Inputs>>,
}

impl Source {
    pub fn new(lake: Lake) -> Source {
        Source { lake, tmp: Mutex::new(None), keep: Mutex::new(Vec::new()) }
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

    /// The local paths of `window`'s `table` files for the dates `from..=to` (downloaded
    /// from a remote lake), each footer checked.
    pub async fn report_paths(&self, window: &Window, table: &str, from: NaiveDate, to: NaiveDate) -> Result<Vec<PathBuf>> {
        let files: Vec<Path> = self
            .report_files(window, table)
            .await?
            .into_iter()
            .filter(|(d, _)| *d >= from && *d <= to)
            .flat_map(|(_, f)| f)
            .collect();
        self.localize(files).await
    }

    /// The local paths of the hits files that can hold a `ts` on a UTC date in `from..=to`
    /// (every hits file when `None`), kept (downloaded, or linked against a compaction under
    /// way) as long as this source lives.
    pub async fn hits_paths(&self, range: Option<(NaiveDate, NaiveDate)>) -> Result<Vec<PathBuf>> {
        let micros = range.map(utc_micros);
        let files = pipeline::read::list_hits(&self.lake, micros).await?;
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

    /// Local paths of `files`, downloading them from a remote lake, each footer checked.
    async fn localize(&self, files: Vec<Path>) -> Result<Vec<PathBuf>> {
        let pairs: Vec<(Path, PathBuf)> = match self.lake.local_root() {
            Some(_) => files.into_iter().map(|f| (f.clone(), self.lake.local_path(&f).unwrap_or_default())).collect(),
            None => {
                let dir = {
                    let mut tmp = self.tmp.lock().map_err(|_| anyhow!("source lock poisoned"))?;
                    if tmp.is_none() {
                        *tmp = Some(tempfile::Builder::new().prefix("clicktrail-queries-").tempdir().context("creating a temporary folder")?);
                    }
                    tmp.as_ref().map(|t| t.path().to_path_buf()).unwrap_or_default()
                };
                futures::stream::iter(files)
                    .map(|f| {
                        let local = dir.join(format!("{}{PARQUET_EXT}", uuid_like(&f)));
                        async move {
                            pipeline::read::download(&self.lake, f.as_ref(), &local).await?;
                            Ok::<_, anyhow::Error>((f, local))
                        }
                    })
                    .buffered(FETCH_CONCURRENCY)
                    .try_collect()
                    .await?
            }
        };
        tokio::task::spawn_blocking(move || {
            for (name, local) in &pairs {
                check_footer(name.as_ref(), local)?;
            }
            Ok::<_, anyhow::Error>(pairs.into_iter().map(|(_, l)| l).collect())
        })
        .await
        .map_err(|e| anyhow!("footer check stopped: {e}"))?
    }
}

/// The UTC dates `from..=to` as `[start, end)` in µs since the epoch.
fn utc_micros((from, to): (NaiveDate, NaiveDate)) -> (i64, i64) {
    let lo = from.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
    let hi = to.succ_opt().unwrap_or(to).and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp_micros();
    (lo, hi)
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
