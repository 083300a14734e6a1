//! Command jobs end to end through the Backend interface, with real processes (`sh`):
//! this file holds the harness; `flow.rs` the step flow, `processes.rs` timeouts, stop
//! and output.
use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet_common::proto::{LogLine, LogStream, Outcome, StepStatus, event::Kind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::{EventSink, SinkMsg};

mod flow;
mod processes;

/// Upper bound for any one wait in these tests, so that a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

pub(super) fn sh_step(name: &str, script: &str) -> StepConfig {
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

pub(super) fn job(name: &str, steps: Vec<StepConfig>) -> JobConfig {
    JobConfig {
        name: name.to_owned(),
        description: String::new(),
        params: Default::default(),
        secret_params: Vec::new(),
        working_dir: None,
        inherit_env: Vec::new(),
        env: BTreeMap::new(),
        max_instances: 1,
        steps,
    }
}

pub(super) fn backend(jobs: Vec<JobConfig>) -> CommandBackend {
    CommandBackend::new(jobs, Duration::from_millis(300))
}

/// Everything one execution sent, read from its sink.
pub(super) struct Recorder {
    rx: mpsc::Receiver<SinkMsg>,
    pub(super) stop: CancellationToken,
    events: Vec<(i64, Kind)>,
    pub(super) logs: Vec<LogLine>,
    finished: bool,
}

impl Recorder {
    pub(super) async fn start(
        backend: &CommandBackend,
        job: &str,
        params: &[(&str, &str)],
    ) -> Self {
        let (mut recorder, ctx) = Self::context(job, params);
        backend.start(ctx).await.expect("start");
        recorder.finished = false;
        recorder
    }

    pub(super) fn context(job: &str, params: &[(&str, &str)]) -> (Self, ExecutionContext) {
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
            resume: None,
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
    pub(super) async fn next(&mut self) -> bool {
        let msg = tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("the execution stalled");
        match msg {
            Some(SinkMsg::Log { line, .. }) => self.logs.push(line),
            // A group of a command job is the lines of one read of a pipe.
            Some(SinkMsg::Group(msgs)) => {
                for msg in msgs {
                    match msg {
                        SinkMsg::Log { line, .. } => self.logs.push(line),
                        other => panic!("a command job's group holds only lines: {other:?}"),
                    }
                }
            }
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
    pub(super) async fn until_log(&mut self, pred: impl Fn(&LogLine) -> bool) -> String {
        loop {
            assert!(self.next().await, "ended before the expected log line");
            if let Some(line) = self.logs.last().filter(|l| pred(l)) {
                return line.line.clone();
            }
        }
    }

    /// Reads until the sink closes; the execution must have sent exactly one Finished, last.
    pub(super) async fn run_to_end(&mut self) {
        while self.next().await {}
        assert!(self.finished, "no Finished event");
        assert!(matches!(self.events.last(), Some((_, Kind::Finished(_)))));
    }

    pub(super) fn summary(&self) -> Vec<String> {
        self.events.iter().map(|(_, kind)| describe(kind)).collect()
    }

    pub(super) fn lines(&self, stream: LogStream) -> Vec<&str> {
        self.logs
            .iter()
            .filter(|l| l.stream == stream as i32)
            .map(|l| l.line.as_str())
            .collect()
    }

    pub(super) fn ts_of(&self, wanted: &str) -> i64 {
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
