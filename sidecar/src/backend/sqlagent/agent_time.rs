//! SQL Server Agent's integer encodings of dates, times and durations, and the conversion
//! of its server-local wall-clock times to UTC.
//!
//! `sysjobhistory.run_date` is yyyymmdd, `run_time` hhmmss without leading zeros
//! (`93005` = 09:30:05, `0` = midnight), `run_duration` is HHMMSS where the last four digits
//! are MMSS and *everything before them is hours* (not capped at 24 nor at 99).
use std::time::Duration;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, TimeZone};

/// The local start timestamp of a history row; `None` for impossible values (a corrupt row
/// or a stand-in bug must not crash the poller).
pub fn decode_date_time(run_date: i32, run_time: i32) -> Option<NaiveDateTime> {
    if run_date <= 0 || run_time < 0 {
        return None;
    }
    let (y, m, d) = (run_date / 10000, (run_date / 100) % 100, run_date % 100);
    let (h, min, s) = (run_time / 10000, (run_time / 100) % 100, run_time % 100);
    NaiveDate::from_ymd_opt(y, m as u32, d as u32)?.and_hms_opt(h as u32, min as u32, s as u32)
}

/// The elapsed time encoded in `run_duration` (negative values count as zero).
pub fn decode_duration(run_duration: i32) -> Duration {
    if run_duration <= 0 {
        return Duration::ZERO;
    }
    let d = run_duration as u64;
    Duration::from_secs((d / 10000) * 3600 + ((d / 100) % 100) * 60 + d % 100)
}

/// Unix ms UTC of a server-local wall-clock time, using the server's current UTC offset
/// (taken from `SYSDATETIMEOFFSET()` in the same batch). Around a DST change the offset of
/// the moment of the poll may differ from the one at the event by an hour; durations never
/// depend on this conversion (they come from `run_duration`).
pub fn local_to_utc_ms(local: NaiveDateTime, offset: FixedOffset) -> i64 {
    match offset.from_local_datetime(&local).single() {
        Some(t) => t.timestamp_millis(),
        None => local.and_utc().timestamp_millis() - i64::from(offset.local_minus_utc()) * 1000,
    }
}

/// The offset of this host, used when a server did not report one (the sidecar runs on the
/// SQL Server's host, so they share the time zone).
pub fn host_offset() -> FixedOffset {
    *chrono::Local::now().offset()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_dates_and_times_without_leading_zeros() {
        let t = decode_date_time(20240315, 93005).unwrap();
        assert_eq!(t.to_string(), "2024-03-15 09:30:05");
        assert_eq!(
            decode_date_time(20240315, 0).unwrap().to_string(),
            "2024-03-15 00:00:00"
        );
        assert_eq!(
            decode_date_time(20241231, 235959).unwrap().to_string(),
            "2024-12-31 23:59:59"
        );
        assert!(decode_date_time(0, 0).is_none());
        assert!(decode_date_time(20241301, 0).is_none());
        assert!(decode_date_time(20240101, 250000).is_none());
    }

    #[test]
    fn durations_keep_uncapped_hours() {
        assert_eq!(decode_duration(0), Duration::ZERO);
        assert_eq!(decode_duration(5), Duration::from_secs(5));
        assert_eq!(decode_duration(130), Duration::from_secs(90));
        assert_eq!(decode_duration(10203), Duration::from_secs(3723));
        // 25 h 0 m 1 s: more than a day stays hours.
        assert_eq!(decode_duration(250001), Duration::from_secs(25 * 3600 + 1));
        // 123 h: not truncated by a `% 1000000`.
        assert_eq!(decode_duration(1230000), Duration::from_secs(123 * 3600));
        assert_eq!(decode_duration(-1), Duration::ZERO);
    }

    #[test]
    fn converts_local_to_utc_with_the_server_offset() {
        let local = decode_date_time(20240315, 93005).unwrap();
        let plus2 = FixedOffset::east_opt(2 * 3600).unwrap();
        let utc = local_to_utc_ms(local, plus2);
        let expected = decode_date_time(20240315, 73005)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(utc, expected);
        let minus5 = FixedOffset::west_opt(5 * 3600).unwrap();
        let expected = decode_date_time(20240315, 143005)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        assert_eq!(local_to_utc_ms(local, minus5), expected);
    }
}
