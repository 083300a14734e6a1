//! The dispatcher in-process against real sidecars (the sidecar library on 127.0.0.1 port
//! 0, plaintext on loopback; command jobs run under the `coordinator` binary's hidden
//! `supervise` entry, as in the demo). Faster and more direct than the end-to-end suite:
//! outcomes, skips, retries, resuming a run, and a run canceled before it starts.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use agentfleet_coordinator::dispatch::{Dispatcher, PriorExecution, PriorTask, RunOptions};
use agentfleet_coordinator::events::{RunEvent, RunEventKind, TaskOutcome};
use agentfleet_coordinator::{fleet, plan};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Jobs: `ok` succeeds, `bad` fails, `flaky` fails on its first execution in `dir`.
fn jobs(dir: &Path) -> String {
    let marker = dir.join("flaky-ran");
    format!(
        r#"
[[job]]
name = "ok"
[[job.step]]
name = "work"
run = ["sh", "-c", "echo ran >> \"{d}/ran-$AGENTFLEET_JOB-$AGENTFLEET_EXECUTION_ID\""]

[[job]]
name = "bad"
[[job.step]]
name = "work"
run = ["sh", "-c", "echo broken >&2; exit 3"]

[[job]]
name = "flaky"
[[job.step]]
name = "work"
run = ["sh", "-c", "if [ -e \"{m}\" ]; then exit 0; fi; touch \"{m}\"; exit 1"]
"#,
        d = dir.display(),
        m = marker.display()
    )
}

/// Starts `n` in-process sidecars offering `jobs`; returns their endpoints.
async fn sidecars(dir: &Path, n: usize, shutdown: &CancellationToken) -> Vec<String> {
    let mut endpoints = Vec::new();
    for i in 0..n {
        let name = format!("s{i}");
        let text = format!(
            "name = \"{name}\"\nlisten = \"unix:{}\"\nslots = 2\nstate_dir = \"{}\"\ninsecure = true\n{}",
            dir.join(format!("{name}.sock")).display(),
            dir.join(&name).display(),
            jobs(dir)
        );
        let path = dir.join(format!("{name}.toml"));
        let flags = agentfleet_sidecar::config::Flags::default();
        let mut config =
            agentfleet_sidecar::config::from_text(&text, &path, &flags, &|_| None).unwrap();
        config.supervisor = agentfleet_sidecar::supervisor::SupervisorCommand::of(env!(
            "CARGO_BIN_EXE_coordinator"
        ));
        // Insecure mode: a Unix socket, which the coordinator reaches as `unix:PATH`.
        let listener = agentfleet_sidecar::server::bind(&config).await.unwrap();
        endpoints.push(config.listen.clone());
        let backends = agentfleet_sidecar::server::backends(&config).await.unwrap();
        let stop = shutdown.clone();
        let lock =
            agentfleet_sidecar::state_lock::StateDirLock::acquire(&config.state_dir).unwrap();
        tokio::spawn(async move {
            agentfleet_sidecar::server::serve(&config, &lock, backends, listener, stop).await
        });
    }
    endpoints
}

fn plan_text(tasks: &str, endpoints: &[String]) -> String {
    let mut text = format!("[plan]\nname = \"t\"\n{tasks}\n[fleet]\ninsecure = true\n");
    for (i, e) in endpoints.iter().enumerate() {
        text.push_str(&format!("[fleet.sidecars.s{i}]\nendpoint = \"{e}\"\n"));
    }
    text
}

/// Runs the plan to its end; returns each task's outcome and every event.
async fn run(
    text: &str,
    dir: &Path,
    prior: BTreeMap<String, PriorTask>,
    cancel: CancellationToken,
) -> (BTreeMap<String, TaskOutcome>, Vec<RunEvent>, i32) {
    run_with(text, dir, prior, cancel, RunOptions::default()).await
}

/// [`run`] with these options.
async fn run_with(
    text: &str,
    dir: &Path,
    prior: BTreeMap<String, PriorTask>,
    cancel: CancellationToken,
    options: RunOptions,
) -> (BTreeMap<String, TaskOutcome>, Vec<RunEvent>, i32) {
    agentfleet_common::tls::install_crypto_provider();
    let plan = plan::parse(text, &dir.join("plan.toml")).unwrap();
    let sidecars = fleet::connect(plan.fleet.as_ref().unwrap()).unwrap();
    let infos = fleet::probe(&sidecars).await;
    let (tx, mut rx) = mpsc::channel(1024);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push(e);
        }
        events
    });
    let dispatcher = Dispatcher::new(&plan, "r1".into(), sidecars, &infos, tx, options);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        dispatcher.run(CancellationToken::new(), cancel, prior),
    )
    .await
    .expect("the run ends");
    let events = collect.await.unwrap();
    let outcomes = result
        .summary
        .iter()
        .map(|s| (s.task.clone(), s.status))
        .collect();
    (outcomes, events, result.exit_code)
}

fn runs_of(dir: &Path, job: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(&format!("ran-{job}-"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_skips_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 2, &shutdown).await;
    let tasks = r#"
[[task]]
name = "a"
job = "ok"
[[task]]
name = "b"
job = "bad"
after = ["a"]
[[task]]
name = "c"
job = "ok"
after = ["b"]
[[task]]
name = "d"
job = "flaky"
retries = 1
"#;
    let (outcomes, events, code) = run(
        &plan_text(tasks, &endpoints),
        dir.path(),
        BTreeMap::new(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Succeeded);
    assert_eq!(outcomes["b"], TaskOutcome::Failed);
    assert_eq!(
        outcomes["c"],
        TaskOutcome::Skipped,
        "a dependant of a failed task is skipped"
    );
    assert_eq!(outcomes["d"], TaskOutcome::Succeeded, "the retry succeeds");
    assert_eq!(code, 1);
    let d_attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::TaskPlaced { at } if at.task == "d" => Some(at.attempt),
            _ => None,
        })
        .collect();
    assert_eq!(d_attempts, [1, 2], "a retry is a new attempt");
    assert_eq!(runs_of(dir.path(), "ok"), 1, "c never ran");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_does_not_rerun_finished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 1, &shutdown).await;
    let tasks = "[[task]]\nname = \"a\"\njob = \"ok\"\n[[task]]\nname = \"b\"\njob = \"ok\"\nafter = [\"a\"]\n";
    let prior = BTreeMap::from([(
        "a".to_owned(),
        PriorTask {
            outcome: Some(TaskOutcome::Succeeded),
            attempts: 1,
            sidecar: Some("s0".into()),
            ..Default::default()
        },
    )]);
    let (outcomes, events, code) = run(
        &plan_text(tasks, &endpoints),
        dir.path(),
        prior,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(outcomes["a"], TaskOutcome::Succeeded);
    assert_eq!(outcomes["b"], TaskOutcome::Succeeded);
    let placed: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::TaskPlaced { at } => Some(at.task.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(placed, ["b"], "only the unfinished task starts");
    assert_eq!(runs_of(dir.path(), "ok"), 1);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_canceled_before_it_starts_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 1, &shutdown).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (outcomes, _, code) = run(
        &plan_text("[[task]]\nname = \"a\"\njob = \"ok\"\n", &endpoints),
        dir.path(),
        BTreeMap::new(),
        cancel,
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Canceled);
    assert_eq!(code, 1);
    assert_eq!(runs_of(dir.path(), "ok"), 0);
    shutdown.cancel();
}

/// What a coordinator that died between recording a placement and sending its StartJob
/// leaves in the store: task `a` running as `execution_id` on s0, which never heard of it.
fn placed_but_never_started(execution_id: &str) -> BTreeMap<String, PriorTask> {
    BTreeMap::from([(
        "a".to_owned(),
        PriorTask {
            attempts: 1,
            sidecar: Some("s0".into()),
            running: Some(PriorExecution {
                execution_id: execution_id.to_owned(),
                attempt: 1,
                sidecar: "s0".into(),
                last_seq: 0,
            }),
            ..Default::default()
        },
    )])
}

fn finished_of(events: &[RunEvent], task: &str) -> Vec<(TaskOutcome, Option<String>, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            RunEventKind::TaskFinished {
                task: t,
                status,
                execution_id,
                message,
                ..
            } if t == task => Some((*status, execution_id.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_execution_the_sidecar_never_received_is_lost_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 1, &shutdown).await;
    let id = agentfleet_common::ids::new_execution_id();
    let (outcomes, events, code) = run(
        &plan_text("[[task]]\nname = \"a\"\njob = \"ok\"\n", &endpoints),
        dir.path(),
        placed_but_never_started(&id),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Lost);
    assert_eq!(code, 1);
    let finished = finished_of(&events, "a");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].1.as_deref(), Some(id.as_str()));
    assert!(
        finished[0].2.contains("has no record of this execution")
            && finished[0].2.contains("it was not started"),
        "{}",
        finished[0].2
    );
    assert_eq!(
        runs_of(dir.path(), "ok"),
        0,
        "the resumed StartJob started the job"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_resumed_execution_reruns_under_a_new_id_when_the_plan_allows() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 1, &shutdown).await;
    let id = agentfleet_common::ids::new_execution_id();
    let tasks = "[[task]]\nname = \"a\"\njob = \"ok\"\nrerun_if_lost = true\nretries = 1\n";
    let (outcomes, events, code) = run(
        &plan_text(tasks, &endpoints),
        dir.path(),
        placed_but_never_started(&id),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Succeeded);
    assert_eq!(code, 0);
    let finished = finished_of(&events, "a");
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(finished[0].0, TaskOutcome::Lost);
    let rerun = finished[1].1.clone().expect("the rerun's execution id");
    assert_ne!(rerun, id, "a rerun is a new execution");
    assert!(
        !dir.path().join(format!("ran-ok-{id}")).exists(),
        "the lost execution was started"
    );
    assert!(dir.path().join(format!("ran-ok-{rerun}")).exists());
    assert_eq!(runs_of(dir.path(), "ok"), 1);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_run_whose_start_never_arrived_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let endpoints = sidecars(dir.path(), 1, &shutdown).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    // Even a task that may be rerun when lost is not rerun by a cancel.
    let tasks = "[[task]]\nname = \"a\"\njob = \"ok\"\nrerun_if_lost = true\nretries = 1\n";
    let (outcomes, events, code) = run(
        &plan_text(tasks, &endpoints),
        dir.path(),
        placed_but_never_started(&agentfleet_common::ids::new_execution_id()),
        cancel,
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Lost, "{events:?}");
    assert_eq!(code, 1);
    assert_eq!(finished_of(&events, "a").len(), 1);
    assert_eq!(runs_of(dir.path(), "ok"), 0, "cancel started the job");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_execution_on_an_unreachable_sidecar_is_not_placed_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let mut endpoints = sidecars(dir.path(), 1, &shutdown).await;
    // s1: a socket nobody listens on (connection refused), where the execution was running.
    let closed = dir.path().join("gone.sock");
    drop(std::os::unix::net::UnixListener::bind(&closed).unwrap());
    endpoints.push(format!("unix:{}", closed.display()));
    let mut prior = placed_but_never_started(&agentfleet_common::ids::new_execution_id());
    let running = prior.get_mut("a").unwrap();
    running.sidecar = Some("s1".into());
    running.running.as_mut().unwrap().sidecar = "s1".into();
    let options = RunOptions {
        lost_after: Duration::from_secs(1),
        ..RunOptions::default()
    };
    let (outcomes, events, code) = run_with(
        &plan_text("[[task]]\nname = \"a\"\njob = \"ok\"\n", &endpoints),
        dir.path(),
        prior,
        CancellationToken::new(),
        options,
    )
    .await;
    assert_eq!(outcomes["a"], TaskOutcome::Lost, "{events:?}");
    assert_eq!(code, 1);
    let finished = finished_of(&events, "a");
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(finished[0].2.contains("unreachable"), "{}", finished[0].2);
    assert_eq!(
        runs_of(dir.path(), "ok"),
        0,
        "the task was placed again on s0 while its job may run on s1"
    );
    shutdown.cancel();
}
