//! One tracked execution: turns what each `poll` shows about its job into events.
//! Pure (no I/O, no clock): the poller feeds observations and the current time.
//!
//! A run is the job's history rows after the start watermark, up to and including the first
//! outcome row (`step_id = 0`). Rows are consumed in `instance_id` order before anything
//! else in a tick, so a run that finished between two polls is still reported fully.
//!
//! Every event a history row yields carries the row's `instance_id` (`StepFinished` and
//! log lines: `sql_instance_id`), so the journal itself records how far history was read;
//! after a sidecar restart `restore` continues from there (see `follower`).
use std::collections::HashMap;

use agentfleet_common::proto::{self, event::Kind};
use chrono::NaiveDateTime;

use super::agent_time::{decode_date_time, decode_duration, local_to_utc_ms};
use super::rows::{Activity, Heartbeat, History, JobDef, Live};

/// What a tick produced, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Event {
        ts_ms: i64,
        kind: Kind,
    },
    /// `sql_instance_id`: the history row the line comes from (0: none).
    Log {
        step_id: u32,
        line: String,
        sql_instance_id: i64,
    },
}

/// The Agent's live view, if the poll could read it.
#[derive(Debug, Clone, Copy)]
pub enum LiveView<'a> {
    /// `xp_sqlagent_enum_jobs` answered; `None` = the job is idle/not listed.
    Enum(Option<&'a Live>),
    /// Not available: infer the current step from the step flow.
    Infer,
}

pub struct Observation<'a> {
    pub heartbeat: &'a Heartbeat,
    pub live: LiveView<'a>,
    pub activity: Option<&'a Activity>,
    /// This job's rows after the cursor, in `instance_id` order.
    pub rows: &'a [History],
    pub now_ms: i64,
}

/// How long after the handshake a silent Agent gets a log line saying so.
const HANDSHAKE_NOTE_MS: i64 = 15_000;
/// How long an activity row may say "ended" without the outcome row showing up (purged).
const MISSING_OUTCOME_MS: i64 = 30_000;

#[derive(Debug)]
pub struct Tracker {
    pub job: JobDef,
    pub agent_session_id: Option<i32>,
    pub server_started: Option<NaiveDateTime>,
    pub watermark: i32,
    pub cursor: i32,
    pub requested_not_before: Option<NaiveDateTime>,
    pub created_ms: i64,
    started: bool,
    open_step: Option<(i32, u32)>,
    attempts: HashMap<i32, u32>,
    /// Last step row consumed: (step_id, run_status, end in Unix ms).
    last_row: Option<(i32, i32, i64)>,
    handshake_noted: bool,
    outcome_missing_since: Option<i64>,
    finished: Option<proto::Outcome>,
    /// Set by a tick that consumed rows or emitted events (drives the adaptive interval).
    pub changed: bool,
}

impl Tracker {
    pub fn new(
        job: JobDef,
        agent_session_id: Option<i32>,
        server_started: Option<NaiveDateTime>,
        watermark: i32,
        requested_not_before: Option<NaiveDateTime>,
        created_ms: i64,
    ) -> Self {
        Self {
            job,
            agent_session_id,
            server_started,
            watermark,
            cursor: watermark,
            requested_not_before,
            created_ms,
            started: false,
            open_step: None,
            attempts: HashMap::new(),
            last_row: None,
            handshake_noted: false,
            outcome_missing_since: None,
            finished: None,
            changed: false,
        }
    }

    /// Continues after a sidecar restart from what the journal holds: history after
    /// `cursor`, and the step state its events describe (so a step already shown as
    /// started, or an attempt already counted, is not shown again).
    pub fn restore(&mut self, cursor: i32, r: &crate::backend::ResumeState) {
        self.cursor = cursor;
        self.started = r.started;
        self.open_step = r.open_step.map(|(s, a)| (s as i32, a));
        self.attempts = r.attempts.iter().map(|(s, a)| (*s as i32, *a)).collect();
        self.last_row = r.last_finished.map(|(step, status, end)| {
            let run_status = match proto::StepStatus::try_from(status) {
                Ok(proto::StepStatus::Succeeded) => 1,
                Ok(proto::StepStatus::Retry) => 2,
                Ok(proto::StepStatus::Canceled) => 3,
                _ => 0,
            };
            (step as i32, run_status, end)
        });
    }

    pub fn is_started(&self) -> bool {
        self.started
    }
    pub fn finished(&self) -> Option<proto::Outcome> {
        self.finished
    }
    pub fn open_step(&self) -> Option<(i32, u32)> {
        self.open_step
    }

    /// The R2 test: the activity row describes *this* request, not the previous run.
    pub fn accepts(&self, a: &Activity) -> bool {
        let Some(req) = a.run_requested_date else {
            return false;
        };
        let after = self.requested_not_before.is_none_or(|t| req >= t);
        after
            && (a.stop_execution_date.is_none()
                || a.job_history_id.is_some_and(|h| h > self.watermark))
    }

    /// Ends the execution with `outcome` (used for LOST and for an unconfirmed stop).
    pub fn finish(&mut self, outcome: proto::Outcome, message: String, now_ms: i64) -> Vec<Out> {
        if self.finished.is_some() {
            return Vec::new();
        }
        self.finished = Some(outcome);
        self.changed = true;
        vec![Out::Event {
            ts_ms: now_ms,
            kind: Kind::Finished(proto::Finished {
                outcome: outcome as i32,
                message,
            }),
        }]
    }

    fn step_name(&self, step_id: i32) -> String {
        self.job
            .step(step_id)
            .map(|s| s.name.clone())
            .unwrap_or_else(|| format!("step {step_id}"))
    }

    fn start_event(&mut self, ts_ms: i64, out: &mut Vec<Out>) {
        if !self.started {
            self.started = true;
            out.push(Out::Event {
                ts_ms,
                kind: Kind::Started(proto::Started {
                    step_count: self.job.steps.len() as u32,
                }),
            });
        }
    }

    pub fn observe(&mut self, obs: &Observation<'_>) -> Vec<Out> {
        let mut out = Vec::new();
        self.changed = false;
        if self.finished.is_some() {
            return out;
        }
        let offset = obs.heartbeat.offset();
        let cursor = self.cursor;
        for row in obs.rows.iter().filter(|r| r.instance_id > cursor) {
            self.cursor = row.instance_id;
            self.changed = true;
            let start_ms = decode_date_time(row.run_date, row.run_time)
                .map(|t| local_to_utc_ms(t, offset))
                .unwrap_or(obs.now_ms);
            let dur = decode_duration(row.run_duration);
            let end_ms = start_ms + dur.as_millis() as i64;
            self.start_event(start_ms, &mut out);
            let step = row.step_id.max(0) as u32;
            if row.step_id == 0 {
                if row.run_status == 4 {
                    push_lines(&mut out, 0, &row.message, row.instance_id);
                    continue;
                }
                let outcome = match row.run_status {
                    1 => proto::Outcome::Succeeded,
                    0 => proto::Outcome::Failed,
                    3 => proto::Outcome::Canceled,
                    _ => proto::Outcome::Lost,
                };
                if let Some((s, attempt)) = self.open_step.take() {
                    // The Agent wrote no row for a step it was running (e.g. a shutdown).
                    let status = if outcome == proto::Outcome::Canceled {
                        proto::StepStatus::Canceled
                    } else {
                        proto::StepStatus::Failed
                    };
                    out.push(Out::Event {
                        ts_ms: end_ms,
                        kind: Kind::StepFinished(proto::StepFinished {
                            step_id: s as u32,
                            step_name: self.step_name(s),
                            status: status as i32,
                            message: "SQL Server Agent recorded no result for this step".into(),
                            attempt,
                            sql_instance_id: row.instance_id.into(),
                            ..Default::default()
                        }),
                    });
                }
                push_lines(&mut out, 0, &row.message, row.instance_id);
                self.finished = Some(outcome);
                out.push(Out::Event {
                    ts_ms: end_ms,
                    kind: Kind::Finished(proto::Finished {
                        outcome: outcome as i32,
                        message: row.message.clone(),
                    }),
                });
                return out;
            }
            if row.run_status == 4 {
                // "In progress" rows are rare (replication agents): log only.
                push_lines(&mut out, step, &row.message, row.instance_id);
                continue;
            }
            let attempt = self.attempts.get(&row.step_id).copied().unwrap_or(0) + 1;
            if self.open_step != Some((row.step_id, attempt)) {
                // Never seen running (fast step, or a step that ran between two polls).
                out.push(Out::Event {
                    ts_ms: start_ms,
                    kind: Kind::StepStarted(proto::StepStarted {
                        step_id: step,
                        step_name: row.step_name.clone(),
                        attempt,
                    }),
                });
            }
            self.open_step = None;
            push_lines(&mut out, step, &row.message, row.instance_id);
            out.push(Out::Event {
                ts_ms: end_ms,
                kind: Kind::StepFinished(proto::StepFinished {
                    step_id: step,
                    step_name: row.step_name.clone(),
                    status: step_status(row.run_status) as i32,
                    message: row.message.clone(),
                    duration_ms: dur.as_millis() as u64,
                    attempt,
                    started_at_ms: start_ms,
                    sql_message_id: row.sql_message_id,
                    sql_severity: row.sql_severity,
                    sql_instance_id: row.instance_id.into(),
                }),
            });
            self.attempts.insert(row.step_id, attempt);
            self.last_row = Some((row.step_id, row.run_status, end_ms));
        }

        // No outcome row yet: is the run still followable?
        let hb = obs.heartbeat;
        if self.server_started.is_none() {
            self.server_started = hb.server_started;
        }
        if let (Some(mine), Some(now)) = (self.agent_session_id, hb.agent_session_id)
            && mine != now
        {
            out.extend(self.finish(
                    proto::Outcome::Lost,
                    format!("SQL Server Agent restarted (session {mine} -> {now}) while `{}` ran; its outcome is unknown", self.job.name),
                    obs.now_ms,
                ));
            return out;
        }
        if let (Some(mine), Some(now)) = (self.server_started, hb.server_started)
            && mine != now
        {
            out.extend(self.finish(
                proto::Outcome::Lost,
                format!(
                    "SQL Server restarted (at {now}) while `{}` ran; its outcome is unknown",
                    self.job.name
                ),
                obs.now_ms,
            ));
            return out;
        }
        if obs.activity.is_some_and(|a| !a.job_exists) {
            out.extend(self.finish(
                proto::Outcome::Lost,
                format!("job `{}` was deleted while it ran", self.job.name),
                obs.now_ms,
            ));
            return out;
        }

        let accepted = obs.activity.filter(|a| self.accepts(a));
        if let Some(a) = accepted {
            if let Some(t) = a.start_execution_date {
                self.start_event(local_to_utc_ms(t, offset), &mut out);
            }
            // Ended per activity, but the outcome row is not (or no longer) in history.
            if a.stop_execution_date.is_some() && a.job_history_id.is_some_and(|h| h > self.cursor)
            {
                let since = *self.outcome_missing_since.get_or_insert(obs.now_ms);
                if obs.now_ms - since > MISSING_OUTCOME_MS {
                    out.extend(self.finish(
                        proto::Outcome::Lost,
                        "the job ended, but its outcome row is missing from msdb history (purged?)".into(),
                        obs.now_ms,
                    ));
                    return out;
                }
            }
        }
        let running = accepted
            .is_some_and(|a| a.start_execution_date.is_some() && a.stop_execution_date.is_none());

        if self.open_step.is_none() {
            let next = match obs.live {
                LiveView::Enum(Some(l))
                    if l.running
                        && l.job_state == 1
                        && l.current_step > 0
                        && !self.live_is_stale(l.current_step, l.current_retry_attempt) =>
                {
                    Some(l.current_step)
                }
                LiveView::Enum(_) => None,
                LiveView::Infer if running => self.infer_next(obs.now_ms),
                LiveView::Infer => None,
            };
            if let Some(step_id) = next {
                self.start_event(obs.now_ms, &mut out);
                let attempt = self.attempts.get(&step_id).copied().unwrap_or(0) + 1;
                self.open_step = Some((step_id, attempt));
                out.push(Out::Event {
                    ts_ms: obs.now_ms,
                    kind: Kind::StepStarted(proto::StepStarted {
                        step_id: step_id.max(0) as u32,
                        step_name: self.step_name(step_id),
                        attempt,
                    }),
                });
            }
        }

        if !self.started
            && !self.handshake_noted
            && obs.now_ms - self.created_ms > HANDSHAKE_NOTE_MS
        {
            self.handshake_noted = true;
            out.push(Out::Log { step_id: 0, line: "SQL Server Agent accepted the start but has not begun the job yet (waiting for a worker thread?)".into(), sql_instance_id: 0 });
        }
        if !out.is_empty() {
            self.changed = true;
        }
        out
    }

    /// Whether the Agent's live view of `step` (attempt `retry_attempt + 1`) describes an
    /// attempt whose history row was already consumed: `xp_sqlagent_enum_jobs` may lag the
    /// history insert, so right after step k's row it can still show step k running. Such a
    /// snapshot must not reopen k (a later outcome row would close it as a step the Agent
    /// "recorded no result for"). Only a retry row (run_status 2) is followed by k again,
    /// and then only by an attempt beyond the ones already counted.
    fn live_is_stale(&self, step: i32, retry_attempt: i32) -> bool {
        match self.last_row {
            Some((last, status, _)) if last == step => {
                let done = self.attempts.get(&step).copied().unwrap_or(0);
                status != 2 || i64::from(retry_attempt) < i64::from(done)
            }
            _ => false,
        }
    }

    /// The step the Agent runs now, from the step flow, when its live view is unavailable:
    /// the start step first; then the success/failure action of the last finished step; a
    /// retried step again once its retry interval has passed.
    fn infer_next(&self, now_ms: i64) -> Option<i32> {
        let Some((step_id, status, end_ms)) = self.last_row else {
            return Some(self.job.start_step_id);
        };
        let def = self.job.step(step_id)?;
        let (action, target) = match status {
            1 => (def.on_success_action, def.on_success_step_id),
            0 => (def.on_fail_action, def.on_fail_step_id),
            2 => {
                let wait_ms = i64::from(def.retry_interval_min) * 60_000;
                return (now_ms >= end_ms + wait_ms).then_some(step_id);
            }
            _ => return None,
        };
        match action {
            3 => self.job.step(step_id + 1).map(|s| s.step_id),
            4 => self.job.step(target).map(|s| s.step_id),
            _ => None,
        }
    }
}

fn step_status(run_status: i32) -> proto::StepStatus {
    match run_status {
        1 => proto::StepStatus::Succeeded,
        2 => proto::StepStatus::Retry,
        3 => proto::StepStatus::Canceled,
        _ => proto::StepStatus::Failed,
    }
}

fn push_lines(out: &mut Vec<Out>, step_id: u32, message: &str, instance_id: i32) {
    for line in message.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        out.push(Out::Log {
            step_id,
            line: line.to_string(),
            sql_instance_id: instance_id.into(),
        });
    }
}

#[cfg(test)]
#[path = "tracker_tests.rs"]
mod tests;
