//! `SqlAgentBackend`: lists SQL Server Agent jobs and starts them with the start handshake
//! (pre-read, ledger, start batch), handing each run to the poller.
//!
//! Resuming after a sidecar restart (`ExecutionContext::resume`): the ledger decides that
//! the run is re-attached (never a second `sp_start_job`), and a resume only ever
//! *follows* a run the ledger proves was bound: no entry (a crash before it was written),
//! an unreadable one, or a start the Agent shows no trace of, closes the execution as
//! LOST and never calls `sp_start_job` late. The journal decides where its
//! history continues (the largest `instance_id` its events carry), because only what the
//! journal holds was shown. A ledger that says Finished while the journal lacks some of
//! the run's rows (a crash before they were journaled) has the run followed again from
//! the journal, so its last steps and outcome are journaled, once. See `follower`.
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentfleet_common::proto;
use chrono::NaiveDateTime;
use tiberius::{Row, ToSql, Uuid};
use tokio::sync::mpsc;

use super::SqlAgentConfig;
use super::catalog::{self, JobFilter};
use super::connection::{Conn, Settings, SqlError};
use super::errors::map_start_error;
use super::follower::{self, Busy, Follow};
use super::ledger::{self, Entry, Evidence, Ledger, Lookup, Reconcile};
use super::poll::poll;
use super::queries;
use super::rows::{self, JobDef, ProcResult};
use super::tracker::Tracker;
use crate::backend::ssis::agent_step::{AgentSteps, CatalogAccess};
use crate::backend::ssis::follower::Followers;
use crate::backend::{Backend, BackendError, ExecutionContext};

/// How long to look for a run whose start reply was lost before starting again.
const RECONCILE_GRACE: Duration = Duration::from_secs(30);
/// A read that timed out (1222) behind the history row limiter's `TABLOCKX` is repeated
/// this many times, this far apart (the limiter holds its lock for moments; each attempt
/// already waited `SET LOCK_TIMEOUT` for it).
const LOCK_RETRIES: u32 = 5;
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(250);
const TIME_FMT: &str = "%Y-%m-%d %H:%M:%S";

pub struct SqlAgentBackend {
    filter: JobFilter,
    /// Where the catalog executions of SSIS steps are read.
    catalog: CatalogAccess,
    control: Arc<tokio::sync::Mutex<Conn>>,
    ledger: Ledger,
    busy: Busy,
    follow: mpsc::UnboundedSender<Follow>,
    /// Starts are serialized: the pre-read, ledger write and start batch of one job must not
    /// interleave with another start of the same job.
    start_lock: tokio::sync::Mutex<()>,
    login: Mutex<Option<String>>,
}

impl SqlAgentBackend {
    /// Reads the config (password included) and spawns the poller. An unreachable server is
    /// not an error here: connections are (re)opened on use.
    pub async fn connect(cfg: &SqlAgentConfig, state_dir: &Path) -> Result<Self, BackendError> {
        Self::connect_with(cfg, state_dir, Arc::default()).await
    }

    /// `connect`, with the catalog pollers that follow SSIS steps' executions shared with
    /// the catalog backend (one poller per server and login).
    pub async fn connect_with(
        cfg: &SqlAgentConfig,
        state_dir: &Path,
        followers: Arc<Followers>,
    ) -> Result<Self, BackendError> {
        let settings = Settings::from_config(cfg).map_err(BackendError::InvalidArgument)?;
        let filter = JobFilter::new(&cfg.allow_jobs).map_err(BackendError::InvalidArgument)?;
        let ledger = Ledger::open(state_dir).map_err(|e| {
            BackendError::Internal(format!(
                "failed to open the SQL Agent ledger in {}: {e}",
                state_dir.display()
            ))
        })?;
        ledger.prune(
            Duration::from_secs(7 * 24 * 3600),
            agentfleet_common::now_ms(),
        );
        let control = Arc::new(tokio::sync::Mutex::new(Conn::new(settings.clone())));
        let busy: Busy = Arc::default();
        let follow = follower::spawn(follower::Deps {
            settings: settings.clone(),
            control: control.clone(),
            ledger: ledger.clone(),
            base_interval: cfg.poll_interval.unwrap_or(Duration::from_secs(1)),
            busy: busy.clone(),
        });
        let catalog = CatalogAccess {
            followers,
            settings: settings.clone().with_database("SSISDB"),
            interval: cfg.poll_interval.unwrap_or(Duration::from_secs(1)),
        };
        let me = Self {
            catalog,
            filter,
            control,
            ledger,
            busy,
            follow,
            start_lock: Default::default(),
            login: Mutex::new(None),
        };
        if let Err(e) = me.login().await {
            tracing::warn!(server = %settings.address(), error = %e, "SQL Server not usable yet; will retry on use");
        }
        Ok(me)
    }

    /// Executions the ledger holds that have not finished (to hand back to `start` after a
    /// restart, with their original execution ids).
    pub fn unfinished_executions(&self) -> Vec<(String, String)> {
        self.ledger
            .unfinished()
            .into_iter()
            .map(|e| (e.execution_id, e.job_name))
            .collect()
    }

    /// A read on the control connection. Reads are safe to repeat, so one broken (stale)
    /// connection is retried once on a fresh one, and a lock timeout (1222) behind the
    /// history row limiter a few times. `start_job` never goes through here.
    async fn query(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Vec<Row>>, BackendError> {
        let mut attempt = 0;
        loop {
            let result = {
                let mut conn = self.control.lock().await;
                match conn.query(sql, params).await {
                    Err(SqlError::Connection(_)) => conn.query(sql, params).await,
                    other => other,
                }
            };
            match result {
                Err(SqlError::Server { number: 1222, .. }) if attempt < LOCK_RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(LOCK_RETRY_DELAY).await;
                }
                other => return other.map_err(sql_to_backend),
            }
        }
    }

    /// The start batch. A lock timeout on its watermark read (1222 with `rc` NULL) means
    /// `sp_start_job` was not called, so the batch is sent again; nothing else is repeated.
    async fn start_batch(&self, job_id: Uuid) -> Result<Vec<Vec<Row>>, SqlError> {
        let mut attempt = 0;
        loop {
            let result = self
                .control
                .lock()
                .await
                .query(queries::START_JOB, &[&job_id])
                .await;
            if let Ok(sets) = &result {
                let r = sets
                    .first()
                    .and_then(|s| s.first())
                    .map(ProcResult::from_row)
                    .unwrap_or_default();
                if r.err_number == Some(1222) && r.rc.is_none() && attempt < LOCK_RETRIES {
                    attempt += 1;
                    tracing::info!(%job_id, attempt, "the start batch's watermark read timed out behind the history row limiter; sp_start_job was not called, sending it again");
                    tokio::time::sleep(LOCK_RETRY_DELAY).await;
                    continue;
                }
            }
            return result;
        }
    }

    async fn login(&self) -> Result<Option<String>, BackendError> {
        if let Some(l) = self.login.lock().expect("login lock").clone() {
            return Ok(Some(l));
        }
        let sets = self.query(queries::SERVER_INFO, &[]).await?;
        let login = sets
            .first()
            .and_then(|s| s.first())
            .and_then(|r| rows::string(r, "login_name"));
        *self.login.lock().expect("login lock") = login.clone();
        Ok(login)
    }

    async fn offered(&self) -> String {
        self.job_names()
            .await
            .map(|n| n.join(", "))
            .unwrap_or_else(|e| format!("(could not list jobs: {e})"))
    }

    async fn resolve(&self, name: &str) -> Result<Vec<JobDef>, BackendError> {
        let sets = self.query(queries::RESOLVE_JOB, &[&name]).await?;
        let empty = Vec::new();
        Ok(rows::jobs_with_steps(
            sets.first().unwrap_or(&empty),
            sets.get(1).unwrap_or(&empty),
        ))
    }

    async fn resolve_one(&self, name: &str) -> Result<JobDef, BackendError> {
        let not_found = |offered| BackendError::NotFound {
            job: name.to_string(),
            offered,
        };
        if !self.filter.allows(name) {
            return Err(not_found(self.offered().await));
        }
        let mut jobs = self.resolve(name).await?;
        match jobs.len() {
            0 => Err(not_found(self.offered().await)),
            1 => Ok(jobs.remove(0)),
            n => Err(BackendError::InvalidArgument(format!(
                "there are {n} SQL Server Agent jobs named `{name}`; rename them so names are unique"
            ))),
        }
    }

    /// A new start: checks, pre-read, ledger, start batch.
    async fn fresh_start(&self, job: JobDef, ctx: ExecutionContext) -> Result<(), BackendError> {
        if !job.enabled {
            return Err(BackendError::Disabled(job.name));
        }
        match job.job_type {
            1 => {}
            2 => {
                return Err(BackendError::InvalidArgument(format!(
                    "`{}` is a multi-server job; start it on its target servers",
                    job.name
                )));
            }
            _ => {
                return Err(BackendError::InvalidArgument(format!(
                    "`{}` has no target server (run sp_add_jobserver for it)",
                    job.name
                )));
            }
        }
        if self.busy.lock().expect("busy lock").contains(&job.job_id) {
            return Err(BackendError::AlreadyRunning(job.name));
        }
        let sets = self.query(queries::START_PROBE, &[&job.job_id]).await?;
        let probe = sets
            .first()
            .and_then(|s| s.first())
            .ok_or_else(|| BackendError::Internal("start_probe returned no row".into()))?;
        if rows::int(probe, "running").unwrap_or(0) != 0 {
            match rows::int(probe, "agent_connected") {
                // The newest session's row of an Agent that is down: a ghost, not a run.
                Some(0) => {
                    return Err(BackendError::Unavailable(format!(
                        "SQL Server Agent is not running on this server (the service is stopped); start the SQL Server Agent service and retry `{}`",
                        job.name
                    )));
                }
                Some(_) => {
                    return Err(BackendError::AlreadyRunning(format!(
                        "{} (started outside this sidecar)",
                        job.name
                    )));
                }
                // Without VIEW SERVER STATE a ghost cannot be told from a run: the Agent
                // decides (sp_start_job refuses a running job with 22022).
                None => {}
            }
        }
        let mut entry = Entry {
            execution_id: ctx.execution_id.clone(),
            job_id: job.job_id.to_string(),
            job_name: job.name.clone(),
            state: ledger::State::Starting,
            agent_session_id: rows::int32(probe, "agent_session_id"),
            history_watermark: rows::int32(probe, "history_watermark").unwrap_or(0),
            cursor: 0,
            requested_not_before: rows::datetime(probe, "requested_not_before")
                .map(|t| t.format(TIME_FMT).to_string()),
            server_started: None,
            login: self.login().await.ok().flatten(),
            created_ms: agentfleet_common::now_ms(),
            outcome: None,
            message: None,
        };
        entry.cursor = entry.history_watermark;
        agentfleet_common::fault::point("sqlagent-before-ledger");
        // Never call sp_start_job without a durable record of the attempt.
        self.ledger.put(&entry).map_err(|e| {
            BackendError::Internal(format!("failed to write the start ledger: {e}"))
        })?;
        self.busy.lock().expect("busy lock").insert(job.job_id);
        agentfleet_common::fault::point("sqlagent-before-start-batch");
        let refuse = |this: &Self, n: i32, msg: String, job: &JobDef| {
            this.ledger.remove(&entry.execution_id);
            this.busy.lock().expect("busy lock").remove(&job.job_id);
            (n, msg)
        };
        let outcome = self.start_batch(job.job_id).await;
        let (n, msg) = match outcome {
            Ok(sets) => {
                let r = sets
                    .first()
                    .and_then(|s| s.first())
                    .map(ProcResult::from_row)
                    .unwrap_or_default();
                match (r.err_number, r.rc) {
                    (None, Some(0)) => {
                        entry.state = ledger::State::Started;
                        entry.agent_session_id = r.agent_session_id.or(entry.agent_session_id);
                        entry.history_watermark =
                            r.history_watermark.unwrap_or(entry.history_watermark);
                        entry.cursor = entry.history_watermark;
                        if let Some(t) = r.requested_not_before {
                            entry.requested_not_before = Some(t.format(TIME_FMT).to_string());
                        }
                        let _ = self.ledger.put(&entry);
                        self.follow_entry(&entry, job, ctx);
                        return Ok(());
                    }
                    (Some(n), _) => refuse(self, n, r.err_message.unwrap_or_default(), &job),
                    (None, rc) => refuse(self, 0, format!("sp_start_job returned {rc:?}"), &job),
                }
            }
            Err(SqlError::Server {
                number, message, ..
            }) => refuse(self, number, message, &job),
            // The reply is lost: the Agent may or may not have the request. Find out.
            Err(e) => {
                tracing::warn!(execution_id = %ctx.execution_id, error = %e, "start reply lost; reconciling");
                return Box::pin(self.reconcile(entry, job, ctx)).await;
            }
        };
        let offered = if n == 14262 {
            self.offered().await
        } else {
            String::new()
        };
        Err(map_start_error(n, &msg, &job.name, &offered))
    }

    fn follow_entry(&self, entry: &Entry, job: JobDef, ctx: ExecutionContext) {
        let rnb = entry
            .requested_not_before
            .as_deref()
            .and_then(|t| NaiveDateTime::parse_from_str(t, TIME_FMT).ok());
        let mut tracker = Tracker::new(
            job,
            entry.agent_session_id,
            None,
            entry.history_watermark,
            rnb,
            agentfleet_common::now_ms(),
        );
        tracker.cursor = entry.cursor.max(entry.history_watermark);
        if let Some(r) = &ctx.resume {
            // The journal is the truth; the ledger's cursor only for an older journal
            // whose step results carry no history ids.
            let cursor = if r.untagged_results {
                tracker.cursor
            } else {
                i32::try_from(r.last_history_id)
                    .unwrap_or(i32::MAX)
                    .max(entry.history_watermark)
            };
            tracker.restore(cursor, r);
        }
        self.busy
            .lock()
            .expect("busy lock")
            .insert(tracker.job.job_id);
        let ssis = AgentSteps::new(
            self.catalog.clone(),
            ctx.resume.map(|r| r.catalog).unwrap_or_default(),
            entry.created_ms,
        );
        let _ = self.follow.send(Follow {
            execution_id: ctx.execution_id,
            tracker,
            sink: ctx.events,
            stop: ctx.stop,
            ssis,
        });
    }

    /// A `Starting` entry: the outcome of `sp_start_job` is unknown. Look for the run before
    /// ever calling `sp_start_job` again (sqlagent-msdb §8.4).
    async fn reconcile(
        &self,
        mut entry: Entry,
        job: JobDef,
        ctx: ExecutionContext,
    ) -> Result<(), BackendError> {
        let t0 = Instant::now();
        let login = entry.login.clone();
        loop {
            let result = {
                let mut conn = self.control.lock().await;
                poll(&mut conn, &[(job.job_id, entry.history_watermark)], true).await
            };
            let r = match result {
                Ok(r) => r,
                Err(e) if t0.elapsed() < RECONCILE_GRACE * 2 => {
                    tracing::debug!(error = %e, "reconcile poll failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Err(e) => {
                    return Err(BackendError::Unavailable(format!(
                        "cannot reach SQL Server to confirm whether execution {} started ({e}); retry StartJob later: it will not start the job twice",
                        ctx.execution_id
                    )));
                }
            };
            let probe = Tracker::new(
                job.clone(),
                entry.agent_session_id,
                None,
                entry.history_watermark,
                parse_time(&entry.requested_not_before),
                0,
            );
            let live = r.live.get(&job.job_id);
            let ev = Evidence {
                history_after_watermark: r.rows.get(&job.job_id).is_some_and(|v| !v.is_empty()),
                activity_accepted: r
                    .activity
                    .get(&job.job_id)
                    .is_some_and(|a| probe.accepts(a)),
                live_running_for_us: live.is_some_and(|l| {
                    l.running
                        && l.request_source == 4
                        && l.request_source_id
                            .as_deref()
                            .zip(login.as_deref())
                            .is_some_and(|(r, l)| same_requester(r, l))
                }),
            };
            match ledger::reconcile(
                &entry,
                ev,
                r.heartbeat.agent_session_id,
                t0.elapsed(),
                RECONCILE_GRACE,
            ) {
                Reconcile::Bound => {
                    entry.state = ledger::State::Started;
                    let _ = self.ledger.put(&entry);
                    self.follow_entry(&entry, job, ctx);
                    return Ok(());
                }
                Reconcile::Wait => tokio::time::sleep(Duration::from_millis(500)).await,
                // After a restart nobody waits for this start any more (the coordinator
                // has moved on, maybe to another server): never start it late.
                Reconcile::SafeToStart if ctx.resume.is_some() => {
                    self.busy.lock().expect("busy lock").remove(&job.job_id);
                    let message = format!(
                        "the sidecar restarted before SQL Server Agent confirmed the start of `{}`, and the Agent shows no run of it since; it is not started now (a late start would run it with nobody watching)",
                        job.name
                    );
                    entry.state = ledger::State::Finished;
                    entry.outcome = Some(proto::Outcome::Lost as i32);
                    entry.message = Some(message.clone());
                    let _ = self.ledger.put(&entry);
                    return close_unconfirmed(ctx, message).await;
                }
                // Within the StartJob call that asked for it: the caller still waits.
                Reconcile::SafeToStart => {
                    self.ledger.remove(&entry.execution_id);
                    self.busy.lock().expect("busy lock").remove(&job.job_id);
                    return Box::pin(self.fresh_start(job, ctx)).await;
                }
            }
        }
    }

    /// StartJob for an execution id the ledger already knows (a repeated call, or a resume
    /// after a sidecar restart): never starts the job again.
    async fn resume(&self, mut entry: Entry, ctx: ExecutionContext) -> Result<(), BackendError> {
        let job_id = Uuid::parse_str(&entry.job_id)
            .map_err(|e| BackendError::Internal(format!("bad ledger entry: {e}")))?;
        if entry.state == ledger::State::Finished && journal_behind(&entry, &ctx) {
            tracing::info!(execution_id = %ctx.execution_id, "the ledger says finished but the journal lacks the run's last history rows; following them again");
            entry.state = ledger::State::Started;
        }
        if self.busy.lock().expect("busy lock").contains(&job_id)
            && entry.state != ledger::State::Finished
        {
            return Err(BackendError::AlreadyRunning(entry.job_name));
        }
        if entry.state == ledger::State::Finished {
            let outcome = entry.outcome.unwrap_or(proto::Outcome::Lost as i32);
            let message = entry
                .message
                .unwrap_or_else(|| "finished before the sidecar restarted".into());
            ctx.events
                .emit(proto::event::Kind::Finished(proto::Finished {
                    outcome,
                    message,
                }))
                .await;
            return Ok(());
        }
        let job = match self
            .resolve(&entry.job_name)
            .await?
            .into_iter()
            .find(|j| j.job_id == job_id)
        {
            Some(j) => j,
            None => JobDef {
                job_id,
                name: entry.job_name.clone(),
                ..Default::default()
            },
        };
        if entry.state == ledger::State::Starting {
            return self.reconcile(entry, job, ctx).await;
        }
        self.follow_entry(&entry, job, ctx);
        Ok(())
    }
}

/// What a resumed execution without a ledger entry is closed with: the entry is written
/// before `sp_start_job` is ever called, so without one the job was not started.
const NOT_STARTED_BEFORE_RESTART: &str = "the sidecar restarted before the start of this SQL Server Agent job was recorded; it was not started, and is not started late";

/// Ends a resumed execution whose start was never confirmed as LOST, without calling
/// `sp_start_job`: a start now could come days after the coordinator asked for it, with
/// nobody watching, while the coordinator may already have run the task elsewhere.
async fn close_unconfirmed(ctx: ExecutionContext, message: String) -> Result<(), BackendError> {
    tracing::warn!(execution_id = %ctx.execution_id, job = %ctx.job, %message, "not starting a resumed execution");
    ctx.events
        .emit(proto::event::Kind::Finished(proto::Finished {
            outcome: proto::Outcome::Lost as i32,
            message,
        }))
        .await;
    Ok(())
}

/// The execution is being resumed and its journal has not got the history rows up to the
/// ledger's cursor (they were read, but the sidecar died before they were journaled).
fn journal_behind(entry: &Entry, ctx: &ExecutionContext) -> bool {
    ctx.resume.as_ref().is_some_and(|r| {
        !r.untagged_results
            && i64::from(entry.cursor) > r.last_history_id.max(entry.history_watermark.into())
    })
}

/// Whether the requester the Agent recorded for a run is the sidecar's login.
/// `sp_sqlagent_notify` records `ISNULL(NT_CLIENT(), SUSER_SNAME())` while the ledger holds
/// `SUSER_SNAME()`: for a Windows login the two can differ in case (names compare
/// case-insensitively on a server) and one may carry the domain (`DOMAIN\user`,
/// `user@domain`) where the other does not. Both forms are accepted.
fn same_requester(recorded: &str, login: &str) -> bool {
    let norm = |s: &str| s.trim().to_lowercase();
    let (r, l) = (norm(recorded), norm(login));
    if r == l {
        return true;
    }
    let bare = |s: &str| {
        let s = s.rsplit('\\').next().unwrap_or(s);
        s.split('@').next().unwrap_or(s).to_string()
    };
    let qualified = |s: &str| s.contains('\\') || s.contains('@');
    qualified(&r) != qualified(&l) && !bare(&r).is_empty() && bare(&r) == bare(&l)
}

fn parse_time(t: &Option<String>) -> Option<NaiveDateTime> {
    t.as_deref()
        .and_then(|t| NaiveDateTime::parse_from_str(t, TIME_FMT).ok())
}

pub(crate) fn sql_to_backend(e: SqlError) -> BackendError {
    match e {
        SqlError::Server {
            number: 229 | 230 | 297 | 300,
            message,
            ..
        } => BackendError::PermissionDenied(format!(
            "the sidecar's SQL login lacks a permission ({message}); grant SELECT on the msdb job tables and SQLAgentOperatorRole"
        )),
        SqlError::Server { number: 1222, .. } => BackendError::Unavailable(
            "msdb's job history stayed locked (the history row limiter holds TABLOCKX while a job finishes); retry".into(),
        ),
        SqlError::Server {
            number, message, ..
        } => BackendError::Internal(format!("SQL Server error {number}: {message}")),
        SqlError::Login { number, message } => BackendError::Unavailable(format!(
            "SQL Server refused the sidecar's login (error {number}): {message}"
        )),
        SqlError::Connection(m) => BackendError::Unavailable(m),
        SqlError::Other(m) => BackendError::Internal(m),
    }
}

#[async_trait::async_trait]
impl Backend for SqlAgentBackend {
    fn kind(&self) -> &'static str {
        "sqlagent"
    }

    async fn job_names(&self) -> Result<Vec<String>, BackendError> {
        let sets = self.query(queries::JOB_NAMES, &[]).await?;
        Ok(sets
            .first()
            .map(|s| {
                s.iter()
                    .filter_map(|r| rows::string(r, "name"))
                    .filter(|n| self.filter.allows(n))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_jobs(&self) -> Result<Vec<proto::Job>, BackendError> {
        let sets = self.query(queries::LIST_JOBS, &[]).await?;
        let empty = Vec::new();
        let jobs = rows::jobs_with_steps(
            sets.first().unwrap_or(&empty),
            sets.get(1).unwrap_or(&empty),
        );
        let mut durations: std::collections::HashMap<Uuid, Vec<u64>> = Default::default();
        for r in sets.get(2).unwrap_or(&empty) {
            if let (Some(id), Some(d)) = (rows::uuid(r, "job_id"), rows::int32(r, "run_duration")) {
                durations
                    .entry(id)
                    .or_default()
                    .push(super::agent_time::decode_duration(d).as_secs());
            }
        }
        Ok(jobs
            .iter()
            .filter(|j| self.filter.allows(&j.name))
            .map(|j| {
                catalog::to_proto(
                    j,
                    catalog::duration_stats(durations.remove(&j.job_id).unwrap_or_default()),
                )
            })
            .collect())
    }

    /// The ledger makes a repeated `start` with a known execution id a re-attach (see
    /// `resume`): the run is followed from the ledger's cursor, never started again.
    fn resumes_after_restart(&self) -> bool {
        true
    }

    async fn start(&self, ctx: ExecutionContext) -> Result<(), BackendError> {
        if !ctx.params.is_empty() {
            return Err(BackendError::InvalidArgument(
                "SQL Server Agent jobs take no parameters (sp_start_job has none)".into(),
            ));
        }
        let _serial = self.start_lock.lock().await;
        match self.ledger.lookup(&ctx.execution_id) {
            Lookup::Found(entry) => return self.resume(entry, ctx).await,
            // Only a resume can meet these (a repeated StartJob of a known execution never
            // reaches the backend). Neither may start anything: see `close_unconfirmed`.
            Lookup::Unreadable(why) => {
                let message = format!(
                    "the sidecar restarted and this execution's start ledger entry cannot be read ({why}); whether SQL Server Agent started the job is unknown: check the job's history before running it again"
                );
                return close_unconfirmed(ctx, message).await;
            }
            Lookup::Absent if ctx.resume.is_some() => {
                return close_unconfirmed(ctx, NOT_STARTED_BEFORE_RESTART.to_owned()).await;
            }
            Lookup::Absent => {}
        }
        let job = self.resolve_one(&ctx.job).await?;
        self.fresh_start(job, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::same_requester;

    #[test]
    fn the_recorded_requester_matches_the_login_in_either_form() {
        assert!(same_requester("agentfleet", "agentfleet"));
        assert!(same_requester(
            "CONTOSO\\SVC_Sidecar",
            "contoso\\svc_sidecar"
        ));
        assert!(same_requester("svc_sidecar", "CONTOSO\\svc_sidecar"));
        assert!(same_requester("CONTOSO\\svc_sidecar", "svc_sidecar"));
        assert!(same_requester("svc_sidecar@contoso.com", "svc_sidecar"));
        assert!(!same_requester("CONTOSO\\someone", "CONTOSO\\svc_sidecar"));
        assert!(!same_requester(
            "OTHER\\svc_sidecar",
            "CONTOSO\\svc_sidecar"
        ));
        assert!(!same_requester("sa", "agentfleet"));
    }
}
