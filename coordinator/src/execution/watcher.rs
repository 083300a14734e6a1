//! Turns a sidecar's events into run events, skipping anything already seen (a Watch
//! resumed after a reconnect, or after re-attaching to a run, repeats nothing).
use std::collections::HashMap;

use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;

use super::{ExecMsg, ExecutionSpec};
use crate::events::{
    CatalogExecution, DataFlowRows, LogLine, LogLines, RunEventKind, SubStepFinished,
    SubStepStarted, TaskOutcome, catalog_line, catalog_status_name,
};

pub(super) struct Watcher<'a> {
    pub(super) spec: &'a ExecutionSpec,
    pub(super) tx: &'a mpsc::Sender<ExecMsg>,
    pub(super) last_seq: u64,
    /// Who the sidecar says started the execution (its StartJob answer).
    pub(super) started_by: String,
    /// Each step's attempt as its last StepStarted said: the sidecar's catalog events name
    /// only the step, and their run events say which attempt they belong to. A step not
    /// seen started (a watch resumed mid-step) counts as attempt 1.
    pub(super) step_attempts: HashMap<u32, u32>,
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
        let spec = self.spec;
        let at = || spec.at.clone();
        let kind = match event.kind? {
            Kind::Accepted(_) => return None,
            Kind::Started(s) => RunEventKind::TaskStarted {
                at: at(),
                step_count: s.step_count,
                started_by: self.started_by.clone(),
            },
            Kind::StepStarted(s) => {
                self.step_attempts.insert(s.step_id, s.attempt);
                RunEventKind::StepStarted {
                    at: at(),
                    step: s.step_id,
                    step_name: s.step_name,
                    step_attempt: s.attempt,
                }
            }
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
                    .map(|l| {
                        let stream = l.stream();
                        // A catalog message's type and task go into its text (see
                        // `catalog_line`).
                        let line = if stream == proto::LogStream::Catalog {
                            catalog_line(l.catalog_message_type, &l.source_path, &l.line)
                        } else {
                            l.line
                        };
                        LogLine {
                            step: l.step_id,
                            stream: stream.name(),
                            line,
                        }
                    })
                    .collect();
                RunEventKind::Log {
                    at: at(),
                    lines: LogLines::budgeted(lines).await,
                }
            }
            Kind::Finished(f) => return Some((outcome(f.outcome()), f.message)),
            Kind::CatalogExecution(c) => {
                RunEventKind::CatalogExecution(Box::new(CatalogExecution {
                    at: at(),
                    step: c.step_id,
                    step_attempt: self.step_attempt(c.step_id),
                    catalog_execution_id: c.catalog_execution_id,
                    server: c.server,
                    folder: c.folder,
                    project: c.project,
                    package: c.package,
                    status: catalog_status_name(c.status).to_owned(),
                }))
            }
            Kind::SubStepStarted(s) => RunEventKind::SubStepStarted(Box::new(SubStepStarted {
                at: at(),
                step: s.step_id,
                step_attempt: self.step_attempt(s.step_id),
                path: s.path,
                name: s.name,
                started_at_ms: s.started_at_ms,
            })),
            Kind::SubStepFinished(s) => RunEventKind::SubStepFinished(Box::new(SubStepFinished {
                at: at(),
                step: s.step_id,
                step_attempt: self.step_attempt(s.step_id),
                status: s.status().name().to_owned(),
                path: s.path,
                name: s.name,
                started_at_ms: s.started_at_ms,
                duration_ms: s.duration_ms,
                message: s.message,
            })),
            Kind::DataFlowRows(d) => RunEventKind::DataFlowRows(Box::new(DataFlowRows {
                at: at(),
                step: d.step_id,
                step_attempt: self.step_attempt(d.step_id),
                path: d.path,
                data_flow_path: d.data_flow_path,
                source_component: d.source_component,
                destination_component: d.destination_component,
                rows: d.rows,
            })),
        };
        self.send(kind).await;
        None
    }

    fn step_attempt(&self, step: u32) -> u32 {
        self.step_attempts.get(&step).copied().unwrap_or(1)
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

#[cfg(test)]
#[path = "watcher_tests.rs"]
mod tests;
