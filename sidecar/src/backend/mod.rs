//! The Backend interface: what the sidecar can start. Three backends exist:
//! `command` (programs from the sidecar's config), `sqlagent` (SQL Server Agent jobs
//! through tiberius) and `ssis` (packages deployed to the SSIS catalog). The execution
//! registry owns idempotency, slots, the journal and stop requests; a backend only lists
//! jobs, starts one, and reports through its sink.
//!
//! Two ways for an execution to outlive a sidecar restart:
//! - supervised (`supervised_job` is `Some`): the execution runs in a supervisor process
//!   of its own, which calls `start` there and writes the journal (`crate::supervisor`);
//! - resumed (`resumes_after_restart`): after a restart the registry calls `start` again
//!   with the same execution id, and the backend re-attaches instead of starting again.
use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet_common::proto;
use serde::{Deserialize, Serialize};

use crate::events::EventSink;

pub mod command;
pub(crate) mod ledger_dir;
pub mod sqlagent;
pub mod ssis;

/// Why a start was refused. Each maps to one gRPC status (see `server.rs`).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("job `{job}` is not offered here; this sidecar offers: {offered}")]
    NotFound { job: String, offered: String },
    /// A job never runs twice at once on one sidecar (as SQL Server Agent).
    #[error("job `{0}` is already running on this sidecar")]
    AlreadyRunning(String),
    #[error("all {0} slots are busy")]
    SlotsBusy(u32),
    #[error("job `{0}` is disabled; enable it before starting it")]
    Disabled(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// Transient: the caller may retry (e.g. SQL Server Agent is starting, connection lost).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<BackendError> for tonic::Status {
    fn from(e: BackendError) -> Self {
        let msg = e.to_string();
        match e {
            BackendError::NotFound { .. } => tonic::Status::not_found(msg),
            // ABORTED / RESOURCE_EXHAUSTED: a concurrency conflict; place again later.
            BackendError::AlreadyRunning(_) => tonic::Status::aborted(msg),
            BackendError::SlotsBusy(_) => tonic::Status::resource_exhausted(msg),
            BackendError::Disabled(_) => tonic::Status::failed_precondition(msg),
            BackendError::InvalidArgument(_) => tonic::Status::invalid_argument(msg),
            BackendError::PermissionDenied(_) => tonic::Status::permission_denied(msg),
            BackendError::Unavailable(_) => tonic::Status::unavailable(msg),
            BackendError::Internal(_) => tonic::Status::internal(msg),
        }
    }
}

/// Everything a backend needs to run one execution.
pub struct ExecutionContext {
    pub execution_id: String,
    pub job: String,
    /// Already checked against the job's declared parameters by the backend's `start`.
    pub params: BTreeMap<String, String>,
    /// Where the execution's events go (journaled, then streamed to watchers).
    pub events: EventSink,
    /// Cancelled when StopJob is called (or the sidecar shuts down for good).
    pub stop: tokio_util::sync::CancellationToken,
    /// `Some` when `start` resumes an execution after a sidecar restart: what its journal
    /// already holds (`None` for a new start or a repeated StartJob).
    pub resume: Option<ResumeState>,
}

/// What an execution's journal holds, for a backend that resumes it after a restart
/// (read from the journal by `journal::reader::resume_state`). The journal, not any
/// backend-side record, is the truth: an event is shown once it is there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeState {
    /// SQL Server Agent: the largest msdb history `instance_id` the journal's events come
    /// from (0: none).
    pub last_history_id: i64,
    /// A StepFinished without an instance id is journaled (an older sidecar wrote it, so
    /// `last_history_id` is incomplete: the backend falls back to its own record).
    pub untagged_results: bool,
    /// A Started event is in the journal.
    pub started: bool,
    /// The step the last step event says is running: (step_id, attempt).
    pub open_step: Option<(u32, u32)>,
    /// The last attempt journaled as finished, per step.
    pub attempts: BTreeMap<u32, u32>,
    /// The last StepFinished: step_id, status (proto `StepStatus`), end (Unix ms).
    pub last_finished: Option<(u32, i32, i64)>,
    /// SSIS catalog executions the journal shows, by step: what of each was shown (so a
    /// resumed follow neither repeats nor skips a catalog message).
    pub catalog: BTreeMap<u32, ssis::CatalogResume>,
}

impl ResumeState {
    /// Folds one journaled event in (in journal order).
    pub fn observe(&mut self, kind: &proto::event::Kind) {
        use proto::event::Kind;
        match kind {
            Kind::Started(_) => self.started = true,
            Kind::StepStarted(s) => self.open_step = Some((s.step_id, s.attempt)),
            Kind::StepFinished(s) => {
                self.open_step = None;
                let a = self.attempts.entry(s.step_id).or_default();
                *a = (*a).max(s.attempt);
                let end = s.started_at_ms + i64::try_from(s.duration_ms).unwrap_or(0);
                self.last_finished = Some((s.step_id, s.status, end));
                if s.sql_instance_id > 0 {
                    self.last_history_id = self.last_history_id.max(s.sql_instance_id);
                } else {
                    self.untagged_results = true;
                }
            }
            Kind::Logs(l) => {
                for line in &l.lines {
                    self.last_history_id = self.last_history_id.max(line.sql_instance_id);
                    if line.catalog_message_id != 0 {
                        self.catalog
                            .entry(line.step_id)
                            .or_default()
                            .message_ids
                            .insert(line.catalog_message_id);
                    }
                }
            }
            Kind::CatalogExecution(c) => {
                let r = self.catalog.entry(c.step_id).or_default();
                // Another execution for the step (a retried Agent step): start afresh. (The
                // first tick's messages are journaled before the status that names the
                // execution: they belong to it.)
                if r.ident.execution_id != 0 && r.ident.execution_id != c.catalog_execution_id {
                    *r = ssis::CatalogResume::default();
                }
                r.ident = ssis::CatalogIdent {
                    execution_id: c.catalog_execution_id,
                    server: c.server.clone(),
                    folder: c.folder.clone(),
                    project: c.project.clone(),
                    package: c.package.clone(),
                };
                r.status = c.status;
            }
            Kind::SubStepStarted(s) => {
                self.catalog
                    .entry(s.step_id)
                    .or_default()
                    .started_paths
                    .insert(s.path.clone());
            }
            Kind::SubStepFinished(s) => {
                self.catalog
                    .entry(s.step_id)
                    .or_default()
                    .finished_paths
                    .insert(s.path.clone());
            }
            Kind::DataFlowRows(d) => {
                self.catalog
                    .entry(d.step_id)
                    .or_default()
                    .rows
                    .insert((d.path.clone(), d.data_flow_path.clone()), d.rows);
            }
            _ => {}
        }
    }
}

/// What a supervisor process needs to run one command job (written as `job.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisedJob {
    pub job: command::JobConfig,
    /// How long a stopped step's processes get between SIGTERM and SIGKILL.
    #[serde(with = "agentfleet_common::duration::serde_req")]
    pub stop_grace: Duration,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// "command" or "sqlagent".
    fn kind(&self) -> &'static str;

    /// The names of the jobs offered (cheap; used to route StartJob).
    async fn job_names(&self) -> Result<Vec<String>, BackendError>;

    /// The jobs offered, with steps and duration statistics.
    async fn list_jobs(&self) -> Result<Vec<proto::Job>, BackendError>;

    /// Starts the job. Returns once it has really started (or failed to start, in which
    /// case nothing ran). The backend then drives the execution in a task of its own,
    /// emitting Started, step and log events, and always ends with exactly one Finished
    /// event, also when `stop` is cancelled.
    async fn start(&self, ctx: ExecutionContext) -> Result<(), BackendError>;

    /// `Some` when executions of `job` run in a supervisor process of their own: the job
    /// checked as `start` would check it (an error refuses the start), ready for the
    /// supervisor. `None` (the default): the execution runs in-process through `start`.
    fn supervised_job(
        &self,
        _job: &str,
        _params: &BTreeMap<String, String>,
    ) -> Option<Result<SupervisedJob, BackendError>> {
        None
    }

    /// How many executions of `job` may run at once on this sidecar: 1 by default, SQL
    /// Server Agent's rule (it refuses to start a job that is already running).
    fn max_instances(&self, _job: &str) -> u32 {
        1
    }

    /// The parameters of `job` whose values may be written to the audit log: those it
    /// declares and does not mark secret. None by default (every value is redacted).
    fn loggable_params(&self, _job: &str) -> Vec<String> {
        Vec::new()
    }

    /// True when `start`, called again after a sidecar restart with the id of an
    /// execution that had not finished, re-attaches to it and never starts it twice.
    fn resumes_after_restart(&self) -> bool {
        false
    }
}
