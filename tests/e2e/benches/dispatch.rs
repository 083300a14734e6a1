//! Dispatch benchmark: how fast the fleet turns placements into started jobs, measured
//! through the real binaries. 4 sidecars x 1 slot, `TASKS` tasks of a one-step command job
//! that runs `true`, `coordinator run --json` (every event and log line stored).
//!
//! Prints throughput (tasks per second of the whole run), placed -> started latency (p50,
//! p99, from the run's own event times) and the CPU time of the coordinator, the sidecars
//! and their supervisors (sidecar start-up included), read from the reaped children.
//!
//! `cargo bench -p agentfleet-e2e --bench dispatch`
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

use agentfleet_e2e::{SidecarOptions, TestEnv};
use nix::sys::resource::{UsageWho, getrusage};

const TASKS: usize = 200;
const SIDECARS: usize = 4;

fn cpu_seconds() -> f64 {
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    secs(usage.user_time()) + secs(usage.system_time())
}

fn ms(ts: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(ts)
        .unwrap_or_else(|e| panic!("`{ts}`: {e}"))
        .timestamp_millis()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let env = TestEnv::new("bench-dispatch");
    let jobs = "[[job]]\nname = \"noop\"\n[[job.step]]\nname = \"work\"\nrun = [\"true\"]\n";
    let mut plan = String::from("[plan]\nname = \"dispatch\"\n");
    for i in 0..TASKS {
        writeln!(plan, "[[task]]\nname = \"t{i:03}\"\njob = \"noop\"\n").unwrap();
    }
    let plan = env.write_file("plan.toml", &plan);
    // Binaries are built (a child process) before the CPU count starts.
    let _ = agentfleet_e2e::binaries::binary("coordinator");
    let cpu_before = cpu_seconds();
    let sidecars: Vec<_> = (0..SIDECARS)
        .map(|i| {
            env.start_sidecar(
                &format!("s{i}"),
                jobs,
                SidecarOptions {
                    slots: 1,
                    ..Default::default()
                },
            )
        })
        .collect();
    let fleet = env.write_fleet(&sidecars.iter().collect::<Vec<_>>());

    let started = Instant::now();
    let out = env.run_plan(&plan, &fleet);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(out.code(), Some(0), "{out}");
    drop(sidecars); // stopped and reaped: their CPU time is counted
    let cpu = cpu_seconds() - cpu_before;

    let events = out.events();
    let mut placed: HashMap<String, i64> = HashMap::new();
    let mut latencies = Vec::new();
    for e in events.all() {
        let (Some(kind), Some(task), Some(ts)) =
            (e["type"].as_str(), e["task"].as_str(), e["ts"].as_str())
        else {
            continue;
        };
        match kind {
            "task_placed" => {
                placed.insert(task.to_owned(), ms(ts));
            }
            "task_started" => {
                if let Some(p) = placed.remove(task) {
                    latencies.push(ms(ts) - p);
                }
            }
            _ => {}
        }
    }
    latencies.sort_unstable();
    assert_eq!(latencies.len(), TASKS, "every task placed and started once");
    println!(
        "dispatch: {TASKS} tasks of `true` on {SIDECARS} sidecars x 1 slot, --json, release build"
    );
    println!(
        "  throughput {:7.1} tasks/s  ({took:.2} s for the run)",
        TASKS as f64 / took
    );
    println!(
        "  placed -> started  p50 {} ms  p99 {} ms  max {} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    println!("  CPU (coordinator + sidecars + supervisors)  {cpu:.2} s");
}
