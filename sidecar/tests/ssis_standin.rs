//! SSIS catalog scenarios against the stand-in's simulated SSISDB: Agent SSIS steps
//! followed into the journal, catalog jobs started over NTLM, stops, retries and a restart.
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, Event, LogStream, event::Kind};
use agentfleet_sidecar::backend::sqlagent::{SqlAgentBackend, SqlAgentConfig};
use agentfleet_sidecar::backend::ssis::follower::Followers;
use agentfleet_sidecar::backend::ssis::{CatalogBackend, CatalogJobConfig};
use agentfleet_sidecar::backend::{Backend, BackendError, ExecutionContext};
use agentfleet_sidecar::events::EventSink;
use agentfleet_sidecar::journal::{ExecutionRecord, Journal, reader, writer};
use sqlagent_standin::{JobsFile, Standin, StandinConfig, TlsSetup};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const JOBS: &str = r#"
[[login]]
user = "agentfleet"
password = "s3cret"
role = "operator"
ssis_roles = ["ssis_logreader"]

[[login]]
user = 'CONTOSO\etl'
password = "Etl-pw-1"
windows = true
role = "user"

[agent]
utc_offset = "+02:00"

[ssis]
pending_delay = "30ms"
stop_latency = "150ms"
agent_account = 'CONTOSO\sqlagent'

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Load.dtsx"
[[ssis.package.parameter]]
name = "BatchSize"
type = "Int32"
default = "100"
[[ssis.package.parameter]]
name = "Region"
type = "String"
scope = "project"
[[ssis.package.task]]
name = "Extract"
duration = "120ms"
messages = [{ type = 70, text = "Extracted 1200 rows." }]
rows = [{ path_name = "OLE DB Source Output", source = "Orders", destination = "Staging", rows = 1200 }]
[[ssis.package.task]]
name = "Load"
duration = "120ms"
messages = [{ type = 110, text = "Truncation may occur." }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Broken.dtsx"
[[ssis.package.task]]
name = "Extract"
duration = "50ms"
[[ssis.package.task]]
name = "Merge"
duration = "50ms"
result = "failure"
messages = [{ type = 120, text = "Violation of PRIMARY KEY constraint." }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Forever.dtsx"
[[ssis.package.task]]
name = "Wait"
duration = "until_stopped"

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Queued.dtsx"
pending_delay = "1500ms"
[[ssis.package.task]]
name = "Wait"
duration = "until_stopped"

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Long.dtsx"
[[ssis.package.task]]
name = "First"
duration = "50ms"
messages = [{ type = 70, text = "first one" }, { type = 110, text = "first two" }]
[[ssis.package.task]]
name = "Middle"
duration = "2500ms"
messages = [{ type = 70, text = "middle one" }]
[[ssis.package.task]]
name = "Last"
duration = "50ms"
messages = [{ type = 70, text = "last one" }, { type = 120, text = "last two" }]

[[job]]
name = "SSIS Load"
start_latency = "10ms"
[[job.step]]
name = "Run Load"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Load.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";3 /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'

[[job]]
name = "SSIS Long"
start_latency = "10ms"
[[job.step]]
name = "Run Long"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Long.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'

[[job]]
name = "SSIS Broken"
start_latency = "10ms"
[[job.step]]
name = "Run Broken"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Broken.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'
"#;

const CATALOG_JOBS: &str = r#"
[[catalog_job]]
name = "Load"
folder = "ETL"
project = "Warehouse"
package = "Load"
logging_level = "verbose"
params = [{ name = "BatchSize", type = "Int32", object_type = "package" }, { name = "Region" }]

[[catalog_job]]
name = "Forever"
folder = "ETL"
project = "Warehouse"
package = "Forever.dtsx"

[[catalog_job]]
name = "Queued"
folder = "ETL"
project = "Warehouse"
package = "Queued.dtsx"

[[catalog_job]]
name = "Long"
folder = "ETL"
project = "Warehouse"
package = "Long.dtsx"
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

fn connection(
    addr: std::net::SocketAddr,
    auth: &str,
    user: &str,
    pw_file: &Path,
) -> SqlAgentConfig {
    let text = format!(
        "server = \"tcp:127.0.0.1,{}\"\nauth = \"{auth}\"\nuser = '{user}'\npassword_file = \"{}\"\ntrust_server_certificate = true\npoll_interval = \"200ms\"\n",
        addr.port(),
        pw_file.display().to_string().replace('\\', "\\\\")
    );
    toml::from_str(&text).unwrap()
}

fn catalog_jobs() -> Vec<CatalogJobConfig> {
    #[derive(serde::Deserialize)]
    struct F {
        catalog_job: Vec<CatalogJobConfig>,
    }
    toml::from_str::<F>(CATALOG_JOBS).unwrap().catalog_job
}

fn catalog_backend(s: &Standin, dir: &Path, windows: bool) -> CatalogBackend {
    let pw = dir.join(if windows { "win-pw" } else { "sql-pw" });
    std::fs::write(&pw, if windows { "Etl-pw-1\n" } else { "s3cret\n" }).unwrap();
    let conn = if windows {
        connection(s.addr(), "windows", "CONTOSO\\etl", &pw)
    } else {
        connection(s.addr(), "sql", "agentfleet", &pw)
    };
    CatalogBackend::new(catalog_jobs(), &conn, dir, Arc::new(Followers::default())).unwrap()
}

async fn agent_backend(s: &Standin, dir: &Path) -> SqlAgentBackend {
    let pw = dir.join("sql-pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    SqlAgentBackend::connect(&connection(s.addr(), "sql", "agentfleet", &pw), dir)
        .await
        .unwrap()
}

/// One execution through a real journal writer.
struct Run {
    id: String,
    stop: CancellationToken,
    progress: watch::Receiver<agentfleet_sidecar::journal::Progress>,
    writer: tokio::task::JoinHandle<()>,
}

async fn start(
    backend: &dyn Backend,
    journal: &Journal,
    id: &str,
    job: &str,
    params: &[(&str, &str)],
    reopen: bool,
) -> Result<Run, BackendError> {
    let (file, progress, resume) = if reopen {
        let (file, progress) = journal.reopen(id).unwrap();
        let state = reader::resume_state(&journal.events_path(id)).unwrap();
        (file, progress, Some(state))
    } else {
        let record = ExecutionRecord {
            execution_id: id.into(),
            job: job.into(),
            backend: backend.kind().into(),
            run_id: String::new(),
            task: String::new(),
            attempt: 0,
            params: Default::default(),
            accepted_at_ms: 1,
            supervised: false,
            started_by: String::new(),
        };
        journal.create(&record).unwrap().pipe(|(f, p)| (f, p, None))
    };
    let (progress_tx, progress_rx) = watch::channel(progress);
    let (events, rx) = EventSink::channel(id);
    let w = writer::spawn(file, rx, progress_tx, id.into());
    let stop = CancellationToken::new();
    let ctx = ExecutionContext {
        execution_id: id.into(),
        job: job.into(),
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        events,
        stop: stop.clone(),
        resume,
    };
    backend.start(ctx).await?;
    Ok(Run {
        id: id.into(),
        stop,
        progress: progress_rx,
        writer: w,
    })
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn events(journal: &Journal, id: &str) -> Vec<Event> {
    reader::read_from(&journal.events_path(id), 0, usize::MAX)
        .unwrap()
        .0
}

async fn finished(journal: &Journal, mut run: Run) -> Vec<Event> {
    tokio::time::timeout(
        Duration::from_secs(60),
        run.progress.wait_for(|p| p.finished.is_some()),
    )
    .await
    .expect("no Finished within 60s")
    .unwrap();
    run.writer.await.unwrap();
    events(journal, &run.id)
}

/// Waits (bounded) until the journal holds an event `f` accepts.
async fn until_journaled(journal: &Journal, id: &str, what: &str, f: impl Fn(&Kind) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if events(journal, id)
            .iter()
            .filter_map(|e| e.kind.as_ref())
            .any(&f)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            events(journal, id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(events: &[Event]) -> Vec<&Kind> {
    events.iter().filter_map(|e| e.kind.as_ref()).collect()
}

fn outcome(events: &[Event]) -> proto::Outcome {
    kinds(events)
        .iter()
        .find_map(|k| match k {
            Kind::Finished(f) => proto::Outcome::try_from(f.outcome).ok(),
            _ => None,
        })
        .expect("Finished")
}

fn catalog_lines(events: &[Event]) -> Vec<proto::LogLine> {
    kinds(events)
        .iter()
        .filter_map(|k| match k {
            Kind::Logs(l) => Some(l.lines.clone()),
            _ => None,
        })
        .flatten()
        .filter(|l| l.stream == LogStream::Catalog as i32 && l.catalog_message_id != 0)
        .collect()
}

fn statuses(events: &[Event]) -> Vec<i32> {
    kinds(events)
        .iter()
        .filter_map(|k| match k {
            Kind::CatalogExecution(c) => Some(c.status),
            _ => None,
        })
        .collect()
}

/// The package's tasks that finished (not the package itself: a path of one segment).
fn finished_sub_steps(events: &[Event]) -> Vec<proto::SubStepFinished> {
    all_finished_sub_steps(events)
        .into_iter()
        .filter(|s| s.path.matches('\\').count() > 1)
        .collect()
}

fn all_finished_sub_steps(events: &[Event]) -> Vec<proto::SubStepFinished> {
    kinds(events)
        .iter()
        .filter_map(|k| match k {
            Kind::SubStepFinished(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn assert_unique_ids(lines: &[proto::LogLine]) {
    let mut ids: Vec<i64> = lines.iter().map(|l| l.catalog_message_id).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        n,
        "a catalog message was journaled twice: {lines:?}"
    );
}

#[tokio::test]
async fn an_agent_ssis_step_is_followed_into_the_journal() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let agent = agent_backend(&s, dir.path()).await;
    let all = finished(
        &journal,
        start(&agent, &journal, "a1", "SSIS Load", &[], false)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(outcome(&all), proto::Outcome::Succeeded, "{all:?}");
    let k = kinds(&all);
    let found = k.iter().find_map(|k| match k {
        Kind::CatalogExecution(c) => Some(c.clone()),
        _ => None,
    });
    let c = found.expect("a CatalogExecution event");
    assert_eq!(
        (
            c.step_id,
            c.folder.as_str(),
            c.project.as_str(),
            c.package.as_str(),
            c.server.as_str()
        ),
        (1, "ETL", "Warehouse", "Load.dtsx", "SQL1")
    );
    assert!(c.catalog_execution_id > 0);
    assert_eq!(statuses(&all).last(), Some(&7), "{all:?}");
    let started: Vec<&str> = k
        .iter()
        .filter_map(|k| match k {
            Kind::SubStepStarted(s) => Some(s.path.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        started.contains(&"\\Load\\Extract") && started.contains(&"\\Load\\Load"),
        "{started:?}"
    );
    let subs = finished_sub_steps(&all);
    assert_eq!(
        subs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["Extract", "Load"]
    );
    // The package itself has no statistics row: it ends with its catalog execution.
    let package = all_finished_sub_steps(&all)
        .into_iter()
        .find(|s| s.path == "\\Load")
        .expect("the package ends with its execution");
    assert_eq!(package.status, proto::StepStatus::Succeeded as i32);
    for s in &subs {
        assert_eq!(s.status, proto::StepStatus::Succeeded as i32);
        assert!(
            s.duration_ms >= 100 && s.started_at_ms > 1_600_000_000_000,
            "{s:?}"
        );
    }
    let rows: Vec<u64> = k
        .iter()
        .filter_map(|k| match k {
            Kind::DataFlowRows(r) => Some(r.rows),
            _ => None,
        })
        .collect();
    assert_eq!(rows, [1200]);
    let lines = catalog_lines(&all);
    assert_unique_ids(&lines);
    let info = lines
        .iter()
        .find(|l| l.line == "Extracted 1200 rows.")
        .expect("the information message");
    assert_eq!(
        (
            info.catalog_message_type,
            info.source_path.as_str(),
            info.step_id
        ),
        (70, "\\Load\\Extract", 1)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.catalog_message_type == 110 && l.line == "Truncation may occur.")
    );
    // The Finished comes after every catalog event.
    let last_catalog = all
        .iter()
        .rposition(|e| {
            matches!(
                e.kind,
                Some(Kind::CatalogExecution(_) | Kind::SubStepFinished(_))
            )
        })
        .unwrap();
    let fin = all
        .iter()
        .position(|e| matches!(e.kind, Some(Kind::Finished(_))))
        .unwrap();
    assert!(last_catalog < fin);
}

#[tokio::test]
async fn a_failing_package_shows_its_error_messages() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let agent = agent_backend(&s, dir.path()).await;
    let all = finished(
        &journal,
        start(&agent, &journal, "b1", "SSIS Broken", &[], false)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(outcome(&all), proto::Outcome::Failed);
    assert_eq!(statuses(&all).last(), Some(&4), "{all:?}");
    let err = catalog_lines(&all)
        .into_iter()
        .find(|l| l.catalog_message_type == 120)
        .expect("the error message");
    assert_eq!(
        (err.line.as_str(), err.source_path.as_str()),
        ("Violation of PRIMARY KEY constraint.", "\\Broken\\Merge")
    );
    let merge = finished_sub_steps(&all)
        .into_iter()
        .find(|s| s.name == "Merge")
        .unwrap();
    assert_eq!(merge.status, proto::StepStatus::Failed as i32);
    assert_eq!(merge.message, "Violation of PRIMARY KEY constraint.");
}

#[tokio::test]
async fn a_catalog_job_runs_its_package_with_typed_parameters() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let b = catalog_backend(&s, dir.path(), true);
    let all = finished(
        &journal,
        start(
            &b,
            &journal,
            "c1",
            "Load",
            &[("BatchSize", "500"), ("Region", "EU")],
            false,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(outcome(&all), proto::Outcome::Succeeded, "{all:?}");
    let k = kinds(&all);
    assert!(
        matches!(k[1], Kind::Started(_)) && matches!(k[2], Kind::StepStarted(_)),
        "{k:?}"
    );
    let step = k
        .iter()
        .find_map(|k| match k {
            Kind::StepFinished(f) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        step.duration_ms >= 200 && step.duration_ms < 5_000,
        "the catalog's own times: {step:?}"
    );
    assert!(k.iter().any(
        |k| matches!(k, Kind::StepFinished(f) if f.status == proto::StepStatus::Succeeded as i32)
    ));
    assert!(
        k.iter()
            .any(|k| matches!(k, Kind::DataFlowRows(r) if r.rows == 1200)),
        "Verbose gives row counts"
    );
    assert_eq!(finished_sub_steps(&all).len(), 2);
    // The start batch carried the typed parameters and the caller token.
    let start_req = s
        .requests()
        .into_iter()
        .find(|r| r.marker.as_deref() == Some("ssis_start"))
        .unwrap();
    assert_eq!(start_req.login, "CONTOSO\\etl");
    let text = format!("{:?}", start_req.params);
    assert!(
        text.contains("agentfleet:c1") && text.contains("BatchSize") && text.contains("Int32"),
        "{text}"
    );
    // Undeclared parameters never reach the catalog.
    let refused = start(&b, &journal, "c2", "Load", &[("Nope", "1")], false).await;
    assert!(
        matches!(refused, Err(BackendError::InvalidArgument(ref m)) if m.contains("Nope")),
        "{:?}",
        refused.err()
    );
}

#[tokio::test]
async fn a_sql_login_is_refused_for_catalog_jobs_with_what_to_do() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let b = catalog_backend(&s, dir.path(), false);
    match start(&b, &journal, "d1", "Forever", &[], false).await {
        Err(BackendError::PermissionDenied(m)) => {
            assert!(
                m.contains("27123") && m.contains("auth = \"windows\""),
                "{m}"
            )
        }
        other => panic!("expected PermissionDenied, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn a_start_refused_for_the_catalog_lock_is_retried_and_runs_once() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let b = catalog_backend(&s, dir.path(), true);
    s.catalog().inject_create_timeouts(2);
    let all = finished(
        &journal,
        start(&b, &journal, "e1", "Long", &[], false).await.unwrap(),
    )
    .await;
    assert_eq!(outcome(&all), proto::Outcome::Succeeded);
    let starts = s
        .requests()
        .iter()
        .filter(|r| r.marker.as_deref() == Some("ssis_start"))
        .count();
    assert_eq!(starts, 3, "two refused with 27195, one started");
    let mut ids: Vec<i64> = kinds(&all)
        .iter()
        .filter_map(|k| match k {
            Kind::CatalogExecution(c) => Some(c.catalog_execution_id),
            _ => None,
        })
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one execution followed: {ids:?}");
}

#[tokio::test]
async fn a_catalog_job_stops_and_a_pending_one_is_stopped_once_it_runs() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let b = catalog_backend(&s, dir.path(), true);

    let run = start(&b, &journal, "f1", "Forever", &[], false)
        .await
        .unwrap();
    until_journaled(
        &journal,
        "f1",
        "running",
        |k| matches!(k, Kind::CatalogExecution(c) if c.status == 2),
    )
    .await;
    run.stop.cancel();
    let all = finished(&journal, run).await;
    assert_eq!(outcome(&all), proto::Outcome::Canceled, "{all:?}");
    assert_eq!(statuses(&all).last(), Some(&3));

    // Stopped while pending: the catalog refuses (27124) until it runs; the request is kept.
    let run = start(&b, &journal, "f2", "Queued", &[], false)
        .await
        .unwrap();
    run.stop.cancel();
    let all = finished(&journal, run).await;
    assert_eq!(outcome(&all), proto::Outcome::Canceled, "{all:?}");
    let lines: Vec<String> = kinds(&all)
        .iter()
        .filter_map(|k| match k {
            Kind::Logs(l) => Some(l.lines.iter().map(|l| l.line.clone()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("still pending")),
        "{lines:?}"
    );
    assert!(
        statuses(&all).contains(&5) && statuses(&all).last() == Some(&3),
        "{:?}",
        statuses(&all)
    );
}

#[tokio::test]
async fn a_restart_mid_execution_neither_repeats_nor_loses_catalog_messages() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let first = catalog_backend(&s, dir.path(), true);
    let run = start(&first, &journal, "g1", "Long", &[], false)
        .await
        .unwrap();
    until_journaled(
        &journal,
        "g1",
        "the first task's messages",
        |k| matches!(k, Kind::Logs(l) if l.lines.iter().any(|l| l.line == "first two")),
    )
    .await;
    // The sidecar dies: its journal writer is gone mid-execution.
    run.writer.abort();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = catalog_backend(&s, dir.path(), true);
    let all = finished(
        &journal,
        start(&second, &journal, "g1", "Long", &[], true)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(outcome(&all), proto::Outcome::Succeeded, "{all:?}");
    let lines = catalog_lines(&all);
    assert_unique_ids(&lines);
    let mut texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        [
            "first one",
            "first two",
            "last one",
            "last two",
            "middle one"
        ]
    );
    let subs: Vec<String> = finished_sub_steps(&all)
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(subs, ["First", "Middle", "Last"]);
    let k = kinds(&all);
    assert_eq!(
        k.iter().filter(|k| matches!(k, Kind::Started(_))).count(),
        1
    );
    assert_eq!(
        k.iter()
            .filter(|k| matches!(k, Kind::StepStarted(_)))
            .count(),
        1
    );
    assert_eq!(
        s.requests()
            .iter()
            .filter(|r| r.marker.as_deref() == Some("ssis_start"))
            .count(),
        1,
        "never started twice"
    );
}

#[tokio::test]
async fn a_message_committed_out_of_order_is_journaled_once() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let b = catalog_backend(&s, dir.path(), true);
    let run = start(&b, &journal, "h1", "Long", &[], false).await.unwrap();
    // "middle one" gets its id when written but commits only after "last one" was read.
    until_journaled(
        &journal,
        "h1",
        "the middle task's start",
        |k| matches!(k, Kind::SubStepStarted(s) if s.path == "\\Long\\Middle"),
    )
    .await;
    s.catalog().hold_next_message();
    until_journaled(
        &journal,
        "h1",
        "a later message",
        |k| matches!(k, Kind::Logs(l) if l.lines.iter().any(|l| l.line == "last one")),
    )
    .await;
    let held = s.catalog().held_messages();
    assert_eq!(held.len(), 1, "a message is held");
    s.catalog().release_held_messages();
    let all = finished(&journal, run).await;
    assert_eq!(outcome(&all), proto::Outcome::Succeeded);
    let lines = catalog_lines(&all);
    assert_unique_ids(&lines);
    let mut texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    texts.sort_unstable();
    assert_eq!(
        texts,
        [
            "first one",
            "first two",
            "last one",
            "last two",
            "middle one"
        ]
    );
}

#[tokio::test]
async fn check_says_what_the_login_sees_in_ssisdb() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let sql = connection(s.addr(), "sql", "agentfleet", &pw);
    let items = agentfleet_sidecar::backend::ssis::check::check(&sql, "sqlagent", true).await;
    let text = format!("{items:?}");
    assert!(
        text.contains("ssis_logreader") && text.contains("SQL Server authentication"),
        "{text}"
    );
    let start = items
        .iter()
        .find(|i| i.name == "ssis start packages")
        .expect("a start item");
    assert_eq!(
        start.status,
        agentfleet_sidecar::backend::sqlagent::CheckStatus::Fail
    );
    assert!(start.detail.contains("27123"), "{}", start.detail);

    std::fs::write(&pw, "Etl-pw-1\n").unwrap();
    let win = connection(s.addr(), "windows", "CONTOSO\\etl", &pw);
    let items = agentfleet_sidecar::backend::ssis::check::check(&win, "ssis", true).await;
    let text = format!("{items:?}");
    assert!(
        text.contains("Windows authentication") && text.contains("only the executions it created"),
        "{text}"
    );
    let start = items
        .iter()
        .find(|i| i.name == "ssis start packages")
        .unwrap();
    assert_eq!(
        start.status,
        agentfleet_sidecar::backend::sqlagent::CheckStatus::Ok,
        "{text}"
    );
}

#[tokio::test]
async fn a_restart_during_an_agent_ssis_step_resumes_its_catalog_follow() {
    let s = standin().await;
    // Crash once the step's first catalog messages are journaled, and once as soon as the
    // step's start is.
    for (n, early) in [false, true].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let id = format!("i{n}");
        let first = agent_backend(&s, dir.path()).await;
        let run = start(&first, &journal, &id, "SSIS Long", &[], false)
            .await
            .unwrap();
        if early {
            until_journaled(&journal, &id, "the step's start", |k| {
                matches!(k, Kind::StepStarted(_))
            })
            .await;
        } else {
            until_journaled(
                &journal,
                &id,
                "the first task's messages",
                |k| matches!(k, Kind::Logs(l) if l.lines.iter().any(|l| l.line == "first two")),
            )
            .await;
        }
        run.writer.abort();
        drop(first);
        tokio::time::sleep(Duration::from_millis(300)).await;

        let second = agent_backend(&s, dir.path()).await;
        let all = finished(
            &journal,
            start(&second, &journal, &id, "SSIS Long", &[], true)
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(outcome(&all), proto::Outcome::Succeeded, "{all:?}");
        let lines = catalog_lines(&all);
        assert_unique_ids(&lines);
        let mut texts: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
        texts.sort_unstable();
        assert_eq!(
            texts,
            [
                "first one",
                "first two",
                "last one",
                "last two",
                "middle one"
            ],
            "early crash: {early}"
        );
        let subs: Vec<String> = finished_sub_steps(&all)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(subs, ["First", "Middle", "Last"]);
        assert_eq!(statuses(&all).last(), Some(&7), "{all:?}");
    }
}
