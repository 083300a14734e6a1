//! How one `RunEvent` changes the store's tables. Called by the writer inside its batch
//! transaction; every statement is cached, and a log event's lines become few rows
//! (`log_rows`).
use std::collections::HashMap;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Transaction, params};

use crate::events::{At, RunEvent, RunEventKind, TaskOutcome};

/// A task's status while it has not finished (its final status is a `TaskOutcome`).
pub const TASK_WAITING: &str = "waiting";
pub const TASK_PLACED: &str = "placed";
pub const TASK_RUNNING: &str = "running";
/// Finished an attempt that will be retried.
pub const TASK_RETRYING: &str = "retrying";

/// A run's status until `run_finished` (or a re-attach) says otherwise.
pub const RUN_RUNNING: &str = "running";

/// The event's `ts` as Unix milliseconds (it was made from them, so this round-trips).
pub fn ts_ms(ev: &RunEvent) -> i64 {
    ev.ts_ms
}

/// The `type`s of the SSIS catalog progress events (read back by `sub_steps.rs`).
pub const CATALOG_EXECUTION: &str = "catalog_execution";
pub const SUB_STEP_STARTED: &str = "sub_step_started";
pub const SUB_STEP_FINISHED: &str = "sub_step_finished";
pub const DATA_FLOW_ROWS: &str = "data_flow_rows";

/// The `type` of the event's `--json` object.
pub fn type_name(kind: &RunEventKind) -> &'static str {
    match kind {
        RunEventKind::RunStarted { .. } => "run_started",
        RunEventKind::TaskPlaced { .. } => "task_placed",
        RunEventKind::TaskStarted { .. } => "task_started",
        RunEventKind::StepStarted { .. } => "step_started",
        RunEventKind::StepFinished { .. } => "step_finished",
        RunEventKind::Log { .. } => "log",
        RunEventKind::TaskFinished { .. } => "task_finished",
        RunEventKind::ExecutionSeq { .. } => "execution_seq",
        RunEventKind::CatalogExecution(_) => CATALOG_EXECUTION,
        RunEventKind::SubStepStarted(_) => SUB_STEP_STARTED,
        RunEventKind::SubStepFinished(_) => SUB_STEP_FINISHED,
        RunEventKind::DataFlowRows(_) => DATA_FLOW_ROWS,
        RunEventKind::RunFinished { .. } => "run_finished",
    }
}

/// The integer keys a log line is written with, resolved once per execution and kept by
/// the writer. Ids are only cached after being read inside the writer's transaction, so a
/// batch that fails must [`clear`](Self::clear) them (its inserts were rolled back).
#[derive(Default)]
pub struct LogKeys {
    /// Per execution id: the run id, task and attempt its keys were resolved for, and the
    /// `log_runs` and `log_sources` ids.
    sources: HashMap<String, Source>,
}

struct Source {
    run_id: String,
    task: String,
    attempt: u32,
    run: i64,
    src: i64,
}

impl LogKeys {
    pub fn clear(&mut self) {
        self.sources.clear();
    }

    /// `(log_runs.id, log_sources.id)` for a line of `at` in `run_id`.
    fn resolve(
        &mut self,
        tx: &Transaction<'_>,
        run_id: &str,
        at: &At,
    ) -> rusqlite::Result<(i64, i64)> {
        if let Some(s) = self.sources.get(at.execution_id.as_str())
            && s.run_id == run_id
            && s.task == at.task
            && s.attempt == at.attempt
        {
            return Ok((s.run, s.src));
        }
        tx.prepare_cached("INSERT INTO log_runs (run_id) VALUES (?1) ON CONFLICT DO NOTHING")?
            .execute(params![run_id])?;
        let run: i64 = tx
            .prepare_cached("SELECT id FROM log_runs WHERE run_id = ?1")?
            .query_row(params![run_id], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO log_sources (run, execution_id, task, attempt) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![run, at.execution_id, at.task, at.attempt])?;
        let src: i64 = tx
            .prepare_cached(
                "SELECT id FROM log_sources
                 WHERE run = ?1 AND execution_id = ?2 AND task = ?3 AND attempt = ?4",
            )?
            .query_row(params![run, at.execution_id, at.task, at.attempt], |r| {
                r.get(0)
            })?;
        self.sources.insert(
            at.execution_id.clone(),
            Source {
                run_id: run_id.to_owned(),
                task: at.task.clone(),
                attempt: at.attempt,
                run,
                src,
            },
        );
        Ok((run, src))
    }
}

/// How `logs.stream` keeps a stream: a small code for the usual two, else its text.
pub fn stream_code(stream: &str) -> ToSqlOutput<'_> {
    match stream {
        "stdout" => ToSqlOutput::Owned(Value::Integer(1)),
        "stderr" => ToSqlOutput::Owned(Value::Integer(2)),
        other => ToSqlOutput::Borrowed(ValueRef::Text(other.as_bytes())),
    }
}

/// SQL that turns `logs.stream` (of a `logs l`) back into its text.
pub const STREAM_TEXT: &str =
    "CASE l.stream WHEN 1 THEN 'stdout' WHEN 2 THEN 'stderr' ELSE l.stream END";

/// Writes `ev` (anything but `ExecutionSeq`, which the writer handles itself).
pub fn apply(tx: &Transaction<'_>, ev: &RunEvent, keys: &mut LogKeys) -> rusqlite::Result<()> {
    let ts = ts_ms(ev);
    let run = ev.run_id.as_str();
    match &ev.kind {
        RunEventKind::Log { at, lines } => {
            let (run_key, src) = keys.resolve(tx, run, at)?;
            super::log_rows::insert(tx, run_key, src, ts, lines)?;
            return Ok(()); // log lines are not also kept as events
        }
        RunEventKind::ExecutionSeq { .. } => return Ok(()),
        // Kept only as events: `show` and `report` fold them (see `sub_steps.rs`).
        RunEventKind::CatalogExecution(_)
        | RunEventKind::SubStepStarted(_)
        | RunEventKind::SubStepFinished(_)
        | RunEventKind::DataFlowRows(_) => {}
        RunEventKind::RunStarted { plan, .. } => {
            // A re-attached run starts again: it is running, but keeps its first start time.
            tx.prepare_cached(
                "INSERT INTO runs (run_id, plan_name, started_ms, status) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,
                     finished_ms = NULL, exit_code = NULL",
            )?
            .execute(params![run, plan, ts, RUN_RUNNING])?;
        }
        RunEventKind::TaskPlaced { at } => {
            tx.prepare_cached(
                "INSERT INTO tasks (run_id, task, status, attempts, sidecar) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = excluded.status,
                     attempts = max(attempts, excluded.attempts), sidecar = excluded.sidecar",
            )?
            .execute(params![run, at.task, TASK_PLACED, at.attempt, at.sidecar])?;
            tx.prepare_cached(
                "INSERT INTO executions (execution_id, run_id, task, attempt, sidecar, job, status, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5,
                     coalesce((SELECT job FROM tasks WHERE run_id = ?2 AND task = ?3), ''), ?6, ?7)
                 ON CONFLICT (execution_id) DO NOTHING",
            )?
            .execute(params![
                at.execution_id,
                run,
                at.task,
                at.attempt,
                at.sidecar,
                TASK_PLACED,
                ts
            ])?;
        }
        RunEventKind::TaskStarted { at, started_by, .. } => {
            // An older sidecar says nothing: keep what is known.
            tx.prepare_cached(
                "UPDATE executions SET status = ?2,
                     started_by = CASE WHEN ?3 = '' THEN started_by ELSE ?3 END
                 WHERE execution_id = ?1",
            )?
            .execute(params![at.execution_id, TASK_RUNNING, started_by])?;
            tx.prepare_cached("UPDATE tasks SET status = ?3 WHERE run_id = ?1 AND task = ?2")?
                .execute(params![run, at.task, TASK_RUNNING])?;
        }
        RunEventKind::StepStarted {
            at,
            step,
            step_name,
            step_attempt,
        } => {
            tx.prepare_cached(
                "INSERT INTO steps (execution_id, step, attempt, name, status, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (execution_id, step, attempt) DO UPDATE SET
                     name = excluded.name, status = excluded.status, started_ms = excluded.started_ms",
            )?
            .execute(params![
                at.execution_id,
                step,
                step_attempt,
                step_name,
                TASK_RUNNING,
                ts
            ])?;
        }
        RunEventKind::StepFinished {
            at,
            step,
            step_name,
            step_attempt,
            status,
            message,
            duration_ms,
        } => {
            // Inserted whole when its start was never seen (e.g. before a re-attach).
            tx.prepare_cached(
                "INSERT INTO steps (execution_id, step, attempt, name, status, message, duration_ms, started_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (execution_id, step, attempt) DO UPDATE SET name = excluded.name,
                     status = excluded.status, message = excluded.message,
                     duration_ms = excluded.duration_ms",
            )?
            .execute(params![
                at.execution_id,
                step,
                step_attempt,
                step_name,
                status,
                message,
                *duration_ms as i64,
                ts - *duration_ms as i64
            ])?;
        }
        RunEventKind::TaskFinished {
            task,
            attempt,
            sidecar,
            execution_id,
            status,
            message,
            duration_ms,
            will_retry,
        } => {
            let task_status = if *will_retry {
                TASK_RETRYING
            } else {
                status.as_str()
            };
            tx.prepare_cached(
                "INSERT INTO tasks (run_id, task, status, attempts, sidecar, duration_ms, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, task) DO UPDATE SET status = excluded.status,
                     attempts = max(attempts, excluded.attempts),
                     sidecar = coalesce(excluded.sidecar, sidecar),
                     duration_ms = duration_ms + excluded.duration_ms,
                     message = excluded.message",
            )?
            .execute(params![
                run,
                task,
                task_status,
                attempt,
                sidecar,
                *duration_ms as i64,
                message
            ])?;
            if *attempt > 0 {
                tx.prepare_cached(
                    "UPDATE executions SET status = ?5, message = ?6, finished_ms = ?7
                     WHERE (execution_id = ?1) OR (?1 IS NULL AND run_id = ?2 AND task = ?3 AND attempt = ?4)",
                )?
                .execute(params![
                    execution_id,
                    run,
                    task,
                    attempt,
                    status.as_str(),
                    message,
                    ts
                ])?;
            }
        }
        RunEventKind::RunFinished {
            status,
            exit_code,
            summary,
            ..
        } => {
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, exit_code = ?3, finished_ms = ?4 WHERE run_id = ?1",
            )?
            .execute(params![run, status, exit_code, ts])?;
            // The dispatcher's summary is the final word on every task.
            for s in summary {
                tx.prepare_cached(
                    "INSERT INTO tasks (run_id, task, status, attempts, sidecar, duration_ms, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (run_id, task) DO UPDATE SET status = excluded.status,
                         attempts = excluded.attempts, sidecar = excluded.sidecar,
                         duration_ms = excluded.duration_ms, message = excluded.message",
                )?
                .execute(params![
                    run,
                    s.task,
                    s.status.as_str(),
                    s.attempts,
                    s.sidecar,
                    s.duration_ms as i64,
                    s.message
                ])?;
            }
        }
    }
    let (task, execution_id) = task_and_execution(&ev.kind);
    let json = serde_json::to_string(ev).unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO events (run_id, ts_ms, type, task, execution_id, json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run,
        ts,
        type_name(&ev.kind),
        task,
        execution_id,
        json
    ])?;
    Ok(())
}

fn task_and_execution(kind: &RunEventKind) -> (Option<&str>, Option<&str>) {
    match kind {
        RunEventKind::TaskPlaced { at }
        | RunEventKind::TaskStarted { at, .. }
        | RunEventKind::StepStarted { at, .. }
        | RunEventKind::StepFinished { at, .. }
        | RunEventKind::Log { at, .. }
        | RunEventKind::ExecutionSeq { at, .. } => {
            (Some(at.task.as_str()), Some(at.execution_id.as_str()))
        }
        RunEventKind::TaskFinished {
            task, execution_id, ..
        } => (Some(task.as_str()), execution_id.as_deref()),
        RunEventKind::RunStarted { .. } | RunEventKind::RunFinished { .. } => (None, None),
        catalog => catalog.catalog_at().map_or((None, None), |at| {
            (Some(at.task.as_str()), Some(at.execution_id.as_str()))
        }),
    }
}

/// True for a task status that will not change any more.
pub fn task_is_final(status: &str) -> bool {
    [
        TaskOutcome::Succeeded,
        TaskOutcome::Failed,
        TaskOutcome::Canceled,
        TaskOutcome::TimedOut,
        TaskOutcome::Skipped,
        TaskOutcome::Lost,
    ]
    .iter()
    .any(|o| o.as_str() == status)
}
