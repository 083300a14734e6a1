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
/// own, stderr (its log) appended to `DIR/supervisor.log`, stdout a pipe on which it says
/// "the journal grew" (see `run::notify_progress`), stdin a pipe on which the sidecar says
/// "look at the stop file now" (see `run::watch_for_stop`), not killed when the handle is
/// dropped. The caller should wait on the child (to reap it) but never signal it.
pub fn spawn(command: &SupervisorCommand, execution_dir: &Path) -> io::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(execution_dir.join(LOG_FILE))?;
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .arg("--execution-dir")
        .arg(execution_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(false);
    spawn_detached(&mut cmd)
}

#[cfg(unix)]
fn spawn_detached(cmd: &mut Command) -> io::Result<Child> {
    // setpgid(0, 0) in the child before exec: signals to the sidecar's group (kill -9 of
    // the group, Ctrl-C in its terminal) do not reach the supervisor.
    cmd.process_group(0);
    cmd.spawn()
}

#[cfg(windows)]
fn spawn_detached(cmd: &mut Command) -> io::Result<Child> {
    /// `CREATE_NEW_PROCESS_GROUP`: Ctrl-C and Ctrl-Break for the sidecar's group miss it.
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    /// `CREATE_NO_WINDOW`: a console of its own, never shown, instead of the sidecar's, so
    /// that closing the sidecar's console does not reach it. A console rather than none
    /// (`DETACHED_PROCESS`): console processes get the system-shutdown event, on which the
    /// supervisor stops its job and journals CANCELED instead of being cut off (LOST).
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    /// `CREATE_BREAKAWAY_FROM_JOB`: when the sidecar runs inside a Job Object (a terminal,
    /// a CI agent, a process manager), the supervisor must not die with that job.
    const CREATE_BREAKAWAY_FROM_JOB: u32 = 0x0100_0000;
    /// `ERROR_ACCESS_DENIED`: the sidecar's job does not allow breaking away.
    const ERROR_ACCESS_DENIED: i32 = 5;
    let flags = CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW;
    cmd.creation_flags(flags | CREATE_BREAKAWAY_FROM_JOB);
    match cmd.spawn() {
        Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED) => {
            tracing::warn!(
                "the sidecar runs in a Job Object that forbids breaking away: this supervisor \
                 ends when that job is closed"
            );
            cmd.creation_flags(flags);
            cmd.spawn()
        }
        result => result,
    }
}

/// Asks the execution's supervisor to stop it: creates `DIR/stop`, then writes the
/// reason into it. The supervisor notices within ~100 ms, ends the step's process tree
/// (grace, then kill) and journals the result. The empty file is the request already,
/// so a full disk (the reason cannot be written) does not keep a job from stopping; only
/// failing to create the file is an error. Idempotent. Blocking.
pub fn request_stop(execution_dir: &Path, reason: &str) -> Result<(), JournalError> {
    let path = execution_dir.join(STOP_FILE);
    // An empty file takes an inode but no data block: it works on a full disk.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| JournalError::Io {
            action: "create",
            path: path.clone(),
            source,
        })?;
    if let Err(e) = write_durably(&path, reason.as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "could not write the stop reason; the (empty) stop file asks the supervisor to stop all the same");
    }
    Ok(())
}
