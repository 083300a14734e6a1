//! Executions run by a supervisor process (command jobs; see `crate::supervisor`): the
//! sidecar's side of the start, and the follower that turns the journal the supervisor
//! writes into this execution's `Progress`.
//!
//! The follower reads the journal when the supervisor says it grew (a byte on the
//! supervisor's stdout pipe, see `supervisor::run::notify_progress`), and polls its length
//! as a fallback: every `POLL_NOTIFIED` while the pipe works, every `POLL` after a restart
//! (a re-attached supervisor is not our child: no pipe). New whole records are read and
//! folded in, which wakes Watch streams and frees the slot on Finished. It also notices a supervisor that died without a
//! Finished event: while the supervisor is our own child its exit tells us; after a
//! restart (re-attached, not our child) the execution lock is tried every
//! `LIVENESS_EVERY`. Either way the journal is then closed under the lock (`closing.rs`;
//! a Finished event the disk does not take is published from memory and retried).
//!
//! A journal that cannot be read is retried with backoff, still checking liveness, and
//! after `MAX_READ_ERRORS` failures in a row the execution ends as LOST (the supervisor is
//! asked to stop) rather than being polled forever; so does one whose supervisor is gone
//! but whose journal cannot be closed (e.g. its record cannot be read any more).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto;
use tokio::process::Child;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Entry, Registry, RegistryError};
use crate::backend::{BackendError, SupervisedJob};
use crate::journal::{Journal, finished_event, reader, writer};
use crate::supervisor;

mod closing;
#[cfg(test)]
mod tests;

use closing::Gone;

/// How often a running execution's journal is looked at without word from its supervisor.
const POLL: Duration = Duration::from_millis(50);
/// The same while the supervisor's pipe tells us of each append (a safety net only).
const POLL_NOTIFIED: Duration = Duration::from_secs(1);
/// Bytes read from the supervisor's pipe at once (each byte is one "the journal grew").
const NOTIFY_BUF: usize = 256;
/// How often a re-attached execution's lock is tried (is its supervisor alive?).
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// How long StartJob waits for the supervisor to journal Started before answering anyway
/// (the execution is then reported as accepted, and followed as usual).
const START_WAIT: Duration = Duration::from_secs(30);
/// Bytes read per catch-up step.
const READ_CHUNK: usize = 1024 * 1024;
/// Failed reads of the journal in a row (with backoff: about 15 s) after which the
/// execution is ended as LOST instead of being polled forever (fewer in unit tests, so
/// that they take seconds).
const MAX_READ_ERRORS: u32 = if cfg!(test) { 5 } else { 20 };

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
            close_errors: 0,
            close_error: None,
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
    /// Failed tries to close the journal of a gone supervisor, in a row, and the last error.
    close_errors: u32,
    close_error: Option<String>,
}

impl Follower {
    /// Until Finished is read, the supervisor is found gone, the journal stays unreadable
    /// (`MAX_READ_ERRORS`), or the sidecar shuts down.
    async fn run(mut self, mut child: Option<Child>, stop: CancellationToken) {
        let id = self.entry.record.execution_id.clone();
        let mut notify = child.as_mut().and_then(|c| c.stdout.take());
        // The supervisor's stdin: one byte on it says "a stop file is there" (written
        // before `stop` fires), so it need not poll for it often. Kept open until the
        // follower ends: its closing tells the supervisor to poll instead.
        let mut stop_pipe = child.as_mut().and_then(|c| c.stdin.take());
        let stop_asked = self.entry.stop.clone();
        let mut notify_buf = [0u8; NOTIFY_BUF];
        let mut next_liveness = Instant::now();
        let mut gone: Option<Gone> = None;
        let mut read_errors = 0u32;
        loop {
            let delay = match notify {
                Some(_) if read_errors == 0 => POLL_NOTIFIED,
                _ => poll_delay(read_errors),
            };
            let exited = tokio::select! {
                () = tokio::time::sleep(delay) => None,
                read = notified(&mut notify, &mut notify_buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        notify = None; // the supervisor closed it: poll from now on
                    }
                    None
                }
                status = wait(&mut child) => Some(status),
                () = stop_asked.cancelled(), if stop_pipe.is_some() => {
                    tell_stop(&mut stop_pipe).await;
                    None
                }
                () = stop.cancelled() => return,
            };
            if let Some(status) = exited {
                child = None;
                let how = Gone::exited(status);
                if let Gone::Exited { status, .. } = &how {
                    tracing::info!(execution_id = %id, %status, "the supervisor exited");
                }
                gone = Some(how);
            }
            match self.catch_up().await {
                Ok(true) => return,
                Ok(false) => read_errors = 0,
                Err(e) => {
                    read_errors += 1;
                    tracing::warn!(execution_id = %id, error = %e, read_errors, "failed to read the journal");
                    if read_errors >= MAX_READ_ERRORS {
                        let message = format!(
                            "the journal of this execution cannot be read ({e}); the job was asked to stop, and its result is unknown; see {}",
                            self.path.display()
                        );
                        let dir = self.journal.dir(&id);
                        let _ = tokio::task::spawn_blocking(move || {
                            supervisor::request_stop(&dir, "the sidecar cannot read the journal")
                        })
                        .await;
                        tell_stop(&mut stop_pipe).await;
                        self.end_lost_from_memory(message, &stop).await;
                        return;
                    }
                    // No `continue`: a supervisor that is gone is noticed all the same.
                }
            }
            // Our child's exit is checked at once (and again after a failed close); a
            // re-attached supervisor's lock every LIVENESS_EVERY.
            if child.is_none() && Instant::now() >= next_liveness {
                next_liveness = Instant::now() + LIVENESS_EVERY;
                let why = gone.as_ref().unwrap_or(&Gone::AfterRestart);
                if let Some(Gone::Exited { status, .. }) = &gone {
                    tracing::warn!(execution_id = %id, %status, "the supervisor exited before the execution finished");
                }
                if self.close_if_dead(why, None, &stop).await {
                    return;
                }
                if let Some(e) = self
                    .close_error
                    .take_if(|_| self.close_errors >= MAX_READ_ERRORS)
                {
                    let message = format!(
                        "the supervisor of this execution is gone and its journal cannot be closed ({e}); its result is unknown"
                    );
                    self.end_lost_from_memory(message, &stop).await;
                    return;
                }
            }
        }
    }

    /// The journal could not be read, or closed, `MAX_READ_ERRORS` times in a row:
    /// publishes Finished{LOST, `message`} from memory with the next seq, and once no
    /// supervisor holds the lock, writes that same event if the journal's next seq is
    /// still the one it got (see `closing`), trying every `LIVENESS_EVERY`.
    async fn end_lost_from_memory(&mut self, message: String, stop: &CancellationToken) {
        let id = self.entry.record.execution_id.clone();
        tracing::error!(execution_id = %id, %message, "ending the execution as LOST");
        let seq = self.entry.progress.borrow().last_seq + 1;
        let event = finished_event(&id, seq, proto::Outcome::Lost, &message);
        self.entry
            .progress
            .send_modify(|p| p.observe_unwritten(&event));
        // Write it once the supervisor is gone (a full close publishes the journal's own
        // end instead, should the supervisor have written one after all).
        loop {
            tokio::select! {
                () = tokio::time::sleep(LIVENESS_EVERY) => {}
                () = stop.cancelled() => return,
            }
            if self
                .close_if_dead(&Gone::AfterRestart, Some(event.clone()), stop)
                .await
            {
                return;
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
}

/// The wait before the next look at the journal: `POLL`, backing off (doubling up to
/// `LIVENESS_EVERY`) while reads fail.
fn poll_delay(read_errors: u32) -> Duration {
    POLL.saturating_mul(1 << read_errors.min(5))
        .min(LIVENESS_EVERY)
}

/// The messages of executions closed because their supervisor is gone.
pub(super) mod recovery_message {
    pub const NOT_STARTED: &str =
        "the sidecar restarted before the job started; it was not started";
    pub const SUPERVISOR_GONE: &str =
        "the supervisor of this execution is gone (machine restarted?); its result is unknown";
}

/// Reads what the supervisor's pipe holds (pending forever without a pipe).
async fn notified(
    pipe: &mut Option<tokio::process::ChildStdout>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    match pipe {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Tells the supervisor that its stop file is there (one byte on its stdin). Once said,
/// or if the supervisor is gone, the pipe is dropped: at EOF it polls the stop file, which
/// notices this stop too.
async fn tell_stop(pipe: &mut Option<tokio::process::ChildStdin>) {
    use tokio::io::AsyncWriteExt;
    if let Some(mut p) = pipe.take() {
        let _ = p.write_all(b"s").await;
        let _ = p.flush().await;
        // Dropped here: the supervisor may see EOF right after the byte, and polls then.
    }
}

/// Waits for the child, if any (pending forever otherwise).
async fn wait(child: &mut Option<Child>) -> std::io::Result<std::process::ExitStatus> {
    match child {
        Some(c) => c.wait().await,
        None => std::future::pending().await,
    }
}
