//! A start ledger's files: one small JSON entry per execution under
//! `state_dir/<backend>/ledger/`, written durably *before* the backend's start call (SQL
//! Server Agent's `sp_start_job`, the SSIS catalog's start batch), so that a lost answer or
//! a sidecar restart never leads to a second start. Each backend keeps its own entry type
//! and rules; this is only how entries are stored.
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What the ledger knows of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<E> {
    /// No entry: the start call was never made for it (the entry is written first).
    Absent,
    /// An entry that cannot be read or decoded (the reason): whether it started is unknown.
    Unreadable(String),
    Found(E),
}

#[derive(Debug, Clone)]
pub struct LedgerDir<E> {
    dir: PathBuf,
    entry: PhantomData<fn() -> E>,
}

impl<E: Serialize + DeserializeOwned> LedgerDir<E> {
    /// `state_dir/<backend>/ledger`, created if needed.
    pub fn open(state_dir: &Path, backend: &str) -> std::io::Result<Self> {
        let dir = state_dir.join(backend).join("ledger");
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            entry: PhantomData,
        })
    }

    pub(crate) fn path(&self, execution_id: &str) -> PathBuf {
        // Execution ids are validated by the registry (safe alphabet); be strict anyway.
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

    /// The entry of `execution_id`, telling a missing entry from one that cannot be read.
    pub fn lookup(&self, execution_id: &str) -> Lookup<E> {
        let path = self.path(execution_id);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Absent,
            Err(e) => return Lookup::Unreadable(format!("{}: {e}", path.display())),
        };
        match serde_json::from_str(&text) {
            Ok(entry) => Lookup::Found(entry),
            Err(e) => Lookup::Unreadable(format!("{}: {e}", path.display())),
        }
    }

    /// Writes durably: temp file, fsync, rename, fsync of the directory (a crash leaves
    /// the old or the new entry).
    pub fn put(&self, execution_id: &str, entry: &E) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?;
        let path = self.path(execution_id);
        let tmp = path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn remove(&self, execution_id: &str) {
        let _ = std::fs::remove_file(self.path(execution_id));
    }

    /// Every readable entry, with its file (to resume or prune).
    pub fn entries(&self) -> Vec<(PathBuf, E)> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| {
                let entry = serde_json::from_str(&std::fs::read_to_string(&p).ok()?).ok()?;
                Some((p, entry))
            })
            .collect()
    }
}
