//! Command jobs: programs from the sidecar config, with SQL Server Agent step semantics.
//!
//! - `config.rs`: the `[[job]]` sections and their validation;
//! - `flow.rs`: the step flow (order, retries, on_success / on_failure, goto);
//! - `step.rs`: one attempt of one step (spawn, timeout, stop);
//! - `output.rs`: stdout / stderr line by line into the execution's sink;
//! - `stats.rs`: durations of past successful runs.
//!
//! Nothing that arrives over the wire becomes part of a command line: a task's params
//! only become environment variables, and only those the job declares.
//!
//! In the sidecar, executions run in a supervisor process each (`supervised_job` gives
//! what it needs; see `crate::supervisor`), which drives them through `start` here.
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Backend, BackendError, ExecutionContext, SupervisedJob};

pub mod config;
mod environment;
mod flow;
mod output;
pub mod params;
mod stats;
mod step;
#[cfg(all(test, unix))]
mod tests;

pub use config::{JobConfig, StepAction, StepConfig};

/// Runs the command jobs of the sidecar config.
pub struct CommandBackend {
    jobs: Vec<Arc<PreparedJob>>,
    stop_grace: Duration,
    max_step_runs: u32,
    /// Executions running now, per job: at most the job's `max_instances` (1 unless
    /// configured, as in SQL Server Agent).
    running: Arc<Mutex<HashMap<String, u32>>>,
    history: Arc<stats::DurationHistory>,
}

struct PreparedJob {
    config: JobConfig,
    /// The resolved step flow, or why the job cannot run.
    plan: Result<flow::Plan, String>,
    /// Each declared parameter's rule, compiled once.
    params: std::collections::BTreeMap<String, params::Rule>,
}

impl CommandBackend {
    /// `jobs` from the config (already validated by the loader; a job that is not valid
    /// anyway is listed as disabled and refused at start). `stop_grace`: how long a
    /// stopped or timed-out step's processes get between SIGTERM and SIGKILL.
    pub fn new(jobs: Vec<JobConfig>, stop_grace: Duration) -> Self {
        let mut seen = BTreeSet::new();
        let jobs = jobs
            .into_iter()
            .map(|config| {
                let rules = config.params.rules();
                let plan = if !seen.insert(config.name.clone()) {
                    Err(format!("job `{}` is defined twice", config.name))
                } else if let Err(e) = &rules {
                    Err(e.clone())
                } else {
                    flow::plan(&config)
                };
                if let Err(e) = &plan {
                    tracing::warn!(job = %config.name, error = %e, "command job cannot run");
                }
                Arc::new(PreparedJob {
                    config,
                    plan,
                    params: rules.unwrap_or_default(),
                })
            })
            .collect();
        Self {
            jobs,
            stop_grace,
            max_step_runs: flow::MAX_STEP_RUNS,
            running: Arc::default(),
            history: Arc::default(),
        }
    }

    /// The first job of that name (a duplicate is refused at start).
    fn job(&self, name: &str) -> Option<&Arc<PreparedJob>> {
        self.jobs.iter().find(|j| j.config.name == name)
    }

    fn describe(&self, job: &PreparedJob) -> proto::Job {
        let config = &job.config;
        let steps = config
            .steps
            .iter()
            .zip(1..)
            .map(|(step, id)| proto::JobStep {
                id,
                name: step.name.clone(),
                subsystem: "command".to_owned(),
                on_success: step.on_success_text().to_owned(),
                on_failure: step.on_failure_text().to_owned(),
                retries: step.retries,
            })
            .collect();
        proto::Job {
            name: config.name.clone(),
            backend: "command".to_owned(),
            enabled: job.plan.is_ok(),
            category: String::new(),
            description: match &job.plan {
                Ok(_) => config.description.clone(),
                Err(e) => format!("cannot run: {e}"),
            },
            steps,
            stats: Some(self.history.stats(&config.name)),
            params: config.params.names(),
            max_instances: config.max_instances,
        }
    }
}

impl CommandBackend {
    /// The job, if it exists, is well configured and declares every param given.
    fn runnable(
        &self,
        name: &str,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<&Arc<PreparedJob>, BackendError> {
        let Some(job) = self.job(name) else {
            return Err(BackendError::NotFound {
                job: name.to_owned(),
                offered: self
                    .jobs
                    .iter()
                    .map(|j| format!("`{}`", j.config.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Err(e) = &job.plan {
            return Err(BackendError::Internal(format!(
                "job `{}` is misconfigured: {e}",
                job.config.name
            )));
        }
        check_params(job, params)?;
        Ok(job)
    }
}

/// Refuses params the job does not declare, and values its rules do not accept (see
/// `params.rs`): before anything is journaled or started.
fn check_params(
    job: &PreparedJob,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<(), BackendError> {
    for (name, value) in params {
        let Some(rule) = job.params.get(name) else {
            let declared = if job.params.is_empty() {
                "it declares none".to_owned()
            } else {
                format!(
                    "it declares: {}",
                    job.params.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(BackendError::InvalidArgument(format!(
                "job `{}` does not declare the parameter `{name}`; {declared}",
                job.config.name
            )));
        };
        // The value itself is not echoed: it may be long, or hold what it must not.
        rule.check(value).map_err(|why| {
            BackendError::InvalidArgument(format!(
                "parameter `{name}` of job `{}` is refused: {why}",
                job.config.name
            ))
        })?;
    }
    Ok(())
}

/// Counts one running execution of a job until dropped.
struct RunningGuard {
    running: Arc<Mutex<HashMap<String, u32>>>,
    job: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = running.get_mut(&self.job) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.job);
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for CommandBackend {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn job_names(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.jobs.iter().map(|j| j.config.name.clone()).collect())
    }

    async fn list_jobs(&self) -> Result<Vec<proto::Job>, BackendError> {
        Ok(self.jobs.iter().map(|j| self.describe(j)).collect())
    }

    fn max_instances(&self, job: &str) -> u32 {
        self.job(job).map_or(1, |job| job.config.max_instances)
    }

    fn loggable_params(&self, job: &str) -> Vec<String> {
        self.job(job).map_or_else(Vec::new, |job| {
            let config = &job.config;
            config
                .params
                .names()
                .into_iter()
                .filter(|name| !config.secret_params.contains(name))
                .collect()
        })
    }

    fn supervised_job(
        &self,
        job: &str,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Option<Result<SupervisedJob, BackendError>> {
        Some(self.runnable(job, params).map(|job| SupervisedJob {
            job: job.config.clone(),
            stop_grace: self.stop_grace,
        }))
    }

    async fn start(&self, ctx: ExecutionContext) -> Result<(), BackendError> {
        let job = self.runnable(&ctx.job, &ctx.params)?.clone();
        let guard = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let n = running.entry(job.config.name.clone()).or_default();
            if *n >= job.config.max_instances {
                return Err(BackendError::AlreadyRunning(job.config.name.clone()));
            }
            *n += 1;
            RunningGuard {
                running: Arc::clone(&self.running),
                job: job.config.name.clone(),
            }
        };

        let (spawned_tx, spawned_rx) = oneshot::channel();
        let stop_grace = self.stop_grace;
        let max_step_runs = self.max_step_runs;
        let history = Arc::clone(&self.history);
        let span = tracing::info_span!("command_job", job = %job.config.name, execution_id = %ctx.execution_id);
        let ctx_events = ctx.events.clone();
        let run = async move {
            let clock = Instant::now();
            let finish = match &job.plan {
                Ok(plan) => {
                    flow::drive(
                        &job.config,
                        plan,
                        &ctx,
                        stop_grace,
                        max_step_runs,
                        Some(spawned_tx),
                    )
                    .await
                }
                Err(e) => flow::Finish {
                    outcome: proto::Outcome::Failed,
                    message: e.clone(),
                },
            };
            if finish.outcome == proto::Outcome::Succeeded {
                let ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
                history.record(&job.config.name, ms);
            }
            tracing::info!(outcome = ?finish.outcome, message = %finish.message, "command job finished");
            // Free the job before Finished is seen, so a start right after it is accepted.
            drop(guard);
            ctx.events
                .emit(Kind::Finished(proto::Finished {
                    outcome: finish.outcome as i32,
                    message: finish.message,
                }))
                .await;
        };
        // Policy on error: the flow reports every failure as events; should it panic, the
        // execution still ends with one Finished event.
        let events = ctx_events;
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if AssertUnwindSafe(run).catch_unwind().await.is_err() {
                    let message = "internal error: the command job's task panicked".to_owned();
                    tracing::error!("{message}");
                    events
                        .emit(Kind::Finished(proto::Finished {
                            outcome: proto::Outcome::Failed as i32,
                            message,
                        }))
                        .await;
                }
            },
            span,
        ));
        // Return once the first step's program was started (or could not be).
        let _ = spawned_rx.await;
        Ok(())
    }
}
