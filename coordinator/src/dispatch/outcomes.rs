//! How tasks end: a refused start, an execution's end (and whether the task runs again),
//! settling an outcome, releasing or skipping dependants, stopping the run, and the final
//! summary.
use std::time::{Duration, Instant};

use super::{Dispatcher, REFUSAL_COOLDOWN, RunResult, State, Stopping};
use crate::events::{RunEventKind, TaskOutcome, TaskSummary};
use crate::execution::Refusal;

/// How an execution ended, as its executor reported it.
pub(super) struct Ended {
    pub outcome: TaskOutcome,
    pub message: String,
    pub duration: Duration,
    /// The executor gave up on a stop its sidecar never confirmed: the job may still be
    /// running there.
    pub may_still_run: bool,
}

impl Dispatcher<'_> {
    /// A sidecar did not take a start (busy, the job already running there, unreachable):
    /// the execution never existed, so the attempt does not count and the task is placed
    /// again after a cooldown of that sidecar (or canceled if the run is stopping).
    pub(super) async fn start_refused(
        &mut self,
        index: usize,
        sidecar: String,
        refusal: Refusal,
        message: String,
    ) {
        tracing::debug!(%sidecar, ?refusal, %message, "start refused; placing again");
        if let (Some(log), Some(id)) =
            (&self.options.placement_log, &self.tasks[index].execution_id)
        {
            log.refused(id);
        }
        let run = &mut self.tasks[index];
        run.attempts -= 1;
        run.state = if self.stopping == Stopping::No {
            State::Ready
        } else {
            State::Done(TaskOutcome::Canceled)
        };
        if refusal == Refusal::AlreadyRunning {
            // Someone else runs it there: prefer another sidecar for a while.
            run.avoid.push(sidecar.clone());
        }
        self.cooldown
            .insert(sidecar, Instant::now() + REFUSAL_COOLDOWN);
        if self.stopping != Stopping::No {
            self.finish_unstarted(
                index,
                TaskOutcome::Canceled,
                "run stopped before it started".into(),
            )
            .await;
        }
    }

    /// Reports an execution's end, then runs the task again (a new attempt, a new
    /// execution id, another sidecar preferred) or settles it. A failure or a timeout is
    /// retried within `retries`; a lost execution, or one whose job may still be running
    /// because its stop was never confirmed, only with `rerun_if_lost` (never two copies
    /// of a job the plan does not allow); nothing is retried once the run is stopping.
    pub(super) async fn execution_ended(&mut self, index: usize, sidecar: String, ended: Ended) {
        let Ended {
            outcome,
            message,
            duration,
            may_still_run,
        } = ended;
        let task = &self.plan.tasks[index];
        let retryable = match outcome {
            _ if may_still_run => task.rerun_if_lost,
            TaskOutcome::Failed | TaskOutcome::TimedOut => true,
            TaskOutcome::Lost => task.rerun_if_lost,
            _ => false,
        };
        let run = &mut self.tasks[index];
        run.duration += duration;
        let attempt = run.attempts;
        let will_retry = retryable && attempt <= task.retries && self.stopping == Stopping::No;
        self.emit(RunEventKind::TaskFinished {
            task: task.name.clone(),
            attempt,
            sidecar: Some(sidecar.clone()),
            execution_id: self.tasks[index].execution_id.clone(),
            status: outcome,
            message: message.clone(),
            duration_ms: duration.as_millis() as u64,
            will_retry,
        })
        .await;
        if will_retry {
            let run = &mut self.tasks[index];
            run.avoid.push(sidecar);
            run.state = State::Ready;
        } else {
            self.settle(index, outcome, message).await;
        }
    }

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
