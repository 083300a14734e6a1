//! Fault injection for durability tests: a command job that counts out loud (numbered
//! lines over several seconds, one marker line per run), crashing a sidecar mid-job with
//! SIGKILL, and what the coordinator's `--json` log says about the job's lines.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::RunEvents;
use crate::files::{toml_path, toml_str};
use crate::sidecar::Sidecar;
use crate::wait::wait_until;

/// A job that prints `line-1` … `line-LINES`, one every `interval`, to stdout; appends
/// one line to `markers/runs` when it starts (to count its runs) and each printed line to
/// `markers/progress` (to know how far it got without asking the sidecar).
pub struct CountingJob {
    pub name: String,
    pub lines: u32,
    pub interval: Duration,
    pub markers: PathBuf,
}

impl CountingJob {
    pub fn new(name: &str, lines: u32, interval: Duration, markers: &Path) -> Self {
        std::fs::create_dir_all(markers).expect("create the markers dir");
        Self {
            name: name.to_owned(),
            lines,
            interval,
            markers: markers.to_owned(),
        }
    }

    /// The `[[job]]` table for the sidecar config.
    pub fn toml(&self) -> String {
        let script = format!(
            "echo \"$AGENTFLEET_EXECUTION_ID\" >> \"$MARKERS/runs\"; i=1; \
             while [ $i -le {n} ]; do echo line-$i; echo $i >> \"$MARKERS/progress\"; \
             i=$((i+1)); sleep {secs}; done",
            n = self.lines,
            secs = self.interval.as_secs_f64()
        );
        format!(
            "[[job]]\nname = {}\nenv = {{ MARKERS = {} }}\n[[job.step]]\nname = \"count\"\nrun = [\"sh\", \"-c\", {}]\n",
            toml_str(&self.name),
            toml_path(&self.markers),
            toml_str(script)
        )
    }

    /// The lines the job prints, in order.
    pub fn expected_lines(&self) -> Vec<String> {
        (1..=self.lines).map(|i| format!("line-{i}")).collect()
    }

    /// Waits until the job has printed at least `n` lines.
    pub fn wait_for_progress(&self, n: u32, timeout: Duration) {
        let progress = self.markers.join("progress");
        wait_until(
            timeout,
            &format!("`{}` to print {n} lines", self.name),
            || {
                let text = std::fs::read_to_string(&progress).ok()?;
                (text.lines().count() >= n as usize).then_some(())
            },
        );
    }

    /// How many times the job started (lines in `markers/runs`).
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.markers.join("runs"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

/// Crashes `sidecar` (SIGKILL to its process only, as the OOM killer or `kill -9` would),
/// then starts it again on the same config, state_dir and port.
pub fn crash_and_restart(sidecar: &mut Sidecar) {
    sidecar.kill();
    sidecar.restart();
}

/// The `line` of every `log` event of `task`, in output order.
pub fn log_lines(events: &RunEvents, task: &str) -> Vec<String> {
    events
        .of_task("log", task)
        .into_iter()
        .filter_map(|e| e["line"].as_str().map(str::to_owned))
        .collect()
}
