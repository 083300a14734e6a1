//! Command jobs end to end through the Backend interface, with real processes (`sh`).
use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet_common::proto::{LogLine, LogStream, Outcome, StepStatus, event::Kind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::{EventSink, SinkMsg};
use crate::process::is_live;

/// Upper bound for any one wait in these tests, so that a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn sh_step(name: &str, script: &str) -> StepConfig {
    StepConfig {
        name: name.to_owned(),
        run: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
        on_success: None,
        on_failure: None,
        retries: 0,
        retry_interval: None,
        timeout: None,
    }
}

fn job(name: &str, steps: Vec<StepConfig>) -> JobConfig {
    JobConfig {
        name: name.to_owned(),
        description: String::new(),
        params: Vec::new(),
        working_dir: None,
        env: BTreeMap::new(),
        steps,
    }
}

fn backend(jobs: Vec<JobConfig>) -> CommandBackend {
    CommandBackend::new(jobs, Duration::from_millis(300))
}

/// Everything one execution sent, read from its sink.
struct Recorder {
    rx: mpsc::Receiver<SinkMsg>,
    stop: CancellationToken,
    events: Vec<(i64, Kind)>,
    logs: Vec<LogLine>,
    finished: bool,
}

impl Recorder {
    async fn start(backend: &CommandBackend, job: &str, params: &[(&str, &str)]) -> Self {
        let (mut recorder, ctx) = Self::context(job, params);
        backend.start(ctx).await.expect("start");
        recorder.finished = false;
        recorder
    }

    fn context(job: &str, params: &[(&str, &str)]) -> (Self, ExecutionContext) {
        let (events, rx) = EventSink::channel("exec-1");
        let stop = CancellationToken::new();
        let ctx = ExecutionContext {
            execution_id: "exec-1".to_owned(),
            job: job.to_owned(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            events,
            stop: stop.clone(),
        };
        let recorder = Self {
            rx,
            stop,
            events: Vec::new(),
            logs: Vec::new(),
            finished: false,
        };
        (recorder, ctx)
    }

    /// Reads one message; false once the sink is closed.
    async fn next(&mut self) -> bool {
        let msg = tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("the execution stalled");
        match msg {
            Some(SinkMsg::Log { line, .. }) => self.logs.push(line),
            Some(SinkMsg::Event { ts_ms, kind }) => {
                if matches!(kind, Kind::Finished(_)) {
                    assert!(!self.finished, "a second Finished event");
                    self.finished = true;
                }
                self.events.push((ts_ms, kind));
            }
            None => return false,
        }
        true
    }

    /// Reads until a log line satisfies `pred`; returns it.
    async fn until_log(&mut self, pred: impl Fn(&LogLine) -> bool) -> String {
        loop {
            assert!(self.next().await, "ended before the expected log line");
            if let Some(line) = self.logs.last().filter(|l| pred(l)) {
                return line.line.clone();
            }
        }
    }

    /// Reads until the sink closes; the execution must have sent exactly one Finished, last.
    async fn run_to_end(&mut self) {
        while self.next().await {}
        assert!(self.finished, "no Finished event");
        assert!(matches!(self.events.last(), Some((_, Kind::Finished(_)))));
    }

    fn summary(&self) -> Vec<String> {
        self.events.iter().map(|(_, kind)| describe(kind)).collect()
    }

    fn lines(&self, stream: LogStream) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|l| l.stream == stream as i32)
            .map(|l| l.line.as_str())
            .collect()
    }

    fn ts_of(&self, wanted: &str) -> i64 {
        self.events
            .iter()
            .find(|(_, kind)| describe(kind) == wanted)
            .map(|(ts, _)| *ts)
            .unwrap_or_else(|| panic!("no event `{wanted}` in {:#?}", self.summary()))
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Started(s) => format!("started {}", s.step_count),
        Kind::StepStarted(s) => format!("step {} {} #{}", s.step_id, s.step_name, s.attempt),
        Kind::StepFinished(s) => format!(
            "step {} {} #{} {:?}: {}",
            s.step_id,
            s.step_name,
            s.attempt,
            StepStatus::try_from(s.status).unwrap(),
            s.message
        ),
        Kind::Finished(f) => format!(
            "finished {:?}: {}",
            Outcome::try_from(f.outcome).unwrap(),
            f.message
        ),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn multi_step_job_succeeds_with_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut etl = job(
        "etl",
        vec![
            sh_step(
                "extract",
                "echo \"$AGENTFLEET_JOB/$AGENTFLEET_STEP/$AGENTFLEET_EXECUTION_ID\"; echo \"$BUSINESS_DATE $REGION\"; pwd",
            ),
            sh_step("transform", "echo warn >&2"),
            sh_step("load", "exit 0"),
        ],
    );
    etl.params = vec!["BUSINESS_DATE".to_owned()];
    etl.env = BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]);
    etl.working_dir = Some(dir.path().to_owned());
    let backend = backend(vec![etl]);

    let mut run = Recorder::start(&backend, "etl", &[("BUSINESS_DATE", "2026-11-24")]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 3",
            "step 1 extract #1",
            "step 1 extract #1 Succeeded: exit code 0",
            "step 2 transform #1",
            "step 2 transform #1 Succeeded: exit code 0",
            "step 3 load #1",
            "step 3 load #1 Succeeded: exit code 0",
            "finished Succeeded: step `load` succeeded (last step)",
        ]
    );
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        run.lines(LogStream::Stdout),
        ["etl/extract/exec-1", "2026-11-24 eu", cwd.to_str().unwrap()]
    );
    assert_eq!(run.lines(LogStream::Stderr), ["warn"]);
    assert!(run.logs.iter().all(|l| l.step_id == 1 || l.line == "warn"));

    let listed = backend.list_jobs().await.unwrap();
    assert_eq!(listed[0].stats.unwrap().count, 1);
    assert_eq!(listed[0].steps[2].on_success, "next");
    assert_eq!(listed[0].steps[2].on_failure, "fail");
    assert_eq!(listed[0].params, ["BUSINESS_DATE"]);
}

#[tokio::test]
async fn a_failed_step_fails_the_job() {
    let backend = backend(vec![job(
        "j",
        vec![sh_step("load", "exit 2"), sh_step("never", "exit 0")],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 2",
            "step 1 load #1",
            "step 1 load #1 Failed: exit code 2",
            "finished Failed: step `load` failed: exit code 2",
        ]
    );
    assert_eq!(
        backend.list_jobs().await.unwrap()[0].stats.unwrap().count,
        0
    );
}

#[tokio::test]
async fn on_failure_goto_jumps_over_steps() {
    let mut load = sh_step("load", "exit 2");
    load.on_failure = Some("goto:cleanup".to_owned());
    let mut cleanup = sh_step("cleanup", "echo cleaning");
    cleanup.on_success = Some("fail".to_owned());
    let backend = backend(vec![job(
        "j",
        vec![load, sh_step("report", "echo never"), cleanup],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 3",
            "step 1 load #1",
            "step 1 load #1 Failed: exit code 2",
            "step 3 cleanup #1",
            "step 3 cleanup #1 Succeeded: exit code 0",
            "finished Failed: step `cleanup` succeeded, and its on_success action is `fail`",
        ]
    );
    assert_eq!(run.lines(LogStream::Stdout), ["cleaning"]);
}

#[tokio::test]
async fn a_step_that_fails_once_succeeds_on_retry_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    let mut flaky = sh_step(
        "flaky",
        &format!(
            "if [ -e '{m}' ]; then echo second; else touch '{m}'; echo first; exit 3; fi",
            m = marker.display()
        ),
    );
    flaky.retries = 2;
    flaky.retry_interval = Some(Duration::from_millis(400));
    let backend = backend(vec![job("j", vec![flaky])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 1",
            "step 1 flaky #1",
            "step 1 flaky #1 Retry: exit code 3",
            "step 1 flaky #2",
            "step 1 flaky #2 Succeeded: exit code 0",
            "finished Succeeded: step `flaky` succeeded (last step)",
        ]
    );
    assert_eq!(run.lines(LogStream::Stdout), ["first", "second"]);
    let waited = run.ts_of("step 1 flaky #2") - run.ts_of("step 1 flaky #1 Retry: exit code 3");
    assert!(waited >= 400, "retried after {waited} ms");
}

#[tokio::test]
async fn a_timeout_kills_the_tree_and_counts_as_a_failed_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    // First attempt: hangs with a grandchild; second attempt: hangs again; no third.
    let mut slow = sh_step(
        "slow",
        &format!("touch '{}'; sleep 1000 & echo $!; wait", marker.display()),
    );
    slow.timeout = Some(Duration::from_millis(500));
    slow.retries = 1;
    let backend = backend(vec![job("j", vec![slow])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 1",
            "step 1 slow #1",
            "step 1 slow #1 Retry: timed out after 500ms",
            "step 1 slow #2",
            "step 1 slow #2 TimedOut: timed out after 500ms",
            "finished Failed: step `slow` failed: timed out after 500ms",
        ]
    );
    let grandchildren = run.lines(LogStream::Stdout);
    assert_eq!(grandchildren.len(), 2);
    for pid in grandchildren {
        let pid: i32 = pid.parse().unwrap();
        assert!(!is_live(pid), "grandchild {pid} survived the timeout");
    }
}

#[tokio::test]
async fn stop_kills_the_whole_tree_and_cancels() {
    // SIGTERM is ignored by the shell and (inherited) by `sleep`: SIGKILL after the grace.
    let stubborn = sh_step("stubborn", "trap '' TERM; sleep 1000 & echo $!; wait");
    let backend = backend(vec![job("j", vec![stubborn, sh_step("never", "true")])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    let pid: i32 = run.until_log(|_| true).await.parse().unwrap();
    assert!(is_live(pid));
    run.stop.cancel();
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 2",
            "step 1 stubborn #1",
            "step 1 stubborn #1 Canceled: stopped: killed by signal 9 (SIGKILL)",
            "finished Canceled: stopped: stop requested while step `stubborn` was running",
        ]
    );
    assert!(!is_live(pid), "grandchild {pid} survived the stop");
}

#[tokio::test]
async fn stop_during_a_retry_wait_ends_at_once() {
    let mut failing = sh_step("failing", "exit 1");
    failing.retries = 3;
    failing.retry_interval = Some(Duration::from_secs(3600));
    let backend = backend(vec![job("j", vec![failing])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    while !run.summary().iter().any(|e| e.contains("Retry")) {
        assert!(run.next().await);
    }
    run.stop.cancel();
    run.run_to_end().await;
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Canceled: stopped: stop requested while waiting to retry step `failing`"
    );
}

#[tokio::test]
async fn captures_all_output_lines_in_order() {
    let script = "seq 1 100000; seq 1 50000 >&2; printf 'bad \\377 byte\\n'; printf 'no newline'";
    let backend = backend(vec![job("j", vec![sh_step("chatty", script)])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let out = run.lines(LogStream::Stdout);
    assert_eq!(out.len(), 100_002);
    for (i, line) in out[..100_000].iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string());
    }
    assert_eq!(out[100_000], "bad \u{fffd} byte");
    assert_eq!(out[100_001], "no newline");
    let err = run.lines(LogStream::Stderr);
    assert_eq!(err.len(), 50_000);
    assert!(err.iter().zip(1..).all(|(line, n)| *line == n.to_string()));
}

#[tokio::test]
async fn a_background_process_holding_the_pipes_does_not_hold_the_step() {
    let backend = backend(vec![job(
        "j",
        vec![sh_step("leaky", "sleep 1000 & echo $!")],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let pid: i32 = run.lines(LogStream::Stdout)[0].parse().unwrap();
    // The background process is left alone (the step succeeded); clean up after the test.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Succeeded: step `leaky` succeeded (last step)"
    );
    let notes = run.lines(LogStream::Agent);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("stopped reading stdout after 2s"));
}

#[tokio::test]
async fn a_program_that_cannot_start_is_a_failed_step() {
    let mut step = sh_step("missing", "");
    step.run = vec!["agentfleet-no-such-program".to_owned()];
    step.on_failure = Some("succeed".to_owned());
    let backend = backend(vec![job("j", vec![step])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let summary = run.summary();
    assert!(
        summary[2].starts_with(
            "step 1 missing #1 Failed: could not start `agentfleet-no-such-program`: No such file"
        ),
        "{summary:#?}"
    );
    assert!(summary[3].starts_with("finished Succeeded: step `missing` failed: could not start"));
    assert!(summary[3].ends_with("its on_failure action is `succeed`"));
}

#[tokio::test]
async fn endless_goto_loops_are_cut() {
    let mut spin = sh_step("spin", "true");
    spin.on_success = Some("goto:spin".to_owned());
    let mut backend = backend(vec![job("j", vec![spin])]);
    backend.max_step_runs = 5;
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(run.summary().len(), 1 + 5 * 2 + 1);
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Failed: gave up after 5 step runs: the steps' on_success/on_failure actions \
         loop (the last step run was `spin`)"
    );
}

#[tokio::test]
async fn refuses_bad_starts() {
    let mut declared = job("j", vec![sh_step("s", "true")]);
    declared.params = vec!["BUSINESS_DATE".to_owned()];
    let mut broken = job("broken", vec![sh_step("s", "true")]);
    broken.steps[0].on_failure = Some("goto:nowhere".to_owned());
    let backend = backend(vec![declared, broken]);

    let (_run, ctx) = Recorder::context("j", &[("PATH", "/tmp/evil")]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::InvalidArgument(_)));
    assert_eq!(
        err.to_string(),
        "job `j` does not declare the parameter `PATH`; it declares: BUSINESS_DATE"
    );

    let (_run, ctx) = Recorder::context("nope", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");

    let (_run, ctx) = Recorder::context("broken", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(
        err.to_string().contains("there is no step `nowhere`"),
        "{err}"
    );
    let listed = backend.list_jobs().await.unwrap();
    assert!(listed[0].enabled);
    assert!(!listed[1].enabled);
}

#[tokio::test]
async fn a_job_never_runs_twice_at_once() {
    let backend = backend(vec![job("j", vec![sh_step("wait", "echo up; sleep 1000")])]);
    let mut first = Recorder::start(&backend, "j", &[]).await;
    first.until_log(|l| l.line == "up").await;
    let (_second, ctx) = Recorder::context("j", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyRunning(_)), "{err}");
    first.stop.cancel();
    first.run_to_end().await;
    // Free again once Finished was sent.
    let mut third = Recorder::start(&backend, "j", &[]).await;
    third.until_log(|l| l.line == "up").await;
    third.stop.cancel();
    third.run_to_end().await;
}
