//! The sink: sealed spool segments → Parquet files in the lake, one file per UTC hour a
//! segment spans, at `hits/date=D/hour=H/<segment id>.parquet`. The name comes from the
//! segment, so a retried upload (after a crash or an outage) overwrites the same object
//! with the same rows instead of adding a duplicate. A segment is deleted only after every
//! one of its files is durable in the lake.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lake::{layout, Lake};
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tokio::sync::watch;

use crate::hit::{to_record_batch, Hit};
use crate::metrics::Metrics;
use crate::spool::{read_segment, Spool};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("reading spool segment {path}: {source}")]
    Segment {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path} to the lake: {message}")]
    Upload { path: String, message: String },
    #[error(transparent)]
    Spool(#[from] crate::spool::SpoolError),
}

/// Writes `hits` (all of one UTC hour) as one Parquet file of the hit schema at `object`
/// and returns once it is durable. Also used by `collector adjustments import`.
pub async fn write_hits_file(lake: &Lake, object: &object_store::path::Path, hits: &[&Hit]) -> Result<(), SinkError> {
    let up_err = |message: String| SinkError::Upload { path: object.to_string(), message };
    let batch = to_record_batch(hits).map_err(|e| up_err(e.to_string()))?;
    let out = BufWriter::new(lake.store().clone(), object.clone());
    let mut writer = AsyncArrowWriter::try_new(out, batch.schema(), Some(writer_properties())).map_err(|e| up_err(e.to_string()))?;
    writer.write(&batch).await.map_err(|e| up_err(e.to_string()))?;
    writer.close().await.map_err(|e| up_err(e.to_string()))?;
    lake.make_durable(object).await.map_err(|e| up_err(e.to_string()))?;
    Ok(())
}

/// Least time between two flushes started because the spool refused hits.
pub const KICK_SPACING: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Sink {
    lake: Lake,
    spool: Spool,
    metrics: Arc<Metrics>,
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        .build()
}

impl Sink {
    pub fn new(lake: Lake, spool: Spool, metrics: Arc<Metrics>) -> Sink {
        Sink { lake, spool, metrics }
    }

    /// Seals the active segment and uploads every sealed segment. Returns the hits uploaded.
    pub async fn flush(&self) -> Result<usize, SinkError> {
        self.spool.rotate().await?;
        self.upload_sealed().await
    }

    /// Uploads every sealed segment, oldest first; stops at the first failure (the rest
    /// wait for the next try).
    pub async fn upload_sealed(&self) -> Result<usize, SinkError> {
        let segments = self.spool.sealed_segments().map_err(|source| SinkError::Segment {
            path: self.spool.dir().display().to_string(),
            source,
        })?;
        let mut total = 0;
        for seg in segments {
            total += self.upload_segment(&seg).await?;
        }
        Ok(total)
    }

    async fn upload_segment(&self, path: &FsPath) -> Result<usize, SinkError> {
        let seg_err = |source| SinkError::Segment { path: path.display().to_string(), source };
        let owned = path.to_path_buf();
        let segment = tokio::task::spawn_blocking(move || read_segment(&owned))
            .await
            .map_err(|e| seg_err(std::io::Error::other(e)))?
            .map_err(seg_err)?;
        let id = segment.id();
        let mut by_hour: BTreeMap<i64, Vec<&Hit>> = BTreeMap::new();
        for hit in &segment.hits {
            by_hour.entry(hit.hour_bucket()).or_default().push(hit);
        }
        for (hour, mut hits) in by_hour {
            hits.sort_by(|a, b| (a.ts, &a.hit_id).cmp(&(b.ts, &b.hit_id)));
            let ts = Utc.timestamp_micros(hour).single().unwrap_or_default();
            let object = layout::hits_file(ts, &id);
            self.write_parquet(&object, &hits).await?;
        }
        if segment.corrupt_tail > 0 {
            // Keep the unreadable bytes for an operator rather than deleting them.
            let keep = path.with_extension("corrupt");
            tracing::error!(segment = %path.display(), bytes = segment.corrupt_tail, kept = %keep.display(), "spool segment has an unreadable tail; uploaded what was readable");
            self.spool.set_aside_segment(path, &keep).map_err(seg_err)?;
        } else {
            self.spool.remove_segment(path).map_err(seg_err)?;
        }
        self.metrics.uploaded(segment.hits.len() as u64);
        tracing::debug!(segment = %id, hits = segment.hits.len(), "uploaded spool segment");
        Ok(segment.hits.len())
    }

    async fn write_parquet(&self, object: &object_store::path::Path, hits: &[&Hit]) -> Result<(), SinkError> {
        write_hits_file(&self.lake, object, hits).await
    }

    /// Flushes every `interval` until `shutdown` turns true; failed uploads are retried
    /// with a backoff from 1 s up to `interval`, while the spool keeps accepting hits.
    /// When the spool refuses a hit (full, or its disk is), it flushes at once instead of
    /// at the next interval, so hits are taken again as soon as the lake has the data;
    /// while uploads fail, the backoff paces the retries, each of which then flushes.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        let min_backoff = Duration::from_secs(1).min(interval);
        let mut backoff = min_backoff;
        let mut healthy = true;
        let mut next_flush = tokio::time::Instant::now() + interval;
        let mut last_try = tokio::time::Instant::now();
        // The first pass runs at once: it uploads whatever an earlier process left.
        let mut next_try = tokio::time::Instant::now();
        loop {
            let (spool, listen) = (&self.spool, healthy);
            let refused = async move {
                if listen {
                    spool.refused().await;
                } else {
                    // The backoff retry comes first; it flushes if the spool still refuses.
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(next_try) => {}
                _ = refused => {
                    // Refusals arrive at request rate: at most one flush per KICK_SPACING.
                    tokio::select! {
                        _ = tokio::time::sleep_until(last_try + KICK_SPACING) => {}
                        _ = shutdown.changed() => return,
                    }
                    tracing::debug!("spool refuses hits: flushing it to the lake now");
                }
                _ = shutdown.changed() => return,
            }
            let now = tokio::time::Instant::now();
            last_try = now;
            let scheduled = now >= next_flush;
            let result = if scheduled || self.spool.is_refusing() { self.flush().await } else { self.upload_sealed().await };
            if scheduled {
                next_flush = now + interval;
            }
            match result {
                Ok(_) => {
                    healthy = true;
                    backoff = min_backoff;
                    next_try = next_flush;
                }
                Err(e) => {
                    healthy = false;
                    self.metrics.upload_failed();
                    tracing::warn!(error = %e, retry_in = ?backoff, "upload to the lake failed; hits stay in the spool");
                    next_try = (now + backoff).min(next_flush);
                    backoff = (backoff * 2).min(interval);
                }
            }
        }
    }
}
