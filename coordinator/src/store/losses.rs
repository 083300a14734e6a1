//! What the writer could not save, per execution.
//!
//! The store must never claim more than it holds: for every execution it keeps exactly
//! the sidecar's events up to `executions.last_seq`, so a watch resumed from there fills
//! in the rest. Once a batch with an execution's events is lost, that execution is
//! *tainted*: none of its later events (nor its sequence marks, nor its end) are written
//! either, so its stored `last_seq` stays where its stored events end and `attach`
//! re-imports everything after it from the sidecar's journal. For the same reason a run
//! with losses is never recorded as finished (its `run_finished` is withheld).
use std::collections::BTreeMap;

use crate::events::{RunEvent, RunEventKind};

/// The events of one execution the store could not save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostExecution {
    pub task: String,
    pub attempt: u32,
    pub events: u64,
}

/// Everything the store could not save during one writer's life.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Losses {
    /// Per execution id.
    pub executions: BTreeMap<String, LostExecution>,
    /// Events of no execution (the run's start, a task that never started).
    pub run_events: u64,
}

/// The execution an event belongs to: (execution id, task, attempt).
pub(super) fn execution_of(ev: &RunEvent) -> Option<(&str, &str, u32)> {
    match &ev.kind {
        RunEventKind::TaskPlaced { at }
        | RunEventKind::TaskStarted { at, .. }
        | RunEventKind::StepStarted { at, .. }
        | RunEventKind::StepFinished { at, .. }
        | RunEventKind::Log { at, .. }
        | RunEventKind::ExecutionSeq { at, .. } => {
            Some((at.execution_id.as_str(), at.task.as_str(), at.attempt))
        }
        RunEventKind::TaskFinished {
            task,
            attempt,
            execution_id: Some(id),
            ..
        } => Some((id.as_str(), task.as_str(), *attempt)),
        RunEventKind::TaskFinished { .. }
        | RunEventKind::RunStarted { .. }
        | RunEventKind::RunFinished { .. } => None,
        catalog => catalog
            .catalog_at()
            .map(|at| (at.execution_id.as_str(), at.task.as_str(), at.attempt)),
    }
}

impl Losses {
    pub fn is_empty(&self) -> bool {
        self.run_events == 0 && self.executions.is_empty()
    }

    /// How many events were not saved.
    pub fn total(&self) -> u64 {
        self.run_events + self.executions.values().map(|e| e.events).sum::<u64>()
    }

    /// True once events of `execution_id` were lost: its later ones must not be written.
    pub(super) fn is_tainted(&self, execution_id: &str) -> bool {
        self.executions.contains_key(execution_id)
    }

    /// Counts one unsaved event of `execution` (None: of the run itself).
    pub(super) fn lose(&mut self, execution: Option<(&str, &str, u32)>) {
        match execution {
            Some((id, task, attempt)) => {
                self.executions
                    .entry(id.to_owned())
                    .or_insert_with(|| LostExecution {
                        task: task.to_owned(),
                        attempt,
                        events: 0,
                    })
                    .events += 1;
            }
            None => self.run_events += 1,
        }
    }

    /// One line per execution ("  execution E (task T, attempt N): K events"), then the
    /// run's own events, for the message that says what was lost.
    pub fn describe(&self) -> String {
        let mut lines: Vec<String> = self
            .executions
            .iter()
            .map(|(id, e)| {
                format!(
                    "  execution {id} (task {}, attempt {}): {} events",
                    e.task, e.attempt, e.events
                )
            })
            .collect();
        if self.run_events > 0 {
            lines.push(format!(
                "  the run's own events (starts, ends, skips): {}",
                self.run_events
            ));
        }
        lines.join("\n")
    }
}
