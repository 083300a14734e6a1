//! The simulated catalog's rows, shaped like SSISDB's `internal.*` tables behind the
//! `catalog.*` views (names and meanings per `ssisdb.md` §1–§2), and the package scripts.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use super::config::{PackageConfig, TaskConfig};
use crate::agent::Caller;
use crate::tds::values::Value;

pub type Time = DateTime<FixedOffset>;

/// `catalog.operations.status` / `catalog.executions.status`.
pub mod status {
    pub const CREATED: i32 = 1;
    pub const RUNNING: i32 = 2;
    pub const CANCELED: i32 = 3;
    pub const FAILED: i32 = 4;
    pub const PENDING: i32 = 5;
    pub const ENDED_UNEXPECTEDLY: i32 = 6;
    pub const SUCCEEDED: i32 = 7;
    pub const STOPPING: i32 = 8;

    pub fn is_terminal(s: i32) -> bool {
        matches!(s, 3 | 4 | 6 | 7 | 9)
    }
}

/// `catalog.operations.operation_type` values the simulation writes.
pub mod operation_type {
    pub const STARTUP: i16 = 1;
    pub const RETENTION_CLEANUP: i16 = 2;
    pub const DEPLOY_PROJECT: i16 = 101;
    pub const EXECUTION: i16 = 200;
    pub const STOP: i16 = 202;
}

/// `internal.operations`: every catalog operation, ids from one IDENTITY.
#[derive(Debug, Clone)]
pub struct Operation {
    pub id: i64,
    pub operation_type: i16,
    pub created_time: Time,
    pub object_type: i16,
    pub object_id: i64,
    pub object_name: String,
    pub status: i32,
    pub start_time: Option<Time>,
    pub end_time: Option<Time>,
    pub caller_name: String,
    pub process_id: Option<i32>,
    pub stopped_by_name: Option<String>,
    pub server_name: String,
    pub machine_name: String,
}

/// `internal.executions` (joined 1:1 with its operation in `catalog.executions`).
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: i64,
    pub folder: String,
    pub project: String,
    pub package: String,
    pub reference_id: Option<i64>,
    pub use32: bool,
    pub executed_as_name: String,
    /// Index into `CatalogState::packages`.
    pub package_index: usize,
    pub params: Vec<ParamValue>,
}

/// `catalog.execution_parameter_values`.
#[derive(Debug, Clone)]
pub struct ParamValue {
    pub id: i64,
    pub object_type: i16,
    pub name: String,
    /// SSIS type (`Int32`, `String`, …).
    pub data_type: String,
    pub value: Option<Value>,
    pub required: bool,
    pub value_set: bool,
}

/// Event detail of a message (`internal.event_messages`); `None` for server-side messages.
#[derive(Debug, Clone)]
pub struct EventDetail {
    pub package_name: String,
    pub event_name: String,
    pub source_name: String,
    pub subcomponent_name: Option<String>,
    pub package_path: String,
    pub execution_path: String,
    pub thread_id: i32,
    pub message_code: Option<i32>,
}

/// `internal.operation_messages` ⟕ `internal.event_messages`.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: i64,
    pub operation_id: i64,
    pub time: Time,
    pub message_type: i16,
    pub source_type: i16,
    pub text: String,
    pub event: Option<EventDetail>,
    /// Committed: a held message has its id but is not visible yet (out-of-order commit).
    pub visible: bool,
}

impl Message {
    /// `catalog.event_messages.message_source_name`: the view's CASE, which swaps the
    /// documented meanings of 10 and 20 (reproduced literally, `ssisdb.md` §2.4).
    pub fn source_name(&self) -> Option<String> {
        match self.source_type {
            10 => Some("ISServerExec".into()),
            20 => Some("Transact-SQL stored procedure".into()),
            _ => self.event.as_ref().map(|e| e.source_name.clone()),
        }
    }
}

/// `catalog.executable_statistics`: one complete row per finished task.
#[derive(Debug, Clone)]
pub struct ExecStat {
    pub id: i64,
    pub execution_id: i64,
    pub executable_id: i64,
    pub execution_path: String,
    pub start_time: Time,
    pub end_time: Time,
    pub duration_ms: i32,
    /// 0 success, 1 failure, 2 completion, 3 canceled.
    pub result: i16,
}

/// `internal.executables`: shared by the executions of one project version.
#[derive(Debug, Clone)]
pub struct Executable {
    pub id: i64,
    pub project: String,
    pub package_name: String,
    pub name: String,
    pub guid: String,
    pub package_path: String,
}

/// `catalog.execution_data_statistics`: rows sent on one data-flow path.
#[derive(Debug, Clone)]
pub struct DataStat {
    pub id: i64,
    pub execution_id: i64,
    pub package_name: String,
    pub task_name: String,
    pub path_id_string: String,
    pub path_name: String,
    pub source: String,
    pub destination: String,
    pub rows_sent: i64,
    pub created_time: Time,
    pub execution_path: String,
}

/// How a scripted task ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskResult {
    Success,
    Failure,
    /// ISServerExec dies: the execution ends unexpectedly (6).
    Crash,
}

/// A package as the simulation runs it.
#[derive(Debug, Clone)]
pub struct PackageDef {
    pub config: PackageConfig,
    pub tasks: Vec<TaskDef>,
}

#[derive(Debug, Clone)]
pub struct TaskDef {
    pub config: TaskConfig,
    pub path: String,
    /// `None`: runs until stopped.
    pub duration: Option<Duration>,
    pub result: TaskResult,
}

impl PackageDef {
    pub fn from_config(p: &PackageConfig) -> Self {
        let stem = p.name.trim_end_matches(".dtsx").to_string();
        let tasks = p
            .tasks
            .iter()
            .map(|t| TaskDef {
                config: t.clone(),
                path: t
                    .path
                    .clone()
                    .unwrap_or_else(|| format!("\\{stem}\\{}", t.name)),
                duration: crate::agent::steps::parse_duration(&t.duration)
                    .unwrap_or(Some(Duration::ZERO)),
                result: match t.result.as_str() {
                    "failure" => TaskResult::Failure,
                    "crash" => TaskResult::Crash,
                    _ => TaskResult::Success,
                },
            })
            .collect();
        Self {
            config: p.clone(),
            tasks,
        }
    }

    /// `\<package name without .dtsx>`: the package's own execution path.
    pub fn path(&self) -> String {
        format!("\\{}", self.config.name.trim_end_matches(".dtsx"))
    }

    pub fn matches(&self, folder: &str, project: &str, package: &str) -> bool {
        let eq = |a: &str, b: &str| a.trim_end().eq_ignore_ascii_case(b.trim_end());
        eq(&self.config.folder, folder)
            && eq(&self.config.project, project)
            && eq(&self.config.name, package)
    }
}

/// Row-level security of the operational views: the creator, `ssis_admin`,
/// `ssis_logreader` and `sysadmin` see an operation; for everyone else it is absent.
pub fn may_read(caller: &Caller, op: &Operation) -> bool {
    caller.is_sysadmin()
        || caller.ssis_admin
        || caller.ssis_logreader
        || op.caller_name.eq_ignore_ascii_case(&caller.login)
}

/// READ and MODIFY (set parameters, start, stop): the creator, `ssis_admin`, `sysadmin`.
pub fn may_modify(caller: &Caller, op: &Operation) -> bool {
    caller.is_sysadmin() || caller.ssis_admin || op.caller_name.eq_ignore_ascii_case(&caller.login)
}
