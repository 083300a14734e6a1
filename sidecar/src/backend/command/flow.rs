//! The step flow of one command-job execution, with SQL Server Agent semantics: steps run
//! in order from step 1; a failed attempt with retries left is retried after
//! `retry_interval`; then the step's `on_success` / `on_failure` action says what is next.
use std::time::Duration;

use agentfleet_common::proto::{self, Outcome, StepStatus, event::Kind};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::config::{JobConfig, StepAction};
use super::step::{Attempt, AttemptEnd};
use crate::backend::ExecutionContext;

/// Step runs (attempts) allowed per execution before `goto` loops are declared endless.
pub(crate) const MAX_STEP_RUNS: u32 = 1000;

/// A step action with `goto` resolved to a step index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Next,
    Succeed,
    Fail,
    Goto(usize),
}

/// Each step's resolved (on_success, on_failure).
pub(crate) type Plan = Vec<(Action, Action)>;

/// Resolves the job's actions; the error says what is wrong (the loader normally has
/// refused such a config already).
pub(crate) fn plan(job: &JobConfig) -> Result<Plan, String> {
    job.validate()?;
    let resolve = |text: &str| -> Result<Action, String> {
        Ok(match StepAction::parse(text)? {
            StepAction::Next => Action::Next,
            StepAction::Succeed => Action::Succeed,
            StepAction::Fail => Action::Fail,
            StepAction::Goto(name) => Action::Goto(
                job.steps
                    .iter()
                    .position(|s| s.name == name)
                    .ok_or_else(|| format!("there is no step `{name}`"))?,
            ),
        })
    };
    job.steps
        .iter()
        .map(|s| Ok((resolve(s.on_success_text())?, resolve(s.on_failure_text())?)))
        .collect()
}

/// How the execution ended: the Finished event's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finish {
    pub outcome: Outcome,
    pub message: String,
}

impl Finish {
    fn new(outcome: Outcome, message: String) -> Self {
        Self { outcome, message }
    }
}

/// Runs the job's steps to the end and says how it ended. Emits Started and the step
/// events; the caller emits Finished. `spawned` is told when the first step's program
/// was started (or could not be), or when the flow ends without starting one.
pub(crate) async fn drive(
    job: &JobConfig,
    plan: &Plan,
    ctx: &ExecutionContext,
    stop_grace: Duration,
    max_step_runs: u32,
    mut spawned: Option<oneshot::Sender<()>>,
) -> Finish {
    let sink = &ctx.events;
    let step_count = u32::try_from(job.steps.len()).unwrap_or(u32::MAX);
    sink.emit(Kind::Started(proto::Started { step_count }))
        .await;

    let base_env = base_env(job, ctx);
    let mut index = 0;
    let mut runs = 0;
    loop {
        let step = &job.steps[index];
        let step_id = u32::try_from(index + 1).unwrap_or(u32::MAX);
        let name = &step.name;
        let mut attempt = 1;
        let end = loop {
            if ctx.stop.is_cancelled() {
                return Finish::new(
                    Outcome::Canceled,
                    format!("stopped: stop requested before step `{name}` started"),
                );
            }
            if runs == max_step_runs {
                return Finish::new(
                    Outcome::Failed,
                    format!(
                        "gave up after {max_step_runs} step runs: the steps' on_success/on_failure \
                         actions loop (the last step run was `{name}`)"
                    ),
                );
            }
            runs += 1;
            sink.emit(Kind::StepStarted(proto::StepStarted {
                step_id,
                step_name: name.clone(),
                attempt,
            }))
            .await;
            let started_at_ms = agentfleet_common::now_ms();
            let clock = Instant::now();
            let mut env = base_env.clone();
            env.extend([
                ("AGENTFLEET_STEP".to_owned(), name.clone()),
                ("AGENTFLEET_STEP_ID".to_owned(), step_id.to_string()),
                ("AGENTFLEET_ATTEMPT".to_owned(), attempt.to_string()),
            ]);
            let end = Attempt {
                step_id,
                step,
                env: &env,
                working_dir: job.working_dir.as_deref(),
                sink,
                stop: &ctx.stop,
                stop_grace,
            }
            .run(&mut spawned)
            .await;
            let failed = matches!(end, AttemptEnd::Failed(_) | AttemptEnd::TimedOut(_));
            let retrying = failed && attempt <= step.retries && !ctx.stop.is_cancelled();
            let status = match &end {
                AttemptEnd::Succeeded(_) => StepStatus::Succeeded,
                AttemptEnd::Canceled(_) => StepStatus::Canceled,
                _ if retrying => StepStatus::Retry,
                AttemptEnd::Failed(_) => StepStatus::Failed,
                AttemptEnd::TimedOut(_) => StepStatus::TimedOut,
            };
            sink.emit(Kind::StepFinished(proto::StepFinished {
                step_id,
                step_name: name.clone(),
                status: status as i32,
                message: end.message().to_owned(),
                duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
                attempt,
                started_at_ms,
                sql_message_id: 0,
                sql_severity: 0,
                sql_instance_id: 0,
            }))
            .await;
            if let AttemptEnd::Canceled(_) = end {
                return Finish::new(
                    Outcome::Canceled,
                    format!("stopped: stop requested while step `{name}` was running"),
                );
            }
            if !retrying {
                break end;
            }
            let interval = step.retry_interval.unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = ctx.stop.cancelled() => return Finish::new(
                    Outcome::Canceled,
                    format!("stopped: stop requested while waiting to retry step `{name}`"),
                ),
            }
            attempt += 1;
        };

        let succeeded = matches!(end, AttemptEnd::Succeeded(_));
        let (on_success, on_failure) = plan[index];
        let action = if succeeded { on_success } else { on_failure };
        let result = if succeeded {
            format!("step `{name}` succeeded")
        } else {
            format!("step `{name}` failed: {}", end.message())
        };
        match action {
            Action::Goto(next) => index = next,
            Action::Next if index + 1 < job.steps.len() => index += 1,
            // After the last step, "next" ends the job with that step's result.
            Action::Next if succeeded => {
                return Finish::new(Outcome::Succeeded, format!("{result} (last step)"));
            }
            Action::Next => return Finish::new(Outcome::Failed, result),
            Action::Succeed if succeeded => return Finish::new(Outcome::Succeeded, result),
            Action::Succeed => {
                return Finish::new(
                    Outcome::Succeeded,
                    format!("{result}; its on_failure action is `succeed`"),
                );
            }
            Action::Fail if succeeded => {
                return Finish::new(
                    Outcome::Failed,
                    format!("{result}, and its on_success action is `fail`"),
                );
            }
            Action::Fail => return Finish::new(Outcome::Failed, result),
        }
    }
}

/// Environment every step of this execution gets, in order of precedence (later wins):
/// what it inherits from the sidecar (see `environment`), the job's `env`, the task's
/// params, then agentfleet's own variables. Nothing else: the step starts from an empty
/// environment.
fn base_env(job: &JobConfig, ctx: &ExecutionContext) -> Vec<(String, String)> {
    let mut env = super::environment::inherited(std::env::vars_os(), &job.inherit_env);
    env.extend(
        job.env
            .iter()
            .chain(&ctx.params)
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    env.extend([
        (
            "AGENTFLEET_EXECUTION_ID".to_owned(),
            ctx.execution_id.clone(),
        ),
        ("AGENTFLEET_JOB".to_owned(), job.name.clone()),
    ]);
    env
}
