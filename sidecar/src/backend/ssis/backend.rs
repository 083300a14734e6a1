//! `CatalogBackend`: jobs that run a package deployed to the SSIS catalog (`[[catalog_job]]`).
//!
//! Start: the ledger entry with the caller token is written before the start batch; the
//! batch creates, parameterises and starts the execution (`SYNCHRONIZED = 0`). The catalog
//! serialises creations behind a lock and refuses one that waited ~10 s (27195): that is
//! retried with the one backoff helper. After a lost answer, or a restart, the token tells
//! whether the batch created an execution (`ssis_find_by_token`): started (≥ 2) → follow
//! it; created but never started (1) or none → the batch is sent again, which cannot run
//! the package twice (the status-1 execution never runs). A resumed execution whose start
//! was never recorded is closed as LOST, never started late (as `sqlagent`).
//!
//! Each execution is one step (the package): Started, StepStarted, the catalog events of
//! the follower, then StepFinished and Finished from the catalog's terminal status.
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};

use super::config::CatalogJobConfig;
use super::follower::{Follow, Followers, Msg, Target};
use super::ledger::{self, Entry, Ledger, State};
use super::start::Starter;
use super::tracker::{CatalogIdent, CatalogTracker};
use crate::backend::sqlagent::SqlAgentConfig;
use crate::backend::sqlagent::connection::{Conn, Settings};
use crate::backend::{Backend, BackendError, ExecutionContext};

/// The step every catalog job has: the package.
const STEP: u32 = 1;

pub struct CatalogBackend {
    jobs: Vec<CatalogJobConfig>,
    settings: Settings,
    interval: Duration,
    ledger: Ledger,
    starter: Starter,
    followers: Arc<Followers>,
    busy: Arc<Mutex<HashSet<String>>>,
    start_lock: tokio::sync::Mutex<()>,
}

impl CatalogBackend {
    pub fn new(
        jobs: Vec<CatalogJobConfig>,
        conn: &SqlAgentConfig,
        state_dir: &Path,
        followers: Arc<Followers>,
    ) -> Result<Self, BackendError> {
        let settings = Settings::from_config(conn)
            .map_err(BackendError::InvalidArgument)?
            .with_database("SSISDB");
        let ledger = Ledger::open(state_dir).map_err(|e| {
            BackendError::Internal(format!("failed to open the SSIS catalog ledger: {e}"))
        })?;
        Ok(Self {
            jobs,
            starter: Starter::new(Conn::new(settings.clone())),
            settings,
            interval: conn.poll_interval.unwrap_or(Duration::from_secs(1)),
            ledger,
            followers,
            busy: Arc::default(),
            start_lock: Default::default(),
        })
    }

    fn job(&self, name: &str) -> Option<&CatalogJobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// Hands a started execution to the server's follower; a task of its own ends the
    /// execution when the follower is done with it.
    async fn follow(
        &self,
        mut entry: Entry,
        job_name: &str,
        catalog_id: i64,
        ctx: ExecutionContext,
    ) {
        let job = self.job(job_name).cloned();
        let (folder, project, package) = job
            .as_ref()
            .map(|j| (j.folder.clone(), j.project.clone(), j.package_file()))
            .unwrap_or_default();
        let resume = ctx.resume.clone().unwrap_or_default();
        if !resume.started {
            ctx.events
                .emit(Kind::Started(proto::Started { step_count: 1 }))
                .await;
        }
        if resume.open_step.is_none() && !resume.attempts.contains_key(&STEP) {
            ctx.events
                .emit(Kind::StepStarted(proto::StepStarted {
                    step_id: STEP,
                    step_name: package.clone(),
                    attempt: 1,
                }))
                .await;
        }
        let mut tracker = CatalogTracker::new(
            STEP,
            CatalogIdent {
                execution_id: catalog_id,
                server: self.settings.address(),
                folder,
                project,
                package: package.clone(),
            },
        );
        if let Some(r) = resume
            .catalog
            .get(&STEP)
            .filter(|r| r.ident.execution_id == catalog_id)
        {
            tracker.restore(r);
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        self.busy
            .lock()
            .expect("busy lock")
            .insert(job_name.to_string());
        self.followers.send(
            &self.settings,
            self.interval,
            Msg::Follow(Box::new(Follow {
                execution_id: ctx.execution_id.clone(),
                target: Target::Known(tracker),
                sink: ctx.events.clone(),
                stop: Some(ctx.stop.clone()),
                done: done_tx,
            })),
        );
        let (ledger, busy, job_name) =
            (self.ledger.clone(), self.busy.clone(), job_name.to_string());
        let started_ms = entry.created_ms;
        tokio::spawn(async move {
            let (outcome, message, span) = match done_rx.await {
                Ok(Some(e)) => (e.outcome, e.message, e.span),
                // The sidecar is shutting down (the sink closed): the journal resumes it.
                _ => return,
            };
            let status = match outcome {
                proto::Outcome::Succeeded => proto::StepStatus::Succeeded,
                proto::Outcome::Canceled => proto::StepStatus::Canceled,
                _ => proto::StepStatus::Failed,
            };
            // The catalog's own times when it has them (not the sidecar's final sweep).
            let now = agentfleet_common::now_ms();
            let started_ms = span.0.unwrap_or(started_ms);
            let ended_ms = span.1.unwrap_or(now);
            ctx.events
                .emit(Kind::StepFinished(proto::StepFinished {
                    step_id: STEP,
                    step_name: package,
                    status: status as i32,
                    message: message.clone(),
                    duration_ms: (ended_ms - started_ms).max(0) as u64,
                    attempt: 1,
                    started_at_ms: started_ms,
                    ..Default::default()
                }))
                .await;
            ctx.events
                .emit(Kind::Finished(proto::Finished {
                    outcome: outcome as i32,
                    message: message.clone(),
                }))
                .await;
            entry.state = State::Finished;
            entry.outcome = Some(outcome as i32);
            entry.message = Some(message);
            let _ = ledger.put(&entry);
            busy.lock().expect("busy lock").remove(&job_name);
        });
    }

    async fn close(
        ctx: ExecutionContext,
        outcome: proto::Outcome,
        message: String,
    ) -> Result<(), BackendError> {
        tracing::warn!(execution_id = %ctx.execution_id, job = %ctx.job, %message, "closing a catalog execution without following it");
        ctx.events
            .emit(Kind::Finished(proto::Finished {
                outcome: outcome as i32,
                message,
            }))
            .await;
        Ok(())
    }

    async fn resume(&self, mut entry: Entry, ctx: ExecutionContext) -> Result<(), BackendError> {
        match (entry.state, entry.catalog_execution_id) {
            (State::Finished, _) => {
                let outcome = entry
                    .outcome
                    .and_then(|o| proto::Outcome::try_from(o).ok())
                    .unwrap_or(proto::Outcome::Lost);
                Self::close(
                    ctx,
                    outcome,
                    entry
                        .message
                        .unwrap_or_else(|| "finished before the sidecar restarted".into()),
                )
                .await
            }
            (State::Started, Some(id)) => {
                let name = entry.job_name.clone();
                self.follow(entry, &name, id, ctx).await;
                Ok(())
            }
            _ => {
                // The start's outcome is unknown: the token tells.
                let job = self.job(&entry.job_name).cloned().ok_or_else(|| {
                    BackendError::Internal(format!(
                        "catalog job `{}` is no longer in the config",
                        entry.job_name
                    ))
                })?;
                let id = match self.starter.recover(&entry).await? {
                    Some(id) => id,
                    None if ctx.resume.is_some()
                        && self
                            .starter
                            .find_by_token(&entry.token)
                            .await
                            .ok()
                            .flatten()
                            .is_none() =>
                    {
                        entry.state = State::Finished;
                        entry.outcome = Some(proto::Outcome::Lost as i32);
                        let message = format!(
                            "the sidecar restarted before the catalog confirmed the start of `{}`, and SSISDB has no execution of it; it is not started now",
                            entry.job_name
                        );
                        entry.message = Some(message.clone());
                        let _ = self.ledger.put(&entry);
                        return Self::close(ctx, proto::Outcome::Lost, message).await;
                    }
                    // Created but never started (status 1): that one will never run; start.
                    None => {
                        self.starter
                            .run_start(&job, &entry, &Starter::params_json(&job, &ctx.params)?)
                            .await?
                    }
                };
                entry.state = State::Started;
                entry.catalog_execution_id = Some(id);
                let _ = self.ledger.put(&entry);
                let name = entry.job_name.clone();
                self.follow(entry, &name, id, ctx).await;
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl Backend for CatalogBackend {
    fn kind(&self) -> &'static str {
        "ssis"
    }

    async fn job_names(&self) -> Result<Vec<String>, BackendError> {
        Ok(self.jobs.iter().map(|j| j.name.clone()).collect())
    }

    async fn list_jobs(&self) -> Result<Vec<proto::Job>, BackendError> {
        Ok(self
            .jobs
            .iter()
            .map(|j| proto::Job {
                name: j.name.clone(),
                backend: "ssis".into(),
                enabled: true,
                category: "SSIS catalog".into(),
                description: j.description.clone().unwrap_or_else(|| {
                    format!(
                        "\\SSISDB\\{}\\{}\\{}",
                        j.folder,
                        j.project,
                        j.package_file()
                    )
                }),
                steps: vec![proto::JobStep {
                    id: STEP,
                    name: j.package_file(),
                    subsystem: "SSIS".into(),
                    on_success: "succeed".into(),
                    on_failure: "fail".into(),
                    retries: 0,
                }],
                params: j.params.iter().map(|p| p.name.clone()).collect(),
                max_instances: 1,
                ..Default::default()
            })
            .collect())
    }

    fn loggable_params(&self, job: &str) -> Vec<String> {
        self.job(job).map_or_else(Vec::new, |j| {
            j.params
                .iter()
                .filter(|p| !p.sensitive)
                .map(|p| p.name.clone())
                .collect()
        })
    }

    fn resumes_after_restart(&self) -> bool {
        true
    }

    async fn start(&self, ctx: ExecutionContext) -> Result<(), BackendError> {
        let _serial = self.start_lock.lock().await;
        match self.ledger.get(&ctx.execution_id) {
            Ok(Some(entry)) => return self.resume(entry, ctx).await,
            Err(why) => {
                let message = format!(
                    "the sidecar restarted and this execution's catalog start ledger entry cannot be read ({why}); whether the package started is unknown: check SSISDB's executions before running it again"
                );
                return Self::close(ctx, proto::Outcome::Lost, message).await;
            }
            Ok(None) if ctx.resume.is_some() => {
                return Self::close(ctx, proto::Outcome::Lost, "the sidecar restarted before the start of this catalog package was recorded; it was not started, and is not started late".into()).await;
            }
            Ok(None) => {}
        }
        let job = self
            .job(&ctx.job)
            .cloned()
            .ok_or_else(|| BackendError::NotFound {
                job: ctx.job.clone(),
                offered: self
                    .jobs
                    .iter()
                    .map(|j| j.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let params = Starter::params_json(&job, &ctx.params)?;
        if self.busy.lock().expect("busy lock").contains(&job.name) {
            return Err(BackendError::AlreadyRunning(job.name));
        }
        let mut entry = Entry {
            execution_id: ctx.execution_id.clone(),
            job_name: job.name.clone(),
            token: ledger::token(&ctx.execution_id),
            state: State::Starting,
            catalog_execution_id: None,
            created_ms: agentfleet_common::now_ms(),
            outcome: None,
            message: None,
        };
        // Never send the start batch without a durable record of the attempt.
        self.ledger.put(&entry).map_err(|e| {
            BackendError::Internal(format!("failed to write the catalog start ledger: {e}"))
        })?;
        match self.starter.run_start(&job, &entry, &params).await {
            Ok(id) => {
                entry.state = State::Started;
                entry.catalog_execution_id = Some(id);
                let _ = self.ledger.put(&entry);
                self.follow(entry, &job.name, id, ctx).await;
                Ok(())
            }
            Err(e) => {
                self.ledger.remove(&entry.execution_id);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_parameters_never_reach_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let conn: SqlAgentConfig = toml::from_str(
            "server = \"tcp:127.0.0.1,1\"\nauth = \"windows\"\nuser = 'CONTOSO\\etl'\npassword_env = \"PATH\"\n",
        )
        .unwrap();
        let job: CatalogJobConfig = toml::from_str(
            "name=\"J\"\nfolder=\"F\"\nproject=\"P\"\npackage=\"x\"\nparams=[{name=\"Region\"}, {name=\"CM.Src.Password\", sensitive=true}]\n",
        )
        .unwrap();
        let b = CatalogBackend::new(vec![job], &conn, dir.path(), Arc::default()).unwrap();
        assert_eq!(b.loggable_params("J"), ["Region"]);
        assert_eq!(b.kind(), "ssis");
    }
}
