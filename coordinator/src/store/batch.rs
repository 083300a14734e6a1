//! One batch of the writer: what it holds, how it is committed (inside the run's lease
//! when there is one), and how a failing one is retried.
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::apply;
use super::lease::LEASE_TTL;
use super::losses::execution_of;
use crate::events::{At, RunEvent};

/// How long a failing batch is retried before its events count as lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retrying stops once the next wait would end past this (from the first failure).
    pub retry_for: Duration,
    /// The first wait; each next one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 15 s: room for a disk to be freed or a long lock to pass (each attempt also waits
    /// up to `BUSY_TIMEOUT` for a lock), short enough that a run on a full disk still ends
    /// in reasonable time and says so.
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(15),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

/// Writes only while `driver_id` holds `run_id`'s lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseGuard {
    pub run_id: String,
    pub driver_id: String,
}

/// One row of a batch: an event, or a sequence mark (saved as `executions.last_seq`).
pub(super) enum Item {
    Event(RunEvent),
    Seq { at: At, seq: u64 },
}

impl Item {
    /// (execution id, task, attempt) of the execution it belongs to, if any.
    pub(super) fn execution(&self) -> Option<(&str, &str, u32)> {
        match self {
            Item::Event(ev) => execution_of(ev),
            Item::Seq { at, .. } => Some((&at.execution_id, &at.task, at.attempt)),
        }
    }
}

/// What became of one batch.
pub(super) enum Committed {
    Written,
    /// Another driver holds the run's lease: nothing was written.
    Superseded,
}

pub(super) fn write_batch(
    conn: &mut Connection,
    batch: &[Item],
    log_keys: &mut apply::LogKeys,
    guard: Option<&LeaseGuard>,
) -> rusqlite::Result<Committed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(guard) = guard
        && !holds_lease(&tx, guard)?
    {
        return Ok(Committed::Superseded);
    }
    for item in batch {
        match item {
            Item::Event(ev) => apply::apply(&tx, ev, log_keys)?,
            Item::Seq { at, seq } => {
                tx.prepare_cached(
                    "UPDATE executions SET last_seq = max(last_seq, ?2) WHERE execution_id = ?1",
                )?
                .execute(params![at.execution_id, *seq as i64])?;
            }
        }
    }
    tx.commit()?;
    Ok(Committed::Written)
}

/// True unless another driver holds the run (a run recorded without a lease, or none, is
/// anyone's). In the batch's own transaction: a take-over commits either before (and the
/// batch is not written) or after it. A held lease is renewed too, so a long re-import
/// before the drive's keeper starts does not let it lapse.
fn holds_lease(tx: &rusqlite::Transaction<'_>, guard: &LeaseGuard) -> rusqlite::Result<bool> {
    let expires = agentfleet_common::now_ms() + LEASE_TTL.as_millis() as i64;
    let renewed = tx
        .prepare_cached(
            "UPDATE runs SET lease_expires_ms = max(lease_expires_ms, ?3)
             WHERE run_id = ?1 AND driver_id = ?2 AND lease_expires_ms IS NOT NULL",
        )?
        .execute(params![guard.run_id, guard.driver_id, expires])?;
    if renewed == 1 {
        return Ok(true);
    }
    let holder: Option<Option<String>> = tx
        .prepare_cached("SELECT driver_id FROM runs WHERE run_id = ?1")?
        .query_row(params![guard.run_id], |r| r.get(0))
        .optional()?;
    Ok(match holder {
        Some(Some(holder)) => holder == guard.driver_id,
        _ => true,
    })
}
