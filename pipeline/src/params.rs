//! What a run is about: the window, the report time zone and the range of report dates,
//! and the UTC instants those imply. All instants are microseconds since the Unix epoch,
//! the unit of `ts` in the lake.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use lake::window::Window;

use crate::error::{PipelineError, Result};

/// Parameters of one run, checked at construction.
#[derive(Debug, Clone)]
pub struct Params {
    pub window: Window,
    pub tz: Tz,
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// Parses an IANA zone name (`UTC`, `Europe/Paris`), naming the flag on error.
pub fn parse_tz(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| PipelineError::Flag {
        flag: "--tz",
        value: name.to_string(),
        reason: "not an IANA time zone name (like UTC or Europe/Paris)".into(),
    })
}

/// Parses a `YYYY-MM-DD` date, naming the flag on error.
pub fn parse_date(flag: &'static str, text: &str) -> Result<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| PipelineError::Flag {
        flag,
        value: text.to_string(),
        reason: format!("not a YYYY-MM-DD date ({e})"),
    })
}

/// Parses a window (`28d`, `36h`), naming the flag on error.
pub fn parse_window(text: &str) -> Result<Window> {
    text.parse::<Window>().map_err(|e| PipelineError::Flag { flag: "--window", value: text.to_string(), reason: e.to_string() })
}

/// The first instant (µs) whose local date in `tz` is `date`. Local midnight may not exist
/// (a DST jump at midnight); then the day starts at the first local time that does.
pub fn day_start_micros(tz: &Tz, date: NaiveDate) -> i64 {
    let mut t = date.and_time(NaiveTime::MIN);
    for _ in 0..(24 * 4) {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt.with_timezone(&Utc).timestamp_micros();
        }
        t += chrono::Duration::minutes(15);
    }
    // Unreachable for real zones; fall back to UTC midnight.
    date.and_time(NaiveTime::MIN).and_utc().timestamp_micros()
}

/// The local date in `tz` of an instant (µs).
pub fn local_date(tz: &Tz, micros: i64) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_default().with_timezone(tz).date_naive()
}

impl Params {
    pub fn new(window: Window, tz: Tz, from: NaiveDate, to: NaiveDate) -> Result<Params> {
        if from > to {
            return Err(PipelineError::Flag {
                flag: "--from",
                value: from.to_string(),
                reason: format!("is after --to {to}"),
            });
        }
        Ok(Params { window, tz, from, to })
    }

    /// The zone's IANA name, as recorded in manifests and given to polars.
    pub fn tz_name(&self) -> &'static str {
        self.tz.name()
    }

    /// The report dates, in order.
    pub fn dates(&self) -> Vec<NaiveDate> {
        self.from.iter_days().take_while(|d| *d <= self.to).collect()
    }

    /// `[start, end)` in µs: the instants whose local date is in the range.
    pub fn range_micros(&self) -> (i64, i64) {
        (day_start_micros(&self.tz, self.from), day_start_micros(&self.tz, next_day(self.to)))
    }

    /// `[start, end)` in µs of one local date.
    pub fn date_micros(&self, date: NaiveDate) -> (i64, i64) {
        (day_start_micros(&self.tz, date), day_start_micros(&self.tz, next_day(date)))
    }

    /// The earliest instant any conversion of the range can look back to: sessions start at
    /// most `W` before a conversion, and a duplicate's earlier twin at most `W` before it.
    pub fn lookback_micros(&self) -> i64 {
        self.range_micros().0 - self.window.micros()
    }

    /// The same window and zone over another date range.
    pub fn with_range(&self, from: NaiveDate, to: NaiveDate) -> Result<Params> {
        Params::new(self.window, self.tz, from, to)
    }
}

pub fn next_day(d: NaiveDate) -> NaiveDate {
    d.checked_add_days(Days::new(1)).unwrap_or(d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paris_days_follow_dst() {
        let tz = parse_tz("Europe/Paris").unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(); // clocks go forward at 02:00
        let p = Params::new(Window::DEFAULT, tz, d, d).unwrap();
        let (s, e) = p.range_micros();
        assert_eq!(e - s, 23 * 3_600_000_000);
        assert_eq!(local_date(&tz, s), d);
        assert_eq!(local_date(&tz, s - 1), d.pred_opt().unwrap());
        assert_eq!(local_date(&tz, e - 1), d);
    }

    #[test]
    fn bad_flags_are_named() {
        assert!(parse_tz("Mars/Olympus").unwrap_err().to_string().contains("--tz"));
        assert!(parse_window("3w").unwrap_err().to_string().contains("--window"));
        assert!(parse_date("--date", "2026-13-01").unwrap_err().to_string().contains("--date"));
        let d = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert!(Params::new(Window::DEFAULT, Tz::UTC, d, d.pred_opt().unwrap()).is_err());
    }
}
