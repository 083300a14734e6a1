//! The history row limiter's `TABLOCKX` on `sysjobhistory`, as a test knob.
//!
//! On a real server `sp_jobhistory_row_limiter` runs at every job completion and holds an
//! exclusive table lock while it deletes old rows; a batch reading `sysjobhistory` meanwhile
//! waits for it — up to its `SET LOCK_TIMEOUT` (then error 1222), or indefinitely without
//! one. Tests hold the lock for as long as they need and release it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

#[derive(Clone)]
pub struct HistoryLock {
    inner: Arc<Inner>,
}

struct Inner {
    locked: watch::Sender<bool>,
    /// `Some(n)`: the lock engages when n more history-reading batches have gone through.
    armed: Mutex<Option<u32>>,
    timeouts: AtomicU64,
}

impl Default for HistoryLock {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                locked: watch::Sender::new(false),
                armed: Mutex::new(None),
                timeouts: AtomicU64::new(0),
            }),
        }
    }
}

impl HistoryLock {
    /// Holds the lock from now on.
    pub fn hold(&self) {
        self.inner.locked.send_replace(true);
    }

    /// Holds the lock once `n` more batches that read `sysjobhistory` have gone through.
    pub fn hold_after(&self, n: u32) {
        if n == 0 {
            self.hold();
        } else {
            *self.armed() = Some(n);
        }
    }

    pub fn release(&self) {
        *self.armed() = None;
        self.inner.locked.send_replace(false);
    }

    /// How many batches gave up waiting (answered 1222).
    pub fn timeouts(&self) -> u64 {
        self.inner.timeouts.load(Ordering::SeqCst)
    }

    fn armed(&self) -> std::sync::MutexGuard<'_, Option<u32>> {
        self.inner.armed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the lock as a batch reading `sysjobhistory` would: up to `timeout`
    /// (`None`: indefinitely). `false`: it timed out (the caller answers 1222).
    pub async fn acquire(&self, timeout: Option<Duration>) -> bool {
        {
            let mut armed = self.armed();
            match *armed {
                Some(0) => {
                    *armed = None;
                    self.inner.locked.send_replace(true);
                }
                Some(n) => *armed = Some(n - 1),
                None => {}
            }
        }
        let mut rx = self.inner.locked.subscribe();
        let free = async move {
            let _ = rx.wait_for(|locked| !*locked).await;
        };
        let ok = match timeout {
            Some(t) => tokio::time::timeout(t, free).await.is_ok(),
            None => {
                free.await;
                true
            }
        };
        if !ok {
            self.inner.timeouts.fetch_add(1, Ordering::SeqCst);
        }
        ok
    }
}
