//! Reads: the rows behind `runs`, `show` and `logs`, and what a re-attach needs.
use std::path::PathBuf;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::apply::{RUN_RUNNING, STREAM_TEXT};
use super::log_rows::{self, MAX_ROW_LINES};
use super::{Store, StoreError};

/// Run statuses after which nothing more happens (`run_finished`'s, plus "canceled").
const FINAL_RUN_STATUSES: &[&str] = &[
    "succeeded",
    "failed",
    "canceled",
    "interrupted",
    "timed_out",
];

/// True when a run in `status` will not change any more.
pub fn run_is_final(status: &str) -> bool {
    FINAL_RUN_STATUSES.contains(&status)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub plan_name: String,
    pub plan_path: String,
    pub fleet_path: Option<String>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// "running" until the run ends, then `run_finished`'s status.
    pub status: String,
    pub exit_code: Option<i32>,
    pub driver_pid: Option<u32>,
    pub driver_host: Option<String>,
    pub cancel_requested: bool,
    pub tasks_total: u32,
    pub tasks_succeeded: u32,
    /// Failed, timed out, lost or canceled (skipped tasks count in neither).
    pub tasks_failed: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub job: String,
    pub status: String,
    pub attempts: u32,
    pub sidecar: Option<String>,
    pub duration_ms: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutionRow {
    pub execution_id: String,
    pub task: String,
    pub attempt: u32,
    pub sidecar: String,
    pub job: String,
    pub status: String,
    /// The last sidecar sequence number saved: resume `Watch` with `after_seq = last_seq`.
    pub last_seq: u64,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub message: String,
    /// Who its sidecar says started it; empty when not known.
    pub started_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepRow {
    pub execution_id: String,
    pub step: u32,
    pub attempt: u32,
    pub name: String,
    pub status: String,
    pub message: String,
    pub duration_ms: Option<u64>,
    pub started_ms: Option<i64>,
}

/// Everything about one run, in plan order (tasks) and start order (executions, steps).
#[derive(Debug, Clone, Serialize)]
pub struct RunSnapshot {
    pub run: RunRow,
    pub plan_text: String,
    pub plan_path: PathBuf,
    pub fleet_path: Option<PathBuf>,
    pub tasks: Vec<TaskRow>,
    pub executions: Vec<ExecutionRow>,
    pub steps: Vec<StepRow>,
    /// The SSIS packages steps ran: catalog execution, tasks (sub-steps) and their rows.
    pub packages: Vec<crate::sub_steps::StepPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogRow {
    pub id: i64,
    pub execution_id: String,
    pub task: String,
    pub attempt: u32,
    pub step: u32,
    pub stream: String,
    pub line: String,
    pub ts_ms: i64,
}

const RUN_COLUMNS: &str = "r.run_id, r.plan_name, r.plan_path, r.fleet_path, r.started_ms,
    r.finished_ms, r.status, r.exit_code, r.driver_pid, r.driver_host, r.cancel_requested,
    (SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id),
    (SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id AND t.status = 'succeeded'),
    (SELECT count(*) FROM tasks t WHERE t.run_id = r.run_id
        AND t.status IN ('failed', 'timed_out', 'lost', 'canceled'))";

fn run_row(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        run_id: r.get(0)?,
        plan_name: r.get(1)?,
        plan_path: r.get(2)?,
        fleet_path: r.get(3)?,
        started_ms: r.get(4)?,
        finished_ms: r.get(5)?,
        status: r.get(6)?,
        exit_code: r.get(7)?,
        driver_pid: r.get(8)?,
        driver_host: r.get(9)?,
        cancel_requested: r.get(10)?,
        tasks_total: r.get(11)?,
        tasks_succeeded: r.get(12)?,
        tasks_failed: r.get(13)?,
    })
}

impl Store {
    /// The most recent runs, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunRow>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.started_ms DESC, r.run_id DESC LIMIT ?1"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![limit as i64], run_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One run by its full id, if it exists.
    pub fn run(&self, run_id: &str) -> Result<Option<RunRow>, StoreError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.run_id = ?1");
        Ok(self
            .conn
            .query_row(&sql, params![run_id], run_row)
            .optional()?)
    }

    /// The run `spec` names: `last` (the most recent), a full id, or a unique prefix.
    pub fn resolve_run(&self, spec: &str) -> Result<RunRow, StoreError> {
        let spec = spec.trim();
        if spec == "last" {
            return self
                .list_runs(1)?
                .into_iter()
                .next()
                .ok_or(StoreError::NoRuns);
        }
        if let Some(run) = self.run(spec)? {
            return Ok(run);
        }
        // Ids are lowercase hex; escape LIKE's wildcards so `_` or `%` match only themselves.
        let pattern = format!(
            "{}%",
            spec.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let mut stmt = self.conn.prepare(
            "SELECT run_id FROM runs WHERE run_id LIKE ?1 ESCAPE '\\' ORDER BY started_ms DESC LIMIT 11",
        )?;
        let ids: Vec<String> = stmt
            .query_map(params![pattern], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        match ids.as_slice() {
            [] => Err(StoreError::UnknownRun(spec.to_owned())),
            [one] => self
                .run(one)?
                .ok_or_else(|| StoreError::UnknownRun(spec.to_owned())),
            _ if spec.is_empty() => Err(StoreError::UnknownRun(spec.to_owned())),
            many => Err(StoreError::AmbiguousRun {
                prefix: spec.to_owned(),
                candidates: many.to_vec(),
            }),
        }
    }

    /// Everything about `run_id`: tasks, executions with their `last_seq`, steps.
    pub fn run_snapshot(&self, run_id: &str) -> Result<RunSnapshot, StoreError> {
        let run = self
            .run(run_id)?
            .ok_or_else(|| StoreError::UnknownRun(run_id.to_owned()))?;
        let plan_text: String = self.conn.query_row(
            "SELECT plan_text FROM runs WHERE run_id = ?1",
            params![run_id],
            |r| r.get(0),
        )?;
        let tasks = self
            .conn
            .prepare(
                "SELECT task, job, status, attempts, sidecar, duration_ms, message
                 FROM tasks WHERE run_id = ?1 ORDER BY position, rowid",
            )?
            .query_map(params![run_id], |r| {
                Ok(TaskRow {
                    task: r.get(0)?,
                    job: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    sidecar: r.get(4)?,
                    duration_ms: r.get(5)?,
                    message: r.get(6)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let executions = self
            .conn
            .prepare(
                "SELECT execution_id, task, attempt, sidecar, job, status, last_seq, started_ms,
                        finished_ms, message, started_by
                 FROM executions WHERE run_id = ?1 ORDER BY started_ms, rowid",
            )?
            .query_map(params![run_id], |r| {
                Ok(ExecutionRow {
                    execution_id: r.get(0)?,
                    task: r.get(1)?,
                    attempt: r.get(2)?,
                    sidecar: r.get(3)?,
                    job: r.get(4)?,
                    status: r.get(5)?,
                    last_seq: r.get(6)?,
                    started_ms: r.get(7)?,
                    finished_ms: r.get(8)?,
                    message: r.get(9)?,
                    started_by: r.get(10)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let steps = self
            .conn
            .prepare(
                "SELECT s.execution_id, s.step, s.attempt, s.name, s.status, s.message,
                        s.duration_ms, s.started_ms
                 FROM steps s JOIN executions e ON e.execution_id = s.execution_id
                 WHERE e.run_id = ?1 ORDER BY s.execution_id, s.started_ms, s.step, s.attempt",
            )?
            .query_map(params![run_id], |r| {
                Ok(StepRow {
                    execution_id: r.get(0)?,
                    step: r.get(1)?,
                    attempt: r.get(2)?,
                    name: r.get(3)?,
                    status: r.get(4)?,
                    message: r.get(5)?,
                    duration_ms: r.get(6)?,
                    started_ms: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let packages = self.packages(run_id)?;
        Ok(RunSnapshot {
            plan_path: PathBuf::from(&run.plan_path),
            fleet_path: run.fleet_path.as_ref().map(PathBuf::from),
            run,
            plan_text,
            tasks,
            executions,
            steps,
            packages,
        })
    }

    /// Up to `limit` log lines of `run_id` after id `after`, in order; only `task`'s if given.
    pub fn logs_after(
        &self,
        run_id: &str,
        task: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LogRow>, StoreError> {
        let Some(run) = self
            .conn
            .prepare_cached("SELECT id FROM log_runs WHERE run_id = ?1")?
            .query_row(params![run_id], |r| r.get::<_, i64>(0))
            .optional()?
        else {
            return Ok(Vec::new());
        };
        let Some(task) = task else {
            return self.logs_where("l.run = ?1", run, after, limit);
        };
        // A task's lines come from its sources (one per attempt): one range scan of
        // `logs_src` each, merged by id.
        let sources: Vec<i64> = self
            .conn
            .prepare_cached("SELECT id FROM log_sources WHERE run = ?1 AND task = ?2")?
            .query_map(params![run, task], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut rows = Vec::new();
        for src in sources {
            rows.extend(self.logs_where("l.src = ?1", src, after, limit)?);
        }
        rows.sort_unstable_by_key(|r| r.id);
        rows.truncate(limit);
        Ok(rows)
    }

    /// Up to `limit` lines matching `filter` (on `?1` = `key`) after id `after`, in order.
    fn logs_where(
        &self,
        filter: &str,
        key: i64,
        after: i64,
        limit: usize,
    ) -> Result<Vec<LogRow>, StoreError> {
        // A row holds lines `id` .. `id + n - 1` (`log_rows`): the first row wanted is the
        // one holding line `after + 1`, no further back than `MAX_ROW_LINES`.
        let sql = format!(
            "SELECT l.id, l.n, s.execution_id, s.task, s.attempt, l.step, {STREAM_TEXT}, l.line, l.ts_ms
             FROM logs l JOIN log_sources s ON s.id = l.src
             WHERE {filter} AND l.id > ?2 - {MAX_ROW_LINES} AND l.id + l.n - 1 > ?2
             ORDER BY l.id LIMIT ?3"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![key, after, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            if out.len() >= limit {
                break;
            }
            let (id, n): (i64, i64) = (r.get(0)?, r.get(1)?);
            let (execution_id, task): (String, String) = (r.get(2)?, r.get(3)?);
            let (attempt, step, stream): (u32, u32, String) = (r.get(4)?, r.get(5)?, r.get(6)?);
            let ts_ms: i64 = r.get(8)?;
            let text: String = r.get(7)?;
            for (line_id, line) in log_rows::split(id, n, &text) {
                if line_id <= after || out.len() >= limit {
                    continue;
                }
                out.push(LogRow {
                    id: line_id,
                    execution_id: execution_id.clone(),
                    task: task.clone(),
                    attempt,
                    step,
                    stream: stream.clone(),
                    line: line.to_owned(),
                    ts_ms,
                });
            }
        }
        Ok(out)
    }

    /// The run's status now (for `logs --follow`), `RUN_RUNNING` while it goes on.
    pub fn run_status(&self, run_id: &str) -> Result<String, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT status FROM runs WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or_else(|| RUN_RUNNING.to_owned()))
    }
}
