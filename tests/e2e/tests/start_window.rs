//! "Started at most once" at the edges of the start: a sidecar killed inside the start
//! window of a SQL Server Agent job (after the journal record, before the ledger entry; or
//! after the ledger entry, before `sp_start_job`) and restarted never starts the job late,
//! and a second sidecar on a state_dir that one already uses is refused.
//!
//! The crash points are the test-only `AGENTFLEET_FAULT` ones (`agentfleet_common::fault`):
//! the sidecar aborts there, as a `kill -9` would stop it. The stand-in counts every
//! `sp_start_job` it receives.
use std::process::Command;
use std::time::Duration;

use agentfleet_e2e::process::{is_alive, run_with_deadline};
use agentfleet_e2e::standin::{LiveRun, SqlTarget, StandinProcess};
use agentfleet_e2e::{SidecarOptions, TestEnv, toml_str, wait_until};

const JOBS: &str = r#"
[[job]]
name = "AF Test - Multi Step"
[[job.step]]
name = "extract"
on_success = "next"
duration = "300ms"
message = "extracted 42 rows"
[[job.step]]
name = "load"
duration = "300ms"
message = "loaded 42 rows"
"#;

/// Bound for each wait of these tests; each is met in seconds when things work.
const WAIT: Duration = Duration::from_secs(60);

/// Runs one task of the Agent job on a sidecar armed to crash at `fault`, restarts the
/// sidecar disarmed (after an Agent restart when `agent_restarts`), and checks that the
/// execution ends LOST with `expected` in its message and that `sp_start_job` never ran.
fn crash_in_the_start_window(test: &str, fault: &str, agent_restarts: bool, expected: &str) {
    let env = TestEnv::new(test);
    let target = SqlTarget::Standin(StandinProcess::start(&env.path().join("standin"), JOBS));
    let (section, vars) = target.sidecar_section("200ms");
    let mut armed = vars.clone();
    armed.push(("AGENTFLEET_FAULT".into(), fault.into()));
    let options = SidecarOptions {
        env: armed,
        ..SidecarOptions::default()
    };
    let mut sidecar = env.start_sidecar("sql1", &section, options);
    let plan = env.write_file(
        "plan.toml",
        &format!(
            "[plan]\nname = \"start-window\"\n\n[[task]]\nname = \"load\"\njob = {}\n",
            toml_str("AF Test - Multi Step")
        ),
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let mut run = LiveRun::spawn(&env, &plan, &fleet);

    // The sidecar aborts at the crash point while handling StartJob.
    let pid = sidecar.pid().expect("the sidecar runs");
    wait_until(WAIT, "the sidecar to crash at its fault point", || {
        (!is_alive(pid)).then_some(())
    });
    let standin = target.standin().expect("a stand-in");
    if agent_restarts {
        standin.admin("agent restart graceful");
    }
    sidecar.set_env(vars);
    sidecar.restart();

    let out = run.finish(WAIT);
    let events = out.events();
    let finished = events.final_task_finished("load");
    assert_eq!(finished["status"], "lost", "{finished}\n{}", out.stderr);
    let message = finished["message"].as_str().unwrap_or_default();
    assert!(message.contains(expected), "{message}");
    assert_ne!(out.code(), Some(0), "a lost task fails the run");
    assert_eq!(
        standin.admin("requests start_job"),
        "ok 0",
        "sp_start_job was called after the restart"
    );
}

#[test]
fn a_crash_before_the_ledger_entry_never_starts_the_job_late() {
    crash_in_the_start_window(
        "crash_before_ledger",
        "sqlagent-before-ledger",
        false,
        "it was not started",
    );
}

#[test]
fn a_crash_before_sp_start_job_never_starts_the_job_late() {
    // The Agent restarts while the sidecar is down: the pending start cannot be found,
    // which once made the resumed execution call sp_start_job.
    crash_in_the_start_window(
        "crash_before_start_batch",
        "sqlagent-before-start-batch",
        true,
        "not started now",
    );
}

#[test]
fn a_second_sidecar_on_the_same_state_dir_is_refused() {
    let env = TestEnv::new("second_sidecar_same_state_dir");
    let first = env.start_sidecar(
        "one",
        "[[job]]\nname = \"noop\"\n[[job.step]]\nname = \"s\"\nrun = [\"true\"]\n",
        SidecarOptions::default(),
    );
    let mut cmd = Command::new(agentfleet_e2e::binaries::binary("sidecar"));
    cmd.arg("serve")
        .arg("--config")
        .arg(first.dir().join("sidecar.toml"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .current_dir(first.dir());
    let second = run_with_deadline(cmd, WAIT).expect("spawn a second sidecar");
    assert!(
        !second.timed_out,
        "a second sidecar served on a state_dir in use:\n{}",
        second.stderr
    );
    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    assert!(
        second.stderr.contains("in use by another sidecar")
            && second
                .stderr
                .contains(&format!("pid {}", first.pid().unwrap())),
        "{}",
        second.stderr
    );
    assert!(
        !second.stdout.contains("listening"),
        "it must not listen: {}",
        second.stdout
    );
}
