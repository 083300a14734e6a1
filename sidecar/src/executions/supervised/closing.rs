//! Ending a supervised execution from the sidecar's side: when its supervisor is gone
//! (closed under the execution lock, so a late supervisor cannot race), and when its
//! journal cannot be written or read.
//!
//! A Finished event that the disk does not take (ENOSPC) is published in memory all the
//! same (`Progress::unwritten_finished`, with the next sequence number), and the
//! follower keeps the lock and tries to write that very event every `FINISH_RETRY` until
//! it is on disk or the sidecar shuts down.
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::{self, Event};
use tokio_util::sync::CancellationToken;

use super::{Follower, recovery_message};
use crate::journal::writer::{self, EventFile};
use crate::journal::{Journal, JournalError, Progress, encode, finished_event};
use crate::supervisor::{self, ExecutionLock};

/// How often an unwritten Finished event is tried again.
const FINISH_RETRY: Duration = Duration::from_secs(1);

/// How the supervisor went away.
#[derive(Debug, Clone)]
pub(super) enum Gone {
    /// Our own child exited (with this status) before Finished; `journal_unwritable`:
    /// with `supervisor::EXIT_JOURNAL_UNWRITABLE`.
    Exited {
        status: String,
        journal_unwritable: bool,
    },
    /// Found without a supervisor after a sidecar restart.
    AfterRestart,
}

impl Gone {
    pub(super) fn exited(status: std::io::Result<std::process::ExitStatus>) -> Self {
        let journal_unwritable = status.as_ref().ok().and_then(|s| s.code())
            == Some(i32::from(supervisor::EXIT_JOURNAL_UNWRITABLE));
        let status = status
            .map(crate::process::describe_exit)
            .unwrap_or_else(|e| format!("unknown status ({e})"));
        Gone::Exited {
            status,
            journal_unwritable,
        }
    }

    fn verdict(&self, started: bool, dir: &Path) -> (proto::Outcome, String) {
        let log = dir.join(supervisor::LOG_FILE);
        match (self, started) {
            (
                Gone::Exited {
                    status,
                    journal_unwritable: true,
                },
                _,
            ) => (
                proto::Outcome::Failed,
                format!(
                    "{}: the supervisor could not write the journal, stopped the job and exited ({status}); see {}",
                    writer::JOURNAL_WRITE_FAILED,
                    log.display()
                ),
            ),
            (Gone::Exited { status, .. }, false) => (
                proto::Outcome::Failed,
                format!(
                    "failed to start: the supervisor exited ({status}) before starting the job; see {}",
                    log.display()
                ),
            ),
            (Gone::Exited { status, .. }, true) => (
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

/// What a try to close the execution found.
pub(super) enum Closing {
    /// A supervisor holds the lock.
    Alive,
    /// The journal holds a Finished event now.
    Closed(Progress),
    /// Nobody else writes, but the disk did not take the Finished event: publish it from
    /// memory and keep trying with the lock held.
    Unwritten {
        lock: ExecutionLock,
        file: EventFile,
        on_disk: Progress,
        /// Boxed: an event is large, and the other variants are small.
        event: Box<Event>,
    },
}

/// If no supervisor holds the lock, appends `prepared` (when it has the next seq) or
/// Finished with `why`'s verdict. Blocking.
pub(super) fn try_close(
    journal: &Journal,
    id: &str,
    why: &Gone,
    prepared: Option<&Event>,
) -> Result<Closing, JournalError> {
    let dir = journal.dir(id);
    let Some(lock) = ExecutionLock::try_acquire(&dir).map_err(|source| JournalError::Io {
        action: "lock",
        path: dir.clone(),
        source,
    })?
    else {
        return Ok(Closing::Alive);
    };
    // Under the lock nobody writes: what is on disk now is all there will be.
    let (mut file, mut progress) = journal.reopen(id)?;
    if progress.finished.is_some() {
        return Ok(Closing::Closed(progress));
    }
    let event = match prepared {
        Some(e) if e.seq == file.next_seq() => e.clone(),
        _ => {
            let (outcome, message) = why.verdict(progress.started, &dir);
            finished_event(id, file.next_seq(), outcome, &message)
        }
    };
    match file.append(&encode(std::slice::from_ref(&event))) {
        Ok(()) => {
            progress.observe(&event);
            Ok(Closing::Closed(progress))
        }
        Err(e) => {
            tracing::warn!(execution_id = %id, error = %e, "could not write the execution's Finished event; publishing it and trying again");
            let event = match prepared {
                Some(p) if p.seq == event.seq => event,
                // Say why it is not on disk (the content is fixed from here on).
                _ => with_message(event, |m| {
                    writer::journal_write_failed(&writer::io_cause(&e), m)
                }),
            };
            Ok(Closing::Unwritten {
                lock,
                file,
                on_disk: progress,
                event: Box::new(event),
            })
        }
    }
}

fn with_message(mut event: Event, f: impl FnOnce(&str) -> String) -> Event {
    if let Some(proto::event::Kind::Finished(fin)) = &mut event.kind {
        fin.message = f(&fin.message);
    }
    event
}

impl Follower {
    /// If no supervisor is alive, closes the journal as `why` says (see `try_close`)
    /// and publishes it; true when the execution is over.
    pub(super) async fn close_if_dead(
        &mut self,
        why: &Gone,
        prepared: Option<Event>,
        stop: &CancellationToken,
    ) -> bool {
        let journal = self.journal.clone();
        let id = self.entry.record.execution_id.clone();
        let closing = {
            let (id, why) = (id.clone(), why.clone());
            tokio::task::spawn_blocking(move || try_close(&journal, &id, &why, prepared.as_ref()))
                .await
        };
        match closing {
            Ok(Ok(Closing::Closed(progress))) => {
                if let Some(f) = &progress.finished {
                    tracing::warn!(execution_id = %id, outcome = ?f.outcome, message = %f.message, "closed an execution whose supervisor is gone");
                }
                self.entry.progress.send_replace(progress);
                true
            }
            Ok(Ok(Closing::Alive)) => {
                self.close_errors = 0;
                false
            }
            Ok(Ok(Closing::Unwritten {
                lock,
                file,
                mut on_disk,
                event,
            })) => {
                on_disk.observe_unwritten(&event);
                self.entry.progress.send_replace(on_disk);
                self.write_finished(lock, file, *event, stop).await;
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(execution_id = %id, error = %e, "could not check the supervisor's lock or close the journal; trying again");
                self.close_errors += 1;
                self.close_error = Some(e.to_string());
                false
            }
            Err(e) => {
                tracing::warn!(execution_id = %id, error = %e, "lock check task failed");
                self.close_errors += 1;
                self.close_error = Some(e.to_string());
                false
            }
        }
    }

    /// Tries to write the published `event` every `FINISH_RETRY`, holding the lock, until
    /// it is on disk or the sidecar shuts down (the restart closes the execution then).
    async fn write_finished(
        &self,
        lock: ExecutionLock,
        mut file: EventFile,
        event: Event,
        stop: &CancellationToken,
    ) {
        let id = &self.entry.record.execution_id;
        let bytes = std::sync::Arc::new(encode(std::slice::from_ref(&event)));
        loop {
            tokio::select! {
                () = tokio::time::sleep(FINISH_RETRY) => {}
                () = stop.cancelled() => return,
            }
            let b = bytes.clone();
            let Ok((f, result)) = tokio::task::spawn_blocking(move || {
                let r = file.append(&b);
                (file, r)
            })
            .await
            else {
                return; // the runtime is going down
            };
            file = f;
            if result.is_ok() {
                tracing::info!(execution_id = %id, seq = event.seq, "wrote the execution's Finished event");
                self.entry.progress.send_modify(|p| p.observe(&event));
                drop(lock);
                return;
            }
        }
    }
}
