//! Test-only crash points. `AGENTFLEET_FAULT=<name>` makes the process abort, as a
//! `kill -9` or a power cut would stop it, when it reaches the point of that name; fault
//! tests use them to crash inside an exact window (e.g. after a SQL Server Agent start
//! was recorded, before it was sent). Unset, a point costs one cached comparison.
//!
//! The points, where they are, and what a crash there must not break:
//!
//! | name | where | the promise under test |
//! |---|---|---|
//! | `sqlagent-before-ledger` | sidecar, after the journal record, before the start ledger entry | a restart never starts the job late |
//! | `sqlagent-before-start-batch` | sidecar, after the ledger entry, before `sp_start_job` | the same |
//! | `coordinator-before-start-job` | coordinator, after a placement is recorded in the run store, before its StartJob | `attach` / `cancel` of the run never start the job (they only follow executions, `resume_only`) |
use std::sync::OnceLock;

/// The environment variable naming the crash point to arm.
pub const ENV: &str = "AGENTFLEET_FAULT";

/// Aborts the process if `AGENTFLEET_FAULT` names `name`.
pub fn point(name: &str) {
    static ARMED: OnceLock<Option<String>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| std::env::var(ENV).ok().filter(|v| !v.is_empty()));
    if armed.as_deref() == Some(name) {
        eprintln!("{ENV}={name}: aborting here (a test's crash point)");
        std::process::abort();
    }
}
