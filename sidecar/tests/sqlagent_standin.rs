//! SQL Server Agent backend scenarios against the TDS stand-in (in-process), and — for the
//! scenarios that need no fault injection — against a real SQL Server when
//! `AGENTFLEET_TEST_MSSQL` is set (then `AGENTFLEET_TEST_MSSQL_JOB` names a job to run).
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::Event;
use agentfleet_common::proto::{self, event::Kind};
use agentfleet_sidecar::backend::sqlagent::{SqlAgentBackend, SqlAgentConfig};
use agentfleet_sidecar::backend::{Backend, BackendError, ExecutionContext};
use agentfleet_sidecar::events::{EventSink, SinkMsg};
use agentfleet_sidecar::journal::{ExecutionRecord, Journal, reader, writer};
use prost::Message;
use sqlagent_standin::{JobsFile, Standin, StandinConfig, StopMode, TlsSetup};
use tokio::sync::mpsc;
use tokio::sync::watch;
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

[[job]]
name = "ETL - Slow Pair"
[[job.step]]
name = "first"
duration = "1500ms"
on_success = "next"
[[job.step]]
name = "second"
duration = "1500ms"

[[job]]
name = "ETL - One Second"
[[job.step]]
name = "only"
duration = "1s"

# No SELECT on tables the poll and the catalogue read (only what the old check looked at).
[[login]]
user = "limited"
password = "s3cret"
role = "operator"
deny = ["msdb.dbo.sysjobs", "msdb.dbo.syscategories"]
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
    config_for("agentfleet", addr, pw_file)
}

fn config_for(user: &str, addr: std::net::SocketAddr, pw_file: &Path) -> SqlAgentConfig {
    let text = format!(
        "server = \"tcp:127.0.0.1,{}\"\nuser = \"{user}\"\npassword_file = \"{}\"\ntrust_server_certificate = true\npoll_interval = \"200ms\"\n",
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
        resume: None,
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
        let msgs = match msg {
            SinkMsg::Group(msgs) => msgs,
            other => vec![other],
        };
        for msg in msgs {
            match msg {
                SinkMsg::Event { kind, .. } => {
                    let done = matches!(kind, Kind::Finished(_));
                    kinds.push(kind);
                    if done {
                        return (kinds, lines);
                    }
                }
                SinkMsg::Log { line, .. } => lines.push(line.line),
                SinkMsg::Group(_) => panic!("nested group"),
            }
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

/// Runs `id` through a real journal (writer included) with `ctx.resume` as given, until the
/// journal holds Finished; returns the journal's events.
async fn journaled_run(
    backend: &SqlAgentBackend,
    journal: &Journal,
    id: &str,
    reopen: bool,
) -> Vec<Event> {
    let (file, progress, resume) = if reopen {
        let (file, progress) = journal.reopen(id).unwrap();
        let state = reader::resume_state(&journal.events_path(id)).unwrap();
        (file, progress, Some(state))
    } else {
        let record = ExecutionRecord {
            execution_id: id.into(),
            job: "ETL - Multi".into(),
            backend: "sqlagent".into(),
            run_id: String::new(),
            task: String::new(),
            attempt: 0,
            params: Default::default(),
            accepted_at_ms: 1,
            supervised: false,
            started_by: String::new(),
        };
        let (file, progress) = journal.create(&record).unwrap();
        (file, progress, None)
    };
    let (progress_tx, mut progress_rx) = watch::channel(progress);
    let (events, rx) = EventSink::channel(id);
    let w = writer::spawn(file, rx, progress_tx, id.into());
    let ctx = ExecutionContext {
        execution_id: id.into(),
        job: "ETL - Multi".into(),
        params: Default::default(),
        events,
        stop: CancellationToken::new(),
        resume,
    };
    backend.start(ctx).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        progress_rx.wait_for(|p| p.finished.is_some()),
    )
    .await
    .expect("no Finished within 60s")
    .unwrap();
    w.await.unwrap();
    reader::read_from(&journal.events_path(id), 0, usize::MAX)
        .unwrap()
        .0
}

fn step_finished(e: &Event) -> Option<&proto::StepFinished> {
    match &e.kind {
        Some(Kind::StepFinished(s)) => Some(s),
        _ => None,
    }
}

/// How the ledger is left when the sidecar "dies" with the journal holding step 1 only.
#[derive(Debug, Clone, Copy)]
enum LedgerAt {
    /// Ledger ahead of the journal (step 2 read, not journaled): step 2 must not be lost.
    Ahead,
    /// Ledger behind the journal (step 1 journaled, cursor not saved): no repeat.
    Behind,
    /// The ledger says finished (outcome read), the journal lacks step 2 and Finished.
    Finished,
}

/// kill -9 between handing history events to the sink and recording the cursor (both
/// orders): after a restart every history row is in the journal exactly once.
#[tokio::test]
async fn resume_after_a_crash_journals_each_history_row_once() {
    let s = standin().await;
    for (n, case) in [LedgerAt::Ahead, LedgerAt::Behind, LedgerAt::Finished]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let id = format!("crash{n}");

        // The first sidecar runs the job to its end.
        let first = SqlAgentBackend::connect(&config(s.addr(), &pw), dir.path())
            .await
            .unwrap();
        let all = journaled_run(&first, &journal, &id, false).await;
        drop(first);
        let ids: Vec<i64> = all
            .iter()
            .filter_map(step_finished)
            .map(|s| s.sql_instance_id)
            .collect();
        assert_eq!(ids.len(), 2, "{all:?}");
        assert!(ids[0] > 0 && ids[1] > ids[0], "{ids:?}");

        // The crash: the journal keeps everything up to step 1's result ...
        let cut = all.iter().position(|e| step_finished(e).is_some()).unwrap();
        let len: usize = all[..=cut]
            .iter()
            .map(|e| {
                let l = e.encoded_len();
                prost::length_delimiter_len(l) + l
            })
            .sum();
        let path = journal.events_path(&id);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len as u64)
            .unwrap();
        // ... and the ledger is left ahead of it, behind it, or finished.
        let ledger = dir
            .path()
            .join("sqlagent")
            .join("ledger")
            .join(format!("{id}.json"));
        let mut entry: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&ledger).unwrap()).unwrap();
        let watermark = entry["history_watermark"].as_i64().unwrap();
        match case {
            LedgerAt::Ahead => {
                entry["state"] = "started".into();
                entry["cursor"] = ids[1].into();
            }
            LedgerAt::Behind => {
                entry["state"] = "started".into();
                entry["cursor"] = watermark.into();
            }
            LedgerAt::Finished => assert_eq!(entry["state"], "finished"),
        }
        std::fs::write(&ledger, serde_json::to_vec(&entry).unwrap()).unwrap();

        // The restarted sidecar resumes the execution from its journal.
        let second = SqlAgentBackend::connect(&config(s.addr(), &pw), dir.path())
            .await
            .unwrap();
        let events = journaled_run(&second, &journal, &id, true).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        let results: Vec<(u32, u32, i64)> = events
            .iter()
            .filter_map(step_finished)
            .map(|s| (s.step_id, s.attempt, s.sql_instance_id))
            .collect();
        assert_eq!(
            results,
            vec![(1, 1, ids[0]), (2, 1, ids[1])],
            "{case:?}: {events:?}"
        );
        let count = |f: fn(&Kind) -> bool| {
            events
                .iter()
                .filter(|e| e.kind.as_ref().is_some_and(f))
                .count()
        };
        assert_eq!(count(|k| matches!(k, Kind::Started(_))), 1, "{case:?}");
        assert_eq!(count(|k| matches!(k, Kind::Finished(_))), 1, "{case:?}");
        let started: Vec<u32> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::StepStarted(s)) => Some(s.step_id),
                _ => None,
            })
            .collect();
        assert_eq!(started, vec![1, 2], "{case:?}: {events:?}");
        match &events.last().unwrap().kind {
            Some(Kind::Finished(f)) => {
                assert_eq!(
                    f.outcome,
                    proto::Outcome::Succeeded as i32,
                    "{case:?}: {f:?}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Each history row's lines once.
        let mut tagged: Vec<(i64, String)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Logs(l)) => Some(l.lines.clone()),
                _ => None,
            })
            .flatten()
            .filter(|l| l.sql_instance_id > 0)
            .map(|l| (l.sql_instance_id, l.line))
            .collect();
        let before = tagged.len();
        assert!(
            tagged.iter().any(|(_, l)| l.contains("loaded")),
            "{tagged:?}"
        );
        tagged.sort();
        tagged.dedup();
        assert_eq!(tagged.len(), before, "{case:?}: a history line repeated");
    }
    let starts = s
        .requests()
        .iter()
        .filter(|r| r.marker.as_deref() == Some("start_job"))
        .count();
    assert_eq!(starts, 3, "one sp_start_job per execution, none on resume");
}

/// A resumed execution (after a sidecar restart) only ever follows a run the ledger proves
/// was bound. A crash before the ledger entry was written, an unreadable entry, or a
/// `Starting` entry the Agent shows no trace of (its session changed) ends the execution
/// LOST, and `sp_start_job` is never called late.
#[tokio::test]
async fn a_resume_never_starts_a_job_whose_start_was_not_confirmed() {
    let s = standin().await;
    let h = harness(&s).await;
    let start_jobs = || {
        s.requests()
            .iter()
            .filter(|r| r.marker.as_deref() == Some("start_job"))
            .count()
    };
    let ledger_dir = h._dir.path().join("sqlagent").join("ledger");
    let resumed = |id: &str| {
        let (mut c, rx, stop) = ctx(id, "ETL - Multi");
        c.resume = Some(Default::default());
        (c, rx, stop)
    };
    let lost_with = |kinds: &[Kind]| match kinds.last() {
        Some(Kind::Finished(f)) if f.outcome == proto::Outcome::Lost as i32 => f.message.clone(),
        other => panic!("expected Finished{{LOST}}, got {other:?} in {kinds:?}"),
    };

    // A bound run first, for its ledger entry (job id, Agent session).
    let (c, mut rx, _stop) = ctx("bound", "ETL - Multi");
    h.backend.start(c).await.unwrap();
    assert_eq!(
        outcome(&until_finished(&mut rx).await.0),
        proto::Outcome::Succeeded
    );
    assert_eq!(start_jobs(), 1);

    // 1. Killed between the journal record and the ledger entry: no entry.
    let (c, mut rx, _stop) = resumed("no-entry");
    h.backend.start(c).await.unwrap();
    let message = lost_with(&until_finished(&mut rx).await.0);
    assert!(message.contains("it was not started"), "{message}");

    // 2. An entry that cannot be read: unknown, never "not started".
    std::fs::write(
        ledger_dir.join("torn.json"),
        b"{\"execution_id\": \"torn\", \"st",
    )
    .unwrap();
    let (c, mut rx, _stop) = resumed("torn");
    h.backend.start(c).await.unwrap();
    let message = lost_with(&until_finished(&mut rx).await.0);
    assert!(message.contains("cannot be read"), "{message}");

    // 3. Killed after the entry (Starting), before sp_start_job; the Agent restarted
    //    meanwhile (a new session): nothing to follow, and no late start.
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ledger_dir.join("bound.json")).unwrap()).unwrap();
    entry["execution_id"] = "starting".into();
    entry["state"] = "starting".into();
    entry["history_watermark"] = entry["cursor"].clone();
    entry["outcome"] = serde_json::Value::Null;
    entry["message"] = serde_json::Value::Null;
    std::fs::write(
        ledger_dir.join("starting.json"),
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    s.restart_agent(StopMode::Graceful);
    let (c, mut rx, _stop) = resumed("starting");
    h.backend.start(c).await.unwrap();
    let message = lost_with(&until_finished(&mut rx).await.0);
    assert!(message.contains("not started now"), "{message}");

    assert_eq!(start_jobs(), 1, "a resume called sp_start_job");
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

fn step_starts(kinds: &[Kind]) -> Vec<(u32, u32)> {
    kinds
        .iter()
        .filter_map(|k| match k {
            Kind::StepStarted(s) => Some((s.step_id, s.attempt)),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until `f` holds; panics with `what` otherwise.
async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects events until a StepStarted (the run is under way).
async fn until_step_started(rx: &mut mpsc::Receiver<SinkMsg>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no StepStarted within 30s")
            .expect("sink closed");
        let msgs = match msg {
            SinkMsg::Group(m) => m,
            other => vec![other],
        };
        if msgs.iter().any(|m| {
            matches!(
                m,
                SinkMsg::Event {
                    kind: Kind::StepStarted(_),
                    ..
                }
            )
        }) {
            return;
        }
    }
}

/// `xp_sqlagent_enum_jobs` lagging the history insert: after step 1's row, the live view
/// still shows step 1 running for a while. The run shows each step started once.
#[tokio::test]
async fn a_lagging_live_view_does_not_reopen_a_finished_step() {
    let s = standin().await;
    s.agent().set_live_lag(Duration::from_secs(1));
    let h = harness(&s).await;
    let (c, mut rx, _stop) = ctx("lag1", "ETL - Slow Pair");
    h.backend.start(c).await.unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(step_starts(&kinds), vec![(1, 1), (2, 1)], "{kinds:?}");
    assert_eq!(step_statuses(&kinds), vec![(1, 1, 1), (2, 1, 1)]);
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);
}

/// The Agent stops while a run is followed: `xp_sqlagent_enum_jobs` raises 22022, which
/// escapes the poll's TRY/CATCH and fails every poll. The poller falls back to history-only
/// polls and reports the run's real (canceled) outcome instead of LOST minutes later.
#[tokio::test]
async fn an_escaping_enum_jobs_error_falls_back_to_history_polls() {
    let s = standin().await;
    let h = harness(&s).await;
    let (c, mut rx, _stop) = ctx("down1", "ETL - Long");
    h.backend.start(c).await.unwrap();
    until_step_started(&mut rx).await;
    s.stop_agent(StopMode::Graceful);
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Canceled, "{kinds:?}");
}

/// A stop that reaches the Agent after the job ended (the poll had not seen the outcome
/// yet): `sp_stop_job` is refused with a 22022 that escapes the batch; the sidecar says
/// the job is not running and reports the real outcome.
#[tokio::test]
async fn a_stop_refused_as_not_running_is_recognised_when_it_escapes() {
    let s = standin().await;
    let h = harness(&s).await;
    let job_id = s.agent().job_id("ETL - One Second").unwrap();
    let (c, mut rx, stop) = ctx("late-stop", "ETL - One Second");
    h.backend.start(c).await.unwrap();
    // Polls now time out behind the history lock until the job has ended at the Agent.
    s.agent().history_lock.hold();
    wait_until("the job's outcome row", || {
        s.agent().history(job_id).iter().any(|r| r.step_id == 0)
    })
    .await;
    stop.cancel();
    wait_until("the stop request", || {
        s.requests()
            .iter()
            .any(|r| r.marker.as_deref() == Some("stop_job"))
    })
    .await;
    s.agent().history_lock.release();
    let (kinds, lines) = until_finished(&mut rx).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("SQL Server Agent says the job is not running")),
        "{lines:?}"
    );
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);
}

/// `sidecar check` checks every object the catalogued queries touch: a login without
/// SELECT on `sysjobs` (poll) and `syscategories` (list_jobs, resolve_job) fails it.
#[tokio::test]
async fn check_reports_every_object_the_queries_need() {
    let s = standin().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let items =
        agentfleet_sidecar::backend::sqlagent::check(&config_for("limited", s.addr(), &pw)).await;
    let failed: Vec<String> = items
        .iter()
        .filter(|i| i.status == agentfleet_sidecar::backend::sqlagent::CheckStatus::Fail)
        .map(|i| format!("{}: {}", i.name, i.detail))
        .collect();
    let text = failed.join("\n");
    assert!(text.contains("SELECT on msdb.dbo.sysjobs "), "{items:?}");
    assert!(
        text.contains("SELECT on msdb.dbo.syscategories"),
        "{items:?}"
    );
    // What the check predicts is what happens: listing the jobs fails with 229.
    let backend = SqlAgentBackend::connect(&config_for("limited", s.addr(), &pw), dir.path())
        .await
        .unwrap();
    assert!(
        matches!(
            backend.list_jobs().await,
            Err(BackendError::PermissionDenied(_))
        ),
        "list_jobs without SELECT on syscategories"
    );
    // The sysadmin login passes, and msdb's compatibility level is reported.
    let items = agentfleet_sidecar::backend::sqlagent::check(&config(s.addr(), &pw)).await;
    assert!(
        items
            .iter()
            .all(|i| i.status != agentfleet_sidecar::backend::sqlagent::CheckStatus::Fail),
        "{items:?}"
    );
    assert!(
        items
            .iter()
            .any(|i| i.name == "sqlagent msdb compatibility" && i.detail.contains("160")),
        "{items:?}"
    );
}

/// The history row limiter holds `sysjobhistory` (TABLOCKX) just as the start batch reads
/// its watermark: the batch times out (1222) *before* `sp_start_job`, is sent again once
/// the lock is gone, and the job runs exactly once.
#[tokio::test]
async fn a_start_behind_the_history_lock_is_retried_and_runs_once() {
    let s = standin().await;
    let h = harness(&s).await;
    let job_id = s.agent().job_id("ETL - Multi").unwrap();
    // The probe reads history freely; the start batch meets the lock.
    s.agent().history_lock.hold_after(1);
    let backend = std::sync::Arc::new(h.backend);
    let (c, mut rx, _stop) = ctx("locked1", "ETL - Multi");
    let b = backend.clone();
    let start = tokio::spawn(async move { b.start(c).await });
    wait_until("a lock timeout", || s.agent().history_lock.timeouts() > 0).await;
    s.agent().history_lock.release();
    start.await.unwrap().unwrap();
    let (kinds, _) = until_finished(&mut rx).await;
    assert_eq!(outcome(&kinds), proto::Outcome::Succeeded);
    let runs = s
        .agent()
        .history(job_id)
        .iter()
        .filter(|r| r.step_id == 0)
        .count();
    assert_eq!(runs, 1, "sp_start_job ran more than once");
}

/// The Agent crashed while a job ran: the newest session's activity row still says
/// "running". A start then says the Agent is not running, not "already running".
#[tokio::test]
async fn a_start_while_the_agent_is_down_says_so() {
    let s = standin().await;
    let h = harness(&s).await;
    let job_id = s.agent().job_id("ETL - Long").unwrap();
    let (c, _rx, _stop) = ctx("ghost1", "ETL - Long");
    h.backend.start(c).await.unwrap();
    wait_until("the run to begin", || {
        s.agent()
            .activity(job_id)
            .is_some_and(|a| a.start_execution_date.is_some())
    })
    .await;
    s.stop_agent(StopMode::Crash);
    // Another sidecar (or this one after a restart) tries to start the job.
    let h2 = harness(&s).await;
    let (c, _rx2, _s2) = ctx("ghost2", "ETL - Long");
    match h2.backend.start(c).await {
        Err(BackendError::Unavailable(m)) => {
            assert!(m.contains("SQL Server Agent is not running"), "{m}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Every catalogued query passes the stand-in's T-SQL check as written, and fails it with
/// the error a real server gives once one of its msdb columns (or, for the procedure calls,
/// a parameter) is renamed.
#[test]
fn the_standin_rejects_each_catalogued_query_with_a_renamed_column() {
    use agentfleet_sidecar::backend::sqlagent::queries;
    use sqlagent_standin::tsql;
    for (name, text) in queries::ALL {
        let report = tsql::check(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(report.unchecked.is_empty(), "{name}: {report:?}");
        eprintln!(
            "{name}: {} columns, {} parameters checked; rewrites: {:?}",
            report.columns.len(),
            report.parameters.len(),
            report.notes
        );
        if report.columns.is_empty() && report.parameters.is_empty() {
            // Only built-in functions (HAS_PERMS_BY_NAME): nothing of msdb is named.
            assert_eq!(*name, "object_permission", "{name} names no msdb column");
            continue;
        }
        if let Some((_, column)) = report.columns.first() {
            let mutated = rename_word(text, column, &format!("{column}_renamed"));
            let e = tsql::check(&mutated).expect_err(&format!("{name}: renamed {column}"));
            assert_eq!(e.number, 207, "{name}: {e:?}");
            assert_eq!(
                e.text,
                format!("Invalid column name '{column}_renamed'."),
                "{name}"
            );
        }
        if let Some((procedure, param)) = report.parameters.first() {
            let mutated = rename_word(text, &format!("{param} ="), &format!("{param}x ="));
            let e = tsql::check(&mutated).expect_err(&format!("{name}: renamed {param}"));
            let short = procedure.rsplit('.').next().unwrap();
            assert_eq!(
                (e.number, e.text.as_str()),
                (
                    8145,
                    format!("{param}x is not a parameter for procedure {short}.").as_str()
                ),
                "{name}"
            );
        }
    }
}

/// Replaces every whole-word occurrence of `from` (not a `@variable`) by `to`.
fn rename_word(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(j) = text[i..].find(from).map(|j| j + i) {
        let before = text[..j].chars().next_back();
        let after = text[j + from.len()..].chars().next();
        let wordy = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&text[i..j]);
        let var = before == Some('@') && !from.starts_with('@');
        if wordy(before) || wordy(after) || var {
            out.push_str(from);
        } else {
            out.push_str(to);
        }
        i = j + from.len();
    }
    out.push_str(&text[i..]);
    out
}
