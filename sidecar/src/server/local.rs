//! Insecure mode's only transport: plaintext gRPC on a Unix socket, for processes of the
//! sidecar's own user (or root) and nobody else. Over TCP, even on loopback, plaintext
//! would let any local process start and stop jobs as the service account; a Unix socket
//! carries the caller's credentials, which are checked on every connection, and the
//! socket file itself is created 0600.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::listener::{Guarded, Incoming, Limits};

/// Binds `path`, replacing a socket file left by a sidecar that is gone (one that still
/// answers is "address in use"), and makes it accessible to this user only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts connections from this user's (or root's) processes until `stop` fires; others
/// are closed at once, with a warning naming their uid and pid.
pub fn incoming(
    listener: UnixListener,
    limits: Limits,
    stop: CancellationToken,
) -> Incoming<UnixStream> {
    let me = nix::unistd::geteuid().as_raw();
    incoming_for(listener, limits, stop, move |uid| uid == me || uid == 0)
}

/// `incoming`, admitting the callers whose uid `admit` accepts.
fn incoming_for(
    listener: UnixListener,
    limits: Limits,
    stop: CancellationToken,
    admit: impl Fn(u32) -> bool + Send + 'static,
) -> Incoming<UnixStream> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = stop.cancelled() => return,
            };
            let stream = tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a local connection failed; backing off");
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_millis(100)) => continue,
                            () = stop.cancelled() => return,
                        }
                    }
                },
                () = stop.cancelled() => return,
            };
            match stream.peer_cred() {
                Ok(cred) if admit(cred.uid()) => {}
                Ok(cred) => {
                    tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused a local connection from another user");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused a local connection whose credentials cannot be read");
                    continue;
                }
            }
            if tx.send(Ok(Guarded::local(stream, permit))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn only_admitted_users_are_served_and_the_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let me = nix::unistd::geteuid().as_raw();
        let stop = CancellationToken::new();
        // An "other user": everyone but this test's uid is admitted.
        let mut incoming = incoming_for(listener, Limits::default(), stop.clone(), move |uid| {
            uid != me
        });
        let mut refused = UnixStream::connect(&path).await.unwrap();
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(10), refused.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(200), incoming.next())
                .await
                .is_err(),
            "a refused caller was handed to the server"
        );
        stop.cancel();

        // A stale socket (its listener gone) is replaced; a live one is not taken over.
        drop(incoming);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match bind(&path) {
                Ok(listener) => break listener,
                // The accept task is still winding down.
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the socket stayed live"
                    );
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("{e}"),
            }
        };
        let err = bind(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let stop = CancellationToken::new();
        let mut incoming = incoming_for(listener, Limits::default(), stop.clone(), move |uid| {
            uid == me
        });
        let _admitted = UnixStream::connect(&path).await.unwrap();
        let served = tokio::time::timeout(Duration::from_secs(10), incoming.next()).await;
        assert!(matches!(served, Ok(Some(Ok(_)))));
        stop.cancel();
    }
}
