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
//!
//! A batch that fails to commit (disk full, I/O error, a lock held too long) is retried
//! with backoff for [`RetryPolicy::retry_for`]: a full disk may be freed meanwhile. The
//! writer reads nothing new while it retries, so memory stays bounded (backpressure, as
//! above). Past that, the batch's events are counted as lost per execution (`losses.rs`:
//! those executions get nothing more written, so `last_seq` stays true) and later batches
//! get a single attempt each until one commits, so the run still ends. The driver then
//! acknowledges nothing to the sidecars, which keep their journals for `attach` to
//! re-import.
//!
//! With a [`LeaseGuard`], each batch first checks in its transaction that the run is still
//! this driver's (`lease.rs`); once another driver has taken the run over, nothing more is
//! written (the new driver re-reads those events from the sidecars itself).
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::batch::{Committed, Item, write_batch};
pub use super::batch::{LeaseGuard, RetryPolicy};
use super::losses::Losses;
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
/// sidecar event right after passing it on, so an execution has one or two waiting; the
/// bytes of log events waiting are bounded by `events::IN_FLIGHT_BYTES` as well.)
pub const MAX_PENDING_PER_EXECUTION: usize = 10_000;

enum Msg {
    Event(RunEvent),
    Flush(SyncSender<()>),
}

/// What the writer did; returned by [`Writer::close`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriterStats {
    pub events: u64,
    pub batches: u64,
    /// Events that could not be committed (the sum of `losses`).
    pub lost_events: u64,
    /// Which events those were, per execution.
    pub losses: Losses,
    /// Events not written because another driver took the run over (not lost: they are
    /// in the sidecars' journals, past what the store holds, and the new driver reads them).
    pub superseded_events: u64,
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
        Self::spawn_with(path, None, RetryPolicy::default())
    }

    /// [`spawn`](Self::spawn), writing only under `guard` (when given) and retrying failed
    /// batches as `retry` says.
    pub fn spawn_with(
        path: &Path,
        guard: Option<LeaseGuard>,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        Self::spawn_on(schema::open(path)?, guard, retry)
    }

    fn spawn_on(
        conn: Connection,
        guard: Option<LeaseGuard>,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || Worker::new(conn, guard, retry).run(rx))
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

/// (execution id, task) of an event the executor reports from the sidecar's journal:
/// held until its sequence mark arrives.
fn journal_execution(kind: &RunEventKind) -> Option<(String, String)> {
    let at = match kind {
        RunEventKind::TaskStarted { at, .. }
        | RunEventKind::StepStarted { at, .. }
        | RunEventKind::StepFinished { at, .. }
        | RunEventKind::Log { at, .. } => at,
        other => other.catalog_at()?,
    };
    Some((at.execution_id.clone(), at.task.clone()))
}

#[cfg(test)]
impl Writer {
    /// A writer whose file cannot grow past `max_pages` pages, as on a full disk.
    pub(super) fn spawn_capped(
        path: &Path,
        max_pages: u64,
        retry: RetryPolicy,
    ) -> Result<Self, StoreError> {
        let conn = schema::open(path)?;
        conn.pragma_update(None, "max_page_count", max_pages)?;
        Self::spawn_on(conn, None, retry)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Worker {
    conn: Connection,
    guard: Option<LeaseGuard>,
    retry: RetryPolicy,
    /// Per execution id: its task and its events not yet covered by a sequence mark.
    pending: HashMap<String, (String, Vec<RunEvent>)>,
    batch: Vec<Item>,
    /// Log lines' integer keys per execution, resolved once.
    log_keys: apply::LogKeys,
    /// The last batch was lost: the next ones get one attempt each until one commits.
    failing: bool,
    /// Another driver took the run over: nothing more is written.
    superseded: bool,
    stats: WriterStats,
}

impl Worker {
    fn new(conn: Connection, guard: Option<LeaseGuard>, retry: RetryPolicy) -> Self {
        Self {
            conn,
            guard,
            retry,
            pending: HashMap::new(),
            batch: Vec::with_capacity(BATCH_ROWS),
            log_keys: apply::LogKeys::default(),
            failing: false,
            superseded: false,
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
        self.stats.lost_events = self.stats.losses.total();
        self.stats
    }

    /// Sorts an event into the batch, or holds it until its sequence mark arrives.
    fn take(&mut self, ev: RunEvent) {
        self.stats.events += 1;
        if let Some((execution_id, task)) = journal_execution(&ev.kind) {
            let entry = self
                .pending
                .entry(execution_id.clone())
                .or_insert_with(|| (task, Vec::new()));
            entry.1.push(ev);
            if entry.1.len() >= MAX_PENDING_PER_EXECUTION {
                tracing::debug!(execution = %execution_id, "no sequence mark after many events; writing them unmarked");
                self.release(&execution_id);
            }
            return;
        }
        match &ev.kind {
            RunEventKind::ExecutionSeq { at, seq } => {
                let (at, seq) = (at.clone(), *seq);
                self.release(&at.execution_id);
                self.batch.push(Item::Seq { at, seq });
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
        let mut batch = std::mem::take(&mut self.batch);
        self.drop_unwritable(&mut batch);
        if !batch.is_empty() {
            self.commit_with_retries(&batch);
            self.stats.batches += 1;
        }
        batch.clear();
        self.batch = batch; // keeps its capacity
    }

    /// Takes out what must not be written: everything once superseded, the events of
    /// executions that already lost some (counted as lost too: the store stops at their
    /// gap), and the run's end when anything was lost (the run is not complete).
    fn drop_unwritable(&mut self, batch: &mut Vec<Item>) {
        if self.superseded {
            self.stats.superseded_events += batch.len() as u64;
            batch.clear();
            return;
        }
        if self.stats.losses.is_empty() {
            return;
        }
        let losses = &mut self.stats.losses;
        batch.retain(|item| match item.execution() {
            Some(execution) if losses.is_tainted(execution.0) => {
                losses.lose(Some(execution));
                false
            }
            _ => !matches!(item, Item::Event(ev) if matches!(ev.kind, RunEventKind::RunFinished { .. })),
        });
    }

    /// Commits `batch`, retrying with backoff (see the module docs); counts it as lost
    /// when it cannot be.
    fn commit_with_retries(&mut self, batch: &[Item]) {
        let give_up_at = Instant::now()
            + if self.failing {
                Duration::ZERO
            } else {
                self.retry.retry_for
            };
        let mut delay = self.retry.first_delay;
        loop {
            match write_batch(
                &mut self.conn,
                batch,
                &mut self.log_keys,
                self.guard.as_ref(),
            ) {
                Ok(Committed::Written) => {
                    if self.failing {
                        tracing::warn!("the run store accepts writes again");
                    }
                    self.failing = false;
                    return;
                }
                Ok(Committed::Superseded) => {
                    tracing::error!(
                        "another coordinator has taken this run over: no more of its events are stored by this one"
                    );
                    self.superseded = true;
                    self.stats.superseded_events += batch.len() as u64;
                    return;
                }
                Err(e) => {
                    // Keys read in the rolled-back transaction may not exist.
                    self.log_keys.clear();
                    if Instant::now() + delay > give_up_at {
                        tracing::error!(error = %e, rows = batch.len(), "failed to write a batch to the run store; its events are not saved");
                        for item in batch {
                            self.stats.losses.lose(item.execution());
                        }
                        self.stats.last_error = Some(e.to_string());
                        self.failing = true;
                        return;
                    }
                    tracing::warn!(error = %e, retry_in = ?delay, "failed to write a batch to the run store; retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.retry.max_delay);
                }
            }
        }
    }
}
