use std::io::Write;

use agentfleet_common::proto::{self, LogStream, event::Kind};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::EventSink;

fn record(id: &str) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: id.into(),
        job: "job-a".into(),
        backend: "command".into(),
        run_id: "run1".into(),
        task: "t".into(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: 1,
        supervised: false,
        started_by: String::new(),
    }
}

fn finished(outcome: proto::Outcome) -> Kind {
    Kind::Finished(proto::Finished {
        outcome: outcome as i32,
        message: "done".into(),
    })
}

/// Creates an execution, runs its writer, and returns the sink and the progress.
fn start(
    journal: &Journal,
    id: &str,
) -> (
    EventSink,
    watch::Sender<Progress>,
    tokio::task::JoinHandle<()>,
) {
    let (file, progress) = journal.create(&record(id)).unwrap();
    let (tx, _) = watch::channel(progress);
    let (sink, rx) = EventSink::channel(id);
    let handle = writer::spawn(file, rx, tx.clone(), id.into());
    (sink, tx, handle)
}

async fn collect(
    journal: &Journal,
    id: &str,
    after: u64,
    progress: &watch::Sender<Progress>,
) -> Vec<Event> {
    let stream = reader::watch(
        journal.events_path(id),
        after,
        progress.subscribe(),
        CancellationToken::new(),
    );
    stream.map(|e| e.unwrap()).collect().await
}

#[tokio::test]
async fn append_then_replay_numbers_without_gaps_and_coalesces_logs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (sink, progress, writer) = start(&journal, "e1");
    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;
    for i in 0..1000 {
        sink.log(1, LogStream::Stdout, format!("line {i}")).await;
    }
    sink.emit(finished(proto::Outcome::Succeeded)).await;
    writer.await.unwrap();

    let events = collect(&journal, "e1", 0, &progress).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(matches!(events[0].kind, Some(Kind::Accepted(_))));
    assert!(matches!(
        events.last().unwrap().kind,
        Some(Kind::Finished(_))
    ));
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Logs(l)) => Some(l.lines.iter().map(|l| l.line.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[999], "line 999");
    // 1000 lines in events of at most 512 lines: at least 2 events, far fewer than 1000.
    let log_events = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Logs(_))))
        .count();
    assert!((2..=1000).contains(&log_events));
    for e in &events {
        if let Some(Kind::Logs(l)) = &e.kind {
            assert!(l.lines.len() <= writer::MAX_LINES_PER_EVENT);
        }
        assert_eq!(e.execution_id, "e1");
    }
    let p = progress.borrow().clone();
    assert_eq!(p.last_seq, *seqs.last().unwrap());
    assert_eq!(p.finished.unwrap().outcome, proto::Outcome::Succeeded);
}

#[tokio::test]
async fn watch_resumes_after_seq_and_follows_live() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (sink, progress, writer) = start(&journal, "e2");
    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;

    // A watcher from seq 1 waits live for what comes next.
    let mut stream = Box::pin(reader::watch(
        journal.events_path("e2"),
        1,
        progress.subscribe(),
        CancellationToken::new(),
    ));
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.seq, 2);
    assert!(matches!(first.kind, Some(Kind::Started(_))));
    sink.log(1, LogStream::Stderr, "hello".into()).await;
    let logs = stream.next().await.unwrap().unwrap();
    assert_eq!(logs.seq, 3);
    sink.emit(finished(proto::Outcome::Failed)).await;
    let fin = stream.next().await.unwrap().unwrap();
    assert_eq!(fin.seq, 4);
    assert!(
        stream.next().await.is_none(),
        "the stream ends after Finished"
    );
    writer.await.unwrap();

    // Resuming after the last seq gives nothing and ends at once.
    assert!(collect(&journal, "e2", 4, &progress).await.is_empty());
    let tail = collect(&journal, "e2", 2, &progress).await;
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
}

#[tokio::test]
async fn dropped_sink_journals_lost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (sink, progress, writer) = start(&journal, "e3");
    drop(sink);
    writer.await.unwrap();
    let p = progress.borrow().clone();
    assert_eq!(p.last_seq, 2);
    assert_eq!(p.finished.unwrap().outcome, proto::Outcome::Lost);
}

#[tokio::test]
async fn load_cuts_torn_tail_and_marks_unfinished_lost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (sink, _progress, _writer) = start(&journal, "e4");
    sink.emit(Kind::Started(proto::Started { step_count: 2 }))
        .await;
    sink.log(1, LogStream::Stdout, "before the crash".into())
        .await;
    // Wait until the writer has both on disk.
    let mut rx = _progress.subscribe();
    rx.wait_for(|p| p.last_seq == 3).await.unwrap();
    drop(sink);
    _writer.abort();
    let _ = _writer.await;

    // A torn record: a length prefix promising more bytes than follow.
    let path = journal.events_path("e4");
    let good_len = std::fs::metadata(&path).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&[0x40, 1, 2, 3]).unwrap();
    drop(f);

    // Loading only reads: a supervisor may still be writing this journal.
    let loaded = journal.load_all().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].progress.last_seq, 3);
    assert!(loaded[0].progress.finished.is_none());
    assert!(std::fs::metadata(&path).unwrap().len() > good_len);

    let p = journal.close_lost("e4", "the sidecar restarted").unwrap();
    assert_eq!(p.last_seq, 4, "Accepted, Started, Logs, then LOST");
    let fin = p.finished.as_ref().unwrap();
    assert_eq!(fin.outcome, proto::Outcome::Lost);
    assert!(fin.message.contains("restarted"));
    let (events, _) = reader::read_from(&path, 0, usize::MAX).unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );

    // Closing or loading again changes nothing.
    assert_eq!(journal.close_lost("e4", "again").unwrap(), p);
    let again = journal.load_all().unwrap();
    assert_eq!(again[0].progress, p);
}

#[tokio::test]
async fn load_record_without_events_gets_accepted_and_lost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    journal.create(&record("e5")).unwrap();
    std::fs::remove_file(journal.events_path("e5")).unwrap();
    // And a directory without a record is leftover from a crash inside create.
    std::fs::create_dir_all(journal.dir("orphan")).unwrap();
    let loaded = journal.load_all().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].record, record("e5"));
    assert_eq!(loaded[0].progress.last_seq, 0);
    assert_eq!(journal.close_lost("e5", "lost").unwrap().last_seq, 2);
    assert!(!journal.dir("orphan").exists());
    journal.remove("e5").unwrap();
    assert!(journal.load_all().unwrap().is_empty());
}

fn row_group(instance_id: i64, step_id: u32, lines: &[&str]) -> Vec<crate::events::SinkMsg> {
    let mut g: Vec<_> = lines
        .iter()
        .map(|l| {
            crate::events::SinkMsg::log_now(step_id, LogStream::Agent, (*l).into(), instance_id)
        })
        .collect();
    g.push(crate::events::SinkMsg::Event {
        ts_ms: 5,
        kind: Kind::StepFinished(proto::StepFinished {
            step_id,
            attempt: 1,
            status: proto::StepStatus::Succeeded as i32,
            sql_instance_id: instance_id,
            ..Default::default()
        }),
    });
    g
}

/// History rows (SQL Server Agent): the journal records the largest instance id, the
/// reopened journal's `resume_state` says where to continue, and a row at or below it
/// is never journaled again, even when a resumed backend sends it.
#[tokio::test]
async fn history_rows_are_journaled_once_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (sink, progress, writer) = start(&journal, "h1");
    sink.emit(Kind::Started(proto::Started { step_count: 2 }))
        .await;
    sink.group(row_group(10, 1, &["a", "b"])).await;
    drop(sink);
    // The writer journals Finished{LOST} for the dropped sink: cut it off again (the
    // state a kill -9 leaves).
    writer.await.unwrap();
    let all = reader::read_from(&journal.events_path("h1"), 0, usize::MAX)
        .unwrap()
        .0;
    let keep: usize = all[..all.len() - 1]
        .iter()
        .map(|e| prost::length_delimiter_len(e.encoded_len()) + e.encoded_len())
        .sum();
    std::fs::OpenOptions::new()
        .write(true)
        .open(journal.events_path("h1"))
        .unwrap()
        .set_len(keep as u64)
        .unwrap();
    assert_eq!(progress.borrow().last_history_id, 10);

    let (file, p) = journal.reopen("h1").unwrap();
    assert_eq!(p.last_history_id, 10);
    let state = reader::resume_state(&journal.events_path("h1")).unwrap();
    assert_eq!(state.last_history_id, 10);
    assert!(state.started && !state.untagged_results);
    assert_eq!(state.attempts.get(&1), Some(&1));
    assert_eq!(state.open_step, None);

    let (tx, _) = watch::channel(p);
    let (sink, rx) = EventSink::channel("h1");
    let writer = writer::spawn(file, rx, tx.clone(), "h1".into());
    // A resumed backend that went back too far: rows 10 (again) and 12.
    sink.emit(Kind::Started(proto::Started { step_count: 2 }))
        .await;
    let mut g = row_group(10, 1, &["a", "b"]);
    g.extend(row_group(12, 2, &["c", "d"]));
    sink.group(g).await;
    sink.emit(finished(proto::Outcome::Succeeded)).await;
    writer.await.unwrap();
    let events = collect(&journal, "h1", 0, &tx).await;
    let rows: Vec<i64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StepFinished(s)) => Some(s.sql_instance_id),
            _ => None,
        })
        .collect();
    assert_eq!(rows, vec![10, 12]);
    let lines: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Logs(l)) => Some(l.lines.iter().map(|l| l.line.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(lines, vec!["a", "b", "c", "d"]);
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Started(_))))
        .count();
    assert_eq!(started, 1);
    assert_eq!(tx.borrow().last_history_id, 12);
}

/// `create` never reuses a directory, so two executions (or "ABC" and "abc" on a
/// case-insensitive file system) can never share a journal: the existing one is left
/// exactly as it was.
#[test]
fn create_refuses_an_existing_execution_directory() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    journal.create(&record("c1")).unwrap();
    let events_before = std::fs::read(journal.events_path("c1")).unwrap();
    let record_before = journal.record("c1").unwrap();

    let mut other = record("c1");
    other.job = "job-b".into();
    other.accepted_at_ms = 2;
    let err = journal.create(&other).unwrap_err();
    assert!(matches!(err, JournalError::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(journal.record("c1").unwrap(), record_before);
    assert_eq!(
        std::fs::read(journal.events_path("c1")).unwrap(),
        events_before
    );
}

#[test]
fn a_record_keeps_who_started_it_and_older_records_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let mut rec = record("who");
    rec.started_by = "coordinator".into();
    journal.create(&rec).unwrap();
    assert_eq!(journal.record("who").unwrap().started_by, "coordinator");

    // Written before `started_by` existed: loads, with nobody named.
    let old = br#"{"execution_id":"old","job":"job-a","backend":"command","accepted_at_ms":1}"#;
    let loaded: ExecutionRecord = serde_json::from_slice(old).unwrap();
    assert_eq!(loaded.started_by, "");
}

/// A watcher delivers only what the writer published (after its fdatasync): bytes
/// already in the file past that may still be cut back and their seq reused, and the
/// sidecar frees the slot when it takes the Finished event, not when a watcher reads it.
#[tokio::test]
async fn a_watcher_never_runs_ahead_of_what_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (mut file, progress) = journal.create(&record("p1")).unwrap();
    let (tx, _) = watch::channel(progress);
    // Written to the file, not (yet) published: Started and Finished.
    let started = Event {
        execution_id: "p1".into(),
        seq: 2,
        ts_ms: 1,
        kind: Some(Kind::Started(proto::Started { step_count: 1 })),
    };
    let end = finished_event("p1", 3, proto::Outcome::Succeeded, "done");
    file.append(&encode(&[started.clone(), end.clone()]))
        .unwrap();

    let mut stream = Box::pin(reader::watch(
        journal.events_path("p1"),
        0,
        tx.subscribe(),
        CancellationToken::new(),
    ));
    assert_eq!(stream.next().await.unwrap().unwrap().seq, 1, "Accepted");
    let early = tokio::time::timeout(std::time::Duration::from_millis(200), stream.next()).await;
    assert!(
        early.is_err(),
        "delivered before it was published: {early:?}"
    );

    tx.send_modify(|p| p.observe(&started));
    assert_eq!(stream.next().await.unwrap().unwrap(), started);
    tx.send_modify(|p| p.observe(&end));
    assert_eq!(stream.next().await.unwrap().unwrap(), end);
    assert!(stream.next().await.is_none());
}
