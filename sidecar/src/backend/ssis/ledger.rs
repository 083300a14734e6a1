//! The catalog start ledger: one JSON file per execution under `state_dir/ssis/ledger/`,
//! written *before* the start batch is sent (as `sqlagent::ledger`), with the caller token
//! the batch stores as `CALLER_INFO`. After a lost answer or a restart, the token finds the
//! execution the batch created (`ssis_find_by_token`), so a package is never started twice.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::ledger_dir::{LedgerDir, Lookup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written before the start batch; whether it created an execution is unknown.
    Starting,
    /// The catalog execution exists and was started.
    Started,
    /// The Finished event was emitted.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub execution_id: String,
    pub job_name: String,
    /// `agentfleet:<execution_id>`, stored as the execution's `CALLER_INFO`.
    pub token: String,
    pub state: State,
    pub catalog_execution_id: Option<i64>,
    pub created_ms: i64,
    pub outcome: Option<i32>,
    pub message: Option<String>,
}

/// The caller token of an execution.
pub fn token(execution_id: &str) -> String {
    // CALLER_INFO is nvarchar(128) in the batch.
    let t = format!("agentfleet:{execution_id}");
    t.chars().take(128).collect()
}

#[derive(Debug, Clone)]
pub struct Ledger {
    files: LedgerDir<Entry>,
}

impl Ledger {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            files: LedgerDir::open(state_dir, "ssis")?,
        })
    }

    /// `Err`: an entry exists but cannot be read (whether the package started is unknown).
    pub fn get(&self, execution_id: &str) -> Result<Option<Entry>, String> {
        match self.files.lookup(execution_id) {
            Lookup::Absent => Ok(None),
            Lookup::Found(entry) => Ok(Some(entry)),
            Lookup::Unreadable(why) => Err(why),
        }
    }

    /// Writes durably (a crash leaves the old or the new entry).
    pub fn put(&self, entry: &Entry) -> std::io::Result<()> {
        self.files.put(&entry.execution_id, entry)
    }

    pub fn remove(&self, execution_id: &str) {
        self.files.remove(execution_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_a_torn_one_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        assert_eq!(l.get("e1"), Ok(None));
        let e = Entry {
            execution_id: "e1".into(),
            job_name: "J".into(),
            token: token("e1"),
            state: State::Starting,
            catalog_execution_id: None,
            created_ms: 1,
            outcome: None,
            message: None,
        };
        l.put(&e).unwrap();
        assert_eq!(l.get("e1"), Ok(Some(e)));
        std::fs::write(dir.path().join("ssis/ledger/e2.json"), "{").unwrap();
        assert!(l.get("e2").is_err());
        assert_eq!(token("x"), "agentfleet:x");
    }
}
