//! Reads for the run report and the text timeline: the fleet a run started with, and the
//! first and last log lines of each execution (bounded, whatever the log's size).
use std::collections::{BTreeMap, HashMap};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::apply::STREAM_TEXT;
use super::log_rows;
use super::{Store, StoreError};

/// The sidecars a run started with and their slots (from its last `run_started` event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFleet {
    pub sidecars: Vec<String>,
    /// Slots per sidecar as it described itself at the start; empty for runs recorded
    /// before `run_started` carried them.
    pub slots: BTreeMap<String, u32>,
}

/// One log line of an excerpt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExcerptLine {
    pub step: u32,
    pub stream: String,
    pub line: String,
    pub ts_ms: i64,
}

/// The first and last lines of one execution's log, and how many it has in all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LogExcerpt {
    pub total: u64,
    pub head: Vec<ExcerptLine>,
    /// The last lines, after `head` and not overlapping it (empty when `head` has them all).
    pub tail: Vec<ExcerptLine>,
}

impl Store {
    /// The fleet `run_id` started with (the last start, for a re-attached run).
    pub fn run_fleet(&self, run_id: &str) -> Result<RunFleet, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM events WHERE run_id = ?1 AND type = 'run_started'
                 ORDER BY id DESC LIMIT 1",
                params![run_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(value) = json.and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
        else {
            return Ok(RunFleet::default());
        };
        let sidecars = value["sidecars"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(str::to_owned))
            .collect();
        let slots = value["slots"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), u32::try_from(v.as_u64()?).ok()?)))
            .collect();
        Ok(RunFleet { sidecars, slots })
    }

    /// Per execution of `run_id`: its first `head` and last `tail` log lines and its
    /// line count. Two index range scans per execution, so a run with gigabytes of logs
    /// costs what its number of executions does.
    pub fn log_excerpts(
        &self,
        run_id: &str,
        head: usize,
        tail: usize,
    ) -> Result<HashMap<String, LogExcerpt>, StoreError> {
        let mut out = HashMap::new();
        let sources: Vec<(i64, String)> = self
            .conn
            .prepare(
                "SELECT s.id, s.execution_id FROM log_sources s
                 JOIN log_runs r ON r.id = s.run WHERE r.run_id = ?1",
            )?
            .query_map(params![run_id], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        // Rows hold one or more lines (`log_rows`): `limit` rows hold at least `limit`
        // lines, of which the first (ASC) or last (DESC) `limit` are kept.
        let lines =
            |order: &str, limit: usize, src: i64| -> Result<Vec<(i64, ExcerptLine)>, StoreError> {
                let sql = format!(
                    "SELECT l.id, l.n, l.step, {STREAM_TEXT}, l.line, l.ts_ms FROM logs l
                 WHERE l.src = ?1 ORDER BY l.id {order} LIMIT ?2"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params![src, limit as i64])?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let (id, n, step, stream): (i64, i64, u32, String) =
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                    let (text, ts_ms): (String, i64) = (r.get(4)?, r.get(5)?);
                    let row = log_rows::split(id, n, &text).map(|(line_id, line)| {
                        let line = ExcerptLine {
                            step,
                            stream: stream.clone(),
                            line: line.to_owned(),
                            ts_ms,
                        };
                        (line_id, line)
                    });
                    if order == "DESC" {
                        out.extend(row.rev());
                    } else {
                        out.extend(row);
                    }
                    if out.len() >= limit {
                        break;
                    }
                }
                out.truncate(limit);
                Ok(out)
            };
        for (src, execution_id) in sources {
            let total: i64 = self.conn.query_row(
                "SELECT coalesce(sum(n), 0) FROM logs WHERE src = ?1",
                params![src],
                |r| r.get(0),
            )?;
            let first = lines("ASC", head, src)?;
            let last_head_id = first.last().map_or(i64::MIN, |(id, _)| *id);
            let mut last = lines("DESC", tail, src)?;
            last.retain(|(id, _)| *id > last_head_id);
            last.reverse();
            let excerpt = out.entry(execution_id).or_insert_with(LogExcerpt::default);
            excerpt.total += total as u64;
            excerpt.head.extend(first.into_iter().map(|(_, l)| l));
            excerpt.tail.extend(last.into_iter().map(|(_, l)| l));
        }
        Ok(out)
    }
}
