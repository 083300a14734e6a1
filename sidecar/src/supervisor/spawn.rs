//! The sidecar's side: write what a supervisor needs, start it detached, ask it to stop.
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::SupervisorCommand;
use crate::backend::SupervisedJob;
use crate::journal::{JournalError, write_durably};

/// The job description, in the execution directory.
pub const JOB_FILE: &str = "job.json";
/// Its presence asks the supervisor to stop the execution; it holds the reason.
pub const STOP_FILE: &str = "stop";
/// The supervisor's stdout and stderr.
pub const LOG_FILE: &str = "supervisor.log";

/// Writes `DIR/job.json` durably (before the supervisor is spawned). Blocking.
pub fn write_job(execution_dir: &Path, job: &SupervisedJob) -> Result<(), JournalError> {
    let path = execution_dir.join(JOB_FILE);
    let json = serde_json::to_vec_pretty(job).map_err(|e| JournalError::Io {
        action: "encode the job description for",
        path: path.clone(),
        source: e.into(),
    })?;
    write_durably(&path, &json)
}

/// Starts `command --execution-dir DIR` detached from the sidecar: a process group of its
/// own, stdin null, output appended to `DIR/supervisor.log`, not killed when the handle
/// is dropped. The caller should wait on the child (to reap it) but never signal it.
pub fn spawn(command: &SupervisorCommand, execution_dir: &Path) -> io::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(execution_dir.join(LOG_FILE))?;
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .arg("--execution-dir")
        .arg(execution_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    detach(&mut cmd);
    cmd.spawn()
}

#[cfg(unix)]
fn detach(cmd: &mut Command) {
    // setpgid(0, 0) in the child before exec: signals to the sidecar's group (kill -9 of
    // the group, Ctrl-C in its terminal) do not reach the supervisor.
    cmd.process_group(0);
}

#[cfg(windows)]
fn detach(cmd: &mut Command) {
    /// `CREATE_NEW_PROCESS_GROUP`: Ctrl-Break to the sidecar's console group misses it.
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    /// `CREATE_NO_WINDOW`: a service has no desktop to show consoles on.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW);
}

/// Asks the execution's supervisor to stop it: writes `DIR/stop` holding the reason. The
/// supervisor notices within ~100 ms, ends the step's process tree (grace, then kill)
/// and journals the result. Idempotent. Blocking.
pub fn request_stop(execution_dir: &Path, reason: &str) -> Result<(), JournalError> {
    write_durably(&execution_dir.join(STOP_FILE), reason.as_bytes())
}
