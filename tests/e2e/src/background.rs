//! A coordinator command left running in the background (to kill it with SIGKILL mid-run,
//! or to watch it work), and the memory of running processes as `/proc` reports it.
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binaries;
use crate::coordinator::CoordinatorOutput;
use crate::env::TestEnv;
use crate::sidecar::clean_env;

/// `coordinator ARGS` running in the test's directory with its `AGENTFLEET_HOME`. Its
/// stdout is read line by line (so `--json` events can be awaited); it is killed on drop.
pub struct BackgroundCoordinator {
    command: String,
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stdout: String,
    stderr: Option<JoinHandle<String>>,
}

impl BackgroundCoordinator {
    pub fn spawn<I, S>(env: &TestEnv, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(binaries::binary("coordinator"));
        cmd.args(args).current_dir(env.path());
        clean_env(&mut cmd);
        cmd.env("AGENTFLEET_HOME", env.path().join("home"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command = format!(
            "coordinator {}",
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {command}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            text
        });
        Self {
            command,
            child: Some(child),
            lines,
            stdout: String::new(),
            stderr: Some(stderr),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("the process is ours")
    }

    /// Waits for the first `--json` event (from the start) that matches `pred`; panics with
    /// everything the process printed when none does within `timeout` or it exits first.
    pub fn wait_for_event(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let seen = self
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(&pred);
        if let Some(found) = seen {
            return found;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = serde_json::from_str::<Value>(&line)
                        .ok()
                        .filter(|v| pred(v));
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(e) => {
                    let out = self.finish(Duration::ZERO);
                    panic!("waiting for {what} ({e:?}, within {timeout:?}):\n{out}");
                }
            }
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it (so that its pid no
    /// longer names a process: the store's driver liveness check looks at `/proc/PID`).
    pub fn kill(&mut self) -> CoordinatorOutput {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
        }
        self.finish(Duration::from_secs(10))
    }

    /// Waits (bounded) for the process to end; kills it after `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> CoordinatorOutput {
        let mut child = self.child.take().expect("finish is called once");
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("wait for the killed coordinator");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF, once every holder of the pipe is gone.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        CoordinatorOutput {
            command: self.command.clone(),
            status,
            stdout: std::mem::take(&mut self.stdout),
            stderr,
            timed_out,
        }
    }
}

impl Drop for BackgroundCoordinator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A process's resident memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most it was ever resident (the high-water mark).
    pub hwm: u64,
}

impl Memory {
    /// Reads `/proc/PID/status`; None when the process is gone (or not on Linux).
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            let value: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
            Some(value * 1024)
        };
        Some(Self {
            rss: kib("VmRSS:")?,
            hwm: kib("VmHWM:")?,
        })
    }
}

/// Megabytes (10^6 bytes), for printing.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Samples processes' memory on a thread until stopped, keeping each one's peak. The
/// processes are named by a function called at every sample, so that short-lived or
/// late-starting ones (a sidecar's per-execution supervisor) are found when they exist.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<BTreeMap<String, Memory>>>,
}

/// How often the sampler reads `/proc`.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

impl MemorySampler {
    /// Starts sampling: `targets` returns the `(label, pid)` pairs to read now.
    pub fn start(targets: impl Fn() -> Vec<(String, u32)> + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks: BTreeMap<String, Memory> = BTreeMap::new();
            loop {
                // Read once more after the stop request, so the last state is in.
                let last = stopping.load(Ordering::SeqCst);
                for (label, pid) in targets() {
                    if let Some(now) = Memory::of(pid) {
                        let peak = peaks.entry(label).or_default();
                        peak.rss = peak.rss.max(now.rss);
                        peak.hwm = peak.hwm.max(now.hwm);
                    }
                }
                if last {
                    return peaks;
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; each label's highest `VmRSS` seen and highest `VmHWM` read.
    pub fn stop(mut self) -> BTreeMap<String, Memory> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory() {
        let me = Memory::of(std::process::id()).expect("our own /proc status");
        assert!(me.rss > 0 && me.hwm >= me.rss, "{me:?}");
        let sampler = MemorySampler::start(|| vec![("me".into(), std::process::id())]);
        let peaks = sampler.stop();
        assert!(peaks["me"].hwm > 0, "{peaks:?}");
    }
}
