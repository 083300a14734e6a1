//! The store as a reporter: every event of the run goes to the writer thread.
use super::writer::{Writer, WriterStats};
use crate::events::RunEvent;
use crate::report::Reporter;

/// Forwards events to the store's writer. `event` only queues (it waits only while the
/// writer's bounded channel is full); `finish` commits everything and stops the writer.
pub struct StoreReporter {
    writer: Option<Writer>,
}

impl StoreReporter {
    pub fn new(writer: Writer) -> Self {
        Self {
            writer: Some(writer),
        }
    }

    /// Commits what is queued so far (for tests and callers that read right after).
    pub fn flush(&self) {
        if let Some(w) = &self.writer {
            w.flush();
        }
    }

    /// Commits everything and stops the writer; `None` when already closed.
    pub fn close(&mut self) -> Option<WriterStats> {
        self.writer.take().map(Writer::close)
    }
}

impl Reporter for StoreReporter {
    fn event(&mut self, ev: &RunEvent) {
        if let Some(w) = &self.writer {
            w.send(ev.clone());
        }
    }

    fn finish(&mut self) {
        let Some(stats) = self.close() else { return };
        if stats.lost_events > 0 || stats.last_error.is_some() {
            eprintln!(
                "warning: the run store could not save {} events: {}",
                stats.lost_events,
                stats.last_error.as_deref().unwrap_or("unknown error")
            );
        }
    }
}
