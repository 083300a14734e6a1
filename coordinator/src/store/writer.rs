//! The store's one writer per process: a dedicated thread that owns a connection and
//! commits the run's events in batches.
//!
//! Overload policy: backpressure. Events arrive over a bounded channel; when the disk is
//! slower than the fleet, `send` waits, which slows the reporters and, through the
//! dispatcher's own bounded channel, the executors reading from the sidecars. The
//! sidecars keep every event in their journals, so waiting loses nothing; dropping would.
//! Memory stays bounded whatever the volume of logs: the channel, one batch, and at most
//! `MAX_PENDING_PER_EXECUTION` events per running execution.
//!
//! Resume without duplicates or gaps: an execution's events (steps, log lines) are held
//! back until the executor's `ExecutionSeq` mark that covers them arrives, and are then
//! written in the same transaction as `executions.last_seq`. So after any crash the file
//! holds exactly the events up to `last_seq`, and a watch resumed from it fills in the rest.
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};

use super::{StoreError, apply, schema};
use crate::events::{RunEvent, RunEventKind};

/// Events in flight between the reporters and the writer thread.
pub const CHANNEL_CAPACITY: usize = 8192;
/// A batch is committed when it has this many rows...
pub const BATCH_ROWS: usize = 5000;
/// ...or this long after its first row arrived, whichever comes first.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(100);
/// An execution's events waiting for their sequence mark. Beyond this they are written
/// without it: bounded memory wins over exactly-once on resume. (The executor marks every
/// sidecar event, and a sidecar event holds far fewer log lines than this.)
pub const MAX_PENDING_PER_EXECUTION: usize = 10_000;
/// Attempts at committing one batch (e.g. another process held the lock too long).
const COMMIT_ATTEMPTS: u32 = 3;

enum Msg {
    Event(RunEvent),
    Flush(SyncSender<()>),
}

/// What the writer did; returned by [`Writer::close`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriterStats {
    pub events: u64,
    pub batches: u64,
    /// Events in batches that could not be committed.
    pub lost_events: u64,
    pub last_error: Option<String>,
    /// Events still waiting for a sequence mark at close; a resumed watch re-reads them.
    pub unmarked_at_close: u64,
}

/// Handle to the writer thread. Dropping it closes the writer and waits for it.
pub struct Writer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<WriterStats>>,
}

impl Writer {
    /// Opens its own connection to the store file at `path` and starts the thread.
    pub fn spawn(path: &Path) -> Result<Self, StoreError> {
        let conn = schema::open(path)?;
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || Worker::new(conn).run(rx))
            .map_err(StoreError::Thread)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `ev`; waits while the channel is full (backpressure, never drops).
    pub fn send(&self, ev: RunEvent) {
        if let Some(tx) = &self.tx {
            // Fails only when the thread is gone (it panicked); close() reports that.
            let _ = tx.send(Msg::Event(ev));
        }
    }

    /// Waits until everything sent so far is committed (except events still waiting for
    /// their sequence mark).
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack_tx, ack_rx) = sync_channel(1);
        if tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv();
        }
    }

    /// Commits what is queued, stops the thread and says what it did.
    pub fn close(mut self) -> WriterStats {
        self.shutdown()
    }

    fn shutdown(&mut self) -> WriterStats {
        drop(self.tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(stats)) => stats,
            Some(Err(_)) => WriterStats {
                last_error: Some("the store writer thread panicked".into()),
                ..WriterStats::default()
            },
            None => WriterStats::default(),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Item {
    Event(RunEvent),
    Seq { execution_id: String, seq: u64 },
}

struct Worker {
    conn: Connection,
    /// Per execution id: its task and its events not yet covered by a sequence mark.
    pending: HashMap<String, (String, Vec<RunEvent>)>,
    batch: Vec<Item>,
    /// Log lines' integer keys per execution, resolved once.
    log_keys: apply::LogKeys,
    stats: WriterStats,
}

impl Worker {
    fn new(conn: Connection) -> Self {
        Self {
            conn,
            pending: HashMap::new(),
            batch: Vec::with_capacity(BATCH_ROWS),
            log_keys: apply::LogKeys::default(),
            stats: WriterStats::default(),
        }
    }

    fn run(mut self, rx: Receiver<Msg>) -> WriterStats {
        let mut acks = Vec::new();
        let mut closed = false;
        while !closed {
            let Ok(mut msg) = rx.recv() else { break };
            let deadline = Instant::now() + BATCH_INTERVAL;
            loop {
                match msg {
                    Msg::Event(ev) => self.take(ev),
                    Msg::Flush(ack) => {
                        acks.push(ack);
                        break;
                    }
                }
                let now = Instant::now();
                if self.batch.len() >= BATCH_ROWS || now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(next) => msg = next,
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.commit();
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
        }
        self.stats.unmarked_at_close = self.pending.values().map(|(_, v)| v.len() as u64).sum();
        self.stats
    }

    /// Sorts an event into the batch, or holds it until its sequence mark arrives.
    fn take(&mut self, ev: RunEvent) {
        self.stats.events += 1;
        match &ev.kind {
            RunEventKind::ExecutionSeq { at, seq } => {
                let seq = *seq;
                let execution_id = at.execution_id.clone();
                self.release(&execution_id);
                self.batch.push(Item::Seq { execution_id, seq });
            }
            // What the executor reports from the sidecar's journal.
            RunEventKind::TaskStarted { at, .. }
            | RunEventKind::StepStarted { at, .. }
            | RunEventKind::StepFinished { at, .. }
            | RunEventKind::Log { at, .. } => {
                let execution_id = at.execution_id.clone();
                let entry = self
                    .pending
                    .entry(execution_id.clone())
                    .or_insert_with(|| (at.task.clone(), Vec::new()));
                entry.1.push(ev);
                if entry.1.len() >= MAX_PENDING_PER_EXECUTION {
                    tracing::debug!(execution = %execution_id, "no sequence mark after many events; writing them unmarked");
                    self.release(&execution_id);
                }
            }
            RunEventKind::TaskFinished { task, .. } => {
                // The executor is done: whatever it sent counts, marked or not.
                let ids: Vec<String> = self
                    .pending
                    .iter()
                    .filter(|(_, (t, _))| t == task)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in ids {
                    self.release(&id);
                }
                self.batch.push(Item::Event(ev));
            }
            _ => self.batch.push(Item::Event(ev)),
        }
    }

    fn release(&mut self, execution_id: &str) {
        if let Some((_, events)) = self.pending.remove(execution_id) {
            self.batch.extend(events.into_iter().map(Item::Event));
        }
    }

    fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let mut error = None;
        for _ in 0..COMMIT_ATTEMPTS {
            match write_batch(&mut self.conn, &self.batch, &mut self.log_keys) {
                Ok(()) => {
                    error = None;
                    break;
                }
                Err(e) => {
                    // Keys read in the rolled-back transaction may not exist.
                    self.log_keys.clear();
                    error = Some(e);
                }
            }
        }
        self.stats.batches += 1;
        if let Some(e) = error {
            tracing::error!(error = %e, rows = self.batch.len(), "failed to write a batch to the run store");
            self.stats.lost_events += self.batch.len() as u64;
            self.stats.last_error = Some(e.to_string());
        }
        self.batch.clear();
    }
}

fn write_batch(
    conn: &mut Connection,
    batch: &[Item],
    log_keys: &mut apply::LogKeys,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for item in batch {
        match item {
            Item::Event(ev) => apply::apply(&tx, ev, log_keys)?,
            Item::Seq { execution_id, seq } => {
                tx.prepare_cached(
                    "UPDATE executions SET last_seq = max(last_seq, ?2) WHERE execution_id = ?1",
                )?
                .execute(params![execution_id, *seq as i64])?;
            }
        }
    }
    tx.commit()
}
