//! The lines of a `Log` run event, and the budget that bounds log bytes in flight.
//!
//! A sidecar sends up to 512 lines (256 KiB) per message and the coordinator passes each
//! message on as one run event, to every reporter and to the store's writer thread, which
//! holds it until its batch commits. Two things follow:
//! - every copy of an event shares one allocation of its lines (a clone is a reference
//!   count, not 512 string copies);
//! - the bytes of log lines between a Watch stream and the store are bounded by
//!   [`IN_FLIGHT_BYTES`]. Overload policy: a watcher waits for budget before passing a
//!   batch on, so a store that falls behind slows the Watch streams (HTTP/2 flow control
//!   then slows the sidecars), never the coordinator's memory. Nothing is dropped.
use std::ops::Deref;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Most bytes of log lines in flight in one coordinator process.
pub const IN_FLIGHT_BYTES: usize = 16 * 1024 * 1024;

static IN_FLIGHT: Semaphore = Semaphore::const_new(IN_FLIGHT_BYTES);

/// Waits until `budget` has room for `lines`; a batch larger than the whole budget takes
/// all of it rather than waiting forever.
async fn take(
    budget: &'static Semaphore,
    size: usize,
    lines: &[LogLine],
) -> Option<SemaphorePermit<'static>> {
    let weight: usize = lines.iter().map(LogLine::weight).sum();
    let permits = weight.clamp(1, size) as u32;
    budget.acquire_many(permits).await.ok()
}

/// One line of a `Log` event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogLine {
    pub step: u32,
    /// stdout | stderr | agent | catalog
    pub stream: &'static str,
    pub line: String,
}

impl LogLine {
    /// What the line counts against the budget: its text and its bookkeeping.
    fn weight(&self) -> usize {
        self.line.len() + std::mem::size_of::<Self>()
    }
}

/// The lines of a `Log` event: shared by every copy of the event, and holding their
/// share of the in-flight budget until the last copy is dropped.
#[derive(Debug, Clone)]
pub struct LogLines(Arc<Batch>);

#[derive(Debug)]
struct Batch {
    lines: Vec<LogLine>,
    _budget: Option<SemaphorePermit<'static>>,
}

impl LogLines {
    /// `lines`, once the budget has room for them (waits while it has not).
    pub async fn budgeted(lines: Vec<LogLine>) -> Self {
        Self::from_budget(&IN_FLIGHT, IN_FLIGHT_BYTES, lines).await
    }

    async fn from_budget(budget: &'static Semaphore, size: usize, lines: Vec<LogLine>) -> Self {
        let permit = take(budget, size, &lines).await;
        Self(Arc::new(Batch {
            lines,
            _budget: permit,
        }))
    }
}

/// Unbudgeted: for events made outside a Watch stream (tests, re-imports).
impl From<Vec<LogLine>> for LogLines {
    fn from(lines: Vec<LogLine>) -> Self {
        Self(Arc::new(Batch {
            lines,
            _budget: None,
        }))
    }
}

impl Deref for LogLines {
    type Target = [LogLine];
    fn deref(&self) -> &[LogLine] {
        &self.0.lines
    }
}

impl<'a> IntoIterator for &'a LogLines {
    type Item = &'a LogLine;
    type IntoIter = std::slice::Iter<'a, LogLine>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.lines.iter()
    }
}

impl Serialize for LogLines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.lines.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, bytes: usize) -> Vec<LogLine> {
        (0..n)
            .map(|_| LogLine {
                step: 1,
                stream: "stdout",
                line: "x".repeat(bytes),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_budget_is_held_until_the_last_copy_is_dropped_and_waits_when_spent() {
        const SIZE: usize = 100_000;
        let budget: &'static Semaphore = Box::leak(Box::new(Semaphore::new(SIZE)));
        let a = LogLines::from_budget(budget, SIZE, lines(10, 1000)).await;
        let held = SIZE - budget.available_permits();
        assert!(held >= 10_000, "{held}");
        let copy = a.clone();
        drop(a);
        assert_eq!(
            SIZE - budget.available_permits(),
            held,
            "a copy still holds it"
        );
        drop(copy);
        assert_eq!(budget.available_permits(), SIZE);

        // A batch bigger than the budget takes all of it; the next one waits until it is
        // dropped.
        let big = LogLines::from_budget(budget, SIZE, lines(1, 2 * SIZE)).await;
        assert_eq!(budget.available_permits(), 0);
        let next = tokio::spawn(LogLines::from_budget(budget, SIZE, lines(1, 100)));
        tokio::task::yield_now().await;
        assert!(!next.is_finished());
        drop(big);
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), next)
            .await
            .expect("the waiting batch goes on once the budget is free")
            .unwrap();
        assert_eq!(next.len(), 1);
    }
}
