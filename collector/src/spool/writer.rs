//! The active segment and its syncer thread: handlers write frames under a mutex; the
//! syncer fsyncs whatever was written, in groups, and publishes how far the spool is
//! durable so that postbacks can wait for it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::segment::{new_segment_path, sealed_path};
use crate::lograte::{LogRate, LOG_PERIOD};
use super::{SpoolError, SpoolStats, SEGMENT_MAX_BYTES, SYNC_DELAY};

struct Active {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
}

#[derive(Default)]
struct Inner {
    active: Option<Active>,
    /// Sequence number of the last frame written.
    seq: u64,
    /// When the oldest write not yet fsync'd happened.
    dirty_since: Option<Instant>,
    /// The active segment failed a write or an fsync: seal it before writing more.
    broken: bool,
}

/// How far the spool is durable: every frame up to `synced` is fsync'd; frames in
/// `(failed_after, failed_through]` were in an fsync that failed.
#[derive(Debug, Clone, Copy, Default)]
struct SyncMark {
    synced: u64,
    failed_after: u64,
    failed_through: u64,
}

/// Frames waiting for the group write of one slot. Frames are numbered per slot
/// (tickets); the spool-wide sequence number of a frame is given when it is written.
#[derive(Default)]
struct Queue {
    buf: Vec<u8>,
    /// The buffer of the last round, emptied, kept for the next one: a round does not
    /// grow a new buffer from nothing.
    spare: Vec<u8>,
    /// Ticket of the last frame queued.
    next_ticket: u64,
    /// Ticket of the last frame taken by a write round.
    written_through: u64,
    /// A leader is writing.
    leader: bool,
}

/// How far a slot's group writes have got: the ticket of the last frame written, the
/// spool-wide sequence number that covers every frame of the slot's successful rounds so
/// far, and the ticket ranges of recent writes that failed (a failed write marks the
/// segment broken, so failures are rare and few).
#[derive(Debug, Clone, Default)]
struct WriteMark {
    written: u64,
    seq: u64,
    failed: std::collections::VecDeque<(u64, u64)>,
}

/// One group write queue. Each thread appends through its own slot (threads beyond
/// [`SLOTS`] share), so a group is formed, written and answered on one thread: the
/// leader wakes only the requests of its own event loop, never another thread's.
#[derive(Default)]
struct Slot {
    queue: Mutex<Queue>,
    written: watch::Sender<WriteMark>,
}

/// Group write queues per spool: one per HTTP thread up to this many.
const SLOTS: usize = 16;

/// The slot of the calling thread: threads take slots in the order they first append.
fn slot_index() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS;
    }
    SLOT.with(|s| *s)
}

/// The leader of a group write: writes the queued rounds of its slot when dropped.
struct Lead<'a>(&'a Core, &'a Slot);

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        self.0.write_rounds(self.1);
    }
}

/// Failed ranges remembered for waiters that wake late.
const FAILED_RANGES_KEPT: usize = 1024;

pub(super) struct Core {
    pub(super) dir: PathBuf,
    pub(super) stats: Arc<SpoolStats>,
    inner: Mutex<Inner>,
    slots: Box<[Slot]>,
    mark: watch::Sender<SyncMark>,
    sync_now: AtomicBool,
    /// The error of the last failed write, for the appends it refuses (`/readyz` shows it).
    last_write_error: Mutex<String>,
    syncer: OnceLock<std::thread::Thread>,
    /// Held for the life of the spool: no second collector may share the folder.
    _lock: File,
}

impl Core {
    pub(super) fn start(dir: PathBuf, stats: Arc<SpoolStats>, lock: File) -> std::io::Result<Arc<Core>> {
        let core = Arc::new(Core {
            dir,
            stats,
            inner: Mutex::new(Inner::default()),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            mark: watch::channel(SyncMark::default()).0,
            sync_now: AtomicBool::new(false),
            last_write_error: Mutex::new(String::new()),
            syncer: OnceLock::new(),
            _lock: lock,
        });
        let weak = Arc::downgrade(&core);
        let handle = std::thread::Builder::new().name("spool-syncer".into()).spawn(move || syncer(weak))?;
        let _ = core.syncer.set(handle.thread().clone());
        Ok(core)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_syncer(&self) {
        if let Some(t) = self.syncer.get() {
            t.unpark();
        }
    }

    /// Appends a frame and returns, once it is written to the active segment, a sequence
    /// number that covers it (for [`Core::wait_synced`]). Group write, per slot (thread):
    /// the first appender to find no write of its slot in progress becomes the leader,
    /// yields once so that the requests ready on its event loop queue theirs, and writes
    /// everything queued, round after round, with one `write` per round; the others wait
    /// for the round that holds their frame.
    pub(super) async fn append(&self, frame: &[u8]) -> Result<u64, SpoolError> {
        let slot = &self.slots[slot_index()];
        let (ticket, lead) = {
            let mut q = slot.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.buf.extend_from_slice(frame);
            q.next_ticket += 1;
            let lead = !q.leader;
            q.leader = true;
            (q.next_ticket, lead)
        };
        if lead {
            // Let the other requests this worker has ready queue their frames first: one
            // `write` then carries all of them (the leader's answer waits one scheduler
            // pass, a few microseconds; a `write` into ext4 costs more than that per call).
            // The rounds run when `lead` is dropped, so a leader cancelled while it yields
            // (a timed-out request) still writes what it and the others queued.
            let lead = Lead(self, slot);
            tokio::task::yield_now().await;
            drop(lead);
        }
        let mut rx = slot.written.subscribe();
        let w = rx.wait_for(|w| w.written >= ticket).await.map_err(|_| SpoolError::Closed)?;
        if w.failed.iter().any(|&(from, through)| from <= ticket && ticket <= through) {
            let error = self.last_write_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(SpoolError::Io(error));
        }
        // The slot's rounds are written in order: the frame is at or before `w.seq`.
        Ok(w.seq)
    }

    /// The leader's work: writes what is queued, round after round, until the queue is
    /// empty, and publishes each round's outcome to the waiting appenders.
    fn write_rounds(&self, slot: &Slot) {
        let mut buf = std::mem::take(&mut slot.queue.lock().unwrap_or_else(|e| e.into_inner()).spare);
        loop {
            let (first, last) = {
                let mut q = slot.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.buf.is_empty() {
                    q.leader = false;
                    // Keep one buffer of a sensible size (a burst's can be large).
                    if buf.capacity() <= 1 << 20 {
                        q.spare = buf;
                    }
                    break;
                }
                std::mem::swap(&mut buf, &mut q.buf);
                let first = q.written_through + 1;
                q.written_through = q.next_ticket;
                (first, q.next_ticket)
            };
            let result = self.write(&buf, last - first + 1);
            if let Err(e) = &result {
                *self.last_write_error.lock().unwrap_or_else(|e| e.into_inner()) = e.to_string();
            }
            buf.clear();
            slot.written.send_modify(|w| {
                w.written = last;
                if let Ok(seq) = result {
                    w.seq = seq;
                } else {
                    if w.failed.len() == FAILED_RANGES_KEPT {
                        w.failed.pop_front();
                    }
                    w.failed.push_back((first, last));
                }
            });
        }
    }

    /// Writes a batch of `frames` frames to the active segment; returns the sequence number
    /// of the last (the frames written to the spool so far).
    fn write(&self, frame: &[u8], frames: u64) -> std::io::Result<u64> {
        let mut inner = self.lock();
        // `inner.seq` (what an fsync of the active segment covers) moves past these frames
        // only once they are in it: sealing the previous segment first must not publish them.
        if inner.broken || inner.active.as_ref().is_some_and(|a| a.len >= SEGMENT_MAX_BYTES) {
            self.seal_locked(&mut inner)?;
        }
        if inner.active.is_none() {
            let path = new_segment_path(&self.dir);
            let file = OpenOptions::new().create_new(true).append(true).open(&path)?;
            // The new name must be durable before anything in it counts as fsync'd.
            File::open(&self.dir)?.sync_all()?;
            inner.active = Some(Active { file: Arc::new(file), path, len: 0 });
        }
        let a = inner.active.as_mut().expect("just set");
        if let Err(e) = (&*a.file).write_all(frame) {
            // Cut a partial write back so the segment stays a clean run of frames.
            let _ = a.file.set_len(a.len);
            inner.broken = true;
            // A full disk fails every write: one line a second, not one per hit.
            static WRITE_FAILURES: LogRate = LogRate::new(LOG_PERIOD);
            if let Some(more) = WRITE_FAILURES.check() {
                tracing::error!(error = %e, failed_since_last_line = more, "spool write failed");
            }
            return Err(e);
        }
        a.len += frame.len() as u64;
        inner.seq += frames;
        let last = inner.seq;
        let first_dirty = inner.dirty_since.is_none();
        inner.dirty_since.get_or_insert_with(Instant::now);
        drop(inner);
        if first_dirty {
            self.wake_syncer();
        }
        Ok(last)
    }

    /// Waits until frame `seq` is fsync'd (group commit: asks for an fsync now).
    pub(super) async fn wait_synced(&self, seq: u64) -> Result<(), SpoolError> {
        let mut rx = self.mark.subscribe();
        self.sync_now.store(true, Ordering::SeqCst);
        self.wake_syncer();
        let mark = *rx
            .wait_for(|m| m.synced >= seq || (m.failed_after < seq && seq <= m.failed_through))
            .await
            .map_err(|_| SpoolError::Closed)?;
        if mark.failed_after < seq && seq <= mark.failed_through {
            return Err(SpoolError::Io("spool fsync failed".into()));
        }
        Ok(())
    }

    /// fsyncs and seals the active segment (if any) so the sink may upload it.
    pub(super) fn seal(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        self.seal_locked(&mut inner)
    }

    fn seal_locked(&self, inner: &mut Inner) -> std::io::Result<()> {
        inner.broken = false;
        let Some(a) = inner.active.take() else { return Ok(()) };
        if a.len == 0 {
            return std::fs::remove_file(&a.path);
        }
        // Seal even when the fsync fails: a sealed segment is uploaded from what is on disk.
        let synced = a.file.sync_all();
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let seq = inner.seq;
        inner.dirty_since = None;
        self.publish(seq, synced.is_ok());
        std::fs::rename(&a.path, sealed_path(&a.path))?;
        File::open(&self.dir)?.sync_all()?;
        synced
    }

    fn publish(&self, seq: u64, ok: bool) {
        self.mark.send_modify(|m| {
            if ok {
                m.synced = m.synced.max(seq);
            } else {
                m.failed_after = m.synced;
                m.failed_through = seq;
            }
        });
    }
}

/// The syncer: fsyncs written data within [`SYNC_DELAY`], or at once when a postback
/// waits. Ends when the spool is dropped.
fn syncer(core: Weak<Core>) {
    loop {
        let Some(c) = core.upgrade() else { return };
        let now = Instant::now();
        let (file, seq, wait) = {
            let mut inner = c.lock();
            let file = inner.active.as_ref().map(|a| a.file.clone());
            match (inner.dirty_since, file) {
                (Some(since), Some(file)) => {
                    let due = since + SYNC_DELAY;
                    if c.sync_now.swap(false, Ordering::SeqCst) || now >= due {
                        inner.dirty_since = None;
                        (Some(file), inner.seq, Duration::ZERO)
                    } else {
                        (None, 0, due - now)
                    }
                }
                _ => (None, 0, Duration::from_millis(200)),
            }
        };
        match file {
            Some(file) => {
                let result = file.sync_data();
                c.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "spool fsync failed");
                    c.lock().broken = true;
                }
                c.publish(seq, result.is_ok());
            }
            None => {
                drop(c);
                std::thread::park_timeout(wait);
            }
        }
    }
}
