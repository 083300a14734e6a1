//! The edges of resuming and stopping a run:
//! - a coordinator that dies after recording a placement and before sending its StartJob
//!   (the test-only crash point `AGENTFLEET_FAULT=coordinator-before-start-job`) leaves a
//!   run whose execution the sidecar never heard of: `cancel` and `attach` of that run
//!   never start the job (their StartJob is `resume_only`); the task is LOST, and rerun
//!   under a new execution id only when the plan allows it;
//! - a sidecar that cannot stop its job (frozen with SIGSTOP) does not hold a run up: a
//!   task timeout, a plan timeout, and SIGTERM to the coordinator, end the run within the
//!   coordinator's stop deadline, saying the job may still be running;
//! - a sidecar takes only canonical (lower-case UUID) execution ids, which name its
//!   journal directories.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentfleet_common::proto::{StartJobRequest, StopJobRequest};
use agentfleet_e2e::background::BackgroundCoordinator;
use agentfleet_e2e::faults::CountingJob;
use agentfleet_e2e::freeze::Frozen;
use agentfleet_e2e::process::send_signal;
use agentfleet_e2e::{CoordinatorOutput, Sidecar, SidecarOptions, TestEnv, grpc, toml_str};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The coordinator's `STOP_CONFIRM_DEADLINE` (coordinator/src/execution/stop.rs): how
/// long it waits for a sidecar to confirm a stop before giving up on the execution.
const STOP_CONFIRM_DEADLINE: Duration = Duration::from_secs(30);
/// What a coordinator may take beyond that deadline to exit: acknowledging executions to
/// the frozen sidecar (5 s), the runtime's shutdown (2 s), start-up and slack.
const EXIT_SLACK: Duration = Duration::from_secs(25);
/// Until a job has started, or a short run has ended.
const WAIT: Duration = Duration::from_secs(60);

/// A counting job of `lines` lines, one every `interval`, with its markers in the test dir.
fn counting_job(env: &TestEnv, lines: u32, interval: Duration) -> CountingJob {
    CountingJob::new("count", lines, interval, &env.path().join("markers"))
}

/// A plan with one task `count` of job `count`, plus `task_keys`.
fn plan(env: &TestEnv, task_keys: &str) -> PathBuf {
    plan_with(env, "", task_keys)
}

/// A plan with `plan_keys` in `[plan]` and one task `count` of job `count` with `task_keys`.
fn plan_with(env: &TestEnv, plan_keys: &str, task_keys: &str) -> PathBuf {
    env.write_file(
        "plan.toml",
        &format!(
            "[plan]\nname = \"resume-edges\"\n{plan_keys}\n[[task]]\nname = \"count\"\njob = {}\n{task_keys}",
            toml_str("count")
        ),
    )
}

fn run_args<'a>(plan: &'a Path, fleet: &'a Path) -> Vec<&'a OsStr> {
    vec![
        OsStr::new("run"),
        plan.as_os_str(),
        OsStr::new("--fleet"),
        fleet.as_os_str(),
        OsStr::new("--json"),
    ]
}

/// `coordinator show last --json`.
fn show_last(env: &TestEnv) -> Value {
    let out = env.coordinator(["show", "last", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e}):\n{out}"))
}

/// Runs the plan with the coordinator armed to crash once the placement is recorded and
/// before StartJob is sent; returns the execution id the store holds as running.
fn crash_before_start_job(env: &TestEnv, plan: &Path, fleet: &Path) -> String {
    let crashed = agentfleet_e2e::coordinator::run(
        env.path(),
        &env.path().join("home"),
        run_args(plan, fleet),
        &[(
            agentfleet_common::fault::ENV,
            "coordinator-before-start-job",
        )],
    );
    assert_eq!(
        crashed.code(),
        None,
        "the coordinator aborts at its crash point: {crashed}"
    );
    let show = show_last(env);
    assert_eq!(show["run"]["status"], "running", "{show:#}");
    let executions = show["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 1, "the placement is recorded: {show:#}");
    assert!(executions[0]["finished_ms"].is_null(), "{show:#}");
    executions[0]["execution_id"]
        .as_str()
        .expect("an execution id")
        .to_owned()
}

/// The executions `sidecar` holds (running and finished).
fn executions_on(env: &TestEnv, sidecar: &Sidecar) -> Vec<String> {
    runtime().block_on(async {
        let mut client = grpc::client(sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let request = agentfleet_common::proto::ListExecutionsRequest {
            running_only: false,
        };
        client
            .list_executions(request)
            .await
            .expect("ListExecutions")
            .into_inner()
            .executions
            .into_iter()
            .map(|e| e.execution_id)
            .collect()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn cancel_of_a_run_whose_start_job_never_arrived_starts_nothing() {
    let env = TestEnv::new("resume-cancel-unsent");
    let job = counting_job(&env, 3, Duration::from_millis(10));
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    // Even a task the plan lets rerun when lost is not rerun by a cancel.
    let plan = plan(&env, "rerun_if_lost = true\nretries = 2\n");
    let placed = crash_before_start_job(&env, &plan, &fleet);

    let cancel = env.coordinator(["cancel", "last"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    let show = show_last(&env);
    assert_eq!(show["run"]["status"], "canceled", "{show:#}");
    assert_eq!(show["tasks"][0]["status"], "lost", "{show:#}");
    let message = show["tasks"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has no record of this execution") && message.contains("not started"),
        "{show:#}"
    );
    assert_eq!(job.runs(), 0, "cancel started the job: {cancel}");
    assert_eq!(
        executions_on(&env, &sidecar),
        Vec::<String>::new(),
        "the sidecar created an execution (placed as {placed})"
    );
}

#[test]
fn attach_of_a_run_whose_start_job_never_arrived_does_not_start_it() {
    let env = TestEnv::new("resume-attach-unsent");
    let job = counting_job(&env, 3, Duration::from_millis(10));
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = plan(&env, "");
    let placed = crash_before_start_job(&env, &plan, &fleet);

    let out = env.coordinator(["attach", "last", "--json"]);
    assert_eq!(out.code(), Some(1), "a lost task fails the run: {out}");
    let finished = out.events().final_task_finished("count").clone();
    assert_eq!(finished["status"], "lost", "{out}");
    assert_eq!(finished["execution_id"], placed.as_str(), "{out}");
    assert!(
        finished["message"]
            .as_str()
            .is_some_and(|m| m.contains("its StartJob never arrived or it was pruned")),
        "{out}"
    );
    assert_eq!(job.runs(), 0, "attach started the job: {out}");
    assert!(executions_on(&env, &sidecar).is_empty(), "{out}");
}

#[test]
fn attach_reruns_a_lost_start_under_a_new_execution_id_when_the_plan_allows() {
    let env = TestEnv::new("resume-attach-rerun");
    let job = counting_job(&env, 3, Duration::from_millis(10));
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = plan(&env, "rerun_if_lost = true\nretries = 1\n");
    let placed = crash_before_start_job(&env, &plan, &fleet);

    let out = env.coordinator(["attach", "last", "--json"]);
    assert_eq!(out.code(), Some(0), "the rerun succeeds: {out}");
    let runs = std::fs::read_to_string(job.markers.join("runs")).unwrap_or_default();
    let ran: Vec<&str> = runs.lines().collect();
    assert_eq!(ran.len(), 1, "the job ran once: {out}");
    assert_ne!(
        ran[0], placed,
        "the lost execution itself was started: {out}"
    );
    let events = out.events();
    let finished = events.of_task("task_finished", "count");
    assert_eq!(finished.len(), 2, "{out}");
    assert_eq!(finished[0]["status"], "lost", "{out}");
    assert_eq!(finished[1]["execution_id"], ran[0], "{out}");
}

/// The task or plan timeout of the frozen-sidecar tests: long enough for the job to start
/// and its sidecar to be frozen before it expires, also on a loaded machine.
const TIMEOUT_KEY: &str = "timeout = \"8s\"\n";

/// Runs a long job, freezes its sidecar once the job has started, applies `interrupt`
/// to the coordinator, and returns how the coordinator ended and how long that took
/// after the freeze; then thaws the sidecar and stops the job.
fn run_against_a_frozen_sidecar(
    test: &str,
    (plan_keys, task_keys): (&str, &str),
    interrupt: impl FnOnce(&BackgroundCoordinator),
) -> (CoordinatorOutput, Duration) {
    let env = TestEnv::new(test);
    let job = counting_job(&env, 3000, Duration::from_millis(100));
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = plan_with(&env, plan_keys, task_keys);
    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet));
    let started = run.wait_for_event(WAIT, "the task to start", |e| {
        e["type"] == "task_started" && e["task"] == "count"
    });
    job.wait_for_progress(1, WAIT);

    let frozen = Frozen::freeze(sidecar.pid().expect("the sidecar runs"));
    let froze_at = Instant::now();
    interrupt(&run);
    let out = run.finish(STOP_CONFIRM_DEADLINE + EXIT_SLACK + Duration::from_secs(30));
    let took = froze_at.elapsed();
    frozen.thaw();

    // Clean up: the thawed sidecar stops the job.
    let execution_id = started["execution_id"].as_str().expect("an execution id");
    runtime().block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let stop = StopJobRequest {
            execution_id: execution_id.to_owned(),
            reason: "test clean-up".into(),
        };
        client.stop_job(stop).await.expect("StopJob after the thaw");
        grpc::watch_to_end(&mut client, execution_id, WAIT).await;
    });
    (out, took)
}

/// Asserts that the coordinator ended in time, with `status` for the task, exit `code`,
/// and a message saying the sidecar did not confirm the stop.
fn assert_gave_up(out: &CoordinatorOutput, took: Duration, status: &str, code: i32) {
    let bound = STOP_CONFIRM_DEADLINE + EXIT_SLACK;
    assert!(
        !out.timed_out && took < bound,
        "the coordinator took {took:?} (bound {bound:?}): {out}"
    );
    assert_eq!(out.code(), Some(code), "{out}");
    let events = out.events();
    let finished = events.final_task_finished("count");
    assert_eq!(finished["status"], status, "{out}");
    let message = finished["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("sidecar `s1` did not confirm the stop")
            && message.contains("the job may still be running on s1"),
        "{out}"
    );
}

#[test]
fn a_task_timeout_ends_the_run_when_the_sidecar_cannot_stop_its_job() {
    // `retries` alone does not rerun it: the job may still be running on s1, and only
    // `rerun_if_lost` allows a second copy.
    let task_keys = format!("{TIMEOUT_KEY}retries = 1\n");
    let (out, took) = run_against_a_frozen_sidecar("stop-frozen-timeout", ("", &task_keys), |_| {});
    assert_gave_up(&out, took, "timed_out", 1);
    let events = out.events();
    let finished = events.of_task("task_finished", "count");
    assert_eq!(finished.len(), 1, "the task ran again: {out}");
    assert_eq!(finished[0]["will_retry"], false, "{out}");
}

#[test]
fn a_plan_timeout_ends_the_run_when_the_sidecar_cannot_stop_its_job() {
    let (out, took) =
        run_against_a_frozen_sidecar("stop-frozen-plan-timeout", (TIMEOUT_KEY, ""), |_| {});
    assert_gave_up(&out, took, "canceled", 1);
    assert_eq!(out.events().run_finished()["status"], "timed_out", "{out}");
}

#[test]
fn sigterm_ends_the_coordinator_in_bounded_time_when_the_sidecar_cannot_stop_its_job() {
    let (out, took) = run_against_a_frozen_sidecar("stop-frozen-sigterm", ("", ""), |run| {
        send_signal(run.pid(), Signal::SIGTERM);
    });
    assert_gave_up(&out, took, "canceled", 130);
    assert!(
        out.stderr
            .contains("waiting up to 30s for their sidecars to confirm"),
        "the coordinator says why it does not exit at once: {out}"
    );
}

#[test]
fn start_job_refuses_execution_ids_that_are_not_lower_case_uuids() {
    let env = TestEnv::new("canonical-ids");
    let job = counting_job(&env, 1, Duration::from_millis(10));
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let canonical = agentfleet_common::ids::new_execution_id();
    runtime().block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let start = |execution_id: String| StartJobRequest {
            execution_id,
            job: "count".into(),
            ..Default::default()
        };
        // On a case-insensitive file system these would share the canonical id's journal.
        for bad in [canonical.to_uppercase(), "e1".to_owned()] {
            let status = client.start_job(start(bad.clone())).await.unwrap_err();
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{bad}: {status:?}"
            );
            assert!(
                status.message().contains("expected a lower-case UUID"),
                "{bad}: {}",
                status.message()
            );
        }
        let started = client
            .start_job(start(canonical.clone()))
            .await
            .expect("StartJob");
        assert!(started.into_inner().created);
        grpc::watch_to_end(&mut client, &canonical, WAIT).await;
    });
    assert_eq!(job.runs(), 1, "only the canonical id started the job");
}
