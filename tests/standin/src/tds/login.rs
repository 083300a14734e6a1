//! LOGIN7 parsing and the login response.

use super::packet::{MAX_PACKET_SIZE, MIN_PACKET_SIZE};
use super::tokens::{self, ServerMessage};
use super::{ProtocolError, from_utf16, values::COLLATION};

/// The LOGIN7 fields the stand-in uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub host_name: String,
    pub user: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub database: String,
    /// Integrated security (OptionFlags2 bit 0x80): `sspi` holds the first SSPI token (an
    /// NTLM NEGOTIATE from tiberius's `AuthMethod::windows`).
    pub integrated: bool,
    pub sspi: Vec<u8>,
}

/// Reads the (offset, count) pair at `at` and returns the UTF-16 string it points to. Offsets are
/// bytes from the LOGIN7 start; counts are UTF-16 units.
fn field(payload: &[u8], at: usize) -> Result<Vec<u8>, ProtocolError> {
    let pair = payload
        .get(at..at + 4)
        .ok_or(ProtocolError::Truncated("LOGIN7 offset table"))?;
    let off = u16::from_le_bytes([pair[0], pair[1]]) as usize;
    let units = u16::from_le_bytes([pair[2], pair[3]]) as usize;
    payload
        .get(off..off + units * 2)
        .map(<[u8]>::to_vec)
        .ok_or(ProtocolError::Truncated("LOGIN7 string"))
}

/// Reverses tiberius's password obfuscation: each byte was `swap_nibbles(b) ^ 0xA5`.
pub fn decode_password(bytes: &[u8]) -> String {
    let plain: Vec<u8> = bytes
        .iter()
        .map(|b| {
            let x = b ^ 0xA5;
            x.rotate_left(4)
        })
        .collect();
    from_utf16(&plain)
}

pub fn parse(payload: &[u8]) -> Result<Login7, ProtocolError> {
    if payload.len() < 94 {
        return Err(ProtocolError::Truncated("LOGIN7 fixed part"));
    }
    let u32_at = |at: usize| {
        u32::from_le_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    Ok(Login7 {
        tds_version: u32_at(4),
        packet_size: u32_at(8),
        host_name: from_utf16(&field(payload, 36)?),
        user: from_utf16(&field(payload, 40)?),
        password: decode_password(&field(payload, 44)?),
        app_name: from_utf16(&field(payload, 48)?),
        server_name: from_utf16(&field(payload, 52)?),
        database: from_utf16(&field(payload, 68)?),
        integrated: payload[25] & 0x80 != 0,
        sspi: sspi(payload)?,
    })
}

/// The SSPI field: offset at 78, length in *bytes* at 80 (unlike the UTF-16 fields).
fn sspi(payload: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    let off = u16::from_le_bytes([payload[78], payload[79]]) as usize;
    let len = u16::from_le_bytes([payload[80], payload[81]]) as usize;
    payload
        .get(off..off + len)
        .map(<[u8]>::to_vec)
        .ok_or(ProtocolError::Truncated("LOGIN7 SSPI data"))
}

/// The packet size the stand-in agrees to: what the client asked for, within tiberius's limits.
pub fn negotiated_packet_size(requested: u32) -> usize {
    (requested as usize).clamp(MIN_PACKET_SIZE, MAX_PACKET_SIZE)
}

/// Successful login: ENVCHANGE database, INFO 5701, ENVCHANGE collation, ENVCHANGE language,
/// ENVCHANGE packet size, LOGINACK, DONE (the order of dotnet/SqlClient's TDS test server).
/// tiberius treats login as finished at the first DONE.
pub fn encode_success(database: &str, packet_size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    tokens::put_envchange_text(1, database, "master", &mut out);
    tokens::put_message(
        &ServerMessage::new(
            5701,
            0,
            format!("Changed database context to '{database}'."),
        )
        .with_state(2),
        &mut out,
    );
    tokens::put_envchange_collation(&COLLATION, &mut out);
    tokens::put_envchange_text(2, "us_english", "", &mut out);
    // Both values must parse as numbers: tiberius fails on an empty old value.
    let size = packet_size.to_string();
    tokens::put_envchange_text(4, &size, &size, &mut out);
    tokens::put_loginack(&mut out);
    tokens::put_done(tokens::DONE, tokens::done::FINAL, 0, 0, &mut out);
    out
}

/// Failed login: ERROR 18456 then DONE with the error bit; the caller closes the socket.
pub fn encode_failure(user: &str) -> Vec<u8> {
    let mut out = Vec::new();
    tokens::put_message(
        &ServerMessage::new(18456, 14, format!("Login failed for user '{user}'.")),
        &mut out,
    );
    tokens::put_done(tokens::DONE, tokens::done::ERROR, 0, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::utf16;

    /// Builds a LOGIN7 payload the way tiberius lays it out.
    fn login7(user: &str, password: &str, database: &str) -> Vec<u8> {
        let obfuscated: Vec<u8> = utf16(password)
            .iter()
            .map(|b| b.rotate_left(4) ^ 0xA5)
            .collect();
        let strings: [(usize, Vec<u8>); 6] = [
            (36, utf16("host")),
            (40, utf16(user)),
            (44, obfuscated),
            (48, utf16("tiberius")),
            (52, utf16("localhost")),
            (68, utf16(database)),
        ];
        let mut p = vec![0u8; 94];
        p[4..8].copy_from_slice(&0x7400_0004u32.to_le_bytes());
        p[8..12].copy_from_slice(&4096u32.to_le_bytes());
        for (at, s) in strings {
            let off = p.len() as u16;
            p[at..at + 2].copy_from_slice(&off.to_le_bytes());
            p[at + 2..at + 4].copy_from_slice(&((s.len() / 2) as u16).to_le_bytes());
            p.extend(s);
        }
        let len = p.len() as u32;
        p[0..4].copy_from_slice(&len.to_le_bytes());
        p
    }

    #[test]
    fn parses_fields_and_deobfuscates_password() {
        let l = parse(&login7("sidecar", "s3cr3t!", "msdb")).unwrap();
        assert_eq!(l.user, "sidecar");
        assert_eq!(l.password, "s3cr3t!");
        assert_eq!(l.app_name, "tiberius");
        assert_eq!(l.database, "msdb");
        assert_eq!(l.packet_size, 4096);
        assert_eq!(l.tds_version, 0x7400_0004);
    }

    #[test]
    fn success_response_starts_with_database_change_and_ends_with_done() {
        let r = encode_success("msdb", 4096);
        assert_eq!(&r[..5], &[0xE3, 0x17, 0x00, 0x01, 0x04]);
        assert_eq!(
            &r[r.len() - 13..],
            &[0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let f = encode_failure("x");
        assert_eq!(f[0], 0xAA);
        assert_eq!(&f[f.len() - 13..f.len() - 10], &[0xFD, 0x02, 0x00]);
    }
}
