//! The sink: sealed spool segments → Parquet files in the lake, one file per UTC hour a
//! segment spans, at `hits/date=D/hour=H/<segment id>.parquet`. The name comes from the
//! segment, so a retried upload (after a crash or an outage) overwrites the same object
//! with the same rows instead of adding a duplicate. A segment is deleted only after every
//! one of its files is durable in the lake. A segment is streamed: read a chunk at a time
//! and written a row group at a time, so the sink's memory does not grow with it.

use std::collections::BTreeMap;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use lake::schema::{hit, hit_schema};
use lake::{layout, Lake};
use object_store::buffered::BufWriter;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use tokio::sync::watch;

use crate::hit::{Hit, HitBatchBuilder, HitRef};
use crate::metrics::Metrics;
use crate::spool::{SegmentReader, Spool};

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

/// Rows per row group of a hits file: the sink holds at most this many rows of each file
/// it writes (and a chunk of the segment it reads), whatever the segment's size.
pub const ROW_GROUP_ROWS: usize = 32 * 1024;

/// Hits decoded from a segment per step (on a blocking thread).
const READ_CHUNK: usize = 4096;

/// A hits file being written, one row group at a time: rows are gathered into Arrow
/// columns and encoded as a row group when [`ROW_GROUP_ROWS`] have come, and the encoded
/// bytes go on to the store (in parts, past the buffered writer's capacity).
pub struct HitsFileWriter {
    object: object_store::path::Path,
    rows: HitBatchBuilder,
    writer: AsyncArrowWriter<BufWriter>,
    written: usize,
}

impl HitsFileWriter {
    pub fn create(lake: &Lake, object: object_store::path::Path) -> Result<HitsFileWriter, SinkError> {
        let out = BufWriter::new(lake.store().clone(), object.clone());
        let writer = AsyncArrowWriter::try_new(out, hit_schema(), Some(writer_properties()))
            .map_err(|e| SinkError::Upload { path: object.to_string(), message: e.to_string() })?;
        Ok(HitsFileWriter { object, rows: HitBatchBuilder::with_capacity(ROW_GROUP_ROWS), writer, written: 0 })
    }

    fn error(&self, e: impl std::fmt::Display) -> SinkError {
        SinkError::Upload { path: self.object.to_string(), message: e.to_string() }
    }

    /// Adds a hit; a full row group is encoded and passed on at once.
    pub async fn push(&mut self, hit: &Hit) -> Result<(), SinkError> {
        self.rows.push(hit);
        if self.rows.len() >= ROW_GROUP_ROWS {
            self.write_row_group().await?;
        }
        Ok(())
    }

    /// Adds a hit read in place; the caller writes the row group when [`Self::is_full`].
    pub fn push_ref(&mut self, hit: &HitRef<'_>) {
        self.rows.push_ref(hit);
    }

    /// A row group's worth of rows is waiting.
    pub fn is_full(&self) -> bool {
        self.rows.len() >= ROW_GROUP_ROWS
    }

    async fn write_row_group(&mut self) -> Result<(), SinkError> {
        let batch = self.rows.finish().map_err(|e| self.error(e))?;
        self.written += batch.num_rows();
        self.writer.write(&batch).await.map_err(|e| self.error(e))?;
        // The row group is complete: encode it and hand its bytes on now, rather than
        // when the writer's own limit (a million rows) is reached.
        self.writer.flush().await.map_err(|e| self.error(e))
    }

    /// Writes the last row group and the footer and returns, with the rows written, once
    /// the file is durable in the lake.
    pub async fn finish(mut self, lake: &Lake) -> Result<usize, SinkError> {
        if !self.rows.is_empty() {
            self.write_row_group().await?;
        }
        let writer = self.writer;
        let object = self.object;
        let up_err = |e: String| SinkError::Upload { path: object.to_string(), message: e };
        writer.close().await.map_err(|e| up_err(e.to_string()))?;
        lake.make_durable(&object).await.map_err(|e| up_err(e.to_string()))?;
        Ok(self.written)
    }
}

/// Writes `hits` (all of one UTC hour) as one Parquet file of the hit schema at `object`
/// and returns once it is durable. Also used by `collector adjustments import`.
pub async fn write_hits_file(lake: &Lake, object: &object_store::path::Path, hits: &[&Hit]) -> Result<(), SinkError> {
    let mut file = HitsFileWriter::create(lake, object.clone())?;
    for hit in hits {
        file.push(hit).await?;
    }
    file.finish(lake).await?;
    Ok(())
}

/// One step of a segment's upload, on a blocking thread: reads up to [`READ_CHUNK`] hits
/// into their hours' files, stopping early when a file has a row group to write. Returns
/// the hits read and whether the segment has more.
fn read_chunk(reader: &mut SegmentReader, files: &mut BTreeMap<i64, HitsFileWriter>, lake: &Lake, segment: &str) -> Result<(usize, bool), SinkError> {
    let seg_err = |source| SinkError::Segment { path: segment.to_string(), source };
    let mut read = 0;
    while read < READ_CHUNK {
        let mut full = false;
        let placed = reader
            .next_with(|hit| {
                let file = match files.entry(hit.hour_bucket()) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let ts = Utc.timestamp_micros(*e.key()).single().unwrap_or_default();
                        e.insert(HitsFileWriter::create(lake, layout::hits_file(ts, segment))?)
                    }
                };
                file.push_ref(hit);
                full = file.is_full();
                Ok::<_, SinkError>(())
            })
            .map_err(seg_err)?;
        match placed {
            None => return Ok((read, false)),
            Some(result) => result?,
        }
        read += 1;
        if full {
            break;
        }
    }
    Ok((read, true))
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
    let mut props = WriterProperties::builder();
    // Ids unique to a hit (or nearly: a visitor's clicks in one segment) gain nothing from a
    // dictionary, whose building was about a tenth of the sink's work: written plain.
    for unique in [hit::HIT_ID, hit::CLICK_ID, hit::VISITOR_ID] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    props
        // Level 1: the sink runs on the cores that answer clicks, and level 3 cost it
        // about a tenth of the collector's instructions per click for files a little smaller.
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
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

    /// Uploads one sealed segment: read a chunk at a time on a blocking thread, each hit
    /// put straight from the segment's bytes into the columns of the file of its UTC hour,
    /// each file written a row group at a time (so memory holds a chunk's read buffer and at
    /// most a row group per hour, not the segment). Rows keep the segment's order, the
    /// order of arrival. The same segment always gives the same files.
    async fn upload_segment(&self, path: &FsPath) -> Result<usize, SinkError> {
        let seg_err = |source| SinkError::Segment { path: path.display().to_string(), source };
        let join_err = |e: tokio::task::JoinError| seg_err(std::io::Error::other(e));
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let owned = path.to_path_buf();
        let mut reader = tokio::task::spawn_blocking(move || SegmentReader::open(&owned)).await.map_err(join_err)?.map_err(seg_err)?;
        let mut files: BTreeMap<i64, HitsFileWriter> = BTreeMap::new();
        let mut total = 0;
        loop {
            let (lake, segment) = (self.lake.clone(), id.clone());
            let step = tokio::task::spawn_blocking(move || {
                let result = read_chunk(&mut reader, &mut files, &lake, &segment);
                (reader, files, result)
            });
            let (r, f, result) = step.await.map_err(join_err)?;
            (reader, files) = (r, f);
            let (read, more) = result?;
            total += read;
            for file in files.values_mut().filter(|f| f.is_full()) {
                file.write_row_group().await?;
            }
            if !more {
                break;
            }
        }
        for file in files.into_values() {
            file.finish(&self.lake).await?;
        }
        let corrupt_tail = reader.corrupt_tail();
        if corrupt_tail > 0 {
            // Keep the unreadable bytes for an operator rather than deleting them.
            let keep = path.with_extension("corrupt");
            tracing::error!(segment = %path.display(), bytes = corrupt_tail, kept = %keep.display(), "spool segment has an unreadable tail; uploaded what was readable");
            self.spool.set_aside_segment(path, &keep).map_err(seg_err)?;
        } else {
            self.spool.remove_segment(path).map_err(seg_err)?;
        }
        self.metrics.uploaded(total as u64);
        tracing::debug!(segment = %id, hits = total, "uploaded spool segment");
        Ok(total)
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::Array;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use lake::schema::HitKind;
    use object_store::ObjectStoreExt;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// Hit `i` of a test segment, with every column set to a value of its own.
    fn hit(i: usize, ts: i64) -> Hit {
        let mut h = Hit::new(if i.is_multiple_of(2) { HitKind::Click } else { HitKind::Postback }, format!("offer{}", i % 3));
        h.ts = ts;
        h.member_id = Some(format!("m{i}"));
        h.link_code = Some(format!("c{i}"));
        h.click_id = Some(crate::hit::uuid_v7(ts));
        h.visitor_id = Some(format!("v{i}"));
        h.event = (i % 2 == 1).then(|| "purchase".to_string());
        h.order_id = (i % 2 == 1).then(|| format!("o{i}"));
        h.amount_micros = (i % 2 == 1).then_some(i as i64 * 10);
        h.currency = Some("EUR".into());
        h.user_agent = Some(format!("ua{i}"));
        h.referer = i.is_multiple_of(5).then(|| format!("https://r.example/{i}"));
        h.ip_hash = Some(format!("{i:032x}"));
        h.params = Some(format!("utm_source={i}"));
        h.action = i.is_multiple_of(7).then(|| "refund".to_string());
        h.adjustment_id = i.is_multiple_of(7).then(|| format!("a{i}"));
        h.coupon = i.is_multiple_of(11).then(|| format!("C{i}"));
        h
    }

    /// Reads a hits file back: its row groups' sizes and its rows, column by column, by name.
    async fn read_back(lake: &Lake, object: &object_store::path::Path) -> (Vec<i64>, Vec<Hit>) {
        let bytes = lake.store().get(object).await.unwrap().bytes().await.unwrap();
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        let groups = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        // The SPEC §2 schema: names, types and nullability, in order.
        let schema = builder.schema().clone();
        let expected = hit_schema();
        assert_eq!(schema.fields().len(), expected.fields().len());
        for (got, want) in schema.fields().iter().zip(expected.fields()) {
            assert_eq!((got.name(), got.data_type(), got.is_nullable()), (want.name(), want.data_type(), want.is_nullable()));
        }
        let mut hits = Vec::new();
        for batch in builder.build().unwrap() {
            let batch = batch.unwrap();
            let s = |name: &str, row: usize| {
                let col = batch.column_by_name(name).unwrap().as_string::<i32>();
                col.is_valid(row).then(|| col.value(row).to_string())
            };
            let ts = batch.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>();
            let amount = batch.column_by_name("amount_micros").unwrap().as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                let kind = match s("kind", row).unwrap().as_str() {
                    "click" => HitKind::Click,
                    "postback" => HitKind::Postback,
                    other => panic!("kind {other}"),
                };
                let mut h = Hit::new(kind, s("offer_id", row).unwrap());
                h.hit_id = s("hit_id", row).unwrap();
                h.ts = ts.value(row);
                h.member_id = s("member_id", row);
                h.link_code = s("link_code", row);
                h.click_id = s("click_id", row);
                h.visitor_id = s("visitor_id", row);
                h.event = s("event", row);
                h.order_id = s("order_id", row);
                h.amount_micros = amount.is_valid(row).then(|| amount.value(row));
                h.currency = s("currency", row);
                h.user_agent = s("user_agent", row);
                h.referer = s("referer", row);
                h.ip_hash = s("ip_hash", row);
                h.params = s("params", row);
                h.action = s("action", row);
                h.adjustment_id = s("adjustment_id", row);
                h.coupon = s("coupon", row);
                hits.push(h);
            }
        }
        (groups, hits)
    }

    #[tokio::test]
    async fn a_hits_file_is_written_a_row_group_at_a_time() {
        let lake = Lake::open("memory://sink-row-groups").unwrap();
        let object = object_store::path::Path::from("hits/date=2026-01-01/hour=00/t.parquet");
        let mut file = HitsFileWriter::create(&lake, object.clone()).unwrap();
        let n = 2 * ROW_GROUP_ROWS + 5;
        let hits: Vec<Hit> = (0..n).map(|i| hit(i, 1_767_225_600_000_000 + i as i64)).collect();
        for (i, h) in hits.iter().enumerate() {
            file.push(h).await.unwrap();
            // Each row group is encoded and handed on as soon as it is full: the writer
            // never holds more than one row group of rows.
            assert_eq!(file.writer.flushed_row_groups().len(), (i + 1) / ROW_GROUP_ROWS);
            assert!(file.rows.len() < ROW_GROUP_ROWS);
        }
        assert!(file.writer.bytes_written() > 0);
        assert_eq!(file.finish(&lake).await.unwrap(), n);
        let (groups, back) = read_back(&lake, &object).await;
        assert_eq!(groups, vec![ROW_GROUP_ROWS as i64, ROW_GROUP_ROWS as i64, 5]);
        assert_eq!(back, hits);
    }

    #[tokio::test]
    async fn a_large_segment_streams_into_one_valid_file_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().join("lake").to_str().unwrap()).unwrap();
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        // A segment across an hour boundary, larger than a row group on either side, and in
        // arrival order (its timestamps cross a little, as concurrent appends do).
        let start = 1_767_229_200_000_000 - 40_000 * 1000; // 2026-01-01 01:00:00 UTC, less 40 s
        let n = ROW_GROUP_ROWS * 2 + 1000;
        let hits: Vec<Hit> = (0..n).map(|i| hit(i, start + (i as i64) * 1000 - (i as i64 % 3) * 700)).collect();
        let id = uuid::Uuid::now_v7().to_string();
        let bytes: Vec<u8> = hits.iter().flat_map(crate::spool::encode_frame).collect();
        std::fs::write(spool_dir.join(format!("{id}.sealed")), bytes).unwrap();
        let spool = Spool::open(&spool_dir, 1 << 30).unwrap();
        let sink = Sink::new(lake.clone(), spool.clone(), Arc::new(Metrics::new()));
        assert_eq!(sink.upload_sealed().await.unwrap(), n);
        assert!(spool.sealed_segments().unwrap().is_empty());
        let mut all = Vec::new();
        for hour in [0, 1] {
            let first_hour = start.div_euclid(lake::window::MICROS_PER_HOUR) * lake::window::MICROS_PER_HOUR;
            let ts = Utc.timestamp_micros(first_hour + hour * lake::window::MICROS_PER_HOUR).single().unwrap();
            let (groups, back) = read_back(&lake, &layout::hits_file(ts, &id)).await;
            assert!(groups.iter().all(|&g| g as usize <= ROW_GROUP_ROWS), "{groups:?}");
            assert_eq!(groups.iter().sum::<i64>() as usize, back.len());
            assert!(back.iter().all(|h| h.hour_bucket() == ts.timestamp_micros()));
            all.extend(back);
        }
        // Every hit once, in its hour.
        let mut want = hits.clone();
        want.sort_by(|a, b| a.hit_id.cmp(&b.hit_id));
        all.sort_by(|a, b| a.hit_id.cmp(&b.hit_id));
        assert_eq!(all, want);
    }
}
