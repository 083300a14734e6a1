//! Windows: each step starts in a new process group, and its tree is ended with
//! `taskkill /T`. This cannot be tested here; it is kept compiling behind `cfg(windows)`.
//!
//! Limitation: `taskkill /T` follows the parent/child links that exist when it runs, so a
//! descendant whose parent already exited (an orphan) is not reached, and a console
//! program gets no Ctrl-Break to shut down cleanly: without `/F` taskkill only asks
//! windowed programs to close. A Job Object with KILL_ON_JOB_CLOSE would close both
//! gaps but needs `unsafe` Win32 calls, which this crate forbids.
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::timeout;

/// `CREATE_NEW_PROCESS_GROUP`: the step does not share the sidecar's console group.
const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
/// `CREATE_NO_WINDOW`: a service has no desktop to show consoles on.
const CREATE_NO_WINDOW: u32 = 0x0800_0000;

/// A spawned program and the tree below it.
#[derive(Debug)]
pub struct ProcessTree {
    child: Child,
    /// Kept from spawn: `Child::id` forgets it once the program is reaped.
    pid: Option<u32>,
    /// While armed, dropping the tree force-kills it (`kill_on_drop` only reaches the program).
    armed: bool,
}

/// Starts `cmd` in a new process group, stdin null, killed when dropped.
pub fn spawn(cmd: &mut Command) -> io::Result<ProcessTree> {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW)
        .kill_on_drop(true)
        .stdin(Stdio::null());
    let child = cmd.spawn()?;
    let pid = child.id();
    Ok(ProcessTree {
        child,
        pid,
        armed: true,
    })
}

impl ProcessTree {
    /// The spawned program, e.g. to take its stdout and stderr.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the program (not its descendants) to exit.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.armed = false;
        Ok(status)
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        if self.armed
            && let Some(pid) = self.pid
        {
            // Blocking, but short, and only on an abnormal path (the runtime going away).
            let _ = std::process::Command::new("taskkill")
                .args(["/T", "/F", "/PID", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Asks the tree to close (`taskkill /T`), waits up to `grace`, then force-kills it
/// (`taskkill /T /F`). Returns the program's exit status.
pub async fn terminate_tree(tree: &mut ProcessTree, grace: Duration) -> io::Result<ExitStatus> {
    let Some(pid) = tree.pid else {
        return tree.wait().await;
    };
    taskkill(pid, false).await;
    let status = match timeout(grace, tree.child.wait()).await {
        Ok(status) => status?,
        Err(_) => {
            taskkill(pid, true).await;
            tree.child.wait().await?
        }
    };
    tree.armed = false;
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

async fn taskkill(pid: u32, force: bool) {
    let mut cmd = Command::new("taskkill");
    cmd.arg("/T");
    if force {
        cmd.arg("/F");
    }
    cmd.args(["/PID", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Fails when the tree is already gone, which is what we want.
    if let Err(e) = cmd.status().await {
        tracing::warn!(pid, error = %e, "failed to run taskkill");
    }
}
