//! Admission of a new execution: the check that it may start (slots, the job's
//! `max_instances`, the same id not started already) and the reservation of its slot.
//!
//! The check and the reservation happen under the start lock; writing the journal (several
//! fsyncs) happens after it, outside the lock, so that many starts on one sidecar write
//! their journals in parallel instead of one after another. A reserved start counts as
//! running for every later check. A second StartJob for an id whose journal is being
//! written waits for that to end, then answers like any repeated StartJob.
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use tokio::sync::watch;

use super::{Entry, Registry, RegistryError};
use crate::backend::{Backend, BackendError};

/// A start whose journal is being written.
pub(super) struct Pending {
    job: String,
    /// Changes (closes) when the start is done, successfully or not.
    done: watch::Receiver<()>,
}

/// The slot of one start, held while its journal is written. Dropping it (once the
/// execution is in the registry, or on failure) frees the reservation and wakes repeated
/// StartJobs for the same id.
pub(super) struct Reservation {
    registry: Registry,
    id: String,
    _done: watch::Sender<()>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.registry.pending().remove(&self.id);
    }
}

/// What admission decided.
pub(super) enum Admitted {
    /// The id is known: answer with it (not created now).
    Existing(Arc<Entry>),
    /// A slot is reserved: write the journal, insert the execution, drop the reservation.
    Reserved(Reservation, tokio::sync::OwnedRwLockReadGuard<()>),
}

impl Registry {
    pub(super) fn pending(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        // Inserts and removes are single calls: a poisoned lock still holds a consistent map.
        self.inner.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides whether `id` may start `job` now, and reserves its slot if so. Also holds
    /// `creating` (read) until the journal is written, so that shutdown waits for it.
    pub(super) async fn admit(
        &self,
        id: &str,
        job: &str,
        backend: &Arc<dyn Backend>,
    ) -> Result<Admitted, RegistryError> {
        loop {
            let guard = self.inner.start_lock.lock().await;
            if let Some(existing) = self.entry(id) {
                return Ok(Admitted::Existing(existing));
            }
            let busy_with_it = self.pending().get(id).map(|p| p.done.clone());
            if let Some(mut done) = busy_with_it {
                drop(guard);
                // Wait for the first StartJob of this id, then look again.
                let _ = done.changed().await;
                continue;
            }
            if self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(RegistryError::ShuttingDown);
            }
            self.check_room(job, backend)?;
            let (tx, done) = watch::channel(());
            self.pending().insert(
                id.to_owned(),
                Pending {
                    job: job.to_owned(),
                    done,
                },
            );
            let reservation = Reservation {
                registry: self.clone(),
                id: id.to_owned(),
                _done: tx,
            };
            // Taken under the start lock: shutdown takes the start lock before waiting for
            // `creating`, so it sees this start either not yet admitted or in progress.
            let creating = Arc::clone(&self.inner.creating).read_owned().await;
            return Ok(Admitted::Reserved(reservation, creating));
        }
    }

    /// A free slot, and room for one more instance of `job`, counting reserved starts.
    fn check_room(&self, job: &str, backend: &Arc<dyn Backend>) -> Result<(), RegistryError> {
        let map = self.map();
        let pending = self.pending();
        let running = map.values().filter(|e| e.running());
        let (mut total, mut instances) = (0usize, 0usize);
        for e in running {
            total += 1;
            instances += usize::from(e.record.job == job);
        }
        total += pending.len();
        instances += pending.values().filter(|p| p.job == job).count();
        if instances >= backend.max_instances(job) as usize {
            return Err(BackendError::AlreadyRunning(job.to_owned()).into());
        }
        if total >= self.inner.slots as usize {
            return Err(BackendError::SlotsBusy(self.inner.slots).into());
        }
        Ok(())
    }
}
