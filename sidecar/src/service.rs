//! `sidecar install` / `sidecar uninstall`: register the sidecar with the service manager
//! so that it starts at boot, and print what was done.
//!
//! - Linux (`systemd.rs`): a systemd unit running `sidecar serve --config FILE`.
//! - Windows (`windows.rs`): a Windows service running `sidecar service-run --config FILE`,
//!   which is `serve` under the service control manager: its Stop and Shutdown feed the
//!   same root cancellation token as SIGTERM does on Linux. What it registers is decided in
//!   `windows_spec.rs`, which compiles (and is tested) everywhere.
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod notify;
pub mod systemd;
#[cfg(windows)]
pub mod windows;
pub mod windows_spec;

pub use systemd::{UNIT_DIR, UNIT_NAME, unit_text};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "installing as a service is not supported on this platform; run `sidecar serve --config FILE` from your service manager"
    )]
    Unsupported,
    #[error("failed to {action} `{}`: {source}; run as root (e.g. with sudo), or use --dry-run and install the unit yourself", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error(
        "--user is for Linux; on Windows, set the service's account in the Services console (sc.exe config agentfleet-sidecar obj= ...)"
    )]
    UserOnLinuxOnly,
    /// A call to the Windows service control manager failed.
    #[error("failed to {action}: {detail}")]
    Windows { action: String, detail: String },
}

pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError {
    let path = path.to_owned();
    move |source| ServiceError::Io {
        action,
        path,
        source,
    }
}

/// Registers the sidecar with `config` as a service started at boot, and starts it; returns
/// what it did, one line per step. `state_dir` holds the Windows service's log file; on
/// Linux, `user` runs the service as that account (hardened; see `systemd.rs`). With
/// `dry_run`, returns what would be registered and changes nothing.
pub fn install(
    config: &Path,
    state_dir: &Path,
    stop_grace: Duration,
    user: Option<&str>,
    dry_run: bool,
) -> Result<Vec<String>, ServiceError> {
    let exe = std::env::current_exe().map_err(io("find", Path::new("the sidecar executable")))?;
    #[cfg(target_os = "linux")]
    {
        systemd::install(&exe, config, state_dir, stop_grace, user, dry_run)
    }
    #[cfg(windows)]
    {
        if user.is_some() {
            return Err(ServiceError::UserOnLinuxOnly);
        }
        windows::install(&exe, config, state_dir, stop_grace, dry_run)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = (exe, config, state_dir, stop_grace, user, dry_run);
        Err(ServiceError::Unsupported)
    }
}

/// Stops and removes the service; returns what it did. With `dry_run`, what it would do.
pub fn uninstall(dry_run: bool) -> Result<Vec<String>, ServiceError> {
    #[cfg(target_os = "linux")]
    {
        systemd::uninstall(dry_run)
    }
    #[cfg(windows)]
    {
        windows::uninstall(dry_run)
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = dry_run;
        Err(ServiceError::Unsupported)
    }
}

/// The hidden `sidecar service-run` entry: runs `serve` under the Windows service control
/// manager until it says Stop; returns the process's exit code. Call it from `main`,
/// outside any async runtime, after installing the crypto provider. Elsewhere it refuses.
pub fn run_as_windows_service(launch: windows_spec::Launch) -> u8 {
    #[cfg(windows)]
    {
        windows::run(launch)
    }
    #[cfg(not(windows))]
    {
        let _ = launch;
        eprintln!(
            "sidecar: `{}` is what the Windows service manager starts; run `sidecar serve --config FILE` instead",
            windows_spec::SERVICE_RUN
        );
        2
    }
}
