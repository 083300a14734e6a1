//! Reading parameters by name with the conversions sp_executesql would apply.

use uuid::Uuid;

use crate::tds::rpc::Param;
use crate::tds::tokens::ServerMessage;
use crate::tds::values::Value;

pub struct Params<'a> {
    params: &'a [Param],
}

/// `Must declare the scalar variable "@P1".` — what SQL Server says about a missing parameter.
fn undeclared(name: &str) -> ServerMessage {
    ServerMessage::new(
        137,
        15,
        format!("Must declare the scalar variable \"{name}\"."),
    )
}

fn conversion(to: &str) -> ServerMessage {
    ServerMessage::new(
        8169,
        16,
        format!("Conversion failed when converting from a character string to {to}."),
    )
}

impl<'a> Params<'a> {
    pub fn new(params: &'a [Param]) -> Self {
        Self { params }
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| &p.value)
    }

    pub fn all(&self) -> &'a [Param] {
        self.params
    }

    fn required(&self, name: &str) -> Result<&'a Value, ServerMessage> {
        self.get(name).ok_or_else(|| undeclared(name))
    }

    /// A uniqueidentifier parameter (a GUID string converts as SQL Server would).
    pub fn guid(&self, name: &str) -> Result<Option<Uuid>, ServerMessage> {
        match self.required(name)? {
            Value::Null => Ok(None),
            Value::Guid(g) => Ok(Some(*g)),
            Value::Str(s) => parse_guid(s)
                .map(Some)
                .ok_or_else(|| conversion("uniqueidentifier")),
            other => Err(ServerMessage::new(
                206,
                16,
                format!(
                    "Operand type clash: {} is incompatible with uniqueidentifier",
                    type_name(other)
                ),
            )),
        }
    }

    /// An nvarchar parameter.
    pub fn text(&self, name: &str) -> Result<Option<String>, ServerMessage> {
        match self.required(name)? {
            Value::Null => Ok(None),
            Value::Str(s) => Ok(Some(s.clone())),
            Value::Guid(g) => Ok(Some(g.to_string().to_uppercase())),
            Value::Int(i) => Ok(Some(i.to_string())),
            Value::BigInt(i) => Ok(Some(i.to_string())),
            other => Ok(Some(format!("{other:?}"))),
        }
    }

    /// An int parameter.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ServerMessage> {
        match self.required(name)? {
            Value::Null => Ok(None),
            Value::TinyInt(v) => Ok(Some(i64::from(*v))),
            Value::SmallInt(v) => Ok(Some(i64::from(*v))),
            Value::Int(v) => Ok(Some(i64::from(*v))),
            Value::BigInt(v) => Ok(Some(*v)),
            Value::Bit(b) => Ok(Some(i64::from(*b))),
            Value::Str(s) => s.trim().parse().map(Some).map_err(|_| {
                ServerMessage::new(
                    245,
                    16,
                    format!("Conversion failed when converting the nvarchar value '{s}' to data type int."),
                )
            }),
            other => Err(ServerMessage::new(
                206,
                16,
                format!("Operand type clash: {} is incompatible with int", type_name(other)),
            )),
        }
    }
}

/// SQL Server accepts GUIDs with or without braces, any case.
pub fn parse_guid(s: &str) -> Option<Uuid> {
    let t = s.trim().trim_start_matches('{').trim_end_matches('}');
    if t.len() != 36 {
        return None;
    }
    Uuid::parse_str(t).ok()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::TinyInt(_) => "tinyint",
        Value::SmallInt(_) => "smallint",
        Value::Int(_) => "int",
        Value::BigInt(_) => "bigint",
        Value::Bit(_) => "bit",
        Value::Float(_) => "float",
        Value::Str(_) => "nvarchar",
        Value::Guid(_) => "uniqueidentifier",
        Value::DateTime(_) => "datetime2",
        Value::DateTimeOffset(_) => "datetimeoffset",
        Value::Date(_) => "date",
        Value::Time(_) => "time",
        Value::Binary(_) => "varbinary",
        Value::Numeric(..) => "numeric",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: Value) -> Param {
        Param {
            name: name.into(),
            output: false,
            ty: None,
            value,
        }
    }

    #[test]
    fn conversions_and_missing_parameters() {
        let g = Uuid::from_u128(7);
        let ps = [
            p("@P1", Value::Str(format!("{{{g}}}"))),
            p("@P2", Value::Str("x".into())),
        ];
        let params = Params::new(&ps);
        assert_eq!(params.guid("@P1").unwrap(), Some(g));
        assert_eq!(params.guid("@P2").unwrap_err().number, 8169);
        assert_eq!(params.int("@P2").unwrap_err().number, 245);
        assert_eq!(params.int("@P3").unwrap_err().number, 137);
    }
}
