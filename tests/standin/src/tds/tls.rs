//! TLS for the two paths tiberius uses.
//!
//! * TDS 7.x: after the plaintext PRELOGIN exchange the TLS handshake travels inside TDS packets of
//!   type 0x12 in both directions; once it completes both sides speak raw TLS records.
//!   [`PreloginWrapped`] does that framing. TLS 1.2 only on this path: with TLS 1.3 the client
//!   finishes first and sends LOGIN7 raw while the server may still write session tickets wrapped
//!   in 0x12 packets, which is racy.
//! * TDS 8.0 strict: plain TLS from the first byte, ALPN `tds/8.0`, TLS 1.2 or 1.3.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::packet::{self, HEADER_LEN, kind};

/// Server certificate material and the two rustls configurations built from it.
#[derive(Clone)]
pub struct TlsMaterial {
    /// PEM of the certificate, so tests can trust it as a CA bundle.
    pub cert_pem: String,
    pub wrapped: Arc<ServerConfig>,
    pub strict: Arc<ServerConfig>,
}

impl TlsMaterial {
    /// A fresh self-signed certificate for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> anyhow::Result<Self> {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
        Self::from_parts(ck.cert.pem(), vec![ck.cert.der().clone()], key)
    }

    pub fn from_parts(
        cert_pem: String,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let wrapped = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())?;
        let mut strict = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        strict.alpn_protocols = vec![b"tds/8.0".to_vec()];
        Ok(Self {
            cert_pem,
            wrapped: Arc::new(wrapped),
            strict: Arc::new(strict),
        })
    }
}

/// Adapter that carries the TLS handshake inside 0x12 packets, then passes raw bytes through.
pub struct PreloginWrapped<S> {
    inner: S,
    passthrough: bool,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// Payload bytes of the current 0x12 packet still to hand to rustls.
    payload_left: usize,
    /// Handshake bytes written by rustls and not yet framed.
    pending: Vec<u8>,
    /// Framed bytes not yet written to the socket.
    out: Vec<u8>,
    out_pos: usize,
}

impl<S> PreloginWrapped<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            passthrough: false,
            header: [0; HEADER_LEN],
            header_filled: 0,
            payload_left: 0,
            pending: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Call once the handshake has completed: from now on bytes go straight to the socket.
    pub fn set_passthrough(&mut self) {
        self.passthrough = true;
    }
}

impl<S: AsyncWrite + Unpin> PreloginWrapped<S> {
    /// Frames pending handshake bytes and writes everything framed so far.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.pending.is_empty() {
            let mut id = 0;
            let pending = std::mem::take(&mut self.pending);
            packet::frame_into(
                kind::PRELOGIN,
                &pending,
                4096,
                0,
                packet::STATUS_EOM,
                &mut id,
                &mut self.out,
            );
        }
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PreloginWrapped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        while this.payload_left == 0 {
            let mut hb = ReadBuf::new(&mut this.header[this.header_filled..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut hb))?;
            let n = hb.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(())); // EOF
            }
            this.header_filled += n;
            if this.header_filled == HEADER_LEN {
                this.header_filled = 0;
                let h = packet::Header::parse(&this.header);
                if h.kind != kind::PRELOGIN {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "expected a 0x12 packet during the TLS handshake, got 0x{:02X}",
                            h.kind
                        ),
                    )));
                }
                this.payload_left = (h.length as usize).saturating_sub(HEADER_LEN);
            }
        }
        let want = this.payload_left.min(buf.remaining());
        let mut tmp = vec![0u8; want];
        let mut rb = ReadBuf::new(&mut tmp);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
        let got = rb.filled().len();
        if got == 0 {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        this.payload_left -= got;
        buf.put_slice(rb.filled());
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PreloginWrapped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.passthrough {
            ready!(this.poll_drain(cx))?;
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn handshake_bytes_are_framed_as_prelogin_packets() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let mut w = PreloginWrapped::new(a);
        w.write_all(b"hello").await.unwrap();
        w.flush().await.unwrap();
        let mut got = [0u8; 13];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..8], &[0x12, 0x01, 0x00, 0x0D, 0x00, 0x00, 0x01, 0x00]);
        assert_eq!(&got[8..], b"hello");

        // Reading strips the 0x12 header; after passthrough raw bytes flow.
        b.write_all(&packet::frame(kind::PRELOGIN, b"abc", 4096, 0))
            .await
            .unwrap();
        let mut r = [0u8; 3];
        w.read_exact(&mut r).await.unwrap();
        assert_eq!(&r, b"abc");
        w.set_passthrough();
        b.write_all(b"raw").await.unwrap();
        w.read_exact(&mut r).await.unwrap();
        assert_eq!(&r, b"raw");
    }
}
