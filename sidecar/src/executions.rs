//! The execution registry: idempotent starts, slots, the one-job-once rule, stop
//! requests, listing, retention, and the shutdown of running work.
//!
//! Running state comes from the journal: an execution holds a slot until its Finished
//! event is on disk (the writer publishes it on the execution's `Progress` watch).
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
use crate::events::EventSink;
use crate::journal::{ExecutionRecord, Journal, JournalError, Progress, reader, writer};

/// Finished executions older than this are pruned even if nobody acknowledged them.
pub const MAX_FINISHED_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the age limit is applied.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{0}` is not a valid execution id: use 1-64 letters, digits, '-' or '_'")]
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
            RegistryError::NotFound(_) => tonic::Status::not_found(msg),
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
    stop: CancellationToken,
}

impl Entry {
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
            last_seq: p.last_seq,
            accepted_at_ms: r.accepted_at_ms,
            finished_at_ms: p.finished.as_ref().map_or(0, |f| f.at_ms),
            run_id: r.run_id.clone(),
            task: r.task.clone(),
            attempt: r.attempt,
        }
    }
}

struct Inner {
    name: String,
    slots: u32,
    backends: Vec<Arc<dyn Backend>>,
    journal: Journal,
    /// Serialises StartJob's check-and-insert (held across the backend routing await).
    start_lock: tokio::sync::Mutex<()>,
    /// Short, non-async critical sections only.
    executions: Mutex<HashMap<String, Arc<Entry>>>,
    closing: AtomicBool,
    /// Fired at the end of shutdown: open Watch streams end with UNAVAILABLE.
    watchers_stop: CancellationToken,
    writers: TaskTracker,
}

/// The registry; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Registry {
    /// Opens the journal under `state_dir` and loads every execution in it (those that
    /// were running when the sidecar stopped are journaled as LOST).
    pub async fn open(
        name: &str,
        slots: u32,
        state_dir: &std::path::Path,
        backends: Vec<Arc<dyn Backend>>,
    ) -> Result<Self, RegistryError> {
        let dir = state_dir.to_owned();
        let (journal, loaded) = tokio::task::spawn_blocking(move || {
            let journal = Journal::open(&dir)?;
            let loaded = journal.load_all()?;
            Ok::<_, JournalError>((journal, loaded))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("journal loader failed: {e}")))??;
        let executions = loaded
            .into_iter()
            .map(|l| {
                let entry = Entry {
                    record: l.record,
                    progress: watch::channel(l.progress).0,
                    stop: CancellationToken::new(),
                };
                (entry.record.execution_id.clone(), Arc::new(entry))
            })
            .collect::<HashMap<_, _>>();
        tracing::info!(
            executions = executions.len(),
            "loaded the execution journal"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                slots,
                backends,
                journal,
                start_lock: tokio::sync::Mutex::new(()),
                executions: Mutex::new(executions),
                closing: AtomicBool::new(false),
                watchers_stop: CancellationToken::new(),
                writers: TaskTracker::new(),
            }),
        })
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
    pub async fn start(
        &self,
        req: proto::StartJobRequest,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let this = self.clone();
        tokio::spawn(async move { this.start_inner(req).await })
            .await
            .map_err(|e| BackendError::Internal(format!("start task failed: {e}")))?
    }

    async fn start_inner(
        &self,
        req: proto::StartJobRequest,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let id = req.execution_id.clone();
        if !agentfleet_common::ids::is_valid_execution_id(&id) {
            return Err(RegistryError::InvalidId(id));
        }
        let guard = self.inner.start_lock.lock().await;
        if let Some(existing) = self.entry(&id) {
            if existing.record.job != req.job {
                return Err(RegistryError::IdConflict {
                    id,
                    existing: existing.record.job.clone(),
                    requested: req.job,
                });
            }
            return Ok((existing.to_proto(), false));
        }
        if self.inner.closing.load(Ordering::SeqCst) {
            return Err(RegistryError::ShuttingDown);
        }
        let backend = self.route(&req.job).await?;
        {
            let map = self.map();
            let running: Vec<&Arc<Entry>> = map.values().filter(|e| e.running()).collect();
            if running.iter().any(|e| e.record.job == req.job) {
                return Err(BackendError::AlreadyRunning(req.job).into());
            }
            if running.len() >= self.inner.slots as usize {
                return Err(BackendError::SlotsBusy(self.inner.slots).into());
            }
        }
        let record = ExecutionRecord {
            execution_id: id.clone(),
            job: req.job.clone(),
            backend: backend.kind().to_owned(),
            run_id: req.run_id,
            task: req.task,
            attempt: req.attempt,
            params: req.params.into_iter().collect(),
            accepted_at_ms: agentfleet_common::now_ms(),
        };
        let journal = self.inner.journal.clone();
        let rec = record.clone();
        let (file, progress) = tokio::task::spawn_blocking(move || journal.create(&rec))
            .await
            .map_err(|e| BackendError::Internal(format!("journal task failed: {e}")))??;
        let (sink, rx) = EventSink::channel(&id);
        let entry = Arc::new(Entry {
            record,
            progress: watch::channel(progress).0,
            stop: CancellationToken::new(),
        });
        let writer_progress = entry.progress.clone();
        let writer_id = id.clone();
        self.inner
            .writers
            .spawn(writer::run(file, rx, writer_progress, writer_id));
        self.map().insert(id.clone(), entry.clone());
        // The slot is taken: later starts see this execution as running.
        drop(guard);

        tracing::info!(execution_id = %id, job = %req.job, backend = backend.kind(), run_id = %entry.record.run_id, task = %entry.record.task, "starting job");
        let ctx = ExecutionContext {
            execution_id: id.clone(),
            job: req.job.clone(),
            params: entry.record.params.clone(),
            events: sink.clone(),
            stop: entry.stop.clone(),
        };
        let started = backend.start(ctx).await;
        if let Err(e) = started {
            tracing::warn!(execution_id = %id, job = %req.job, error = %e, "job failed to start");
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
    /// returned unchanged.
    pub fn stop(&self, id: &str, reason: &str) -> Result<proto::Execution, RegistryError> {
        let entry = self
            .entry(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        if entry.running() && !entry.stop.is_cancelled() {
            tracing::info!(execution_id = %id, job = %entry.record.job, %reason, "stop requested");
            entry.stop.cancel();
        }
        Ok(entry.to_proto())
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

    /// AckExecutions: deletes these executions if they have finished; returns how many.
    pub async fn ack(&self, ids: &[String]) -> Result<u32, RegistryError> {
        self.remove_where(|e| ids.contains(&e.record.execution_id))
            .await
    }

    /// Deletes finished executions that finished more than `max_age` ago.
    pub async fn prune(&self, max_age: Duration) -> Result<u32, RegistryError> {
        let cutoff = agentfleet_common::now_ms() - max_age.as_millis() as i64;
        self.remove_where(|e| {
            e.progress
                .borrow()
                .finished
                .as_ref()
                .is_some_and(|f| f.at_ms < cutoff)
        })
        .await
    }

    async fn remove_where(&self, pick: impl Fn(&Entry) -> bool) -> Result<u32, RegistryError> {
        let removed: Vec<String> = {
            let mut map = self.map();
            let ids: Vec<String> = map
                .values()
                .filter(|e| !e.running() && pick(e))
                .map(|e| e.record.execution_id.clone())
                .collect();
            ids.iter().for_each(|id| {
                map.remove(id);
            });
            ids
        };
        let journal = self.inner.journal.clone();
        let count = removed.len() as u32;
        tokio::task::spawn_blocking(move || removed.iter().try_for_each(|id| journal.remove(id)))
            .await
            .map_err(|e| BackendError::Internal(format!("prune task failed: {e}")))??;
        Ok(count)
    }

    /// Applies the age limit now and then every `PRUNE_EVERY`, until `shutdown`.
    pub fn spawn_pruner(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                // Policy on error: log and try again at the next tick.
                match this.prune(MAX_FINISHED_AGE).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pruned = n, "pruned executions finished over 7 days ago")
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning old executions failed"),
                }
            }
        })
    }

    /// Refuses new starts, stops running executions and waits up to `grace` for their
    /// Finished events; then ends open Watch streams. Bounded by `grace` + 1s.
    pub async fn shutdown(&self, grace: Duration) {
        self.inner.closing.store(true, Ordering::SeqCst);
        // Let a start that is past its checks insert its execution, so it is stopped too.
        drop(self.inner.start_lock.lock().await);
        let running: Vec<Arc<Entry>> = self
            .map()
            .values()
            .filter(|e| e.running())
            .cloned()
            .collect();
        for e in &running {
            e.stop.cancel();
        }
        let waits = running.iter().map(|e| {
            let mut rx = e.progress.subscribe();
            async move {
                let _ = rx.wait_for(|p| p.finished.is_some()).await;
            }
        });
        if tokio::time::timeout(grace, futures::future::join_all(waits))
            .await
            .is_err()
        {
            let left: Vec<String> = running
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
