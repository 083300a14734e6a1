//! Ending an execution whose journal cannot be written (see the writer's error policy):
//! stop the job, publish Finished{FAILED} in memory, write it once the disk takes it.
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Ended, EventFile, RetryPolicy, append, joined};
use crate::events::SinkMsg;
use crate::journal::{JournalError, Progress, encode, finished_event};

/// How long a stopped job gets to end (its stop grace, then the kill, then its last
/// output) before its Finished event is published anyway.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// The prefix of every message of an execution ended because its journal could not be
/// written (what operators and tests look for).
pub const JOURNAL_WRITE_FAILED: &str = "journal write failed";

/// `"journal write failed: <cause>; <rest>"`, where `rest` may itself start with the
/// prefix (it is not repeated).
pub fn journal_write_failed(cause: &dyn std::fmt::Display, rest: &str) -> String {
    let rest = rest
        .strip_prefix(JOURNAL_WRITE_FAILED)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(rest);
    format!("{JOURNAL_WRITE_FAILED}: {cause}; {rest}")
}

/// The operating system's words for a failed append ("No space left on device (os
/// error 28)"), without the path and advice of `JournalError`'s own message.
pub fn io_cause(e: &JournalError) -> String {
    match e {
        JournalError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// What the writer hands over when it gives up.
pub(super) struct Ending<'a> {
    pub(super) execution_id: &'a str,
    pub(super) progress: &'a watch::Sender<Progress>,
    pub(super) stop: &'a CancellationToken,
    pub(super) detach: &'a CancellationToken,
    pub(super) policy: &'a RetryPolicy,
}

impl Ending<'_> {
    /// Stops the job, waits (bounded) for it to end, publishes Finished{FAILED} with the
    /// next sequence number on disk, and tries to write it until it is on disk or
    /// `policy.finish_for` has passed. Whatever the backend sends meanwhile is dropped,
    /// so it never blocks on a full channel. `finish_queued`: the backend's own Finished
    /// was among the events that could not be written (the job is over already).
    pub(super) async fn give_up(
        &self,
        file: EventFile,
        error: &JournalError,
        rx: &mut mpsc::Receiver<SinkMsg>,
        finish_queued: bool,
    ) -> Ended {
        let id = self.execution_id;
        let on_disk = file.next_seq() - 1;
        tracing::error!(execution_id = %id, error = %error, last_seq_on_disk = on_disk, "the journal cannot be written; stopping the job and ending the execution as FAILED");
        self.stop.cancel();
        let mut backend_done = finish_queued;
        if !backend_done {
            let deadline = Instant::now() + STOP_WAIT;
            while !backend_done {
                tokio::select! {
                    msg = rx.recv() => backend_done = ends_the_job(msg),
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::warn!(execution_id = %id, "the stopped job has not ended; publishing its end anyway");
                        break;
                    }
                    () = self.detach.cancelled() => return Ended::Detached,
                }
            }
        }
        let message = journal_write_failed(
            &io_cause(error),
            &format!(
                "the job was stopped and the execution ended; its events after seq {on_disk} are lost. Free space in the sidecar's state_dir"
            ),
        );
        let event = finished_event(id, on_disk + 1, proto::Outcome::Failed, &message);
        self.progress.send_modify(|p| p.observe_unwritten(&event));
        self.write_finished(file, &event, rx).await
    }

    /// Tries to write `event` until it is on disk (then published as written), or
    /// `policy.finish_for` has passed, draining the channel meanwhile.
    async fn write_finished(
        &self,
        file: EventFile,
        event: &agentfleet_common::proto::Event,
        rx: &mut mpsc::Receiver<SinkMsg>,
    ) -> Ended {
        let id = self.execution_id;
        let bytes = Arc::new(encode(std::slice::from_ref(event)));
        let deadline = self.policy.finish_for.map(|d| Instant::now() + d);
        let mut file = file;
        let mut channel_open = true;
        loop {
            let Some((f, result)) = joined(append(file, bytes.clone()).await) else {
                return Ended::Aborted;
            };
            file = f;
            if result.is_ok() {
                tracing::info!(execution_id = %id, seq = event.seq, "the journal takes writes again: wrote the execution's Finished event");
                self.progress.send_modify(|p| p.observe(event));
                return Ended::Finished;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ended::FinishUnwritten;
            }
            let retry_at = Instant::now() + self.policy.max_delay;
            loop {
                tokio::select! {
                    msg = rx.recv(), if channel_open => channel_open = msg.is_some(),
                    () = tokio::time::sleep_until(retry_at) => break,
                    () = self.detach.cancelled() => return Ended::Detached,
                }
            }
        }
    }
}

/// True when `msg` shows the backend is done: its Finished event, or its sink gone.
fn ends_the_job(msg: Option<SinkMsg>) -> bool {
    match msg {
        None => true,
        Some(SinkMsg::Event {
            kind: Kind::Finished(_),
            ..
        }) => true,
        Some(SinkMsg::Group(msgs)) => msgs.into_iter().any(|m| ends_the_job(Some(m))),
        Some(_) => false,
    }
}
