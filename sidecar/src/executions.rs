//! The execution registry: idempotent starts, slots, the one-job-once rule, stop
//! requests, listing, retention, and the shutdown of running work.
//!
//! Running state comes from the journal: an execution holds a slot until its Finished
//! event is on disk. Who publishes that on the execution's `Progress` watch depends on
//! where it runs:
//! - in-process backends (SQL Server Agent): the journal writer task here;
//! - supervised backends (command jobs): a follower task that polls the journal the
//!   execution's supervisor process writes (`supervised.rs`).
//!
//! At start-up `recovery.rs` re-attaches to what still runs; at shutdown, running work is
//! handed over rather than stopped where it can survive the sidecar (see `shutdown`).
//! Retention (acknowledgements, the 7-day safety net) is in `retention.rs`.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{Backend, BackendError, ExecutionContext};
use crate::journal::{ExecutionRecord, Journal, JournalError, Progress, reader, writer};
use crate::supervisor::SupervisorCommand;
use admission::Admitted;

mod admission;
mod recovery;
mod retention;
mod supervised;

pub use retention::{MAX_FINISHED_AGE, PRUNE_EVERY};

/// How a registry is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    pub slots: u32,
    pub state_dir: std::path::PathBuf,
    /// How supervisor processes of command jobs are started.
    pub supervisor: SupervisorCommand,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{0}` is not a valid execution id: expected {form}", form = agentfleet_common::ids::EXECUTION_ID_FORM)]
    InvalidId(String),
    #[error(
        "execution `{id}` already exists for job `{existing}`, not `{requested}`; mint a new execution id for a different job"
    )]
    IdConflict {
        id: String,
        existing: String,
        requested: String,
    },
    #[error(
        "no execution `{0}` on this sidecar (it may have been pruned after it was acknowledged)"
    )]
    NotFound(String),
    /// A `resume_only` StartJob for an execution this sidecar does not hold.
    #[error(
        "the sidecar has no record of execution `{0}`: its StartJob never arrived or it was pruned; it was not started (resume_only never creates an execution)"
    )]
    NotResumable(String),
    #[error("the sidecar is shutting down; start the job elsewhere or try again once it is back")]
    ShuttingDown,
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<RegistryError> for tonic::Status {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::InvalidId(_) => tonic::Status::invalid_argument(msg),
            RegistryError::IdConflict { .. } => tonic::Status::failed_precondition(msg),
            RegistryError::NotFound(_) | RegistryError::NotResumable(_) => {
                tonic::Status::not_found(msg)
            }
            RegistryError::ShuttingDown => tonic::Status::unavailable(msg),
            RegistryError::Backend(b) => b.into(),
            RegistryError::Journal(_) => tonic::Status::internal(msg),
        }
    }
}

/// One execution the sidecar holds.
struct Entry {
    record: ExecutionRecord,
    progress: watch::Sender<Progress>,
    /// Cancelled once a stop was asked for (in-process backends watch it; for supervised
    /// executions the request is the `stop` file, and this only makes stop idempotent).
    stop: CancellationToken,
    /// For in-process executions that a restart resumes: cancelling it makes the journal
    /// writer end without a Finished event (hand-over at shutdown).
    detach: Option<CancellationToken>,
    /// In-process executions: the stop request, set before `stop` fires, for the Finished
    /// message (supervised ones note it in their `stop` file).
    stop_note: crate::stop_note::StopNote,
}

impl Entry {
    fn new(record: ExecutionRecord, progress: Progress) -> Self {
        Self {
            record,
            progress: watch::channel(progress).0,
            stop: CancellationToken::new(),
            detach: None,
            stop_note: Default::default(),
        }
    }

    fn running(&self) -> bool {
        self.progress.borrow().finished.is_none()
    }

    fn to_proto(&self) -> proto::Execution {
        let p = self.progress.borrow();
        let r = &self.record;
        let state = match (&p.finished, p.started) {
            (Some(_), _) => proto::ExecutionState::Finished,
            (None, true) => proto::ExecutionState::Running,
            (None, false) => proto::ExecutionState::Accepted,
        };
        proto::Execution {
            execution_id: r.execution_id.clone(),
            job: r.job.clone(),
            backend: r.backend.clone(),
            state: state as i32,
            outcome: p.finished.as_ref().map_or(0, |f| f.outcome as i32),
            message: p
                .finished
                .as_ref()
                .map(|f| f.message.clone())
                .unwrap_or_default(),
            last_seq: p.visible_last_seq(),
            accepted_at_ms: r.accepted_at_ms,
            finished_at_ms: p.finished.as_ref().map_or(0, |f| f.at_ms),
            run_id: r.run_id.clone(),
            task: r.task.clone(),
            attempt: r.attempt,
            started_by: r.started_by.clone(),
        }
    }
}

struct Inner {
    name: String,
    slots: u32,
    backends: Vec<Arc<dyn Backend>>,
    journal: Journal,
    supervisor: SupervisorCommand,
    /// Serialises StartJob's admission: the checks and the slot's reservation (see
    /// `admission.rs`); the journal is written after it.
    start_lock: tokio::sync::Mutex<()>,
    /// Starts admitted whose journal is being written, by id.
    pending: Mutex<HashMap<String, admission::Pending>>,
    /// Held (read) by each start while its journal is written; shutdown takes it (write)
    /// to wait for them.
    creating: Arc<tokio::sync::RwLock<()>>,
    /// Short, non-async critical sections only.
    executions: Mutex<HashMap<String, Arc<Entry>>>,
    closing: AtomicBool,
    /// Fired at the end of shutdown: open Watch streams end with UNAVAILABLE, and the
    /// followers of supervised executions stop polling.
    watchers_stop: CancellationToken,
    /// Journal writers, followers and resumes.
    writers: TaskTracker,
}

/// The registry; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Opens the journal under `state_dir` and recovers every execution in it, with
    /// supervisors started as the running binary's `supervise` entry.
    pub async fn open(
        name: &str,
        slots: u32,
        state_dir: &std::path::Path,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Result<Self, RegistryError> {
        let settings = Settings {
            name: name.to_owned(),
            slots,
            state_dir: state_dir.to_owned(),
            supervisor: SupervisorCommand::this_program(),
        };
        Self::open_with(settings, backends).await
    }

    /// Opens the journal and recovers every execution in it: finished ones are listed,
    /// running ones re-attached or resumed, the rest closed as LOST (see `recovery.rs`).
    pub async fn open_with(
        settings: Settings,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Result<Self, RegistryError> {
        let dir = settings.state_dir.clone();
        let (journal, loaded) = tokio::task::spawn_blocking(move || {
            let journal = Journal::open(&dir)?;
            let loaded = journal.load_all()?;
            Ok::<_, JournalError>((journal, loaded))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("journal loader failed: {e}")))??;
        let registry = Self {
            inner: Arc::new(Inner {
                name: settings.name,
                slots: settings.slots,
                backends,
                journal,
                supervisor: settings.supervisor,
                start_lock: tokio::sync::Mutex::new(()),
                pending: Mutex::new(HashMap::new()),
                creating: Arc::new(tokio::sync::RwLock::new(())),
                executions: Mutex::new(HashMap::new()),
                closing: AtomicBool::new(false),
                watchers_stop: CancellationToken::new(),
                writers: TaskTracker::new(),
            }),
        };
        registry.recover(loaded).await?;
        Ok(registry)
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        // A panic while holding this lock leaves the map itself consistent (inserts and
        // removes are single calls), so a poisoned lock is still safe to use.
        self.inner
            .executions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.map().get(id).cloned()
    }

    /// StartJob. Returns the execution and whether this call created it. The work runs in
    /// its own task, so a caller that goes away mid-call cannot leave a half-started job.
    /// With `resume_only` it only returns an execution this sidecar already holds: an
    /// unknown id is `NotResumable` and nothing is created (a coordinator re-attaching to
    /// a run must never start a job whose original StartJob may never have arrived).
    /// `started_by` (the caller) is kept in the execution's record.
    pub async fn start(
        &self,
        req: proto::StartJobRequest,
        started_by: &str,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let this = self.clone();
        let started_by = started_by.to_owned();
        tokio::spawn(async move { this.start_inner(req, started_by).await })
            .await
            .map_err(|e| BackendError::Internal(format!("start task failed: {e}")))?
    }

    async fn start_inner(
        &self,
        req: proto::StartJobRequest,
        started_by: String,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let id = req.execution_id.clone();
        if !agentfleet_common::ids::is_canonical_execution_id(&id) {
            return Err(RegistryError::InvalidId(id));
        }
        // Without the start lock: a repeated StartJob, and finding the backend, which for
        // SQL Server Agent is a query that can take as long as the server is slow. The lock
        // serialises only the check-and-insert below, so a slow SQL Server delays only the
        // starts of its own jobs (which its backend serialises anyway), never command jobs.
        if let Some(existing) = self.existing(&id, &req.job)? {
            return Ok(existing);
        }
        if req.resume_only {
            tracing::info!(execution_id = %id, job = %req.job, run_id = %req.run_id, task = %req.task, "resume_only StartJob for an execution this sidecar does not hold; nothing started");
            return Err(RegistryError::NotResumable(id));
        }
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(RegistryError::ShuttingDown);
        }
        let backend = self.route(&req.job).await?;
        // Again, under the start lock: the same id may have been started meanwhile.
        let (reservation, creating) = match self.admit(&id, &req.job, &backend).await? {
            Admitted::Existing(existing) => return Self::answer_existing(&existing, &req.job),
            Admitted::Reserved(reservation, creating) => (reservation, creating),
        };
        let params = req.params.into_iter().collect();
        let supervised = backend.supervised_job(&req.job, &params);
        let record = ExecutionRecord {
            execution_id: id.clone(),
            job: req.job.clone(),
            backend: backend.kind().to_owned(),
            run_id: req.run_id,
            task: req.task,
            attempt: req.attempt,
            params,
            accepted_at_ms: agentfleet_common::now_ms(),
            supervised: supervised.is_some(),
            started_by,
        };
        let journal = self.inner.journal.clone();
        let rec = record.clone();
        let (file, progress) = tokio::task::spawn_blocking(move || journal.create(&rec))
            .await
            .map_err(|e| BackendError::Internal(format!("journal task failed: {e}")))??;
        let mut entry = Entry::new(record, progress);
        if supervised.is_none() && backend.resumes_after_restart() {
            entry.detach = Some(CancellationToken::new());
        }
        let entry = Arc::new(entry);
        self.map().insert(id.clone(), entry.clone());
        // The execution holds its slot now: later starts see it as running.
        drop(reservation);
        drop(creating);
        tracing::info!(execution_id = %id, job = %req.job, backend = backend.kind(), run_id = %entry.record.run_id, task = %entry.record.task, supervised = entry.record.supervised, started_by = %entry.record.started_by, "starting job");
        match supervised {
            Some(job) => self.start_supervised(&entry, file, job).await,
            None => self.start_in_process(&entry, file, &backend).await,
        }
    }

    /// Runs the execution in this process: a journal writer task, then `backend.start`.
    async fn start_in_process(
        &self,
        entry: &Arc<Entry>,
        file: writer::EventFile,
        backend: &Arc<dyn Backend>,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let id = entry.record.execution_id.clone();
        let (sink, rx) = crate::stop_note::sink(&id, &entry.stop_note, &self.inner.writers);
        self.inner.writers.spawn(writer::run_detachable(
            file,
            rx,
            entry.progress.clone(),
            id.clone(),
            entry.detach.clone().unwrap_or_default(),
            entry.stop.clone(),
        ));
        let ctx = ExecutionContext {
            execution_id: id.clone(),
            job: entry.record.job.clone(),
            params: entry.record.params.clone(),
            events: sink.clone(),
            stop: entry.stop.clone(),
            resume: None,
        };
        let started = backend.start(ctx).await;
        if let Err(e) = started {
            tracing::warn!(execution_id = %id, job = %entry.record.job, error = %e, "job failed to start");
            sink.emit(Kind::Finished(proto::Finished {
                outcome: proto::Outcome::Failed as i32,
                message: format!("failed to start: {e}"),
            }))
            .await;
            drop(sink);
            // Wait until the failure is journaled, so the slot is free when we answer.
            let _ = entry
                .progress
                .subscribe()
                .wait_for(|p| p.finished.is_some())
                .await;
            return Err(e.into());
        }
        Ok((entry.to_proto(), true))
    }

    /// A StartJob for an execution this sidecar holds: its state (`created` false), or a
    /// conflict when the id was used for another job.
    fn existing(
        &self,
        id: &str,
        job: &str,
    ) -> Result<Option<(proto::Execution, bool)>, RegistryError> {
        match self.entry(id) {
            Some(existing) => Self::answer_existing(&existing, job).map(Some),
            None => Ok(None),
        }
    }

    /// The answer to a StartJob for `existing`: its state, or a conflict when the id was
    /// used for another job.
    fn answer_existing(
        existing: &Entry,
        job: &str,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let id = &existing.record.execution_id;
        if existing.record.job != job {
            return Err(RegistryError::IdConflict {
                id: id.to_owned(),
                existing: existing.record.job.clone(),
                requested: job.to_owned(),
            });
        }
        Ok((existing.to_proto(), false))
    }

    /// The backend offering `job`, or NotFound listing what is offered.
    async fn route(&self, job: &str) -> Result<Arc<dyn Backend>, RegistryError> {
        let mut offered = Vec::new();
        let mut failure = None;
        for backend in &self.inner.backends {
            match backend.job_names().await {
                Ok(names) if names.iter().any(|n| n == job) => return Ok(backend.clone()),
                Ok(names) => offered.extend(names),
                Err(e) => failure = Some(e),
            }
        }
        // The job may well be offered by the backend that could not answer.
        if let Some(e) = failure {
            return Err(e.into());
        }
        offered.sort();
        let offered = if offered.is_empty() {
            "no jobs".to_owned()
        } else {
            offered.join(", ")
        };
        Err(BackendError::NotFound {
            job: job.to_owned(),
            offered,
        }
        .into())
    }

    /// StopJob: asks a running execution to stop; idempotent, and a finished execution is
    /// returned unchanged. Who asked (`by`) is written into the stop file with the reason
    /// (the journal itself has one writer, the execution's, so it is not appended here).
    pub async fn stop(
        &self,
        id: &str,
        reason: &str,
        by: &str,
    ) -> Result<proto::Execution, RegistryError> {
        let entry = self
            .entry(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        if entry.running() && !entry.stop.is_cancelled() {
            tracing::info!(execution_id = %id, job = %entry.record.job, %reason, %by, "stop requested");
            let reason = if reason.is_empty() { "StopJob" } else { reason };
            let reason = format!("{reason} (asked by {by})");
            let _ = entry.stop_note.set(reason.clone());
            if entry.record.supervised {
                let dir = self.inner.journal.dir(id);
                tokio::task::spawn_blocking(move || crate::supervisor::request_stop(&dir, &reason))
                    .await
                    .map_err(|e| BackendError::Internal(format!("stop task failed: {e}")))??;
            }
            entry.stop.cancel();
        }
        Ok(entry.to_proto())
    }

    /// The parameters of `job` whose values may be shown (in the audit log): those it
    /// declares and does not mark secret. Empty for a job no backend offers.
    pub fn loggable_params(&self, job: &str) -> std::collections::BTreeSet<String> {
        self.inner
            .backends
            .iter()
            .flat_map(|b| b.loggable_params(job))
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<proto::Execution> {
        self.entry(id).map(|e| e.to_proto())
    }

    /// Executions held, oldest first.
    pub fn list(&self, running_only: bool) -> Vec<proto::Execution> {
        let mut list: Vec<proto::Execution> = self
            .map()
            .values()
            .filter(|e| !running_only || e.running())
            .map(|e| e.to_proto())
            .collect();
        list.sort_by(|a, b| {
            (a.accepted_at_ms, &a.execution_id).cmp(&(b.accepted_at_ms, &b.execution_id))
        });
        list
    }

    pub fn describe(&self) -> proto::DescribeResponse {
        let mut running_jobs: Vec<String> = self
            .map()
            .values()
            .filter(|e| e.running())
            .map(|e| e.record.job.clone())
            .collect();
        running_jobs.sort();
        proto::DescribeResponse {
            name: self.inner.name.clone(),
            version: agentfleet_common::VERSION.to_owned(),
            backends: self
                .inner
                .backends
                .iter()
                .map(|b| b.kind().to_owned())
                .collect(),
            slots: self.inner.slots,
            running: running_jobs.len() as u32,
            running_jobs,
        }
    }

    pub async fn list_jobs(&self) -> Result<Vec<proto::Job>, RegistryError> {
        let mut jobs = Vec::new();
        for backend in &self.inner.backends {
            jobs.extend(backend.list_jobs().await?);
        }
        Ok(jobs)
    }

    /// Watch: the events after `after_seq`, from the journal, then live until Finished.
    pub fn watch(
        &self,
        id: &str,
        after_seq: u64,
    ) -> Result<
        impl Stream<Item = Result<proto::Event, tonic::Status>> + Send + 'static,
        RegistryError,
    > {
        let entry = self
            .entry(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        Ok(reader::watch(
            self.inner.journal.events_path(id),
            after_seq,
            entry.progress.subscribe(),
            self.inner.watchers_stop.clone(),
        ))
    }

    /// Refuses new starts and lets running work go on without this process where it can:
    /// supervised executions keep running under their supervisors, and resumable ones
    /// (SQL Server Agent jobs) keep running on their server, their journal writers ending
    /// without a Finished event; the next start re-attaches to both. Other executions are
    /// stopped, with up to `grace` for their Finished events. Then open Watch streams end.
    /// Bounded by `grace` + 1s.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Let a start that is past its checks insert its execution, so it is handled too.
        drop(self.inner.start_lock.lock().await);
        drop(self.inner.creating.write().await);
        let running: Vec<Arc<Entry>> = self
            .map()
            .values()
            .filter(|e| e.running())
            .cloned()
            .collect();
        let (handed_over, to_stop): (Vec<_>, Vec<_>) = running
            .into_iter()
            .partition(|e| e.record.supervised || e.detach.is_some());
        for e in &handed_over {
            if let Some(detach) = &e.detach {
                detach.cancel();
            }
        }
        if !handed_over.is_empty() {
            let ids: Vec<&str> = handed_over
                .iter()
                .map(|e| e.record.execution_id.as_str())
                .collect();
            tracing::info!(executions = ?ids, "leaving running executions to go on; the next start re-attaches to them");
        }
        for e in &to_stop {
            e.stop.cancel();
        }
        let waits = to_stop.iter().map(|e| {
            let mut rx = e.progress.subscribe();
            async move {
                let _ = rx.wait_for(|p| p.finished.is_some()).await;
            }
        });
        if tokio::time::timeout(grace, futures::future::join_all(waits))
            .await
            .is_err()
        {
            let left: Vec<String> = to_stop
                .iter()
                .filter(|e| e.running())
                .map(|e| e.record.execution_id.clone())
                .collect();
            tracing::warn!(executions = ?left, "executions did not finish within the grace period; they will be reported LOST after restart");
        }
        self.inner.watchers_stop.cancel();
        self.inner.writers.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.writers.wait()).await;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
pub(crate) mod fake_backend;
