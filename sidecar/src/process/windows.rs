//! Windows: each step runs in a Job Object of its own, so that the step's program and
//! every process it starts (children, grandchildren, orphans whose parent already exited)
//! end together. The job is created with kill-on-job-close: closing its one handle ends
//! every process still in it, whether that happens on purpose (after the grace) or
//! because the supervising code was dropped. Built with the safe `win32job` API; this
//! file type-checks in CI and runs there under Wine (`tests/e2e/tests/windows.rs`).
//!
//! Limits:
//! - the program is assigned to the job just after it starts (std cannot start it
//!   suspended), so a process it starts within that instant stays outside the job;
//! - the polite first step is `taskkill /T` without `/F`, which asks windowed programs to
//!   close; console programs (most jobs) get no Ctrl-Break (sending one needs `unsafe`
//!   console calls), so they are ended when the grace runs out;
//! - should the job not be created or the program not be assigned (a job of the caller's
//!   that forbids it), the tree falls back to `taskkill /T /F`, which misses orphans.
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout_at};
use win32job::{ExtendedLimitInfo, Job};

/// How often to look whether the job still has processes while waiting for it to empty.
const POLL: Duration = Duration::from_millis(25);
/// How long to wait for a killed program to be reaped.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// `CREATE_NEW_PROCESS_GROUP`: the step does not share the supervisor's console group.
const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
/// `CREATE_NO_WINDOW`: a service has no desktop to show consoles on.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// A spawned program and the Job Object that holds it and its descendants.
#[derive(Debug)]
pub struct ProcessTree {
    child: Child,
    /// Kept from spawn: `Child::id` forgets it once the program is reaped.
    pid: Option<u32>,
    /// The step's job, kill-on-close while armed. `None` when it could not be set up.
    job: Option<Job>,
    /// While armed, dropping the tree ends it: closing the job's handle kills every process
    /// in it (`kill_on_drop` alone would only reach the program).
    armed: bool,
}

/// Starts `cmd` in a Job Object of its own (new process group, no window), stdin null,
/// killed with its descendants when dropped.
pub fn spawn(cmd: &mut Command) -> io::Result<ProcessTree> {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    // Created first, so that a failure to create it costs no running process.
    let job = kill_on_close_job()
        .inspect_err(|e| tracing::warn!(error = %e, "failed to create a Job Object for the step; its tree will be ended with taskkill"))
        .ok();
    let child = cmd.spawn()?;
    let pid = child.id();
    let job = job.and_then(|job| match child.raw_handle() {
        // A handle is a pointer-sized value; win32job takes it as an integer.
        Some(handle) => match job.assign_process(handle as isize) {
            Ok(()) => Some(job),
            Err(e) => {
                tracing::warn!(pid, error = %e, "failed to put the step in its Job Object; its tree will be ended with taskkill");
                None
            }
        },
        None => None,
    });
    Ok(ProcessTree {
        child,
        pid,
        job,
        armed: true,
    })
}

fn kill_on_close_job() -> Result<Job, win32job::JobError> {
    let mut limits = ExtendedLimitInfo::new();
    limits.limit_kill_on_job_close();
    Job::create_with_limit_info(&limits)
}

impl ProcessTree {
    /// The spawned program, e.g. to take its stdout and stderr.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the program (not its descendants) to exit. As on Unix, descendants left
    /// behind keep running: the job stops being kill-on-close.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.disarm();
        Ok(status)
    }

    fn disarm(&mut self) {
        self.armed = false;
        if let Some(job) = &self.job
            && let Err(e) = job.set_extended_limit_info(ExtendedLimitInfo::new().clear_limits())
        {
            tracing::warn!(pid = self.pid, error = %e, "failed to clear kill-on-close: processes the step left behind end with it");
        }
    }

    /// True while the job holds a process; when it cannot be asked, assumes so (the caller
    /// then kills, which is safe).
    fn job_busy(&self) -> bool {
        match &self.job {
            Some(job) => job
                .query_process_id_list()
                .map_or(true, |pids| !pids.is_empty()),
            None => false,
        }
    }

    /// Ends the program and every process in its job (or, without a job, its tree as
    /// `taskkill /T /F` finds it).
    fn kill(&mut self) {
        // The program first, through its own handle, so that its exit code says "killed"
        // (1) rather than what closing the job would leave.
        if let Err(e) = self.child.start_kill() {
            tracing::debug!(pid = self.pid, error = %e, "the step's program was already gone");
        }
        match self.job.take() {
            // Kill-on-close: closing the last handle terminates everything in the job.
            Some(job) => drop(job),
            None => {
                if let Some(pid) = self.pid {
                    force_taskkill_blocking(pid);
                }
            }
        }
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        if self.armed {
            // Only on an abnormal path (the supervising future dropped mid-run).
            self.kill();
        }
    }
}

/// Asks the tree to close (`taskkill /T`, no `/F`), gives the program and its job up to
/// `grace` to empty, then ends the program and everything in its job. Returns the
/// program's exit status.
pub async fn terminate_tree(tree: &mut ProcessTree, grace: Duration) -> io::Result<ExitStatus> {
    let Some(pid) = tree.pid else {
        return tree.wait().await;
    };
    let deadline = Instant::now() + grace;
    taskkill(pid).await;
    let status = match timeout_at(deadline, tree.child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => None,
    };
    // The program may be gone while descendants still close: they get the rest of the grace.
    while tree.job_busy() && Instant::now() < deadline {
        sleep(POLL).await;
    }
    if status.is_none() || tree.job_busy() {
        tree.kill();
    }
    let status = match status {
        Some(status) => status,
        None => match tokio::time::timeout(KILL_SETTLE, tree.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                return Err(io::Error::other(format!(
                    "process {pid} did not exit within {KILL_SETTLE:?} of being killed"
                )));
            }
        },
    };
    tree.armed = false;
    tree.job = None;
    Ok(status)
}

/// "exit code 3"; NTSTATUS codes (crashes) in hex: "exit code 0xC0000005".
pub fn describe_exit(status: ExitStatus) -> String {
    match status.code() {
        Some(code) if (code as u32) >= 0xC000_0000 => format!("exit code {:#010X}", code as u32),
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// `taskkill /T /PID pid` without `/F`: asks windowed programs in the tree to close.
async fn taskkill(pid: u32) {
    let mut cmd = Command::new("taskkill");
    cmd.args(["/T", "/PID", &pid.to_string()])
        .creation_flags(CREATE_NO_WINDOW)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Fails for console programs (they only close with /F) and when the tree is already
    // gone; either way the grace and the job's kill follow.
    if let Err(e) = cmd.status().await {
        tracing::warn!(pid, error = %e, "failed to run taskkill");
    }
}

/// The fallback without a job: `taskkill /T /F`. Blocking, but short.
fn force_taskkill_blocking(pid: u32) {
    use std::os::windows::process::CommandExt;
    let _ = std::process::Command::new("taskkill")
        .args(["/T", "/F", "/PID", &pid.to_string()])
        .creation_flags(CREATE_NO_WINDOW)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
