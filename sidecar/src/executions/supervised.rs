//! Executions run by a supervisor process (command jobs; see `crate::supervisor`): the
//! sidecar's side of the start, and the follower that turns the journal the supervisor
//! writes into this execution's `Progress`.
//!
//! The follower polls the journal's length every `POLL` while the execution runs (one
//! `stat` per tick; new whole records are read and folded in), which wakes Watch streams
//! and frees the slot on Finished. It also notices a supervisor that died without a
//! Finished event: while the supervisor is our own child its exit tells us; after a
//! restart (re-attached, not our child) the execution lock is tried every
//! `LIVENESS_EVERY`. Either way the journal is then closed under the lock.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Entry, Registry, RegistryError};
use crate::backend::{BackendError, SupervisedJob};
use crate::journal::{Journal, JournalError, Progress, reader, writer};
use crate::supervisor::{self, ExecutionLock};

/// How often a running execution's journal is looked at.
const POLL: Duration = Duration::from_millis(50);
/// How often a re-attached execution's lock is tried (is its supervisor alive?).
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// How long StartJob waits for the supervisor to journal Started before answering anyway
/// (the execution is then reported as accepted, and followed as usual).
const START_WAIT: Duration = Duration::from_secs(30);
/// Bytes read per catch-up step.
const READ_CHUNK: usize = 1024 * 1024;

impl Registry {
    /// Writes the job description, spawns the supervisor and waits until it journaled
    /// Started (or ended). `file` is the journal as `create` left it (Accepted only).
    pub(super) async fn start_supervised(
        &self,
        entry: &Arc<Entry>,
        file: writer::EventFile,
        job: Result<SupervisedJob, BackendError>,
    ) -> Result<(proto::Execution, bool), RegistryError> {
        let id = entry.record.execution_id.clone();
        let offset = file.size();
        drop(file); // from here on, the supervisor is the journal's one writer
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                let message = format!("failed to start: {e}");
                self.close(entry, proto::Outcome::Failed, message).await?;
                return Err(e.into());
            }
        };
        let dir = self.inner.journal.dir(&id);
        let command = self.inner.supervisor.clone();
        let spawned = tokio::task::spawn_blocking(move || {
            supervisor::write_job(&dir, &job)
                .map_err(|e| e.to_string())
                .and_then(|()| supervisor::spawn(&command, &dir).map_err(|e| e.to_string()))
        })
        .await
        .map_err(|e| BackendError::Internal(format!("supervisor spawn task failed: {e}")))?;
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let program = self.inner.supervisor.program.display();
                let message =
                    format!("failed to start: could not start the supervisor `{program}`: {e}");
                tracing::warn!(execution_id = %id, %message, "job failed to start");
                self.close(entry, proto::Outcome::Failed, message.clone())
                    .await?;
                return Err(BackendError::Internal(message).into());
            }
        };
        self.follow(entry.clone(), offset, Some(child));
        let mut progress = entry.progress.subscribe();
        let started = tokio::time::timeout(
            START_WAIT,
            progress.wait_for(|p| p.started || p.finished.is_some()),
        )
        .await;
        if started.is_err() {
            tracing::warn!(execution_id = %id, "the supervisor has not reported Started yet; answering with the accepted execution");
        }
        let p = entry.progress.borrow().clone();
        match p.finished {
            Some(f) if !p.started => Err(BackendError::Internal(f.message).into()),
            _ => Ok((entry.to_proto(), true)),
        }
    }

    /// Closes an execution nobody else writes (no supervisor runs it) with `outcome`.
    async fn close(
        &self,
        entry: &Arc<Entry>,
        outcome: proto::Outcome,
        message: String,
    ) -> Result<(), RegistryError> {
        let journal = self.inner.journal.clone();
        let id = entry.record.execution_id.clone();
        let progress = tokio::task::spawn_blocking(move || journal.close(&id, outcome, &message))
            .await
            .map_err(|e| BackendError::Internal(format!("journal task failed: {e}")))??;
        entry.progress.send_replace(progress);
        Ok(())
    }

    /// Starts following a running supervised execution whose journal has `offset` bytes
    /// already folded into its progress. `child`: the supervisor, when we spawned it.
    pub(super) fn follow(&self, entry: Arc<Entry>, offset: u64, child: Option<Child>) {
        let follower = Follower {
            journal: self.inner.journal.clone(),
            path: self.inner.journal.events_path(&entry.record.execution_id),
            entry,
            offset,
        };
        let stop = self.inner.watchers_stop.clone();
        self.inner.writers.spawn(follower.run(child, stop));
    }
}

struct Follower {
    journal: Journal,
    path: PathBuf,
    entry: Arc<Entry>,
    offset: u64,
}

impl Follower {
    /// Until Finished is read, the supervisor is found gone, or the sidecar shuts down.
    async fn run(mut self, mut child: Option<Child>, stop: CancellationToken) {
        let id = self.entry.record.execution_id.clone();
        let mut next_liveness = Instant::now();
        loop {
            let exited = tokio::select! {
                () = tokio::time::sleep(POLL) => None,
                status = wait(&mut child) => Some(status),
                () = stop.cancelled() => return,
            };
            match self.catch_up().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    // Policy on error: keep trying; Watch reports its own read errors.
                    tracing::warn!(execution_id = %id, error = %e, "failed to read the journal");
                    continue;
                }
            }
            if let Some(status) = exited {
                let status = status
                    .map(crate::process::describe_exit)
                    .unwrap_or_else(|e| format!("unknown status ({e})"));
                tracing::warn!(execution_id = %id, %status, "the supervisor exited before the execution finished");
                self.close_if_dead(Gone::Exited(status)).await;
                return;
            }
            if child.is_none() && Instant::now() >= next_liveness {
                next_liveness = Instant::now() + LIVENESS_EVERY;
                if self.close_if_dead(Gone::AfterRestart).await {
                    return;
                }
            }
        }
    }

    /// Reads new whole records and folds them into the progress; true once Finished.
    async fn catch_up(&mut self) -> std::io::Result<bool> {
        loop {
            let len = tokio::fs::metadata(&self.path).await?.len();
            if len <= self.offset {
                return Ok(false);
            }
            let (path, offset) = (self.path.clone(), self.offset);
            let (events, next) =
                tokio::task::spawn_blocking(move || reader::read_from(&path, offset, READ_CHUNK))
                    .await
                    .map_err(std::io::Error::other)??;
            if events.is_empty() {
                return Ok(false); // a record still being written
            }
            self.offset = next;
            let mut finished = false;
            self.entry.progress.send_modify(|p| {
                for e in &events {
                    if e.seq > p.last_seq {
                        p.observe(e);
                    }
                }
                finished = p.finished.is_some();
            });
            if finished {
                return Ok(true);
            }
        }
    }

    /// If no supervisor holds the lock, closes the journal (under the lock) as `why`
    /// says and publishes it; true when the execution is over.
    async fn close_if_dead(&mut self, why: Gone) -> bool {
        let journal = self.journal.clone();
        let dir = journal.dir(&self.entry.record.execution_id);
        let id = self.entry.record.execution_id.clone();
        let closed = tokio::task::spawn_blocking(move || {
            let Some(lock) = ExecutionLock::try_acquire(&dir).map_err(|e| JournalError::Io {
                action: "lock",
                path: dir.clone(),
                source: e,
            })?
            else {
                return Ok(None); // alive
            };
            // Under the lock nobody writes: what is on disk now is all there will be.
            let started = reader::scan(&journal.events_path(&id))?.progress.started;
            let (outcome, message) = why.verdict(started, &dir);
            let progress = journal.close(&id, outcome, &message)?;
            drop(lock);
            Ok::<Option<Progress>, JournalError>(Some(progress))
        })
        .await;
        match closed {
            Ok(Ok(Some(progress))) => {
                if let Some(f) = &progress.finished {
                    tracing::warn!(execution_id = %self.entry.record.execution_id, outcome = ?f.outcome, message = %f.message, "closed an execution whose supervisor is gone");
                }
                self.entry.progress.send_replace(progress);
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(execution_id = %self.entry.record.execution_id, error = %e, "could not check the supervisor's lock");
                false
            }
            Err(e) => {
                tracing::warn!(execution_id = %self.entry.record.execution_id, error = %e, "lock check task failed");
                false
            }
        }
    }
}

/// How the supervisor went away.
enum Gone {
    /// Our own child exited (with this status) before Finished.
    Exited(String),
    /// Found without a supervisor after a sidecar restart.
    AfterRestart,
}

impl Gone {
    fn verdict(&self, started: bool, dir: &std::path::Path) -> (proto::Outcome, String) {
        let log = dir.join(supervisor::LOG_FILE);
        match (self, started) {
            (Gone::Exited(status), false) => (
                proto::Outcome::Failed,
                format!(
                    "failed to start: the supervisor exited ({status}) before starting the job; see {}",
                    log.display()
                ),
            ),
            (Gone::Exited(status), true) => (
                proto::Outcome::Lost,
                format!(
                    "the supervisor of this execution exited ({status}) before it finished; its result is unknown; see {}",
                    log.display()
                ),
            ),
            (Gone::AfterRestart, false) => (
                proto::Outcome::Lost,
                recovery_message::NOT_STARTED.to_owned(),
            ),
            (Gone::AfterRestart, true) => (
                proto::Outcome::Lost,
                recovery_message::SUPERVISOR_GONE.to_owned(),
            ),
        }
    }
}

/// The messages of executions closed because their supervisor is gone.
pub(super) mod recovery_message {
    pub const NOT_STARTED: &str =
        "the sidecar restarted before the job started; it was not started";
    pub const SUPERVISOR_GONE: &str =
        "the supervisor of this execution is gone (machine restarted?); its result is unknown";
}

/// Waits for the child, if any (pending forever otherwise).
async fn wait(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}
