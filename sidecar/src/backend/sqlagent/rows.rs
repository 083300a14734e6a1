//! Typed views of the result sets documented in `queries.rs`.
//!
//! Columns are read by name and tolerantly: any integer width is accepted where an `int`
//! is documented, so a server version (or a stand-in) that sends `tinyint` instead of
//! `int` degrades nothing. A missing or mistyped column reads as NULL rather than panicking.
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use tiberius::{ColumnData, FromSql, Row, Uuid};

pub fn int(row: &Row, col: &str) -> Option<i64> {
    match row.get_column_data(col).ok()? {
        ColumnData::U8(v) => v.map(i64::from),
        ColumnData::I16(v) => v.map(i64::from),
        ColumnData::I32(v) => v.map(i64::from),
        ColumnData::I64(v) => *v,
        ColumnData::Bit(v) => v.map(i64::from),
        ColumnData::Numeric(v) => v.map(|n| n.int_part() as i64),
        ColumnData::String(Some(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn int32(row: &Row, col: &str) -> Option<i32> {
    int(row, col).and_then(|v| i32::try_from(v).ok())
}

pub fn string(row: &Row, col: &str) -> Option<String> {
    match row.get_column_data(col).ok()? {
        ColumnData::String(v) => v.as_ref().map(|s| s.to_string()),
        _ => None,
    }
}

pub fn uuid(row: &Row, col: &str) -> Option<Uuid> {
    match row.get_column_data(col).ok()? {
        ColumnData::Guid(v) => *v,
        ColumnData::String(Some(s)) => Uuid::parse_str(s.trim()).ok(),
        _ => None,
    }
}

/// `datetime` (or `datetime2`/`smalldatetime`) as the server's local wall-clock time.
pub fn datetime(row: &Row, col: &str) -> Option<NaiveDateTime> {
    let data = row.get_column_data(col).ok()?;
    NaiveDateTime::from_sql(data).ok().flatten()
}

pub fn datetimeoffset(row: &Row, col: &str) -> Option<DateTime<FixedOffset>> {
    let data = row.get_column_data(col).ok()?;
    DateTime::<FixedOffset>::from_sql(data).ok().flatten()
}

/// Result set 1 of `poll` (also the relevant part of `server_info`).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub agent_session_id: Option<i32>,
    pub server_now: Option<DateTime<FixedOffset>>,
    pub server_started: Option<NaiveDateTime>,
    pub agent_connected: Option<bool>,
    pub enum_jobs_error: Option<i32>,
}

impl Heartbeat {
    pub fn from_row(row: &Row) -> Self {
        Self {
            agent_session_id: int32(row, "agent_session_id"),
            server_now: datetimeoffset(row, "server_now"),
            server_started: datetime(row, "server_started"),
            agent_connected: int(row, "agent_connected").map(|v| v != 0),
            enum_jobs_error: int32(row, "enum_jobs_error"),
        }
    }

    pub fn offset(&self) -> FixedOffset {
        self.server_now
            .map(|t| *t.offset())
            .unwrap_or_else(super::agent_time::host_offset)
    }
}

/// Result set 2 of `poll`: the Agent's live view of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub job_id: Uuid,
    pub running: bool,
    pub current_step: i32,
    pub current_retry_attempt: i32,
    pub job_state: i32,
    pub request_source: i32,
    pub request_source_id: Option<String>,
}

impl Live {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            job_id: uuid(row, "job_id")?,
            running: int(row, "running").unwrap_or(0) != 0,
            current_step: int32(row, "current_step").unwrap_or(0),
            current_retry_attempt: int32(row, "current_retry_attempt").unwrap_or(0),
            job_state: int32(row, "job_state").unwrap_or(4),
            request_source: int32(row, "request_source").unwrap_or(0),
            request_source_id: string(row, "request_source_id"),
        })
    }
}

/// Result set 3 of `poll`: a tracked job's current-session activity row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Activity {
    pub job_exists: bool,
    pub run_requested_date: Option<NaiveDateTime>,
    pub run_requested_source: Option<String>,
    pub queued_date: Option<NaiveDateTime>,
    pub start_execution_date: Option<NaiveDateTime>,
    pub last_executed_step_id: Option<i32>,
    pub stop_execution_date: Option<NaiveDateTime>,
    pub job_history_id: Option<i32>,
}

impl Activity {
    pub fn from_row(row: &Row) -> Option<(Uuid, Self)> {
        Some((
            uuid(row, "job_id")?,
            Self {
                job_exists: int(row, "job_exists").unwrap_or(1) != 0,
                run_requested_date: datetime(row, "run_requested_date"),
                run_requested_source: string(row, "run_requested_source"),
                queued_date: datetime(row, "queued_date"),
                start_execution_date: datetime(row, "start_execution_date"),
                last_executed_step_id: int32(row, "last_executed_step_id"),
                stop_execution_date: datetime(row, "stop_execution_date"),
                job_history_id: int32(row, "job_history_id"),
            },
        ))
    }
}

/// Result set 4 of `poll`: one `sysjobhistory` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub instance_id: i32,
    pub job_id: Uuid,
    pub step_id: i32,
    pub step_name: String,
    pub run_status: i32,
    pub run_date: i32,
    pub run_time: i32,
    pub run_duration: i32,
    pub retries_attempted: i32,
    pub sql_message_id: i32,
    pub sql_severity: i32,
    pub message: String,
}

impl History {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            instance_id: int32(row, "instance_id")?,
            job_id: uuid(row, "job_id")?,
            step_id: int32(row, "step_id")?,
            step_name: string(row, "step_name").unwrap_or_default(),
            run_status: int32(row, "run_status").unwrap_or(5),
            run_date: int32(row, "run_date").unwrap_or(0),
            run_time: int32(row, "run_time").unwrap_or(0),
            run_duration: int32(row, "run_duration").unwrap_or(0),
            retries_attempted: int32(row, "retries_attempted").unwrap_or(0),
            sql_message_id: int32(row, "sql_message_id").unwrap_or(0),
            sql_severity: int32(row, "sql_severity").unwrap_or(0),
            message: string(row, "message").unwrap_or_default(),
        })
    }
}

/// A job step definition (`list_jobs` / `resolve_job` result set 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepDef {
    pub step_id: i32,
    pub name: String,
    pub subsystem: String,
    pub on_success_action: i32,
    pub on_success_step_id: i32,
    pub on_fail_action: i32,
    pub on_fail_step_id: i32,
    pub retry_attempts: i32,
    pub retry_interval_min: i32,
    pub output_file_name: Option<String>,
    pub flags: i32,
    /// `resolve_job` only (empty from `list_jobs`).
    pub command: String,
}

impl StepDef {
    pub fn from_row(row: &Row) -> Option<(Uuid, Self)> {
        Some((
            uuid(row, "job_id")?,
            Self {
                step_id: int32(row, "step_id")?,
                name: string(row, "step_name").unwrap_or_default(),
                subsystem: string(row, "subsystem").unwrap_or_default(),
                on_success_action: int32(row, "on_success_action").unwrap_or(1),
                on_success_step_id: int32(row, "on_success_step_id").unwrap_or(0),
                on_fail_action: int32(row, "on_fail_action").unwrap_or(2),
                on_fail_step_id: int32(row, "on_fail_step_id").unwrap_or(0),
                retry_attempts: int32(row, "retry_attempts").unwrap_or(0),
                retry_interval_min: int32(row, "retry_interval").unwrap_or(0),
                output_file_name: string(row, "output_file_name").filter(|s| !s.trim().is_empty()),
                flags: int32(row, "flags").unwrap_or(0),
                command: string(row, "command").unwrap_or_default(),
            },
        ))
    }
}

/// A job (`list_jobs` / `resolve_job` result set 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobDef {
    pub job_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub description: String,
    pub category: String,
    pub start_step_id: i32,
    /// 1 local, 2 multiserver, 0 no target server.
    pub job_type: i32,
    pub steps: Vec<StepDef>,
}

impl JobDef {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            job_id: uuid(row, "job_id")?,
            name: string(row, "name")?,
            enabled: int(row, "enabled").unwrap_or(1) != 0,
            description: string(row, "description").unwrap_or_default(),
            category: string(row, "category").unwrap_or_default(),
            start_step_id: int32(row, "start_step_id").unwrap_or(1),
            job_type: int32(row, "job_type").unwrap_or(1),
            steps: Vec::new(),
        })
    }

    pub fn step(&self, step_id: i32) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.step_id == step_id)
    }
}

/// Jobs of result set 1 with their steps from result set 2 attached.
pub fn jobs_with_steps(jobs: &[Row], steps: &[Row]) -> Vec<JobDef> {
    let mut out: Vec<JobDef> = jobs.iter().filter_map(JobDef::from_row).collect();
    for (job_id, step) in steps.iter().filter_map(StepDef::from_row) {
        if let Some(job) = out.iter_mut().find(|j| j.job_id == job_id) {
            job.steps.push(step);
        }
    }
    for job in &mut out {
        job.steps.sort_by_key(|s| s.step_id);
    }
    out
}

/// The one-row result of `start_job` / `stop_job`.
#[derive(Debug, Clone, Default)]
pub struct ProcResult {
    pub rc: Option<i32>,
    pub err_number: Option<i32>,
    pub err_message: Option<String>,
    pub agent_session_id: Option<i32>,
    pub history_watermark: Option<i32>,
    pub requested_not_before: Option<NaiveDateTime>,
}

impl ProcResult {
    pub fn from_row(row: &Row) -> Self {
        Self {
            rc: int32(row, "rc"),
            err_number: int32(row, "err_number"),
            err_message: string(row, "err_message"),
            agent_session_id: int32(row, "agent_session_id"),
            history_watermark: int32(row, "history_watermark"),
            requested_not_before: datetime(row, "requested_not_before"),
        }
    }
}
