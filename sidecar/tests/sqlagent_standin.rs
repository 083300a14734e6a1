//! SQL Server Agent backend scenarios against the TDS stand-in (in-process), and — for the
//! scenarios that need no fault injection — against a real SQL Server when
//! `AGENTFLEET_TEST_MSSQL` is set (then `AGENTFLEET_TEST_MSSQL_JOB` names a job to run).
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use agentfleet_sidecar::backend::sqlagent::{SqlAgentBackend, SqlAgentConfig};
use agentfleet_sidecar::backend::{Backend, BackendError, ExecutionContext};
use agentfleet_sidecar::events::{EventSink, SinkMsg};
use sqlagent_standin::{JobsFile, Standin, StandinConfig, StopMode, TlsSetup};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const JOBS: &str = r#"
[[login]]
user = "agentfleet"
password = "s3cret"

[[job]]
name = "ETL - Multi"
[[job.step]]
name = "extract"
duration = "300ms"
on_success = "next"
message = "extracted"
[[job.step]]
name = "load"
duration = "300ms"
message = "loaded"

[[job]]
name = "ETL - Retry"
[[job.step]]
name = "flaky"
duration = "100ms"
retries = 1
outcomes = ["fail", "succeed"]

[[job]]
name = "ETL - Fails"
[[job.step]]
name = "boom"
duration = "100ms"
outcomes = ["fail"]
message = "it broke"

[[job]]
name = "ETL - Long"
[[job.step]]
name = "wait"
duration = "until_stopped"
"#;

async fn standin() -> Standin {
    Standin::start(StandinConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        jobs: JobsFile::parse(JOBS).unwrap(),
        tls: TlsSetup::SelfSigned,
    })
    .await
    .unwrap()
}

fn config(addr: std::net::SocketAddr, pw_file: &Path) -> SqlAgentConfig {
    let text = format!(
        "server = \"tcp:127.0.0.1,{}\"\nuser = \"agentfleet\"\npassword_file = \"{}\"\ntrust_server_certificate = true\npoll_interval = \"200ms\"\n",
        addr.port(),
        pw_file.display().to_string().replace('\\', "\\\\")
    );
    toml::from_str(&text).unwrap()
}

struct Harness {
    _dir: tempfile::TempDir,
    backend: SqlAgentBackend,
}

async fn harness(s: &Standin) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let backend = SqlAgentBackend::connect(&config(s.addr(), &pw), dir.path())
        .await
        .unwrap();
    Harness { _dir: dir, backend }
}

fn ctx(id: &str, job: &str) -> (ExecutionContext, mpsc::Receiver<SinkMsg>, CancellationToken) {
    let (events, rx) = EventSink::channel(id);
    let stop = CancellationToken::new();
    let ctx = ExecutionContext {
        execution_id: id.into(),
        job: job.into(),
        params: Default::default(),
        events,
        stop: stop.clone(),
    };
    (ctx, rx, stop)
}

/// Collects events until Finished (bounded: a scenario never hangs).
async fn until_finished(rx: &mut mpsc::Receiver<SinkMsg>) -> (Vec<Kind>, Vec<String>) {
    let (mut kinds, mut lines) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no Finished within 60s")
            .expect("sink closed");
        match msg {
            SinkMsg::Event { kind, .. } => {
                let done = matches!(kind, Kind::Finished(_));
                kinds.push(kind);
                if done {
                    return (kinds, lines);
                }
            }
            SinkMsg::Log { line, .. } => lines.push(line.line),
        }
    }
}

fn outcome(kinds: &[Kind]) -> proto::Outcome {
    match kinds.last() {
        Some(Kind::Finished(f)) => proto::Outcome::try_from(f.outcome).unwrap(),
        other => panic!("last event {other:?}"),
    }
}

fn step_statuses(kinds: &[Kind]) -> Vec<(u32, u32, i32)> {
    kinds
        .iter()
        .filter_map(|k| match k {
            Kind::StepFinished(s) => Some((s.step_id, s.attempt, s.status)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn starts_and_follows_a_multi_step_job() {
    let s = standin().await;
    let h = harness(&s).await;
    let names = h.backend.job_names().await.unwrap();
    assert!(names.contains(&"ETL - Multi".to_string()), "{names:?}");
    let (c, mut rx, _stop) = ctx("e1", "ETL - Multi");
    h.backend.start(c).await.unwrap();
    let (kinds, lines) = until_finished(&mut rx).await;
    assert!(
        matches!(kinds[0], Kind::Started(proto::Started { step_count: 2 })),
        "{kinds:?}"
    );
    assert_eq!(step_statuses(&kinds), vec![(1, 1, 1), (2, 1, 1)]);
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);
    assert!(lines.iter().any(|l| l.contains("loaded")), "{lines:?}");
    // A repeated StartJob for the same execution never starts the job again.
    let (c, mut rx, _stop) = ctx("e1", "ETL - Multi");
    h.backend.start(c).await.unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);
    let starts = s
        .requests()
        .iter()
        .filter(|r| r.marker.as_deref() == Some("start_job"))
        .count();
    assert_eq!(starts, 1);
}

#[tokio::test]
async fn a_retried_step_and_a_failing_job() {
    let s = standin().await;
    let h = harness(&s).await;
    let (c, mut rx, _stop) = ctx("r1", "ETL - Retry");
    h.backend.start(c).await.unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(
        step_statuses(&kinds),
        vec![(1, 1, proto::StepStatus::Retry as i32), (1, 2, 1)]
    );
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);

    let (c, mut rx, _stop) = ctx("f1", "ETL - Fails");
    h.backend.start(c).await.unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Failed);
}

#[tokio::test]
async fn stop_already_running_and_unknown_job() {
    let s = standin().await;
    let h = harness(&s).await;
    let (c, mut rx, stop) = ctx("l1", "ETL - Long");
    h.backend.start(c).await.unwrap();
    let (c2, _rx2, _s2) = ctx("l2", "ETL - Long");
    assert!(matches!(
        h.backend.start(c2).await,
        Err(BackendError::AlreadyRunning(_))
    ));
    stop.cancel();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Canceled);

    let (c, _rx, _s) = ctx("u1", "No Such Job");
    match h.backend.start(c).await {
        Err(BackendError::NotFound { offered, .. }) => {
            assert!(offered.contains("ETL - Multi"), "{offered}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn agent_restart_mid_run_is_lost_and_connection_drops_are_survived() {
    let s = standin().await;
    let h = harness(&s).await;
    let (c, mut rx, _stop) = ctx("d1", "ETL - Multi");
    h.backend.start(c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.drop_connections();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);

    let (c, mut rx, _stop) = ctx("a1", "ETL - Long");
    h.backend.start(c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.restart_agent(StopMode::Crash);
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Lost);
}

/// The same start-and-follow scenario against a real SQL Server.
#[tokio::test]
async fn real_sql_server_start_and_follow() {
    let Ok(conn) = std::env::var("AGENTFLEET_TEST_MSSQL") else {
        eprintln!(
            "skipped: set AGENTFLEET_TEST_MSSQL (e.g. \"server=tcp:host,1433;user=agentfleet;password=...\") and AGENTFLEET_TEST_MSSQL_JOB to run against a real SQL Server"
        );
        return;
    };
    let Ok(job) = std::env::var("AGENTFLEET_TEST_MSSQL_JOB") else {
        eprintln!("skipped: AGENTFLEET_TEST_MSSQL_JOB (the Agent job to start) is not set");
        return;
    };
    let field = |k: &str| {
        conn.split(';').find_map(|kv| {
            kv.split_once('=')
                .filter(|(a, _)| a.trim().eq_ignore_ascii_case(k))
                .map(|(_, v)| v.trim().to_string())
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, field("password").unwrap_or_default()).unwrap();
    let text = format!(
        "server = \"{}\"\nuser = \"{}\"\npassword_file = \"{}\"\ntrust_server_certificate = true\n",
        field("server").unwrap_or_default(),
        field("user").unwrap_or_default(),
        pw.display().to_string().replace('\\', "\\\\")
    );
    let cfg: SqlAgentConfig = toml::from_str(&text).unwrap();
    let backend = SqlAgentBackend::connect(&cfg, dir.path()).await.unwrap();
    let (c, mut rx, _stop) = ctx("real1", &job);
    backend.start(c).await.unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert!(matches!(kinds[0], Kind::Started(_)));
}
