//! SQL Server Agent end to end: the real `sidecar` with a `[sqlagent]` section, talking to the
//! real `sqlagent-standin` binary (a TDS test double that simulates SQL Server Agent; it is not
//! SQL Server), driven by the real `coordinator run --json`.
//!
//! With `AGENTFLEET_TEST_MSSQL` set to an ADO connection string, the same scenarios run against
//! that SQL Server instead (its jobs come from `docker/sql/init.sql`, which mirrors `JOBS`);
//! the scenarios that need the stand-in's fault knobs say that they were skipped.
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agentfleet_e2e::process::run_with_deadline;
use agentfleet_e2e::standin::{LiveRun, SqlTarget};
use agentfleet_e2e::{CoordinatorOutput, RunEvents, Sidecar, SidecarOptions, TestEnv, toml_str};
use serde_json::Value;

/// The stand-in's jobs: the same names, steps and behaviour as `docker/sql/init.sql` creates
/// on a real server (durations are shorter here; history times are whole seconds anyway).
const JOBS: &str = r#"
[[job]]
name = "AF Test - Multi Step"
[[job.step]]
name = "extract"
on_success = "next"
duration = "300ms"
message = "extracted 42 rows"
[[job.step]]
name = "transform"
on_success = "next"
duration = "1s"
message = "transformed"
[[job.step]]
name = "load"
duration = "300ms"
message = "loaded 42 rows"

[[job]]
name = "AF Test - Step Retry"
[[job.step]]
name = "flaky"
on_success = "next"
retries = 1
retry_interval = "200ms"
duration = "200ms"
outcomes = ["fail", "succeed"]
message = "flaky: fails on odd attempts"
sql_message_id = 50000
sql_severity = 16
[[job.step]]
name = "finish"
duration = "100ms"

[[job]]
name = "AF Test - Fails"
[[job.step]]
name = "load"
duration = "200ms"
outcomes = ["fail"]
message = "AF test: the source is down"
sql_message_id = 50000
sql_severity = 16

[[job]]
name = "AF Test - Long"
[[job.step]]
name = "wait"
duration = "until_stopped"

[[job]]
name = "AF Test - Hold"
[[job.step]]
name = "hold"
duration = "1500ms"
"#;

/// Bound for a run that acts mid-run (restart, drop): it must end by itself well before.
const RUN_DEADLINE: Duration = Duration::from_secs(60);
/// How long the first step of a job may take to show up.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// One scenario's processes; fields drop in order: sidecar, SQL target, then the test dir.
struct World {
    sidecar: Sidecar,
    target: SqlTarget,
    env: TestEnv,
}

fn world(test: &str) -> World {
    let env = TestEnv::new(test);
    let target = SqlTarget::from_env(env.path(), JOBS);
    let (section, vars) = target.sidecar_section("200ms");
    let options = SidecarOptions {
        env: vars,
        ..SidecarOptions::default()
    };
    let sidecar = env.start_sidecar("sql1", &section, options);
    World {
        sidecar,
        target,
        env,
    }
}

impl World {
    /// Writes a plan of `tasks` (`(name, job, extra TOML lines)`) and the fleet file.
    fn plan(&self, tasks: &[(&str, &str, &str)]) -> (PathBuf, PathBuf) {
        let mut text = String::from("[plan]\nname = \"sqlagent-e2e\"\n");
        for (name, job, extra) in tasks {
            text += &format!(
                "\n[[task]]\nname = {}\njob = {}\n{extra}\n",
                toml_str(name),
                toml_str(job)
            );
        }
        let plan = self.env.write_file("plan.toml", &text);
        (plan, self.env.write_fleet(&[&self.sidecar]))
    }

    fn run(&self, tasks: &[(&str, &str, &str)]) -> (CoordinatorOutput, RunEvents) {
        let (plan, fleet) = self.plan(tasks);
        let out = self.env.run_plan(&plan, &fleet);
        let events = out.events();
        (out, events)
    }

    /// The stand-in, or None (after saying so) against a real server.
    fn standin_only(&self, scenario: &str) -> Option<&agentfleet_e2e::standin::StandinProcess> {
        let standin = self.target.standin();
        if standin.is_none() {
            eprintln!(
                "skipped `{scenario}` against the real SQL Server: it needs the stand-in's fault knobs"
            );
        }
        standin
    }
}

fn str_of<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or_default()
}

/// `(step_name, status)` of every step_finished event of `task`, in order.
fn steps_finished(events: &RunEvents, task: &str) -> Vec<(String, String)> {
    events
        .of_task("step_finished", task)
        .into_iter()
        .map(|e| {
            (
                str_of(e, "step_name").to_owned(),
                str_of(e, "status").to_owned(),
            )
        })
        .collect()
}

#[test]
fn starts_and_follows_a_multi_step_job() {
    let w = world("sqlagent-multi");
    let (out, events) = w.run(&[("multi", "AF Test - Multi Step", "")]);
    assert_eq!(out.code(), Some(0), "{out}");
    let started: Vec<&str> = events
        .of_task("step_started", "multi")
        .into_iter()
        .map(|e| str_of(e, "step_name"))
        .collect();
    assert_eq!(started, ["extract", "transform", "load"], "{out}");
    let finished = events.of_task("step_finished", "multi");
    assert_eq!(finished.len(), 3, "{out}");
    for step in finished {
        assert_eq!(step["status"], "succeeded", "{step}");
        assert!(step["duration_ms"].is_u64(), "no duration_ms: {step}");
    }
    assert_eq!(events.final_task_finished("multi")["status"], "succeeded");
}

#[test]
fn agent_retries_a_failed_step() {
    let w = world("sqlagent-retry");
    let (out, events) = w.run(&[("retry", "AF Test - Step Retry", "")]);
    assert_eq!(out.code(), Some(0), "{out}");
    let steps = steps_finished(&events, "retry");
    let flaky: Vec<&str> = steps
        .iter()
        .filter(|(name, _)| name == "flaky")
        .map(|(_, status)| status.as_str())
        .collect();
    assert_eq!(flaky, ["retry", "succeeded"], "{out}");
    let attempts: Vec<u64> = events
        .of_task("step_finished", "retry")
        .into_iter()
        .filter(|e| e["step_name"] == "flaky")
        .filter_map(|e| e["step_attempt"].as_u64())
        .collect();
    assert_eq!(attempts, [1, 2], "the step's attempts: {out}");
    assert_eq!(events.final_task_finished("retry")["status"], "succeeded");
}

#[test]
fn a_failing_job_fails_the_run_with_the_agents_message() {
    let w = world("sqlagent-fails");
    let (out, events) = w.run(&[("fails", "AF Test - Fails", "")]);
    assert_eq!(out.code(), Some(1), "{out}");
    let last = events.final_task_finished("fails");
    assert_eq!(last["status"], "failed", "{out}");
    let step = &events.of_task("step_finished", "fails")[0];
    assert!(
        str_of(step, "message").contains("the source is down"),
        "the step carries Agent's history message: {out}"
    );
    assert!(
        str_of(last, "message").contains("failed"),
        "the task carries Agent's outcome message: {out}"
    );
}

#[test]
fn a_task_timeout_stops_the_agent_job() {
    let w = world("sqlagent-timeout");
    let (out, events) = w.run(&[("long", "AF Test - Long", "timeout = \"2s\"")]);
    assert_eq!(out.code(), Some(1), "{out}");
    let last = events.final_task_finished("long");
    assert_eq!(last["status"], "timed_out", "{out}");
    // The job really ended on the server: the same job starts again at once.
    let (out, events) = w.run(&[("again", "AF Test - Long", "timeout = \"1s\"")]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(events.final_task_finished("again")["status"], "timed_out");
    assert_eq!(events.final_task_finished("again")["attempt"], 1, "{out}");
}

#[test]
fn the_same_job_is_never_started_twice_at_once() {
    let w = world("sqlagent-already");
    let (out, events) = w.run(&[
        ("hold-1", "AF Test - Hold", ""),
        ("hold-2", "AF Test - Hold", ""),
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    for task in ["hold-1", "hold-2"] {
        assert_eq!(
            events.final_task_finished(task)["status"],
            "succeeded",
            "{out}"
        );
        assert_eq!(events.of_task("task_started", task).len(), 1, "{out}");
    }
    // One ran after the other: the second started only once the first had finished.
    let at = |kind: &str, task: &str| {
        events
            .position(|e| e["type"] == kind && e["task"] == task)
            .unwrap_or_else(|| panic!("no {kind} for {task}: {out}"))
    };
    let (first, second) = if at("task_started", "hold-1") < at("task_started", "hold-2") {
        ("hold-1", "hold-2")
    } else {
        ("hold-2", "hold-1")
    };
    assert!(
        at("task_finished", first) < at("task_started", second),
        "`{second}` started while `{first}` ran: {out}"
    );
}

#[test]
fn an_unknown_job_is_refused_before_anything_starts() {
    let w = world("sqlagent-unknown");
    let (out, events) = w.run(&[
        ("fine", "AF Test - Multi Step", ""),
        ("ghost", "AF Test - No Such Job", ""),
    ]);
    assert!(matches!(out.code(), Some(2 | 3)), "{out}");
    assert!(
        out.stderr.contains("AF Test - No Such Job"),
        "the message names the job: {out}"
    );
    assert!(events.of_type("task_started").is_empty(), "{out}");
}

#[test]
fn an_agent_restart_mid_run_ends_the_execution_as_lost() {
    let w = world("sqlagent-restart");
    let Some(standin) = w.standin_only("Agent restart mid-run") else {
        return;
    };
    let (plan, fleet) = w.plan(&[("long", "AF Test - Long", "")]);
    let mut run = LiveRun::spawn(&w.env, &plan, &fleet);
    run.wait_for(STEP_TIMEOUT, "the step to start", |e| {
        e["type"] == "step_started" && e["task"] == "long"
    });
    standin.admin("agent restart crash");
    let out = run.finish(RUN_DEADLINE);
    assert!(
        !out.timed_out,
        "the run hung after the Agent restart: {out}"
    );
    assert_eq!(out.code(), Some(1), "{out}");
    let events = out.events();
    let last = events.final_task_finished("long");
    assert_eq!(last["status"], "lost", "{out}");
    let message = str_of(last, "message").to_ascii_lowercase();
    assert!(
        message.contains("agent") && message.contains("restart"),
        "the reason names the Agent restart: {out}"
    );
}

#[test]
fn a_dropped_connection_mid_run_is_survived() {
    let w = world("sqlagent-drop");
    let Some(standin) = w.standin_only("connection drop mid-run") else {
        return;
    };
    let (plan, fleet) = w.plan(&[("multi", "AF Test - Multi Step", "")]);
    let mut run = LiveRun::spawn(&w.env, &plan, &fleet);
    run.wait_for(STEP_TIMEOUT, "the step to start", |e| {
        e["type"] == "step_started" && e["task"] == "multi"
    });
    standin.admin("drop");
    let out = run.finish(RUN_DEADLINE);
    assert!(!out.timed_out, "{out}");
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    assert_eq!(events.final_task_finished("multi")["status"], "succeeded");
    let statuses: Vec<String> = steps_finished(&events, "multi")
        .into_iter()
        .map(|(_, status)| status)
        .collect();
    assert_eq!(statuses, ["succeeded"; 3], "{out}");
}

/// `sidecar check --config FILE` with the sidecar's own config and password variable
/// (`password` replaces the password when given).
fn sidecar_check(w: &World, password: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(agentfleet_e2e::binaries::binary("sidecar"));
    cmd.args([OsStr::new("check"), OsStr::new("--config")])
        .arg(w.sidecar.dir().join("sidecar.toml"))
        .env("NO_COLOR", "1");
    let (_, vars) = w.target.sidecar_section("200ms");
    for (k, v) in vars {
        cmd.env(k, password.unwrap_or(&v));
    }
    let out = run_with_deadline(cmd, Duration::from_secs(60)).expect("run sidecar check");
    assert!(
        !out.timed_out,
        "sidecar check hung:\n{}{}",
        out.stdout, out.stderr
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn sidecar_check_reports_the_sql_server_and_the_agent() {
    let w = world("sqlagent-check");
    let (code, text) = sidecar_check(&w, None);
    assert_eq!(code, 0, "{text}");
    for item in [
        "sqlagent reachable",
        "sqlagent login",
        "sqlagent agent",
        "sqlagent permissions",
        "sqlagent jobs",
    ] {
        assert!(text.contains(item), "no `{item}` line:\n{text}");
    }
    let (code, text) = sidecar_check(&w, Some("not-the-password"));
    assert_eq!(code, 1, "a refused login fails the check:\n{text}");
    assert!(text.contains("sqlagent login"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password is never printed:\n{text}"
    );

    let Some(standin) = w.standin_only("sidecar check with the Agent stopped") else {
        return;
    };
    standin.admin("agent stop");
    let (code, text) = sidecar_check(&w, None);
    assert_eq!(code, 1, "a stopped Agent fails the check:\n{text}");
    assert!(
        text.contains("not running") || text.contains("not connected"),
        "{text}"
    );
}

/// `coordinator demo` runs its stand-in-backed SQL Server Agent jobs next to the command jobs
/// (the tour's only failure is the optional `refresh-cube`, so it exits 0).
#[test]
fn the_demo_runs_agent_jobs_next_to_command_jobs() {
    let env = TestEnv::new("sqlagent-demo");
    let out = env.coordinator(["demo", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .contains("SQL Server Agent stand-in (a test double, not SQL Server)"),
        "the stand-in is labelled as such: {out}"
    );
    let events = out.events();
    for task in ["sales-mart", "rebuild-indexes", "store-sales"] {
        let last = events.final_task_finished(task);
        assert_eq!(last["status"], "succeeded", "{out}");
        assert_eq!(last["sidecar"], "demo-sql", "{out}");
    }
    let retried: Vec<String> = steps_finished(&events, "sales-mart")
        .into_iter()
        .filter(|(name, _)| name == "load sales mart")
        .map(|(_, status)| status)
        .collect();
    assert_eq!(retried, ["retry", "succeeded"], "{out}");
    // `store-sales` runs an SSIS package of the stand-in's catalog: its tasks are sub-steps.
    let package_tasks: Vec<(&str, &str)> = events
        .of_task("sub_step_finished", "store-sales")
        .into_iter()
        .map(|e| (str_of(e, "name"), str_of(e, "status")))
        .collect();
    assert_eq!(
        package_tasks,
        [
            ("Truncate staging", "succeeded"),
            ("Copy store sales", "succeeded"),
            ("Merge into mart", "succeeded"),
            // The package itself: the catalog records no end of its own, so it ends with
            // the catalog execution.
            ("Import Store Sales", "succeeded")
        ],
        "{out}"
    );
    let rows = events.of_task("data_flow_rows", "store-sales");
    assert_eq!(
        rows.last().map(|r| &r["rows"]),
        Some(&48211.into()),
        "{out}"
    );
    let catalog = events.of_task("catalog_execution", "store-sales");
    assert_eq!(
        catalog.last().map(|c| str_of(c, "status")),
        Some("succeeded"),
        "{out}"
    );
}
