//! The accept loop's bounds, on real sockets: idle handshakes time out, one address cannot
//! take more than its share, and the total is capped (new connections wait, not fail).
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;

/// Bound for anything these tests wait for; each is met in milliseconds when it works.
const WAIT: Duration = Duration::from_secs(10);

async fn bound() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A client connection from `from` (another loopback address is another peer).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    socket.connect(to).await.unwrap()
}

/// True once the server has closed `stream` (EOF or reset), within `WAIT`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

fn limits(max_connections: usize, max_per_peer: usize) -> Limits {
    Limits {
        max_connections,
        max_per_peer,
        handshake_timeout: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn a_client_that_never_sends_a_client_hello_is_closed() {
    agentfleet_common::tls::install_crypto_provider();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let (listener, addr) = bound().await;
    let stop = CancellationToken::new();
    let _incoming = tls(
        listener,
        TlsAcceptor::from(Arc::new(config)),
        limits(8, 8),
        stop.clone(),
    );
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_by_server(&mut idle).await,
        "an idle connection was kept open past the handshake timeout"
    );
    stop.cancel();
}

#[tokio::test]
async fn one_address_gets_at_most_its_share_and_others_still_get_in() {
    let (listener, addr) = bound().await;
    let stop = CancellationToken::new();
    let mut incoming = plaintext(listener, limits(16, 2), stop.clone());
    let _a = connect_from([127, 0, 0, 2], addr).await;
    let _b = connect_from([127, 0, 0, 2], addr).await;
    let mut served = Vec::new();
    for _ in 0..2 {
        // Held: a served connection keeps its place until tonic drops it.
        let conn = tokio::time::timeout(WAIT, incoming.next())
            .await
            .expect("the first two connections are served");
        served.push(conn.unwrap().unwrap());
    }
    let mut third = connect_from([127, 0, 0, 2], addr).await;
    assert!(
        closed_by_server(&mut third).await,
        "a third connection from one address was kept"
    );
    // Another address is not starved by the first one's flood.
    let _other = connect_from([127, 0, 0, 3], addr).await;
    let served = tokio::time::timeout(WAIT, incoming.next()).await;
    assert!(matches!(served, Ok(Some(Ok(_)))), "{:?}", served.is_ok());
    stop.cancel();
}

#[tokio::test]
async fn past_the_total_cap_a_connection_waits_for_a_free_place() {
    let (listener, addr) = bound().await;
    let stop = CancellationToken::new();
    let mut incoming = plaintext(listener, limits(2, 16), stop.clone());
    let _a = connect_from([127, 0, 0, 4], addr).await;
    let _b = connect_from([127, 0, 0, 5], addr).await;
    let first = tokio::time::timeout(WAIT, incoming.next()).await.unwrap();
    let _second = tokio::time::timeout(WAIT, incoming.next()).await.unwrap();
    // The third is left in the kernel's backlog: not served while two are held...
    let _c = connect_from([127, 0, 0, 6], addr).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), incoming.next())
            .await
            .is_err(),
        "a third connection was served past the cap of two"
    );
    // ...and served as soon as one of them ends.
    drop(first);
    let third = tokio::time::timeout(WAIT, incoming.next()).await;
    assert!(matches!(third, Ok(Some(Ok(_)))));
    stop.cancel();
}
