//! The TDS protocol layer, hand-written for what tiberius 0.13 sends and accepts.
//!
//! Nothing here knows about SQL Server Agent: the connection loop in `server.rs` hands decoded
//! requests to the dispatcher and encodes the answer with [`tokens`] and [`values`].

pub mod login;
pub mod ntlm;
pub mod packet;
pub mod prelogin;
pub mod rpc;
pub mod tls;
pub mod tokens;
pub mod values;

/// Encodes `s` as UTF-16LE.
pub fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Decodes UTF-16LE bytes (lossy: the stand-in only reads what tiberius wrote).
pub fn from_utf16(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// Appends a B_VARCHAR (u8 UTF-16 unit count + UTF-16LE).
pub fn put_b_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(255).collect();
    out.push(units.len() as u8);
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// Appends a US_VARCHAR (u16 UTF-16 unit count + UTF-16LE).
pub fn put_us_varchar(out: &mut Vec<u8>, s: &str) {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    out.extend_from_slice(&(units.len() as u16).to_le_bytes());
    for u in units {
        out.extend_from_slice(&u.to_le_bytes());
    }
}

/// Errors while decoding what a client sent.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("unexpected packet type 0x{0:02X}")]
    UnexpectedPacket(u8),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

/// A tiny cursor over a request payload; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.remaining() < n {
            return Err(ProtocolError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn u16_le(&mut self, what: &'static str) -> Result<u16, ProtocolError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32_le(&mut self, what: &'static str) -> Result<u32, ProtocolError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64_le(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    /// B_VARCHAR: u8 unit count + UTF-16LE.
    pub fn b_varchar(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let n = self.u8(what)? as usize;
        Ok(from_utf16(self.take(n * 2, what)?))
    }

    /// US_VARCHAR: u16 unit count + UTF-16LE.
    pub fn us_varchar(&mut self, what: &'static str) -> Result<String, ProtocolError> {
        let n = self.u16_le(what)? as usize;
        Ok(from_utf16(self.take(n * 2, what)?))
    }
}
