//! Run events of SSIS catalog (SSISDB) progress: the catalog execution that runs a step's
//! package, the package's tasks and containers as *sub-steps* of that step, and the rows
//! its data flows moved. They are plain structs (not fields of a `RunEventKind` variant)
//! so that `show` and `report` can read them back from the store's `events` table, where
//! each is kept as its `--json` object.
//!
//! The sidecar's events carry only the step id; the watcher adds the step's attempt (the
//! one its last `step_started` named), so a sub-step belongs to one step attempt.
use serde::{Deserialize, Serialize};

use super::At;

/// `catalog_execution`: the sidecar found the catalog execution of a step, or its
/// catalog status changed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CatalogExecution {
    #[serde(flatten)]
    pub at: At,
    pub step: u32,
    pub step_attempt: u32,
    /// SSISDB `catalog.executions.execution_id` on `server`.
    pub catalog_execution_id: i64,
    pub server: String,
    pub folder: String,
    pub project: String,
    pub package: String,
    /// created | running | canceled | failed | pending | ended_unexpectedly | succeeded |
    /// stopping | completed (see [`catalog_status_name`]).
    pub status: String,
}

/// `sub_step_started`: a task or container of the step's package started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubStepStarted {
    #[serde(flatten)]
    pub at: At,
    pub step: u32,
    pub step_attempt: u32,
    /// Identifies the sub-step within the step (an SSIS execution path such as
    /// `\Load Sales\Copy rows`; a loop's iterations differ by a `[n]` suffix).
    pub path: String,
    pub name: String,
    /// Unix ms UTC, the catalog's clock.
    pub started_at_ms: i64,
}

/// `sub_step_finished`: a task or container ended. Not every one has a start event: a
/// catalog at a low logging level reports a task only once it finished.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubStepFinished {
    #[serde(flatten)]
    pub at: At,
    pub step: u32,
    pub step_attempt: u32,
    pub path: String,
    pub name: String,
    /// succeeded | failed | canceled | timed_out (as for steps).
    pub status: String,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    pub message: String,
}

/// `data_flow_rows`: rows that went through one data-flow path of a task so far; the
/// latest replaces earlier ones for the same (`path`, `data_flow_path`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataFlowRows {
    #[serde(flatten)]
    pub at: At,
    pub step: u32,
    pub step_attempt: u32,
    /// The data-flow task's execution path.
    pub path: String,
    /// The path's name in the data flow (e.g. `OLE DB Source Output`).
    pub data_flow_path: String,
    pub source_component: String,
    pub destination_component: String,
    pub rows: u64,
}

/// The name of a `catalog.executions.status` code.
pub fn catalog_status_name(code: i32) -> &'static str {
    match code {
        1 => "created",
        2 => "running",
        3 => "canceled",
        4 => "failed",
        5 => "pending",
        6 => "ended_unexpectedly",
        7 => "succeeded",
        8 => "stopping",
        9 => "completed",
        _ => "unknown",
    }
}

/// True for a catalog status after which the execution does not change (3, 4, 6, 7, 9).
pub fn catalog_status_is_final(status: &str) -> bool {
    matches!(
        status,
        "canceled" | "failed" | "ended_unexpectedly" | "succeeded" | "completed"
    )
}

/// A short name for a `catalog.event_messages.message_type`, as Microsoft documents
/// them (catalog.operation_messages): what a catalog log line starts with.
pub fn message_type_name(code: i32) -> &'static str {
    match code {
        120 => "error",
        110 => "warning",
        70 => "info",
        10 => "pre-validate",
        20 => "post-validate",
        30 => "pre-execute",
        40 => "post-execute",
        50 => "status",
        60 => "progress",
        80 => "variable",
        90 => "diagnostic",
        100 => "query-cancel",
        130 => "task-failed",
        140 => "diagnostic-ex",
        200 => "custom",
        400 => "non-diagnostic",
        _ => "message",
    }
}

/// The text of a catalog log line: its type, the task that logged it and the message,
/// e.g. `error   \Load Sales\Copy rows: The column "id" cannot be NULL.`. The type and
/// path go into the text because a log line has no fields for them (`logs` and the
/// report show them this way, and `grep` finds them).
pub fn catalog_line(message_type: i32, source_path: &str, message: &str) -> String {
    let kind = message_type_name(message_type);
    if source_path.is_empty() {
        format!("{kind:<7} {message}")
    } else {
        format!("{kind:<7} {source_path}: {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lines_lead_with_the_type_and_the_task() {
        assert_eq!(
            catalog_line(120, r"\Load Sales\Copy rows", "bad row"),
            r"error   \Load Sales\Copy rows: bad row"
        );
        assert_eq!(
            catalog_line(110, r"\Load Sales", "slow"),
            r"warning \Load Sales: slow"
        );
        assert_eq!(catalog_line(70, "", "started"), "info    started");
        assert_eq!(catalog_line(130, "p", "m"), "task-failed p: m");
        assert_eq!(catalog_line(-1, "", "m"), "message m");
    }

    #[test]
    fn statuses_by_code() {
        let names: Vec<&str> = (1..=9).map(catalog_status_name).collect();
        assert_eq!(
            names,
            [
                "created",
                "running",
                "canceled",
                "failed",
                "pending",
                "ended_unexpectedly",
                "succeeded",
                "stopping",
                "completed"
            ]
        );
        let finals: Vec<&str> = names
            .iter()
            .copied()
            .filter(|s| catalog_status_is_final(s))
            .collect();
        assert_eq!(
            finals,
            [
                "canceled",
                "failed",
                "ended_unexpectedly",
                "succeeded",
                "completed"
            ]
        );
    }

    #[test]
    fn sub_step_events_read_back_from_their_json() {
        let ev = SubStepFinished {
            at: At {
                task: "t".into(),
                attempt: 1,
                sidecar: "s".into(),
                execution_id: "e".into(),
            },
            step: 2,
            step_attempt: 1,
            path: r"\P\Copy".into(),
            name: "Copy".into(),
            status: "failed".into(),
            started_at_ms: 5,
            duration_ms: 7,
            message: "boom".into(),
        };
        // The store keeps the whole event object (with ts, type, run_id): extra fields.
        let mut json = serde_json::to_value(&ev).unwrap();
        json["type"] = "sub_step_finished".into();
        json["run_id"] = "r".into();
        let back: SubStepFinished = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
    }
}
