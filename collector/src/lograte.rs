//! Rate-limited logging for events that can repeat at request rate (a full spool, a failing
//! disk, the connection limit): one line per period, with the count of the events not
//! logged since the last line, instead of one line per event (which once wrote 39k lines
//! in 40 s and filled the disk the spool shares).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The usual period: one line a second.
pub const LOG_PERIOD: Duration = Duration::from_secs(1);

/// Decides which occurrences of an event are logged.
#[derive(Debug)]
pub struct LogRate {
    period: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogRate {
    pub const fn new(period: Duration) -> LogRate {
        LogRate { period, last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }

    /// Called once per occurrence: `Some(n)` when this one is to be logged, `n` being the
    /// occurrences not logged since the last line; `None` (counted) otherwise.
    pub fn check(&self) -> Option<u64> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now.saturating_duration_since(t) < self.period => {
                self.suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
            _ => {
                *last = Some(now);
                Some(self.suppressed.swap(0, Ordering::Relaxed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_of_the_others() {
        let rate = LogRate::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(rate.check_at(t0), Some(0));
        for i in 1..=999 {
            assert_eq!(rate.check_at(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(rate.check_at(t0 + Duration::from_millis(1000)), Some(999));
        assert_eq!(rate.check_at(t0 + Duration::from_millis(1001)), None);
        assert_eq!(rate.check_at(t0 + Duration::from_millis(2500)), Some(1));
    }
}
