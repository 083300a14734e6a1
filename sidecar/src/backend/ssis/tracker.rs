//! One followed catalog execution: turns what each `ssis_poll` shows of it into events.
//! Pure (no I/O, no clock): the poller feeds rows and the server's time of the poll.
//!
//! Exactly once, in spite of out-of-order ids: message, statistics and data-flow ids come
//! from IDENTITY columns, and a row becomes visible at commit, so id N can appear after
//! N+1 (ISServerExec logs from several threads). Each row is shown the first time it is
//! seen and remembered by id; the watermark sent with the next poll only moves past rows
//! that were seen *and* are older than `SETTLE_MS` (by the server's clock), so the poll
//! keeps re-reading the unsettled tail and a late id is still found there. After a
//! restart the journal says which ids were shown (`restore`), and the poll starts over at
//! 0, so nothing is lost or shown twice.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use agentfleet_common::proto::{self, event::Kind};

use super::rows::{DataStat, ExecStatus, Message, Stat};

/// A row older than this (server clock) is taken to have every lower id committed.
pub const SETTLE_MS: i64 = 5_000;
/// After the terminal status, how long late messages are still looked for.
pub const FINAL_SWEEP_MS: i64 = 6_000;
/// Polls in a row without the execution's row before it counts as vanished (retention,
/// lost permission): an invisible execution is indistinguishable from a deleted one.
const MISSING_POLLS: u32 = 3;

/// `catalog.event_messages.message_type` values the tracker reads.
pub mod message_type {
    pub const PRE_EXECUTE: i32 = 30;
    pub const INFORMATION: i32 = 70;
    pub const WARNING: i32 = 110;
    pub const ERROR: i32 = 120;
}

/// Which catalog execution, where.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatalogIdent {
    pub execution_id: i64,
    pub server: String,
    pub folder: String,
    pub project: String,
    pub package: String,
}

/// What a tick produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Event { ts_ms: i64, kind: Kind },
    Log { ts_ms: i64, line: proto::LogLine },
}

/// One poll's rows for this execution (`None` status: no row, see `MISSING_POLLS`).
#[derive(Debug, Default)]
pub struct Observation<'a> {
    pub status: Option<&'a ExecStatus>,
    /// The server's `SYSDATETIMEOFFSET()` at the poll, Unix ms.
    pub polled_at_ms: i64,
    pub messages: &'a [Message],
    pub stats: &'a [Stat],
    pub data: &'a [DataStat],
}

/// What the journal already holds for one catalog execution (after a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogResume {
    pub ident: CatalogIdent,
    pub status: i32,
    pub message_ids: BTreeSet<i64>,
    pub started_paths: BTreeSet<String>,
    pub finished_paths: BTreeSet<String>,
    /// The last total shown per (path, data-flow path).
    pub rows: BTreeMap<(String, String), u64>,
}

/// A watermark over ids that may become visible out of order (see the module docs).
#[derive(Debug, Default, Clone)]
struct Watermark {
    mark: i64,
    /// Ids above `mark` already shown.
    seen: BTreeSet<i64>,
}

impl Watermark {
    fn is_new(&self, id: i64) -> bool {
        id > self.mark && !self.seen.contains(&id)
    }

    /// Moves past the rows (id, time) of a poll, in id order, while each was seen and is
    /// settled; stops at the first that is not.
    fn advance(&mut self, rows: impl Iterator<Item = (i64, i64)>, polled_at_ms: i64) {
        let mut ids: Vec<(i64, i64)> = rows.filter(|(id, _)| *id > self.mark).collect();
        ids.sort_unstable();
        for (id, t) in ids {
            if self.seen.contains(&id) && t <= polled_at_ms - SETTLE_MS {
                self.mark = id;
            } else {
                break;
            }
        }
        let mark = self.mark;
        self.seen.retain(|id| *id > mark);
    }
}

#[derive(Debug)]
pub struct CatalogTracker {
    pub step_id: u32,
    pub ident: CatalogIdent,
    status: Option<i32>,
    messages: Watermark,
    stats: Watermark,
    data: Watermark,
    started_paths: BTreeSet<String>,
    /// Name and start time of each sub-step seen starting in this process (a restored one
    /// has its path only).
    started_at: HashMap<String, (String, i64)>,
    finished_paths: BTreeSet<String>,
    /// The last error message per execution path (the message of a failed sub-step).
    last_error: HashMap<String, String>,
    rows_total: BTreeMap<(String, String), u64>,
    rows_shown: BTreeMap<(String, String), u64>,
    missing_polls: u32,
    /// The execution's `start_time` and `end_time` (Unix ms), as last polled.
    span: (Option<i64>, Option<i64>),
    terminal_at_ms: Option<i64>,
    vanished: bool,
    done: bool,
}

impl CatalogTracker {
    pub fn new(step_id: u32, ident: CatalogIdent) -> Self {
        Self {
            step_id,
            ident,
            status: None,
            messages: Watermark::default(),
            stats: Watermark::default(),
            data: Watermark::default(),
            started_paths: BTreeSet::new(),
            started_at: HashMap::new(),
            finished_paths: BTreeSet::new(),
            last_error: HashMap::new(),
            rows_total: BTreeMap::new(),
            rows_shown: BTreeMap::new(),
            missing_polls: 0,
            span: (None, None),
            terminal_at_ms: None,
            vanished: false,
            done: false,
        }
    }

    /// Continues from what the journal holds: shown ids are not shown again, and the
    /// poll re-reads from 0 (watermarks are not journaled; re-reading is only work).
    pub fn restore(&mut self, r: &CatalogResume) {
        self.status = Some(r.status).filter(|s| *s != 0);
        self.messages.seen = r.message_ids.clone();
        self.started_paths = r.started_paths.clone();
        self.finished_paths = r.finished_paths.clone();
        self.rows_shown = r.rows.clone();
    }

    /// The watermarks for the next poll: (messages, statistics, data statistics).
    pub fn watermarks(&self) -> (i64, i64, i64) {
        (self.messages.mark, self.stats.mark, self.data.mark)
    }

    pub fn status(&self) -> Option<i32> {
        self.status
    }

    /// The execution's start and end (Unix ms), when the catalog has recorded them.
    pub fn span(&self) -> (Option<i64>, Option<i64>) {
        self.span
    }

    /// True once the execution ended and its late messages were swept (or it vanished).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The outcome of an execution that is done: from its terminal status.
    pub fn outcome(&self) -> Option<(proto::Outcome, String)> {
        if !self.done {
            return None;
        }
        let what = format!(
            "catalog execution {} ({}\\{}\\{})",
            self.ident.execution_id, self.ident.folder, self.ident.project, self.ident.package
        );
        Some(match (self.vanished, self.status) {
            (true, s) => (
                proto::Outcome::Lost,
                format!(
                    "{what} is no longer visible in SSISDB (retention cleanup, or the login lost READ on it); last status {}",
                    s.map(status_name).unwrap_or("unknown")
                ),
            ),
            (false, Some(7)) => (proto::Outcome::Succeeded, format!("{what} succeeded")),
            (false, Some(9)) => (proto::Outcome::Succeeded, format!("{what} completed")),
            (false, Some(3)) => (proto::Outcome::Canceled, format!("{what} was canceled")),
            (false, Some(6)) => (
                proto::Outcome::Failed,
                format!("{what} ended unexpectedly (the ISServerExec process died)"),
            ),
            (false, s) => (
                proto::Outcome::Failed,
                format!(
                    "{what} failed (status {})",
                    s.map(status_name).unwrap_or("unknown")
                ),
            ),
        })
    }

    /// The CatalogExecution event for a just-found execution (before its first poll).
    pub fn discovered(&mut self, status: i32, now_ms: i64) -> Vec<Out> {
        let mut out = Vec::new();
        self.set_status(status, now_ms, &mut out);
        out
    }

    fn set_status(&mut self, status: i32, ts_ms: i64, out: &mut Vec<Out>) {
        if self.status == Some(status) {
            return;
        }
        self.status = Some(status);
        out.push(Out::Event {
            ts_ms,
            kind: Kind::CatalogExecution(proto::CatalogExecution {
                step_id: self.step_id,
                catalog_execution_id: self.ident.execution_id,
                server: self.ident.server.clone(),
                folder: self.ident.folder.clone(),
                project: self.ident.project.clone(),
                package: self.ident.package.clone(),
                status,
            }),
        });
    }

    pub fn observe(&mut self, obs: &Observation<'_>) -> Vec<Out> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        let now = obs.polled_at_ms;
        let Some(st) = obs.status else {
            self.missing_polls += 1;
            if self.missing_polls >= MISSING_POLLS {
                self.vanished = true;
                self.done = true;
            }
            return out;
        };
        self.missing_polls = 0;
        self.span = (st.start_ms.or(self.span.0), st.end_ms.or(self.span.1));
        // Found: say which execution before anything it logged (a journal read after a
        // restart attributes the messages that follow to it).
        if self.status.is_none() {
            self.set_status(st.status, now, &mut out);
        }
        let mut fresh = false;
        // Messages first: they describe what happened before the status they led to.
        for m in sorted(obs.messages, |m| m.id) {
            if !self.messages.is_new(m.id) || m.is_half_written() {
                continue;
            }
            self.messages.seen.insert(m.id);
            fresh = true;
            self.message(m, &mut out);
        }
        // A half-written message must not let the watermark pass it.
        let settled_msgs = obs.messages.iter().map(|m| {
            (
                m.id,
                if m.is_half_written() {
                    i64::MAX
                } else {
                    m.time_ms
                },
            )
        });
        self.messages.advance(settled_msgs, now);

        // Data-flow rows: one running total per (task path, data-flow path). Before the
        // tasks' ends read in the same poll: the rows were moved before the task ended, and
        // the coordinator cuts a task's span at its end.
        let mut changed: BTreeMap<(String, String), &DataStat> = BTreeMap::new();
        for d in sorted(obs.data, |d| d.id) {
            if !self.data.is_new(d.id) {
                continue;
            }
            self.data.seen.insert(d.id);
            fresh = true;
            let key = (d.path.clone(), d.data_flow_path.clone());
            *self.rows_total.entry(key.clone()).or_default() += d.rows.max(0) as u64;
            changed.insert(key, d);
        }
        for (key, d) in changed {
            let total = self.rows_total[&key];
            // Only ever a larger running total (a re-read after a restart rebuilds it).
            if self.rows_shown.get(&key).is_some_and(|s| *s >= total) {
                continue;
            }
            self.rows_shown.insert(key.clone(), total);
            out.push(Out::Event {
                ts_ms: d.time_ms,
                kind: Kind::DataFlowRows(proto::DataFlowRows {
                    step_id: self.step_id,
                    path: key.0,
                    data_flow_path: key.1,
                    source_component: d.source.clone(),
                    destination_component: d.destination.clone(),
                    rows: total,
                }),
            });
        }
        self.data
            .advance(obs.data.iter().map(|d| (d.id, d.time_ms)), now);

        for s in sorted(obs.stats, |s| s.id) {
            if !self.stats.is_new(s.id) {
                continue;
            }
            self.stats.seen.insert(s.id);
            fresh = true;
            if self.finished_paths.insert(s.path.clone()) {
                out.push(Out::Event {
                    ts_ms: s.end_ms.unwrap_or(now),
                    kind: Kind::SubStepFinished(proto::SubStepFinished {
                        step_id: self.step_id,
                        path: s.path.clone(),
                        name: s.name(),
                        status: sub_step_status(s.result) as i32,
                        started_at_ms: s.start_ms.unwrap_or(now),
                        duration_ms: s.duration_ms.max(0) as u64,
                        message: self.last_error.get(&s.path).cloned().unwrap_or_default(),
                    }),
                });
            }
        }
        self.stats.advance(
            obs.stats.iter().map(|s| (s.id, s.end_ms.unwrap_or(now))),
            now,
        );

        let ts = st.end_ms.filter(|_| is_terminal(st.status)).unwrap_or(now);
        self.set_status(st.status, ts, &mut out);
        if is_terminal(st.status) {
            let since = *self.terminal_at_ms.get_or_insert(now);
            if now - since >= FINAL_SWEEP_MS && !fresh {
                self.done = true;
                self.close_open_sub_steps(st, ts, &mut out);
            }
        }
        out
    }

    /// Ends, with the execution, every sub-step that started but has no statistics row:
    /// the catalog writes none for some executables (the package itself, in the stand-in;
    /// what a real catalog writes for the package is unconfirmed), and an execution that
    /// ended cannot still be running one.
    fn close_open_sub_steps(&mut self, st: &ExecStatus, end_ms: i64, out: &mut Vec<Out>) {
        let status = match st.status {
            3 => proto::StepStatus::Canceled,
            7 | 9 => proto::StepStatus::Succeeded,
            _ => proto::StepStatus::Failed,
        };
        let open: Vec<String> = self
            .started_paths
            .difference(&self.finished_paths)
            .cloned()
            .collect();
        for path in open {
            self.finished_paths.insert(path.clone());
            let (name, started) = self
                .started_at
                .get(&path)
                .cloned()
                .unwrap_or_else(|| (last_segment(&path), self.span.0.unwrap_or(end_ms)));
            out.push(Out::Event {
                ts_ms: end_ms,
                kind: Kind::SubStepFinished(proto::SubStepFinished {
                    step_id: self.step_id,
                    name,
                    status: status as i32,
                    started_at_ms: started,
                    duration_ms: end_ms.saturating_sub(started).max(0) as u64,
                    message: self.last_error.get(&path).cloned().unwrap_or_else(|| {
                        format!(
                            "ended with the catalog execution ({}); the catalog recorded no end of its own",
                            status_name(st.status)
                        )
                    }),
                    path,
                }),
            });
        }
    }

    fn message(&mut self, m: &Message, out: &mut Vec<Out>) {
        let path = m.execution_path.clone().unwrap_or_default();
        match m.message_type {
            message_type::PRE_EXECUTE
                if !path.is_empty()
                    && !self.finished_paths.contains(&path)
                    && self.started_paths.insert(path.clone()) =>
            {
                let name = m.source_name.clone().unwrap_or_else(|| last_segment(&path));
                self.started_at
                    .insert(path.clone(), (name.clone(), m.time_ms));
                out.push(Out::Event {
                    ts_ms: m.time_ms,
                    kind: Kind::SubStepStarted(proto::SubStepStarted {
                        step_id: self.step_id,
                        name,
                        path,
                        started_at_ms: m.time_ms,
                    }),
                });
            }
            message_type::ERROR | message_type::WARNING | message_type::INFORMATION => {
                if m.message_type == message_type::ERROR && !path.is_empty() {
                    self.last_error.insert(path.clone(), m.message.clone());
                }
                out.push(Out::Log {
                    ts_ms: m.time_ms,
                    line: proto::LogLine {
                        step_id: self.step_id,
                        stream: proto::LogStream::Catalog as i32,
                        line: m.message.clone(),
                        catalog_message_id: m.id,
                        catalog_message_type: m.message_type,
                        source_path: path,
                        ..Default::default()
                    },
                });
            }
            _ => {}
        }
    }
}

fn sorted<T>(rows: &[T], key: impl Fn(&T) -> i64) -> Vec<&T> {
    let mut v: Vec<&T> = rows.iter().collect();
    v.sort_by_key(|r| key(r));
    v
}

fn last_segment(path: &str) -> String {
    let p = path.rsplit('\\').next().unwrap_or(path);
    // A loop iteration's `Task[3]` is named `Task`.
    p.split('[').next().unwrap_or(p).to_string()
}

/// `{3,4,6,7,9}`: the execution ended.
pub fn is_terminal(status: i32) -> bool {
    matches!(status, 3 | 4 | 6 | 7 | 9)
}

pub fn status_name(status: i32) -> &'static str {
    match status {
        1 => "created",
        2 => "running",
        3 => "canceled",
        4 => "failed",
        5 => "pending",
        6 => "ended unexpectedly",
        7 => "succeeded",
        8 => "stopping",
        9 => "completed",
        _ => "unknown",
    }
}

/// `executable_statistics.execution_result` (DTSExecResult).
fn sub_step_status(result: i32) -> proto::StepStatus {
    match result {
        0 | 2 => proto::StepStatus::Succeeded,
        3 => proto::StepStatus::Canceled,
        _ => proto::StepStatus::Failed,
    }
}

impl Stat {
    fn name(&self) -> String {
        self.name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| last_segment(&self.path))
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
