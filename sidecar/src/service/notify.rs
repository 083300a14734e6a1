//! Telling systemd how the service is doing (the unit is `Type=notify`, see `systemd.rs`):
//! `READY=1` once the gRPC server listens, so that `systemctl start` returns and units
//! ordered after this one start only then; `STOPPING=1` as shutdown begins, so that
//! `systemctl status` says so while running jobs are handed over. Without `NOTIFY_SOCKET`
//! (not started by systemd, or not on Linux) these do nothing. A failure to notify is
//! logged and otherwise ignored: serving matters more than the service manager's view.
#[cfg(target_os = "linux")]
use sd_notify::NotifyState;

/// The server listens on `addr` and takes calls.
pub fn ready(addr: &str) {
    #[cfg(target_os = "linux")]
    send(
        "READY=1",
        &[
            NotifyState::Ready,
            NotifyState::Status(&format!("serving on {addr}")),
        ],
    );
    #[cfg(not(target_os = "linux"))]
    let _ = addr;
}

/// Shutdown has begun.
pub fn stopping() {
    #[cfg(target_os = "linux")]
    send(
        "STOPPING=1",
        &[
            NotifyState::Stopping,
            NotifyState::Status("shutting down: handing running jobs over"),
        ],
    );
}

#[cfg(target_os = "linux")]
fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "failed to tell systemd {what}");
    }
}
