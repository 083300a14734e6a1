//! The one writer of an execution's `events.pb`.
//!
//! It consumes the execution's `SinkMsg`s in order, numbers them, coalesces consecutive
//! log lines into `Logs` events, appends each batch with one `write` (enough to survive a
//! kill -9 of the sidecar: the data is in the page cache) and fdatasyncs when the batch
//! holds a non-log event (step and finish events must survive a power cut too). Only
//! then does it publish the new `Progress`, so a watcher never sees an event that is not
//! on disk.
//!
//! Error policy: a failed append is cut back and retried every second, with a warning;
//! the backend waits meanwhile (backpressure), so nothing is numbered twice or lost.
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
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use agentfleet_common::proto::{self, Event, event::Kind};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{JournalError, Progress, encode, finished_event, open_append};
use crate::events::SinkMsg;

/// Most lines in one `Logs` event.
pub const MAX_LINES_PER_EVENT: usize = 512;
/// Most line bytes in one `Logs` event.
pub const MAX_LOG_BYTES_PER_EVENT: usize = 256 * 1024;
/// Most bytes gathered before a batch is written (bounds the writer's memory).
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// An events file open for appending, with the next sequence number.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
    len: u64,
    pub(super) next_seq: u64,
}

impl EventFile {
    /// Opens `path` for appending after its first `len` bytes (anything after is cut).
    pub(crate) fn open(path: PathBuf, len: u64, next_seq: u64) -> Result<Self, JournalError> {
        let file = open_append(&path, len)?;
        Ok(Self {
            path,
            file,
            len,
            next_seq,
        })
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the file (all whole events).
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Appends encoded events; on failure the file is cut back to its previous length.
    pub(crate) fn append(&mut self, bytes: &[u8], sync: bool) -> Result<(), JournalError> {
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                let _ = self.file.set_len(self.len);
                Err(JournalError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

/// What the journal already holds that must not be journaled twice.
struct Seen {
    started: bool,
    history: i64,
}

/// Events gathered from the channel, ready to be written together.
struct Batch<'a> {
    execution_id: &'a str,
    next_seq: u64,
    events: Vec<Event>,
    lines: Vec<proto::LogLine>,
    lines_ts: i64,
    lines_bytes: usize,
    bytes: usize,
    /// Holds a non-log event: fdatasync after writing.
    durable: bool,
    finished: bool,
}

impl<'a> Batch<'a> {
    fn new(execution_id: &'a str, next_seq: u64) -> Self {
        Self {
            execution_id,
            next_seq,
            events: Vec::new(),
            lines: Vec::new(),
            lines_ts: 0,
            lines_bytes: 0,
            bytes: 0,
            durable: false,
            finished: false,
        }
    }

    fn push_event(&mut self, ts_ms: i64, kind: Kind) {
        self.durable = true;
        self.finished |= matches!(kind, Kind::Finished(_));
        self.events.push(Event {
            execution_id: self.execution_id.to_owned(),
            seq: self.next_seq,
            ts_ms,
            kind: Some(kind),
        });
        self.next_seq += 1;
    }

    /// Adds one message; a second Started event and events of history rows already
    /// journaled (see the module docs) are dropped.
    fn push(&mut self, msg: SinkMsg, seen: &mut Seen) {
        let floor = seen.history;
        self.push_above(msg, seen, floor);
    }

    /// `push`, dropping history-row events at or below `floor` (the position before the
    /// message: the lines of one row share its id).
    fn push_above(&mut self, msg: SinkMsg, seen: &mut Seen, floor: i64) {
        let tag = match &msg {
            SinkMsg::Event {
                kind: Kind::StepFinished(s),
                ..
            } => s.sql_instance_id,
            SinkMsg::Log { line, .. } => line.sql_instance_id,
            _ => 0,
        };
        if tag > 0 {
            if tag <= floor {
                return;
            }
            seen.history = seen.history.max(tag);
        }
        match msg {
            SinkMsg::Group(msgs) => {
                for m in msgs {
                    self.push_above(m, seen, floor);
                }
            }
            SinkMsg::Event {
                kind: Kind::Started(_),
                ..
            } if seen.started => {}
            SinkMsg::Log { ts_ms, line } => {
                if self.lines.is_empty() {
                    self.lines_ts = ts_ms;
                }
                self.lines_bytes += line.line.len();
                self.bytes += line.line.len() + 8;
                self.lines.push(line);
                if self.lines.len() >= MAX_LINES_PER_EVENT
                    || self.lines_bytes >= MAX_LOG_BYTES_PER_EVENT
                {
                    self.flush_lines();
                }
            }
            SinkMsg::Event { ts_ms, kind } => {
                seen.started |= matches!(kind, Kind::Started(_));
                self.flush_lines();
                self.bytes += 64;
                self.push_event(ts_ms, kind);
            }
        }
    }

    fn flush_lines(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        let ts = self.lines_ts;
        self.lines_bytes = 0;
        self.events.push(Event {
            execution_id: self.execution_id.to_owned(),
            seq: self.next_seq,
            ts_ms: ts,
            kind: Some(Kind::Logs(proto::Logs { lines })),
        });
        self.next_seq += 1;
    }
}

/// Spawns the writer of one execution. It ends after journaling the Finished event, or
/// when every sender is gone (then it journals Finished{LOST} itself).
pub fn spawn(
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(file, rx, progress, execution_id))
}

/// The writer's loop (for callers that track their tasks; see `spawn`).
pub async fn run(
    file: EventFile,
    rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
) {
    run_detachable(file, rx, progress, execution_id, CancellationToken::new()).await;
}

/// Like `run`; when `detach` fires, writes what is already queued and ends without a
/// Finished event: the sidecar is going down and hands the execution over to its
/// restart, which continues this journal (see `executions::recovery`).
pub async fn run_detachable(
    mut file: EventFile,
    mut rx: mpsc::Receiver<SinkMsg>,
    progress: watch::Sender<Progress>,
    execution_id: String,
    detach: CancellationToken,
) {
    let mut seen = {
        let p = progress.borrow();
        Seen {
            started: p.started,
            history: p.last_history_id,
        }
    };
    loop {
        let mut batch = Batch::new(&execution_id, file.next_seq());
        let first = tokio::select! {
            biased;
            msg = rx.recv() => Some(msg),
            () = detach.cancelled() => None,
        };
        let detaching = first.is_none();
        match first {
            Some(Some(msg)) => batch.push(msg, &mut seen),
            Some(None) => {
                // The backend dropped its sink without a Finished event (a bug, or the
                // sidecar is going down): say so rather than leave watchers hanging.
                let e = finished_event(
                    &execution_id,
                    file.next_seq(),
                    proto::Outcome::Lost,
                    "the backend stopped reporting before the execution finished; its result is unknown",
                );
                batch.events.push(e);
                batch.durable = true;
                batch.finished = true;
            }
            None => {}
        }
        // Take whatever else is already queued, so bursts of log lines share events and
        // writes; when the channel is momentarily empty, write at once (low latency).
        while !batch.finished && (detaching || batch.bytes < MAX_BATCH_BYTES) {
            match rx.try_recv() {
                Ok(msg) => batch.push(msg, &mut seen),
                Err(_) => break,
            }
        }
        batch.flush_lines();
        let (events, durable, finished) = (batch.events, batch.durable, batch.finished);
        if !events.is_empty() {
            let bytes = encode(&events);
            let Some(f) = write_with_retry(file, bytes, durable || detaching, &execution_id).await
            else {
                return; // the runtime is shutting down
            };
            file = f;
            file.next_seq += events.len() as u64;
            progress.send_modify(|p| events.iter().for_each(|e| p.observe(e)));
        }
        if finished || detaching {
            return;
        }
    }
}

async fn write_with_retry(
    mut file: EventFile,
    bytes: Vec<u8>,
    sync: bool,
    execution_id: &str,
) -> Option<EventFile> {
    let bytes = std::sync::Arc::new(bytes);
    let mut failures = 0u32;
    loop {
        let b = bytes.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let r = file.append(&b, sync);
            (file, r)
        })
        .await;
        let (f, result) = match joined {
            Ok(pair) => pair,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is shutting down, and the writer with it.
            Err(_) => return None,
        };
        file = f;
        match result {
            Ok(()) => return Some(file),
            Err(e) => {
                failures += 1;
                tracing::warn!(%execution_id, failures, error = %e, "journal append failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
