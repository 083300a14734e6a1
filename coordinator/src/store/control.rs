//! Small writes the commands make themselves, outside a run's event stream: recording a
//! new run before it starts (with its driver's lease, see `lease.rs`), asking a run to
//! stop, closing a refused start.
//! Each is one short transaction, safe while another process's writer is busy.
use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use super::apply::{RUN_RUNNING, TASK_WAITING};
use super::lease::{Driver, LEASE_TTL};
use super::{Store, StoreError};

/// What the store keeps about a run before its first event.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub run_id: String,
    pub plan_name: String,
    pub plan_path: PathBuf,
    /// The plan file's text as it was run, so a re-attach works even if the file changed.
    pub plan_text: String,
    pub fleet_path: Option<PathBuf>,
    pub started_ms: i64,
    /// (task, job) in plan order: every task is listed from the start, waiting.
    pub tasks: Vec<(String, String)>,
}

impl Store {
    /// Records a new run, driven by this process, with every task waiting.
    pub fn create_run(&mut self, run: &NewRun) -> Result<(), StoreError> {
        self.create_run_as(run, &Driver::this_process())
    }

    /// Records a new run with every task waiting, its lease held by `driver` from the
    /// start (a run id is new, so nobody else can hold it).
    pub fn create_run_as(&mut self, run: &NewRun, driver: &Driver) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO runs (run_id, plan_name, plan_path, plan_text, fleet_path, started_ms,
                               status, driver_pid, driver_host, driver_id, lease_expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                run.run_id,
                run.plan_name,
                run.plan_path.to_string_lossy(),
                run.plan_text,
                run.fleet_path.as_ref().map(|p| p.to_string_lossy()),
                run.started_ms,
                RUN_RUNNING,
                driver.pid,
                driver.host,
                driver.id,
                run.started_ms.max(agentfleet_common::now_ms()) + LEASE_TTL.as_millis() as i64
            ],
        )?;
        for (position, (task, job)) in run.tasks.iter().enumerate() {
            tx.execute(
                "INSERT INTO tasks (run_id, task, position, job, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![run.run_id, task, position as i64, job, TASK_WAITING],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Closes an execution whose start its sidecar refused (busy): it never ran, so a
    /// later `attach` must not re-attach to it.
    pub fn close_refused_execution(&self, execution_id: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE executions SET status = 'refused', finished_ms = ?2
              WHERE execution_id = ?1 AND finished_ms IS NULL",
            params![execution_id, agentfleet_common::now_ms()],
        )?;
        Ok(())
    }

    /// Ends an execution re-imported after its task had finished (`attach`): only its
    /// own row; the task keeps what its last attempt recorded.
    pub fn close_reimported_execution(
        &self,
        execution_id: &str,
        status: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE executions SET status = ?2, message = ?3, finished_ms = ?4
              WHERE execution_id = ?1 AND finished_ms IS NULL",
            params![execution_id, status, message, agentfleet_common::now_ms()],
        )?;
        Ok(())
    }

    /// Asks the process driving `run_id` to stop it (it polls [`Store::cancel_requested`]).
    pub fn request_cancel(&self, run_id: &str) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE runs SET cancel_requested = 1 WHERE run_id = ?1",
            params![run_id],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        Ok(())
    }

    /// True once someone asked to stop `run_id`.
    pub fn cancel_requested(&self, run_id: &str) -> Result<bool, StoreError> {
        let v: Option<bool> = self
            .conn
            .query_row(
                "SELECT cancel_requested FROM runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()?;
        v.ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))
    }

    /// Ends `run_id` with `status` (e.g. "detached" is not final, "canceled" is) outside
    /// the event stream, e.g. when a run is abandoned. Normally `run_finished` does this.
    pub fn finish_run(&self, run_id: &str, status: &str, exit_code: i32) -> Result<(), StoreError> {
        let n = self.conn.execute(
            "UPDATE runs SET status = ?2, exit_code = ?3, finished_ms = ?4 WHERE run_id = ?1",
            params![run_id, status, exit_code, agentfleet_common::now_ms()],
        )?;
        if n == 0 {
            return Err(StoreError::UnknownRun(run_id.to_owned()));
        }
        Ok(())
    }
}

/// Whether the process recorded as driving a run still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Gone,
    /// Another host, no driver recorded, or no way to tell on this platform.
    Unknown,
}

/// Looks for the driver `pid` when it ran on this host. Only a definite `Gone` should be
/// acted on (a crashed coordinator: `attach` may take the run over); a recycled pid reads
/// as `Alive`, which errs on the safe side.
pub fn driver_liveness(pid: Option<u32>, host: Option<&str>) -> Liveness {
    let (Some(pid), Some(host)) = (pid, host) else {
        return Liveness::Unknown;
    };
    if host != this_host() {
        return Liveness::Unknown;
    }
    if pid == std::process::id() {
        return Liveness::Alive;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return Liveness::Unknown;
    }
    if proc.join(pid.to_string()).exists() {
        Liveness::Alive
    } else {
        Liveness::Gone
    }
}

/// This machine's host name, as recorded for a run's driver.
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
