//! The start ledger: one small JSON file per execution under `state_dir/sqlagent/ledger/`,
//! written *before* `sp_start_job` is called, so that a lost reply or a sidecar restart
//! never leads to a second `sp_start_job` for the same execution: the backend reconciles
//! (looks for the run in activity and history) first.
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::ledger_dir::{LedgerDir, Lookup as LedgerLookup};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Written before `sp_start_job`; the outcome of the call is not known yet.
    Starting,
    /// The Agent accepted the start (or reconciliation found the run).
    Started,
    /// The Finished event was emitted.
    Finished,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub execution_id: String,
    pub job_id: String,
    pub job_name: String,
    pub state: State,
    /// Agent session (`syssessions`) when the start was requested.
    pub agent_session_id: Option<i32>,
    /// The job's `MAX(sysjobhistory.instance_id)` before the start.
    pub history_watermark: i32,
    /// Last history row consumed (events emitted up to it).
    pub cursor: i32,
    /// `GETDATE()` truncated to seconds before the start, "%Y-%m-%d %H:%M:%S" server-local.
    pub requested_not_before: Option<String>,
    /// When the engine started (tempdb create date), same format.
    pub server_started: Option<String>,
    /// The login the sidecar starts jobs as ("invoked by User <login>").
    pub login: Option<String>,
    /// Unix ms when the entry was first written.
    pub created_ms: i64,
    /// Finished: the outcome (proto `Outcome` value) and message.
    pub outcome: Option<i32>,
    pub message: Option<String>,
}

/// What the ledger knows of one execution.
pub type Lookup = LedgerLookup<Entry>;

#[derive(Debug, Clone)]
pub struct Ledger {
    files: LedgerDir<Entry>,
}

impl Ledger {
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        Ok(Self {
            files: LedgerDir::open(state_dir, "sqlagent")?,
        })
    }

    #[cfg(test)]
    fn path(&self, execution_id: &str) -> std::path::PathBuf {
        self.files.path(execution_id)
    }

    pub fn get(&self, execution_id: &str) -> Option<Entry> {
        match self.lookup(execution_id) {
            Lookup::Found(entry) => Some(entry),
            Lookup::Absent | Lookup::Unreadable(_) => None,
        }
    }

    /// The entry of `execution_id`, telling a missing entry (`sp_start_job` was never
    /// called for it) from one that cannot be read (whether it was called is unknown).
    pub fn lookup(&self, execution_id: &str) -> Lookup {
        self.files.lookup(execution_id)
    }

    /// Writes durably (a crash leaves the old or the new entry).
    pub fn put(&self, entry: &Entry) -> std::io::Result<()> {
        self.files.put(&entry.execution_id, entry)
    }

    pub fn remove(&self, execution_id: &str) {
        self.files.remove(execution_id);
    }

    /// Entries not finished yet (to resume after a restart).
    pub fn unfinished(&self) -> Vec<Entry> {
        self.files
            .entries()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.state != State::Finished)
            .collect()
    }

    /// Drops finished entries older than `age` (they only answer repeated StartJob calls).
    pub fn prune(&self, age: Duration, now_ms: i64) {
        for (path, entry) in self.files.entries() {
            if entry.state == State::Finished && now_ms - entry.created_ms > age.as_millis() as i64
            {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// What reconciling a `Starting` entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconcile {
    /// The run exists: follow it, never call `sp_start_job` again.
    Bound,
    /// Nothing seen yet; look again shortly.
    Wait,
    /// Nothing seen within the grace period (or the Agent restarted, which drops pending
    /// requests): calling `sp_start_job` now cannot create a second run.
    SafeToStart,
}

/// Evidence of a run after the ledger's watermark, from one `poll`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence {
    /// History rows of the job after the watermark.
    pub history_after_watermark: bool,
    /// The current-session activity row passes the "is ours" test (R2).
    pub activity_accepted: bool,
    /// The Agent says the job runs at the request of our login.
    pub live_running_for_us: bool,
}

/// Reconcile policy (sqlagent-msdb §8.4). `agent_session_now` is the current session.
pub fn reconcile(
    entry: &Entry,
    ev: Evidence,
    agent_session_now: Option<i32>,
    waited: Duration,
    grace: Duration,
) -> Reconcile {
    if ev.history_after_watermark || ev.activity_accepted || ev.live_running_for_us {
        return Reconcile::Bound;
    }
    if entry.agent_session_id.is_some()
        && agent_session_now.is_some()
        && entry.agent_session_id != agent_session_now
    {
        return Reconcile::SafeToStart;
    }
    if waited >= grace {
        Reconcile::SafeToStart
    } else {
        Reconcile::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            execution_id: "e1".into(),
            job_id: "6F9619FF-8B86-D011-B42D-00C04FC964FF".into(),
            job_name: "J".into(),
            state: State::Starting,
            agent_session_id: Some(7),
            history_watermark: 100,
            cursor: 100,
            requested_not_before: Some("2024-03-15 09:30:05".into()),
            server_started: None,
            login: Some("agentfleet".into()),
            created_ms: 1,
            outcome: None,
            message: None,
        }
    }

    #[test]
    fn writes_reloads_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.get("e1").is_none());
        let mut e = entry();
        ledger.put(&e).unwrap();
        // A second handle (a restarted sidecar) sees the same entry.
        let again = Ledger::open(dir.path()).unwrap();
        assert_eq!(again.get("e1").unwrap(), e);
        assert_eq!(again.unfinished().len(), 1);
        e.state = State::Finished;
        again.put(&e).unwrap();
        assert!(again.unfinished().is_empty());
        again.prune(Duration::from_secs(1), 10_000);
        assert!(again.get("e1").is_none());
    }

    #[test]
    fn lookup_tells_a_missing_entry_from_an_unreadable_one() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.lookup("e1"), Lookup::Absent);
        ledger.put(&entry()).unwrap();
        assert_eq!(ledger.lookup("e1"), Lookup::Found(entry()));
        std::fs::write(ledger.path("e1"), b"{ torn").unwrap();
        assert!(matches!(ledger.lookup("e1"), Lookup::Unreadable(why) if why.contains("e1.json")));
        assert!(ledger.get("e1").is_none());
    }

    #[test]
    fn reconcile_never_restarts_while_evidence_or_grace() {
        let e = entry();
        let g = Duration::from_secs(30);
        let ev = |f: fn(&mut Evidence)| {
            let mut x = Evidence::default();
            f(&mut x);
            x
        };
        assert_eq!(
            reconcile(
                &e,
                ev(|x| x.history_after_watermark = true),
                Some(7),
                g * 2,
                g
            ),
            Reconcile::Bound
        );
        assert_eq!(
            reconcile(&e, ev(|x| x.activity_accepted = true), Some(7), g * 2, g),
            Reconcile::Bound
        );
        assert_eq!(
            reconcile(&e, ev(|x| x.live_running_for_us = true), Some(7), g * 2, g),
            Reconcile::Bound
        );
        assert_eq!(
            reconcile(&e, Evidence::default(), Some(7), Duration::from_secs(1), g),
            Reconcile::Wait
        );
        assert_eq!(
            reconcile(&e, Evidence::default(), Some(7), g, g),
            Reconcile::SafeToStart
        );
        // Agent restarted: a pending request died with it.
        assert_eq!(
            reconcile(&e, Evidence::default(), Some(8), Duration::ZERO, g),
            Reconcile::SafeToStart
        );
    }
}
