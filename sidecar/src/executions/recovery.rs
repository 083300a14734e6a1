//! Start-up: what to do with each execution found in the journal.
//!
//! | found | what happens |
//! |---|---|
//! | finished | listed as it is (kept until acknowledged, see `retention.rs`) |
//! | supervised, lock held | its supervisor is alive: re-attach (follow the journal; it holds a slot) |
//! | supervised, lock free, no Started | it never started: Finished{LOST, "…it was not started"} |
//! | supervised, lock free, Started | its supervisor died with it (machine restart?): Finished{LOST} |
//! | in-process, backend resumes | `start` again with the same id and `ExecutionContext::resume` read from the journal, the journal continued (SQL Server Agent: the ledger makes it a re-attach, never a second `sp_start_job`; the journal's last history row is where it continues, so no row is lost or shown twice) |
//! | in-process, otherwise | nothing runs it any more: Finished{LOST} |
//!
//! A supervised execution whose lock is free is closed while holding the lock, so a late
//! supervisor (spawned just before the crash) finds Finished and never runs the job.
//! Not started late on purpose: the coordinator asked for a start *then*; after a restart
//! it decides again (a repeated StartJob with the same id returns the LOST execution).
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use tokio_util::sync::CancellationToken;

use super::supervised::recovery_message;
use super::{Entry, Registry, RegistryError};
use crate::backend::{Backend, BackendError, ExecutionContext, ResumeState};
use crate::journal::{Journal, JournalError, Loaded, writer};
use crate::supervisor::ExecutionLock;

/// What an in-process execution that nothing can resume is closed with.
const NOT_RESUMABLE: &str =
    "the sidecar restarted while this execution was running; its result is unknown";
/// How long to wait before trying again to resume on a backend that is unavailable.
const RESUME_RETRY: Duration = Duration::from_secs(5);

/// The decision for one loaded execution.
enum Plan {
    Keep,
    /// Supervisor alive: follow from this offset.
    Reattach(u64),
    /// Resume on this backend (journal reopened for the writer, and what it holds).
    Resume(Arc<dyn Backend>, writer::EventFile, ResumeState),
}

impl Registry {
    pub(super) async fn recover(&self, loaded: Vec<Loaded>) -> Result<(), RegistryError> {
        let (mut reattached, mut resumed, mut closed) = (0, 0, 0);
        for l in loaded {
            let id = l.record.execution_id.clone();
            let (plan, progress) = self.plan(l.progress.clone(), &l).await?;
            let mut entry = Entry::new(l.record, progress);
            if matches!(plan, Plan::Resume(..)) {
                entry.detach = Some(CancellationToken::new());
            }
            let was_running = l.progress.finished.is_none();
            let entry = Arc::new(entry);
            self.map().insert(id, entry.clone());
            match plan {
                Plan::Keep => closed += usize::from(was_running),
                Plan::Reattach(offset) => {
                    reattached += 1;
                    self.follow(entry, offset, None);
                }
                Plan::Resume(backend, file, state) => {
                    resumed += 1;
                    self.resume(entry, backend, file, state);
                }
            }
        }
        tracing::info!(
            executions = self.map().len(),
            reattached,
            resumed,
            closed,
            "loaded the execution journal"
        );
        Ok(())
    }

    /// Decides (and for closed executions, does) what happens to one execution.
    async fn plan(
        &self,
        progress: crate::journal::Progress,
        l: &Loaded,
    ) -> Result<(Plan, crate::journal::Progress), RegistryError> {
        if progress.finished.is_some() {
            return Ok((Plan::Keep, progress));
        }
        let journal = self.inner.journal.clone();
        let id = l.record.execution_id.clone();
        if l.record.supervised {
            let closed = blocking(move || close_unless_supervised(&journal, &id)).await?;
            return Ok(match closed {
                Some(p) => (Plan::Keep, p),
                None => (Plan::Reattach(l.len), progress),
            });
        }
        let backend = self
            .inner
            .backends
            .iter()
            .find(|b| b.kind() == l.record.backend && b.resumes_after_restart())
            .cloned();
        match backend {
            Some(backend) => {
                let (file, progress, state) = blocking(move || {
                    let (file, progress) = journal.reopen(&id)?;
                    let path = journal.events_path(&id);
                    let state = crate::journal::reader::resume_state(&path).map_err(|source| {
                        JournalError::Io {
                            action: "read",
                            path,
                            source,
                        }
                    })?;
                    Ok((file, progress, state))
                })
                .await?;
                Ok((Plan::Resume(backend, file, state), progress))
            }
            None => {
                let p = blocking(move || journal.close_lost(&id, NOT_RESUMABLE)).await?;
                Ok((Plan::Keep, p))
            }
        }
    }

    /// Calls `backend.start` again for an execution that was running before the restart;
    /// its events continue the journal. An unavailable backend is retried until the
    /// sidecar shuts down; any other refusal ends the execution as LOST.
    fn resume(
        &self,
        entry: Arc<Entry>,
        backend: Arc<dyn Backend>,
        file: writer::EventFile,
        state: ResumeState,
    ) {
        let id = entry.record.execution_id.clone();
        let (sink, rx) = crate::stop_note::sink(&id, &entry.stop_note, &self.inner.writers);
        let detach = entry.detach.clone().unwrap_or_default();
        self.inner.writers.spawn(writer::run_detachable(
            file,
            rx,
            entry.progress.clone(),
            id.clone(),
            detach.clone(),
            entry.stop.clone(),
        ));
        tracing::info!(execution_id = %id, job = %entry.record.job, backend = backend.kind(), "resuming an execution after restart");
        self.inner.writers.spawn(async move {
            loop {
                let ctx = ExecutionContext {
                    execution_id: id.clone(),
                    job: entry.record.job.clone(),
                    params: entry.record.params.clone(),
                    events: sink.clone(),
                    stop: entry.stop.clone(),
                    resume: Some(state.clone()),
                };
                match backend.start(ctx).await {
                    Ok(()) => return,
                    Err(BackendError::Unavailable(why)) => {
                        tracing::warn!(execution_id = %id, %why, "cannot resume yet; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(RESUME_RETRY) => {}
                            () = detach.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(execution_id = %id, error = %e, "could not resume the execution");
                        sink.emit(Kind::Finished(proto::Finished {
                            outcome: proto::Outcome::Lost as i32,
                            message: format!(
                                "could not re-attach to the job after the sidecar restarted: {e}; its result is unknown"
                            ),
                        }))
                        .await;
                        return;
                    }
                }
            }
        });
    }
}

/// If no supervisor holds the execution's lock, closes it as LOST under the lock and
/// returns its progress; `None` when a supervisor is alive.
fn close_unless_supervised(
    journal: &Journal,
    id: &str,
) -> Result<Option<crate::journal::Progress>, JournalError> {
    let dir = journal.dir(id);
    let lock = ExecutionLock::try_acquire(&dir).map_err(|source| JournalError::Io {
        action: "lock",
        path: dir.clone(),
        source,
    })?;
    let Some(lock) = lock else {
        return Ok(None);
    };
    // Read again under the lock: the supervisor may have written more before it went.
    let started = crate::journal::reader::scan(&journal.events_path(id))?
        .progress
        .started;
    let message = if started {
        recovery_message::SUPERVISOR_GONE
    } else {
        recovery_message::NOT_STARTED
    };
    let progress = journal.close_lost(id, message)?;
    drop(lock);
    Ok(Some(progress))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Internal(format!("journal task failed: {e}")))?
        .map_err(RegistryError::from)
}
