//! The central run store (PRODUCT.md): every run, task, execution, step, event and log
//! line, in one embedded SQLite file, `agentfleet.db` in the coordinator's data
//! directory (`AGENTFLEET_HOME`, default: the platform's data directory for agentfleet).
//!
//! - `schema`: opening a connection (WAL, busy timeout) and migrations.
//! - `writer`: the batched writer thread; `StoreReporter` feeds it a run's events.
//! - `batch`: one batch of the writer, committed under the run's lease, retried on failure.
//! - `apply`: how one event changes the tables.
//! - `queries`: reads for `runs`, `show`, `logs` and re-attaching.
//! - `packages`: the SSIS packages of a run's steps, read back from its events.
//! - `control`: small writes made by the commands themselves (a new run, cancel).
//! - `lease`: which coordinator process drives a run (one at a time, on any host).
//! - `losses`: what the writer could not save, so that nothing unsaved is acknowledged.
//!
//! Every process opens its own connections; several may use the file at once.
mod apply;
mod batch;
mod control;
mod excerpts;
mod history;
mod lease;
mod log_rows;
mod losses;
mod packages;
mod queries;
mod reporter;
mod schema;
mod writer;

#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod log_rows_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer_tests;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

pub use apply::{RUN_RUNNING, TASK_WAITING, task_is_final};
pub use control::{Liveness, NewRun, driver_liveness, this_host};
pub use excerpts::{ExcerptLine, LogExcerpt, RunFleet};
pub use lease::{Driver, LEASE_RENEW_EVERY, LEASE_TTL, LeaseHolder, RUN_INCOMPLETE};
pub use losses::{Losses, LostExecution};
pub use queries::{ExecutionRow, LogRow, RunRow, RunSnapshot, StepRow, TaskRow, run_is_final};
pub use reporter::{StoreOutcome, StoreReporter};
pub use schema::current_version as schema_version;
pub use writer::{
    BATCH_INTERVAL, BATCH_ROWS, CHANNEL_CAPACITY, LeaseGuard, RetryPolicy, Writer, WriterStats,
};

/// The store's file name inside the home directory.
pub const DB_FILE: &str = "agentfleet.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "failed to find a data directory for agentfleet on this system: set AGENTFLEET_HOME or pass --home"
    )]
    NoHome,
    #[error("failed to create the data directory `{path}`: {source}")]
    CreateHome {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to open the run store `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the run store `{path}` has schema version {found}, newer than this coordinator knows ({known}): use a newer coordinator"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("failed to start the store writer thread: {0}")]
    Thread(std::io::Error),
    #[error("failed to read or write the run store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("run {run_id} is now driven by another coordinator ({holder})")]
    NotDriver { run_id: String, holder: String },
    #[error("no runs yet: `coordinator run PLAN` starts one")]
    NoRuns,
    #[error("no run matches `{0}`: `coordinator runs` lists the recent ones")]
    UnknownRun(String),
    #[error("`{prefix}` matches several runs ({}): give more characters", candidates.join(", "))]
    AmbiguousRun {
        prefix: String,
        candidates: Vec<String>,
    },
}

impl StoreError {
    /// True when the user named a run that does not exist or is ambiguous (exit 2).
    pub fn is_bad_run(&self) -> bool {
        matches!(
            self,
            Self::NoRuns | Self::UnknownRun(_) | Self::AmbiguousRun { .. }
        )
    }
}

/// The home directory: `explicit` (from `--home` / `AGENTFLEET_HOME`), else the platform's
/// data directory for agentfleet (e.g. `~/.local/share/agentfleet`, `%APPDATA%\agentfleet`).
pub fn home_dir(explicit: Option<&Path>) -> Result<PathBuf, StoreError> {
    match explicit {
        Some(p) => Ok(p.to_owned()),
        None => dirs::data_dir()
            .map(|d| d.join("agentfleet"))
            .ok_or(StoreError::NoHome),
    }
}

/// A connection for reads and small writes; the bulk of a run goes through a [`Writer`].
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating it and `home` if needed) `home/agentfleet.db`.
    /// Both private to this user (0700 / 0600: runs hold every job's output).
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        let private = |source| StoreError::CreateHome {
            path: home.to_owned(),
            source,
        };
        agentfleet_common::private::create_dir(home, false).map_err(private)?;
        // Created before SQLite opens it: its -wal and -shm files take its mode.
        agentfleet_common::private::create_file(&home.join(DB_FILE)).map_err(private)?;
        Self::open_file(&home.join(DB_FILE))
    }

    /// Opens the store file at `path` itself.
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            conn: schema::open(path)?,
            path: path.to_owned(),
        })
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A writer thread with its own connection to this store's file.
    pub fn writer(&self) -> Result<Writer, StoreError> {
        Writer::spawn(&self.path)
    }

    /// A reporter that saves a run's events to this store.
    pub fn reporter(&self) -> Result<StoreReporter, StoreError> {
        Ok(StoreReporter::new(self.writer()?))
    }

    /// A reporter that saves `run_id`'s events while `driver` holds its lease (each batch
    /// checks it), retrying failed commits for a while (see `writer.rs`).
    pub fn reporter_for(&self, run_id: &str, driver: &Driver) -> Result<StoreReporter, StoreError> {
        let guard = LeaseGuard {
            run_id: run_id.to_owned(),
            driver_id: driver.id.clone(),
        };
        let writer = Writer::spawn_with(&self.path, Some(guard), RetryPolicy::default())?;
        Ok(StoreReporter::new(writer))
    }
}
