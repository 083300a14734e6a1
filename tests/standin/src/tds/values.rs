//! Column types and values, encoded with the exact wire types SQL Server uses for msdb columns.
//!
//! tiberius's `FromSql` is strict (a `tinyint` is not an `int`, `datetime` is not `datetime2`), so
//! every result column states its SQL type and values are checked against it when encoding.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use uuid::Uuid;

/// SQL_Latin1_General_CP1_CI_AS: LCID 0x0409, flags 0xD0, sort id 52 (windows-1252).
pub const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

/// The SQL types the stand-in sends in result sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlType {
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Bit,
    Float,
    /// nvarchar(n), n in characters (1..=4000). `sysname` is nvarchar(128).
    NVarChar(u16),
    NVarCharMax,
    UniqueIdentifier,
    /// Legacy datetime (1/300 s ticks): what msdb's datetime columns and GETDATE() return.
    DateTime,
    /// datetime2(7), e.g. SYSUTCDATETIME().
    DateTime2,
    /// datetimeoffset(7), e.g. SYSDATETIMEOFFSET().
    DateTimeOffset,
}

/// `sysname` as SQL Server declares it.
pub const SYSNAME: SqlType = SqlType::NVarChar(128);

/// A value in a result row or a decoded parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    TinyInt(u8),
    SmallInt(i16),
    Int(i32),
    BigInt(i64),
    Bit(bool),
    Float(f64),
    Str(String),
    Guid(Uuid),
    /// A wall-clock timestamp (datetime, datetime2, or a datetime2 parameter).
    DateTime(NaiveDateTime),
    DateTimeOffset(DateTime<FixedOffset>),
    Date(NaiveDate),
    Time(NaiveTime),
    Binary(Vec<u8>),
    /// numeric/decimal: unscaled value and scale.
    Numeric(i128, u8),
}

impl Value {
    pub fn opt_str(s: Option<&str>) -> Self {
        s.map_or(Value::Null, |s| Value::Str(s.to_string()))
    }
    pub fn opt_int(v: Option<i32>) -> Self {
        v.map_or(Value::Null, Value::Int)
    }
    pub fn opt_datetime(v: Option<NaiveDateTime>) -> Self {
        v.map_or(Value::Null, Value::DateTime)
    }
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

/// Appends the TYPE_INFO of a result column.
pub fn put_type_info(ty: SqlType, out: &mut Vec<u8>) {
    match ty {
        SqlType::TinyInt => out.extend_from_slice(&[0x26, 1]),
        SqlType::SmallInt => out.extend_from_slice(&[0x26, 2]),
        SqlType::Int => out.extend_from_slice(&[0x26, 4]),
        SqlType::BigInt => out.extend_from_slice(&[0x26, 8]),
        SqlType::Bit => out.extend_from_slice(&[0x68, 1]),
        SqlType::Float => out.extend_from_slice(&[0x6D, 8]),
        SqlType::NVarChar(n) => {
            out.push(0xE7);
            out.extend_from_slice(&(n.clamp(1, 4000) * 2).to_le_bytes());
            out.extend_from_slice(&COLLATION);
        }
        SqlType::NVarCharMax => {
            out.extend_from_slice(&[0xE7, 0xFF, 0xFF]);
            out.extend_from_slice(&COLLATION);
        }
        SqlType::UniqueIdentifier => out.extend_from_slice(&[0x24, 16]),
        SqlType::DateTime => out.extend_from_slice(&[0x6F, 8]),
        SqlType::DateTime2 => out.extend_from_slice(&[0x2A, 7]),
        SqlType::DateTimeOffset => out.extend_from_slice(&[0x2B, 7]),
    }
}

fn epoch_1900() -> NaiveDate {
    NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date")
}

/// 100 ns units since midnight, 5 bytes little-endian (scale 7).
fn put_time7(t: NaiveTime, out: &mut Vec<u8>) {
    let units = u64::from(t.num_seconds_from_midnight()) * 10_000_000
        + u64::from(t.nanosecond() % 1_000_000_000) / 100;
    out.extend_from_slice(&units.to_le_bytes()[..5]);
}

/// Days since 0001-01-01, 3 bytes little-endian.
fn put_date3(d: NaiveDate, out: &mut Vec<u8>) {
    let days = (d.num_days_from_ce() - 1) as u32;
    out.extend_from_slice(&days.to_le_bytes()[..3]);
}

fn put_datetime_legacy(v: NaiveDateTime, out: &mut Vec<u8>) {
    let days = (v.date() - epoch_1900()).num_days() as i32;
    let t = v.time();
    let nanos = u64::from(t.num_seconds_from_midnight()) * 1_000_000_000
        + u64::from(t.nanosecond() % 1_000_000_000);
    // 1/300 s ticks, rounded to the nearest as SQL Server does.
    let ticks = ((nanos * 300 + 500_000_000) / 1_000_000_000) as u32;
    out.push(8);
    out.extend_from_slice(&days.to_le_bytes());
    out.extend_from_slice(&ticks.to_le_bytes());
}

fn put_plp_str(s: &str, out: &mut Vec<u8>) {
    let bytes = super::utf16(s);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    for chunk in bytes.chunks(8000) {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // terminator, required even when empty
}

/// Appends one column value of type `ty` as it appears in a ROW token.
pub fn put_value(ty: SqlType, v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match (ty, v) {
        (SqlType::NVarChar(_), Value::Null) => out.extend_from_slice(&[0xFF, 0xFF]),
        (SqlType::NVarCharMax, Value::Null) => out.extend_from_slice(&[0xFF; 8]),
        (_, Value::Null) => out.push(0),
        (SqlType::TinyInt, Value::TinyInt(x)) => out.extend_from_slice(&[1, *x]),
        (SqlType::SmallInt, Value::SmallInt(x)) => {
            out.push(2);
            out.extend_from_slice(&x.to_le_bytes());
        }
        (SqlType::Int, Value::Int(x)) => {
            out.push(4);
            out.extend_from_slice(&x.to_le_bytes());
        }
        (SqlType::BigInt, Value::BigInt(x)) => {
            out.push(8);
            out.extend_from_slice(&x.to_le_bytes());
        }
        (SqlType::Bit, Value::Bit(b)) => out.extend_from_slice(&[1, u8::from(*b)]),
        (SqlType::Float, Value::Float(f)) => {
            out.push(8);
            out.extend_from_slice(&f.to_le_bytes());
        }
        (SqlType::NVarChar(n), Value::Str(s)) => {
            let bytes = super::utf16(s);
            let max = usize::from(n.clamp(1, 4000)) * 2;
            let bytes = &bytes[..bytes.len().min(max)];
            out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        (SqlType::NVarCharMax, Value::Str(s)) => put_plp_str(s, out),
        (SqlType::UniqueIdentifier, Value::Guid(g)) => {
            out.push(16);
            out.extend_from_slice(&g.to_bytes_le());
        }
        (SqlType::DateTime, Value::DateTime(d)) => put_datetime_legacy(*d, out),
        (SqlType::DateTime2, Value::DateTime(d)) => {
            out.push(8);
            put_time7(d.time(), out);
            put_date3(d.date(), out);
        }
        (SqlType::DateTimeOffset, Value::DateTimeOffset(d)) => {
            // On the wire: UTC date and time plus the offset in minutes.
            let utc = d.naive_utc();
            out.push(10);
            put_time7(utc.time(), out);
            put_date3(utc.date(), out);
            out.extend_from_slice(&((d.offset().local_minus_utc() / 60) as i16).to_le_bytes());
        }
        (ty, v) => return Err(format!("value {v:?} does not fit column type {ty:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ty: SqlType, v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        put_value(ty, &v, &mut out).unwrap();
        out
    }

    #[test]
    fn integers_and_nulls() {
        assert_eq!(enc(SqlType::Int, Value::Int(5)), vec![4, 5, 0, 0, 0]);
        assert_eq!(enc(SqlType::TinyInt, Value::TinyInt(1)), vec![1, 1]);
        assert_eq!(enc(SqlType::Int, Value::Null), vec![0]);
        assert_eq!(enc(SYSNAME, Value::Null), vec![0xFF, 0xFF]);
        assert!(put_value(SqlType::BigInt, &Value::Int(1), &mut Vec::new()).is_err());
    }

    #[test]
    fn guid_is_in_sql_server_byte_order() {
        let g = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let b = enc(SqlType::UniqueIdentifier, Value::Guid(g));
        assert_eq!(&b[1..9], &[0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66]);
    }

    #[test]
    fn datetime_legacy_days_and_ticks() {
        let d = NaiveDate::from_ymd_opt(1900, 1, 2)
            .unwrap()
            .and_hms_opt(0, 0, 1)
            .unwrap();
        assert_eq!(
            enc(SqlType::DateTime, Value::DateTime(d)),
            vec![8, 1, 0, 0, 0, 44, 1, 0, 0]
        );
    }

    #[test]
    fn datetime2_time_then_date() {
        let d = NaiveDate::from_ymd_opt(1, 1, 2)
            .unwrap()
            .and_hms_opt(0, 0, 1)
            .unwrap();
        // 1 s = 10_000_000 units = 0x989680.
        assert_eq!(
            enc(SqlType::DateTime2, Value::DateTime(d)),
            vec![8, 0x80, 0x96, 0x98, 0, 0, 1, 0, 0]
        );
    }

    #[test]
    fn datetimeoffset_is_utc_plus_offset() {
        let d = DateTime::parse_from_rfc3339("0001-01-01T02:00:00+02:00").unwrap();
        assert_eq!(
            enc(SqlType::DateTimeOffset, Value::DateTimeOffset(d)),
            vec![10, 0, 0, 0, 0, 0, 0, 0, 0, 120, 0]
        );
    }

    #[test]
    fn plp_has_terminator_even_when_empty() {
        assert_eq!(
            enc(SqlType::NVarCharMax, Value::Str(String::new())),
            vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            put_type_info_bytes(SYSNAME),
            vec![0xE7, 0x00, 0x01, 9, 4, 0xD0, 0, 0x34]
        );
    }

    fn put_type_info_bytes(ty: SqlType) -> Vec<u8> {
        let mut v = Vec::new();
        put_type_info(ty, &mut v);
        v
    }
}
