//! The dispatch benchmark harness: sets up fleets with the real binaries (release build,
//! 127.0.0.1, mTLS), runs each workload and prints one table with every figure next to its
//! goal.
//!
//! - W0: one task alone: `coordinator run` from start to exit, placed -> started;
//! - W1: `DISPATCH_TASKS` (500) tasks of a one-step command job running `true` on 4
//!   sidecars x 1 slot: throughput, placed -> started / finished p50 and p99, the CPU of
//!   every process (coordinator, sidecars, supervisors and the jobs), peak RSS;
//! - W1-fan-out: the same tasks of one job with `max_instances = 4` on 1 sidecar x 4 slots;
//! - scale: `SCALE_EXECUTIONS` (1,000) concurrent `sleep 20` executions on 10 sidecars:
//!   time until all started, coordinator CPU and RSS, memory per execution on the host;
//! - logs: one job writing `LOGS_MB` (1,024) MiB of 100-byte lines: MB/s into the store,
//!   peak RSS of each process.
//!
//! Latencies come from the run's own `--json` event times (the coordinator's clock), CPU
//! from `/proc` and the reaped children.
//!
//! `cargo bench -p agentfleet-e2e --bench dispatch [-- w0 w1 fan-out scale logs]`
use std::time::Instant;

mod measure;
mod workloads;

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

fn main() {
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |w: &str| asked.is_empty() || asked.iter().any(|a| a == w);
    let tasks = env_number("DISPATCH_TASKS", 500) as usize;
    // Build the binaries first, so their build is not measured.
    let _ = agentfleet_e2e::binaries::binary("coordinator");
    let began = Instant::now();
    let mut rows = Vec::new();
    if wants("w0") {
        rows.extend(workloads::w0());
    }
    if wants("w1") {
        rows.extend(workloads::w1(tasks));
    }
    if wants("fan-out") {
        rows.extend(workloads::w1_fan_out(tasks));
    }
    if wants("scale") {
        rows.extend(workloads::scale(
            env_number("SCALE_EXECUTIONS", 1000) as usize
        ));
    }
    if wants("logs") {
        rows.extend(workloads::logs(env_number("LOGS_MB", 1024)));
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "\ndispatch harness: release build, {cores} cores, {:.0} s in all",
        began.elapsed().as_secs_f64()
    );
    let w = |f: fn(&workloads::Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
    let (w0, w1, w2) = (
        w(|r| r.workload.len()).max(8),
        w(|r| r.figure.len()),
        w(|r| r.measured.len()),
    );
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  goal",
        "workload", "figure", "measured"
    );
    for r in &rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r.workload, r.figure, r.measured, r.goal
        );
    }
}
