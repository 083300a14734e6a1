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
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto::{self, event::Kind};

use super::config::CatalogJobConfig;
use super::follower::{Follow, Followers, Msg, Target};
use super::ledger::{self, Entry, Ledger, State};
use super::queries;
use super::tracker::{CatalogIdent, CatalogTracker};
use crate::backend::sqlagent::SqlAgentConfig;
use crate::backend::sqlagent::connection::{Conn, Settings, SqlError};
use crate::backend::sqlagent::rows;
use crate::backend::{Backend, BackendError, ExecutionContext};

/// How long starts refused with 27195 (the catalog's creation lock) are retried.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(90);
/// How long a start whose answer was lost is looked for by its token.
const RECOVER_FOR: Duration = Duration::from_secs(60);
/// The step every catalog job has: the package.
const STEP: u32 = 1;

pub struct CatalogBackend {
    jobs: Vec<CatalogJobConfig>,
    settings: Settings,
    interval: Duration,
    ledger: Ledger,
    control: tokio::sync::Mutex<Conn>,
    followers: Arc<Followers>,
    busy: Arc<Mutex<HashSet<String>>>,
    start_lock: tokio::sync::Mutex<()>,
}

/// What the start batch answered.
#[derive(Debug, Default)]
struct StartRow {
    execution_id: Option<i64>,
    stage: String,
    error_number: Option<i32>,
    error_message: Option<String>,
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
            control: tokio::sync::Mutex::new(Conn::new(settings.clone())),
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

    /// The parameters as the start batch takes them (JSON), refusing undeclared ones.
    fn params_json(
        job: &CatalogJobConfig,
        params: &BTreeMap<String, String>,
    ) -> Result<String, BackendError> {
        let mut list = Vec::new();
        for (name, value) in params {
            let p = job.param(name).ok_or_else(|| {
                let declared: Vec<&str> = job.params.iter().map(|p| p.name.as_str()).collect();
                BackendError::InvalidArgument(format!(
                    "catalog job `{}` does not declare parameter `{name}` (declared: {}); add it to the job's params in the sidecar config",
                    job.name,
                    if declared.is_empty() { "none".to_string() } else { declared.join(", ") }
                ))
            })?;
            p.check_value(value)
                .map_err(BackendError::InvalidArgument)?;
            list.push(serde_json::json!({"t": p.object_type_code(), "n": p.name, "v": p.wire_value(value), "ty": p.data_type}));
        }
        Ok(serde_json::Value::Array(list).to_string())
    }

    async fn start_batch(
        &self,
        job: &CatalogJobConfig,
        token: &str,
        params: &str,
    ) -> Result<StartRow, SqlError> {
        let folder = job.folder.as_str();
        let project = job.project.as_str();
        let package = job.package_file();
        let reference = job.environment_reference;
        let use32 = job.use32bit;
        let level: i32 = job.logging_level.map_or(1, |l| l.value());
        let sets = self
            .control
            .lock()
            .await
            .query(
                queries::SSIS_START,
                &[
                    &folder,
                    &project,
                    &package.as_str(),
                    &reference,
                    &use32,
                    &level,
                    &token,
                    &params,
                ],
            )
            .await?;
        let r = sets.first().and_then(|s| s.first());
        Ok(r.map(|r| StartRow {
            execution_id: rows::int(r, "execution_id"),
            stage: rows::string(r, "stage").unwrap_or_default(),
            error_number: rows::int32(r, "error_number"),
            error_message: rows::string(r, "error_message"),
        })
        .unwrap_or_default())
    }

    /// The execution a start batch with `token` created: (id, status), the most advanced.
    async fn find_by_token(&self, token: &str) -> Result<Option<(i64, i32)>, SqlError> {
        let sets = self
            .control
            .lock()
            .await
            .query(queries::SSIS_FIND_BY_TOKEN, &[&token])
            .await?;
        Ok(sets
            .first()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some((
                    rows::int(r, "execution_id")?,
                    rows::int32(r, "status").unwrap_or(0),
                ))
            })
            .max_by_key(|(id, status)| (*status != 1, *id)))
    }

    /// Sends the start batch until it started, retrying 27195 with backoff and looking the
    /// token up after a lost answer. Ok: the started execution's id.
    async fn run_start(
        &self,
        job: &CatalogJobConfig,
        entry: &Entry,
        params: &str,
    ) -> Result<i64, BackendError> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
        let t0 = std::time::Instant::now();
        loop {
            agentfleet_common::fault::point("ssis-before-start-batch");
            match self.start_batch(job, &entry.token, params).await {
                Ok(r) if r.stage == "started" && r.error_number.is_none() => {
                    return r.execution_id.ok_or_else(|| {
                        BackendError::Internal("the start batch returned no execution id".into())
                    });
                }
                Ok(r) if r.error_number == Some(27195) && t0.elapsed() < BUSY_RETRY_FOR => {
                    let d = backoff.next_delay();
                    tracing::info!(execution_id = %entry.execution_id, attempt = backoff.attempts(), delay_ms = d.as_millis() as u64, "the SSIS catalog is busy creating other executions (27195); retrying the start");
                    tokio::time::sleep(d).await;
                }
                Ok(r) => return Err(map_start_error(job, &r)),
                Err(SqlError::Server {
                    number, message, ..
                }) => {
                    return Err(map_start_error(
                        job,
                        &StartRow {
                            error_number: Some(number),
                            error_message: Some(message),
                            ..Default::default()
                        },
                    ));
                }
                Err(SqlError::Login { number, message }) => {
                    return Err(BackendError::Unavailable(format!(
                        "SQL Server refused the sidecar's catalog login (error {number}): {message}"
                    )));
                }
                Err(e) => {
                    tracing::warn!(execution_id = %entry.execution_id, error = %e, "the start batch's answer was lost; looking for its execution by token");
                    if let Some(id) = self.recover(entry).await? {
                        return Ok(id);
                    }
                    if t0.elapsed() > RECOVER_FOR {
                        return Err(BackendError::Unavailable(format!(
                            "cannot reach SSISDB to start `{}` ({e}); retry StartJob: it will not start the package twice",
                            job.name
                        )));
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// After a lost answer: `Some(id)` when the token's execution was started; `None` when
    /// there is none, or it was created and never started (sending the batch again is safe).
    async fn recover(&self, entry: &Entry) -> Result<Option<i64>, BackendError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let t0 = std::time::Instant::now();
        loop {
            match self.find_by_token(&entry.token).await {
                Ok(Some((id, status))) if status >= 2 => return Ok(Some(id)),
                Ok(_) => return Ok(None),
                Err(e) if t0.elapsed() < RECOVER_FOR => {
                    tracing::debug!(error = %e, "token lookup failed; retrying");
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    return Err(BackendError::Unavailable(format!(
                        "cannot reach SSISDB to confirm whether execution {} started ({e}); retry StartJob later: it will not start the package twice",
                        entry.execution_id
                    )));
                }
            }
        }
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
                let id = match self.recover(&entry).await? {
                    Some(id) => id,
                    None if ctx.resume.is_some()
                        && self
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
                        self.run_start(&job, &entry, &Self::params_json(&job, &ctx.params)?)
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

fn map_start_error(job: &CatalogJobConfig, r: &StartRow) -> BackendError {
    let n = r.error_number.unwrap_or(0);
    let msg = r.error_message.clone().unwrap_or_default();
    let path = format!(
        "\\SSISDB\\{}\\{}\\{}",
        job.folder,
        job.project,
        job.package_file()
    );
    match n {
        27123 => BackendError::PermissionDenied(format!(
            "SSISDB refuses to start packages for a SQL Server login (error 27123): catalog job `{}` needs Windows authentication; set auth = \"windows\" in [ssis] (on Linux with user = 'DOMAIN\\name' and a password source, for NTLM)",
            job.name
        )),
        27146 => BackendError::InvalidArgument(format!(
            "the catalog has no package {path}, or the sidecar's login cannot read it (error 27146): check folder, project and package in the config, and grant READ on the project"
        )),
        27178 => BackendError::PermissionDenied(format!(
            "the sidecar's login may not execute project `{}` (error 27178): grant it EXECUTE on the project",
            job.project
        )),
        27195 => BackendError::Unavailable(format!(
            "the SSIS catalog stayed busy creating other executions (error 27195) for {}s; retry",
            BUSY_RETRY_FOR.as_secs()
        )),
        27176 | 27147 | 27217 | 27184 | 27208 | 27182 => BackendError::InvalidArgument(format!(
            "the catalog refused the start of {path} (error {n}): {msg}"
        )),
        916 | 4060 | 229 => BackendError::PermissionDenied(format!(
            "the sidecar's login cannot use SSISDB (error {n}): {msg}"
        )),
        _ => BackendError::Internal(format!(
            "the catalog refused the start of {path} at stage `{}` (error {n}): {msg}",
            r.stage
        )),
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
            j.params.iter().map(|p| p.name.clone()).collect()
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
        let params = Self::params_json(&job, &ctx.params)?;
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
        match self.run_start(&job, &entry, &params).await {
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

    fn job() -> CatalogJobConfig {
        toml::from_str("name=\"J\"\nfolder=\"F\"\nproject=\"P\"\npackage=\"Pkg\"\nparams=[{name=\"N\", type=\"Int32\", object_type=\"package\"}]\n").unwrap()
    }

    #[test]
    fn params_become_typed_json_and_undeclared_ones_are_refused() {
        let p = BTreeMap::from([("N".to_string(), "42".to_string())]);
        let json: serde_json::Value =
            serde_json::from_str(&CatalogBackend::params_json(&job(), &p).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"t": 30, "n": "N", "v": "42", "ty": "Int32"}])
        );
        let bad = BTreeMap::from([("X".to_string(), "1".to_string())]);
        assert!(
            matches!(CatalogBackend::params_json(&job(), &bad), Err(BackendError::InvalidArgument(m)) if m.contains("does not declare parameter `X`"))
        );
        let mistyped = BTreeMap::from([("N".to_string(), "forty".to_string())]);
        assert!(CatalogBackend::params_json(&job(), &mistyped).is_err());
    }

    #[test]
    fn a_sql_login_refusal_says_what_to_do() {
        let e = map_start_error(
            &job(),
            &StartRow {
                error_number: Some(27123),
                ..Default::default()
            },
        );
        assert!(
            matches!(&e, BackendError::PermissionDenied(m) if m.contains("Windows authentication") && m.contains("27123")),
            "{e}"
        );
        assert!(matches!(
            map_start_error(
                &job(),
                &StartRow {
                    error_number: Some(27195),
                    ..Default::default()
                }
            ),
            BackendError::Unavailable(_)
        ));
        assert!(
            matches!(map_start_error(&job(), &StartRow { error_number: Some(27146), ..Default::default() }), BackendError::InvalidArgument(m) if m.contains("Pkg.dtsx"))
        );
    }
}
