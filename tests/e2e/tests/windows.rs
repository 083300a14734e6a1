//! The Windows suite: the Windows `sidecar.exe` (and `coordinator.exe`) under Wine, driven
//! by the Linux `coordinator` over mTLS, with pki files and the journal on `Z:\` paths.
//! `.ci/windows-e2e` builds the Windows binaries and a Wine prefix and runs this file with
//! `AGENTFLEET_WINDOWS_BIN_DIR` set; without it every test says it is skipped and returns.
//!
//! What Wine shows and what it cannot: see README "Windows".
use std::time::{Duration, Instant};

use agentfleet_e2e::background::BackgroundCoordinator;
use agentfleet_e2e::faults::log_lines;
use agentfleet_e2e::process::{pids_with_arg, run_with_deadline};
use agentfleet_e2e::wine::{BIN_DIR_VAR, Wine, windows_path};
use agentfleet_e2e::{SidecarOptions, TestEnv, toml_str, wait_until};

/// Deadlines (never expected durations): Wine starts processes slowly.
const RUN_DEADLINE: Duration = Duration::from_secs(180);
const GONE_DEADLINE: Duration = Duration::from_secs(30);

fn wine(test: &str) -> Option<Wine> {
    let wine = Wine::from_env();
    if wine.is_none() {
        eprintln!(
            "SKIPPED {test}: {BIN_DIR_VAR} is not set (the Windows suite runs in .ci/windows-e2e)"
        );
    }
    wine
}

fn options(wine: &Wine) -> SidecarOptions {
    SidecarOptions {
        wine: Some(wine.clone()),
        ..SidecarOptions::default()
    }
}

/// `[[job.step]]` `run = [...]` of words (no spaces inside a word, so that nothing needs
/// quoting on the way through `cmd /c`).
fn run_words(words: &[&str]) -> String {
    let words: Vec<String> = words.iter().map(toml_str).collect();
    format!("[{}]", words.join(", "))
}

/// Three steps through `cmd.exe`: output, a failing exit code whose `on_failure = "next"`
/// goes on, and a step that fails on its first attempt and succeeds on its retry.
#[test]
fn command_jobs_run_through_cmd_with_output_exit_codes_step_actions_and_retries() {
    let Some(wine) = wine("command_jobs") else {
        return;
    };
    let env = TestEnv::new("windows-cmd");
    let jobs = format!(
        "[[job]]\nname = \"three-steps\"\n\
         [[job.step]]\nname = \"hello\"\nrun = {hello}\n\
         [[job.step]]\nname = \"exit-5\"\nrun = {exit5}\non_failure = \"next\"\n\
         [[job.step]]\nname = \"flaky\"\nrun = {flaky}\nretries = 1\nretry_interval = \"1s\"\n",
        hello = run_words(&["cmd", "/c", "echo", "hello-from-cmd"]),
        exit5 = run_words(&["cmd", "/c", "echo", "about-to-fail&", "exit", "5"]),
        flaky = run_words(&[
            "cmd",
            "/c",
            "if",
            "%AGENTFLEET_ATTEMPT%==1",
            "(echo",
            "first-attempt-fails&",
            "exit",
            "7)",
            "else",
            "(echo",
            "retried-ok)",
        ]),
    );
    let sidecar = env.start_sidecar("win1", &jobs, options(&wine));
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"windows-cmd\"\n[[task]]\nname = \"t\"\njob = \"three-steps\"\n",
    );
    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    assert_eq!(
        events.final_task_finished("t")["status"],
        "succeeded",
        "{out}"
    );
    let lines = log_lines(&events, "t");
    for line in [
        "hello-from-cmd",
        "about-to-fail",
        "first-attempt-fails",
        "retried-ok",
    ] {
        assert!(
            lines.iter().any(|l| l.trim() == line),
            "{line} in {lines:?}:\n{out}"
        );
    }
    let steps: Vec<(String, String, String)> = events
        .of_task("step_finished", "t")
        .into_iter()
        .map(|e| {
            (
                e["step_name"].as_str().unwrap_or_default().to_owned(),
                e["status"].as_str().unwrap_or_default().to_owned(),
                e["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let statuses: Vec<(&str, &str)> = steps
        .iter()
        .map(|(name, status, _)| (name.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("hello", "succeeded"),
            ("exit-5", "failed"),
            ("flaky", "retry"),
            ("flaky", "succeeded")
        ],
        "{out}"
    );
    assert!(
        steps[1].2.contains('5'),
        "the exit code is reported: {steps:?}"
    );
    assert!(
        steps[2].2.contains('7'),
        "the exit code is reported: {steps:?}"
    );
}

/// A task timeout stops the job (StopJob, then the supervisor ends the step's Job Object):
/// `cmd.exe` and the grandchild it started, which would sleep ten minutes, are both gone.
#[test]
fn a_task_timeout_ends_the_whole_process_tree_through_the_job_object() {
    let Some(wine) = wine("task_timeout") else {
        return;
    };
    let env = TestEnv::new("windows-timeout");
    // A marker only this test's processes carry on their command lines.
    let marker = format!("tree-marker-{}", std::process::id());
    let coordinator_exe = windows_path(&wine.exe("coordinator"));
    let jobs = format!(
        "[[job]]\nname = \"sleeper\"\n[[job.step]]\nname = \"sleep\"\nrun = {}\n",
        run_words(&[
            "cmd",
            "/c",
            &coordinator_exe,
            "demo-step",
            &format!("say:{marker}"),
            "sleep:10min",
        ])
    );
    let sidecar = env.start_sidecar("win1", &jobs, options(&wine));
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"windows-timeout\"\n[[task]]\nname = \"t\"\njob = \"sleeper\"\ntimeout = \"3s\"\n",
    );
    let started = Instant::now();
    let out = env.run_plan(&plan, &fleet);
    let took = started.elapsed();
    assert_eq!(out.code(), Some(1), "{out}");
    let events = out.events();
    let finished = events.final_task_finished("t");
    assert_eq!(finished["status"], "timed_out", "{out}");
    let lines = log_lines(&events, "t");
    assert!(
        lines.iter().any(|l| l == &marker),
        "the job had started: {lines:?}"
    );
    // Nothing of the job is left: neither cmd.exe nor the demo-step it started.
    wait_until(GONE_DEADLINE, "the job's processes to be gone", || {
        pids_with_arg(&marker).is_empty().then_some(())
    });
    // Ended by the kill at the end of stop_grace (console programs get no polite close):
    // exit code 1 is what the kill leaves; a program that ended by itself would say 0.
    let step = events.of_task("step_finished", "t");
    assert_eq!(
        step.first().and_then(|s| s["message"].as_str()),
        Some("stopped: exit code 1"),
        "{out}"
    );
    eprintln!(
        "task timeout 3s, stop_grace 2s: the run took {took:?}; step: {}",
        step.first().map(|s| s.to_string()).unwrap_or_default()
    );
}

/// `sidecar.exe` killed mid-job (as `kill -9` or a crash would) and started again: the
/// job goes on under its supervisor, and every line reaches the coordinator once.
#[test]
fn a_killed_sidecar_exe_restarts_and_the_job_survives() {
    let Some(wine) = wine("killed_sidecar") else {
        return;
    };
    let env = TestEnv::new("windows-kill");
    let coordinator_exe = windows_path(&wine.exe("coordinator"));
    let expected: Vec<String> = (1..=12).map(|i| format!("line-{i}")).collect();
    let mut words = vec![coordinator_exe.as_str(), "demo-step"];
    let says: Vec<String> = expected.iter().map(|l| format!("say:{l}")).collect();
    for say in &says {
        words.push(say);
        words.push("sleep:500ms");
    }
    let jobs = format!(
        "[[job]]\nname = \"count\"\n[[job.step]]\nname = \"count\"\nrun = {}\n",
        run_words(&words)
    );
    let mut sidecar = env.start_sidecar("win1", &jobs, options(&wine));
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"windows-kill\"\n[[task]]\nname = \"count\"\njob = \"count\"\n",
    );
    let mut run = BackgroundCoordinator::spawn(
        &env,
        [
            "run",
            plan.to_str().unwrap(),
            "--fleet",
            fleet.to_str().unwrap(),
            "--json",
        ],
    );
    run.wait_for_event(RUN_DEADLINE, "line-2", |e| {
        e["type"] == "log" && e["line"] == "line-2"
    });
    sidecar.kill();
    sidecar.restart();
    let out = run.finish(RUN_DEADLINE);
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    assert_eq!(
        events.final_task_finished("count")["status"],
        "succeeded",
        "{out}"
    );
    assert_eq!(
        log_lines(&events, "count"),
        expected,
        "every line once, in order:\n{out}"
    );
}

/// `coordinator.exe demo`: four sidecars in-process, supervisors and sample steps as
/// `coordinator.exe` processes, the SQL Server Agent stand-in; the same tour as on Linux.
#[test]
fn the_demo_runs_on_windows() {
    let Some(wine) = wine("demo") else {
        return;
    };
    let env = TestEnv::new("windows-demo");
    let mut cmd = wine.command("coordinator");
    cmd.arg("demo")
        .arg("--json")
        .arg("--home")
        .arg(windows_path(&env.path().join("home")))
        .current_dir(env.path());
    let out = run_with_deadline(cmd, RUN_DEADLINE * 2).expect("run coordinator.exe demo");
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout, out.stderr
    );
    assert!(!out.timed_out, "the demo did not end in time:\n{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let events = agentfleet_e2e::RunEvents::parse(&out.stdout).unwrap();
    assert_eq!(
        events.final_task_finished("load-facts")["status"],
        "succeeded",
        "{text}"
    );
    assert_eq!(
        events.final_task_finished("sales-mart")["status"],
        "succeeded",
        "{text}"
    );
    assert_eq!(
        events.final_task_finished("refresh-cube")["status"],
        "failed",
        "{text}"
    );
}

/// `sidecar install` through Wine's service control manager: registers the service and
/// starts it (the manager runs `sidecar.exe service-run`, which serves over mTLS and logs
/// to `state_dir\sidecar.log`); `sidecar uninstall` stops and deletes it. Wine's manager
/// lacks delayed start and restart-on-failure settings: `install` says so and goes on.
#[test]
fn sidecar_install_and_uninstall_through_wines_service_manager() {
    let Some(wine) = wine("service") else {
        return;
    };
    let env = TestEnv::new("windows-service");
    env.pki().issue_sidecar("svc1");
    let pair = env.pki().pair("svc1");
    let state_dir = env.path().join("state");
    // A port that was free a moment ago (the service prints nothing we could read it from).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let config = env.write_file(
        "sidecar.toml",
        &format!(
            "name = \"svc1\"\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {}\nstop_grace = \"2s\"\n\
             [tls]\ncert = {}\nkey = {}\nclient_ca = {}\nallow_clients = [\"coordinator\"]\n",
            toml_str(windows_path(&state_dir)),
            toml_str(windows_path(&pair.cert)),
            toml_str(windows_path(&pair.key)),
            toml_str(windows_path(&env.pki().ca())),
        ),
    );
    let sidecar = |args: &[&str]| {
        let mut cmd = wine.command("sidecar");
        cmd.args(args);
        let out = run_with_deadline(cmd, RUN_DEADLINE).expect("run sidecar.exe");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.status.success() && !out.timed_out,
            "sidecar {args:?}: {:?}\n{text}",
            out.status
        );
        text
    };
    // Whatever happens below, the service does not outlive the test.
    struct Uninstall<'a>(&'a dyn Fn(&[&str]) -> String);
    impl Drop for Uninstall<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (self.0)(&["uninstall"])
                }));
            }
        }
    }
    let _guard = Uninstall(&sidecar);

    let installed = sidecar(&["install", "--config", &windows_path(&config)]);
    assert!(
        installed.contains("created the Windows service agentfleet-sidecar")
            && installed.contains("started agentfleet-sidecar"),
        "{installed}"
    );
    assert!(installed.contains("service-run --config"), "{installed}");
    wait_until(RUN_DEADLINE, "the service to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let fleet = env.write_file(
        "fleet.toml",
        &format!(
            "[fleet.tls]\nca = {}\ncert = {}\nkey = {}\n[fleet.sidecars.svc1]\nendpoint = \"https://127.0.0.1:{port}\"\n",
            toml_str(env.pki().ca().to_str().unwrap()),
            toml_str(env.coordinator_cert().cert.to_str().unwrap()),
            toml_str(env.coordinator_cert().key.to_str().unwrap()),
        ),
    );
    let out = env.coordinator(["sidecars", "--fleet", fleet.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "the service serves over mTLS: {out}");
    let log = std::fs::read_to_string(state_dir.join("sidecar.log")).unwrap_or_default();
    assert!(
        log.contains("sidecar listening"),
        "the service's log: {log}"
    );

    let removed = sidecar(&["uninstall"]);
    assert!(
        removed.contains("stopped the Windows service agentfleet-sidecar")
            && removed.contains("deleted the Windows service agentfleet-sidecar"),
        "{removed}"
    );
    let again = sidecar(&["uninstall"]);
    assert!(again.contains("is not installed"), "{again}");
}
