//! Unix: each step runs as the leader of a process group of its own, so that one signal
//! reaches the program and everything it started (unless a descendant leaves the group
//! with `setsid`/`setpgid`, which is what daemons do; those are out of reach).
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout_at};

/// How often to look whether a group still has live members while waiting for it to go.
const POLL: Duration = Duration::from_millis(25);
/// How long to wait for a SIGKILLed group to vanish: the signal cannot be ignored, but
/// exiting (flushing, closing files) takes a moment.
const KILL_SETTLE: Duration = Duration::from_secs(2);

/// A spawned program and the process group it leads.
#[derive(Debug)]
pub struct ProcessTree {
    child: Child,
    /// The group id (= the leader's pid), taken at spawn: once the leader is reaped
    /// `Child::id` forgets it, but its descendants may still be in the group.
    pgid: Option<Pid>,
    /// While armed, dropping the tree SIGKILLs the whole group: if the supervising future
    /// is dropped mid-run (e.g. the runtime shuts down), `kill_on_drop` alone would only
    /// reach the leader.
    armed: bool,
}

/// Starts `cmd` as the leader of a new process group, stdin null, killed when dropped.
pub fn spawn(cmd: &mut Command) -> io::Result<ProcessTree> {
    cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
    let child = cmd.spawn()?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    Ok(ProcessTree {
        child,
        pgid,
        armed: true,
    })
}

impl ProcessTree {
    /// The spawned program, e.g. to take its stdout and stderr.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the program (not its descendants) to exit. Descendants left behind
    /// keep running: after this the tree is no longer killed on drop.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.armed = false;
        Ok(status)
    }
}

impl Drop for ProcessTree {
    fn drop(&mut self) {
        if self.armed
            && let Some(pgid) = self.pgid
        {
            // The leader is not reaped yet (kill_on_drop runs after this), so its pid,
            // which is the group id, cannot have been reused.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// SIGTERM to the whole group, up to `grace` for the program and its descendants to exit,
/// then SIGKILL to whatever is left. Returns the program's exit status.
pub async fn terminate_tree(tree: &mut ProcessTree, grace: Duration) -> io::Result<ExitStatus> {
    let Some(pgid) = tree.pgid else {
        return tree.wait().await;
    };
    let deadline = Instant::now() + grace;
    signal_group(pgid, Signal::SIGTERM);
    let status = match timeout_at(deadline, tree.child.wait()).await {
        Ok(status) => Some(status?),
        Err(_) => None,
    };
    // The leader may be gone while descendants still shut down: they get the rest of the grace.
    wait_group_gone(pgid, deadline).await;
    if group_alive(pgid).await {
        signal_group(pgid, Signal::SIGKILL);
    }
    let status = match status {
        Some(status) => status,
        None => tree.child.wait().await?,
    };
    // So that callers (and tests) see the tree gone when this returns.
    wait_group_gone(pgid, Instant::now() + KILL_SETTLE).await;
    tree.armed = false;
    Ok(status)
}

/// "exit code 3", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(name) => format!("killed by signal {sig} ({name})"),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => status.to_string(),
    }
}

fn signal_group(pgid: Pid, signal: Signal) {
    // ESRCH: the group is already gone, which is what we want.
    if let Err(e) = killpg(pgid, signal)
        && e != Errno::ESRCH
    {
        tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "failed to signal process group");
    }
}

async fn wait_group_gone(pgid: Pid, deadline: Instant) {
    while group_alive(pgid).await && Instant::now() < deadline {
        sleep(POLL).await;
    }
}

/// True while the group has a member that is not a zombie.
async fn group_alive(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Err(Errno::ESRCH) => false,
        // EPERM: a member exists that we may not signal (it changed its user).
        Ok(()) | Err(Errno::EPERM) => live_member_in(pgid).await,
        Err(_) => false,
    }
}

/// `killpg(.., 0)` also succeeds for zombies, which stay around for good where PID 1 does
/// not reap orphans (containers without an init). On Linux, look at the members' states.
#[cfg(target_os = "linux")]
async fn live_member_in(pgid: Pid) -> bool {
    tokio::task::spawn_blocking(move || linux::group_has_live_member(pgid.as_raw()))
        .await
        .unwrap_or(true)
}

#[cfg(not(target_os = "linux"))]
async fn live_member_in(_pgid: Pid) -> bool {
    true
}

#[cfg(target_os = "linux")]
pub(crate) mod linux {
    /// Scans /proc for a process of group `pgid` that is neither a zombie nor dead.
    /// When /proc cannot be read, assumes there is one (the caller then kills, which is safe).
    pub(crate) fn group_has_live_member(pgid: i32) -> bool {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return true;
        };
        dir.flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(state_and_group)
            .any(|(state, group)| group == pgid && !matches!(state, 'Z' | 'X' | 'x'))
    }

    /// Is `pid` a live (running, sleeping, stopped; not zombie) process?
    #[cfg(test)]
    pub(crate) fn is_live(pid: i32) -> bool {
        state_and_group(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
    }

    /// (state, process group) from /proc/<pid>/stat: "pid (comm) S ppid pgrp ...".
    fn state_and_group(pid: i32) -> Option<(char, i32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // comm may contain spaces and parentheses: the fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        let _ppid = fields.next()?;
        let group = fields.next()?.parse().ok()?;
        Some((state, group))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).stdout(Stdio::piped());
        cmd
    }

    async fn first_line(tree: &mut ProcessTree) -> String {
        use tokio::io::AsyncBufReadExt;
        let out = tree.child_mut().stdout.take().expect("piped");
        let mut line = String::new();
        tokio::io::BufReader::new(out)
            .read_line(&mut line)
            .await
            .expect("read");
        line.trim().to_owned()
    }

    #[tokio::test]
    async fn describes_exits() {
        let status = spawn(&mut sh("exit 3")).unwrap().wait().await.unwrap();
        assert_eq!(describe_exit(status), "exit code 3");
        let status = spawn(&mut sh("kill -9 $$")).unwrap().wait().await.unwrap();
        assert_eq!(describe_exit(status), "killed by signal 9 (SIGKILL)");
    }

    #[tokio::test]
    async fn terminate_reaches_grandchildren_that_ignore_sigterm() {
        // `trap '' TERM` is inherited by `sleep`: only SIGKILL after the grace ends them.
        let mut tree = spawn(&mut sh("trap '' TERM; sleep 1000 & echo $!; wait")).unwrap();
        let grandchild: i32 = first_line(&mut tree).await.parse().unwrap();
        assert!(linux::is_live(grandchild));
        let status = terminate_tree(&mut tree, Duration::from_millis(200))
            .await
            .unwrap();
        assert_eq!(describe_exit(status), "killed by signal 9 (SIGKILL)");
        assert!(
            !linux::is_live(grandchild),
            "grandchild {grandchild} survived"
        );
    }

    #[tokio::test]
    async fn terminate_lets_a_cooperative_tree_exit_on_sigterm() {
        let mut tree = spawn(&mut sh("sleep 1000 & echo $!; wait")).unwrap();
        let grandchild: i32 = first_line(&mut tree).await.parse().unwrap();
        let status = terminate_tree(&mut tree, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(describe_exit(status), "killed by signal 15 (SIGTERM)");
        assert!(!linux::is_live(grandchild));
    }

    #[tokio::test]
    async fn dropping_an_armed_tree_kills_the_group() {
        let mut tree = spawn(&mut sh("sleep 1000 & echo $!; wait")).unwrap();
        let grandchild: i32 = first_line(&mut tree).await.parse().unwrap();
        drop(tree);
        // SIGKILL is delivered at once, but exiting takes a moment: poll, bounded.
        let deadline = std::time::Instant::now() + KILL_SETTLE;
        while linux::is_live(grandchild) && std::time::Instant::now() < deadline {
            sleep(POLL).await;
        }
        assert!(!linux::is_live(grandchild));
    }
}
