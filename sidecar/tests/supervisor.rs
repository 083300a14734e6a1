//! Command jobs under supervisor processes (the real `sidecar supervise` binary), driven
//! through the execution registry in this process: the job survives a crash of the
//! registry, a new registry on the same state_dir re-attaches, stops and counts it.
#![cfg(unix)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, Outcome, event::Kind};
use agentfleet_sidecar::backend::Backend;
use agentfleet_sidecar::backend::command::{CommandBackend, JobConfig};
use agentfleet_sidecar::executions::{Registry, Settings};
use agentfleet_sidecar::journal::{ExecutionRecord, Journal};
use agentfleet_sidecar::supervisor::SupervisorCommand;
use futures::StreamExt;

/// Upper bound for any one wait, so a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);
const LINES: u32 = 20;

/// `count`: prints LINES numbered lines over ~2 s and appends one line per run to `runs`.
/// `sleepy`: runs until stopped. `chatty`: prints an 8000-byte line every 10 ms (more
/// than a page: on a full disk each append fails) until stopped, and a line per line
/// printed to `ticks` (outside the state directory).
fn jobs(dir: &Path) -> Vec<JobConfig> {
    let runs = dir.join("runs");
    let toml = format!(
        r#"
[[job]]
name = "count"
[[job.step]]
name = "count"
run = ["sh", "-c", "echo run >> '{runs}'; i=1; while [ $i -le {LINES} ]; do echo line-$i; i=$((i+1)); sleep 0.1; done"]

[[job]]
name = "sleepy"
[[job.step]]
name = "sleep"
run = ["sleep", "600"]

[[job]]
name = "chatty"
[[job.step]]
name = "talk"
run = ["sh", "-c", "while true; do printf '%8000s\\n' chatty-line; echo t >> '{ticks}'; sleep 0.01; done"]

[[job]]
name = "quick"
[[job.step]]
name = "say"
run = ["sh", "-c", "echo hello; echo oops >&2"]
"#,
        runs = runs.display(),
        ticks = dir.join("ticks").display()
    );
    #[derive(serde::Deserialize)]
    struct File {
        job: Vec<JobConfig>,
    }
    toml::from_str::<File>(&toml).unwrap().job
}

async fn open(state: &Path, slots: u32) -> Registry {
    let backend: Arc<dyn Backend> = Arc::new(CommandBackend::new(
        jobs(state.parent().unwrap()),
        Duration::from_millis(500),
    ));
    let settings = Settings {
        name: "test".into(),
        slots,
        state_dir: state.to_owned(),
        supervisor: SupervisorCommand::of(env!("CARGO_BIN_EXE_sidecar")),
    };
    Registry::open_with(settings, vec![backend]).await.unwrap()
}

fn id(label: &str) -> String {
    agentfleet_common::ids::execution_id_from_label(label)
}

fn req(id: &str, job: &str) -> proto::StartJobRequest {
    proto::StartJobRequest {
        execution_id: id.into(),
        job: job.into(),
        ..Default::default()
    }
}

async fn watch_all(reg: &Registry, id: &str) -> Vec<proto::Event> {
    let stream = reg.watch(id, 0).unwrap();
    tokio::time::timeout(PATIENCE, stream.map(|e| e.unwrap()).collect())
        .await
        .expect("the execution ends")
}

fn lines(events: &[proto::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Logs(l)) => Some(l.lines.iter().map(|l| l.line.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_command_job_runs_in_its_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let reg = open(&state, 2).await;
    let (execution, created) = reg.start(req(&id("q1"), "quick"), "tester").await.unwrap();
    assert!(created);
    assert!(execution.state >= proto::ExecutionState::Running as i32);
    let events = watch_all(&reg, &id("q1")).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let got = lines(&events);
    assert!(got.contains(&"hello".to_owned()) && got.contains(&"oops".to_owned()));
    let Some(Kind::Finished(f)) = &events.last().unwrap().kind else {
        panic!("ends with Finished: {events:?}")
    };
    assert_eq!(f.outcome, Outcome::Succeeded as i32, "{events:?}");
    assert!(
        state
            .join("executions")
            .join(id("q1"))
            .join("supervisor.log")
            .is_file()
    );
}

#[test]
fn the_job_survives_a_crash_of_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // The "crash": the registry's runtime goes away with every task in it (writers,
    // followers), while the supervisor process goes on.
    let first = runtime();
    first.block_on(async {
        let reg = open(&state, 1).await;
        reg.start(req(&id("c1"), "count"), "tester").await.unwrap();
        let mut progress = Box::pin(reg.watch(&id("c1"), 0).unwrap());
        // Wait for a few lines, so the crash happens mid-job.
        let mut seen = 0;
        while let Some(e) = progress.next().await {
            seen += lines(std::slice::from_ref(&e.unwrap())).len();
            if seen >= 3 {
                break;
            }
        }
    });
    first.shutdown_background();

    let second = runtime();
    second.block_on(async {
        let reg = open(&state, 1).await;
        let d = reg.describe();
        assert_eq!(d.running, 1, "re-attached and counted: {d:?}");
        let events = watch_all(&reg, &id("c1")).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let expected: Vec<String> = (1..=LINES).map(|i| format!("line-{i}")).collect();
        assert_eq!(lines(&events), expected, "every line exactly once");
        let e = reg.get(&id("c1")).unwrap();
        assert_eq!(e.outcome, Outcome::Succeeded as i32, "{e:?}");
        assert_eq!(reg.describe().running, 0);
    });
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 1, "the job ran once");
}

#[test]
fn a_reattached_execution_holds_its_slot_and_stops_through_the_stop_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = runtime();
    first.block_on(async {
        let reg = open(&state, 1).await;
        reg.start(req(&id("s1"), "sleepy"), "tester").await.unwrap();
    });
    first.shutdown_background();

    runtime().block_on(async {
        let reg = open(&state, 1).await;
        assert_eq!(reg.describe().running_jobs, vec!["sleepy"]);
        let busy = tonic::Status::from(
            reg.start(req(&id("s2"), "quick"), "tester")
                .await
                .unwrap_err(),
        );
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
        let same = tonic::Status::from(
            reg.start(req(&id("s3"), "sleepy"), "tester")
                .await
                .unwrap_err(),
        );
        assert!(
            matches!(
                same.code(),
                tonic::Code::Aborted | tonic::Code::ResourceExhausted
            ),
            "{same:?}"
        );
        // A repeated StartJob with the same id returns the running execution.
        let (again, created) = reg.start(req(&id("s1"), "sleepy"), "tester").await.unwrap();
        assert!(!created);
        assert_eq!(again.state, proto::ExecutionState::Running as i32);

        reg.stop(&id("s1"), "test", "tester").await.unwrap();
        assert!(
            state
                .join("executions")
                .join(id("s1"))
                .join("stop")
                .is_file()
        );
        let events = watch_all(&reg, &id("s1")).await;
        let Some(Kind::Finished(f)) = &events.last().unwrap().kind else {
            panic!("ends with Finished: {events:?}")
        };
        assert_eq!(f.outcome, Outcome::Canceled as i32, "{events:?}");
        assert_eq!(reg.describe().running, 0);
    });
}

#[tokio::test]
async fn no_supervisor_and_no_started_is_lost_and_never_started_late() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // What a sidecar killed between writing the record and spawning the supervisor leaves.
    let journal = Journal::open(&state).unwrap();
    let record = ExecutionRecord {
        execution_id: id("l1"),
        job: "count".into(),
        backend: "command".into(),
        run_id: String::new(),
        task: String::new(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: 1,
        supervised: true,
        started_by: String::new(),
    };
    journal.create(&record).unwrap();

    let reg = open(&state, 1).await;
    let e = reg.get(&id("l1")).unwrap();
    assert_eq!(e.outcome, Outcome::Lost as i32, "{e:?}");
    assert!(e.message.contains("it was not started"), "{e:?}");
    // A supervisor started now (late) finds Finished and does not run the job.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .arg("supervise")
        .arg("--execution-dir")
        .arg(journal.dir(&id("l1")))
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!dir.path().join("runs").exists(), "the job never ran");
    let (again, created) = reg.start(req(&id("l1"), "count"), "tester").await.unwrap();
    assert!(!created);
    assert_eq!(again.outcome, Outcome::Lost as i32);
}

/// A tmpfs mounted on a directory for one test; unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("could not run `mount`: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system of `dir` until it refuses more bytes.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![b'x'; 4096];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
    path
}

/// On a full disk StopJob still stops a supervised job (the stop file is created empty
/// when the reason cannot be written); the journal cannot take the job's output, so the
/// execution ends FAILED ("journal write failed"), and once there is space the journal
/// holds the very Finished event that watchers got (written by the supervisor when the
/// small event fits the space its cut-back batch left, else by the sidecar).
#[tokio::test]
async fn a_full_disk_neither_blocks_stop_nor_hides_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let _tmpfs = match Tmpfs::mount(&state, "1m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("skipped: cannot mount tmpfs ({why})");
            return;
        }
    };
    let reg = open(&state, 1).await;
    reg.start(req(&id("f1"), "chatty"), "tester").await.unwrap();
    // Full, but for the slack in pages already allocated, which no 8000-byte line fits.
    let filler = fill(&state);
    // Stop only once the job printed lines the full disk refused: the sidecar tells the
    // supervisor of a stop at once, which could otherwise come before the next line.
    let ticks_path = dir.path().join("ticks");
    let ticks = || std::fs::read(&ticks_path).map_or(0, |t| t.len());
    let before = ticks();
    tokio::time::timeout(PATIENCE, async {
        while ticks() < before + 2 * 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the job goes on printing on a full disk");

    reg.stop(&id("f1"), "test", "tester")
        .await
        .expect("StopJob works on a full disk");
    let events = watch_all(&reg, &id("f1")).await;
    let Some(Kind::Finished(f)) = &events.last().unwrap().kind else {
        panic!("ends with Finished: {events:?}")
    };
    assert_eq!(f.outcome, Outcome::Failed as i32, "{events:?}");
    assert!(f.message.starts_with("journal write failed: "), "{f:?}");
    let last = events.last().unwrap().clone();
    assert_eq!(reg.describe().running, 0, "the slot is free");

    // Space again: the sidecar writes the event watchers already got, with its seq.
    std::fs::remove_file(filler).unwrap();
    // ListExecutions already counts it (watchers got it); the file gets it once there is room.
    assert_eq!(reg.get(&id("f1")).unwrap().last_seq, last.seq);
    let path = state.join("executions").join(id("f1")).join("events.pb");
    let on_disk = tokio::time::timeout(PATIENCE, async {
        loop {
            let (events, _) =
                agentfleet_sidecar::journal::reader::read_from(&path, 0, usize::MAX).unwrap();
            if events.last().is_some_and(|e| e.seq >= last.seq) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the Finished event reaches the disk");
    assert_eq!(on_disk.last(), Some(&last));
}
