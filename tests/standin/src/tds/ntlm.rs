//! The server side of an NTLM handshake inside TDS login (LOGIN7 with integrated security),
//! for Windows principals: NEGOTIATE (in LOGIN7's SSPI field) → CHALLENGE (an SSPI token) →
//! AUTHENTICATE (the client's next packet). The NTLMv2 response is verified against the
//! password the jobs file gives the login (MS-NLMP §3.3.2), so a wrong password fails the
//! login as on a real server. There is no domain controller: the jobs file is the directory.

use super::{ProtocolError, from_utf16, utf16};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// NEGOTIATE flags the CHALLENGE offers (only bits MS-NLMP defines: sspi-rs drops a flag
/// word with unknown bits).
mod flag {
    pub const UNICODE: u32 = 0x0000_0001;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const SIGN: u32 = 0x0000_0010;
    pub const SEAL: u32 = 0x0000_0020;
    pub const NTLM: u32 = 0x0000_0200;
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    pub const EXTENDED_SESSION_SECURITY: u32 = 0x0008_0000;
    pub const TARGET_INFO: u32 = 0x0080_0000;
    pub const VERSION: u32 = 0x0200_0000;
    pub const N128: u32 = 0x2000_0000;
    pub const KEY_EXCH: u32 = 0x4000_0000;
    pub const N56: u32 = 0x8000_0000;
}

/// What the AUTHENTICATE message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub domain: String,
    pub user: String,
    pub workstation: String,
    pub nt_response: Vec<u8>,
}

impl Authenticate {
    /// `DOMAIN\user` as a Windows login is named.
    pub fn login_name(&self) -> String {
        if self.domain.is_empty() {
            self.user.clone()
        } else {
            format!("{}\\{}", self.domain, self.user)
        }
    }
}

fn message_type(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 12 || &bytes[..8] != SIGNATURE {
        return None;
    }
    Some(u32::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11],
    ]))
}

/// Whether LOGIN7's SSPI data is an NTLM NEGOTIATE message.
pub fn is_negotiate(bytes: &[u8]) -> bool {
    message_type(bytes) == Some(1)
}

/// The CHALLENGE message for `server_challenge`.
pub fn challenge(server_challenge: [u8; 8], target: &str) -> Vec<u8> {
    let name = utf16(target);
    let mut info = Vec::new();
    for (id, value) in [
        (2u16, target),
        (1, target),
        (4, "standin.local"),
        (3, "standin.local"),
    ] {
        let v = utf16(value);
        info.extend(id.to_le_bytes());
        info.extend((v.len() as u16).to_le_bytes());
        info.extend(v);
    }
    info.extend([0, 0, 0, 0]); // MsvAvEOL
    let flags = flag::UNICODE
        | flag::REQUEST_TARGET
        | flag::SIGN
        | flag::SEAL
        | flag::NTLM
        | flag::ALWAYS_SIGN
        | flag::TARGET_TYPE_DOMAIN
        | flag::EXTENDED_SESSION_SECURITY
        | flag::TARGET_INFO
        | flag::VERSION
        | flag::N128
        | flag::KEY_EXCH
        | flag::N56;
    let header = 56u32;
    let mut m = Vec::new();
    m.extend(SIGNATURE);
    m.extend(2u32.to_le_bytes());
    m.extend((name.len() as u16).to_le_bytes());
    m.extend((name.len() as u16).to_le_bytes());
    m.extend(header.to_le_bytes());
    m.extend(flags.to_le_bytes());
    m.extend(server_challenge);
    m.extend([0u8; 8]);
    m.extend((info.len() as u16).to_le_bytes());
    m.extend((info.len() as u16).to_le_bytes());
    m.extend((header + name.len() as u32).to_le_bytes());
    m.extend([10, 0, 0x61, 0x4A, 0, 0, 0, 15]); // version 10.0.19041, NTLM revision 15
    m.extend(name);
    m.extend(info);
    m
}

/// Reads an AUTHENTICATE message.
pub fn parse_authenticate(bytes: &[u8]) -> Result<Authenticate, ProtocolError> {
    if message_type(bytes) != Some(3) || bytes.len() < 64 {
        return Err(ProtocolError::Unsupported(
            "the SSPI packet is not an NTLM AUTHENTICATE message".into(),
        ));
    }
    let field = |at: usize| -> Result<&[u8], ProtocolError> {
        let len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
        let off = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        bytes
            .get(off..off + len)
            .ok_or(ProtocolError::Truncated("NTLM AUTHENTICATE field"))
    };
    Ok(Authenticate {
        nt_response: field(20)?.to_vec(),
        domain: from_utf16(field(28)?),
        user: from_utf16(field(36)?),
        workstation: from_utf16(field(44)?),
    })
}

/// HMAC-MD5 (RFC 2104, block size 64).
fn hmac_md5(key: &[u8], data: &[u8]) -> [u8; 16] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..16].copy_from_slice(&md5::compute(key).0);
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(data);
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5C).collect();
    outer.extend_from_slice(&md5::compute(&inner).0);
    md5::compute(&outer).0
}

/// Whether the NTLMv2 response proves knowledge of `password`:
/// NTProofStr = HMAC-MD5(NTOWFv2, server challenge ‖ blob), where
/// NTOWFv2 = HMAC-MD5(MD4(UTF-16(password)), UTF-16(UPPER(user) ‖ domain)).
pub fn verify(a: &Authenticate, server_challenge: [u8; 8], password: &str) -> bool {
    use md4::Digest;
    if a.nt_response.len() <= 16 {
        return false; // NTLMv1 or anonymous: refused
    }
    let nt_hash = md4::Md4::digest(utf16(password));
    let mut who = utf16(&a.user.to_uppercase());
    who.extend(utf16(&a.domain));
    let owf = hmac_md5(&nt_hash, &who);
    let (proof, blob) = a.nt_response.split_at(16);
    let mut input = server_challenge.to_vec();
    input.extend_from_slice(blob);
    hmac_md5(&owf, &input) == proof
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_md5_matches_rfc_2202() {
        let mac = hmac_md5(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac,
            [
                0x75, 0x0c, 0x78, 0x3e, 0x6a, 0xb0, 0xb5, 0x03, 0xea, 0xa8, 0x6e, 0x31, 0x0a, 0x5d,
                0xb7, 0x38
            ]
        );
    }

    #[test]
    fn challenge_is_a_type_2_message_with_target_info() {
        let c = challenge([1; 8], "STANDIN");
        assert_eq!(message_type(&c), Some(2));
        assert_eq!(&c[24..32], &[1; 8]);
        assert!(!is_negotiate(&c));
    }
}
