//! One supervisor process per command-job execution, so that the job survives the sidecar
//! (the containerd-shim idea): a sidecar killed with kill -9, restarted, or upgraded
//! finds its command jobs still running, and nothing they print is lost or shown twice.
//!
//! ## The execution directory (`state_dir/executions/<id>/`)
//!
//! | file | written by | what |
//! |---|---|---|
//! | `execution.json` | sidecar, before the spawn | the record (with `supervised = true`) |
//! | `job.json` | sidecar, before the spawn | the job: steps, env, params' names, `stop_grace` |
//! | `events.pb` | sidecar (Accepted), then the supervisor | the journal |
//! | `lock` | the supervisor holds an exclusive lock on it for its whole life | liveness |
//! | `stop` | sidecar (StopJob), holds the reason (or nothing, on a full disk) | stop request |
//! | `supervisor.log` | the supervisor's stdout and stderr | its own log |
//!
//! ## Who does what
//!
//! - **The sidecar** writes `execution.json` (+ Accepted) and `job.json` durably, then spawns
//!   `agentfleet-supervisor --execution-dir DIR` when that lean binary is installed beside
//!   it, else `<program> supervise --execution-dir DIR` (`SupervisorCommand`: the running
//!   binary itself, `sidecar` or `coordinator`, both of which offer the hidden `supervise`
//!   entry). It then only reads: it reads `events.pb` when the supervisor says it grew (a
//!   byte on the supervisor's stdout pipe) and polls its length as a fallback (see
//!   `executions::supervised`), folds new events into the execution's `Progress` (which
//!   wakes Watch streams and frees the slot on Finished).
//! - **The supervisor** owns the execution: under its lock it checks that the journal holds
//!   neither Started nor Finished (so it never runs a job twice), then runs the existing
//!   command backend in-process (steps, retries, goto, timeouts, process groups) with the
//!   existing journal writer. It polls for `stop` every 100 ms; SIGTERM and SIGINT stop
//!   the job too (a machine shutting down gets a journaled CANCELED, not a LOST); SIGHUP
//!   is ignored. It exits once Finished is on disk. Should the journal not take writes
//!   (a full disk), its writer stops the job, and if even the Finished event cannot be
//!   written within a few seconds the supervisor exits with `EXIT_JOURNAL_UNWRITABLE`:
//!   the sidecar then publishes the end ("journal write failed: …") and writes it later.
//!
//! ## Liveness without PIDs
//!
//! Liveness is the lock: whoever gets `DIR/lock` with a non-blocking try knows that no
//! supervisor is alive, and keeps it while closing the journal, so that a late supervisor
//! cannot race. No pid is ever signalled after a restart, so pid reuse cannot hurt. The
//! lock file is opened close-on-exec, so a step's process left behind by a killed
//! supervisor never holds it.
//!
//! ## Detaching
//!
//! The supervisor starts in a process group of its own (`setpgid` at spawn, atomic), with
//! stdin null and its output in `supervisor.log`, so kill -9 of the sidecar, of the
//! sidecar's process group, or Ctrl-C in the sidecar's terminal do not reach it. systemd
//! would still kill it with the rest of the unit's cgroup: the unit written by `sidecar
//! install` sets `KillMode=process` (see `service.rs`). When the sidecar stops gracefully
//! it hands running command executions over to their supervisors instead of stopping
//! them; the sidecar started next re-attaches (see `executions::recovery`).
//!
//! On Windows the supervisor starts in a new process group with a hidden console of its own
//! (breaking away from the sidecar's Job Object, if it runs in one), so Ctrl-C or closing
//! the sidecar's console does not reach it, and the service control manager does not stop
//! it with the service. Ctrl-C, Ctrl-Break, its console closing and system shutdown stop
//! the job; a user logoff is ignored. See `spawn.rs` and `run.rs`.
//!
//! A change from the first sketch: the supervisor is not moved to a new *session*, because
//! `setsid` must run in the child between fork and exec (unsafe code, which this crate
//! forbids) or fails in a process-group leader. A process group of its own already keeps
//! terminal and group signals away; SIGHUP, which a closing terminal could still send, is
//! caught and ignored.
use std::ffi::OsString;
use std::path::PathBuf;

mod lock;
mod run;
mod spawn;

pub use lock::ExecutionLock;
pub use spawn::{JOB_FILE, LOG_FILE, STOP_FILE, request_stop, spawn, write_job};

/// The supervisor's exit code when the journal could not be written: it stopped the job
/// and could not write the Finished event either; the sidecar ends the execution
/// ("journal write failed: …") and keeps trying to write it.
pub const EXIT_JOURNAL_UNWRITABLE: u8 = 3;

/// The hidden subcommand's name: `<program> supervise --execution-dir DIR`.
pub const SUBCOMMAND: &str = "supervise";

/// How the sidecar starts a supervisor: `program args... --execution-dir DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// The lean supervisor binary's file name.
#[cfg(windows)]
pub const LEAN_BINARY: &str = "agentfleet-supervisor.exe";
/// The lean supervisor binary's file name.
#[cfg(not(windows))]
pub const LEAN_BINARY: &str = "agentfleet-supervisor";

impl SupervisorCommand {
    /// The lean `agentfleet-supervisor` binary when it is installed beside the running one
    /// (it links only what a supervisor needs, so it starts faster and smaller than the
    /// whole sidecar); otherwise the running binary's own `supervise` entry (`sidecar`, or
    /// `coordinator` for the demo's in-process sidecars). Falls back to `sidecar` on the
    /// PATH when the running binary cannot be found.
    pub fn this_program() -> Self {
        match std::env::current_exe() {
            Ok(exe) => Self::beside(&exe),
            Err(_) => Self::of("sidecar"),
        }
    }

    /// The lean binary beside `exe` if there is one, else `exe supervise`.
    fn beside(exe: &std::path::Path) -> Self {
        match exe.parent().map(|dir| dir.join(LEAN_BINARY)) {
            Some(lean) if lean.is_file() => Self::lean(lean),
            _ => Self::of(exe),
        }
    }

    /// The lean binary at `program`: `program --execution-dir DIR`.
    pub fn lean(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// `program supervise`: for a binary that offers the entry (e.g. tests naming the
    /// `sidecar` binary).
    pub fn of(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: vec![SUBCOMMAND.into()],
        }
    }
}

impl Default for SupervisorCommand {
    fn default() -> Self {
        Self::this_program()
    }
}

/// The arguments of the hidden `supervise` entry.
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// The execution's directory (`state_dir/executions/<id>`).
    #[arg(long, value_name = "DIR")]
    pub execution_dir: PathBuf,
}

/// The supervisor's entry point (`sidecar supervise` and `coordinator supervise`): runs
/// one execution to its end. Call it from `main`, outside any async runtime. Exit code 0
/// when the execution finished (or another supervisor owns it, or it had already run),
/// `EXIT_JOURNAL_UNWRITABLE` when the journal could not be written, 1 when the
/// supervisor could not do its work (see `supervisor.log`).
pub fn main(args: &SuperviseArgs) -> u8 {
    agentfleet_common::telemetry::init("info", agentfleet_common::telemetry::LogFormat::Plain);
    // One execution needs no worker pool: a current-thread runtime starts faster and costs
    // two threads less per running job (file I/O still goes to the blocking pool).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("supervisor: failed to start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(run::supervise(&args.execution_dir));
    // Everything the execution needed is done (its journal is written); a read of the
    // sidecar's pipe still pending on a blocking thread must not hold the exit.
    runtime.shutdown_background();
    match result {
        Ok(done) => {
            tracing::info!(execution_dir = %args.execution_dir.display(), ?done, "supervisor done");
            0
        }
        Err(e) => {
            tracing::error!(execution_dir = %args.execution_dir.display(), error = %e, "supervisor failed");
            match e {
                run::SuperviseError::JournalUnwritable => EXIT_JOURNAL_UNWRITABLE,
                _ => 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lean_binary_beside_the_sidecar_is_preferred() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = dir.path().join("sidecar");
        std::fs::write(&sidecar, b"").unwrap();
        assert_eq!(
            SupervisorCommand::beside(&sidecar),
            SupervisorCommand::of(&sidecar)
        );
        let lean = dir.path().join(LEAN_BINARY);
        std::fs::write(&lean, b"").unwrap();
        assert_eq!(
            SupervisorCommand::beside(&sidecar),
            SupervisorCommand {
                program: lean,
                args: Vec::new()
            }
        );
    }
}
