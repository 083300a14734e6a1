//! A TCP proxy between the coordinator and a sidecar that a test can break: it forwards
//! bytes both ways untouched (TLS passes through, so mTLS still authenticates end to end),
//! and on request drops every live connection at once, or refuses new ones for a while.
//!
//! The sidecar certificates the test PKI issues are valid for 127.0.0.1, so a fleet file
//! whose endpoint is the proxy's `https://127.0.0.1:PORT` verifies as if it were the
//! sidecar's own address.
//!
//! The proxy runs on a small runtime of its own, so that synchronous tests can use it;
//! dropping it closes the listener and every connection.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::env::TestEnv;
use crate::files::{toml_path, toml_str};
use crate::sidecar::Sidecar;

/// A running proxy from `127.0.0.1:PORT` (an ephemeral port) to one upstream address.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the proxy's tasks share with its handle.
struct Shared {
    /// Bumped by `cut_all`; every connection watches it and drops itself on a change.
    cuts: watch::Sender<u64>,
    /// While set, new connections are closed as soon as they are accepted.
    paused: AtomicBool,
    accepted: AtomicU64,
    live: AtomicU64,
    severed: AtomicU64,
}

impl Proxy {
    /// Listens on an ephemeral loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("e2e-proxy")
            .enable_all()
            .build()
            .expect("a runtime for the test proxy");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the test proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("the proxy's bound address");
        let shared = Arc::new(Shared {
            cuts: watch::channel(0).0,
            paused: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            live: AtomicU64::new(0),
            severed: AtomicU64::new(0),
        });
        runtime.spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Self {
            addr,
            upstream,
            shared,
            runtime: Some(runtime),
        }
    }

    /// A proxy in front of `sidecar`.
    pub fn to_sidecar(sidecar: &Sidecar) -> Self {
        Self::start(sidecar.addr())
    }

    /// The address clients connect to (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// `https://127.0.0.1:PORT`, as a fleet file names it.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Drops every live connection at once with a TCP reset, both towards the client and
    /// towards the upstream, as a broken network would. New connections are accepted
    /// (and forwarded) as before.
    pub fn cut_all(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// From now on, closes each new connection as soon as it is accepted (live ones go on).
    pub fn pause(&self) {
        self.shared.paused.store(true, Ordering::SeqCst);
    }

    /// Forwards new connections again.
    pub fn resume(&self) {
        self.shared.paused.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far (including refused ones while paused).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections being forwarded right now.
    pub fn live(&self) -> u64 {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Live connections dropped by [`Proxy::cut_all`] so far: a test that cuts should
    /// check that its cuts did hit something.
    pub fn severed(&self) -> u64 {
        self.shared.severed.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Drops the listener and every connection task (closing their sockets).
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of descriptors or similar: let the client retry rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.paused.load(Ordering::SeqCst) {
            reset(&client);
            continue;
        }
        tokio::spawn(forward(client, upstream, Arc::clone(&shared)));
    }
}

/// Copies bytes both ways until either side closes or a cut comes.
async fn forward(mut client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    // Subscribing marks the current cut as seen: only later cuts drop this connection.
    let mut cuts = shared.cuts.subscribe();
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The upstream is down: the client sees its connection reset, as with no listener.
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    shared.live.fetch_add(1, Ordering::SeqCst);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        changed = cuts.changed() => {
            if changed.is_ok() {
                shared.severed.fetch_add(1, Ordering::SeqCst);
                reset(&client);
                reset(&server);
            }
        }
    }
    shared.live.fetch_sub(1, Ordering::SeqCst);
}

/// Makes the coming close send a reset (RST) instead of an orderly FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Writes `DIR/NAME` as a fleet file (the test's CA and `coordinator` certificate) whose
/// sidecars are reached through proxies: one `(sidecar, proxy)` pair per sidecar.
pub fn write_fleet_through(env: &TestEnv, name: &str, routes: &[(&Sidecar, &Proxy)]) -> PathBuf {
    let client = env.coordinator_cert();
    let mut text = format!(
        "[fleet.tls]\nca = {}\ncert = {}\nkey = {}\n",
        toml_path(&env.pki().ca()),
        toml_path(&client.cert),
        toml_path(&client.key)
    );
    for (sidecar, proxy) in routes {
        text += &format!(
            "\n[fleet.sidecars.{}]\nendpoint = {}\n",
            sidecar.name(),
            toml_str(proxy.endpoint())
        );
    }
    env.write_file(name, &text)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::Proxy;

    /// An upstream that echoes whatever it reads, one thread per connection.
    fn echo_server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
        let addr = listener.local_addr().expect("its address");
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back)?;
        Ok(back)
    }

    fn connect(proxy: &Proxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        stream
    }

    #[test]
    fn forwards_cuts_and_refuses_while_paused() {
        let proxy = Proxy::start(echo_server());
        let mut first = connect(&proxy);
        assert_eq!(round_trip(&mut first, b"hello").unwrap(), b"hello");

        proxy.cut_all();
        crate::wait_until(Duration::from_secs(5), "the cut to land", || {
            (proxy.severed() == 1).then_some(())
        });
        assert!(
            round_trip(&mut first, b"again").is_err(),
            "a cut connection still carried bytes"
        );

        // New connections work after a cut.
        let mut second = connect(&proxy);
        assert_eq!(round_trip(&mut second, b"after").unwrap(), b"after");

        proxy.pause();
        let mut refused = connect(&proxy);
        assert!(
            round_trip(&mut refused, b"paused").is_err(),
            "a connection made while paused carried bytes"
        );
        // ...while the live one goes on.
        assert_eq!(round_trip(&mut second, b"still").unwrap(), b"still");
        proxy.resume();
        let mut third = connect(&proxy);
        assert_eq!(round_trip(&mut third, b"resumed").unwrap(), b"resumed");
        assert_eq!(proxy.accepted(), 4);
    }
}
