//! Freezing a process with SIGSTOP: a sidecar that can neither answer nor stop its job,
//! as a full disk, a hung host or a debugger would leave it. The guard thaws it with
//! SIGCONT when dropped (also when the test fails), so the test's clean-up can stop it.
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::process::send_signal;
use crate::wait::wait_until;

/// How long the kernel may take to show a signalled process as stopped or running.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);

/// A process stopped by SIGSTOP until this is dropped.
pub struct Frozen {
    pid: u32,
}

impl Frozen {
    /// Sends SIGSTOP to `pid` and waits until `/proc` shows it stopped.
    pub fn freeze(pid: u32) -> Self {
        send_signal(pid, Signal::SIGSTOP);
        wait_until(STATE_TIMEOUT, &format!("process {pid} to stop"), || {
            (state(pid) == Some('T')).then_some(())
        });
        Self { pid }
    }

    /// Sends SIGCONT now (dropping the guard does the same).
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        send_signal(self.pid, Signal::SIGCONT);
    }
}

/// The process's state letter from `/proc/PID/stat` (`T` stopped, `S` sleeping, ...).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}
