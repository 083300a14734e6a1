//! How tasks end: settling an outcome, releasing or skipping dependants, stopping the run,
//! and the final summary.
use std::time::Instant;

use super::{Dispatcher, RunResult, State, Stopping};
use crate::events::{RunEventKind, TaskOutcome, TaskSummary};

impl Dispatcher<'_> {
    /// Marks a task done (its TaskFinished already emitted), then releases its
    /// dependants, or skips everything downstream of it.
    pub(super) async fn settle(&mut self, index: usize, outcome: TaskOutcome, message: String) {
        let run = &mut self.tasks[index];
        run.state = State::Done(outcome);
        run.message = message;
        if outcome == TaskOutcome::Succeeded {
            for &d in self.plan.dependants(index) {
                let dep = &mut self.tasks[d];
                dep.remaining_deps -= 1;
                if dep.remaining_deps == 0 && dep.state == State::Waiting {
                    dep.state = State::Ready;
                }
            }
            return;
        }
        // Skip everything downstream, breadth first, naming the task that failed.
        let name = self.plan.tasks[index].name.clone();
        let why = format!("`{name}` {}", outcome.as_str());
        let mut queue: std::collections::VecDeque<usize> =
            self.plan.dependants(index).iter().copied().collect();
        while let Some(d) = queue.pop_front() {
            if matches!(self.tasks[d].state, State::Done(_) | State::Running { .. }) {
                continue;
            }
            self.finish_unstarted(d, TaskOutcome::Skipped, why.clone())
                .await;
            queue.extend(self.plan.dependants(d).iter().copied());
        }
        if self.plan.fail_fast && self.stopping == Stopping::No && outcome != TaskOutcome::Canceled
        {
            self.stop_run(
                Stopping::FailFast,
                &format!("fail_fast: `{name}` {}", outcome.as_str()),
            )
            .await;
        }
    }

    /// Ends a task that is not running (skipped, canceled) without touching dependants.
    pub(super) async fn finish_unstarted(
        &mut self,
        index: usize,
        outcome: TaskOutcome,
        message: String,
    ) {
        let task = &self.plan.tasks[index];
        let run = &mut self.tasks[index];
        run.state = State::Done(outcome);
        run.message = message.clone();
        let event = RunEventKind::TaskFinished {
            task: task.name.clone(),
            attempt: run.attempts,
            sidecar: run.sidecar.clone(),
            execution_id: None,
            status: outcome,
            message,
            duration_ms: 0,
            will_retry: false,
        };
        self.emit(event).await;
    }

    /// Fails a task that can never be placed, and skips what depends on it.
    pub(super) async fn complete(&mut self, index: usize, outcome: TaskOutcome, message: String) {
        self.finish_unstarted(index, outcome, message.clone()).await;
        self.settle(index, outcome, message).await;
    }

    /// Stops starting tasks, stops running executions on their sidecars, and ends every
    /// task that has not started.
    pub(super) async fn stop_run(&mut self, why: Stopping, message: &str) {
        self.stopping = why;
        self.stop_all.cancel();
        for i in 0..self.tasks.len() {
            if matches!(self.tasks[i].state, State::Waiting | State::Ready) {
                let outcome = if why == Stopping::FailFast {
                    TaskOutcome::Skipped
                } else {
                    TaskOutcome::Canceled
                };
                self.finish_unstarted(i, outcome, format!("not started: {message}"))
                    .await;
            }
        }
    }

    pub(super) async fn finish(self, started: Instant) -> RunResult {
        let summary: Vec<TaskSummary> = self
            .plan
            .tasks
            .iter()
            .zip(&self.tasks)
            .map(|(task, run)| TaskSummary {
                task: task.name.clone(),
                sidecar: run.sidecar.clone(),
                attempts: run.attempts,
                duration_ms: run.duration.as_millis() as u64,
                status: match run.state {
                    State::Done(o) => o,
                    _ => TaskOutcome::Canceled,
                },
                message: run.message.clone(),
            })
            .collect();
        // Optional tasks may fail (or be skipped) without failing the run.
        let all_ok = summary.iter().zip(&self.plan.tasks).all(|(s, t)| {
            s.status == TaskOutcome::Succeeded
                || (t.optional
                    && matches!(
                        s.status,
                        TaskOutcome::Failed | TaskOutcome::Skipped | TaskOutcome::TimedOut
                    ))
        });
        let (status, exit_code) = match self.stopping {
            Stopping::Interrupted => ("interrupted", 130),
            Stopping::Canceled => ("canceled", 1),
            _ if all_ok => ("succeeded", 0),
            Stopping::RunTimeout => ("timed_out", 1),
            _ => ("failed", 1),
        };
        self.emit(RunEventKind::RunFinished {
            status,
            exit_code,
            duration_ms: started.elapsed().as_millis() as u64,
            summary: summary.clone(),
        })
        .await;
        RunResult { exit_code, summary }
    }
}
