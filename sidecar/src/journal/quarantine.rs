//! Journals that cannot be read (a record from another version of the sidecar, a corrupt
//! or unreadable file) are moved aside, never deleted: to
//! `state_dir/quarantine/<id>-<unix ms>`, with a warning naming the path. In their place
//! a fresh journal says Finished{LOST, "journal unreadable, moved to …"}, so that
//! ListExecutions, Watch and a repeated StartJob with that id (when its job name could be
//! salvaged from the record) see the execution ended, and it is acknowledged and pruned
//! like any other. A supervisor still running the execution keeps its files open and goes
//! on writing them in the quarantine; the operator decides what to do with it.
use std::fs;
use std::path::PathBuf;

use agentfleet_common::proto;

use super::{ExecutionRecord, Journal, Loaded, Progress, RECORD_FILE, finished_event};

/// The directory next to `executions` that unreadable journals are moved to.
const QUARANTINE_DIR: &str = "quarantine";

impl Journal {
    /// `state_dir/quarantine`.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root
            .parent()
            .unwrap_or(&self.root)
            .join(QUARANTINE_DIR)
    }

    /// Moves execution `id`'s directory to the quarantine and puts a LOST journal in its
    /// place; returns that. `None` when even the move failed: the directory is then left
    /// untouched (and not loaded), with an error in the log. Blocking.
    pub(super) fn quarantine(&self, id: &str, why: &str) -> Option<Loaded> {
        let dir = self.dir(id);
        let salvaged = salvage(&dir.join(RECORD_FILE), id);
        let quarantine = self.quarantine_dir();
        let dest = quarantine.join(format!("{id}-{}", agentfleet_common::now_ms()));
        let moved = fs::create_dir_all(&quarantine).and_then(|()| fs::rename(&dir, &dest));
        if let Err(e) = moved {
            tracing::error!(execution_id = %id, path = %dir.display(), %why, error = %e, "the journal of this execution cannot be read, nor moved to the quarantine; leaving it where it is and not loading it: move it away or repair it by hand, then restart the sidecar");
            return None;
        }
        let _ = super::sync_dir(&self.root);
        tracing::warn!(
            execution_id = %id,
            %why,
            moved_to = %dest.display(),
            "the journal of this execution cannot be read: moved it to the quarantine and listing the execution as LOST; look at the files there (another sidecar version? a damaged disk?) and delete them once done"
        );
        let message = format!(
            "journal unreadable, moved to {} ({why}); its result is unknown",
            dest.display()
        );
        Some(self.lost_in_place_of(salvaged, &message))
    }

    /// A fresh journal for `record`: Accepted, then Finished{LOST, `message`}. Should the
    /// disk not take it, the same ending is returned from memory (see
    /// `Progress::unwritten_finished`) and the next start tries again.
    fn lost_in_place_of(&self, record: ExecutionRecord, message: &str) -> Loaded {
        let id = record.execution_id.clone();
        let written = self.create(&record).and_then(|(file, _)| {
            drop(file);
            self.close_lost(&id, message)
        });
        let progress = written.unwrap_or_else(|e| {
            tracing::warn!(execution_id = %id, error = %e, "could not write the LOST journal in place of the quarantined one; listing it from memory");
            let _ = fs::remove_dir_all(self.dir(&id));
            let mut p = Progress::default();
            p.observe_unwritten(&finished_event(&id, 1, proto::Outcome::Lost, message));
            p
        });
        let len = fs::metadata(self.events_path(&id)).map_or(0, |m| m.len());
        Loaded {
            record,
            progress,
            len,
        }
    }
}

/// What can still be read of an unparseable record (a newer version's record is usually
/// valid JSON), so that a repeated StartJob for the same job finds the LOST execution.
fn salvage(path: &std::path::Path, id: &str) -> ExecutionRecord {
    let value: serde_json::Value = fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let text = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    ExecutionRecord {
        execution_id: id.to_owned(),
        job: text("job"),
        backend: text("backend"),
        run_id: text("run_id"),
        task: text("task"),
        attempt: value["attempt"].as_u64().unwrap_or(0) as u32,
        params: Default::default(),
        accepted_at_ms: value["accepted_at_ms"]
            .as_i64()
            .unwrap_or_else(agentfleet_common::now_ms),
        supervised: false,
        started_by: String::new(),
    }
}

#[cfg(test)]
mod tests;
