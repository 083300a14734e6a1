//! The durable per-execution journal under `state_dir/executions/<execution_id>/`:
//!
//! - `execution.json`: the record (who asked for what), written and fsynced before the
//!   backend is asked to start, so a crash never leaves a started job nobody knows about;
//! - `events.pb`: the execution's events, append-only, each a length-delimited prost
//!   `Event` with its sequence number (1, 2, 3, … without gaps).
//!
//! One writer per execution appends (see `writer`): a task in the sidecar for in-process
//! backends, or the execution's supervisor process for command jobs (see `supervisor`).
//! Watchers read the file (see `reader`), woken through a `watch` channel carrying
//! `Progress`. Nothing holds all of an execution's events in memory.
//!
//! Loading never changes a journal: a supervisor may still be appending to it. Closing an
//! execution as LOST (`close_lost`) or continuing it (`reopen`) are separate steps that
//! the caller takes once it knows nobody else writes (see `executions::recovery`). A
//! journal that cannot be read at all is moved to `state_dir/quarantine/` and replaced by
//! a LOST one (see `quarantine.rs`); nothing is ever deleted because it does not parse.
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use agentfleet_common::proto::{self, Event, event::Kind};
use prost::Message;
use serde::{Deserialize, Serialize};

pub use load::Loaded;

mod load;
mod quarantine;
pub mod reader;
pub mod writer;

const RECORD_FILE: &str = "execution.json";
const EVENTS_FILE: &str = "events.pb";

/// What was asked for: written once, before the backend starts anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub execution_id: String,
    pub job: String,
    pub backend: String,
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub task: String,
    #[serde(default)]
    pub attempt: u32,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    pub accepted_at_ms: i64,
    /// Run by a supervisor process of its own (command jobs), which writes the journal;
    /// false for in-process backends and for records written before supervisors existed.
    #[serde(default)]
    pub supervised: bool,
    /// Who asked for it (the caller StartJob was authorized as: a coordinator's name, or
    /// `local uid N`); empty in records written before it was kept.
    #[serde(default)]
    pub started_by: String,
}

/// How far an execution's journal has got; published on a `watch` after each append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Sequence number of the last event on disk.
    pub last_seq: u64,
    /// A Started event is on disk.
    pub started: bool,
    /// The Finished event, once on disk, or once published as `unwritten_finished`.
    pub finished: Option<Finish>,
    /// The Finished event, published before it could be written because the journal
    /// cannot be written (a full disk; see `writer`'s error policy). Its seq is
    /// `last_seq + 1`, and whoever published it keeps trying to write this very event,
    /// so watchers get the same event now from memory as later from disk.
    pub unwritten_finished: Option<Event>,
    /// SQL Server Agent: the largest msdb history `instance_id` an event on disk comes
    /// from (0: none). Where a resumed execution continues reading history, and what the
    /// writer never journals again (see `writer`).
    pub last_history_id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    pub outcome: proto::Outcome,
    pub message: String,
    pub at_ms: i64,
}

impl Progress {
    /// Folds one appended event into the progress.
    pub fn observe(&mut self, event: &Event) {
        self.last_seq = event.seq;
        if self
            .unwritten_finished
            .as_ref()
            .is_some_and(|f| f.seq <= event.seq)
        {
            self.unwritten_finished = None;
        }
        match &event.kind {
            Some(Kind::Started(_)) => self.started = true,
            Some(Kind::StepFinished(s)) => {
                self.last_history_id = self.last_history_id.max(s.sql_instance_id)
            }
            Some(Kind::Logs(l)) => {
                for line in &l.lines {
                    self.last_history_id = self.last_history_id.max(line.sql_instance_id);
                }
            }
            Some(Kind::Finished(f)) => {
                self.finished = Some(Finish {
                    outcome: proto::Outcome::try_from(f.outcome)
                        .unwrap_or(proto::Outcome::Unspecified),
                    message: f.message.clone(),
                    at_ms: event.ts_ms,
                })
            }
            _ => {}
        }
    }

    /// Publishes a Finished event that is not on disk yet (its seq must be
    /// `last_seq + 1`): the execution is over for everyone, and `last_seq` still says
    /// what is on disk.
    pub fn observe_unwritten(&mut self, finished: &Event) {
        debug_assert_eq!(finished.seq, self.last_seq + 1);
        let on_disk = self.last_seq;
        self.observe(finished);
        self.last_seq = on_disk;
        self.unwritten_finished = Some(finished.clone());
    }

    /// The last seq a watcher gets: on disk, or of the unwritten Finished event.
    pub fn visible_last_seq(&self) -> u64 {
        self.unwritten_finished
            .as_ref()
            .map_or(self.last_seq, |f| f.seq)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("failed to {action} `{}`: {source}; check that the state_dir is writable and the disk has space", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the execution directory `{}` already exists: an execution id is used once (on a case-insensitive file system, ids that differ only in case share one directory); mint a new execution id",
        .0.display()
    )]
    AlreadyExists(PathBuf),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> JournalError {
    let path = path.to_owned();
    move |source| JournalError::Io {
        action,
        path,
        source,
    }
}

/// The journal of all executions under one state directory.
#[derive(Debug, Clone)]
pub struct Journal {
    root: PathBuf,
    /// Tests: attached to every events file `reopen` opens (see `writer::test_hooks`).
    #[cfg(test)]
    hooks: Option<std::sync::Arc<writer::test_hooks::Hooks>>,
}

impl Journal {
    /// Opens (creating it if needed) `state_dir/executions`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        Self::at(state_dir.join("executions"))
    }

    /// The journal whose executions are the directories in `root` (`state_dir/executions`).
    pub fn at(root: PathBuf) -> Result<Self, JournalError> {
        fs::create_dir_all(&root).map_err(io("create the journal directory", &root))?;
        Ok(Self {
            root,
            #[cfg(test)]
            hooks: None,
        })
    }

    /// Tests: lets them see and fail the appends of every file `reopen` opens.
    #[cfg(test)]
    pub(crate) fn with_hooks(mut self, hooks: std::sync::Arc<writer::test_hooks::Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    pub fn dir(&self, execution_id: &str) -> PathBuf {
        self.root.join(execution_id)
    }

    pub fn events_path(&self, execution_id: &str) -> PathBuf {
        self.dir(execution_id).join(EVENTS_FILE)
    }

    /// Durably records a new execution and its Accepted event (seq 1); returns the file
    /// the writer appends to. Never reuses a directory: one that exists already (another
    /// execution's, or the same name in another case on a case-insensitive file system)
    /// is `AlreadyExists`, so two executions can never share a journal. Blocking: call
    /// from `spawn_blocking`.
    pub fn create(
        &self,
        record: &ExecutionRecord,
    ) -> Result<(writer::EventFile, Progress), JournalError> {
        let dir = self.dir(&record.execution_id);
        match fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(JournalError::AlreadyExists(dir));
            }
            other => other.map_err(io("create", &dir))?,
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| JournalError::Io {
            action: "encode the record for",
            path: dir.clone(),
            source: e.into(),
        })?;
        write_durably(&dir.join(RECORD_FILE), &json)?;

        // The file starts with Accepted (seq 1); the writer continues at seq 2.
        let mut file = writer::EventFile::open(self.events_path(&record.execution_id), 0, 2)?;
        let accepted = accepted_event(record, 1);
        file.append(&encode(std::slice::from_ref(&accepted)))?;
        sync_dir(&dir)?;
        sync_dir(&self.root)?;
        let mut progress = Progress::default();
        progress.observe(&accepted);
        Ok((file, progress))
    }

    /// The record of one execution (what its supervisor reads).
    pub fn record(&self, id: &str) -> Result<ExecutionRecord, JournalError> {
        let path = self.dir(id).join(RECORD_FILE);
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| JournalError::Io {
            action: "decode",
            path,
            source: e.into(),
        })
    }

    /// Opens an existing execution's events for appending, continuing its sequence
    /// numbers; a torn last record is cut off, and a missing Accepted event is written.
    /// Only for the one writer: the caller holds the execution's lock or is the only
    /// process that ever writes it. Blocking.
    pub fn reopen(&self, id: &str) -> Result<(writer::EventFile, Progress), JournalError> {
        let record = self.record(id)?;
        let events = self.events_path(id);
        let scan = reader::scan(&events)?;
        if scan.good_len < scan.file_len {
            tracing::warn!(execution_id = %id, cut_bytes = scan.file_len - scan.good_len, "cutting a torn record off the end of the journal");
        }
        let mut progress = scan.progress;
        let mut file = writer::EventFile::open(events, scan.good_len, progress.last_seq + 1)?;
        #[cfg(test)]
        if let Some(hooks) = &self.hooks {
            file = file.with_hooks(hooks.clone());
        }
        if progress.last_seq == 0 {
            let accepted = accepted_event(&record, 1);
            file.append(&encode(std::slice::from_ref(&accepted)))?;
            file.next_seq = 2;
            progress.observe(&accepted);
        }
        Ok((file, progress))
    }

    /// Ends an unfinished execution with Finished{LOST, `message`} (a finished one is left
    /// as it is); returns its progress. Same rule as `reopen`: only the one writer. Blocking.
    pub fn close_lost(&self, id: &str, message: &str) -> Result<Progress, JournalError> {
        self.close(id, proto::Outcome::Lost, message)
    }

    /// Ends an unfinished execution with Finished{`outcome`, `message`}; see `close_lost`.
    pub fn close(
        &self,
        id: &str,
        outcome: proto::Outcome,
        message: &str,
    ) -> Result<Progress, JournalError> {
        let (mut file, mut progress) = self.reopen(id)?;
        if progress.finished.is_none() {
            let event = finished_event(id, file.next_seq(), outcome, message);
            file.append(&encode(std::slice::from_ref(&event)))?;
            progress.observe(&event);
        }
        Ok(progress)
    }

    /// Deletes an execution's directory.
    pub fn remove(&self, execution_id: &str) -> Result<(), JournalError> {
        let dir = self.dir(execution_id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove", &dir)(e)),
            _ => Ok(()),
        }
    }
}

pub(crate) fn accepted_event(record: &ExecutionRecord, seq: u64) -> Event {
    Event {
        execution_id: record.execution_id.clone(),
        seq,
        ts_ms: record.accepted_at_ms,
        kind: Some(Kind::Accepted(proto::Accepted {
            job: record.job.clone(),
            backend: record.backend.clone(),
        })),
    }
}

pub(crate) fn finished_event(id: &str, seq: u64, outcome: proto::Outcome, message: &str) -> Event {
    Event {
        execution_id: id.to_owned(),
        seq,
        ts_ms: agentfleet_common::now_ms(),
        kind: Some(Kind::Finished(proto::Finished {
            outcome: outcome as i32,
            message: message.to_owned(),
        })),
    }
}

/// Length-delimited encoding of a batch, appended in one write.
pub(crate) fn encode(events: &[Event]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(events.iter().map(|e| e.encoded_len() + 5).sum());
    for e in events {
        // Encoding into a Vec only fails when it lacks capacity, which a Vec never does.
        let _ = e.encode_length_delimited(&mut buf);
    }
    buf
}

/// Writes `path` whole or not at all (tmp file, fsync, rename; the directory is synced by
/// the caller when the file is new). Blocking.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = File::create(&tmp)
        .map_err(io("create", &tmp))
        .and_then(|mut f| {
            f.write_all(bytes).map_err(io("write", &tmp))?;
            f.sync_all().map_err(io("sync", &tmp))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(io("rename into", path)));
    if written.is_err() {
        // Don't leave a half-written tmp file taking space on a disk that is full.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Makes a rename or new file in `dir` durable (a no-op where directories can't be opened).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Opens an events file for appending at `len` (cutting anything after it).
pub(crate) fn open_append(path: &Path, len: u64) -> Result<File, JournalError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("open", path))?;
    let actual = file.metadata().map_err(io("stat", path))?.len();
    if actual != len {
        file.set_len(len).map_err(io("truncate", path))?;
        file.sync_all().map_err(io("sync", path))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests;
