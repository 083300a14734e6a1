//! Packet framing: the 8-byte header, splitting responses at the negotiated packet size, and
//! reassembling client messages that tiberius split across packets.

use tokio::io::{AsyncRead, AsyncReadExt};

pub const HEADER_LEN: usize = 8;

/// Packet types the stand-in sends or receives.
pub mod kind {
    pub const SQL_BATCH: u8 = 0x01;
    pub const RPC: u8 = 0x03;
    pub const RESPONSE: u8 = 0x04;
    pub const ATTENTION: u8 = 0x06;
    pub const TRANSACTION_MANAGER: u8 = 0x0E;
    pub const LOGIN7: u8 = 0x10;
    /// An SSPI token following LOGIN7 (tiberius's sspi-rs path sends it as 0x10 instead).
    pub const SSPI: u8 = 0x11;
    pub const PRELOGIN: u8 = 0x12;
}

/// Status bit "end of message". tiberius compares the whole status byte with 0x01.
pub const STATUS_EOM: u8 = 0x01;

/// Smallest and largest packet sizes tiberius accepts in the PacketSize ENVCHANGE.
pub const MIN_PACKET_SIZE: usize = 512;
pub const MAX_PACKET_SIZE: usize = 32767;

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub status: u8,
    /// Header + payload, big-endian on the wire.
    pub length: u16,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            kind: b[0],
            status: b[1],
            length: u16::from_be_bytes([b[2], b[3]]),
        }
    }

    pub fn is_eom(&self) -> bool {
        self.status & STATUS_EOM != 0
    }
}

/// Frames `payload` as one message of packets of at most `packet_size` bytes. Every packet but the
/// last has status 0x00; the last has `last_status` (0x01 = EOM, 0x00 for a response that stays
/// open because more of it follows later).
pub fn frame_into(
    kind: u8,
    payload: &[u8],
    packet_size: usize,
    spid: u16,
    last_status: u8,
    next_id: &mut u8,
    out: &mut Vec<u8>,
) {
    let chunk = packet_size.clamp(MIN_PACKET_SIZE, MAX_PACKET_SIZE) - HEADER_LEN;
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(chunk).collect()
    };
    let count = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let status = if i + 1 == count { last_status } else { 0x00 };
        out.push(kind);
        out.push(status);
        out.extend_from_slice(&((c.len() + HEADER_LEN) as u16).to_be_bytes());
        out.extend_from_slice(&spid.to_be_bytes());
        *next_id = next_id.wrapping_add(1);
        out.push(*next_id);
        out.push(0);
        out.extend_from_slice(c);
    }
}

/// Convenience wrapper: one complete message (EOM on the last packet).
pub fn frame(kind: u8, payload: &[u8], packet_size: usize, spid: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
    let mut id = 0;
    frame_into(
        kind,
        payload,
        packet_size,
        spid,
        STATUS_EOM,
        &mut id,
        &mut out,
    );
    out
}

/// One reassembled client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// Reads packets until EOM and returns the joined payload. `Ok(None)` on a clean EOF between
/// messages. The packet type of the first packet names the message.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Message>> {
    let mut payload = Vec::new();
    let mut kind = None;
    loop {
        let mut hb = [0u8; HEADER_LEN];
        match r.read_exact(&mut hb).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && kind.is_none() => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
        let h = Header::parse(&hb);
        let len = (h.length as usize).checked_sub(HEADER_LEN).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "packet shorter than its header",
            )
        })?;
        kind.get_or_insert(h.kind);
        let start = payload.len();
        payload.resize(start + len, 0);
        r.read_exact(&mut payload[start..]).await?;
        if h.is_eom() {
            return Ok(Some(Message {
                kind: kind.unwrap_or(h.kind),
                payload,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_at_packet_size_with_eom_only_on_last() {
        let payload = vec![7u8; 1200];
        let out = frame(kind::RESPONSE, &payload, 512, 51);
        // 504 + 504 + 192 payload bytes.
        assert_eq!(out.len(), 1200 + 3 * HEADER_LEN);
        assert_eq!(&out[..8], &[0x04, 0x00, 0x02, 0x00, 0x00, 0x33, 0x01, 0x00]);
        assert_eq!(
            &out[512..520],
            &[0x04, 0x00, 0x02, 0x00, 0x00, 0x33, 0x02, 0x00]
        );
        assert_eq!(
            &out[1024..1032],
            &[0x04, 0x01, 0x00, 200, 0x00, 0x33, 0x03, 0x00]
        );
    }

    #[test]
    fn empty_payload_is_one_header_only_packet() {
        assert_eq!(
            frame(0x04, &[], 4096, 0),
            vec![0x04, 0x01, 0x00, 0x08, 0, 0, 1, 0]
        );
    }

    #[tokio::test]
    async fn reassembles_split_messages() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut wire = frame(kind::RPC, &payload, 512, 0);
        wire.extend(frame(kind::ATTENTION, &[], 4096, 0));
        let mut r = &wire[..];
        let m = read_message(&mut r).await.unwrap().unwrap();
        assert_eq!(
            m,
            Message {
                kind: kind::RPC,
                payload
            }
        );
        let a = read_message(&mut r).await.unwrap().unwrap();
        assert_eq!(a.kind, kind::ATTENTION);
        assert!(read_message(&mut r).await.unwrap().is_none());
    }
}
