//! SQL batch and RPC request decoding, including the parameter types tiberius sends.

use chrono::{Duration, FixedOffset, NaiveDate, NaiveTime, TimeZone};

use super::values::{SqlType, Value};
use super::{ProtocolError, Reader, from_utf16};

/// A decoded RPC or batch parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// As sent: `stmt`/`params` carry no `@`, `@P1`… and named-procedure parameters do.
    pub name: String,
    pub output: bool,
    /// Closest result type, used to echo OUTPUT parameters back.
    pub ty: Option<SqlType>,
    pub value: Value,
}

/// Which procedure an RPC calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    Id(u16),
    Name(String),
}

/// Well-known procedure id of sp_executesql.
pub const SP_EXECUTESQL: u16 = 10;

#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc: ProcRef,
    pub params: Vec<Param>,
}

/// Skips ALL_HEADERS (its first u32 is its total length, itself included).
fn skip_all_headers(payload: &[u8]) -> Result<&[u8], ProtocolError> {
    let mut r = Reader::new(payload);
    let total = r.u32_le("ALL_HEADERS")? as usize;
    payload
        .get(total..)
        .ok_or(ProtocolError::Truncated("ALL_HEADERS"))
}

/// SQL batch: ALL_HEADERS then UTF-16LE text to the end of the message.
pub fn parse_batch(payload: &[u8]) -> Result<String, ProtocolError> {
    Ok(from_utf16(skip_all_headers(payload)?))
}

pub fn parse_rpc(payload: &[u8]) -> Result<RpcCall, ProtocolError> {
    let mut r = Reader::new(skip_all_headers(payload)?);
    let len = r.u16_le("proc name")?;
    let proc = if len == 0xFFFF {
        ProcRef::Id(r.u16_le("proc id")?)
    } else {
        ProcRef::Name(from_utf16(r.take(len as usize * 2, "proc name")?))
    };
    let _option_flags = r.u16_le("option flags")?;
    let mut params = Vec::new();
    while r.remaining() > 0 {
        params.push(parse_param(&mut r)?);
    }
    Ok(RpcCall { proc, params })
}

fn parse_param(r: &mut Reader<'_>) -> Result<Param, ProtocolError> {
    let name = r.b_varchar("param name")?;
    let status = r.u8("param status")?;
    let (ty, value) = parse_typed_value(r)?;
    Ok(Param {
        name,
        output: status & 0x01 != 0,
        ty,
        value,
    })
}

fn int_value(b: &[u8]) -> (Option<SqlType>, Value) {
    match b.len() {
        1 => (Some(SqlType::TinyInt), Value::TinyInt(b[0])),
        2 => (
            Some(SqlType::SmallInt),
            Value::SmallInt(i16::from_le_bytes([b[0], b[1]])),
        ),
        4 => (
            Some(SqlType::Int),
            Value::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (Some(SqlType::BigInt), Value::BigInt(i64::from_le_bytes(a)))
        }
        _ => (None, Value::Null),
    }
}

fn float_value(b: &[u8]) -> Value {
    match b.len() {
        4 => Value::Float(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Value::Float(f64::from_le_bytes(a))
        }
        _ => Value::Null,
    }
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
}

fn date_from(b: &[u8]) -> NaiveDate {
    let base = NaiveDate::from_ymd_opt(1, 1, 1).expect("valid date");
    base + Duration::days(le_uint(b) as i64)
}

fn time_from(b: &[u8], scale: u8) -> NaiveTime {
    let units = le_uint(b);
    let nanos = units * 10u64.pow(9 - u32::from(scale.min(7)));
    NaiveTime::MIN + Duration::nanoseconds(nanos as i64)
}

fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// Reads a PLP value; tolerates a missing terminator at the end of the message (tiberius leaves
/// it out for empty values).
fn read_plp(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, ProtocolError> {
    if r.u64_le("PLP length")? == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    while r.remaining() >= 4 {
        let n = r.u32_le("PLP chunk")? as usize;
        if n == 0 {
            break;
        }
        out.extend_from_slice(r.take(n, "PLP chunk")?);
    }
    Ok(Some(out))
}

fn parse_typed_value(r: &mut Reader<'_>) -> Result<(Option<SqlType>, Value), ProtocolError> {
    let t = r.u8("type")?;
    let fixed = |r: &mut Reader<'_>, n: usize| r.take(n, "fixed value").map(<[u8]>::to_vec);
    Ok(match t {
        0x1F => (None, Value::Null),
        0x30 => int_value(&fixed(r, 1)?),
        0x34 => int_value(&fixed(r, 2)?),
        0x38 => int_value(&fixed(r, 4)?),
        0x7F => int_value(&fixed(r, 8)?),
        0x32 => (Some(SqlType::Bit), Value::Bit(fixed(r, 1)?[0] != 0)),
        0x3E => (Some(SqlType::Float), float_value(&fixed(r, 8)?)),
        0x26 | 0x68 | 0x6D | 0x6F | 0x24 => {
            let max = r.u8("max length")? as usize;
            let len = r.u8("value length")? as usize;
            let b = r.take(len, "value")?;
            let ty = match t {
                0x68 => Some(SqlType::Bit),
                0x6D => Some(SqlType::Float),
                0x6F => Some(SqlType::DateTime),
                0x24 => Some(SqlType::UniqueIdentifier),
                _ => int_value(&vec![0u8; max]).0,
            };
            if len == 0 {
                (ty, Value::Null)
            } else {
                match t {
                    0x26 => int_value(b),
                    0x68 => (ty, Value::Bit(b[0] != 0)),
                    0x6D => (ty, float_value(b)),
                    0x24 => {
                        let mut a = [0u8; 16];
                        a.copy_from_slice(&b[..16.min(b.len())]);
                        (ty, Value::Guid(uuid::Uuid::from_bytes_le(a)))
                    }
                    _ => (ty, legacy_datetime(b)),
                }
            }
        }
        0x28 => {
            let len = r.u8("date length")? as usize;
            let b = r.take(len, "date")?;
            let v = if len == 0 {
                Value::Null
            } else {
                Value::Date(date_from(b))
            };
            (None, v)
        }
        0x29..=0x2B => {
            let scale = r.u8("scale")?;
            let len = r.u8("value length")? as usize;
            let b = r.take(len, "time value")?;
            let tl = time_len(scale);
            if len == 0 {
                (None, Value::Null)
            } else if t == 0x29 {
                (None, Value::Time(time_from(&b[..tl], scale)))
            } else {
                let dt = date_from(&b[tl..tl + 3]).and_time(time_from(&b[..tl], scale));
                if t == 0x2A {
                    (Some(SqlType::DateTime2), Value::DateTime(dt))
                } else {
                    let mins = i16::from_le_bytes([b[tl + 3], b[tl + 4]]);
                    let off = FixedOffset::east_opt(i32::from(mins) * 60)
                        .ok_or(ProtocolError::Unsupported("datetimeoffset offset".into()))?;
                    (
                        Some(SqlType::DateTimeOffset),
                        Value::DateTimeOffset(off.from_utc_datetime(&dt)),
                    )
                }
            }
        }
        0x6A | 0x6C => {
            let _max = r.u8("max length")?;
            let _precision = r.u8("precision")?;
            let scale = r.u8("scale")?;
            let len = r.u8("value length")? as usize;
            let b = r.take(len, "numeric")?;
            if len == 0 {
                (None, Value::Null)
            } else {
                let magnitude = b[1..]
                    .iter()
                    .rev()
                    .fold(0i128, |a, x| (a << 8) | i128::from(*x));
                let v = if b[0] == 1 { magnitude } else { -magnitude };
                (None, Value::Numeric(v, scale))
            }
        }
        0xE7 | 0xEF | 0xA7 | 0xAF | 0xA5 | 0xAD => {
            let max = r.u16_le("max length")?;
            let is_char = matches!(t, 0xE7 | 0xEF | 0xA7 | 0xAF);
            if is_char {
                r.take(5, "collation")?;
            }
            let bytes = if max == 0xFFFF {
                read_plp(r)?
            } else {
                let len = r.u16_le("value length")?;
                if len == 0xFFFF {
                    None
                } else {
                    Some(r.take(len as usize, "value")?.to_vec())
                }
            };
            let ty = match (t, max) {
                (0xE7, 0xFFFF) => Some(SqlType::NVarCharMax),
                (0xE7, m) => Some(SqlType::NVarChar(m / 2)),
                _ => None,
            };
            let v = match bytes {
                None => Value::Null,
                Some(b) if matches!(t, 0xE7 | 0xEF) => Value::Str(from_utf16(&b)),
                Some(b) if is_char => Value::Str(b.iter().map(|c| char::from(*c)).collect()),
                Some(b) => Value::Binary(b),
            };
            (ty, v)
        }
        other => {
            return Err(ProtocolError::Unsupported(format!(
                "parameter type 0x{other:02X}"
            )));
        }
    })
}

fn legacy_datetime(b: &[u8]) -> Value {
    let base = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
    if b.len() == 8 {
        let days = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let ticks = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let nanos = u64::from(ticks) * 1_000_000_000 / 300;
        Value::DateTime(
            (base + Duration::days(i64::from(days))).and_time(NaiveTime::MIN)
                + Duration::nanoseconds(nanos as i64),
        )
    } else {
        let days = u16::from_le_bytes([b[0], b[1]]);
        let mins = u16::from_le_bytes([b[2], b[3]]);
        Value::DateTime(
            (base + Duration::days(i64::from(days))).and_time(NaiveTime::MIN)
                + Duration::minutes(i64::from(mins)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::utf16;

    fn all_headers() -> Vec<u8> {
        let mut h = vec![0x16, 0, 0, 0, 0x12, 0, 0, 0, 0x02, 0];
        h.extend([0u8; 8]);
        h.extend([1, 0, 0, 0]);
        h
    }

    #[test]
    fn batch_text() {
        let mut p = all_headers();
        p.extend(utf16("SELECT 1"));
        assert_eq!(parse_batch(&p).unwrap(), "SELECT 1");
    }

    #[test]
    fn sp_executesql_with_int_guid_null_and_datetime2() {
        let mut p = all_headers();
        p.extend([0xFF, 0xFF, 0x0A, 0x00, 0x00, 0x00]);
        // stmt
        p.push(4);
        p.extend(utf16("stmt"));
        p.extend([0x00, 0xE7, 0x40, 0x1F, 0, 0, 0, 0, 0]);
        let s = utf16("x");
        p.extend((s.len() as u16).to_le_bytes());
        p.extend(s);
        // @P1 int = 5
        p.push(3);
        p.extend(utf16("@P1"));
        p.extend([0x00, 0x26, 0x04, 0x04, 5, 0, 0, 0]);
        // @P2 uniqueidentifier
        let g = uuid::Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        p.push(3);
        p.extend(utf16("@P2"));
        p.extend([0x00, 0x24, 0x10, 0x10]);
        p.extend(g.to_bytes_le());
        // @P3 bare NULL, @P4 datetime2(7) 0001-01-02 00:00:01
        p.push(3);
        p.extend(utf16("@P3"));
        p.extend([0x00, 0x1F]);
        p.push(3);
        p.extend(utf16("@P4"));
        p.extend([0x00, 0x2A, 0x07, 0x08, 0x80, 0x96, 0x98, 0, 0, 1, 0, 0]);
        let call = parse_rpc(&p).unwrap();
        assert_eq!(call.proc, ProcRef::Id(SP_EXECUTESQL));
        assert_eq!(call.params[0].value, Value::Str("x".into()));
        assert_eq!(call.params[1].value, Value::Int(5));
        assert_eq!(call.params[2].value, Value::Guid(g));
        assert_eq!(call.params[3].value, Value::Null);
        let expected = NaiveDate::from_ymd_opt(1, 1, 2)
            .unwrap()
            .and_hms_opt(0, 0, 1)
            .unwrap();
        assert_eq!(call.params[4].value, Value::DateTime(expected));
    }

    #[test]
    fn plp_without_terminator_is_tolerated() {
        let mut r_bytes = vec![0xE7, 0xFF, 0xFF, 0, 0, 0, 0, 0];
        r_bytes.extend([0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        r_bytes.extend(2u32.to_le_bytes());
        r_bytes.extend(utf16("a"));
        let mut r = Reader::new(&r_bytes);
        let (_, v) = parse_typed_value(&mut r).unwrap();
        assert_eq!(v, Value::Str("a".into()));
    }
}
