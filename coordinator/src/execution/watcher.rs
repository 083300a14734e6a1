//! Turns a sidecar's events into run events, skipping anything already seen (a Watch
//! resumed after a reconnect, or after re-attaching to a run, repeats nothing).
use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;

use super::{ExecMsg, ExecutionSpec};
use crate::events::{LogLine, LogLines, RunEventKind, TaskOutcome};

pub(super) struct Watcher<'a> {
    pub(super) spec: &'a ExecutionSpec,
    pub(super) tx: &'a mpsc::Sender<ExecMsg>,
    pub(super) last_seq: u64,
    /// Who the sidecar says started the execution (its StartJob answer).
    pub(super) started_by: String,
}

impl Watcher<'_> {
    /// Returns the outcome once the Finished event arrives.
    pub(super) async fn handle(&mut self, event: proto::Event) -> Option<(TaskOutcome, String)> {
        if event.seq <= self.last_seq {
            return None; // already seen before a reconnect
        }
        let seq = event.seq;
        crate::report::otel::record_event_lag(&self.spec.at.sidecar, event.ts_ms);
        let outcome = self.translate(event).await;
        self.last_seq = seq;
        self.send(RunEventKind::ExecutionSeq {
            at: self.spec.at.clone(),
            seq,
        })
        .await;
        outcome
    }

    /// Sends the run events for one sidecar event; the outcome if it is Finished.
    async fn translate(&mut self, event: proto::Event) -> Option<(TaskOutcome, String)> {
        let at = || self.spec.at.clone();
        let kind = match event.kind? {
            Kind::Accepted(_) => return None,
            Kind::Started(s) => RunEventKind::TaskStarted {
                at: at(),
                step_count: s.step_count,
                started_by: self.started_by.clone(),
            },
            Kind::StepStarted(s) => RunEventKind::StepStarted {
                at: at(),
                step: s.step_id,
                step_name: s.step_name,
                step_attempt: s.attempt,
            },
            Kind::StepFinished(s) => RunEventKind::StepFinished {
                at: at(),
                status: s.status().name(),
                step: s.step_id,
                step_name: s.step_name,
                step_attempt: s.attempt,
                message: s.message,
                duration_ms: s.duration_ms,
            },
            // One run event for the message's lines, not one per line, once the budget of
            // log bytes in flight has room for them.
            Kind::Logs(logs) => {
                let lines = logs
                    .lines
                    .into_iter()
                    .map(|l| LogLine {
                        step: l.step_id,
                        stream: l.stream().name(),
                        line: l.line,
                    })
                    .collect();
                RunEventKind::Log {
                    at: at(),
                    lines: LogLines::budgeted(lines).await,
                }
            }
            Kind::Finished(f) => return Some((outcome(f.outcome()), f.message)),
            // SSIS catalog progress: not yet turned into run events.
            Kind::CatalogExecution(_)
            | Kind::SubStepStarted(_)
            | Kind::SubStepFinished(_)
            | Kind::DataFlowRows(_) => return None,
        };
        self.send(kind).await;
        None
    }

    async fn send(&self, kind: RunEventKind) {
        let _ = self
            .tx
            .send(ExecMsg::Event {
                task_index: self.spec.task_index,
                kind,
            })
            .await;
    }
}

fn outcome(o: proto::Outcome) -> TaskOutcome {
    match o {
        proto::Outcome::Succeeded => TaskOutcome::Succeeded,
        proto::Outcome::Canceled => TaskOutcome::Canceled,
        proto::Outcome::TimedOut => TaskOutcome::TimedOut,
        proto::Outcome::Lost => TaskOutcome::Lost,
        proto::Outcome::Failed | proto::Outcome::Unspecified => TaskOutcome::Failed,
    }
}
