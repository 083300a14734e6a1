//! Retention: what the sidecar keeps on disk, and for how long.
//!
//! - A running execution is never removed.
//! - A finished execution is kept, across any number of restarts, until the coordinator
//!   acknowledges it (AckExecutions, once the coordinator's own store holds its events).
//! - The safety net: a finished execution nobody acknowledged is removed
//!   `MAX_FINISHED_AGE` (7 days) after it finished, checked every `PRUNE_EVERY`.
//!
//! An execution's directory goes as a whole: record, job description, journal, lock.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Entry, Registry, RegistryError};
use crate::backend::BackendError;

/// Finished executions older than this are pruned even if nobody acknowledged them.
pub const MAX_FINISHED_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the age limit is applied.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Registry {
    /// AckExecutions: deletes these executions if they have finished; returns how many.
    pub async fn ack(&self, ids: &[String]) -> Result<u32, RegistryError> {
        self.remove_where(|e| ids.contains(&e.record.execution_id))
            .await
    }

    /// Deletes finished executions that finished more than `max_age` ago.
    pub async fn prune(&self, max_age: Duration) -> Result<u32, RegistryError> {
        let cutoff = agentfleet_common::now_ms() - max_age.as_millis() as i64;
        self.remove_where(|e| {
            e.progress
                .borrow()
                .finished
                .as_ref()
                .is_some_and(|f| f.at_ms < cutoff)
        })
        .await
    }

    async fn remove_where(&self, pick: impl Fn(&Entry) -> bool) -> Result<u32, RegistryError> {
        let removed: Vec<String> = {
            let mut map = self.map();
            let ids: Vec<String> = map
                .values()
                .filter(|e| !e.running() && pick(e))
                .map(|e| e.record.execution_id.clone())
                .collect();
            ids.iter().for_each(|id| {
                map.remove(id);
            });
            ids
        };
        let journal = self.inner.journal.clone();
        let count = removed.len() as u32;
        tokio::task::spawn_blocking(move || removed.iter().try_for_each(|id| journal.remove(id)))
            .await
            .map_err(|e| BackendError::Internal(format!("prune task failed: {e}")))??;
        Ok(count)
    }

    /// Applies the age limit now and then every `PRUNE_EVERY`, until `shutdown`.
    pub fn spawn_pruner(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                // Policy on error: log and try again at the next tick.
                match this.prune(MAX_FINISHED_AGE).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(pruned = n, "pruned executions finished over 7 days ago")
                    }
                    Err(e) => tracing::warn!(error = %e, "pruning old executions failed"),
                }
            }
        })
    }
}
