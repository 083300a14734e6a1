//! The lease keeper: a thread beside the drive loop, with its own store connection, that
//! renews the driver's lease every `LEASE_RENEW_EVERY` and looks for `coordinator cancel`
//! every `CANCEL_POLL`. When a renewal finds the run taken over by another driver, it
//! says so loudly and ends the drive (the `lease_lost` token).
//!
//! A thread rather than a task: the store's calls block (up to `BUSY_TIMEOUT` on a busy
//! file) and must not hold up the runtime's workers.
use std::sync::mpsc::{RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::CliError;
use crate::store::{Driver, LEASE_RENEW_EVERY, Store};

/// How often the driver looks for `coordinator cancel` in the store.
pub const CANCEL_POLL: Duration = Duration::from_millis(500);

pub struct LeaseKeeper {
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Starts keeping `driver`'s lease on `run_id`; `cancel` is cancelled when someone
    /// asks to stop the run, `lease_lost` when another driver has taken it.
    pub fn start(
        store: Store,
        run_id: &str,
        driver: Driver,
        cancel: CancellationToken,
        lease_lost: CancellationToken,
    ) -> Result<Self, CliError> {
        let (stop, stopped) = sync_channel::<()>(1);
        let run_id = run_id.to_owned();
        let thread = std::thread::Builder::new()
            .name("lease-keeper".into())
            .spawn(move || {
                let mut next_renewal = Instant::now() + LEASE_RENEW_EVERY;
                loop {
                    match stopped.recv_timeout(CANCEL_POLL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    if !cancel.is_cancelled() && store.cancel_requested(&run_id).unwrap_or(false)
                    {
                        tracing::info!(run = %run_id, "cancel requested through the store");
                        cancel.cancel();
                    }
                    if Instant::now() < next_renewal {
                        continue;
                    }
                    next_renewal = Instant::now() + LEASE_RENEW_EVERY;
                    match store.renew_lease(&run_id, &driver, agentfleet_common::now_ms()) {
                        Ok(Ok(())) => {}
                        Ok(Err(holder)) => {
                            tracing::error!(
                                run = %run_id,
                                holder = %holder.describe(),
                                "LOST THE RUN'S LEASE to another coordinator: this one stops driving it and starts nothing more"
                            );
                            lease_lost.cancel();
                            return;
                        }
                        // A busy or full disk: the lease outlives several missed renewals.
                        Err(e) => {
                            tracing::warn!(run = %run_id, error = %e, "could not renew the run's lease; retrying")
                        }
                    }
                }
            })
            .map_err(|e| CliError::failed(format!("cannot start the lease keeper: {e}")))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one store call).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
