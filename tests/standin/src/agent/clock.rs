//! Server-local time and the integer encodings the Agent writes into `sysjobhistory`.
//!
//! All Agent times are server-local wall clock with whole-second resolution; the stand-in's
//! "server local" is UTC plus the configured offset, with no DST.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Timelike, Utc};

pub fn parse_offset(s: &str) -> anyhow::Result<FixedOffset> {
    let bad = || anyhow::anyhow!("utc_offset {s:?} is not of the form +HH:MM or -HH:MM");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let secs = (h.parse::<i32>().map_err(|_| bad())? * 3600
        + m.parse::<i32>().map_err(|_| bad())? * 60)
        * sign;
    FixedOffset::east_opt(secs).ok_or_else(bad)
}

/// The stand-in's notion of "now" on the simulated server.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub offset: FixedOffset,
}

impl Clock {
    pub fn new(offset: FixedOffset) -> Self {
        Self { offset }
    }

    /// `SYSDATETIMEOFFSET()`.
    pub fn now_offset(&self) -> DateTime<FixedOffset> {
        Utc::now().with_timezone(&self.offset)
    }

    /// `GETDATE()`: local wall clock, millisecond precision as `datetime` keeps it.
    pub fn now_local(&self) -> NaiveDateTime {
        let n = self.now_offset().naive_local();
        n.with_nanosecond(n.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(n)
    }

    /// `GETDATE()` truncated to whole seconds, as the Agent stores its dates.
    pub fn now_local_seconds(&self) -> NaiveDateTime {
        truncate_seconds(self.now_local())
    }
}

pub fn truncate_seconds(t: NaiveDateTime) -> NaiveDateTime {
    t.with_nanosecond(0).unwrap_or(t)
}

/// `run_date`: yyyymmdd.
pub fn run_date(t: NaiveDateTime) -> i32 {
    use chrono::Datelike;
    t.year() * 10000 + t.month() as i32 * 100 + t.day() as i32
}

/// `run_time`: hhmmss without leading zeros (09:30:05 is 93005).
pub fn run_time(t: NaiveDateTime) -> i32 {
    t.hour() as i32 * 10000 + t.minute() as i32 * 100 + t.second() as i32
}

/// `run_duration`: HHMMSS where the hours are not capped (100 h is 1000000).
pub fn run_duration(secs: u64) -> i32 {
    let h = secs / 3600;
    let m = secs % 3600 / 60;
    let s = secs % 60;
    (h * 10000 + m * 100 + s) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn encodings() {
        let t = NaiveDate::from_ymd_opt(2024, 3, 7)
            .unwrap()
            .and_hms_opt(9, 30, 5)
            .unwrap();
        assert_eq!(run_date(t), 20240307);
        assert_eq!(run_time(t), 93005);
        assert_eq!(run_time(t.date().and_hms_opt(0, 0, 0).unwrap()), 0);
        assert_eq!(run_duration(0), 0);
        assert_eq!(run_duration(3 * 3600 + 25 * 60 + 7), 32507);
        assert_eq!(run_duration(100 * 3600), 1_000_000);
    }

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+02:00").unwrap().local_minus_utc(), 7200);
        assert_eq!(parse_offset("-05:30").unwrap().local_minus_utc(), -19800);
        assert!(parse_offset("2").is_err());
    }
}
