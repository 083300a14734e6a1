//! SSIS catalog progress end to end: the real `sqlagent-standin` (a TDS test double with a
//! simulated SSISDB; it is not SQL Server), one real `sidecar` that follows an Agent job's
//! SSIS step into the catalog (`[sqlagent]`, a SQL login) and runs catalog jobs itself
//! (`[ssis]`, a Windows login over NTLM), and the real `coordinator`: `run --json`, `logs`,
//! `show`, `show --json`, `cancel` and its traces.
use std::time::Duration;

use agentfleet_e2e::otlp::OtlpReceiver;
use agentfleet_e2e::ssis::package_checks::{
    COPY, PACKAGE, TRUNCATE, assert_json_package, assert_package_succeeded,
    assert_show_lists_the_package, assert_sub_step_spans,
};
use agentfleet_e2e::ssis::{SsisWorld, catalog_lines, catalog_statuses, finished_sub_steps, text};
use agentfleet_e2e::standin::LiveRun;
use serde_json::Value;

/// How long a package may take to show up running.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for a run that is canceled mid-way: it must end well before.
const RUN_DEADLINE: Duration = Duration::from_secs(90);
/// How long exported spans may take to arrive after the run ends.
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn agent_ssis_steps_and_catalog_jobs_show_their_packages_everywhere() {
    let receiver = OtlpReceiver::start();
    let w = SsisWorld::start("ssis-success", Some(&receiver.endpoint()));
    // Both run the same package at once: the Agent step's execution is told apart from
    // the catalog job's by who created it.
    let (out, events) = w.run(
        &[
            ("agent-load", "SSIS - Agent Load Sales"),
            ("catalog-load", "SSIS - Load Sales"),
        ],
        &["--otlp-endpoint", &receiver.endpoint()],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    for task in ["agent-load", "catalog-load"] {
        assert_eq!(
            events.final_task_finished(task)["status"],
            "succeeded",
            "{out}"
        );
    }
    let standin = format!(
        "127.0.0.1:{}",
        w.target.standin().expect("stand-in").addr().port()
    );
    // The Agent step's /SERVER names the instance; a catalog job names its connection.
    let agent_id = assert_package_succeeded(&events, "agent-load", "SQL1");
    let catalog_id = assert_package_succeeded(&events, "catalog-load", &standin);
    assert_ne!(agent_id, catalog_id, "two executions of the package: {out}");

    // `logs`: the catalog's messages with their type and task, on the package's step.
    let logs = w.coordinator_ok(&["logs", "last"]);
    for (task, step) in [("agent-load", "Run Load Sales"), ("catalog-load", PACKAGE)] {
        for line in [
            r"info    \Load Sales\Copy rows: Copied 2500 rows.",
            r"warning \Load Sales\Copy rows: Truncation may occur on column Region.",
        ] {
            let expected = format!("{task}/{step}/catalog | {line}");
            assert!(
                logs.lines().any(|l| l == expected),
                "no `{expected}` in:\n{logs}"
            );
        }
    }

    // `show`: each package's tasks under its step; `--json` has them as `packages`.
    let show = w.coordinator_ok(&["show", "last"]);
    assert_show_lists_the_package(&show, "agent-load", "Run Load Sales", agent_id, "SQL1");
    assert_show_lists_the_package(&show, "catalog-load", PACKAGE, catalog_id, &standin);
    let json: Value = serde_json::from_str(&w.coordinator_ok(&["show", "last", "--json"]))
        .expect("show --json is JSON");
    assert_json_package(&json, "agent-load", agent_id);
    assert_json_package(&json, "catalog-load", catalog_id);

    // Traces: a sub_step span per package task, under the step span of its execution.
    let run_id = text(events.of_type("run_started")[0], "run_id").to_owned();
    let execution = |task: &str| text(events.final_task_finished(task), "execution_id").to_owned();
    let executions = [execution("agent-load"), execution("catalog-load")];
    let spans = receiver.wait_for_spans(SPANS_TIMEOUT, "the steps' and tasks' spans", |spans| {
        let of = |name: &str, paths: &[&str]| {
            spans
                .iter()
                .filter(|s| s.name == name && s.trace_id == run_id)
                .filter(|s| {
                    paths.is_empty() || paths.contains(&s.attr("sub_step.path").unwrap_or(""))
                })
                .count()
        };
        of("step", &[]) >= 2 && of("sub_step", &[TRUNCATE, COPY]) >= 4
    });
    let executions: Vec<&str> = executions.iter().map(String::as_str).collect();
    assert_sub_step_spans(&spans, &run_id, &executions);
}

#[test]
fn a_failing_package_fails_its_task_with_the_catalogs_errors() {
    let w = SsisWorld::start("ssis-failure", None);
    let (out, events) = w.run(
        &[
            ("agent-merge", "SSIS - Agent Merge Customers"),
            ("catalog-merge", "SSIS - Merge Customers"),
        ],
        &[],
    );
    // A failed task fails the run: exit code 1.
    assert_eq!(out.code(), Some(1), "{out}");
    let logs = w.coordinator_ok(&["logs", "last"]);
    for (task, step) in [
        ("agent-merge", "Run Merge Customers"),
        ("catalog-merge", "Merge Customers.dtsx"),
    ] {
        let last = events.final_task_finished(task);
        assert_eq!(last["status"], "failed", "{out}");
        let step_end = events.of_task("step_finished", task);
        assert_eq!(step_end.len(), 1, "{out}");
        assert_eq!(step_end[0]["status"], "failed", "{out}");
        assert_eq!(
            catalog_statuses(&events, task).last().map(String::as_str),
            Some("failed"),
            "{task}: {out}"
        );
        // The failed package task, with the catalog's error as its message.
        assert_eq!(
            finished_sub_steps(&events, task),
            [
                ("Extract".to_owned(), "succeeded".to_owned()),
                ("Merge".to_owned(), "failed".to_owned()),
                // The package itself ends with its catalog execution.
                ("Merge Customers".to_owned(), "failed".to_owned())
            ],
            "{task}: {out}"
        );
        let merge = events
            .of_task("sub_step_finished", task)
            .into_iter()
            .find(|e| e["name"] == "Merge")
            .expect("Merge finished");
        assert_eq!(text(merge, "path"), r"\Merge Customers\Merge", "{merge}");
        assert!(
            text(merge, "message").contains("Merge task failed")
                || text(merge, "message").contains("PRIMARY KEY"),
            "the task's error: {merge}"
        );
        // The package's errors, typed and with the failing task's path, in --json and logs.
        for error in [
            r"error   \Merge Customers\Merge: Violation of PRIMARY KEY constraint 'PK_Customer'.",
            r"error   \Merge Customers\Merge: The Merge task failed.",
        ] {
            assert!(
                catalog_lines(&events, task).iter().any(|l| l == error),
                "{task}: no `{error}`: {out}"
            );
            let expected = format!("{task}/{step}/catalog | {error}");
            assert!(
                logs.lines().any(|l| l == expected),
                "no `{expected}` in:\n{logs}"
            );
        }
    }
    assert!(
        text(events.final_task_finished("catalog-merge"), "message").contains("failed"),
        "{out}"
    );
}

#[test]
fn a_catalog_job_with_a_sql_login_is_refused_with_what_to_write_instead() {
    let w = SsisWorld::start("ssis-sql-login", None);
    // Through [sqlagent] alone, and through an [ssis] section of its own.
    for (explicit, section) in [(false, "[sqlagent]"), (true, "[ssis]")] {
        let config = w.write_sql_login_config(explicit);
        // `serve` refuses a bad config with 2; `check` fails its config item with 1.
        for (subcommand, exit_code) in [("serve", 2), ("check", 1)] {
            let (code, said) = w.sidecar_command(subcommand, &config);
            assert_eq!(
                code,
                Some(exit_code),
                "`sidecar {subcommand}` with {section}:\n{said}"
            );
            for needle in [
                &format!("{section} uses auth = \"sql\"") as &str,
                "error 27123",
                "auth = \"windows\"",
                r"user = 'DOMAIN\name'",
                "password_env or password_file",
            ] {
                assert!(
                    said.contains(needle),
                    "`sidecar {subcommand}` with {section} does not say `{needle}`:\n{said}"
                );
            }
        }
    }
}

#[test]
fn coordinator_cancel_stops_a_running_catalog_job() {
    let w = SsisWorld::start("ssis-cancel", None);
    let (plan, fleet) = w.plan(&[("forever", "SSIS - Wait Forever")]);
    let mut run = LiveRun::spawn(&w.env, &plan, &fleet);
    let running = run.wait_for(STEP_TIMEOUT, "the package to run", |e| {
        e["type"] == "catalog_execution" && e["task"] == "forever" && e["status"] == "running"
    });
    run.wait_for(STEP_TIMEOUT, "the package's task to start", |e| {
        e["type"] == "sub_step_started" && e["path"] == r"\Wait Forever\Wait"
    });
    let cancel = w.env.coordinator(["cancel", "last"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    let out = run.finish(RUN_DEADLINE);
    assert!(!out.timed_out, "the run did not end after cancel: {out}");
    // A canceled run exits 1: its task was stopped.
    assert_eq!(out.code(), Some(1), "{out}");
    let events = out.events();
    assert_eq!(
        events.final_task_finished("forever")["status"],
        "canceled",
        "{out}"
    );
    assert_eq!(events.run_finished()["status"], "canceled", "{out}");
    // The catalog itself ended it: the same execution, stopping, then canceled.
    let executions = events.of_task("catalog_execution", "forever");
    assert!(
        executions
            .iter()
            .all(|e| e["catalog_execution_id"] == running["catalog_execution_id"]),
        "{out}"
    );
    assert_eq!(
        catalog_statuses(&events, "forever")
            .last()
            .map(String::as_str),
        Some("canceled"),
        "{out}"
    );
    let step = events.of_task("step_finished", "forever");
    assert_eq!(step.len(), 1, "{out}");
    assert_eq!(step[0]["status"], "canceled", "{out}");
    let show: Value = serde_json::from_str(&w.coordinator_ok(&["show", "last", "--json"]))
        .expect("show --json is JSON");
    assert_eq!(show["run"]["status"], "canceled", "{show:#}");
    assert_eq!(
        show["packages"][0]["catalog"]["status"], "canceled",
        "{show:#}"
    );
}
