//! What a running command job costs on the server: `JOBS` concurrent `sleep` jobs on one
//! sidecar (release build, real binaries), then each supervisor's proportional memory (PSS,
//! shared pages split among the processes that share them) and thread count.
//!
//! `cargo bench -p agentfleet-e2e --bench supervisor_memory`
use std::fmt::Write as _;
use std::time::Duration;

use agentfleet_e2e::background::BackgroundCoordinator;
use agentfleet_e2e::process::{pids_with_arg, proc_field};
use agentfleet_e2e::{SidecarOptions, TestEnv, wait_until};

const JOBS: usize = 20;

fn main() {
    let env = TestEnv::new("bench-supervisor-memory");
    let mut jobs = String::new();
    let mut plan = String::from("[plan]\nname = \"memory\"\n");
    for i in 0..JOBS {
        // One job per task: a job never runs twice at once on one sidecar.
        writeln!(
            jobs,
            "[[job]]\nname = \"sleep-{i}\"\n[[job.step]]\nname = \"s\"\nrun = [\"sleep\", \"30\"]\n"
        )
        .unwrap();
        writeln!(plan, "[[task]]\nname = \"t{i}\"\njob = \"sleep-{i}\"\n").unwrap();
    }
    let sidecar = env.start_sidecar(
        "s1",
        &jobs,
        SidecarOptions {
            slots: JOBS as u32,
            ..Default::default()
        },
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file("plan.toml", &plan);
    let args = [
        "run",
        plan.to_str().unwrap(),
        "--fleet",
        fleet.to_str().unwrap(),
    ];
    let mut run = BackgroundCoordinator::spawn(&env, args);
    let needle = sidecar.state_dir().to_string_lossy().into_owned();
    let supervisors = wait_until(Duration::from_secs(60), "every job to run", || {
        let pids = pids_with_arg(&needle);
        (pids.len() >= JOBS).then_some(pids)
    });
    let pss: u64 = supervisors
        .iter()
        .map(|p| proc_field(*p, "smaps_rollup", "Pss:"))
        .sum();
    let threads: u64 = supervisors
        .iter()
        .map(|p| proc_field(*p, "status", "Threads:"))
        .sum();
    let n = supervisors.len() as u64;
    println!("supervisor memory: {n} concurrent `sleep` jobs on one sidecar, release build");
    println!(
        "  per running job: PSS {} kB, {} threads (total PSS {:.1} MiB)",
        pss / n,
        threads / n,
        pss as f64 / 1024.0
    );
    let _ = run.kill();
}
