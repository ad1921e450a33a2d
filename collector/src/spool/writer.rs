//! The spool's writer thread: group commit over one active segment.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use super::segment::{new_segment_path, sealed_path};
use super::{Durability, Request, SpoolError, SpoolStats, SEGMENT_MAX_BYTES, SYNC_DELAY};

/// Most requests taken into one group commit.
const MAX_BATCH: usize = 4096;

type Ack = oneshot::Sender<Result<(), SpoolError>>;

struct Active {
    file: File,
    path: PathBuf,
    len: u64,
}

struct Writer {
    dir: PathBuf,
    stats: Arc<SpoolStats>,
    active: Option<Active>,
    /// Synced appends written but waiting for the next fsync.
    waiting: Vec<Ack>,
    /// When the oldest write not yet fsync'd happened.
    dirty_since: Option<Instant>,
    /// The active segment failed a write or fsync and must be sealed before more appends.
    broken: bool,
}

pub(super) fn start(dir: PathBuf, rx: Receiver<Request>, stats: Arc<SpoolStats>, lock: File) -> std::io::Result<()> {
    std::thread::Builder::new().name("spool-writer".into()).spawn(move || {
        // The lock lives as long as the writer: no second collector may share the folder.
        let _lock = lock;
        let mut w = Writer { dir, stats, active: None, waiting: Vec::new(), dirty_since: None, broken: false };
        w.run(&rx);
    })?;
    Ok(())
}

fn io_err(e: &std::io::Error) -> SpoolError {
    SpoolError::Io(e.to_string())
}

impl Writer {
    fn run(&mut self, rx: &Receiver<Request>) {
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut appends: Vec<(Durability, Ack, u64)> = Vec::with_capacity(MAX_BATCH);
        let mut rotates: Vec<Ack> = Vec::new();
        loop {
            let timeout = match self.dirty_since {
                Some(t) => SYNC_DELAY.saturating_sub(t.elapsed()),
                None => Duration::from_secs(3600),
            };
            let first = match rx.recv_timeout(timeout) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.seal();
                    return;
                }
            };
            buf.clear();
            fn take(req: Request, buf: &mut Vec<u8>, appends: &mut Vec<(Durability, Ack, u64)>, rotates: &mut Vec<Ack>) {
                match req {
                    Request::Append { frame, durability, ack } => {
                        buf.extend_from_slice(&frame);
                        appends.push((durability, ack, frame.len() as u64));
                    }
                    Request::Rotate { ack } => rotates.push(ack),
                }
            }
            if let Some(req) = first {
                take(req, &mut buf, &mut appends, &mut rotates);
                while appends.len() + rotates.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(req) => take(req, &mut buf, &mut appends, &mut rotates),
                        Err(_) => break,
                    }
                }
            }
            if !appends.is_empty() {
                self.write_batch(&buf, &mut appends);
            }
            let must_sync = !self.waiting.is_empty()
                || !rotates.is_empty()
                || self.dirty_since.is_some_and(|t| t.elapsed() >= SYNC_DELAY);
            if must_sync {
                self.sync();
            }
            let full = self.active.as_ref().is_some_and(|a| a.len >= SEGMENT_MAX_BYTES);
            if !rotates.is_empty() || full || self.broken {
                let result = self.seal();
                for ack in rotates.drain(..) {
                    let _ = ack.send(result.as_ref().map(|_| ()).map_err(io_err));
                }
            }
        }
    }

    fn ensure_active(&mut self) -> std::io::Result<&mut Active> {
        if self.active.is_none() {
            let path = new_segment_path(&self.dir);
            let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
            // The new name must be durable before anything in it counts as fsync'd.
            File::open(&self.dir)?.sync_all()?;
            self.active = Some(Active { file, path, len: 0 });
        }
        Ok(self.active.as_mut().expect("just set"))
    }

    fn write_batch(&mut self, buf: &[u8], appends: &mut Vec<(Durability, Ack, u64)>) {
        let result = self.ensure_active().and_then(|a| match a.file.write_all(buf) {
            Ok(()) => {
                a.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut a partial write back so the segment stays a clean run of frames.
                if a.file.set_len(a.len).is_err() {
                    return Err(e);
                }
                Err(e)
            }
        });
        match result {
            Ok(()) => {
                self.dirty_since.get_or_insert_with(Instant::now);
                for (durability, ack, _) in appends.drain(..) {
                    match durability {
                        Durability::Written => {
                            let _ = ack.send(Ok(()));
                        }
                        Durability::Synced => self.waiting.push(ack),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; refusing this batch");
                self.broken = true;
                for (_, ack, len) in appends.drain(..) {
                    self.stats.bytes.fetch_sub(len, Ordering::SeqCst);
                    let _ = ack.send(Err(io_err(&e)));
                }
            }
        }
    }

    fn sync(&mut self) {
        let Some(a) = self.active.as_mut() else {
            self.dirty_since = None;
            return;
        };
        let result = a.file.sync_data();
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.dirty_since = None;
        match result {
            Ok(()) => {
                for ack in self.waiting.drain(..) {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, segment = %a.path.display(), "spool fsync failed");
                self.broken = true;
                for ack in self.waiting.drain(..) {
                    let _ = ack.send(Err(io_err(&e)));
                }
            }
        }
    }

    /// fsyncs and seals the active segment (if any) so the sink may upload it.
    fn seal(&mut self) -> std::io::Result<()> {
        self.broken = false;
        let Some(a) = self.active.take() else { return Ok(()) };
        if a.len == 0 {
            std::fs::remove_file(&a.path)?;
            return Ok(());
        }
        // Seal even when the fsync failed: a sealed segment is uploaded from what is on disk,
        // and the callers that waited for this fsync were already told it failed.
        let synced = a.file.sync_all();
        drop(a.file);
        rename_durably(&a.path, &sealed_path(&a.path), &self.dir)?;
        synced
    }
}

fn rename_durably(from: &Path, to: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    File::open(dir)?.sync_all()
}
