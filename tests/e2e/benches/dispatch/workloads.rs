//! The workloads: each sets up its fleet with the real binaries, runs, and returns rows
//! of (figure, measured, goal).
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use agentfleet_e2e::log_volume::{self, LINE_BYTES};
use agentfleet_e2e::{Sidecar, SidecarOptions, TestEnv, wait_until};

use agentfleet_e2e::process::proc_field;

use crate::measure::{self, Measured, percentile};

pub struct Row {
    pub workload: &'static str,
    pub figure: String,
    pub measured: String,
    pub goal: &'static str,
}

fn row(workload: &'static str, figure: &str, measured: String, goal: &'static str) -> Row {
    Row {
        workload,
        figure: figure.to_owned(),
        measured,
        goal,
    }
}

/// One command job `noop` (one step, `true`) with `extra` lines in its section.
fn noop_job(extra: &str) -> String {
    format!("[[job]]\nname = \"noop\"\n{extra}\n[[job.step]]\nname = \"work\"\nrun = [\"true\"]\n")
}

fn plan_of(env: &TestEnv, tasks: usize, job: &str) -> std::path::PathBuf {
    let mut plan = String::from("[plan]\nname = \"bench\"\n");
    for i in 0..tasks {
        writeln!(plan, "[[task]]\nname = \"t{i:04}\"\njob = \"{job}\"\n").unwrap();
    }
    env.write_file("plan.toml", &plan)
}

fn sidecars(env: &TestEnv, n: usize, slots: u32, jobs: &str) -> Vec<Sidecar> {
    (0..n)
        .map(|i| {
            env.start_sidecar(
                &format!("s{i}"),
                jobs,
                SidecarOptions {
                    slots,
                    ..Default::default()
                },
            )
        })
        .collect()
}

/// The rows every task workload prints: throughput, latencies, CPU, memory.
fn task_rows(name: &'static str, tasks: usize, m: &Measured) -> Vec<Row> {
    assert_eq!(m.out.code(), Some(0), "{name}: {}", m.out);
    let l = measure::latencies(&m.out);
    assert_eq!(
        l.started.len(),
        tasks,
        "{name}: every task placed and started once"
    );
    vec![
        row(
            name,
            "throughput",
            format!(
                "{:.0} jobs/s ({tasks} in {:.2} s)",
                tasks as f64 / m.wall.as_secs_f64(),
                m.wall.as_secs_f64()
            ),
            ">= 1000 jobs/s",
        ),
        row(
            name,
            "placed -> started p50 / p99",
            format!(
                "{} / {} ms",
                percentile(&l.started, 0.5),
                percentile(&l.started, 0.99)
            ),
            "<= 2 / 10 ms",
        ),
        row(
            name,
            "placed -> finished p50 / p99",
            format!(
                "{} / {} ms",
                percentile(&l.finished, 0.5),
                percentile(&l.finished, 0.99)
            ),
            "",
        ),
        row(
            name,
            "CPU: coordinator + sidecars + supervisors/jobs",
            format!(
                "{:.2} s = {:.2} + {:.2} + {:.2}",
                m.cpu_total(),
                m.cpu_coordinator,
                m.cpu_sidecars,
                m.cpu_supervisors
            ),
            "<= 1.0 s (500 jobs)",
        ),
        row(
            name,
            "peak RSS: coordinator / sidecar / supervisor",
            format!(
                "{:.1} / {:.1} / {:.1} MB",
                m.peak_mb("coordinator"),
                m.peak_mb("sidecar"),
                m.peak_mb("supervisor")
            ),
            "",
        ),
    ]
}

/// W0: one task alone, from `coordinator run` start to exit.
pub fn w0() -> Vec<Row> {
    let env = TestEnv::new("bench-w0");
    let fleet_sidecars = sidecars(&env, 1, 1, &noop_job(""));
    let fleet = env.write_fleet(&fleet_sidecars.iter().collect::<Vec<_>>());
    let plan = plan_of(&env, 1, "noop");
    let m = measure::run(&env, &plan, &fleet, &fleet_sidecars, true, |_| {});
    let l = measure::latencies(&m.out);
    assert_eq!(m.out.code(), Some(0), "{}", m.out);
    vec![
        row(
            "W0",
            "coordinator run, start to exit",
            format!("{} ms", m.wall.as_millis()),
            "",
        ),
        row(
            "W0",
            "placed -> started",
            format!("{} ms", percentile(&l.started, 0.5)),
            "<= 2 ms",
        ),
    ]
}

/// W1: `tasks` tasks of `noop` on 4 sidecars x 1 slot.
pub fn w1(tasks: usize) -> Vec<Row> {
    let env = TestEnv::new("bench-w1");
    let fleet_sidecars = sidecars(&env, 4, 1, &noop_job(""));
    let fleet = env.write_fleet(&fleet_sidecars.iter().collect::<Vec<_>>());
    let plan = plan_of(&env, tasks, "noop");
    let m = measure::run(&env, &plan, &fleet, &fleet_sidecars, true, |_| {});
    task_rows("W1", tasks, &m)
}

/// W1-fan-out: the same tasks of one job with `max_instances = 4` on one sidecar x 4 slots.
pub fn w1_fan_out(tasks: usize) -> Vec<Row> {
    let env = TestEnv::new("bench-w1-fan-out");
    let fleet_sidecars = sidecars(&env, 1, 4, &noop_job("max_instances = 4"));
    let fleet = env.write_fleet(&fleet_sidecars.iter().collect::<Vec<_>>());
    let plan = plan_of(&env, tasks, "noop");
    let m = measure::run(&env, &plan, &fleet, &fleet_sidecars, true, |_| {});
    task_rows("W1-fan-out", tasks, &m)
}

/// scale: `executions` concurrent `sleep 20` from one coordinator on 10 sidecars.
pub fn scale(executions: usize) -> Vec<Row> {
    const SIDECARS: usize = 10;
    let env = TestEnv::new("bench-scale");
    let per = executions.div_ceil(SIDECARS);
    let jobs = format!(
        "[[job]]\nname = \"sleep\"\nmax_instances = {per}\n[[job.step]]\nname = \"s\"\nrun = [\"sleep\", \"20\"]\n"
    );
    let fleet_sidecars = sidecars(&env, SIDECARS, per as u32, &jobs);
    let fleet = env.write_fleet(&fleet_sidecars.iter().collect::<Vec<_>>());
    let plan = plan_of(&env, executions, "sleep");
    let sidecar_rss_before: u64 = fleet_sidecars
        .iter()
        .filter_map(Sidecar::pid)
        .map(|p| proc_field(p, "status", "VmRSS:"))
        .sum();
    let mut host = (0u64, 0u64, 0usize); // (supervisor PSS kB, sidecar RSS kB, supervisors)
    let mut all_running = Duration::ZERO;
    let mut started = std::collections::HashMap::new();
    let m = measure::run(&env, &plan, &fleet, &fleet_sidecars, false, |coordinator| {
        let began = Instant::now();
        let pids = wait_until(Duration::from_secs(120), "every execution to run", || {
            let pids = measure::supervisors(&fleet_sidecars);
            (pids.len() >= executions).then_some(pids)
        });
        all_running = began.elapsed();
        let pss = pids
            .iter()
            .map(|&p| proc_field(p, "smaps_rollup", "Pss:"))
            .sum();
        let rss = fleet_sidecars
            .iter()
            .filter_map(Sidecar::pid)
            .map(|p| proc_field(p, "status", "VmRSS:"))
            .sum();
        host = (pss, rss, pids.len());
        started = measure::started_times(&fleet_sidecars);
        let _ = coordinator;
    });
    let l = measure::latencies(&m.out);
    assert_eq!(m.out.code(), Some(0), "{}", m.out);
    let lags = measure::event_lags(&m.out, &started);
    let (pss, rss, n) = host;
    let per_execution_kib = (pss + rss.saturating_sub(sidecar_rss_before)) / n.max(1) as u64;
    vec![
        row(
            "scale",
            "all started (first placed -> last started)",
            format!(
                "{:.2} s ({executions} executions)",
                l.all_started_ms as f64 / 1000.0
            ),
            "<= 1 s",
        ),
        row(
            "scale",
            "event lag p50 / p99 (sidecar Started -> coordinator)",
            format!(
                "{} / {} ms ({} events)",
                percentile(&lags, 0.5),
                percentile(&lags, 0.99),
                lags.len()
            ),
            "p99 <= 50 ms",
        ),
        row(
            "scale",
            "all running (supervisors seen), from coordinator start",
            format!("{:.2} s", all_running.as_secs_f64()),
            "",
        ),
        row(
            "scale",
            "coordinator CPU / peak RSS",
            format!(
                "{:.2} s / {:.1} MB",
                m.cpu_coordinator,
                m.peak_mb("coordinator")
            ),
            "",
        ),
        row(
            "scale",
            "memory per execution (supervisor PSS + sidecar growth)",
            format!("{per_execution_kib} KiB"),
            "<= 1024 KiB",
        ),
        row(
            "scale",
            "CPU: sidecars + supervisors/jobs",
            format!("{:.2} + {:.2} s", m.cpu_sidecars, m.cpu_supervisors),
            "",
        ),
    ]
}

/// logs: one job writing `mib` MiB of 100-byte lines into the store.
pub fn logs(mib: u64) -> Vec<Row> {
    let env = TestEnv::new("bench-logs");
    let lines = mib * 1024 * 1024 / LINE_BYTES;
    let shipped = log_volume::ship(&env, lines);
    assert_eq!(shipped.run.code(), Some(0), "{}", shipped.run);
    assert_eq!(shipped.stored.lines, lines, "{:?}", shipped.stored);
    assert_eq!(shipped.stored.first_problem, None, "{:?}", shipped.stored);
    let peak = |k: &str| {
        shipped
            .peaks
            .get(k)
            .map_or(0.0, |m| m.hwm.max(m.rss) as f64 / 1e6)
    };
    vec![
        row(
            "logs",
            "job -> store",
            format!(
                "{:.1} MB/s ({mib} MiB, every line stored once)",
                shipped.mb_per_s()
            ),
            ">= 100 MB/s",
        ),
        row(
            "logs",
            "peak RSS: coordinator / sidecar / supervisor",
            format!(
                "{:.1} / {:.1} / {:.1} MB",
                peak("coordinator"),
                peak("sidecar"),
                peak("supervisor")
            ),
            "bounded",
        ),
    ]
}
