//! The follower of a supervised execution when its journal cannot be read.
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto;
use tokio_util::sync::CancellationToken;

use super::Follower;
use crate::executions::Entry;
use crate::journal::{ExecutionRecord, Journal, reader};
use crate::supervisor::{ExecutionLock, STOP_FILE};

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
        supervised: true,
        started_by: String::new(),
    }
}

/// A journal that stays unreadable (a corrupt record) while its supervisor lives: the
/// follower backs off, gives up after a bounded number of reads, asks the supervisor to
/// stop and ends the execution LOST; once the supervisor is gone it writes that same
/// Finished event.
#[tokio::test]
async fn an_unreadable_journal_ends_the_execution_lost_instead_of_polling_forever() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (_file, progress) = journal.create(&record("u1")).unwrap();
    let path = journal.events_path("u1");
    let offset = std::fs::metadata(&path).unwrap().len();
    // A whole record that is not an event: every read from the offset fails.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend([3, 0xff, 0xff, 0xff]);
    std::fs::write(&path, bytes).unwrap();
    let supervisor = ExecutionLock::try_acquire(&journal.dir("u1"))
        .unwrap()
        .unwrap();

    let entry = Arc::new(Entry::new(record("u1"), progress));
    let follower = Follower {
        journal: journal.clone(),
        path: path.clone(),
        entry: entry.clone(),
        offset,
        close_errors: 0,
        close_error: None,
    };
    let stop = CancellationToken::new();
    let run = tokio::spawn(follower.run(None, stop.clone()));
    let mut published = entry.progress.subscribe();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        published.wait_for(|p| p.finished.is_some()),
    )
    .await
    .expect("the follower ends the execution instead of polling forever")
    .unwrap()
    .clone();
    let finish = ended.finished.clone().unwrap();
    assert_eq!(finish.outcome, proto::Outcome::Lost);
    assert!(
        finish.message.contains("cannot be read"),
        "{}",
        finish.message
    );
    assert_eq!(ended.unwritten_finished.as_ref().unwrap().seq, 2);
    assert!(journal.dir("u1").join(STOP_FILE).exists(), "asked to stop");
    assert!(
        !run.is_finished(),
        "waits for the supervisor to write the end"
    );

    drop(supervisor);
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the follower ends once the supervisor is gone")
        .unwrap();
    let p = entry.progress.borrow().clone();
    assert_eq!((p.last_seq, p.unwritten_finished.is_none()), (2, true));
    let (events, _) = reader::read_from(&path, 0, usize::MAX).unwrap();
    assert_eq!(events.len(), 2, "the corrupt record was cut off");
    assert_eq!(
        Some(&events[1]),
        ended.unwritten_finished.as_ref(),
        "the disk holds the event watchers got"
    );
}

/// The supervisor is gone and the disk does not take the Finished event: the follower
/// publishes it from memory (so the execution ends for watchers and frees its slot) and
/// writes that same event once the disk takes it.
#[tokio::test]
async fn a_finished_event_the_disk_refuses_is_published_and_written_later() {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Arc::new(crate::journal::writer::test_hooks::Hooks::default());
    let journal = Journal::open(dir.path()).unwrap().with_hooks(hooks.clone());
    let (_file, progress) = journal.create(&record("n1")).unwrap();
    let path = journal.events_path("n1");
    let offset = std::fs::metadata(&path).unwrap().len();
    hooks.fail_next(u64::MAX);

    let entry = Arc::new(Entry::new(record("n1"), progress));
    let follower = Follower {
        journal: journal.clone(),
        path: path.clone(),
        entry: entry.clone(),
        offset,
        close_errors: 0,
        close_error: None,
    };
    // No child and a free lock: a supervisor that died while the sidecar was away.
    let run = tokio::spawn(follower.run(None, CancellationToken::new()));
    let mut published = entry.progress.subscribe();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        published.wait_for(|p| p.finished.is_some()),
    )
    .await
    .expect("published although the disk refused it")
    .unwrap()
    .clone();
    let finish = ended.finished.clone().unwrap();
    assert_eq!(finish.outcome, proto::Outcome::Lost);
    assert!(
        finish
            .message
            .starts_with("journal write failed: No space left on device (os error 28); the sidecar restarted before the job started"),
        "{}",
        finish.message
    );
    assert_eq!(ended.last_seq, 1);
    let unwritten = ended.unwritten_finished.clone().expect("from memory");
    assert_eq!(unwritten.seq, 2);
    assert!(!entry.running(), "the slot is free");

    hooks.fail_next(0);
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("written once the disk takes it")
        .unwrap();
    let (events, _) = reader::read_from(&path, 0, usize::MAX).unwrap();
    assert_eq!(events.last(), Some(&unwritten));
    let p = entry.progress.borrow().clone();
    assert_eq!((p.last_seq, p.unwritten_finished.is_none()), (2, true));
}

/// The supervisor is gone but the journal cannot be closed (its record no longer reads):
/// after a bounded number of tries the execution ends LOST from memory.
#[tokio::test]
async fn a_journal_that_cannot_be_closed_ends_the_execution_lost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let (_file, progress) = journal.create(&record("c1")).unwrap();
    let path = journal.events_path("c1");
    let offset = std::fs::metadata(&path).unwrap().len();
    std::fs::write(journal.dir("c1").join("execution.json"), b"{").unwrap();

    let entry = Arc::new(Entry::new(record("c1"), progress));
    let follower = Follower {
        journal: journal.clone(),
        path,
        entry: entry.clone(),
        offset,
        close_errors: 0,
        close_error: None,
    };
    let _run = tokio::spawn(follower.run(None, CancellationToken::new()));
    let mut published = entry.progress.subscribe();
    let ended = tokio::time::timeout(
        Duration::from_secs(30),
        published.wait_for(|p| p.finished.is_some()),
    )
    .await
    .expect("ends instead of trying forever")
    .unwrap()
    .clone();
    let finish = ended.finished.unwrap();
    assert_eq!(finish.outcome, proto::Outcome::Lost);
    assert!(
        finish.message.contains("cannot be closed"),
        "{}",
        finish.message
    );
    assert_eq!(ended.unwritten_finished.unwrap().seq, 2);
}
