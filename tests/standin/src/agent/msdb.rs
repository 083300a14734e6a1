//! The simulated msdb tables, shaped like the real ones (names and meanings per the msdb source).

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::clock;

/// `syssessions`: one row per Agent start.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub session_id: i32,
    pub agent_start_date: NaiveDateTime,
}

/// `sysjobactivity`: one row per (Agent session, job), recycled for every run in that session.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Activity {
    pub session_id: i32,
    pub job_id: Uuid,
    pub run_requested_date: Option<NaiveDateTime>,
    /// The numeric request source stored as text ('4' = user).
    pub run_requested_source: Option<String>,
    pub queued_date: Option<NaiveDateTime>,
    pub start_execution_date: Option<NaiveDateTime>,
    pub last_executed_step_id: Option<i32>,
    pub last_executed_step_date: Option<NaiveDateTime>,
    pub stop_execution_date: Option<NaiveDateTime>,
    pub job_history_id: Option<i32>,
    pub next_scheduled_run_date: Option<NaiveDateTime>,
}

/// `sysjobhistory.run_status` codes.
pub mod run_status {
    pub const FAILED: i32 = 0;
    pub const SUCCEEDED: i32 = 1;
    pub const RETRY: i32 = 2;
    pub const CANCELED: i32 = 3;
}

/// `sysjobhistory`: step rows (step_id >= 1) and outcome rows (step_id = 0).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub instance_id: i32,
    pub job_id: Uuid,
    pub step_id: i32,
    pub step_name: String,
    pub sql_message_id: i32,
    pub sql_severity: i32,
    pub message: String,
    pub run_status: i32,
    pub run_date: i32,
    pub run_time: i32,
    pub run_duration: i32,
    pub retries_attempted: i32,
    pub server: String,
}

/// `sysjobsteps.last_run_*` and `sysjobservers.last_run_*` bookkeeping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastRun {
    pub outcome: i32,
    pub duration: i32,
    pub retries: i32,
    pub date: i32,
    pub time: i32,
}

/// The mutable part of msdb (job definitions live in [`super::steps::JobDef`]).
#[derive(Debug, Default)]
pub struct Msdb {
    pub sessions: Vec<Session>,
    pub activity: Vec<Activity>,
    pub history: Vec<HistoryRow>,
    next_instance_id: i32,
    pub step_last_run: std::collections::HashMap<(Uuid, i32), LastRun>,
    pub job_last_run: std::collections::HashMap<Uuid, LastRun>,
}

/// What a new history row carries besides the ids.
pub struct NewHistory<'a> {
    pub job_id: Uuid,
    pub step_id: i32,
    pub step_name: &'a str,
    pub run_status: i32,
    pub started: NaiveDateTime,
    pub elapsed_secs: u64,
    pub retries_attempted: i32,
    pub sql_message_id: i32,
    pub sql_severity: i32,
    pub message: String,
}

impl Msdb {
    /// `MAX(session_id)` of `syssessions`.
    pub fn current_session(&self) -> Option<i32> {
        self.sessions.iter().map(|s| s.session_id).max()
    }

    /// `MAX(session_id)` of `sysjobactivity` (the fallback without SELECT on syssessions).
    pub fn max_activity_session(&self) -> Option<i32> {
        self.activity.iter().map(|a| a.session_id).max()
    }

    /// A new Agent session inserts one empty activity row per job.
    pub fn begin_session(&mut self, now: NaiveDateTime, jobs: &[Uuid]) -> i32 {
        let id = self.current_session().unwrap_or(0) + 1;
        self.sessions.push(Session {
            session_id: id,
            agent_start_date: now,
        });
        for job_id in jobs {
            self.activity.push(Activity {
                session_id: id,
                job_id: *job_id,
                ..Activity::default()
            });
        }
        id
    }

    pub fn activity_mut(&mut self, session_id: i32, job_id: Uuid) -> &mut Activity {
        let pos = self
            .activity
            .iter()
            .position(|a| a.session_id == session_id && a.job_id == job_id);
        match pos {
            Some(i) => &mut self.activity[i],
            None => {
                self.activity.push(Activity {
                    session_id,
                    job_id,
                    ..Activity::default()
                });
                self.activity.last_mut().expect("just pushed")
            }
        }
    }

    pub fn activity(&self, session_id: i32, job_id: Uuid) -> Option<&Activity> {
        self.activity
            .iter()
            .find(|a| a.session_id == session_id && a.job_id == job_id)
    }

    /// `ISNULL(MAX(instance_id), 0)` for one job.
    pub fn history_watermark(&self, job_id: Uuid) -> i32 {
        self.history
            .iter()
            .filter(|h| h.job_id == job_id)
            .map(|h| h.instance_id)
            .max()
            .unwrap_or(0)
    }

    /// Inserts a history row (IDENTITY instance_id) and returns its id.
    pub fn insert_history(&mut self, h: NewHistory<'_>, server: &str) -> i32 {
        self.next_instance_id += 1;
        let id = self.next_instance_id;
        self.history.push(HistoryRow {
            instance_id: id,
            job_id: h.job_id,
            step_id: h.step_id,
            step_name: h.step_name.to_string(),
            sql_message_id: h.sql_message_id,
            sql_severity: h.sql_severity,
            message: h.message.chars().take(4000).collect(),
            run_status: h.run_status,
            run_date: clock::run_date(h.started),
            run_time: clock::run_time(h.started),
            run_duration: clock::run_duration(h.elapsed_secs),
            retries_attempted: h.retries_attempted,
            server: server.to_uppercase(),
        });
        id
    }

    /// The row limiter the Agent runs after every outcome row: oldest rows of the finishing job
    /// over the per-job cap, then oldest rows overall over the total cap.
    pub fn limit_history(&mut self, job_id: Uuid, per_job: usize, total: usize) {
        let per_job = per_job.min(total);
        let count = self.history.iter().filter(|h| h.job_id == job_id).count();
        if count > per_job {
            let mut excess = count - per_job;
            self.history.retain(|h| {
                if excess > 0 && h.job_id == job_id {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        if self.history.len() > total {
            let excess = self.history.len() - total;
            self.history.drain(..excess);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(job_id: Uuid, step_id: i32) -> NewHistory<'static> {
        NewHistory {
            job_id,
            step_id,
            step_name: "s",
            run_status: run_status::SUCCEEDED,
            started: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            elapsed_secs: 0,
            retries_attempted: 0,
            sql_message_id: 0,
            sql_severity: 0,
            message: String::new(),
        }
    }

    #[test]
    fn sessions_seed_activity_and_history_is_limited() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let mut m = Msdb::default();
        let now = chrono::DateTime::UNIX_EPOCH.naive_utc();
        assert_eq!(m.begin_session(now, &[a, b]), 1);
        assert_eq!(m.begin_session(now, &[a, b]), 2);
        assert_eq!(m.activity.len(), 4);
        for i in 0..5 {
            m.insert_history(row(a, i), "srv");
        }
        m.insert_history(row(b, 1), "srv");
        assert_eq!(m.history_watermark(a), 5);
        m.limit_history(a, 3, 10);
        assert_eq!(m.history.iter().filter(|h| h.job_id == a).count(), 3);
        assert_eq!(m.history[0].instance_id, 3);
        m.limit_history(b, 3, 2);
        assert_eq!(m.history.len(), 2);
        assert_eq!(m.history_watermark(a), 5);
        assert_eq!(m.history[0].server, "SRV");
    }
}
