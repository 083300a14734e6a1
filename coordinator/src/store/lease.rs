//! One driver per run, on every OS and across hosts: a lease kept in the store itself.
//!
//! A coordinator process has a random driver id ([`Driver`]). `runs.driver_id` names the
//! process that drives a run and `runs.lease_expires_ms` until when its claim holds unless
//! it renews it. The driver renews every [`LEASE_RENEW_EVERY`]; a lease not renewed for
//! [`LEASE_TTL`] (the process died, its host is gone) is free to take. Taking is one
//! conditional UPDATE, so of two coordinators racing for a run exactly one wins: SQLite
//! serializes writers, and the loser's condition no longer holds when its turn comes.
//!
//! Everything a driver writes for a run checks the lease in the same transaction: a
//! placement (written before its StartJob, see `record_placement`) and every batch of the
//! writer (see `batch.rs`); both also renew the lease they hold. So a driver that lost its
//! lease can neither start a job nor overwrite what the new driver records, whatever its
//! clock or timers say.
//!
//! Expiry compares wall clocks: the hosts sharing a store must agree on the time to well
//! within the TTL (NTP does).
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::control::{Liveness, driver_liveness, this_host};
use super::{Store, StoreError};
use crate::events::{RunEvent, rfc3339};

/// How long a lease holds without renewal. Long enough that a busy store (a writer waits
/// up to `BUSY_TIMEOUT`, 10 s) or a short stall never costs a live driver its run; short
/// enough that a crashed driver's run can be re-attached soon.
pub const LEASE_TTL: Duration = Duration::from_secs(30);
/// How often a driver renews its lease: several renewals fit in one TTL, so one failed
/// renewal (a busy or full disk) does not let the lease lapse.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_secs(5);

/// A coordinator process that may drive runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    /// Random, one per process: pids repeat across hosts and after reboots, this does not.
    pub id: String,
    pub pid: u32,
    pub host: String,
}

impl Driver {
    /// This process, with its id drawn once.
    pub fn this_process() -> Self {
        static ID: OnceLock<String> = OnceLock::new();
        Self::adopting(ID.get_or_init(agentfleet_common::ids::new_run_id))
    }

    /// This process continuing the lease of driver `id`: the background coordinator of
    /// `run --detach` takes over the lease its parent took, without a gap.
    pub fn adopting(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            pid: std::process::id(),
            host: this_host(),
        }
    }
}

/// Who holds (or last held) a run's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    pub driver_id: Option<String>,
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// None: released (or never taken, as for runs recorded before leases existed).
    pub expires_ms: Option<i64>,
}

impl LeaseHolder {
    /// True while the holder's claim stands at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.driver_id.is_some() && self.expires_ms.is_some_and(|e| e >= now_ms)
    }

    /// True when the holder ran on this host and its process no longer exists (a crash):
    /// its lease need not be waited out.
    pub fn is_known_dead(&self) -> bool {
        driver_liveness(self.pid, self.host.as_deref()) == Liveness::Gone
    }

    /// "process 4242 on host sql1, lease until 2026-12-03T14:00:00.000Z".
    pub fn describe(&self) -> String {
        let who = format!(
            "process {} on host {}",
            self.pid.map_or_else(|| "?".to_owned(), |p| p.to_string()),
            self.host.as_deref().unwrap_or("?")
        );
        match self.expires_ms {
            Some(until) => format!("{who}, lease until {}", rfc3339(until)),
            None => format!("{who}, lease released"),
        }
    }
}

impl Store {
    /// Who holds `run_id`'s lease.
    pub fn lease_holder(&self, run_id: &str) -> Result<LeaseHolder, StoreError> {
        self.conn
            .query_row(
                "SELECT driver_id, driver_pid, driver_host, lease_expires_ms FROM runs
                 WHERE run_id = ?1",
                params![run_id],
                |r| {
                    Ok(LeaseHolder {
                        driver_id: r.get(0)?,
                        pid: r.get(1)?,
                        host: r.get(2)?,
                        expires_ms: r.get(3)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))
    }

    /// Makes `driver` the driver of `run_id` if the lease is free: released, expired,
    /// already `driver`'s, or held by a process of this host that no longer exists; with
    /// `force`, whatever holds it. One conditional UPDATE: of several takers exactly one
    /// wins. `Err(holder)` says who holds it when it was not taken.
    pub fn take_lease(
        &self,
        run_id: &str,
        driver: &Driver,
        force: bool,
        now_ms: i64,
    ) -> Result<Result<(), LeaseHolder>, StoreError> {
        let before = self.lease_holder(run_id)?;
        // A crashed holder on this host is taken over only if it still holds the lease
        // when our UPDATE runs (compare and swap on its id).
        let dead_holder = before
            .is_known_dead()
            .then_some(before.driver_id.as_deref())
            .flatten();
        let taken = self.conn.execute(
            "UPDATE runs SET driver_id = ?2, driver_pid = ?3, driver_host = ?4,
                 lease_expires_ms = ?5
             WHERE run_id = ?1
               AND (?6 OR driver_id IS NULL OR lease_expires_ms IS NULL
                    OR lease_expires_ms < ?7 OR driver_id = ?2 OR driver_id = ?8)",
            params![
                run_id,
                driver.id,
                driver.pid,
                driver.host,
                now_ms + LEASE_TTL.as_millis() as i64,
                force,
                now_ms,
                dead_holder
            ],
        )?;
        if taken == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(self.lease_holder(run_id)?))
        }
    }

    /// Extends `driver`'s lease on `run_id`; `Err(holder)` when another driver has taken
    /// it (the caller must stop driving).
    pub fn renew_lease(
        &self,
        run_id: &str,
        driver: &Driver,
        now_ms: i64,
    ) -> Result<Result<(), LeaseHolder>, StoreError> {
        let renewed = self.conn.execute(
            "UPDATE runs SET lease_expires_ms = ?3 WHERE run_id = ?1 AND driver_id = ?2",
            params![run_id, driver.id, now_ms + LEASE_TTL.as_millis() as i64],
        )?;
        if renewed == 1 {
            Ok(Ok(()))
        } else {
            Ok(Err(self.lease_holder(run_id)?))
        }
    }

    /// Ends `driver`'s drive of `run_id`: releases the lease and, when the store could not
    /// save the whole run (`incomplete`), marks the run `incomplete` with `exit_code`, a
    /// status `attach` picks up again. The commit is synced to disk (`synchronous=FULL`
    /// syncs the write-ahead log, and with it every earlier commit), so what the store
    /// holds is on disk before any sidecar is told it may delete its copy. Returns false
    /// when `driver` no longer held the lease (nothing changed).
    pub fn end_drive(
        &mut self,
        run_id: &str,
        driver: &Driver,
        incomplete: Option<i32>,
    ) -> Result<bool, StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let held = tx.execute(
                "UPDATE runs SET lease_expires_ms = NULL,
                     status = CASE WHEN ?3 IS NULL THEN status ELSE ?4 END,
                     exit_code = coalesce(?3, exit_code),
                     finished_ms = CASE WHEN ?3 IS NULL THEN finished_ms ELSE ?5 END
                 WHERE run_id = ?1 AND driver_id = ?2",
                params![
                    run_id,
                    driver.id,
                    incomplete,
                    RUN_INCOMPLETE,
                    agentfleet_common::now_ms()
                ],
            )?;
            tx.commit()?;
            Ok(held == 1)
        })();
        self.conn.pragma_update(None, "synchronous", "NORMAL")?;
        result
    }

    /// Writes the placement `event` of `run_id` before its StartJob goes out, only while
    /// `driver` holds the run's lease (checked and renewed in the same transaction).
    pub fn record_placement(
        &mut self,
        event: &RunEvent,
        driver: &Driver,
    ) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now_ms = agentfleet_common::now_ms();
        let held = tx.execute(
            "UPDATE runs SET lease_expires_ms = ?3 WHERE run_id = ?1 AND driver_id = ?2",
            params![
                event.run_id,
                driver.id,
                now_ms + LEASE_TTL.as_millis() as i64
            ],
        )?;
        if held == 0 {
            drop(tx);
            return Err(StoreError::NotDriver {
                run_id: event.run_id.clone(),
                holder: self.lease_holder(&event.run_id)?.describe(),
            });
        }
        super::apply::apply(&tx, event, &mut super::apply::LogKeys::default())?;
        tx.commit()?;
        Ok(())
    }
}

/// A run whose driver ended without the store holding all of it; `attach` re-imports the
/// rest from the sidecars' journals.
pub const RUN_INCOMPLETE: &str = "incomplete";
