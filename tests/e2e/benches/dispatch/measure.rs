//! What one measured run of `coordinator run --json` cost and how fast it went: wall time,
//! CPU of every process (the coordinator, the sidecars, their supervisors and jobs), peak
//! resident memory, and latencies from the run's own event times.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use agentfleet_e2e::background::{BackgroundCoordinator, Memory, MemorySampler};
use agentfleet_e2e::process::pids_with_arg;
use agentfleet_e2e::{CoordinatorOutput, Sidecar, TestEnv, wait_until};
use nix::sys::resource::{UsageWho, getrusage};

/// The longest a measured run may take.
const DEADLINE: Duration = Duration::from_secs(600);

/// CPU seconds of this process's reaped children (the coordinator, once waited for).
fn children_cpu() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

/// A process's own CPU seconds and those of its reaped children, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, Default)]
struct ProcCpu {
    own: f64,
    children: f64,
}

fn proc_cpu(pid: u32) -> ProcCpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15, cutime 16, cstime 17.
    let rest: Vec<f64> = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0.0))
                .collect()
        })
        .unwrap_or_default();
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let at = |i: usize| rest.get(i).copied().unwrap_or(0.0) / tick;
    ProcCpu {
        own: at(11) + at(12),
        children: at(13) + at(14),
    }
}

/// The supervisors (and their jobs) running for these sidecars now.
pub fn supervisors(sidecars: &[Sidecar]) -> Vec<u32> {
    sidecars
        .iter()
        .flat_map(|s| pids_with_arg(&s.state_dir().to_string_lossy()))
        .collect()
}

pub struct Measured {
    pub out: CoordinatorOutput,
    /// From spawning `coordinator run` to its exit.
    pub wall: Duration,
    pub cpu_coordinator: f64,
    pub cpu_sidecars: f64,
    /// Supervisors and the jobs they ran.
    pub cpu_supervisors: f64,
    /// Peak VmRSS per kind of process: "coordinator", "sidecar", "supervisor".
    pub peak_rss: BTreeMap<String, Memory>,
}

impl Measured {
    pub fn cpu_total(&self) -> f64 {
        self.cpu_coordinator + self.cpu_sidecars + self.cpu_supervisors
    }

    pub fn peak_mb(&self, kind: &str) -> f64 {
        self.peak_rss
            .get(kind)
            .map_or(0.0, |m| m.hwm.max(m.rss) as f64 / 1e6)
    }
}

/// Runs `plan` on `sidecars` with `--json` and measures it. `during` is called once the
/// coordinator runs (e.g. to sample the executions while they run). Supervisors are
/// sampled for memory only when `sample_supervisors` (reading every one of a thousand
/// supervisors every 50 ms would be the load it measures).
pub fn run(
    env: &TestEnv,
    plan: &Path,
    fleet: &Path,
    sidecars: &[Sidecar],
    sample_supervisors: bool,
    during: impl FnOnce(&mut BackgroundCoordinator),
) -> Measured {
    let sidecar_pids: Vec<u32> = sidecars.iter().filter_map(Sidecar::pid).collect();
    let before: Vec<ProcCpu> = sidecar_pids.iter().map(|&p| proc_cpu(p)).collect();
    let coordinator_pid = Arc::new(AtomicU32::new(0));
    let sampler = {
        let coordinator_pid = Arc::clone(&coordinator_pid);
        let sidecar_pids = sidecar_pids.clone();
        let state_dirs: Vec<String> = sidecars
            .iter()
            .map(|s| s.state_dir().to_string_lossy().into_owned())
            .collect();
        MemorySampler::start(move || {
            let mut targets: Vec<(String, u32)> = sidecar_pids
                .iter()
                .map(|&p| ("sidecar".to_owned(), p))
                .collect();
            match coordinator_pid.load(Ordering::SeqCst) {
                0 => {}
                pid => targets.push(("coordinator".to_owned(), pid)),
            }
            if sample_supervisors {
                for dir in &state_dirs {
                    targets.extend(
                        pids_with_arg(dir)
                            .into_iter()
                            .map(|p| ("supervisor".to_owned(), p)),
                    );
                }
            }
            targets
        })
    };
    let cpu_before = children_cpu();
    let began = Instant::now();
    let mut coordinator = BackgroundCoordinator::spawn(
        env,
        [
            "run".as_ref(),
            plan.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--json".as_ref(),
        ],
    );
    coordinator_pid.store(coordinator.pid(), Ordering::SeqCst);
    during(&mut coordinator);
    let out = coordinator.finish(DEADLINE);
    let wall = began.elapsed();
    let cpu_coordinator = children_cpu() - cpu_before;
    let peak_rss = sampler.stop();
    // A supervisor exits just after its Finished event is on disk; its CPU is counted
    // once its sidecar has reaped it.
    wait_until(Duration::from_secs(60), "every supervisor to exit", || {
        supervisors(sidecars).is_empty().then_some(())
    });
    let after: Vec<ProcCpu> = sidecar_pids.iter().map(|&p| proc_cpu(p)).collect();
    let (mut cpu_sidecars, mut cpu_supervisors) = (0.0, 0.0);
    for (b, a) in before.iter().zip(&after) {
        cpu_sidecars += a.own - b.own;
        cpu_supervisors += a.children - b.children;
    }
    Measured {
        out,
        wall,
        cpu_coordinator,
        cpu_sidecars,
        cpu_supervisors,
        peak_rss,
    }
}

fn ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("`{ts}`: {e}"))
        .timestamp_millis()
}

/// Per task (first attempt): placed -> started and placed -> finished, in ms, sorted; and
/// the span from the first placement to the last start.
pub struct Latencies {
    pub started: Vec<i64>,
    pub finished: Vec<i64>,
    pub all_started_ms: i64,
}

pub fn latencies(out: &CoordinatorOutput) -> Latencies {
    let events = out.events();
    let mut placed: HashMap<String, i64> = HashMap::new();
    let (mut started, mut finished) = (Vec::new(), Vec::new());
    let (mut first_placed, mut last_started) = (i64::MAX, i64::MIN);
    for e in events.all() {
        let (Some(kind), Some(task), Some(ts)) =
            (e["type"].as_str(), e["task"].as_str(), e["ts"].as_str())
        else {
            continue;
        };
        let t = ms(ts);
        match kind {
            "task_placed" => {
                placed.entry(task.to_owned()).or_insert(t);
                first_placed = first_placed.min(t);
            }
            "task_started" => {
                if let Some(p) = placed.get(task) {
                    started.push(t - p);
                }
                last_started = last_started.max(t);
            }
            "task_finished" => {
                if let Some(p) = placed.get(task) {
                    finished.push(t - p);
                }
            }
            _ => {}
        }
    }
    started.sort_unstable();
    finished.sort_unstable();
    Latencies {
        started,
        finished,
        all_started_ms: last_started - first_placed,
    }
}

pub fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return -1;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The time of each execution's Started event in the sidecars' journals (the sidecar's
/// clock), by execution id. Read while the executions run: a sidecar prunes a journal once
/// the coordinator has stored it.
pub fn started_times(sidecars: &[Sidecar]) -> HashMap<String, i64> {
    use agentfleet_common::proto::{Event, event::Kind};
    use prost::Message as _;
    let mut times = HashMap::new();
    for sidecar in sidecars {
        let Ok(dirs) = std::fs::read_dir(sidecar.state_dir().join("executions")) else {
            continue;
        };
        for dir in dirs.flatten() {
            let Ok(bytes) = std::fs::read(dir.path().join("events.pb")) else {
                continue;
            };
            let mut buf = bytes.as_slice();
            while let Ok(event) = Event::decode_length_delimited(&mut buf) {
                if matches!(event.kind, Some(Kind::Started(_))) {
                    times.insert(event.execution_id, event.ts_ms);
                    break;
                }
            }
        }
    }
    times
}

/// Event lag per started task, in ms, sorted: from the Started event's time in the
/// sidecar's journal to the coordinator's `task_started` (its receipt; one machine, one
/// clock).
pub fn event_lags(out: &CoordinatorOutput, started: &HashMap<String, i64>) -> Vec<i64> {
    let mut lags: Vec<i64> = out
        .events()
        .of_type("task_started")
        .into_iter()
        .filter_map(|e| {
            let at = started.get(e["execution_id"].as_str()?)?;
            Some(ms(e["ts"].as_str()?) - at)
        })
        .collect();
    lags.sort_unstable();
    lags
}
