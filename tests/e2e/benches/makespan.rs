//! Makespan benchmark: 40 jobs with known durations (lognormal, seed 42, summing to 60 s)
//! on one sidecar with 4 slots, through the real binaries. The lower bound is
//! max(sum / slots, longest) = 15.00 s.
//!
//! The first run knows nothing about the jobs, so ready tasks go in plan order; the second
//! run (same store, same sidecar) knows each job's past duration and places the longest
//! first (LPT). Prints both makespans, the bound, and the coordinator's overhead per task.
//!
//! `cargo bench -p agentfleet-e2e --bench makespan`
use std::fmt::Write as _;
use std::time::Instant;

use agentfleet_e2e::{SidecarOptions, TestEnv};

/// The same 40 durations as the placement bench (seconds).
#[expect(
    clippy::approx_constant,
    reason = "measured durations; 3.14 is not π here"
)]
const DURATIONS_S: [f64; 40] = [
    1.15, 0.63, 2.58, 0.85, 0.43, 1.48, 0.37, 3.79, 0.73, 2.44, 3.14, 4.49, 6.0, 0.65, 3.09, 3.06,
    1.27, 0.56, 0.44, 0.44, 1.26, 0.76, 1.59, 0.18, 0.45, 1.21, 0.67, 2.0, 1.34, 2.7, 0.61, 1.06,
    2.94, 0.79, 0.23, 1.89, 0.36, 1.61, 0.39, 0.37,
];
const SLOTS: u32 = 4;

fn main() {
    let env = TestEnv::new("bench-makespan");
    let mut jobs = String::new();
    let mut plan = String::from("[plan]\nname = \"w2\"\n");
    for (i, d) in DURATIONS_S.iter().enumerate() {
        // One job per task: a job never runs twice at once on one sidecar.
        writeln!(jobs, "[[job]]\nname = \"job-{i:02}\"\n[[job.step]]\nname = \"work\"\nrun = [\"sleep\", \"{d}\"]\n").unwrap();
        writeln!(plan, "[[task]]\nname = \"t{i:02}\"\njob = \"job-{i:02}\"\n").unwrap();
    }
    let sidecar = env.start_sidecar(
        "s1",
        &jobs,
        SidecarOptions {
            slots: SLOTS,
            ..Default::default()
        },
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file("plan.toml", &plan);

    let sum: f64 = DURATIONS_S.iter().sum();
    let longest = DURATIONS_S.iter().cloned().fold(0.0, f64::max);
    let bound = (sum / f64::from(SLOTS)).max(longest);
    println!(
        "makespan: 40 jobs, {sum:.2} s of work, 1 sidecar x {SLOTS} slots; lower bound {bound:.2} s"
    );
    for label in [
        "first run (no history: plan order)",
        "second run (history: longest first)",
    ] {
        let started = Instant::now();
        let out = env.run_plan(&plan, &fleet);
        let took = started.elapsed().as_secs_f64();
        assert_eq!(out.code(), Some(0), "{out}");
        println!(
            "  {label:<38} {took:6.2} s  = {:.3} x bound  (overhead {:.0} ms per task over the bound)",
            took / bound,
            (took - bound) * 1000.0 / DURATIONS_S.len() as f64
        );
    }
}
