//! PRELOGIN: the client's option table and the stand-in's answer.
//!
//! tiberius quirks this follows: only tokens 0x00..=0x07 in the answer, THREADID absent or zero
//! (a non-zero value trips a `debug_assert` in tiberius), INSTOPT a single 0x00, and the
//! encryption answer chosen by [`answer_encryption`] so tiberius never starts an unplanned TLS
//! handshake.

use super::ProtocolError;

pub const ENCRYPT_OFF: u8 = 0x00;
pub const ENCRYPT_ON: u8 = 0x01;
pub const ENCRYPT_NOT_SUP: u8 = 0x02;
pub const ENCRYPT_REQ: u8 = 0x03;

const TOKEN_VERSION: u8 = 0x00;
const TOKEN_ENCRYPTION: u8 = 0x01;
const TOKEN_INSTOPT: u8 = 0x02;
const TOKEN_THREADID: u8 = 0x03;
const TOKEN_MARS: u8 = 0x04;
const TOKEN_TERMINATOR: u8 = 0xFF;

/// SQL Server 2022 RTM, 16.0.1000 (cosmetic: tiberius only stores it).
const SERVER_VERSION: [u8; 6] = [0x10, 0x00, 0x03, 0xE8, 0x00, 0x00];

/// What the stand-in needs from the client's PRELOGIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPrelogin {
    /// Raw ENCRYPTION byte; NOT_SUP when the option is absent.
    pub encryption: u8,
    /// Requested instance name, if any.
    pub instance: Option<String>,
}

/// Parses the option table (big-endian offsets and lengths, counted from the payload start).
pub fn parse(payload: &[u8]) -> Result<ClientPrelogin, ProtocolError> {
    let mut out = ClientPrelogin {
        encryption: ENCRYPT_NOT_SUP,
        instance: None,
    };
    let mut i = 0;
    loop {
        let token = *payload
            .get(i)
            .ok_or(ProtocolError::Truncated("prelogin table"))?;
        if token == TOKEN_TERMINATOR {
            break;
        }
        let entry = payload
            .get(i + 1..i + 5)
            .ok_or(ProtocolError::Truncated("prelogin entry"))?;
        let off = u16::from_be_bytes([entry[0], entry[1]]) as usize;
        let len = u16::from_be_bytes([entry[2], entry[3]]) as usize;
        let value = payload
            .get(off..off + len)
            .ok_or(ProtocolError::Truncated("prelogin value"))?;
        match token {
            TOKEN_ENCRYPTION if len >= 1 => out.encryption = value[0],
            TOKEN_INSTOPT => {
                let name: Vec<u8> = value.iter().copied().take_while(|b| *b != 0).collect();
                if !name.is_empty() {
                    out.instance = Some(String::from_utf8_lossy(&name).into_owned());
                }
            }
            _ => {}
        }
        i += 5;
    }
    Ok(out)
}

/// The stand-in's policy: NOT_SUP for a NOT_SUP client (plaintext session); ON for everyone else
/// when TLS is available; NOT_SUP otherwise, so `On`/`Required` clients get tiberius's clear
/// "Server does not allow the requested encryption level." error.
pub fn answer_encryption(client: u8, tls_available: bool) -> u8 {
    if client == ENCRYPT_NOT_SUP || !tls_available {
        ENCRYPT_NOT_SUP
    } else {
        ENCRYPT_ON
    }
}

/// Encodes the server PRELOGIN payload: VERSION, ENCRYPTION, INSTOPT, THREADID (empty), MARS.
pub fn encode_response(encryption: u8) -> Vec<u8> {
    let options: [(u8, Vec<u8>); 5] = [
        (TOKEN_VERSION, SERVER_VERSION.to_vec()),
        (TOKEN_ENCRYPTION, vec![encryption]),
        (TOKEN_INSTOPT, vec![0x00]),
        (TOKEN_THREADID, vec![]),
        (TOKEN_MARS, vec![0x00]),
    ];
    let table_len = options.len() * 5 + 1;
    let mut table = Vec::with_capacity(table_len);
    let mut data = Vec::new();
    for (token, value) in &options {
        let off = (table_len + data.len()) as u16;
        table.push(*token);
        table.extend_from_slice(&off.to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    table.push(TOKEN_TERMINATOR);
    table.extend(data);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tiberius_not_supported_capture() {
        let p: Vec<u8> = vec![
            0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00,
            0x01, 0x03, 0x00, 0x22, 0x00, 0x04, 0x04, 0x00, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x00,
            0x0D, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let c = parse(&p).unwrap();
        assert_eq!(c.encryption, ENCRYPT_NOT_SUP);
        assert_eq!(c.instance, None);
    }

    #[test]
    fn response_matches_tested_layout() {
        let r = encode_response(ENCRYPT_ON);
        let expected: Vec<u8> = vec![
            0x00, 0x00, 0x1A, 0x00, 0x06, 0x01, 0x00, 0x20, 0x00, 0x01, 0x02, 0x00, 0x21, 0x00,
            0x01, 0x03, 0x00, 0x22, 0x00, 0x00, 0x04, 0x00, 0x22, 0x00, 0x01, 0xFF, 0x10, 0x00,
            0x03, 0xE8, 0x00, 0x00, 0x01, 0x00, 0x00,
        ];
        assert_eq!(r, expected);
    }

    #[test]
    fn encryption_policy() {
        assert_eq!(answer_encryption(ENCRYPT_NOT_SUP, true), ENCRYPT_NOT_SUP);
        assert_eq!(answer_encryption(ENCRYPT_OFF, true), ENCRYPT_ON);
        assert_eq!(answer_encryption(ENCRYPT_REQ, true), ENCRYPT_ON);
        assert_eq!(answer_encryption(ENCRYPT_REQ, false), ENCRYPT_NOT_SUP);
    }
}
