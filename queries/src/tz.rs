//! Time zones in SQL without DuckDB's ICU extension (which needs a CMake build of DuckDB
//! and ICU's data), from the IANA database compiled into clicktrail (chrono-tz), the same
//! one the pipeline computes report dates with.
//!
//! The lake's timestamps (`ts`, `click_ts`, `lock_ts`) are UTC instants, shown to SQL as
//! plain `TIMESTAMP`s holding UTC: DuckDB's date functions, casts and interval arithmetic
//! all work on `TIMESTAMP` without ICU.
//!
//! - `ts AT TIME ZONE 'Europe/Paris'` (DuckDB's parser makes it `timezone('Europe/Paris',
//!   ts)`) is the wall-clock time in Paris at the UTC time `ts`, a `TIMESTAMP`: so
//!   `hour(ts AT TIME ZONE 'Europe/Paris')` is the local hour. A `TIMESTAMPTZ` (such as
//!   `TIMESTAMPTZ '2026-03-01 10:00:00+02'`) gives the same for its instant. This is what
//!   DuckDB with ICU answers for the lake's `TIMESTAMPTZ` columns.
//! - `local_to_utc(local, 'Europe/Paris')` is the other way: the UTC time of a wall-clock
//!   time there. A time that happens twice (the autumn change) is the first of the two; a
//!   time that never happens (the spring gap) is read with the offset before the gap, so
//!   02:30 in a gap at 02:00 is 03:30 local, as PostgreSQL reads it.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;
use duckdb::vscalar::{ArrowFunctionSignature, VArrowScalar};

fn instant_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn local_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// Parses a zone name, as the pipeline's `--tz` does.
fn zone(name: &str) -> Result<Tz, String> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| format!("timezone: {name:?} is not a time zone (give an IANA name, such as 'Europe/Paris' or 'UTC')"))
}

/// The wall-clock micros in `tz` at the instant `us`.
pub fn to_local(tz: &Tz, us: i64) -> Option<i64> {
    let t = DateTime::from_timestamp_micros(us)?;
    let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc();
    us.checked_add(i64::from(offset) * 1_000_000)
}

/// The instant of the wall-clock time `us` (micros of a naive time) in `tz`.
pub fn to_instant(tz: &Tz, us: i64) -> Option<i64> {
    let naive: NaiveDateTime = DateTime::from_timestamp_micros(us)?.naive_utc();
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.timestamp_micros()),
        LocalResult::Ambiguous(first, _) => Some(first.timestamp_micros()),
        LocalResult::None => {
            // In a gap: the offset in force just before it (gaps are at most a few hours).
            let before = (1..=48).find_map(|h| match tz.from_local_datetime(&(naive - chrono::Duration::minutes(30 * h))) {
                LocalResult::Single(t) => Some(t.offset().fix().local_minus_utc()),
                LocalResult::Ambiguous(t, _) => Some(t.offset().fix().local_minus_utc()),
                LocalResult::None => None,
            })?;
            us.checked_sub(i64::from(before) * 1_000_000)
        }
    }
}

fn zone_cached(cache: &mut Option<(String, Tz)>, name: &str) -> Result<Tz, String> {
    match cache {
        Some((n, tz)) if n == name => Ok(*tz),
        _ => {
            let tz = zone(name)?;
            *cache = Some((name.to_string(), tz));
            Ok(tz)
        }
    }
}

/// Applies `f` to each (zone, micros) pair; nulls stay null.
fn map_zoned(
    zones: &dyn Array,
    ts: &dyn Array,
    f: fn(&Tz, i64) -> Option<i64>,
) -> Result<TimestampMicrosecondArray, Box<dyn std::error::Error>> {
    let zones = arrow::compute::cast(zones, &DataType::Utf8)?;
    let zones = zones.as_string::<i32>();
    let instant = matches!(ts.data_type(), DataType::Timestamp(_, Some(_)));
    let ts = arrow::compute::cast(ts, &if instant { instant_type() } else { local_type() })?;
    let ts = ts.as_primitive::<TimestampMicrosecondType>();
    let mut cache: Option<(String, Tz)> = None;
    let mut out: Vec<Option<i64>> = Vec::with_capacity(ts.len());
    for i in 0..ts.len() {
        if ts.is_null(i) || zones.is_null(i) {
            out.push(None);
            continue;
        }
        let tz = zone_cached(&mut cache, zones.value(i))?;
        let v = ts.value(i);
        out.push(Some(f(&tz, v).ok_or_else(|| format!("timezone: the time {v} µs is out of range"))?));
    }
    Ok(TimestampMicrosecondArray::from(out))
}

/// `timezone(zone, ts)` (`ts AT TIME ZONE zone`): see the module comment.
pub struct Timezone;

impl VArrowScalar for Timezone {
    type State = ();

    fn invoke(_: &Self::State, input: RecordBatch) -> Result<Arc<dyn Array>, Box<dyn std::error::Error>> {
        Ok(Arc::new(map_zoned(input.column(0), input.column(1), to_local)?))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![
            ArrowFunctionSignature::exact(vec![DataType::Utf8, local_type()], local_type()),
            ArrowFunctionSignature::exact(vec![DataType::Utf8, instant_type()], local_type()),
        ]
    }
}

/// `local_to_utc(local, zone)`: see the module comment.
pub struct LocalToUtc;

impl VArrowScalar for LocalToUtc {
    type State = ();

    fn invoke(_: &Self::State, input: RecordBatch) -> Result<Arc<dyn Array>, Box<dyn std::error::Error>> {
        Ok(Arc::new(map_zoned(input.column(1), input.column(0), to_instant)?))
    }

    fn signatures() -> Vec<ArrowFunctionSignature> {
        vec![ArrowFunctionSignature::exact(vec![local_type(), DataType::Utf8], local_type())]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn us(text: &str) -> i64 {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").unwrap().and_utc().timestamp_micros()
    }

    #[test]
    fn paris_both_ways_and_at_the_changes() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(to_local(&paris, us("2026-01-15 12:00")), Some(us("2026-01-15 13:00")));
        assert_eq!(to_local(&paris, us("2026-07-15 12:00")), Some(us("2026-07-15 14:00")));
        assert_eq!(to_instant(&paris, us("2026-07-15 14:00")), Some(us("2026-07-15 12:00")));
        // 2026-03-29 02:30 does not exist in Paris: read with the winter offset.
        assert_eq!(to_instant(&paris, us("2026-03-29 02:30")), Some(us("2026-03-29 01:30")));
        // 2026-10-25 02:30 happens twice: the first (summer) one.
        assert_eq!(to_instant(&paris, us("2026-10-25 02:30")), Some(us("2026-10-25 00:30")));
        assert!(zone("Mars/Base").is_err());
    }
}
