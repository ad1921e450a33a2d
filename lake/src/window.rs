//! Attribution windows, written `Nd` or `Nh`. A window names its report folder as written,
//! normalized (`28D` → `28d`, `036h` → `36h`): the unit is the user's, so `--window 48h`
//! writes `window=48h` (not `2d`). A window may carry a scenario label, `28d+coupons-first`
//! (`[a-z0-9-]{1,40}` after `+`): the same length of window, its own report folder, so a
//! what-if (`pipeline run --registry-override`) is written beside production, never over it.

use std::fmt;
use std::str::FromStr;

use crate::LakeError;

/// An attribution window, held exactly in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    hours: u32,
    /// Written in days (`Nd`), else hours.
    in_days: bool,
    /// A scenario's label (`28d+label`). Labels are few per process and live as long as
    /// it, so they are interned as `&'static str` to keep `Window` `Copy`.
    label: Option<&'static str>,
}

/// The longest scenario label.
pub const MAX_LABEL: usize = 40;

fn intern(label: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static LABELS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = LABELS.get_or_init(|| Mutex::new(HashSet::new())).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(l) = set.get(label) {
        return l;
    }
    let leaked: &'static str = Box::leak(label.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
/// The longest window accepted: ten years.
const MAX_HOURS: u32 = 24 * 3660;

impl Window {
    pub const DEFAULT: Window = Window { hours: 28 * 24, in_days: true, label: None };

    /// A window written in hours (`Nh`).
    pub fn from_hours(hours: u32) -> Result<Window, LakeError> {
        if hours == 0 || hours > MAX_HOURS {
            return Err(LakeError::Invalid(format!(
                "window of {hours}h is out of range (1h to {}d)",
                MAX_HOURS / 24
            )));
        }
        Ok(Window { hours, in_days: false, label: None })
    }

    /// The scenario label, for `28d+label`.
    pub fn label(&self) -> Option<&'static str> {
        self.label
    }

    /// The same window without its label: the production window a scenario varies.
    pub fn unlabelled(&self) -> Window {
        Window { label: None, ..*self }
    }
    pub fn hours(&self) -> u32 {
        self.hours
    }
    pub fn micros(&self) -> i64 {
        i64::from(self.hours) * MICROS_PER_HOUR
    }
    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::microseconds(self.micros())
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::DEFAULT
    }
}

impl FromStr for Window {
    type Err = LakeError;
    fn from_str(s: &str) -> Result<Window, LakeError> {
        let bad = || {
            LakeError::Invalid(format!(
                "invalid window {s:?}: write it as a number of days or hours, like 28d or 36h"
            ))
        };
        let s = s.trim();
        let (s, label) = match s.split_once('+') {
            Some((w, l)) => {
                if l.is_empty() || l.len() > MAX_LABEL || !l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
                    return Err(LakeError::Invalid(format!(
                        "invalid window {s:?}: a scenario label after + is 1 to {MAX_LABEL} of a-z, 0-9 and -, like 28d+coupons-first"
                    )));
                }
                (w, Some(intern(l)))
            }
            None => (s, None),
        };
        let (num, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = num.parse().map_err(|_| bad())?;
        let (hours, in_days) = match unit {
            "d" | "D" => (n.checked_mul(24).ok_or_else(bad)?, true),
            "h" | "H" => (n, false),
            _ => return Err(bad()),
        };
        Ok(Window { in_days, label, ..Window::from_hours(hours)? })
    }
}

impl fmt::Display for Window {
    /// Normalized, in the unit it was written in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_days {
            write!(f, "{}d", self.hours / 24)?;
        } else {
            write!(f, "{}h", self.hours)?;
        }
        match self.label {
            Some(l) => write!(f, "+{l}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        for (input, out) in [("28d", "28d"), ("7D", "7d"), ("36h", "36h"), ("48h", "48h"), ("024h", "24h"), ("028d", "28d"), ("1d", "1d")] {
            assert_eq!(input.parse::<Window>().unwrap().to_string(), out, "{input}");
        }
        assert_eq!(Window::default().micros(), 28 * 24 * MICROS_PER_HOUR);
        assert_eq!("48h".parse::<Window>().unwrap().micros(), "2d".parse::<Window>().unwrap().micros());
    }

    #[test]
    fn scenario_labels() {
        let w: Window = "28d+coupons-first".parse().unwrap();
        assert_eq!(w.to_string(), "28d+coupons-first");
        assert_eq!(w.micros(), Window::DEFAULT.micros());
        assert_eq!(w.label(), Some("coupons-first"));
        assert_eq!(w.unlabelled(), Window::DEFAULT);
        assert_ne!(w, Window::DEFAULT);
        assert_eq!("48H+a1".parse::<Window>().unwrap().to_string(), "48h+a1");
        for bad in ["28d+", "28d+Caps", "28d+a b", "28d+x/y", "+x"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects() {
        for bad in ["", "d", "0d", "28", "2w", "-1d", "1.5d", "99999999d"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }
}
