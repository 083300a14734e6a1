use std::sync::Arc;

use agentfleet_common::proto::{self, ExecutionState, Outcome};
use futures::StreamExt;
use tokio::sync::watch;

use super::fake_backend::{BROKEN_JOB, FakeBackend};
use super::*;

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

fn req(id: &str, job: &str) -> proto::StartJobRequest {
    proto::StartJobRequest {
        execution_id: id.into(),
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
        tokio::spawn(async move { reg.start(req("same", "a")).await })
    });
    let results: Vec<_> = futures::future::join_all(calls).await;
    let created = results
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .filter(|(e, created)| {
            assert_eq!(e.execution_id, "same");
            *created
        })
        .count();
    assert_eq!(created, 1);
    assert_eq!(backend.starts(), 1);
    assert_eq!(reg.list(false).len(), 1);
}

#[tokio::test]
async fn repeated_id_for_other_job_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req("x1", "a")).await.unwrap();
    let err = reg.start(req("x1", "b")).await.unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("already exists for job `a`"));
    let bad = tonic::Status::from(reg.start(req("../x", "a")).await.unwrap_err());
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn unknown_job_lists_offered_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    let status = tonic::Status::from(reg.start(req("u1", "zzz")).await.unwrap_err());
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
    reg.start(req("s1", "a")).await.unwrap();
    let same = tonic::Status::from(reg.start(req("s2", "a")).await.unwrap_err());
    assert_eq!(same.code(), tonic::Code::Aborted);
    reg.start(req("s3", "b")).await.unwrap();
    let full = tonic::Status::from(reg.start(req("s4", "c")).await.unwrap_err());
    assert_eq!(full.code(), tonic::Code::ResourceExhausted);
    let d = reg.describe();
    assert_eq!((d.slots, d.running), (2, 2));
    assert_eq!(d.running_jobs, vec!["a", "b"]);

    // The Finished event frees the slot.
    backend.release.cancel();
    wait_finished(&reg, "s1").await;
    wait_finished(&reg, "s3").await;
    assert_eq!(reg.describe().running, 0);
    let (_, created) = reg.start(req("s5", "a")).await.unwrap();
    assert!(created);
    wait_finished(&reg, "s5").await;
    assert_eq!(reg.get("s5").unwrap().outcome, Outcome::Succeeded as i32);
}

#[tokio::test]
async fn failed_start_is_journaled_and_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 1).await;
    let status = tonic::Status::from(reg.start(req("f1", BROKEN_JOB)).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::Internal);
    let e = reg.get("f1").unwrap();
    assert_eq!(e.state, ExecutionState::Finished as i32);
    assert_eq!(e.outcome, Outcome::Failed as i32);
    assert!(e.message.contains("does not exist"));
    // A retry with the same id returns the failed execution, not a second start.
    let (again, created) = reg.start(req("f1", BROKEN_JOB)).await.unwrap();
    assert!(!created);
    assert_eq!(again.outcome, Outcome::Failed as i32);
    // The single slot is free again.
    reg.start(req("f2", "a")).await.unwrap();
}

#[tokio::test]
async fn stop_is_idempotent_and_watch_sees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req("w1", "a")).await.unwrap();
    let stream = reg.watch("w1", 0).unwrap();
    reg.stop("w1", "test").await.unwrap();
    reg.stop("w1", "test again").await.unwrap();
    let events: Vec<proto::Event> = stream.map(|e| e.unwrap()).collect().await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4], "Accepted, Started, Logs, Finished");
    // A watcher may read Finished from the file a moment before the writer publishes it.
    wait_finished(&reg, "w1").await;
    let finished = reg.stop("w1", "after the end").await.unwrap();
    assert_eq!(finished.outcome, Outcome::Canceled as i32);
    assert_eq!(finished.last_seq, 4);
    let missing = tonic::Status::from(reg.stop("nope", "").await.unwrap_err());
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(reg.watch("nope", 0).is_err());
}

#[tokio::test]
async fn restart_reports_running_executions_lost_and_ack_prunes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (reg, _) = registry(dir.path(), 4).await;
        reg.start(req("r1", "a")).await.unwrap();
        reg.stop("r1", "test").await.unwrap();
        wait_finished(&reg, "r1").await;
        reg.start(req("r2", "b")).await.unwrap();
        // Wait for Started on disk, then "crash": nothing more is written.
        progress(&reg, "r2").wait_for(|p| p.started).await.unwrap();
    }
    let (reg, _) = registry(dir.path(), 4).await;
    let r1 = reg.get("r1").unwrap();
    assert_eq!(r1.outcome, Outcome::Canceled as i32);
    let r2 = reg.get("r2").unwrap();
    assert_eq!(r2.outcome, Outcome::Lost as i32);
    assert!(r2.message.contains("restarted"));
    assert!(reg.list(true).is_empty());

    // Watching a recovered execution replays it and ends.
    let events: Vec<_> = reg.watch("r2", 0).unwrap().collect().await;
    assert!(matches!(
        events.last().unwrap().as_ref().unwrap().kind,
        Some(proto::event::Kind::Finished(_))
    ));

    assert_eq!(reg.ack(&["r1".into(), "unknown".into()]).await.unwrap(), 1);
    assert!(reg.get("r1").is_none());
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
    reg.start(req("h1", "a")).await.unwrap();
    progress(&reg, "h1")
        .wait_for(|p| p.last_seq == 3)
        .await
        .unwrap();
    // A graceful stop hands the execution over: no Finished is journaled.
    reg.shutdown(Duration::from_secs(1)).await;
    assert!(reg.get("h1").unwrap().state != ExecutionState::Finished as i32);

    let mut second = FakeBackend::new(&["a"]);
    second.resumable = true;
    let second = Arc::new(second);
    let reg = open(second.clone()).await;
    assert_eq!(
        reg.describe().running,
        1,
        "the resumed execution holds a slot"
    );
    let stream = reg.watch("h1", 0).unwrap();
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
    wait_finished(&reg, "h1").await;
    assert_eq!(reg.get("h1").unwrap().outcome, Outcome::Succeeded as i32);
}

#[tokio::test]
async fn shutdown_stops_running_work_and_refuses_new() {
    let dir = tempfile::tempdir().unwrap();
    let (reg, _) = registry(dir.path(), 4).await;
    reg.start(req("d1", "a")).await.unwrap();
    reg.shutdown(Duration::from_secs(5)).await;
    assert_eq!(reg.get("d1").unwrap().outcome, Outcome::Canceled as i32);
    let status = tonic::Status::from(reg.start(req("d2", "b")).await.unwrap_err());
    assert_eq!(status.code(), tonic::Code::Unavailable);
}
