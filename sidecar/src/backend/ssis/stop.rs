//! A catalog job's stop: `catalog.stop_operation`, repeated while the catalog refuses it
//! because the execution is still pending (27124 at status 1/5) or has no process yet
//! (27125), and reported once; the execution ends as canceled when the catalog says so,
//! or after `STOP_BOUND` without that, as canceled with a message saying it may still run.
use std::time::{Duration, Instant};

use agentfleet_common::proto::{self, LogStream};

use super::follower::Ended;
use super::poll;
use super::tracker::CatalogTracker;
use crate::backend::sqlagent::connection::{Conn, SqlError};
use crate::events::EventSink;

/// A stop refused because the execution is still pending (27124) is sent again this often.
const STOP_REPEAT: Duration = Duration::from_secs(2);
/// After a stop request, how long to wait for the catalog to end the execution.
pub const STOP_BOUND: Duration = Duration::from_secs(120);

/// Where one execution's stop request stands.
#[derive(Debug, Default)]
pub struct StopState {
    first: Option<Instant>,
    sent: Option<Instant>,
    pending_noted: bool,
}

impl StopState {
    pub fn requested(&self) -> bool {
        self.first.is_some()
    }

    /// One tick of a requested stop: sends (or repeats) `stop_operation` and logs what the
    /// catalog answered. `Some`: give up waiting (the bound passed).
    pub async fn request(
        &mut self,
        t: &CatalogTracker,
        sink: &EventSink,
        conn: &mut Conn,
    ) -> Option<Ended> {
        let first = *self.first.get_or_insert_with(Instant::now);
        if first.elapsed() > STOP_BOUND {
            return Some(Ended::new(
                proto::Outcome::Canceled,
                format!(
                    "stop requested; the catalog had not ended execution {} within {}s, so the package may still be running",
                    t.ident.execution_id,
                    STOP_BOUND.as_secs()
                ),
            ));
        }
        if self.sent.is_some_and(|s| s.elapsed() < STOP_REPEAT) {
            return None;
        }
        self.sent = Some(Instant::now());
        let note = self.note(poll::stop(conn, t.ident.execution_id).await);
        if let Some(note) = note {
            sink.log(t.step_id, LogStream::Catalog, note).await;
        }
        None
    }

    fn note(&mut self, answer: Result<poll::StopResult, SqlError>) -> Option<String> {
        match answer {
            Ok(r) => match (r.error_number, r.rc) {
                (None, Some(0) | None) => Some("stop requested from the SSIS catalog (catalog.stop_operation)".to_string()),
                (Some(27124 | 27125), _) if matches!(r.status, Some(1 | 5) | None) || r.error_number == Some(27125) => {
                    // Still pending: the catalog cannot stop it yet; keep the request.
                    (!self.pending_noted).then(|| {
                        self.pending_noted = true;
                        format!("stop requested while the catalog execution is still pending (status {}); the catalog refuses to stop it until it runs, so the request is repeated until it runs or ends", r.status.unwrap_or(5))
                    })
                }
                (Some(27126), _) => {
                    self.sent = Some(Instant::now() + STOP_BOUND);
                    Some("the catalog execution is already stopping".to_string())
                }
                (Some(27124), _) => {
                    self.sent = Some(Instant::now() + STOP_BOUND);
                    Some("stop requested, but the catalog says the execution is no longer running".to_string())
                }
                (Some(27123), _) => Some("stop refused: the catalog refuses SQL Server logins (27123); the sidecar needs Windows authentication to stop packages".to_string()),
                (Some(n), _) => Some(format!("stop request failed (error {n}): {}", r.error_message.unwrap_or_default())),
                (None, rc) => Some(format!("stop request failed (catalog.stop_operation returned {rc:?})")),
            },
            Err(SqlError::Connection(e)) => {
                // Nothing reached the catalog: send again on the next tick.
                self.sent = None;
                Some(format!("stop request not delivered ({e}); retrying"))
            }
            Err(e) => Some(format!("stop request failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(n: i32, status: Option<i32>) -> Result<poll::StopResult, SqlError> {
        Ok(poll::StopResult {
            rc: None,
            error_number: Some(n),
            error_message: None,
            status,
        })
    }

    #[test]
    fn a_pending_refusal_is_kept_and_reported_once() {
        let mut s = StopState::default();
        let first = s.note(refused(27124, Some(5))).unwrap();
        assert!(first.contains("still pending"), "{first}");
        assert_eq!(s.note(refused(27124, Some(5))), None, "reported once");
        assert!(
            s.sent.is_none_or(|t| t <= Instant::now()),
            "repeated on the next tick"
        );
        // Not running any more (ended): not repeated.
        let ended = s.note(refused(27124, Some(7))).unwrap();
        assert!(ended.contains("no longer running"), "{ended}");
        assert!(s.sent.is_some_and(|t| t > Instant::now()));
        assert!(
            StopState::default()
                .note(refused(27123, None))
                .unwrap()
                .contains("Windows authentication")
        );
    }
}
