//! Loading every execution on disk at start-up (read-only but for journals that cannot
//! be read, which are quarantined: see `quarantine.rs`).
use std::fs;

use super::{ExecutionRecord, Journal, JournalError, Progress, RECORD_FILE, io, reader};

/// What `load_one` found in an execution directory.
pub(super) enum Found {
    Loaded(Box<Loaded>),
    /// No record: left by a crash inside `create`.
    NoRecord,
    /// A record or events that cannot be read or parsed (why).
    Unreadable(String),
}

/// An execution found on disk at start-up.
#[derive(Debug)]
pub struct Loaded {
    pub record: ExecutionRecord,
    pub progress: Progress,
    /// Bytes of whole events on disk (where a follower of the file goes on reading).
    pub len: u64,
}

impl Journal {
    /// Loads every execution on disk, read-only: an unfinished one may still be written by
    /// its supervisor, so nothing is cut or appended here (see `close_lost`, `reopen`).
    /// The one exception is a journal that cannot be read (its record does not parse or
    /// cannot be read, its events cannot be read): it is moved aside, never deleted, and
    /// listed as LOST (see `quarantine`). Blocking: call at start-up or from
    /// `spawn_blocking`.
    pub fn load_all(&self) -> Result<Vec<Loaded>, JournalError> {
        let mut loaded = Vec::new();
        let entries = fs::read_dir(&self.root).map_err(io("list", &self.root))?;
        for entry in entries {
            let dir = entry.map_err(io("list", &self.root))?.path();
            let Some(id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !dir.is_dir() || !agentfleet_common::ids::is_valid_execution_id(&id) {
                continue;
            }
            match self.load_one(&id) {
                Found::Loaded(l) => loaded.push(*l),
                Found::NoRecord => {
                    // No record: the sidecar stopped inside `create`, before StartJob
                    // answered, so nobody knows this execution. Remove the leftovers.
                    tracing::warn!(execution_id = %id, "removing an execution directory without a record");
                    let _ = fs::remove_dir_all(&dir);
                }
                Found::Unreadable(why) => {
                    if let Some(l) = self.quarantine(&id, &why) {
                        loaded.push(l);
                    }
                }
            }
        }
        loaded.sort_by_key(|l| l.record.accepted_at_ms);
        Ok(loaded)
    }

    pub(super) fn load_one(&self, id: &str) -> Found {
        let path = self.dir(id).join(RECORD_FILE);
        let record: ExecutionRecord = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return Found::Unreadable(format!("`{}` does not parse: {e}", path.display()));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::NoRecord,
            Err(e) => return Found::Unreadable(format!("cannot read `{}`: {e}", path.display())),
        };
        match reader::scan(&self.events_path(id)) {
            Ok(scan) => Found::Loaded(Box::new(Loaded {
                record,
                progress: scan.progress,
                len: scan.good_len,
            })),
            Err(e) => Found::Unreadable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
