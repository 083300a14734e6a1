//! The sidecar's own accept loop, in front of tonic: what a server on a production
//! database host needs and tonic's built-in listener lacks.
//!
//! - **Bounded connections.** At most `MAX_CONNECTIONS` at once (TLS handshakes
//!   included), and at most `MAX_CONNECTIONS_PER_PEER` from one IP address, so a flood of
//!   idle sockets cannot take every file descriptor from running jobs' journals. When
//!   full, the loop stops accepting (the kernel's backlog queues, then refuses) rather
//!   than accepting and dropping.
//! - **TLS handshake timeout.** A client has `HANDSHAKE_TIMEOUT` to finish its handshake
//!   (tonic's own acceptor waits forever for a ClientHello).
//! - **TCP keepalive** on every accepted socket, so a peer that vanished is noticed.
//! - **No busy loop on EMFILE.** Out of descriptors, accept fails at once and again; the
//!   loop backs off for `ACCEPT_BACKOFF` instead of spinning (tonic's loop ends or spins).
//!
//! Each accepted connection is handed to tonic through a bounded channel as a `Guarded`
//! stream that holds its connection permits until tonic drops it. Authorization (which
//! certificate may call) stays in `auth.rs`: this module only runs the TLS handshake that
//! checks the client certificate chains to `client_ca`.
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

/// Connections (TLS handshakes included) served at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections from one IP address at once (a coordinator needs one or two).
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// How long a client has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before TCP keepalive probes start.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Pause after an accept error such as EMFILE (no busy loop).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds the accept loop keeps (the constants above unless a test says otherwise).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_peer: usize,
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            max_per_peer: MAX_CONNECTIONS_PER_PEER,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }
}

/// Connections ready for tonic (after the TLS handshake, or local ones; see `local`).
pub type Incoming<S> = tokio_stream::wrappers::ReceiverStream<std::io::Result<Guarded<S>>>;

/// Per-IP connection counts; an entry lives while its count is above zero.
struct PeerCounts {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PeerCounts {
    fn try_take(self: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its peer's count; given back on drop.
struct PeerSlot {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut map = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// An accepted connection and the permits it holds while tonic serves it.
pub struct Guarded<S> {
    inner: S,
    _permit: OwnedSemaphorePermit,
    /// TCP only: its place in the per-address count.
    _peer: Option<PeerSlot>,
}

impl<S> Guarded<S> {
    /// A connection on a local (Unix) socket: no per-address count.
    #[cfg(unix)]
    pub(super) fn local(inner: S, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
            _peer: None,
        }
    }
}

/// Accepts TLS connections on `listener` until `stop` fires.
pub fn tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    stop: CancellationToken,
) -> Incoming<tokio_rustls::server::TlsStream<TcpStream>> {
    spawn(listener, limits, stop, move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    None
                }
            }
        }
    })
}

/// Accepts plaintext TCP connections until `stop` fires: the caps without TLS, for tests
/// (the sidecar serves plaintext on a Unix socket only, see `local`).
#[cfg(test)]
pub fn plaintext(
    listener: TcpListener,
    limits: Limits,
    stop: CancellationToken,
) -> Incoming<TcpStream> {
    spawn(listener, limits, stop, |tcp| async move { Some(tcp) })
}

fn spawn<S, F, Fut>(
    listener: TcpListener,
    limits: Limits,
    stop: CancellationToken,
    handshake: F,
) -> Incoming<S>
where
    S: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = Option<S>> + Send + 'static,
{
    // Overload policy: tonic takes connections as fast as it can; when it cannot, a
    // finished handshake waits here (bounded by the connection permits anyway).
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let peers = Arc::new(PeerCounts {
            max: limits.max_per_peer,
            counts: Mutex::default(),
        });
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = stop.cancelled() => return,
            };
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(pair) => pair,
                    Err(e) => {
                        accept_failed(&e);
                        tokio::select! {
                            () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                            () = stop.cancelled() => return,
                        }
                    }
                },
                () = stop.cancelled() => return,
            };
            let Some(peer) = peers.try_take(addr.ip()) else {
                tracing::warn!(peer = %addr.ip(), limit = limits.max_per_peer, "refused a connection: too many from one address");
                continue; // dropping `tcp` closes it
            };
            set_keepalive(&tcp);
            let ready = handshake(tcp);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(inner) = ready.await {
                    let guarded = Guarded {
                        inner,
                        _permit: permit,
                        _peer: Some(peer),
                    };
                    let _ = tx.send(Ok(guarded)).await;
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Raises this process's open-file limit to its hard limit (Unix), so that the connection
/// cap above, not a low default soft limit of 1024, is what bounds connections, and
/// running jobs' journals keep their descriptors. Returns the limit now in force.
#[cfg(unix)]
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
        return Some(soft);
    }
    Some(hard)
}

/// Windows has no per-process descriptor limit for sockets to raise.
#[cfg(not(unix))]
pub fn raise_fd_limit() -> Option<u64> {
    None
}

/// Logs an accept error once per burst: EMFILE under a flood would repeat thousands of
/// times a second.
fn accept_failed(e: &std::io::Error) {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_MS: AtomicI64 = AtomicI64::new(0);
    let now = agentfleet_common::now_ms();
    if now - LAST_MS.load(Ordering::Relaxed) >= 10_000 {
        LAST_MS.store(now, Ordering::Relaxed);
        tracing::warn!(error = %e, "accepting a connection failed (out of file descriptors?); backing off");
    }
}

fn set_keepalive(tcp: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "could not set TCP keepalive");
    }
    let _ = tcp.set_nodelay(true);
}

impl<S: Connected> Connected for Guarded<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
