//! The one writer of an execution's `events.pb`.
//!
//! It consumes the execution's `SinkMsg`s in order, numbers them, coalesces consecutive
//! log lines into `Logs` events, and writes them by group commit: everything gathered
//! since the last write (state events and log lines alike) is appended with one `write`
//! and one fdatasync, and only then is the new `Progress` published. So a watcher never
//! sees an event that a power cut could take back, and no sequence number is ever handed
//! out twice. While one batch is being written and synced, the next one gathers (up to
//! `MAX_BATCH_BYTES`), which keeps the throughput of a busy job high: the slower the
//! disk, the bigger the batches.
//!
//! Error policy: a failed append is cut back and retried with backoff (100 ms doubling
//! to 1 s), with a warning; meanwhile the next batch gathers and then the backend waits
//! (backpressure), so nothing is numbered twice or lost. Appends still failing after
//! `RetryPolicy::give_up_after` (10 s, about a dozen attempts: a full disk, a read-only
//! or broken file system) end the execution instead of hanging it (`failure.rs`): the
//! job is stopped through its stop token, what it reports from then on is dropped, and
//! Finished{FAILED, "journal write failed: <error>; …"} is published in memory with the
//! next sequence number (see `Progress::unwritten_finished`), then written as soon as
//! the disk takes it, retrying in the background.
//!
//! A journal holds at most one Started event: a backend that re-attaches to a running job
//! after a sidecar restart (SQL Server Agent) reports Started again, and the writer, which
//! continues the existing journal, drops the repeat.
//!
//! SQL Server Agent history rows: a `SinkMsg::Group` is journaled in one append, and its
//! events carry the msdb `instance_id` of the row they come from (`StepFinished`,
//! `LogLine`). The writer never journals a row at or below `Progress::last_history_id`
//! (the largest one already on disk) again, so a backend resuming from an older position
//! cannot show a row twice; the backend itself resumes from that same position (see
//! `backend::sqlagent::follower`).
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, Event, event::Kind};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{JournalError, Progress, encode};
use crate::events::SinkMsg;

mod batch;
mod failure;
mod file;

use batch::{Batch, Seen};
pub use failure::{JOURNAL_WRITE_FAILED, io_cause, journal_write_failed};
pub use file::EventFile;
#[cfg(test)]
pub(crate) use file::test_hooks;

/// Most lines in one `Logs` event.
pub const MAX_LINES_PER_EVENT: usize = 512;
/// Most line bytes in one `Logs` event.
pub const MAX_LOG_BYTES_PER_EVENT: usize = 256 * 1024;
/// Most bytes gathered while the previous batch is written (bounds the writer's memory).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// How the writer treats appends that fail (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Appends failing for this long end the execution.
    pub give_up_after: Duration,
    /// Delay before the first retry; doubled after each failure up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// After giving up, how long to go on trying to write the Finished event: `None`,
    /// while the process lives (the sidecar); a supervisor gives up sooner and exits so
    /// that the sidecar takes over (see `supervisor::run`).
    pub finish_for: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            give_up_after: Duration::from_secs(10),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            finish_for: None,
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th failure in a row.
    fn delay(&self, failures: u32) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(self.max_delay)
    }
}

/// How a writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The Finished event is on disk.
    Finished,
    /// Handed over (`detach` fired) without a Finished event.
    Detached,
    /// The journal could not be written: the job was stopped and the Finished event
    /// published in memory, but it could not be written within `finish_for`.
    FinishUnwritten,
    /// The runtime is shutting down.
    Aborted,
}

/// The one writer of an execution: `Writer::new(...).run()`, optionally with a detach
/// token, the job's stop token and a retry policy.
pub struct Writer {
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
    detach: CancellationToken,
    stop: CancellationToken,
    policy: RetryPolicy,
}

/// Spawns the writer of one execution. It ends after journaling the Finished event, or
/// when every sender is gone (then it journals Finished{LOST} itself).
pub fn spawn(
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
) -> JoinHandle<()> {
    tokio::spawn(run(file, rx, progress, execution_id))
}

/// The writer's loop (for callers that track their tasks; see `spawn`).
pub async fn run(
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
) {
    Writer::new(file, rx, progress, execution_id).run().await;
}

/// Like `run`; when `detach` fires, writes what is already queued and ends without a
/// Finished event: the sidecar is going down and hands the execution over to its
/// restart, which continues this journal (see `executions::recovery`). `stop` is the
/// job's stop token, cancelled when the journal cannot be written.
pub async fn run_detachable(
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
    detach: CancellationToken,
    stop: CancellationToken,
) {
    Writer::new(file, rx, progress, execution_id)
        .detach_on(detach)
        .stop_on_failure(stop)
        .run()
        .await;
}

/// A batch on its way to disk: being written, or waiting to be written again.
struct Sealed {
    events: Vec<Event>,
    bytes: Arc<Vec<u8>>,
    finished: bool,
}

/// Appends failing in a row.
struct Failing {
    since: Instant,
    failures: u32,
    retry_at: Instant,
}

type Append = JoinHandle<(EventFile, Result<(), JournalError>)>;

/// Appends `bytes` on the blocking pool.
fn append(mut file: EventFile, bytes: Arc<Vec<u8>>) -> Append {
    tokio::task::spawn_blocking(move || {
        let result = file.append(&bytes);
        (file, result)
    })
}

/// The end of a blocking append; `None` when the runtime is shutting down.
fn joined(
    result: Result<(EventFile, Result<(), JournalError>), tokio::task::JoinError>,
) -> Option<(EventFile, Result<(), JournalError>)> {
    match result {
        Ok(pair) => Some(pair),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

impl Writer {
    pub fn new(
        file: EventFile,
        rx: mpsc::Receiver<SinkMsg>,
        progress: watch::Sender<Progress>,
        execution_id: String,
    ) -> Self {
        Self {
            file,
            rx,
            progress,
            execution_id,
            detach: CancellationToken::new(),
            stop: CancellationToken::new(),
            policy: RetryPolicy::default(),
        }
    }

    /// When `detach` fires: write what is queued and end without Finished.
    pub fn detach_on(mut self, detach: CancellationToken) -> Self {
        self.detach = detach;
        self
    }

    /// The job's stop token: cancelled when the journal cannot be written.
    pub fn stop_on_failure(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Writes until the Finished event is on disk (or the other endings of `Ended`).
    pub async fn run(mut self) -> Ended {
        let mut seen = {
            let p = self.progress.borrow();
            Seen {
                started: p.started,
                history: p.last_history_id,
            }
        };
        let id = self.execution_id.clone();
        let mut file = Some(self.file);
        let mut batch = Batch::new(&id, file.as_ref().map_or(0, EventFile::next_seq));
        let mut sealed: Option<Sealed> = None;
        let mut writing: Option<Append> = None;
        let mut failing: Option<Failing> = None;
        // A Finished event is in a batch (the backend's, or LOST for a closed channel).
        let mut finish_queued = false;
        let mut detaching = false;
        loop {
            // Seal what gathered as soon as the previous batch is on disk: low latency
            // when idle, bigger batches when the disk is the bottleneck.
            if sealed.is_none() && !batch.is_empty() {
                batch.flush_lines();
                let next = Batch::new(&id, batch.next_seq);
                let done = std::mem::replace(&mut batch, next);
                sealed = Some(Sealed {
                    bytes: Arc::new(encode(&done.events)),
                    finished: done.finished,
                    events: done.events,
                });
            }
            let retry_due = failing
                .as_ref()
                .is_none_or(|f| Instant::now() >= f.retry_at);
            if let (Some(s), None, true) = (&sealed, &writing, retry_due) {
                let f = file
                    .take()
                    .expect("the file is here while nothing is being written");
                writing = Some(append(f, s.bytes.clone()));
            }
            if sealed.is_none() && detaching {
                return Ended::Detached;
            }
            let can_take = !finish_queued && !detaching && batch.bytes < MAX_BATCH_BYTES;
            tokio::select! {
                biased;
                done = async { writing.as_mut().expect("guarded").await }, if writing.is_some() => {
                    writing = None;
                    let Some((mut f, result)) = joined(done) else {
                        return Ended::Aborted;
                    };
                    match result {
                        Ok(()) => {
                            let s = sealed.take().expect("a write has its batch");
                            f.next_seq += s.events.len() as u64;
                            failing = None;
                            self.progress.send_modify(|p| s.events.iter().for_each(|e| p.observe(e)));
                            if s.finished {
                                return Ended::Finished;
                            }
                            file = Some(f);
                        }
                        Err(e) => {
                            let (since, failures) = failing.as_ref().map_or((Instant::now(), 1), |x| (x.since, x.failures + 1));
                            if since.elapsed() >= self.policy.give_up_after {
                                let ending = failure::Ending {
                                    execution_id: &id,
                                    progress: &self.progress,
                                    stop: &self.stop,
                                    detach: &self.detach,
                                    policy: &self.policy,
                                };
                                return ending.give_up(f, &e, &mut self.rx, finish_queued).await;
                            }
                            let delay = self.policy.delay(failures);
                            tracing::warn!(execution_id = %id, failures, error = %e, ?delay, "journal append failed; retrying");
                            failing = Some(Failing { since, failures, retry_at: Instant::now() + delay });
                            file = Some(f);
                        }
                    }
                }
                () = tokio::time::sleep_until(failing.as_ref().map_or_else(Instant::now, |f| f.retry_at)), if writing.is_none() && failing.is_some() => {}
                () = self.detach.cancelled(), if !detaching => {
                    detaching = true;
                    // Write what is already queued, then end (see `run_detachable`).
                    while !finish_queued {
                        match self.rx.try_recv() {
                            Ok(msg) => batch.push(msg, &mut seen),
                            Err(_) => break,
                        }
                        finish_queued = batch.finished;
                    }
                }
                msg = self.rx.recv(), if can_take => {
                    match msg {
                        Some(msg) => batch.push(msg, &mut seen),
                        None => {
                            // The backend dropped its sink without a Finished event (a
                            // bug, or the sidecar is going down): say so rather than
                            // leave watchers hanging.
                            batch.push_event(agentfleet_common::now_ms(), Kind::Finished(proto::Finished {
                                outcome: proto::Outcome::Lost as i32,
                                message: "the backend stopped reporting before the execution finished; its result is unknown".into(),
                            }));
                        }
                    }
                    finish_queued = batch.finished;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
