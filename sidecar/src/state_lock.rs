//! One sidecar per `state_dir`: `serve` holds an exclusive lock on `state_dir/sidecar.lock`
//! for its whole life. Two sidecars sharing one journal would each resume, close or prune
//! the other's executions (a job closed as LOST while it runs, a SQL Server Agent job
//! started by one and "recovered" by the other), so a second one refuses to start.
//!
//! The lock is advisory (flock on Unix, LockFileEx on Windows, through
//! `std::fs::File::try_lock`) and released by the operating system however the process
//! ends, so a crash never leaves a stale lock behind. The file also holds the holder's pid
//! and host, only to make the refusal say who holds it. Supervisors of command jobs do not
//! take this lock (they outlive a sidecar restart on purpose); they hold their own
//! execution's lock (see `supervisor::lock`).
//!
//! Network file systems (NFS, SMB/CIFS) do not reliably honour such locks across
//! machines, and their fsync and rename semantics weaken the journal: a `state_dir` on one
//! is refused, with what to do instead (Linux: by `statfs`; Windows: UNC paths).
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in `state_dir`.
pub const LOCK_FILE: &str = "sidecar.lock";

#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    #[error(
        "state_dir `{}` is in use by another sidecar ({holder}); each sidecar needs a state_dir of its own: stop the other one, or give this one another `state_dir` (or --state-dir)",
        dir.display()
    )]
    InUse { dir: PathBuf, holder: String },
    #[error(
        "state_dir `{}` is on a network file system ({kind}), where file locks and fsync are not reliable enough for the execution journal; use a local disk",
        dir.display()
    )]
    NetworkFileSystem { dir: PathBuf, kind: &'static str },
    #[error("cannot lock state_dir `{}` ({}): {source}; check that it is writable", dir.display(), LOCK_FILE)]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock on a state directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
    dir: PathBuf,
}

impl StateDirLock {
    /// Creates `dir` if needed and takes its lock, or says why not.
    pub fn acquire(dir: &Path) -> Result<Self, StateLockError> {
        let io = |source| StateLockError::Io {
            dir: dir.to_owned(),
            source,
        };
        // Private to the service account (0700 on Unix): the journal holds every job's
        // output and parameters, and a stop file or record planted there would be obeyed.
        agentfleet_common::private::create_dir(dir, true).map_err(io)?;
        if let Some(kind) = network_file_system(dir) {
            return Err(StateLockError::NetworkFileSystem {
                dir: dir.to_owned(),
                kind,
            });
        }
        // std opens files close-on-exec: supervisors and steps never inherit the lock.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(StateLockError::InUse {
                    dir: dir.to_owned(),
                    holder: if holder.is_empty() {
                        "a process that is still starting".to_owned()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the refusal above; best effort (the lock is what counts).
        let me = format!("pid {}", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(me.as_bytes()));
        Ok(Self {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The kind of network file system `dir` is on, if it is on one.
#[cfg(target_os = "linux")]
fn network_file_system(dir: &Path) -> Option<&'static str> {
    use nix::sys::statfs::{NFS_SUPER_MAGIC, SMB_SUPER_MAGIC, statfs};
    // Not in nix's list: CIFS and SMB2 (see statfs(2)).
    const CIFS_MAGIC: i64 = 0xFF53_4D42;
    const SMB2_MAGIC: i64 = 0xFE53_4D42;
    let fs = statfs(dir).ok()?.filesystem_type();
    if fs == NFS_SUPER_MAGIC {
        return Some("NFS");
    }
    if fs == SMB_SUPER_MAGIC {
        return Some("SMB");
    }
    #[allow(clippy::unnecessary_cast)] // the raw type's width differs between targets
    match fs.0 as i64 {
        CIFS_MAGIC => Some("CIFS"),
        SMB2_MAGIC => Some("SMB2"),
        _ => None,
    }
}

/// A UNC path (`\\server\share\…`) is a network share.
#[cfg(windows)]
fn network_file_system(dir: &Path) -> Option<&'static str> {
    let s = dir.as_os_str().to_string_lossy();
    let unc = (s.starts_with(r"\\") && !s.starts_with(r"\\?\") && !s.starts_with(r"\\.\"))
        || s.starts_with(r"\\?\UNC\");
    unc.then_some("a UNC network share")
}

#[cfg(not(any(target_os = "linux", windows)))]
fn network_file_system(_dir: &Path) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_state_dir_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = StateDirLock::acquire(&state).unwrap();
        let err = StateDirLock::acquire(&state).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StateLockError::InUse { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("state_dir of its own"), "{text}");
        drop(first);
        StateDirLock::acquire(&state).expect("free again once the holder is gone");
    }

    #[test]
    fn a_local_directory_is_not_a_network_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_file_system(dir.path()), None);
    }
}
