//! The writer's durability and failure policy, with the events file's syncs observed and
//! its appends made to fail through `test_hooks`.
use std::sync::Arc;

use agentfleet_common::proto::{self, Event, LogStream, event::Kind};
use prost::Message;
use tokio::sync::watch;

use super::test_hooks::Hooks;
use super::*;
use crate::events::EventSink;
use crate::journal::{ExecutionRecord, Journal, Progress, reader};

fn record(id: &str) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: id.into(),
        job: "job-a".into(),
        backend: "command".into(),
        run_id: String::new(),
        task: String::new(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: 1,
        supervised: false,
        started_by: String::new(),
    }
}

/// The sequence number of the last whole event in the first `len` bytes of `path`.
fn last_seq_within(path: &std::path::Path, len: u64) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut buf = &bytes[..len as usize];
    let mut last = 0;
    while !buf.is_empty() {
        last = Event::decode_length_delimited(&mut buf).unwrap().seq;
    }
    last
}

/// Group commit: a log-only batch is fdatasynced before watchers see it, so after a power
/// cut no published sequence number is ever handed out again.
#[tokio::test]
async fn published_progress_never_runs_ahead_of_fdatasync() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (file, progress) = journal.create(&record("g1")).unwrap();
    let hooks = Arc::new(Hooks::default());
    let file = file.with_hooks(hooks.clone());
    let (tx, mut published) = watch::channel(progress);
    let (sink, rx) = EventSink::channel("g1");
    let writer = spawn(file, rx, tx.clone(), "g1".into());
    let path = journal.events_path("g1");

    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;
    published.wait_for(|p| p.started).await.unwrap();
    for i in 0..2000 {
        sink.log(1, LogStream::Stdout, format!("line {i}")).await;
    }
    // Log lines only since Started: whatever of them is published must be synced.
    let seen = published
        .wait_for(|p| p.last_seq > 2)
        .await
        .unwrap()
        .last_seq;
    let synced = last_seq_within(&path, hooks.synced_len());
    assert!(
        synced >= seen,
        "published seq {seen} while only seq {synced} was fdatasynced"
    );

    sink.emit(Kind::Finished(proto::Finished {
        outcome: proto::Outcome::Succeeded as i32,
        message: String::new(),
    }))
    .await;
    writer.await.unwrap();
    let last = tx.borrow().last_seq;
    assert_eq!(last_seq_within(&path, hooks.synced_len()), last);
}

/// Upper bound for any wait in these tests, so a writer that hangs fails the test.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

fn quick_policy() -> RetryPolicy {
    RetryPolicy {
        give_up_after: std::time::Duration::from_millis(200),
        first_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(20),
        finish_for: None,
    }
}

async fn patiently<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A few failed appends are retried: nothing is lost, nothing numbered twice.
#[tokio::test]
async fn a_passing_append_failure_is_retried_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (file, progress) = journal.create(&record("r1")).unwrap();
    let hooks = Arc::new(Hooks::default());
    let (tx, _) = watch::channel(progress);
    let (sink, rx) = EventSink::channel("r1");
    let writer = tokio::spawn(
        Writer::new(file.with_hooks(hooks.clone()), rx, tx.clone(), "r1".into())
            .with_policy(quick_policy())
            .run(),
    );
    hooks.fail_next(3);
    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;
    for i in 0..100 {
        sink.log(1, LogStream::Stdout, format!("line {i}")).await;
    }
    sink.emit(Kind::Finished(proto::Finished {
        outcome: proto::Outcome::Succeeded as i32,
        message: String::new(),
    }))
    .await;
    assert_eq!(
        patiently("the writer", writer).await.unwrap(),
        Ended::Finished
    );
    assert_eq!(hooks.failures(), 3);
    let (events, _) = reader::read_from(&journal.events_path("r1"), 0, usize::MAX).unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let lines: usize = events
        .iter()
        .map(|e| match &e.kind {
            Some(Kind::Logs(l)) => l.lines.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(lines, 100);
    let p = tx.borrow().clone();
    assert_eq!(p.finished.unwrap().outcome, proto::Outcome::Succeeded);
    assert!(p.unwritten_finished.is_none());
}

/// A journal that cannot be written ends the execution: the job's stop token fires, the
/// Finished{FAILED, "journal write failed: …"} event is published (and watched) with the
/// next sequence number before it is on disk, and written with that same number and
/// content once the disk takes it.
#[tokio::test]
async fn a_journal_failing_for_good_stops_the_job_and_ends_the_execution() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (file, progress) = journal.create(&record("f1")).unwrap();
    let hooks = Arc::new(Hooks::default());
    let (tx, mut published) = watch::channel(progress);
    let (sink, rx) = EventSink::channel("f1");
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = tokio::spawn(
        Writer::new(file.with_hooks(hooks.clone()), rx, tx.clone(), "f1".into())
            .stop_on_failure(stop.clone())
            .with_policy(quick_policy())
            .run(),
    );
    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;
    published.wait_for(|p| p.started).await.unwrap();

    // The disk fills up while the job prints; it goes on printing until it is stopped.
    hooks.fail_next(u64::MAX);
    let job = {
        let (sink, stop) = (sink.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.is_cancelled() {
                sink.log(1, LogStream::Stdout, format!("line {i}")).await;
                i += 1;
                tokio::task::yield_now().await;
            }
            sink.emit(Kind::Finished(proto::Finished {
                outcome: proto::Outcome::Canceled as i32,
                message: "stopped".into(),
            }))
            .await;
        })
    };
    drop(sink);
    patiently("the job to be stopped", stop.cancelled()).await;
    patiently("the job", job).await.unwrap();
    let p = patiently(
        "the Finished event",
        published.wait_for(|p| p.finished.is_some()),
    )
    .await
    .unwrap()
    .clone();
    let finish = p.finished.clone().unwrap();
    assert_eq!(finish.outcome, proto::Outcome::Failed);
    assert!(
        finish
            .message
            .starts_with("journal write failed: No space left on device (os error 28); "),
        "{}",
        finish.message
    );
    assert_eq!(p.last_seq, 2, "on disk: Accepted, Started");
    let unwritten = p.unwritten_finished.clone().expect("published from memory");
    assert_eq!(unwritten.seq, 3);

    // Watchers get it now, from memory...
    let from_memory = collect(&journal, "f1", 0, &tx).await;
    assert_eq!(
        from_memory.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(from_memory[2], unwritten);

    // ...and the disk gets the very same event once it takes writes again.
    hooks.fail_next(0);
    assert_eq!(
        patiently("the writer", writer).await.unwrap(),
        Ended::Finished
    );
    let p = tx.borrow().clone();
    assert_eq!((p.last_seq, p.unwritten_finished.is_none()), (3, true));
    let (on_disk, _) = reader::read_from(&journal.events_path("f1"), 0, usize::MAX).unwrap();
    assert_eq!(on_disk, from_memory);
}

async fn collect(
    journal: &Journal,
    id: &str,
    after: u64,
    progress: &watch::Sender<Progress>,
) -> Vec<Event> {
    use futures::StreamExt;
    let stream = crate::journal::reader::watch(
        journal.events_path(id),
        after,
        progress.subscribe(),
        tokio_util::sync::CancellationToken::new(),
    );
    patiently("the watch", stream.map(|e| e.unwrap()).collect()).await
}
