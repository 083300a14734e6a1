//! An events file open for appending: whole batches, each with one `write` and one
//! fdatasync, cut back to the last whole batch when either fails.
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use super::super::{JournalError, open_append};

/// An events file open for appending, with the next sequence number.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
    len: u64,
    pub(in crate::journal) next_seq: u64,
    /// A failed append could not be cut back: do it before the next append, so that
    /// nothing is ever appended after a torn batch.
    cut_pending: bool,
    #[cfg(test)]
    hooks: Option<std::sync::Arc<test_hooks::Hooks>>,
}

impl EventFile {
    /// Opens `path` for appending after its first `len` bytes (anything after is cut).
    pub(crate) fn open(path: PathBuf, len: u64, next_seq: u64) -> Result<Self, JournalError> {
        let file = open_append(&path, len)?;
        Ok(Self {
            path,
            file,
            len,
            next_seq,
            cut_pending: false,
            #[cfg(test)]
            hooks: None,
        })
    }

    /// Lets a test see syncs and make appends fail.
    #[cfg(test)]
    pub(crate) fn with_hooks(mut self, hooks: std::sync::Arc<test_hooks::Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in the file (all whole events).
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Appends encoded events with one write and one fdatasync; on failure the file is
    /// cut back to its previous length. Blocking.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> Result<(), JournalError> {
        let result = self.cut_back().and_then(|()| self.write_and_sync(bytes));
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                #[cfg(test)]
                if let Some(h) = &self.hooks {
                    h.synced(self.len);
                }
                Ok(())
            }
            Err(source) => {
                self.cut_pending = true;
                let _ = self.cut_back();
                Err(JournalError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if let Some(e) = self.hooks.as_ref().and_then(|h| h.injected_failure()) {
            // What a full disk does: part of the batch is written, then ENOSPC.
            let _ = self.file.write_all(&bytes[..bytes.len() / 2]);
            return Err(e);
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }

    /// Cuts off what a failed append left behind (shrinking needs no free space).
    fn cut_back(&mut self) -> std::io::Result<()> {
        if self.cut_pending {
            self.file.set_len(self.len)?;
            self.cut_pending = false;
        }
        Ok(())
    }
}

/// What tests see of and do to an `EventFile`.
#[cfg(test)]
pub(crate) mod test_hooks {
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Debug, Default)]
    pub(crate) struct Hooks {
        /// Length of the file as of its last fdatasync.
        synced_len: AtomicU64,
        /// How many of the next appends fail with ENOSPC (`u64::MAX`: all, until cleared).
        failing: AtomicU64,
        /// Appends that failed so far.
        failures: AtomicU64,
    }

    impl Hooks {
        pub(crate) fn synced_len(&self) -> u64 {
            self.synced_len.load(Ordering::SeqCst)
        }

        pub(crate) fn failures(&self) -> u64 {
            self.failures.load(Ordering::SeqCst)
        }

        pub(super) fn synced(&self, len: u64) {
            self.synced_len.store(len, Ordering::SeqCst);
        }

        /// Makes the next `n` appends fail (`u64::MAX`: every one until `fail_next(0)`).
        pub(crate) fn fail_next(&self, n: u64) {
            self.failing.store(n, Ordering::SeqCst);
        }

        pub(super) fn injected_failure(&self) -> Option<std::io::Error> {
            let take = |n: u64| match n {
                0 => None,
                u64::MAX => Some(n),
                n => Some(n - 1),
            };
            let failing = self
                .failing
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                .is_ok();
            failing.then(|| {
                self.failures.fetch_add(1, Ordering::SeqCst);
                std::io::Error::from_raw_os_error(28)
            })
        }
    }
}
