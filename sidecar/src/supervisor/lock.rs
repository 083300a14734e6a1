//! The execution lock: an exclusive, advisory lock on `DIR/lock` (flock on Unix,
//! LockFileEx on Windows, through `std::fs::File::try_lock`). The supervisor holds it for
//! its whole life; anyone else tries it without blocking to learn whether a supervisor is
//! alive, and keeps it while closing the journal. The operating system releases it when
//! the holder exits, however it exits.
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::Path;

/// The lock file's name in the execution directory.
pub const LOCK_FILE: &str = "lock";

/// A held execution lock; released when dropped.
#[derive(Debug)]
pub struct ExecutionLock {
    _file: File,
}

impl ExecutionLock {
    /// Takes the lock if nobody holds it: `Ok(None)` means a supervisor is alive. Locks
    /// held through different opens conflict even within one process, so the sidecar's
    /// own tries never pass each other either.
    pub fn try_acquire(execution_dir: &Path) -> io::Result<Option<Self>> {
        // std opens files close-on-exec: a step's program never inherits the lock.
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(execution_dir.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = ExecutionLock::try_acquire(dir.path()).unwrap().unwrap();
        assert!(ExecutionLock::try_acquire(dir.path()).unwrap().is_none());
        drop(held);
        assert!(ExecutionLock::try_acquire(dir.path()).unwrap().is_some());
    }
}
