//! What `sidecar install` registers on Windows, decided without calling Windows, so that
//! it is tested on every platform: the service's name, its command line, how it starts and
//! restarts, and where it logs.
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config;

/// The service's key name (`sc.exe query agentfleet-sidecar`).
pub const SERVICE_NAME: &str = "agentfleet-sidecar";
/// The name shown in the Services console.
pub const DISPLAY_NAME: &str = "agentfleet sidecar";
pub const DESCRIPTION: &str =
    "Starts SQL Server Agent jobs and command jobs on this server for the agentfleet coordinator.";
/// The hidden subcommand the service control manager starts.
pub const SERVICE_RUN: &str = "service-run";
/// The service's log, in the state directory (a service has no stderr).
pub const LOG_FILE: &str = "sidecar.log";
/// When the log is larger than this as the service starts, it is moved to `LOG_FILE.old`
/// (replacing the previous one), so two generations at most are kept.
pub const LOG_ROTATE_BYTES: u64 = 64 * 1024 * 1024;
/// Restarts after a failure (a crash, or an exit that reports an error): the first two
/// after 5 s, as systemd's `RestartSec=5`, then every 60 s.
pub const RESTART_DELAYS: [Duration; 3] = [
    Duration::from_secs(5),
    Duration::from_secs(5),
    Duration::from_secs(60),
];
/// After a day without failures the restart count starts again.
pub const FAILURE_RESET: Duration = Duration::from_secs(24 * 60 * 60);
/// The service's exit code (service-specific) when its config cannot be loaded.
pub const EXIT_BAD_CONFIG: u32 = 2;
/// The service's exit code (service-specific) when serving failed.
pub const EXIT_FAILED: u32 = 1;

/// What `service-run` gets on its command line.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub flags: config::Flags,
    /// Where to write the log; stderr when unset (useful only when debugging by hand).
    pub log_file: Option<PathBuf>,
}

/// The service to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsService {
    pub exe: PathBuf,
    /// `service-run --config FILE --log-file FILE`.
    pub args: Vec<OsString>,
    pub log_file: PathBuf,
    /// How long a stop may take: the config's stop grace plus room for the drain, as the
    /// systemd unit's `TimeoutStopSec`. Reported to the service control manager as the
    /// stop's wait hint, and how long `uninstall` waits.
    pub stop_timeout: Duration,
}

impl WindowsService {
    /// `exe` and `config` should be absolute: the service starts in `C:\Windows\System32`.
    pub fn new(exe: &Path, config: &Path, state_dir: &Path, stop_grace: Duration) -> Self {
        let log_file = state_dir.join(LOG_FILE);
        let args = vec![
            SERVICE_RUN.into(),
            "--config".into(),
            config.as_os_str().to_owned(),
            "--log-file".into(),
            log_file.as_os_str().to_owned(),
        ];
        Self {
            exe: exe.to_owned(),
            args,
            log_file,
            stop_timeout: stop_timeout(stop_grace),
        }
    }

    /// The command line, for people to read (the service control manager gets it quoted
    /// by `windows-service`).
    pub fn command_line(&self) -> String {
        std::iter::once(self.exe.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|arg| {
                let arg = arg.to_string_lossy();
                if arg.is_empty() || arg.contains([' ', '\t']) {
                    format!("\"{arg}\"")
                } else {
                    arg.into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// What the service is, line by line: `--dry-run` prints it, `install` after doing it.
    pub fn describe(&self) -> Vec<String> {
        let restarts = RESTART_DELAYS
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        vec![
            format!("service name: {SERVICE_NAME} ({DISPLAY_NAME})"),
            format!("command: {}", self.command_line()),
            "start: automatic (delayed) at boot, as LocalSystem".to_owned(),
            format!(
                "on failure: restart after {restarts}, then every {} (count reset after a day without failures)",
                humantime::format_duration(RESTART_DELAYS[RESTART_DELAYS.len() - 1])
            ),
            format!(
                "stop: up to {} (stop_grace + 20s)",
                humantime::format_duration(self.stop_timeout)
            ),
            format!("log: {}", self.log_file.display()),
        ]
    }
}

/// The stop grace plus room for the drain, as the systemd unit's `TimeoutStopSec`.
pub fn stop_timeout(stop_grace: Duration) -> Duration {
    Duration::from_secs(stop_grace.as_secs() + 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> WindowsService {
        WindowsService::new(
            Path::new(r"C:\Program Files\agentfleet\sidecar.exe"),
            Path::new(r"C:\ProgramData\agentfleet\sidecar.toml"),
            Path::new(r"C:\ProgramData\agentfleet\state"),
            Duration::from_secs(10),
        )
    }

    #[test]
    fn runs_the_service_entry_with_the_config_and_a_log_file() {
        let svc = service();
        let args: Vec<_> = svc.args.iter().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args[..3],
            [
                "service-run",
                "--config",
                r"C:\ProgramData\agentfleet\sidecar.toml"
            ]
        );
        assert_eq!(args[3], "--log-file");
        assert!(args[4].ends_with("sidecar.log"), "{}", args[4]);
        assert_eq!(svc.stop_timeout, Duration::from_secs(30));
    }

    #[test]
    fn the_command_line_quotes_paths_with_spaces() {
        let line = service().command_line();
        assert!(
            line.starts_with(r#""C:\Program Files\agentfleet\sidecar.exe" service-run --config C:\ProgramData\agentfleet\sidecar.toml --log-file "#),
            "{line}"
        );
    }

    #[test]
    fn describes_name_start_restarts_stop_and_log() {
        let lines = service().describe().join("\n");
        for needle in [
            "service name: agentfleet-sidecar",
            "automatic (delayed) at boot",
            "restart after 5s, 5s, 1m",
            "stop: up to 30s",
            "log: ",
        ] {
            assert!(lines.contains(needle), "missing {needle:?} in\n{lines}");
        }
    }
}
