//! The durable spool: every acknowledged hit is in an append-only local segment file
//! before its answer leaves. Handlers append their frame to the active segment themselves
//! (one small `write` into the page cache, under a mutex), so a click or pixel is written
//! before it is answered without a hand-off to another thread; a syncer thread fsyncs in
//! groups: written data within [`SYNC_DELAY`] (well inside the 50 ms the contract allows),
//! and at once when a postback waits, which is answered only after the fsync that covers it.
//!
//! Segments are sealed (renamed `.open` → `.sealed`) on rotation; the sink turns sealed
//! segments into Parquet in the lake and deletes them only after the upload is durable.
//! On start, whatever an earlier process left, `.open` or `.sealed`, is recovered:
//! a torn last record (a write cut by `kill -9`; never acknowledged) is cut off.

mod segment;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hit::Hit;
pub use segment::{encode_frame, read_segment, SegmentFile, SegmentReader};

/// How long a written click or pixel may wait for its fsync (the contract allows 50 ms).
pub const SYNC_DELAY: Duration = Duration::from_millis(10);
/// A segment is sealed when it grows past this size, or at every flush.
pub const SEGMENT_MAX_BYTES: u64 = 64 << 20;

const OPEN_EXT: &str = "open";
const SEALED_EXT: &str = "sealed";
const LOCK_FILE: &str = ".lock";

/// What an append waits for before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the segment file (survives `kill -9`); fsync'd within [`SYNC_DELAY`].
    Written,
    /// fsync'd.
    Synced,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool is full ({used} of {max} bytes); hits are refused until the lake catches up")]
    Full { used: u64, max: u64 },
    #[error("spool write failed: {0}")]
    Io(String),
    #[error("spool is shut down")]
    Closed,
    #[error("spool folder {path} is in use by another collector (lock {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("spool folder {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shared counters of the spool, read by `/metrics` and the sink.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Bytes in segment files on disk (sealed and active), reserved as appends arrive.
    pub bytes: AtomicU64,
    pub fsyncs: AtomicU64,
}

/// Whether the spool is refusing hits, and the wake-up for the sink when it starts to:
/// a full spool is flushed at once rather than at the next `--flush-interval`.
#[derive(Debug, Default)]
struct Pressure {
    /// The last append was refused (full, or a failed write) and no space was freed since.
    refusing: AtomicBool,
    /// Why, for `/readyz`.
    reason: Mutex<String>,
    refused: tokio::sync::Notify,
}

/// A handle to the spool; cheap to clone.
#[derive(Clone)]
pub struct Spool {
    core: Arc<writer::Core>,
    max_bytes: u64,
    pressure: Arc<Pressure>,
}

impl Spool {
    /// Opens the spool folder (creating it), takes its lock so no other collector shares
    /// it, recovers what an earlier process left (sealing it for upload) and starts the
    /// syncer thread.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let open_err = |source| SpoolError::Open { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_err)?;
        {
            use fs2::FileExt;
            lock.try_lock_exclusive()
                .map_err(|_| SpoolError::Locked { path: dir.to_path_buf(), lock: lock_path.clone() })?;
        }
        let recovered = segment::recover(dir).map_err(open_err)?;
        let bytes: u64 = recovered.iter().map(|s| s.bytes).sum();
        if !recovered.is_empty() {
            tracing::info!(segments = recovered.len(), bytes, "recovered spool segments from an earlier process");
        }
        let stats = Arc::new(SpoolStats::default());
        stats.bytes.store(bytes, Ordering::SeqCst);
        let core = writer::Core::start(dir.to_path_buf(), stats, lock).map_err(open_err)?;
        Ok(Spool { core, max_bytes, pressure: Arc::default() })
    }

    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    pub fn stats(&self) -> &Arc<SpoolStats> {
        &self.core.stats
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Appends a hit and returns once it is as durable as asked. Refuses (never blocks
    /// or buffers without bound) when the spool is over `--spool-max-bytes`.
    pub async fn append(&self, hit: &Hit, durability: Durability) -> Result<(), SpoolError> {
        let frame = segment::encode_frame(hit);
        let len = frame.len() as u64;
        let stats = &self.core.stats;
        let used = stats.bytes.fetch_add(len, Ordering::SeqCst);
        if used + len > self.max_bytes {
            stats.bytes.fetch_sub(len, Ordering::SeqCst);
            return Err(self.refuse(SpoolError::Full { used, max: self.max_bytes }));
        }
        let seq = match self.core.append(&frame).await {
            Ok(seq) => seq,
            Err(e) => {
                stats.bytes.fetch_sub(len, Ordering::SeqCst);
                // A failed write (a full disk: ENOSPC) frees up the same way: by uploading.
                return Err(self.refuse(e));
            }
        };
        if self.pressure.refusing.load(Ordering::Relaxed) {
            self.pressure.refusing.store(false, Ordering::Relaxed);
        }
        match durability {
            Durability::Written => Ok(()),
            Durability::Synced => self.core.wait_synced(seq).await,
        }
    }

    /// Notes a refused append and wakes the sink so it flushes now.
    fn refuse(&self, e: SpoolError) -> SpoolError {
        let p = &self.pressure;
        *p.reason.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
        p.refusing.store(true, Ordering::Relaxed);
        p.refused.notify_one();
        e
    }

    /// Resolves when an append is refused (at once if one was since the last call).
    pub async fn refused(&self) {
        self.pressure.refused.notified().await;
    }

    /// Whether the spool refuses hits: the last append was refused and no segment has been
    /// uploaded since.
    pub fn is_refusing(&self) -> bool {
        self.pressure.refusing.load(Ordering::Relaxed)
    }

    /// Why hits cannot be stored now, if they cannot: `/readyz` answers `503` with this.
    pub fn unready_reason(&self) -> Option<String> {
        let used = self.core.stats.bytes.load(Ordering::SeqCst);
        if used >= self.max_bytes {
            return Some(SpoolError::Full { used, max: self.max_bytes }.to_string());
        }
        self.is_refusing().then(|| self.pressure.reason.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Seals the active segment so the sink can upload everything written so far.
    pub async fn rotate(&self) -> Result<(), SpoolError> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || core.seal())
            .await
            .map_err(|e| SpoolError::Io(e.to_string()))?
            .map_err(|e| SpoolError::Io(e.to_string()))
    }

    /// Sealed segments waiting for upload, oldest first.
    pub fn sealed_segments(&self) -> std::io::Result<Vec<PathBuf>> {
        segment::list(self.dir(), SEALED_EXT)
    }

    /// Creation time (ms since the epoch) of the oldest segment still in the spool: the
    /// age of the oldest hit not yet in the lake is at most now minus this.
    pub fn oldest_pending_ms(&self) -> Option<u64> {
        let mut all = segment::list(self.dir(), SEALED_EXT).ok()?;
        all.extend(segment::list(self.dir(), OPEN_EXT).ok()?);
        all.iter().filter_map(|p| segment::created_ms(p)).min()
    }

    /// Deletes an uploaded segment durably and releases its bytes.
    pub fn remove_segment(&self, path: &Path) -> std::io::Result<()> {
        self.release_segment(path, None)
    }

    /// Renames an uploaded segment with an unreadable tail to `keep` (for an operator) and
    /// stops counting it against `--spool-max-bytes`: it is no longer pending.
    pub fn set_aside_segment(&self, path: &Path, keep: &Path) -> std::io::Result<()> {
        self.release_segment(path, Some(keep))
    }

    fn release_segment(&self, path: &Path, keep: Option<&Path>) -> std::io::Result<()> {
        let len = std::fs::metadata(path)?.len();
        match keep {
            Some(k) => std::fs::rename(path, k)?,
            None => std::fs::remove_file(path)?,
        }
        std::fs::File::open(self.dir())?.sync_all()?;
        let stats = &self.core.stats;
        stats.bytes.fetch_sub(len.min(stats.bytes.load(Ordering::SeqCst)), Ordering::SeqCst);
        // Space was freed: the next append decides whether the spool still refuses.
        self.pressure.refusing.store(false, Ordering::Relaxed);
        Ok(())
    }
}
