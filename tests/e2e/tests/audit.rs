//! The audit trail of who started and stopped what: the real `sidecar` and `coordinator`
//! binaries on 127.0.0.1. A plan starts a job with a secret parameter and its task
//! timeout makes the coordinator stop it; the sidecar's `audit.log` must hold both calls
//! with the caller, the job and the secret redacted, the secret must be nowhere else, and
//! `coordinator show` must say who started the execution. A caller that authorization
//! refuses is audited too.
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::{StartJobRequest, StopJobRequest};
use agentfleet_e2e::grpc;
use agentfleet_e2e::{Sidecar, SidecarOptions, TestEnv};
use serde_json::Value;
use tonic::Code;

/// The secret parameter's value: it must reach the job and be written nowhere.
const SECRET: &str = "s3cr3t-Pa55-do-not-log";

/// `login` declares a date and a password, marks the password secret, checks that it got
/// the password, and then runs until it is stopped.
const JOBS: &str = r#"
[[job]]
name = "login"
params = ["BUSINESS_DATE", "PASSWORD"]
secret_params = ["PASSWORD"]
[[job.step]]
name = "wait"
run = ["sh", "-c", "test -n \"$PASSWORD\" && echo got-the-password && exec sleep 60"]
"#;

fn audit_lines(sidecar: &Sidecar) -> Vec<Value> {
    let text = std::fs::read_to_string(sidecar.state_dir().join("audit.log"))
        .expect("the sidecar writes state_dir/audit.log");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn assert_secret_absent(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "the secret is in {what}:\n{text}");
}

/// Every text the coordinator's store holds about the run, except the plan as written
/// (which is the operator's own file, secret and all).
fn store_text(home: &Path) -> String {
    let db = rusqlite::Connection::open(home.join("agentfleet.db")).expect("open the store");
    let mut all = String::new();
    for table in ["events", "executions", "tasks", "steps", "logs"] {
        let mut stmt = db
            .prepare(&format!("SELECT * FROM {table}"))
            .expect("query the store");
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).expect("read the store");
        while let Some(row) = rows.next().expect("read a row") {
            for i in 0..columns {
                if let Ok(text) = row.get::<_, String>(i) {
                    all.push_str(&text);
                    all.push('\n');
                }
            }
        }
    }
    all
}

#[test]
fn start_and_stop_are_audited_with_the_caller_and_no_secret() {
    let env = TestEnv::new("audit-start-stop");
    let sidecar = env.start_sidecar("s1", JOBS, SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        &format!(
            "[plan]\nname = \"audited\"\n[plan.params]\nBUSINESS_DATE = \"2026-11-24\"\n\
             [[task]]\nname = \"slow\"\njob = \"login\"\ntimeout = \"2s\"\n\
             params = {{ PASSWORD = \"{SECRET}\" }}\n"
        ),
    );
    let out = env.run_plan(&plan, &fleet);
    let events = out.events();
    let finished = events
        .of_type("task_finished")
        .into_iter()
        .find(|e| e["task"] == "slow")
        .unwrap_or_else(|| panic!("no task_finished for `slow`\n{out}"));
    assert_eq!(finished["status"], "timed_out", "{out}");
    let execution_id = finished["execution_id"].as_str().expect("an execution id");
    // The job saw the password: the output line it prints only when it has it.
    assert!(
        events
            .of_type("log")
            .iter()
            .any(|e| e["line"] == "got-the-password"),
        "{out}"
    );

    let lines = audit_lines(&sidecar);
    let start = lines
        .iter()
        .find(|l| l["call"] == "StartJob" && l["execution_id"] == execution_id)
        .unwrap_or_else(|| panic!("no StartJob line: {lines:?}"));
    assert_eq!(start["caller"], "coordinator", "{start}");
    assert_eq!(start["job"], "login", "{start}");
    assert_eq!(start["params"]["PASSWORD"], "<redacted>", "{start}");
    assert_eq!(start["params"]["BUSINESS_DATE"], "2026-11-24", "{start}");
    assert_eq!(start["answer"]["result"], "created", "{start}");
    assert!(
        start["peer"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{start}"
    );
    let stop = lines
        .iter()
        .find(|l| l["call"] == "StopJob" && l["execution_id"] == execution_id)
        .unwrap_or_else(|| panic!("no StopJob line: {lines:?}"));
    assert_eq!(stop["caller"], "coordinator", "{stop}");
    assert_eq!(stop["job"], "login", "{stop}");
    assert_eq!(stop["answer"]["result"], "stopping", "{stop}");

    // The secret is written nowhere: not in the audit log, the sidecar's log, the
    // coordinator's output or its store.
    let audit = std::fs::read_to_string(sidecar.state_dir().join("audit.log")).unwrap();
    assert_secret_absent("audit.log", &audit);
    let stderr = std::fs::read_to_string(sidecar.stderr_log()).unwrap_or_default();
    assert_secret_absent("the sidecar's stderr log", &stderr);
    assert_secret_absent("the coordinator's output", &format!("{out}"));
    assert_secret_absent(
        "the coordinator's store",
        &store_text(&env.path().join("home")),
    );

    let show = env.coordinator(["show", "last"]);
    assert_eq!(show.code(), Some(0), "{show}");
    assert!(
        show.stdout.contains(&format!(
            "execution {execution_id} · started by coordinator"
        )),
        "{show}"
    );
}

/// Outside a plan (whose acknowledgement lets the sidecar prune the journal): the
/// execution's record and its StartJob answer say who started it, its stop file and its
/// Finished message who asked it to stop.
#[test]
fn the_journal_keeps_who_started_and_who_stopped() {
    let env = TestEnv::new("audit-journal");
    let sidecar = env.start_sidecar("s1", JOBS, SidecarOptions::default());
    let id = "0190c3a1f2e47b9c8d0e1f2a3b4c5d6f";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), env.coordinator_cert()).await;
        let started = client
            .start_job(StartJobRequest {
                execution_id: id.into(),
                job: "login".into(),
                params: [("PASSWORD".to_owned(), SECRET.to_owned())].into(),
                ..Default::default()
            })
            .await
            .expect("the coordinator starts the job")
            .into_inner();
        let execution = started.execution.expect("the execution");
        assert_eq!(execution.started_by, "coordinator", "{execution:?}");
        client
            .stop_job(StopJobRequest {
                execution_id: id.into(),
                reason: "audit test".into(),
            })
            .await
            .expect("the coordinator stops the job");
        let events = grpc::watch_to_end(&mut client, id, Duration::from_secs(30)).await;
        let finished = grpc::finished(&events).expect("a Finished event");
        assert!(
            finished
                .message
                .ends_with("(stop: audit test (asked by coordinator))"),
            "{finished:?}"
        );
    });
    let dir = sidecar.state_dir().join("executions").join(id);
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("execution.json")).unwrap()).unwrap();
    assert_eq!(record["started_by"], "coordinator", "{record}");
    let stop_file = std::fs::read_to_string(dir.join("stop")).unwrap_or_default();
    assert_eq!(stop_file, "audit test (asked by coordinator)");
    let lines = audit_lines(&sidecar);
    let calls: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["call"].as_str().unwrap_or(""),
                l["answer"]["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(calls, [("StartJob", "created"), ("StopJob", "stopping")]);
    assert_eq!(lines[1]["reason"], "audit test", "{}", lines[1]);
    // The secret is not echoed by the sidecar's own log either.
    let stderr = std::fs::read_to_string(sidecar.stderr_log()).unwrap_or_default();
    assert_secret_absent("the sidecar's stderr log", &stderr);
}

#[test]
fn a_refused_caller_is_audited_with_what_it_presented() {
    let env = TestEnv::new("audit-refused");
    let sidecar = env.start_sidecar("s1", JOBS, SidecarOptions::default());
    let intruder = env.pki().issue_coordinator("intruder");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let status = runtime.block_on(async {
        let mut client = grpc::client(&sidecar, &env.pki().ca(), &intruder).await;
        client
            .start_job(StartJobRequest {
                execution_id: "0190c3a1f2e47b9c8d0e1f2a3b4c5d6e".into(),
                job: "login".into(),
                params: [("PASSWORD".to_owned(), SECRET.to_owned())].into(),
                ..Default::default()
            })
            .await
            .expect_err("a client not in allow_clients started a job")
    });
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    let lines = audit_lines(&sidecar);
    let refused = lines
        .iter()
        .find(|l| l["answer"]["result"] == "refused")
        .unwrap_or_else(|| panic!("no refused line: {lines:?}"));
    assert_eq!(refused["call"], "StartJob", "{refused}");
    let caller = refused["caller"].as_str().unwrap_or("");
    assert!(caller.contains("`intruder`"), "{refused}");
    assert!(caller.contains("serial"), "{refused}");
    assert_eq!(refused["answer"]["code"], "PERMISSION_DENIED", "{refused}");
    assert!(
        refused["answer"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("allow_clients"),
        "{refused}"
    );
    // Refused before the request was read: nothing of it, the secret included, is kept.
    let audit = std::fs::read_to_string(sidecar.state_dir().join("audit.log")).unwrap();
    assert_secret_absent("audit.log", &audit);
}
