//! "Nothing lost": a sidecar killed with SIGKILL in the middle of a command job and
//! restarted on the same state_dir and port. The job's supervisor keeps it running and
//! journaling; the coordinator's executor reconnects and resumes Watch from its last seq.
use std::time::Duration;

use agentfleet_e2e::faults::{CountingJob, crash_and_restart, log_lines};
use agentfleet_e2e::{SidecarOptions, TestEnv};

#[test]
fn a_sidecar_killed_mid_job_loses_nothing_and_starts_nothing_twice() {
    let env = TestEnv::new("durability-kill");
    let job = CountingJob::new(
        "count",
        40,
        Duration::from_millis(100),
        &env.path().join("markers"),
    );
    let mut sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"durability\"\n[[task]]\nname = \"count\"\njob = \"count\"\n",
    );

    let out = std::thread::scope(|scope| {
        let run = scope.spawn(|| env.run_plan(&plan, &fleet));
        job.wait_for_progress(8, Duration::from_secs(30));
        crash_and_restart(&mut sidecar);
        run.join().expect("the coordinator thread")
    });

    assert_eq!(out.code(), Some(0), "the task succeeds:\n{out}");
    let events = out.events();
    assert_eq!(
        events.final_task_finished("count")["status"],
        "succeeded",
        "{out}"
    );
    assert_eq!(
        log_lines(&events, "count"),
        job.expected_lines(),
        "every line exactly once, in order:\n{out}"
    );
    assert_eq!(job.runs(), 1, "the job ran once");
}
