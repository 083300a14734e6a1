//! The store as a reporter: every event of the run goes to the writer thread.
use std::sync::{Arc, Mutex};

use super::writer::{Writer, WriterStats};
use crate::events::RunEvent;
use crate::report::Reporter;

/// Forwards events to the store's writer. `event` only queues (it waits only while the
/// writer's bounded channel is full); `finish` commits everything, stops the writer and
/// leaves what it did in the [`StoreOutcome`] for the driver to act on (what was not
/// saved must not be acknowledged).
pub struct StoreReporter {
    writer: Option<Writer>,
    outcome: StoreOutcome,
}

/// What the writer did, once the reporter has finished; shared with whoever drives the run.
#[derive(Clone, Default)]
pub struct StoreOutcome(Arc<Mutex<Option<WriterStats>>>);

impl StoreOutcome {
    /// The writer's stats, once it has been closed.
    pub fn get(&self) -> Option<WriterStats> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, stats: WriterStats) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
    }
}

impl StoreReporter {
    pub fn new(writer: Writer) -> Self {
        Self {
            writer: Some(writer),
            outcome: StoreOutcome::default(),
        }
    }

    /// Where the writer's stats appear once this reporter has finished.
    pub fn outcome(&self) -> StoreOutcome {
        self.outcome.clone()
    }

    /// Commits what is queued so far (for tests and callers that read right after).
    pub fn flush(&self) {
        if let Some(w) = &self.writer {
            w.flush();
        }
    }

    /// Commits everything and stops the writer; `None` when already closed.
    pub fn close(&mut self) -> Option<WriterStats> {
        let stats = self.writer.take().map(Writer::close)?;
        self.outcome.set(stats.clone());
        Some(stats)
    }
}

impl Reporter for StoreReporter {
    fn event(&mut self, ev: &RunEvent) {
        if let Some(w) = &self.writer {
            w.send(ev.clone());
        }
    }

    fn finish(&mut self) {
        self.close();
    }
}
