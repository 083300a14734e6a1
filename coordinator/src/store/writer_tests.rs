//! The writer on a store that cannot take more (a full disk): it retries, then says
//! exactly what it could not save, and never records more than it holds.
use std::time::{Duration, Instant};

use super::*;
use crate::events::{At, RunEvent, RunEventKind, TaskOutcome};

const LINES_PER_MARK: u64 = 50;

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        retry_for: Duration::from_millis(300),
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
    }
}

fn at(execution_id: &str, task: &str) -> At {
    At {
        task: task.into(),
        attempt: 1,
        sidecar: "s1".into(),
        execution_id: execution_id.into(),
    }
}

fn event(kind: RunEventKind) -> RunEvent {
    RunEvent::new("r1", 1_000, kind)
}

/// `marks` sequence marks' worth of log lines of `execution_id`, then its end.
fn send_execution(writer: &Writer, execution_id: &str, task: &str, marks: u64) {
    writer.send(event(RunEventKind::TaskPlaced {
        at: at(execution_id, task),
    }));
    let line = "y".repeat(200);
    for seq in 1..=marks {
        for _ in 0..LINES_PER_MARK {
            writer.send(event(RunEventKind::log_line(
                at(execution_id, task),
                1,
                "stdout",
                line.clone(),
            )));
        }
        writer.send(event(RunEventKind::ExecutionSeq {
            at: at(execution_id, task),
            seq,
        }));
    }
    writer.send(event(RunEventKind::TaskFinished {
        task: task.into(),
        attempt: 1,
        sidecar: Some("s1".into()),
        execution_id: Some(execution_id.into()),
        status: TaskOutcome::Succeeded,
        message: String::new(),
        duration_ms: 1,
        will_retry: false,
    }));
}

#[test]
fn a_full_store_loses_whole_executions_tails_says_which_and_keeps_last_seq_true() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .create_run(&NewRun {
            run_id: "r1".into(),
            plan_name: "p".into(),
            plan_path: "plan.toml".into(),
            plan_text: String::new(),
            fleet_path: None,
            started_ms: 0,
            tasks: vec![("small".into(), "j".into()), ("big".into(), "j".into())],
        })
        .unwrap();
    let pages: u64 = store
        .conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    // Room for a batch or two of lines (about 2.4 MB), not for all 4 MB of them.
    let writer = Writer::spawn_capped(store.path(), pages + 600, quick_retries()).unwrap();
    send_execution(&writer, "e-small", "small", 1);
    writer.flush();
    let started = Instant::now();
    send_execution(&writer, "e-big", "big", 400);
    writer.send(event(RunEventKind::RunFinished {
        status: "succeeded",
        exit_code: 0,
        duration_ms: 1,
        summary: Vec::new(),
    }));
    let stats = writer.close();

    // The first failing batch was retried, later ones were not: the run still ended soon.
    assert!(
        started.elapsed() >= quick_retries().retry_for / 2,
        "{stats:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{stats:?}");
    assert!(stats.last_error.is_some(), "{stats:?}");
    assert_eq!(stats.losses.run_events, 0, "{stats:?}");
    assert_eq!(
        stats.losses.executions.keys().collect::<Vec<_>>(),
        ["e-big"],
        "only the big execution lost events: {stats:?}"
    );
    assert_eq!(stats.lost_events, stats.losses.executions["e-big"].events);
    let described = stats.losses.describe();
    assert!(
        described.contains("execution e-big (task big, attempt 1): "),
        "{described}"
    );

    // What is stored stops exactly at the stored last_seq: a watch resumed from there
    // re-imports the rest without a gap or a duplicate.
    let snapshot = store.run_snapshot("r1").unwrap();
    assert_eq!(
        snapshot.run.status, RUN_RUNNING,
        "the run is not recorded as finished"
    );
    let exec = |id: &str| {
        snapshot
            .executions
            .iter()
            .find(|e| e.execution_id == id)
            .unwrap()
            .clone()
    };
    assert!(exec("e-small").finished_ms.is_some());
    let big = exec("e-big");
    assert!(big.finished_ms.is_none(), "{big:?}");
    assert!(big.last_seq > 0 && big.last_seq < 400, "{big:?}");
    let stored_lines: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM logs l JOIN log_sources s ON s.id = l.src
             WHERE s.execution_id = 'e-big'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored_lines as u64, big.last_seq * LINES_PER_MARK);
}
