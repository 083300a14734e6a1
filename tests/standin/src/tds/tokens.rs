//! Token encoders for the server-to-client token stream.

use super::values::{SqlType, Value, put_type_info, put_value};
use super::{put_b_varchar, put_us_varchar, utf16};

pub const COLMETADATA: u8 = 0x81;
pub const RETURNSTATUS: u8 = 0x79;
pub const ERROR: u8 = 0xAA;
pub const INFO: u8 = 0xAB;
pub const RETURNVALUE: u8 = 0xAC;
pub const LOGINACK: u8 = 0xAD;
pub const SSPI: u8 = 0xED;
pub const ROW: u8 = 0xD1;
pub const ENVCHANGE: u8 = 0xE3;
pub const DONE: u8 = 0xFD;
pub const DONEPROC: u8 = 0xFE;
pub const DONEINPROC: u8 = 0xFF;

/// DONE status bits.
pub mod done {
    pub const FINAL: u16 = 0x0000;
    pub const MORE: u16 = 0x0001;
    pub const ERROR: u16 = 0x0002;
    pub const COUNT: u16 = 0x0010;
    pub const ATTN: u16 = 0x0020;
}

/// CurCmd value other drivers document for SELECT (tiberius ignores it).
pub const CURCMD_SELECT: u16 = 0x00C1;

/// The server name reported in ERROR/INFO tokens.
pub const SERVER_NAME: &str = "SQLAGENT-STANDIN";

/// A server message: an ERROR token when `class > 10`, else an INFO token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub number: u32,
    pub state: u8,
    pub class: u8,
    pub text: String,
    pub procedure: String,
    pub line: u32,
}

impl ServerMessage {
    pub fn new(number: u32, class: u8, text: impl Into<String>) -> Self {
        Self {
            number,
            state: 1,
            class,
            text: text.into(),
            procedure: String::new(),
            line: 1,
        }
    }

    pub fn in_procedure(mut self, procedure: &str, line: u32) -> Self {
        self.procedure = procedure.to_string();
        self.line = line;
        self
    }

    pub fn with_state(mut self, state: u8) -> Self {
        self.state = state;
        self
    }

    /// Severity 10 and below are informational: tiberius only logs INFO tokens, while any ERROR
    /// token fails the request.
    pub fn is_error(&self) -> bool {
        self.class > 10
    }
}

/// Appends an ERROR or INFO token (chosen by severity).
pub fn put_message(m: &ServerMessage, out: &mut Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(&m.number.to_le_bytes());
    body.push(m.state);
    body.push(m.class);
    put_us_varchar(&mut body, &m.text);
    put_b_varchar(&mut body, SERVER_NAME);
    put_b_varchar(&mut body, &m.procedure);
    body.extend_from_slice(&m.line.to_le_bytes());
    out.push(if m.is_error() { ERROR } else { INFO });
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend(body);
}

/// Appends DONE, DONEPROC or DONEINPROC: status, curcmd, u64 row count.
pub fn put_done(token: u8, status: u16, curcmd: u16, rows: u64, out: &mut Vec<u8>) {
    out.push(token);
    out.extend_from_slice(&status.to_le_bytes());
    out.extend_from_slice(&curcmd.to_le_bytes());
    out.extend_from_slice(&rows.to_le_bytes());
}

pub fn put_return_status(status: i32, out: &mut Vec<u8>) {
    out.push(RETURNSTATUS);
    out.extend_from_slice(&status.to_le_bytes());
}

/// RETURNVALUE for an OUTPUT parameter (status 0x01).
pub fn put_return_value(
    ordinal: u16,
    name: &str,
    ty: SqlType,
    v: &Value,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.push(RETURNVALUE);
    out.extend_from_slice(&ordinal.to_le_bytes());
    put_b_varchar(out, name);
    out.push(0x01);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&0x0001u16.to_le_bytes());
    put_type_info(ty, out);
    put_value(ty, v, out)
}

/// A result-set column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
}

impl Column {
    pub fn new(name: &str, ty: SqlType) -> Self {
        Self {
            name: name.to_string(),
            ty,
            nullable: true,
        }
    }
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

pub fn put_colmetadata(cols: &[Column], out: &mut Vec<u8>) {
    out.push(COLMETADATA);
    out.extend_from_slice(&(cols.len() as u16).to_le_bytes());
    for c in cols {
        out.extend_from_slice(&0u32.to_le_bytes()); // UserType
        let flags: u16 = 0x0008 | u16::from(c.nullable); // updateable-unknown | nullable
        out.extend_from_slice(&flags.to_le_bytes());
        put_type_info(c.ty, out);
        put_b_varchar(out, &c.name);
    }
}

/// Appends a ROW token; every value must match its column's type.
pub fn put_row(cols: &[Column], values: &[Value], out: &mut Vec<u8>) -> Result<(), String> {
    if cols.len() != values.len() {
        return Err(format!(
            "row has {} values for {} columns",
            values.len(),
            cols.len()
        ));
    }
    out.push(ROW);
    for (c, v) in cols.iter().zip(values) {
        put_value(c.ty, v, out).map_err(|e| format!("column {}: {e}", c.name))?;
    }
    Ok(())
}

/// ENVCHANGE with B_VARCHAR new/old values (database 1, language 2, packet size 4).
pub fn put_envchange_text(kind: u8, new: &str, old: &str, out: &mut Vec<u8>) {
    let mut body = vec![kind];
    put_b_varchar(&mut body, new);
    put_b_varchar(&mut body, old);
    out.push(ENVCHANGE);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend(body);
}

/// ENVCHANGE type 7: SQL collation, new value 5 bytes, old value empty.
/// SSPI token: u16 length + the security blob (an NTLM CHALLENGE during login).
pub fn put_sspi(blob: &[u8], out: &mut Vec<u8>) {
    out.push(SSPI);
    out.extend_from_slice(&(blob.len() as u16).to_le_bytes());
    out.extend_from_slice(blob);
}

pub fn put_envchange_collation(collation: &[u8; 5], out: &mut Vec<u8>) {
    out.push(ENVCHANGE);
    out.extend_from_slice(&8u16.to_le_bytes());
    out.push(7);
    out.push(5);
    out.extend_from_slice(collation);
    out.push(0);
}

/// LOGINACK: interface T-SQL, TDS 7.4 in big-endian byte order, program name and version.
pub fn put_loginack(out: &mut Vec<u8>) {
    let mut body = vec![1u8];
    body.extend_from_slice(&[0x74, 0x00, 0x00, 0x04]);
    let name = "Microsoft SQL Server";
    body.push(name.encode_utf16().count() as u8);
    body.extend(utf16(name));
    body.extend_from_slice(&[16, 0, 0x03, 0xE8]);
    out.push(LOGINACK);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_token_matches_reference_bytes() {
        let m = ServerMessage::new(14262, 16, "No job").in_procedure("sp_x", 67);
        let mut out = Vec::new();
        put_message(&m, &mut out);
        // The reference uses server name "SQL1"; ours differs only there.
        assert_eq!(&out[..4], &[0xAA, 0x42, 0x00, 0xB6]);
        assert_eq!(&out[3..9], &[0xB6, 0x37, 0x00, 0x00, 0x01, 0x10]);
        assert_eq!(&out[out.len() - 4..], &[0x43, 0, 0, 0]);
        let info = ServerMessage::new(14243, 0, "Job 'x' started successfully.");
        let mut out = Vec::new();
        put_message(&info, &mut out);
        assert_eq!(out[0], INFO);
    }

    #[test]
    fn done_and_login_tokens() {
        let mut out = Vec::new();
        put_done(DONE, done::COUNT, CURCMD_SELECT, 1, &mut out);
        assert_eq!(
            out,
            vec![0xFD, 0x10, 0x00, 0xC1, 0x00, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        let mut out = Vec::new();
        put_envchange_text(1, "msdb", "master", &mut out);
        assert_eq!(&out[..5], &[0xE3, 0x17, 0x00, 0x01, 0x04]);
        let mut out = Vec::new();
        put_envchange_collation(&crate::tds::values::COLLATION, &mut out);
        assert_eq!(
            out,
            vec![
                0xE3, 0x08, 0x00, 0x07, 0x05, 0x09, 0x04, 0xD0, 0x00, 0x34, 0x00
            ]
        );
        let mut out = Vec::new();
        put_loginack(&mut out);
        assert_eq!(&out[..8], &[0xAD, 0x32, 0x00, 0x01, 0x74, 0x00, 0x00, 0x04]);
    }

    #[test]
    fn colmetadata_and_row_match_reference() {
        let cols = [
            Column::new("rc", SqlType::Int),
            Column::new("job_id", SqlType::UniqueIdentifier),
        ];
        let mut out = Vec::new();
        put_colmetadata(&cols, &mut out);
        put_row(&cols, &[Value::Int(0), Value::Null], &mut out).unwrap();
        let expected: Vec<u8> = vec![
            0x81, 0x02, 0x00, 0, 0, 0, 0, 0x09, 0x00, 0x26, 0x04, 0x02, 0x72, 0x00, 0x63, 0x00, 0,
            0, 0, 0, 0x09, 0x00, 0x24, 0x10, 0x06, 0x6A, 0x00, 0x6F, 0x00, 0x62, 0x00, 0x5F, 0x00,
            0x69, 0x00, 0x64, 0x00, 0xD1, 0x04, 0, 0, 0, 0, 0x00,
        ];
        assert_eq!(out, expected);
    }
}
