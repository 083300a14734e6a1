//! Running the real `coordinator` binary to the end, with a deadline.
use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::binaries;
use crate::events::RunEvents;
use crate::process::run_with_deadline;
use crate::sidecar::clean_env;

/// How long one coordinator command may take before it is killed.
pub const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(120);

/// What one coordinator command did.
#[derive(Debug)]
pub struct CoordinatorOutput {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CoordinatorOutput {
    /// The exit code (None when killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The `--json` events on stdout; panics (showing the whole output) when a line is not JSON.
    pub fn events(&self) -> RunEvents {
        RunEvents::parse(&self.stdout).unwrap_or_else(|e| panic!("{e}\n{self}"))
    }
}

impl fmt::Display for CoordinatorOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        writeln!(
            f,
            "exit: {}{}",
            self.status,
            if self.timed_out {
                " (killed: deadline passed)"
            } else {
                ""
            }
        )?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)?;
        write!(f, "--- stdout ---\n{}--- end ---", self.stdout)
    }
}

/// Runs `coordinator ARGS` in `cwd` with `AGENTFLEET_HOME=home` and `NO_COLOR=1`.
pub fn run<I, S>(cwd: &Path, home: &Path, args: I, env: &[(&str, &str)]) -> CoordinatorOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(binaries::binary("coordinator"));
    cmd.args(args).current_dir(cwd);
    clean_env(&mut cmd);
    cmd.env("AGENTFLEET_HOME", home).env("NO_COLOR", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let command = format!(
        "coordinator {}",
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let finished = run_with_deadline(cmd, COORDINATOR_TIMEOUT)
        .unwrap_or_else(|e| panic!("failed to run {command}: {e}"));
    CoordinatorOutput {
        command,
        status: finished.status,
        stdout: finished.stdout,
        stderr: finished.stderr,
        timed_out: finished.timed_out,
    }
}
