//! Resuming a run that an earlier coordinator started: what the store says it did.
//!
//! An execution the store holds as running is only followed, never started: its StartJob
//! goes out with `resume_only`, because the earlier coordinator may have recorded the
//! placement and died before sending it, or the sidecar may have pruned it. A sidecar
//! that does not know it answers NOT_FOUND and the executor ends it LOST; the task is
//! then rerun, under a new execution id, only as the plan says (`rerun_if_lost` and
//! `retries`, see `Dispatcher::on_done`), and never while the run is stopping (`cancel`).
use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Dispatcher, State};
use crate::events::TaskOutcome;
use crate::execution::ExecMsg;

/// What an earlier coordinator of the same run recorded about a task (from the store).
#[derive(Debug, Clone, Default)]
pub struct PriorTask {
    /// Final outcome, if the task had finished.
    pub outcome: Option<TaskOutcome>,
    pub attempts: u32,
    pub sidecar: Option<String>,
    pub duration: Duration,
    pub message: String,
    /// The execution that was running, to re-attach to.
    pub running: Option<PriorExecution>,
}

#[derive(Debug, Clone)]
pub struct PriorExecution {
    pub execution_id: String,
    pub attempt: u32,
    pub sidecar: String,
    /// Last sidecar sequence number stored: resume watching after it.
    pub last_seq: u64,
}

impl Dispatcher<'_> {
    /// Applies what an earlier coordinator of this run did.
    pub(super) async fn restore(
        &mut self,
        prior: BTreeMap<String, PriorTask>,
        tx: &mpsc::Sender<ExecMsg>,
    ) {
        if prior.is_empty() {
            return;
        }
        for (index, task) in self.plan.tasks.iter().enumerate() {
            let Some(p) = prior.get(&task.name) else {
                continue;
            };
            let run = &mut self.tasks[index];
            run.attempts = p.attempts;
            run.sidecar = p.sidecar.clone();
            run.duration = p.duration;
            run.message = p.message.clone();
            if let Some(outcome) = p.outcome {
                run.state = State::Done(outcome);
            }
        }
        // Dependencies: count only those not yet succeeded.
        for index in 0..self.tasks.len() {
            if matches!(self.tasks[index].state, State::Done(_)) {
                continue;
            }
            let remaining = self.plan.tasks[index]
                .after
                .iter()
                .filter(|&&d| self.tasks[d].state != State::Done(TaskOutcome::Succeeded))
                .count();
            let run = &mut self.tasks[index];
            run.remaining_deps = remaining;
            run.state = if remaining == 0 {
                State::Ready
            } else {
                State::Waiting
            };
        }
        for (index, task) in self.plan.tasks.iter().enumerate() {
            let Some(exec) = prior.get(&task.name).and_then(|p| p.running.clone()) else {
                continue;
            };
            if self.tasks[index].state == State::Ready && self.sidecars.contains_key(&exec.sidecar)
            {
                self.tasks[index].attempts = exec.attempt.saturating_sub(1);
                let sidecar = exec.sidecar.clone();
                self.launch_execution(index, &sidecar, Some(exec), tx).await;
            }
        }
    }
}
