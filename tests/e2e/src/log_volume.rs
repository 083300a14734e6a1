//! A large volume of log lines through the real binaries, end to end: a command job
//! prints numbered lines of `LINE_BYTES` bytes, which go job → supervisor → the sidecar's
//! journal → Watch → the coordinator → its store. Measures the run's wall time and the
//! peak memory of each process, then reads the whole log back with `coordinator logs` and
//! checks that every line is there exactly once, in order. Used by a test and by the
//! `log_shipping` bench.
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::background::{BackgroundCoordinator, Memory, MemorySampler, mb};
use crate::binaries;
use crate::coordinator::CoordinatorOutput;
use crate::env::TestEnv;
use crate::files::toml_str;
use crate::process::pids_with_arg;
use crate::sidecar::{SidecarOptions, clean_env};

/// Bytes per printed line, the newline included.
pub const LINE_BYTES: u64 = 100;
/// The task (and job) name.
const TASK: &str = "volume";
/// How long the run and the read-back may each take: generous, for debug builds on
/// small machines; it bounds a hang, it measures nothing.
const DEADLINE: Duration = Duration::from_secs(600);

/// What shipping `lines` lines did.
#[derive(Debug)]
pub struct Shipped {
    /// Lines and bytes the job printed.
    pub lines: u64,
    pub bytes: u64,
    /// From spawning `coordinator run` to its exit.
    pub elapsed: Duration,
    pub run: CoordinatorOutput,
    /// The job step's duration as the sidecar measured it (job output → its journal);
    /// the rest of `elapsed` is start-up and the journal → store tail.
    pub step_elapsed: Option<Duration>,
    /// Peak memory by process: `sidecar`, `supervisor` (the execution's own process,
    /// which reads the job's output and writes the journal) and `coordinator`.
    pub peaks: BTreeMap<String, Memory>,
    /// What `coordinator logs last --task volume` read back.
    pub stored: StoredLines,
}

/// The job's lines as the store gives them back.
#[derive(Debug, Default)]
pub struct StoredLines {
    pub lines: u64,
    /// Line bytes, each counted with its newline (comparable with what the job printed).
    pub bytes: u64,
    /// The first line that is not the next expected one (a gap, a repeat, a stranger).
    pub first_problem: Option<String>,
    /// How long the read-back took.
    pub elapsed: Duration,
}

impl Shipped {
    /// Megabytes (10^6) per second, job output to stored.
    pub fn mb_per_s(&self) -> f64 {
        mb(self.bytes) / self.elapsed.as_secs_f64()
    }

    pub fn lines_per_s(&self) -> f64 {
        self.lines as f64 / self.elapsed.as_secs_f64()
    }

    /// A human summary: volume, time, rate, and each process's peak memory.
    pub fn report(&self) -> String {
        let mut text = format!(
            "shipped {} lines, {:.1} MB in {:.2} s: {:.1} MB/s, {:.0} lines/s (read back in {:.2} s)\n",
            self.lines,
            mb(self.bytes),
            self.elapsed.as_secs_f64(),
            self.mb_per_s(),
            self.lines_per_s(),
            self.stored.elapsed.as_secs_f64()
        );
        if let Some(step) = self.step_elapsed {
            text += &format!(
                "  the job's step took {:.2} s on the sidecar ({:.1} MB/s into the journal)\n",
                step.as_secs_f64(),
                mb(self.bytes) / step.as_secs_f64()
            );
        }
        for (process, peak) in &self.peaks {
            text += &format!(
                "  {process:<12} peak VmRSS {:>7.1} MB, VmHWM {:>7.1} MB\n",
                mb(peak.rss),
                mb(peak.hwm)
            );
        }
        text
    }
}

/// The expected text of line `i` (1-based): the number, zero-padded to fill the line.
pub fn line_text(i: u64) -> String {
    format!("{i:0width$}", width = (LINE_BYTES - 1) as usize)
}

/// Starts a sidecar offering the volume job, runs a one-task plan printing `lines` lines
/// (without `--json`, so stdout does not carry the lines a second time) and reads the
/// log back.
pub fn ship(env: &TestEnv, lines: u64) -> Shipped {
    // mawk/gawk print a million lines in well under a second: the job is not the bottleneck.
    let script = format!(
        "awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) printf \"%0{}d\\n\", i }}'",
        LINE_BYTES - 1
    );
    let jobs = format!(
        "[[job]]\nname = {task}\n[[job.step]]\nname = \"print\"\nrun = [\"sh\", \"-c\", {script}]\n",
        task = toml_str(TASK),
        script = toml_str(&script)
    );
    let sidecar = env.start_sidecar("s1", &jobs, SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "volume.toml",
        &format!(
            "[plan]\nname = \"log-volume\"\n\n[[task]]\nname = {0}\njob = {0}\n",
            toml_str(TASK)
        ),
    );

    let coordinator_pid = Arc::new(AtomicU32::new(0));
    let sampler = {
        let sidecar_pid = sidecar.pid().expect("the sidecar runs");
        let state_dir = sidecar.state_dir().to_string_lossy().into_owned();
        let coordinator_pid = Arc::clone(&coordinator_pid);
        MemorySampler::start(move || {
            let mut targets = vec![("sidecar".to_owned(), sidecar_pid)];
            match coordinator_pid.load(Ordering::SeqCst) {
                0 => {}
                pid => targets.push(("coordinator".to_owned(), pid)),
            }
            for pid in pids_with_arg(&state_dir) {
                if is_supervisor(pid) {
                    targets.push(("supervisor".to_owned(), pid));
                }
            }
            targets
        })
    };
    let began = Instant::now();
    let mut run = BackgroundCoordinator::spawn(
        env,
        [
            "run".as_ref(),
            plan.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
        ],
    );
    coordinator_pid.store(run.pid(), Ordering::SeqCst);
    let run = run.finish(DEADLINE);
    let elapsed = began.elapsed();
    let peaks = sampler.stop();
    let stored = read_back(env, lines);
    let step_elapsed = step_duration(env);
    drop(sidecar);
    Shipped {
        lines,
        bytes: lines * LINE_BYTES,
        elapsed,
        run,
        step_elapsed,
        peaks,
        stored,
    }
}

/// The duration of the run's one step, from `coordinator show last --json`.
fn step_duration(env: &TestEnv) -> Option<Duration> {
    let out = crate::coordinator::run(
        env.path(),
        &env.path().join("home"),
        ["show", "last", "--json"],
        &[],
    );
    let show: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    show["steps"][0]["duration_ms"]
        .as_u64()
        .map(Duration::from_millis)
}

/// True for a sidecar's per-execution `supervise` process (not the job's own processes).
/// A supervisor (`agentfleet-supervisor --execution-dir DIR` or `sidecar supervise
/// --execution-dir DIR`), not one of the job's own processes.
fn is_supervisor(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"--execution-dir"))
}

/// Streams `coordinator logs last --task volume` line by line (the output is bigger than
/// worth holding) and checks each line against the next expected one.
fn read_back(env: &TestEnv, expected_lines: u64) -> StoredLines {
    let began = Instant::now();
    let mut cmd = Command::new(binaries::binary("coordinator"));
    cmd.args(["logs", "last", "--task", TASK])
        .current_dir(env.path());
    clean_env(&mut cmd);
    cmd.env("AGENTFLEET_HOME", env.path().join("home"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn coordinator logs");
    let stdout = child.stdout.take().expect("stdout is piped");
    // A watchdog bounds the read: killing the process ends its stdout.
    let pid = child.id();
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watchdog.recv_timeout(DEADLINE).is_err() {
            crate::process::send_signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let prefix = format!("{TASK}/print/stdout | ");
    let mut stored = StoredLines::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("coordinator logs prints UTF-8 lines");
        stored.lines += 1;
        let text = line.strip_prefix(&prefix);
        stored.bytes += text.map_or(0, |t| t.len() as u64 + 1);
        if stored.first_problem.is_none() && text != Some(line_text(stored.lines).as_str()) {
            stored.first_problem = Some(format!(
                "stored line {} (of {expected_lines} expected) is `{}`",
                stored.lines,
                line.chars().take(160).collect::<String>()
            ));
        }
    }
    let _ = done.send(());
    let status = child.wait().expect("wait for coordinator logs");
    if !status.success() && stored.first_problem.is_none() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        stored.first_problem = Some(format!("coordinator logs exited with {status}: {stderr}"));
    }
    stored.elapsed = began.elapsed();
    stored
}
