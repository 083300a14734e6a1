//! The walking skeleton end to end: the real `coordinator` and three real `sidecar`s on
//! 127.0.0.1 with mTLS, running command jobs. Each test has its own directory, PKI and
//! sidecars on ephemeral ports, so tests run in parallel.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::{
    DescribeRequest, ListExecutionsRequest, Outcome, StartJobRequest, StopJobRequest,
};
use agentfleet_e2e::files::toml_path;
use agentfleet_e2e::grpc::{self, watch_to_end};
use agentfleet_e2e::process::{is_alive, send_signal};
use agentfleet_e2e::{Pki, RunEvents, Sidecar, SidecarOptions, TestEnv, toml_str};

/// How long a job may take to finish once we watch it.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The command jobs every test sidecar offers. Markers go to `markers`, which the jobs get
/// as `$MARKERS` (job env, so nothing depends on the sidecar's own environment).
fn jobs(markers: &Path) -> String {
    std::fs::create_dir_all(markers).expect("create the markers dir");
    let markers = toml_path(markers);
    let job = |name: &str, params: &[&str], steps: &[(&str, &str, &str)]| {
        let params: Vec<String> = params.iter().map(toml_str).collect();
        let mut text = format!(
            "[[job]]\nname = {}\nparams = [{}]\nenv = {{ MARKERS = {markers} }}\n",
            toml_str(name),
            params.join(", ")
        );
        for (step, script, extra) in steps {
            text += &format!(
                "[[job.step]]\nname = {}\nrun = [\"sh\", \"-c\", {}]\n{extra}\n",
                toml_str(step),
                toml_str(script)
            );
        }
        text + "\n"
    };
    [
        job(
            "quick",
            &[],
            &[("work", "echo \"quick: $AGENTFLEET_EXECUTION_ID\"; sleep 0.2", "")],
        ),
        job("one-second", &[], &[("work", "echo working; sleep 1", "")]),
        job(
            "always-fails",
            &[],
            &[("work", "echo 'error: the source is down' >&2; exit 3", "")],
        ),
        // Creates `touched-$KEY`: proof that a task did (or did not) run.
        job(
            "touch",
            &["KEY"],
            &[("touch", "touch \"$MARKERS/touched-$KEY\"; echo touched", "")],
        ),
        // Its second step fails on its first try in each execution and succeeds on the retry.
        job(
            "flaky-step",
            &[],
            &[
                ("prepare", "echo preparing", ""),
                (
                    "merge",
                    "m=\"$MARKERS/step-$AGENTFLEET_EXECUTION_ID\"; \
                     if [ ! -e \"$m\" ]; then touch \"$m\"; echo 'deadlock victim: rerun' >&2; exit 1; fi; \
                     echo merged",
                    "retries = 1\nretry_interval = \"100ms\"",
                ),
            ],
        ),
        // Fails the first time it runs for a KEY (in this test), succeeds afterwards.
        job(
            "fails-first-time",
            &["KEY"],
            &[(
                "load",
                "m=\"$MARKERS/task-$KEY\"; \
                 if [ ! -e \"$m\" ]; then touch \"$m\"; echo 'first execution fails' >&2; exit 1; fi; \
                 echo loaded",
                "",
            )],
        ),
        // Appends its execution id to `appended`: counts how often it really started.
        job(
            "append",
            &[],
            &[(
                "append",
                "echo \"$AGENTFLEET_EXECUTION_ID\" >> \"$MARKERS/appended\"; sleep 0.5",
                "",
            )],
        ),
        // Leaves a grandchild (sleep) behind its shell and records its pid.
        job(
            "grandchild",
            &[],
            &[(
                "spawn",
                "sleep 1000 & echo $! > \"$MARKERS/grandchild.pid.tmp\"; \
                 mv \"$MARKERS/grandchild.pid.tmp\" \"$MARKERS/grandchild.pid\"; wait",
                "",
            )],
        ),
    ]
    .concat()
}

/// Three sidecars offering the same jobs, slots 2 each.
fn three_sidecars(env: &TestEnv) -> [Sidecar; 3] {
    let jobs = jobs(&env.path().join("markers"));
    ["s1", "s2", "s3"].map(|name| env.start_sidecar(name, &jobs, SidecarOptions::default()))
}

/// Checks the `--json` contract fields every event carries, and the values of the enums.
fn check_event_contract(events: &RunEvents) {
    let all = events.all();
    assert!(!all.is_empty(), "no events on stdout");
    assert_eq!(
        all[0]["type"], "run_started",
        "the first event is run_started"
    );
    let run_id = all[0]["run_id"].as_str().expect("run_started has a run_id");
    let types = [
        "run_started",
        "task_placed",
        "task_started",
        "step_started",
        "step_finished",
        "log",
        "task_finished",
        "run_finished",
    ];
    for e in all {
        let ts = e["ts"].as_str().unwrap_or_else(|| panic!("no ts: {e}"));
        assert!(
            ts.ends_with('Z') || ts.ends_with("+00:00"),
            "ts is not RFC 3339 UTC: {e}"
        );
        assert!(
            types.contains(&e["type"].as_str().unwrap_or("")),
            "unknown type: {e}"
        );
        assert_eq!(e["run_id"], run_id, "every event has the run's id: {e}");
        match e["type"].as_str() {
            Some("task_placed" | "task_started" | "step_started" | "step_finished" | "log") => {
                for field in ["task", "sidecar", "execution_id"] {
                    assert!(e[field].is_string(), "no `{field}`: {e}");
                }
                assert!(e["attempt"].is_u64(), "no `attempt`: {e}");
            }
            Some("task_finished") => {
                let statuses = [
                    "succeeded",
                    "failed",
                    "canceled",
                    "timed_out",
                    "skipped",
                    "lost",
                ];
                assert!(
                    statuses.contains(&e["status"].as_str().unwrap_or("")),
                    "bad status: {e}"
                );
                assert!(e["will_retry"].is_boolean(), "no `will_retry`: {e}");
                assert!(e["task"].is_string(), "no `task`: {e}");
            }
            _ => {}
        }
    }
    assert_eq!(
        all.last().unwrap()["type"],
        "run_finished",
        "the last event is run_finished"
    );
}

/// Asserts that `task` started only after `dependency` finished with success.
fn assert_started_after(events: &RunEvents, task: &str, dependency: &str) {
    let succeeded = events
        .position(|e| {
            e["type"] == "task_finished" && e["task"] == dependency && e["status"] == "succeeded"
        })
        .unwrap_or_else(|| panic!("`{dependency}` never finished with success"));
    let started = events
        .position(|e| e["type"] == "task_started" && e["task"] == task)
        .unwrap_or_else(|| panic!("`{task}` never started"));
    assert!(
        started > succeeded,
        "`{task}` started (event #{started}) before `{dependency}` succeeded (event #{succeeded})"
    );
}

#[test]
fn plan_with_dependencies_and_retries_succeeds() {
    let env = TestEnv::new("deps-retries");
    let sidecars = three_sidecars(&env);
    let fleet = env.write_fleet(&sidecars.each_ref());
    // extract-a, extract-b → merge (step retry) → load (task retry) → report ← extract-c;
    // archive is on its own.
    let plan = env.write_file(
        "plan.toml",
        r#"[plan]
name = "e2e-deps-retries"

[[task]]
name = "extract-a"
job = "quick"

[[task]]
name = "extract-b"
job = "quick"

[[task]]
name = "extract-c"
job = "quick"

[[task]]
name = "merge"
job = "flaky-step"
after = ["extract-a", "extract-b"]

[[task]]
name = "load"
job = "fails-first-time"
after = ["merge"]
retries = 1
params = { KEY = "load" }

[[task]]
name = "report"
job = "quick"
after = ["load", "extract-c"]

[[task]]
name = "archive"
job = "quick"
"#,
    );

    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    check_event_contract(&events);
    let finished = events.run_finished();
    assert_eq!(finished["exit_code"], 0, "{finished}");

    for task in [
        "extract-a",
        "extract-b",
        "extract-c",
        "merge",
        "load",
        "report",
        "archive",
    ] {
        let row = events.summary(task);
        assert_eq!(row["status"], "succeeded", "summary of `{task}`: {row}");
        let attempts = if task == "load" { 2 } else { 1 };
        assert_eq!(row["attempts"], attempts, "attempts of `{task}`: {row}");
    }

    // The task-level retry: the first attempt failed and said another would follow.
    let load = events.of_task("task_finished", "load");
    assert_eq!(load.len(), 2, "two attempts of `load`: {load:?}");
    assert_eq!(load[0]["status"], "failed", "{}", load[0]);
    assert_eq!(load[0]["will_retry"], true, "{}", load[0]);
    assert_eq!(load[0]["attempt"], 1, "{}", load[0]);
    assert_eq!(load[1]["status"], "succeeded", "{}", load[1]);
    assert_eq!(load[1]["will_retry"], false, "{}", load[1]);
    assert_eq!(load[1]["attempt"], 2, "{}", load[1]);
    let load_executions: BTreeSet<&str> = events
        .of_task("task_placed", "load")
        .iter()
        .filter_map(|e| e["execution_id"].as_str())
        .collect();
    assert_eq!(
        load_executions.len(),
        2,
        "each attempt has its own execution id"
    );

    // The step-level retry: inside one execution, `merge` failed once then succeeded.
    let merge_steps: Vec<(&str, &str)> = events
        .of_task("step_finished", "merge")
        .iter()
        .filter(|e| e["step_name"] == "merge")
        .map(|e| {
            (
                e["status"].as_str().unwrap_or(""),
                e["execution_id"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        merge_steps.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        ["retry", "succeeded"],
        "the merge step's results"
    );
    assert_eq!(
        merge_steps[0].1, merge_steps[1].1,
        "the step retry stays in one execution"
    );
    assert!(
        events
            .of_task("log", "merge")
            .iter()
            .any(|e| e["line"] == "deadlock victim: rerun" && e["stream"] == "stderr"),
        "the failed try's stderr reached the log"
    );

    for (task, dependency) in [
        ("merge", "extract-a"),
        ("merge", "extract-b"),
        ("load", "merge"),
        ("report", "load"),
        ("report", "extract-c"),
    ] {
        assert_started_after(&events, task, dependency);
    }
}

#[test]
fn tasks_spread_over_the_sidecars_within_their_slots() {
    let env = TestEnv::new("spread");
    let sidecars = three_sidecars(&env);
    let fleet = env.write_fleet(&sidecars.each_ref());
    let mut plan = String::from("[plan]\nname = \"e2e-spread\"\n");
    for i in 1..=6 {
        plan += &format!("\n[[task]]\nname = \"work-{i}\"\njob = \"one-second\"\n");
    }
    // Pinned, and retried once: every attempt must stay on s2.
    plan += "\n[[task]]\nname = \"pinned\"\njob = \"fails-first-time\"\non = [\"s2\"]\nretries = 1\nparams = { KEY = \"pinned\" }\n";
    let plan = env.write_file("plan.toml", &plan);

    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    check_event_contract(&events);

    let placed = events.placed_on(None);
    assert!(
        placed.len() >= 2,
        "six one-second tasks on three sidecars used only {placed:?}"
    );
    assert_eq!(
        events.placed_on(Some("pinned")),
        BTreeSet::from(["s2".to_owned()]),
        "`pinned` has on = [\"s2\"]"
    );
    assert_eq!(
        events.of_task("task_placed", "pinned").len(),
        2,
        "`pinned` ran twice"
    );
    assert_eq!(events.summary("pinned")["attempts"], 2);

    // Replay starts and ends: tasks really ran side by side, never beyond a sidecar's slots.
    let mut running: BTreeMap<String, i32> = BTreeMap::new();
    let mut sidecar_of: BTreeMap<(String, u64), String> = BTreeMap::new();
    let (mut most_at_once, mut total) = (0, 0);
    for e in events.all() {
        let key = (
            e["task"].as_str().unwrap_or("").to_owned(),
            e["attempt"].as_u64().unwrap_or(0),
        );
        match e["type"].as_str() {
            Some("task_started") => {
                let sidecar = e["sidecar"].as_str().unwrap_or("").to_owned();
                sidecar_of.insert(key, sidecar.clone());
                let n = running.entry(sidecar.clone()).or_default();
                *n += 1;
                assert!(
                    *n <= 2,
                    "more than 2 (slots) tasks at once on {sidecar}: {e}"
                );
                total += 1;
                most_at_once = most_at_once.max(total);
            }
            Some("task_finished") => {
                if let Some(sidecar) = sidecar_of.remove(&key) {
                    *running.entry(sidecar).or_default() -= 1;
                    total -= 1;
                }
            }
            _ => {}
        }
    }
    assert!(
        most_at_once >= 3,
        "at most {most_at_once} tasks ran at once with 6 slots free"
    );
}

#[test]
fn a_failed_task_skips_its_dependants() {
    let env = TestEnv::new("skip");
    let sidecars = three_sidecars(&env);
    let fleet = env.write_fleet(&sidecars.each_ref());
    let plan = env.write_file(
        "plan.toml",
        r#"[plan]
name = "e2e-skip"

[[task]]
name = "broken"
job = "always-fails"

[[task]]
name = "child"
job = "touch"
after = ["broken"]
params = { KEY = "child" }

[[task]]
name = "grandchild"
job = "touch"
after = ["child"]
params = { KEY = "grandchild" }

[[task]]
name = "independent"
job = "touch"
params = { KEY = "independent" }
"#,
    );

    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(1), "{out}");
    let events = out.events();
    check_event_contract(&events);
    assert_eq!(events.run_finished()["exit_code"], 1);
    assert_eq!(events.summary("broken")["status"], "failed");
    assert_eq!(events.summary("broken")["attempts"], 1);
    assert_eq!(events.final_task_finished("broken")["will_retry"], false);
    assert_eq!(events.summary("independent")["status"], "succeeded");
    for task in ["child", "grandchild"] {
        assert_eq!(
            events.summary(task)["status"],
            "skipped",
            "summary of `{task}`"
        );
        assert_eq!(events.final_task_finished(task)["status"], "skipped");
        assert!(
            events.of_task("task_placed", task).is_empty()
                && events.of_task("task_started", task).is_empty(),
            "skipped `{task}` was placed or started"
        );
    }
    let markers = env.path().join("markers");
    assert!(
        markers.join("touched-independent").exists(),
        "`independent` ran"
    );
    assert!(
        !markers.join("touched-child").exists(),
        "`child` must not run"
    );
    assert!(
        !markers.join("touched-grandchild").exists(),
        "`grandchild` must not run"
    );
}

/// 1-based number of the line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the plan"))
        + 1
}

#[test]
fn a_bad_plan_exits_2_and_names_the_problem() {
    let env = TestEnv::new("bad-plan");
    let sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let task = |name: &str, extra: &str| {
        format!(
            "\n[[task]]\nname = \"{name}\"\njob = \"touch\"\nparams = {{ KEY = \"{name}\" }}\n{extra}"
        )
    };
    let header = |name: &str| format!("[plan]\nname = \"{name}\"\n");
    // (file, text, the key to name, lines the message may point at, more words to expect)
    let mut cases: Vec<(&str, String, &str, Vec<usize>, &str)> = Vec::new();

    let text = header("unknown-key") + &task("a", "colour = \"blue\"\n");
    cases.push((
        "unknown-key.toml",
        text.clone(),
        "colour",
        vec![line_of(&text, "colour")],
        "colour",
    ));

    let text = header("missing-after") + &task("a", "") + &task("b", "after = [\"ghost\"]\n");
    cases.push((
        "missing-after.toml",
        text.clone(),
        "after",
        vec![line_of(&text, "ghost")],
        "ghost",
    ));

    let text = header("cycle") + &task("a", "after = [\"b\"]\n") + &task("b", "after = [\"a\"]\n");
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with("after")
                || l.starts_with("[[task]]")
                || l.starts_with("name = \"a\"")
                || l.starts_with("name = \"b\"")
        })
        .map(|(i, _)| i + 1)
        .collect();
    cases.push(("cycle.toml", text, "after", lines, "cycle"));

    let text = header("bad-duration") + &task("a", "timeout = \"soon\"\n");
    cases.push((
        "bad-duration.toml",
        text.clone(),
        "timeout",
        vec![line_of(&text, "soon")],
        "timeout",
    ));

    for (file, text, key, lines, word) in &cases {
        let plan = env.write_file(file, text);
        for command in ["run", "validate"] {
            let out = env.coordinator([
                command.as_ref(),
                plan.as_os_str(),
                "--fleet".as_ref(),
                fleet.as_os_str(),
            ]);
            assert_eq!(out.code(), Some(2), "`{command}` of {file}:\n{out}");
            let stderr = &out.stderr;
            assert!(
                stderr.contains(file),
                "stderr names the file {file}:\n{out}"
            );
            assert!(
                lines.iter().any(|n| stderr.contains(&format!("{file}:{n}"))
                    || stderr.contains(&format!("line {n}"))),
                "stderr names the line (one of {lines:?}) of {file}:\n{out}"
            );
            assert!(stderr.contains(key), "stderr names the key `{key}`:\n{out}");
            assert!(
                stderr.to_lowercase().contains(word),
                "stderr mentions `{word}`:\n{out}"
            );
            assert!(
                out.stdout.trim().is_empty(),
                "nothing on stdout for bad input:\n{out}"
            );
        }
    }

    // Nothing was started: the sidecar holds no execution and no job touched its file.
    let rt = runtime();
    let executions = rt.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        client
            .list_executions(ListExecutionsRequest {
                running_only: false,
            })
            .await
            .expect("ListExecutions")
            .into_inner()
            .executions
    });
    assert!(
        executions.is_empty(),
        "bad plans started executions: {executions:?}"
    );
    let touched: Vec<_> = std::fs::read_dir(env.path().join("markers"))
        .expect("read markers")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert!(touched.is_empty(), "bad plans ran jobs: {touched:?}");
}

#[test]
fn a_client_without_a_valid_certificate_is_refused() {
    let env = TestEnv::new("mtls");
    let sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let other_ca = Pki::init(&env.path().join("other-pki"));
    // Same name as the allowed client, but signed by a CA the sidecar does not trust.
    let foreign = other_ca.issue_coordinator("coordinator");
    // Signed by the right CA, but its name is not in allow_clients.
    let intruder = env.pki().issue_coordinator("intruder");

    let rt = runtime();
    rt.block_on(async {
        let ca = env.pki().ca();
        let mut allowed = grpc::client(&sidecar, &ca, env.coordinator_cert()).await;
        let described = allowed
            .describe(DescribeRequest {})
            .await
            .expect("the allowed coordinator certificate can call Describe")
            .into_inner();
        assert_eq!(described.name, "s1");
        assert_eq!(described.slots, 2);

        let mut foreign = grpc::client(&sidecar, &ca, &foreign).await;
        let refused = foreign.describe(DescribeRequest {}).await;
        assert!(
            refused.is_err(),
            "a certificate from another CA was accepted: {refused:?}"
        );

        let mut anonymous = grpc::anonymous_client(&sidecar, &ca).await;
        let refused = anonymous.describe(DescribeRequest {}).await;
        assert!(
            refused.is_err(),
            "a client without a certificate was accepted: {refused:?}"
        );

        let mut intruder = grpc::client(&sidecar, &ca, &intruder).await;
        let status = intruder
            .describe(DescribeRequest {})
            .await
            .expect_err("a certificate not in allow_clients was accepted");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    });

    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.coordinator(["sidecars".as_ref(), "--fleet".as_ref(), fleet.as_os_str()]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("s1") && l.contains("yes")),
        "{out}"
    );

    let fleet = env.write_fleet_as(
        "fleet-intruder.toml",
        &env.pki().pair("intruder"),
        &[&sidecar],
    );
    let out = env.coordinator(["sidecars".as_ref(), "--fleet".as_ref(), fleet.as_os_str()]);
    assert_eq!(out.code(), Some(3), "an unreachable fleet exits 3:\n{out}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("s1"))
        .unwrap_or_else(|| panic!("no row for s1:\n{out}"));
    assert!(!row.contains("yes"), "s1 reported reachable:\n{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("allow_clients"),
        "the message points at allow_clients:\n{out}"
    );
}

#[test]
fn start_job_is_idempotent_on_the_execution_id() {
    let env = TestEnv::new("idempotent");
    let sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let execution_id = agentfleet_common::ids::new_execution_id();
    let request = StartJobRequest {
        execution_id: execution_id.clone(),
        job: "append".into(),
        run_id: "e2e-idempotent".into(),
        task: "append".into(),
        attempt: 1,
        ..Default::default()
    };

    let rt = runtime();
    rt.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let first = client
            .start_job(request.clone())
            .await
            .expect("StartJob")
            .into_inner();
        assert!(
            first.created,
            "the first StartJob creates the execution: {first:?}"
        );
        let second = client
            .start_job(request.clone())
            .await
            .expect("StartJob again")
            .into_inner();
        assert!(
            !second.created,
            "a repeated StartJob must not create: {second:?}"
        );
        let (mut a, mut b) = (client.clone(), client.clone());
        let (third, fourth) =
            tokio::join!(a.start_job(request.clone()), b.start_job(request.clone()));
        for response in [third, fourth] {
            let response = response.expect("concurrent StartJob").into_inner();
            assert!(
                !response.created,
                "a concurrent repeat must not create: {response:?}"
            );
            let execution = response.execution.expect("the existing execution");
            assert_eq!(execution.execution_id, execution_id);
            assert_eq!(execution.job, "append");
        }

        let events = watch_to_end(&mut client, &execution_id, JOB_TIMEOUT).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "seq starts at 1 without gaps"
        );
        let finished = grpc::finished(&events).expect("a Finished event");
        assert_eq!(finished.outcome(), Outcome::Succeeded, "{finished:?}");

        // After the end, a repeat still returns the same (finished) execution.
        let late = client
            .start_job(request.clone())
            .await
            .expect("StartJob after the end")
            .into_inner();
        assert!(
            !late.created,
            "a StartJob after the end must not create: {late:?}"
        );
    });

    let appended =
        std::fs::read_to_string(env.path().join("markers/appended")).expect("the job ran");
    assert_eq!(
        appended.lines().collect::<Vec<_>>(),
        [execution_id.as_str()],
        "the job ran exactly once"
    );
}

/// Kills a leftover grandchild should the stop under test not have (test hygiene only).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0
            && is_alive(pid)
            && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep"))
        {
            send_signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn stop_job_kills_the_whole_process_tree() {
    let env = TestEnv::new("stop-tree");
    let markers = env.path().join("markers");
    let sidecar = env.start_sidecar("s1", &jobs(&markers), SidecarOptions::default());
    let execution_id = agentfleet_common::ids::new_execution_id();
    let mut leftover = KillOnDrop(None);

    let rt = runtime();
    rt.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let started = client
            .start_job(StartJobRequest {
                execution_id: execution_id.clone(),
                job: "grandchild".into(),
                ..Default::default()
            })
            .await
            .expect("StartJob")
            .into_inner();
        assert!(started.created, "{started:?}");

        // The pid file is renamed into place, so once it exists it is complete.
        let pid_file = markers.join("grandchild.pid");
        let pid: u32 = agentfleet_e2e::wait::wait_until_async(
            Duration::from_secs(15),
            "the job to record its grandchild's pid",
            || std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok(),
        )
        .await;
        leftover.0 = Some(pid);
        assert!(is_alive(pid), "the grandchild {pid} runs before the stop");

        client
            .stop_job(StopJobRequest {
                execution_id: execution_id.clone(),
                reason: "e2e test".into(),
            })
            .await
            .expect("StopJob");
        let events = watch_to_end(&mut client, &execution_id, JOB_TIMEOUT).await;
        let finished = grpc::finished(&events).expect("a Finished event");
        assert_eq!(finished.outcome(), Outcome::Canceled, "{finished:?}");

        // Killing the group is immediate; the bound covers process exit and reaping.
        agentfleet_e2e::wait::wait_until_async(
            Duration::from_secs(10),
            &format!("grandchild {pid} to be gone after StopJob"),
            || (!is_alive(pid)).then_some(()),
        )
        .await;
    });
}

#[test]
fn watch_replays_the_journal_after_a_restart() {
    let env = TestEnv::new("journal");
    let mut sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let execution_id = agentfleet_common::ids::new_execution_id();
    let rt = runtime();
    let before = rt.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        client
            .start_job(StartJobRequest {
                execution_id: execution_id.clone(),
                job: "quick".into(),
                ..Default::default()
            })
            .await
            .expect("StartJob");
        watch_to_end(&mut client, &execution_id, JOB_TIMEOUT).await
    });
    assert_eq!(
        grpc::finished(&before).map(|f| f.outcome()),
        Some(Outcome::Succeeded),
        "{before:?}"
    );

    sidecar.restart();

    rt.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let listed = client
            .list_executions(ListExecutionsRequest {
                running_only: false,
            })
            .await
            .expect("ListExecutions after the restart")
            .into_inner()
            .executions;
        let execution = listed
            .iter()
            .find(|e| e.execution_id == execution_id)
            .unwrap_or_else(|| panic!("the execution is gone after a restart: {listed:?}"));
        assert_eq!(execution.outcome(), Outcome::Succeeded, "{execution:?}");
        assert_eq!(execution.last_seq, before.len() as u64, "{execution:?}");

        let replayed = watch_to_end(&mut client, &execution_id, JOB_TIMEOUT).await;
        assert_eq!(replayed, before, "the journal replays the same events");
        let tail = grpc::watch_after(&mut client, &execution_id, 2, JOB_TIMEOUT).await;
        assert_eq!(
            tail.as_slice(),
            &before[2..],
            "Watch(after_seq = 2) starts at seq 3"
        );
    });
}

#[test]
fn an_unreachable_fleet_exits_3() {
    let env = TestEnv::new("unreachable");
    let mut sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"e2e-unreachable\"\n\n[[task]]\nname = \"a\"\njob = \"quick\"\n",
    );
    sidecar.kill();

    let out = env.run_plan(&plan, &fleet);
    assert_eq!(out.code(), Some(3), "{out}");
    assert!(
        out.stderr.contains("s1"),
        "stderr names the sidecar:\n{out}"
    );
    assert!(
        out.events().of_type("task_placed").is_empty(),
        "nothing was placed:\n{out}"
    );
}

#[test]
fn health_and_reflection_are_served() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let env = TestEnv::new("health");
    let sidecar = env.start_sidecar(
        "s1",
        &jobs(&env.path().join("markers")),
        SidecarOptions::default(),
    );
    let rt = runtime();
    rt.block_on(async {
        let channel = grpc::channel(&sidecar, &env.pki().ca(), env.coordinator_cert());
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "agentfleet.sidecar.v1.Sidecar"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|s| panic!("health Check({service:?}): {s:?}"))
                .into_inner()
                .status();
            assert_eq!(status, ServingStatus::Serving, "health of {service:?}");
        }

        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("a reflection response")
            .expect("one response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("not a service list: {response:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"agentfleet.sidecar.v1.Sidecar"),
            "reflection lists {names:?}"
        );
    });
}
