//! Attribution windows, written `Nd` or `Nh`. A window names its report folder as written,
//! normalized (`28D` → `28d`, `036h` → `36h`): the unit is the user's, so `--window 48h`
//! writes `window=48h` (not `2d`).

use std::fmt;
use std::str::FromStr;

use crate::LakeError;

/// An attribution window, held exactly in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    hours: u32,
    /// Written in days (`Nd`), else hours.
    in_days: bool,
}

pub const MICROS_PER_HOUR: i64 = 3_600_000_000;
/// The longest window accepted: ten years.
const MAX_HOURS: u32 = 24 * 3660;

impl Window {
    pub const DEFAULT: Window = Window { hours: 28 * 24, in_days: true };

    /// A window written in hours (`Nh`).
    pub fn from_hours(hours: u32) -> Result<Window, LakeError> {
        if hours == 0 || hours > MAX_HOURS {
            return Err(LakeError::Invalid(format!(
                "window of {hours}h is out of range (1h to {}d)",
                MAX_HOURS / 24
            )));
        }
        Ok(Window { hours, in_days: false })
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
        Ok(Window { in_days, ..Window::from_hours(hours)? })
    }
}

impl fmt::Display for Window {
    /// Normalized, in the unit it was written in.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_days {
            write!(f, "{}d", self.hours / 24)
        } else {
            write!(f, "{}h", self.hours)
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
    fn rejects() {
        for bad in ["", "d", "0d", "28", "2w", "-1d", "1.5d", "99999999d"] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }
}
