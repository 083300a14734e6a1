use std::sync::Arc;

use agentfleet_common::proto::{self, ExecutionState, Outcome};
use futures::StreamExt;
use tokio::sync::watch;

use super::fake_backend::{BROKEN_JOB, FakeBackend};
use super::*;

fn id(label: &str) -> String {
    agentfleet_common::ids::execution_id_from_label(label)
}

async fn registry(dir: &std::path::Path, slots: u32) -> (Registry, Arc<FakeBackend>) {
    let backend = Arc::new(FakeBackend::new(&["a", "b", "c", BROKEN_JOB]));
    let reg = Registry::open(
        "test",
        slots,
        dir,
        vec![backend.clone() as Arc<dyn Backend>],
    )
    .await
    .unwrap();
    (reg, backend)
}

fn req(execution_id: String, job: &str) -> proto::StartJobRequest {
    proto::StartJobRequest {
        execution_id,
        job: job.into(),
        ..Default::default()
    }
}

fn progress(reg: &Registry, id: &str) -> watch::Receiver<Progress> {
    reg.entry(id).unwrap().progress.subscribe()
}

async fn wait_finished(reg: &Registry, id: &str) {
    let mut rx = progress(reg, id);
    rx.wait_for(|p| p.finished.is_some()).await.unwrap();
}

#[tokio::test]
async fn concurrent_starts_with_one_id_start_once() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, backend) = registry(dir.path(), 4).await;
    let calls = (0..16).map(|_| {
        let reg = reg.clone();
        tokio::spawn(async move { reg.start(req(id("same"), "a"), "tester").await })
    });
    let results: Vec<_> = futures::future::join_all(calls).await;
    let created = results
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|(e, created)| {
            assert_eq!(e.execution_id, id("same"));
            *created
        })
        .count();
    assert_eq!(created, 1);
    assert_eq!(backend.starts(), 1);
    assert_eq!(reg.list(false).len(), 1);
}

#[tokio::test]
async fn who_started_an_execution_is_kept_and_a_repeat_does_not_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    let (first, _) = reg.start(req(id("b1"), "a"), "coordinator").await.unwrap();
    assert_eq!(first.started_by, "coordinator");
    let (again, created) = reg.start(req(id("b1"), "a"), "other").await.unwrap();
    assert!(!created);
    assert_eq!(again.started_by, "coordinator");
    assert_eq!(reg.list(false)[0].started_by, "coordinator");
}

#[tokio::test]
async fn repeated_id_for_other_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req(id("x1"), "a"), "tester").await.unwrap();
    let err = reg.start(req(id("x1"), "b"), "tester").await.unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("already exists for job `a`"));
    let bad = tonic::Status::from(
        reg.start(req("../x".into(), "a"), "tester")
            .await
            .unwrap_err(),
    );
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn only_canonical_lower_case_ids_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, backend) = registry(dir.path(), 4).await;
    let upper = id("c1").to_uppercase().replace('0', "A");
    for bad in ["e1".to_owned(), upper, format!("{}-", id("c1"))] {
        let status = tonic::Status::from(
            reg.start(req(bad.clone(), "a"), "tester")
                .await
                .unwrap_err(),
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            status.message().contains("lower-case UUID"),
            "{}",
            status.message()
        );
    }
    let s = id("hyphenated");
    let hyphenated = format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    );
    let (_, created) = reg.start(req(hyphenated, "a"), "tester").await.unwrap();
    assert!(created);
    assert_eq!(backend.starts(), 1, "only the canonical id started");
}

#[tokio::test]
async fn resume_only_never_creates_an_execution() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, backend) = registry(dir.path(), 4).await;
    let resume = |label: &str, job: &str| proto::StartJobRequest {
        resume_only: true,
        ..req(id(label), job)
    };
    let status = tonic::Status::from(reg.start(resume("n1", "a"), "tester").await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("no record of execution")
            && status.message().contains("it was not started"),
        "{}",
        status.message()
    );
    assert_eq!(backend.starts(), 0, "the job was started");
    assert!(reg.list(false).is_empty(), "an execution was created");
    assert!(
        !dir.path().join("executions").join(id("n1")).exists(),
        "a journal directory was created"
    );

    // A known execution is followed like any repeated StartJob.
    reg.start(req(id("n2"), "a"), "tester").await.unwrap();
    let (existing, created) = reg.start(resume("n2", "a"), "tester").await.unwrap();
    assert!(!created);
    assert_eq!(existing.execution_id, id("n2"));
    assert_eq!(backend.starts(), 1);
}

/// A backend slow to say which jobs it offers (a SQL Server taking its time) delays only
/// the starts of its own jobs: another backend's job starts meanwhile.
#[tokio::test]
async fn a_slow_backend_does_not_hold_up_other_starts() {
    let dir = tempfile::tempdir().unwrap();
    let fast = Arc::new(FakeBackend::new(&["quick"]));
    let mut slow = FakeBackend::new(&["slow"]);
    let gate = CancellationToken::new();
    slow.names_gate = Some(gate.clone());
    let slow = Arc::new(slow);
    let reg = Registry::open(
        "test",
        4,
        dir.path(),
        vec![
            fast.clone() as Arc<dyn Backend>,
            slow.clone() as Arc<dyn Backend>,
        ],
    )
    .await
    .unwrap();
    let blocked = {
        let reg = reg.clone();
        tokio::spawn(async move { reg.start(req(id("s"), "slow"), "tester").await })
    };
    // Until the slow start is inside its job lookup.
    tokio::time::timeout(Duration::from_secs(5), async {
        while slow.names_waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the slow start never asked its backend for its jobs");
    let quick = tokio::time::timeout(
        Duration::from_secs(5),
        reg.start(req(id("q"), "quick"), "tester"),
    )
    .await
    .expect("a command-job start waited for a slow backend's lookup");
    assert!(quick.unwrap().1);
    assert!(!blocked.is_finished());
    gate.cancel();
    assert!(blocked.await.unwrap().unwrap().1);
    assert_eq!((fast.starts(), slow.starts()), (1, 1));
}

#[tokio::test]
async fn unknown_job_lists_offered_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    let status = tonic::Status::from(reg.start(req(id("u1"), "zzz"), "tester").await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(
        status.message().contains("a, b, broken, c"),
        "{}",
        status.message()
    );
    assert!(
        reg.list(false).is_empty(),
        "nothing is journaled for a refused start"
    );
}

#[tokio::test]
async fn slots_and_same_job_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, backend) = registry(dir.path(), 2).await;
    reg.start(req(id("s1"), "a"), "tester").await.unwrap();
    let same = tonic::Status::from(reg.start(req(id("s2"), "a"), "tester").await.unwrap_err());
    assert_eq!(same.code(), tonic::Code::Aborted);
    reg.start(req(id("s3"), "b"), "tester").await.unwrap();
    let full = tonic::Status::from(reg.start(req(id("s4"), "c"), "tester").await.unwrap_err());
    assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    let d = reg.describe();
    assert_eq!((d.slots, d.running), (2, 2));
    assert_eq!(d.running_jobs, vec!["a", "b"]);

    // The Finished event frees the slot.
    backend.release.cancel();
    wait_finished(&reg, &id("s1")).await;
    wait_finished(&reg, &id("s3")).await;
    assert_eq!(reg.describe().running, 0);
    let (_, created) = reg.start(req(id("s5"), "a"), "tester").await.unwrap();
    assert!(created);
    wait_finished(&reg, &id("s5")).await;
    assert_eq!(
        reg.get(&id("s5")).unwrap().outcome,
        Outcome::Succeeded as i32
    );
}

#[tokio::test]
async fn failed_start_is_journaled_and_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 1).await;
    let status = tonic::Status::from(
        reg.start(req(id("f1"), BROKEN_JOB), "tester")
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code(), tonic::Code::Internal);
    let e = reg.get(&id("f1")).unwrap();
    assert_eq!(e.state, ExecutionState::Finished as i32);
    assert_eq!(e.outcome, Outcome::Failed as i32);
    assert!(e.message.contains("does not exist"));
    // A retry with the same id returns the failed execution, not a second start.
    let (again, created) = reg
        .start(req(id("f1"), BROKEN_JOB), "tester")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.outcome, Outcome::Failed as i32);
    // The single slot is free again.
    reg.start(req(id("f2"), "a"), "tester").await.unwrap();
}

#[tokio::test]
async fn stop_is_idempotent_and_watch_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req(id("w1"), "a"), "tester").await.unwrap();
    let stream = reg.watch(&id("w1"), 0).unwrap();
    reg.stop(&id("w1"), "test", "tester").await.unwrap();
    reg.stop(&id("w1"), "test again", "tester").await.unwrap();
    let events: Vec<proto::Event> = stream.map(|e| e.unwrap()).collect().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "Accepted, Started, Logs, Finished");
    // A watcher may read Finished from the file a moment before the writer publishes it.
    wait_finished(&reg, &id("w1")).await;
    let finished = reg
        .stop(&id("w1"), "after the end", "tester")
        .await
        .unwrap();
    assert_eq!(finished.outcome, Outcome::Canceled as i32);
    // Who asked first, and why, is in the Finished message (the repeat changes nothing).
    assert!(
        finished.message.ends_with("(stop: test (asked by tester))"),
        "{finished:?}"
    );
    assert_eq!(finished.last_seq, 4);
    let missing = tonic::Status::from(reg.stop(&id("nope"), "", "tester").await.unwrap_err());
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(reg.watch(&id("nope"), 0).is_err());
}

#[tokio::test]
async fn restart_reports_running_executions_lost_and_ack_prunes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (reg, _) = registry(dir.path(), 4).await;
        reg.start(req(id("r1"), "a"), "tester").await.unwrap();
        reg.stop(&id("r1"), "test", "tester").await.unwrap();
        wait_finished(&reg, &id("r1")).await;
        reg.start(req(id("r2"), "b"), "tester").await.unwrap();
        // Wait for Started on disk, then "crash": nothing more is written.
        progress(&reg, &id("r2"))
            .wait_for(|p| p.started)
            .await
            .unwrap();
    }
    let (reg, _) = registry(dir.path(), 4).await;
    let r1 = reg.get(&id("r1")).unwrap();
    assert_eq!(r1.outcome, Outcome::Canceled as i32);
    let r2 = reg.get(&id("r2")).unwrap();
    assert_eq!(r2.outcome, Outcome::Lost as i32);
    assert!(r2.message.contains("restarted"));
    assert!(reg.list(true).is_empty());

    // Watching a recovered execution replays it and ends.
    let events: Vec<_> = reg.watch(&id("r2"), 0).unwrap().collect().await;
    assert!(matches!(
        events.last().unwrap().as_ref().unwrap().kind,
        Some(proto::event::Kind::Finished(_))
    ));

    assert_eq!(reg.ack(&[id("r1"), id("unknown")]).await.unwrap(), 1);
    assert!(reg.get(&id("r1")).is_none());
    // r2 was closed as LOST just now: let the clock pass its Finished time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(reg.prune(Duration::ZERO).await.unwrap(), 1);
    assert!(reg.list(false).is_empty());
}

#[tokio::test]
async fn a_resumable_execution_is_handed_over_and_continues_its_journal() {
    let dir = tempfile::tempdir().unwrap();
    let open = |backend: Arc<FakeBackend>| {
        let dir = dir.path().to_owned();
        async move {
            Registry::open("test", 2, &dir, vec![backend as Arc<dyn Backend>])
                .await
                .unwrap()
        }
    };
    let mut first = FakeBackend::new(&["a"]);
    first.resumable = true;
    let reg = open(Arc::new(first)).await;
    reg.start(req(id("h1"), "a"), "tester").await.unwrap();
    progress(&reg, &id("h1"))
        .wait_for(|p| p.last_seq == 3)
        .await
        .unwrap();
    // A graceful stop hands the execution over: no Finished is journaled.
    reg.shutdown(Duration::from_secs(1)).await;
    assert!(reg.get(&id("h1")).unwrap().state != ExecutionState::Finished as i32);

    let mut second = FakeBackend::new(&["a"]);
    second.resumable = true;
    let second = Arc::new(second);
    let reg = open(second.clone()).await;
    assert_eq!(
        reg.describe().running,
        1,
        "the resumed execution holds a slot"
    );
    let stream = reg.watch(&id("h1"), 0).unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while second.starts() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the backend is asked to start (re-attach) the execution again");
    second.release.cancel();
    let events: Vec<proto::Event> = stream.map(|e| e.unwrap()).collect().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "{events:?}");
    let started = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Started(_))))
        .count();
    assert_eq!(started, 1, "the repeated Started is dropped: {events:?}");
    // The stream reads the file, which may be ahead of the registry's view by a moment.
    wait_finished(&reg, &id("h1")).await;
    assert_eq!(
        reg.get(&id("h1")).unwrap().outcome,
        Outcome::Succeeded as i32
    );
}

#[tokio::test]
async fn shutdown_stops_running_work_and_refuses_new() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req(id("d1"), "a"), "tester").await.unwrap();
    reg.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        reg.get(&id("d1")).unwrap().outcome,
        Outcome::Canceled as i32
    );
    let status = tonic::Status::from(reg.start(req(id("d2"), "b"), "tester").await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn concurrent_starts_never_take_more_than_the_slots_or_run_a_job_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, backend) = registry(dir.path(), 2).await;
    // Journals are written outside the start lock: admission must still count the starts
    // whose journal is being written.
    let calls = ["a", "a", "b", "c", "b", "c"]
        .into_iter()
        .enumerate()
        .map(|(i, job)| {
            let reg = reg.clone();
            tokio::spawn(async move { reg.start(req(id(&format!("c{i}")), job), "tester").await })
        });
    let results: Vec<_> = futures::future::join_all(calls).await;
    let started = results
        .into_iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(started, 2, "exactly the two slots are used");
    let d = reg.describe();
    assert_eq!(d.running, 2);
    assert_ne!(d.running_jobs[0], d.running_jobs[1], "{:?}", d.running_jobs);
    assert_eq!(backend.starts(), 2);
}
