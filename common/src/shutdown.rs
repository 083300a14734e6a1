//! The one cancellation path: a root token fed by SIGINT/SIGTERM (Ctrl-C on Windows).
//! A second signal exits the process at once.
use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT/SIGTERM; the second exits with 130.
pub fn install() -> CancellationToken {
    let token = CancellationToken::new();
    let root = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; a second signal exits at once");
        root.cancel();
        wait_for_signal().await;
        eprintln!("second interrupt: exiting now");
        std::process::exit(130);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
