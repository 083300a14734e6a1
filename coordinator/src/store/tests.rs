use std::path::PathBuf;

use super::*;
use crate::events::{At, RunEvent, RunEventKind};
use crate::report::Reporter;
use crate::report::test_support::sample_run;

fn temp_home() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    (dir, home)
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn new_run(run_id: &str, started_ms: i64) -> NewRun {
    NewRun {
        run_id: run_id.into(),
        plan_name: "nightly-etl".into(),
        plan_path: "plan.toml".into(),
        plan_text: "[plan]\nname = \"nightly-etl\"\n".into(),
        fleet_path: None,
        started_ms,
        tasks: vec![
            ("load-facts".into(), "ETL - Load Facts".into()),
            ("report".into(), "BI - Report".into()),
        ],
    }
}

fn at(execution_id: &str) -> At {
    At {
        task: "load-facts".into(),
        attempt: 1,
        sidecar: "sql2".into(),
        execution_id: execution_id.into(),
    }
}

fn log(run_id: &str, execution_id: &str, line: String) -> RunEvent {
    RunEvent::new(
        run_id,
        1_000,
        RunEventKind::log_line(at(execution_id), 1, "stdout", line),
    )
}

fn mark(run_id: &str, execution_id: &str, seq: u64) -> RunEvent {
    RunEvent::new(
        run_id,
        1_000,
        RunEventKind::ExecutionSeq {
            at: at(execution_id),
            seq,
        },
    )
}

#[test]
fn migrates_an_empty_file_and_reopens_it() {
    let (_dir, home) = temp_home();
    let store = Store::open(&home).unwrap();
    assert!(home.join(DB_FILE).exists());
    let version: i64 = count(&store, "PRAGMA user_version");
    assert_eq!(version, schema_version());
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for table in ["runs", "tasks", "executions", "steps", "events", "logs"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&store, &sql), 0, "{table}");
    }
    drop(store);
    // Opening again finds the schema current and changes nothing.
    let store = Store::open(&home).unwrap();
    assert_eq!(count(&store, "PRAGMA user_version"), schema_version());
}

#[test]
fn refuses_a_newer_schema() {
    let (_dir, home) = temp_home();
    let store = Store::open(&home).unwrap();
    store
        .conn
        .pragma_update(None, "user_version", schema_version() + 1)
        .unwrap();
    drop(store);
    let err = Store::open(&home).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
}

#[test]
fn a_reported_run_fills_every_table() {
    let (_dir, home) = temp_home();
    let mut store = Store::open(&home).unwrap();
    store.create_run(&new_run("r1", 0)).unwrap();
    let mut reporter = store.reporter().unwrap();
    for ev in sample_run() {
        reporter.event(&ev);
    }
    reporter.flush();
    // Flushed: readable from another connection before the writer closes.
    let run = store.resolve_run("r1").unwrap();
    assert_eq!(run.status, "failed");
    assert_eq!(run.exit_code, Some(1));
    assert_eq!((run.tasks_total, run.tasks_succeeded), (2, 1));
    reporter.finish();

    let snap = store.run_snapshot("r1").unwrap();
    assert_eq!(snap.plan_text, "[plan]\nname = \"nightly-etl\"\n");
    let tasks: Vec<(&str, &str)> = snap
        .tasks
        .iter()
        .map(|t| (t.task.as_str(), t.status.as_str()))
        .collect();
    assert_eq!(tasks, [("load-facts", "succeeded"), ("report", "skipped")]);
    assert_eq!(snap.executions.len(), 1);
    let e = &snap.executions[0];
    assert_eq!(
        (e.execution_id.as_str(), e.job.as_str(), e.status.as_str()),
        ("e1", "ETL - Load Facts", "succeeded")
    );
    let steps: Vec<(u32, u32, &str)> = snap
        .steps
        .iter()
        .map(|s| (s.step, s.attempt, s.status.as_str()))
        .collect();
    assert_eq!(
        steps,
        [(2, 1, "succeeded"), (3, 1, "retry"), (3, 2, "succeeded")]
    );
    let logs = store.logs_after("r1", None, 0, 100).unwrap();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].line, "rows: 42");
    // Every event but the log line is kept as its JSON object.
    assert_eq!(
        count(&store, "SELECT count(*) FROM events"),
        sample_run().len() as i64 - 1
    );
}

#[test]
fn events_wait_for_their_sequence_mark_and_last_seq_only_grows() {
    let (_dir, home) = temp_home();
    let store = Store::open(&home).unwrap();
    let writer = store.writer().unwrap();
    writer.send(RunEvent::new(
        "r1",
        0,
        RunEventKind::TaskPlaced { at: at("e1") },
    ));
    writer.send(log("r1", "e1", "one".into()));
    writer.flush();
    // Not covered by a mark yet: a resume from last_seq = 0 will deliver it again.
    assert_eq!(count(&store, "SELECT count(*) FROM logs"), 0);
    writer.send(mark("r1", "e1", 5));
    writer.flush();
    assert_eq!(count(&store, "SELECT count(*) FROM logs"), 1);
    let last_seq = || {
        count(
            &store,
            "SELECT last_seq FROM executions WHERE execution_id = 'e1'",
        )
    };
    assert_eq!(last_seq(), 5);
    // A late, smaller mark (e.g. replayed after a reconnect) never moves it back.
    writer.send(mark("r1", "e1", 3));
    writer.flush();
    assert_eq!(last_seq(), 5);
    writer.send(log("r1", "e1", "two".into()));
    let stats = writer.close();
    assert_eq!(stats.unmarked_at_close, 1);
    assert_eq!(stats.lost_events, 0);
    assert_eq!(count(&store, "SELECT count(*) FROM logs"), 1);
}

#[test]
fn many_events_commit_in_few_batches() {
    let (_dir, home) = temp_home();
    let store = Store::open(&home).unwrap();
    let writer = store.writer().unwrap();
    for i in 0..20_000u64 {
        writer.send(log("r1", "e1", format!("line {i}")));
        writer.send(mark("r1", "e1", i + 1));
    }
    let stats = writer.close();
    assert_eq!(stats.events, 40_000);
    assert!(
        stats.batches <= 40_000 / BATCH_ROWS as u64 + 20,
        "{stats:?}"
    );
    assert_eq!(count(&store, "SELECT count(*) FROM logs"), 20_000);
}

#[test]
fn two_hundred_thousand_log_lines() {
    let (_dir, home) = temp_home();
    let mut store = Store::open(&home).unwrap();
    store.create_run(&new_run("r1", 0)).unwrap();
    let writer = store.writer().unwrap();
    writer.send(RunEvent::new(
        "r1",
        0,
        RunEventKind::TaskPlaced { at: at("e1") },
    ));
    let line = "x".repeat(100);
    for seq in 1..=2_000u64 {
        for _ in 0..100 {
            writer.send(log("r1", "e1", line.clone()));
        }
        writer.send(mark("r1", "e1", seq));
    }
    let stats = writer.close();
    assert_eq!(stats.lost_events, 0);
    assert_eq!(count(&store, "SELECT count(*) FROM logs"), 200_000);
    let snap = store.run_snapshot("r1").unwrap();
    assert_eq!(snap.executions[0].last_seq, 2_000);
    // Paging through them in order.
    let page = store
        .logs_after("r1", Some("load-facts"), 0, 5_000)
        .unwrap();
    assert_eq!(page.len(), 5_000);
    assert!(page.windows(2).all(|w| w[0].id < w[1].id));
}

#[test]
fn resolves_last_full_ids_prefixes_and_says_when_it_cannot() {
    let (_dir, home) = temp_home();
    let mut store = Store::open(&home).unwrap();
    assert!(matches!(store.resolve_run("last"), Err(StoreError::NoRuns)));
    store.create_run(&new_run("0190aaaa1111", 1)).unwrap();
    store.create_run(&new_run("0190aaaa2222", 2)).unwrap();
    store.create_run(&new_run("0190bbbb3333", 3)).unwrap();
    assert_eq!(store.resolve_run("last").unwrap().run_id, "0190bbbb3333");
    assert_eq!(
        store.resolve_run("0190aaaa1111").unwrap().run_id,
        "0190aaaa1111"
    );
    assert_eq!(
        store.resolve_run("0190aaaa2").unwrap().run_id,
        "0190aaaa2222"
    );
    assert_eq!(store.resolve_run("0190b").unwrap().run_id, "0190bbbb3333");
    match store.resolve_run("0190aaaa") {
        Err(StoreError::AmbiguousRun { candidates, .. }) => {
            assert_eq!(candidates, ["0190aaaa2222", "0190aaaa1111"]);
        }
        other => panic!("{other:?}"),
    }
    let err = store.resolve_run("ffff").unwrap_err();
    assert!(err.is_bad_run());
    assert!(err.to_string().contains("coordinator runs"), "{err}");
    // LIKE wildcards match only themselves.
    assert!(matches!(
        store.resolve_run("%"),
        Err(StoreError::UnknownRun(_))
    ));
    assert!(matches!(
        store.resolve_run(""),
        Err(StoreError::UnknownRun(_))
    ));
}

#[test]
fn cancel_and_driver_are_shared_between_connections() {
    let (_dir, home) = temp_home();
    let mut driver = Store::open(&home).unwrap();
    driver.create_run(&new_run("r1", 0)).unwrap();
    let other = Store::open(&home).unwrap();
    assert!(!driver.cancel_requested("r1").unwrap());
    other.request_cancel("r1").unwrap();
    assert!(driver.cancel_requested("r1").unwrap());
    let elsewhere = Driver {
        id: "other-driver".into(),
        pid: 4242,
        host: "elsewhere".into(),
    };
    other
        .take_lease("r1", &elsewhere, true, 0)
        .unwrap()
        .unwrap();
    let run = driver.resolve_run("r1").unwrap();
    assert_eq!(run.driver_pid, Some(4242));
    assert_eq!(run.driver_host.as_deref(), Some("elsewhere"));
    driver.finish_run("r1", "canceled", 1).unwrap();
    assert!(run_is_final(&other.run_status("r1").unwrap()));
    assert!(other.request_cancel("nope").unwrap_err().is_bad_run());
}

#[test]
fn a_driver_on_this_host_is_found_alive_or_gone() {
    let host = this_host();
    assert_eq!(
        driver_liveness(Some(std::process::id()), Some(&host)),
        Liveness::Alive
    );
    assert_eq!(
        driver_liveness(Some(1), Some("another-host.example")),
        Liveness::Unknown
    );
    assert_eq!(driver_liveness(None, Some(&host)), Liveness::Unknown);
    if cfg!(target_os = "linux") {
        // Beyond the default pid_max: no such process.
        assert_eq!(
            driver_liveness(Some(u32::MAX - 1), Some(&host)),
            Liveness::Gone
        );
    }
}

#[test]
fn a_version_1_store_is_upgraded_and_reads_its_logs_back_the_same() {
    let (_dir, home) = temp_home();
    std::fs::create_dir_all(&home).unwrap();
    let path = home.join(DB_FILE);
    let line = |id: i64, run: &str, exec: &str, task: &str, attempt: u32, stream: &str| LogRow {
        id,
        execution_id: exec.into(),
        task: task.into(),
        attempt,
        step: (id % 3) as u32,
        stream: stream.into(),
        line: format!("{run} line {id} ünïcode"),
        ts_ms: 1_000 + id,
    };
    let r1 = vec![
        line(1, "r1", "e1", "load", 1, "stdout"),
        line(3, "r1", "e2", "report", 1, "stderr"),
        line(4, "r1", "e1", "load", 1, "stdout"),
        line(6, "r1", "e3", "load", 2, "stdout"),
        line(7, "r1", "e2", "report", 1, "other"),
    ];
    let r2 = vec![
        line(2, "r2", "e9", "load", 1, "stdout"),
        line(5, "r2", "e9", "load", 1, "stderr"),
    ];
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        let mut rows: Vec<(&str, &LogRow)> = r1.iter().map(|r| ("r1", r)).collect();
        rows.extend(r2.iter().map(|r| ("r2", r)));
        for (run, r) in rows {
            conn.execute(
                "INSERT INTO logs (id, run_id, execution_id, task, attempt, step, stream, line, ts_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![r.id, run, r.execution_id, r.task, r.attempt, r.step, r.stream, r.line, r.ts_ms],
            )
            .unwrap();
        }
    }
    let store = Store::open(&home).unwrap();
    assert_eq!(count(&store, "PRAGMA user_version"), schema_version());
    assert_eq!(store.logs_after("r1", None, 0, 100).unwrap(), r1);
    assert_eq!(store.logs_after("r2", None, 0, 100).unwrap(), r2);
    assert_eq!(store.logs_after("r1", None, 3, 2).unwrap(), r1[2..4]);
    let load: Vec<LogRow> = r1.iter().filter(|r| r.task == "load").cloned().collect();
    assert_eq!(store.logs_after("r1", Some("load"), 0, 100).unwrap(), load);
    assert_eq!(
        store.logs_after("r1", Some("load"), 1, 1).unwrap(),
        load[1..2]
    );
    assert!(store.logs_after("r3", None, 0, 100).unwrap().is_empty());
    assert!(
        store
            .logs_after("r1", Some("nope"), 0, 100)
            .unwrap()
            .is_empty()
    );
    drop(store);

    // New lines continue after the old ones, through the same keys.
    let mut store = Store::open(&home).unwrap();
    store.create_run(&new_run("r1", 0)).unwrap();
    let writer = store.writer().unwrap();
    let mut ev = log("r1", "e1", "new".into());
    if let RunEventKind::Log { at, .. } = &mut ev.kind {
        at.task = "load".into();
    }
    writer.send(ev);
    writer.send(mark("r1", "e1", 1));
    assert_eq!(writer.close().lost_events, 0);
    let after = store.logs_after("r1", Some("load"), 6, 100).unwrap();
    assert_eq!(after.len(), 1);
    assert!(after[0].id > 7 && after[0].line == "new" && after[0].execution_id == "e1");
    assert_eq!(count(&store, "SELECT count(*) FROM log_sources"), 4);
}
