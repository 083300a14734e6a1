//! The one cancellation path: a root token fed by SIGINT/SIGTERM on Unix; on Windows by
//! Ctrl-C, Ctrl-Break, closing the console and system shutdown, and, for the Windows
//! service, by the service control manager's Stop and Shutdown ([`ShutdownRequester`]).
//! A second request of any kind exits the process at once.
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT/SIGTERM; the second exits with 130.
pub fn install() -> CancellationToken {
    let (_, requests) = requests();
    install_with(requests)
}

/// Asks for shutdown from outside the async signal handlers: the Windows service control
/// handler, which runs on a thread of the service control manager's, outside the runtime.
/// A request counts as a signal: the first cancels the root token, the second exits.
#[derive(Debug, Clone)]
pub struct ShutdownRequester {
    // Unbounded so that `request` never blocks the caller (the control handler must answer
    // the service control manager at once); requests are rare control messages.
    tx: mpsc::UnboundedSender<&'static str>,
}

impl ShutdownRequester {
    /// Requests shutdown; `why` is logged ("service stop"). Callable from any thread,
    /// also before [`install_with`] runs (the request then waits for it).
    pub fn request(&self, why: &'static str) {
        // Fails only once the listener is gone, i.e. the process is already shutting down.
        let _ = self.tx.send(why);
    }
}

/// The receiving end of [`ShutdownRequester`]s, for [`install_with`].
#[derive(Debug)]
pub struct ShutdownRequests {
    rx: mpsc::UnboundedReceiver<&'static str>,
}

/// A requester and its receiving end; usable outside an async runtime.
pub fn requests() -> (ShutdownRequester, ShutdownRequests) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ShutdownRequester { tx }, ShutdownRequests { rx })
}

/// Like [`install`], and `requests` feed the same token: the first signal or request
/// cancels it, the second exits with 130. Must be called inside a Tokio runtime.
pub fn install_with(requests: ShutdownRequests) -> CancellationToken {
    listen(requests, true)
}

/// For a Windows service: only `requests` (the control handler's Stop and Shutdown) feed
/// the token, not console events. At system shutdown a service gets both the control
/// manager's Shutdown and a console shutdown event: counting both would make the second
/// cut the graceful drain short. Must be called inside a Tokio runtime.
pub fn install_for_service(requests: ShutdownRequests) -> CancellationToken {
    listen(requests, false)
}

fn listen(mut requests: ShutdownRequests, signals: bool) -> CancellationToken {
    let token = CancellationToken::new();
    let root = token.clone();
    tokio::spawn(async move {
        let why = next_request(&mut requests, signals).await;
        tracing::info!(
            cause = why,
            "shutdown requested; a second request exits at once"
        );
        root.cancel();
        let why = next_request(&mut requests, signals).await;
        eprintln!("second shutdown request ({why}): exiting now");
        std::process::exit(130);
    });
    token
}

async fn next_request(requests: &mut ShutdownRequests, signals: bool) -> &'static str {
    let signal = async {
        if signals {
            wait_for_signal().await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        why = signal => why,
        // None: every requester is gone (e.g. `install`'s, dropped at once); signals remain.
        Some(why) = requests.rx.recv() => why,
    }
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[cfg(windows)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::windows;
    // Waits for one console event; a handler that cannot be installed never fires.
    macro_rules! event {
        ($listen:expr) => {
            async {
                match $listen {
                    Ok(mut event) => {
                        event.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
    }
    tokio::select! {
        () = event!(windows::ctrl_c()) => "Ctrl-C",
        () = event!(windows::ctrl_break()) => "Ctrl-Break",
        // The console window is closing: Windows ends the process a few seconds later.
        () = event!(windows::ctrl_close()) => "console closed",
        // Delivered to non-interactive processes (services and what they start).
        () = event!(windows::ctrl_shutdown()) => "system shutdown",
    }
}

#[cfg(not(any(unix, windows)))]
async fn wait_for_signal() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "Ctrl-C"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_request_cancels_the_root_token() {
        let (requester, requests) = requests();
        // Sent before the listener exists: it waits for it.
        requester.request("service stop");
        let token = install_with(requests);
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("the request cancels the token");
    }

    #[tokio::test]
    async fn a_service_token_is_fed_by_requests() {
        let (requester, requests) = requests();
        let token = install_for_service(requests);
        assert!(!token.is_cancelled());
        requester.request("service stop");
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("the request cancels the token");
    }

    #[tokio::test]
    async fn a_requester_works_from_another_thread() {
        let (requester, requests) = requests();
        let token = install_with(requests);
        std::thread::spawn(move || requester.request("service stop"))
            .join()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), token.cancelled())
            .await
            .expect("the request cancels the token");
    }
}
