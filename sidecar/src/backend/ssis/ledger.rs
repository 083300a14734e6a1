//! The catalog start ledger: one JSON file per execution under `state_dir/ssis/ledger/`,
//! written *before* the start batch is sent (as `sqlagent::ledger`), with the caller token
//! the batch stores as `CALLER_INFO`. After a lost answer or a restart, the token finds the
//! execution the batch created (`ssis_find_by_token`), so a package is never started twice.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::sqlagent::ledger::write_durably;

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
    dir: PathBuf,
}

impl Ledger {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("ssis").join("ledger");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, execution_id: &str) -> PathBuf {
        let safe: String = execution_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.json"))
    }

    /// `Err`: an entry exists but cannot be read (whether the package started is unknown).
    pub fn get(&self, execution_id: &str) -> Result<Option<Entry>, String> {
        let path = self.path(execution_id);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn put(&self, entry: &Entry) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        write_durably(&self.dir, &self.path(&entry.execution_id), &bytes)
    }

    pub fn remove(&self, execution_id: &str) {
        let _ = std::fs::remove_file(self.path(execution_id));
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
