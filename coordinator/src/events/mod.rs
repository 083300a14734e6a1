//! The coordinator's one event type. The dispatcher and executors produce `RunEvent`s;
//! reporters (terminal progress, plain lines, JSON lines, the store, telemetry) consume
//! them. The serialized form is the `--json` contract of PRODUCT.md: every object has
//! `ts`, `type` and `run_id`, plus the fields that apply.
use serde::{Deserialize, Serialize};

mod catalog;

pub use catalog::{
    CatalogExecution, DataFlowRows, SubStepFinished, SubStepStarted, catalog_line,
    catalog_status_is_final, catalog_status_name, message_type_name,
};

mod log_lines;
pub use log_lines::{IN_FLIGHT_BYTES, LogLine, LogLines};

/// One thing that happened in a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunEvent {
    /// When it happened, Unix ms UTC; serialized as `ts`, RFC 3339 UTC
    /// ("2026-11-25T18:14:04.123Z"), formatted only when written (not per event on the hot
    /// path of a million log lines).
    #[serde(rename = "ts", serialize_with = "serialize_rfc3339")]
    pub ts_ms: i64,
    pub run_id: String,
    #[serde(flatten)]
    pub kind: RunEventKind,
}

impl RunEvent {
    pub fn new(run_id: &str, ts_ms: i64, kind: RunEventKind) -> Self {
        Self {
            ts_ms,
            run_id: run_id.to_owned(),
            kind,
        }
    }
}

fn serialize_rfc3339<S: serde::Serializer>(ts_ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*ts_ms))
}

/// Formats Unix milliseconds as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ts_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Where an execution of a task runs: the fields every task-level event carries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct At {
    pub task: String,
    pub attempt: u32,
    pub sidecar: String,
    pub execution_id: String,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutcome {
    Succeeded,
    Failed,
    /// Stopped by the user or by `fail_fast`.
    Canceled,
    TimedOut,
    /// Not started because a task it depends on did not succeed.
    Skipped,
    /// Its sidecar became unreachable and the result is unknown.
    Lost,
}

impl TaskOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
            Self::TimedOut => "timed_out",
            Self::Skipped => "skipped",
            Self::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunEventKind {
    RunStarted {
        plan: String,
        tasks: usize,
        sidecars: Vec<String>,
        /// Slots of each reachable sidecar as it described itself at the start: the
        /// capacity the run report measures utilisation and its lower bound against.
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        slots: std::collections::BTreeMap<String, u32>,
    },
    TaskPlaced {
        #[serde(flatten)]
        at: At,
    },
    TaskStarted {
        #[serde(flatten)]
        at: At,
        step_count: u32,
        /// Who the sidecar recorded as starting the execution (the name in this
        /// coordinator's certificate, or `local uid N`); empty from older sidecars.
        #[serde(skip_serializing_if = "String::is_empty")]
        started_by: String,
    },
    StepStarted {
        #[serde(flatten)]
        at: At,
        step: u32,
        step_name: String,
        step_attempt: u32,
    },
    StepFinished {
        #[serde(flatten)]
        at: At,
        step: u32,
        step_name: String,
        step_attempt: u32,
        /// succeeded | failed | retry | canceled | timed_out
        status: &'static str,
        message: String,
        duration_ms: u64,
    },
    /// Consecutive log lines of one execution, as one sidecar message brought them: one
    /// event for many lines keeps a chatty job cheap on its way through the dispatcher,
    /// the reporters and the store. `--json` writes one `log` object per line
    /// (`LogObject`), never this batch.
    Log {
        #[serde(flatten)]
        at: At,
        /// A line of stream "catalog" is an SSIS package's message: it starts with its
        /// type and task (see [`catalog_line`]).
        lines: LogLines,
    },
    /// SSIS catalog progress of a step (see `catalog.rs`); boxed, as they are larger
    /// than the other events and rarer than log lines.
    CatalogExecution(Box<CatalogExecution>),
    SubStepStarted(Box<SubStepStarted>),
    SubStepFinished(Box<SubStepFinished>),
    DataFlowRows(Box<DataFlowRows>),
    TaskFinished {
        task: String,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        sidecar: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        execution_id: Option<String>,
        status: TaskOutcome,
        message: String,
        duration_ms: u64,
        /// True when another attempt follows.
        will_retry: bool,
    },
    /// Internal, not part of the `--json` contract: the executor has passed on every event
    /// of `at.execution_id` up to the sidecar's sequence number `seq`. The store saves it in
    /// the same transaction as those events, so a watch resumed from the stored `seq` neither
    /// repeats nor misses any.
    ExecutionSeq {
        #[serde(flatten)]
        at: At,
        seq: u64,
    },
    RunFinished {
        /// succeeded | failed | canceled | interrupted
        status: &'static str,
        exit_code: i32,
        duration_ms: u64,
        summary: Vec<TaskSummary>,
    },
}

impl RunEventKind {
    /// A `Log` event of one line.
    pub fn log_line(at: At, step: u32, stream: &'static str, line: impl Into<String>) -> Self {
        Self::Log {
            at,
            lines: vec![LogLine {
                step,
                stream,
                line: line.into(),
            }]
            .into(),
        }
    }

    /// The execution of an SSIS catalog progress event (None for any other kind).
    pub fn catalog_at(&self) -> Option<&At> {
        match self {
            Self::CatalogExecution(e) => Some(&e.at),
            Self::SubStepStarted(e) => Some(&e.at),
            Self::SubStepFinished(e) => Some(&e.at),
            Self::DataFlowRows(e) => Some(&e.at),
            _ => None,
        }
    }
}

/// The `--json` object of one log line: `ts`, `run_id`, `type` = "log", where it ran, then
/// the line's own fields, in the order every other event's object has them.
#[derive(Serialize)]
pub struct LogObject<'a> {
    #[serde(rename = "ts", serialize_with = "serialize_rfc3339")]
    pub ts_ms: i64,
    pub run_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(flatten)]
    pub at: &'a At,
    #[serde(flatten)]
    pub line: &'a LogLine,
}

impl<'a> LogObject<'a> {
    /// One object per line of `ev`, empty for any other event.
    pub fn of(ev: &'a RunEvent) -> impl Iterator<Item = LogObject<'a>> + 'a {
        let (at, lines) = match &ev.kind {
            RunEventKind::Log { at, lines } => (Some(at), &lines[..]),
            _ => (None, &[][..]),
        };
        lines.iter().filter_map(move |line| {
            Some(LogObject {
                ts_ms: ev.ts_ms,
                run_id: &ev.run_id,
                kind: "log",
                at: at?,
                line,
            })
        })
    }
}

/// One row of the final summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TaskSummary {
    pub task: String,
    pub sidecar: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub status: TaskOutcome,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_contract_fields() {
        let ev = RunEvent::new(
            "r1",
            0,
            RunEventKind::StepFinished {
                at: At {
                    task: "t".into(),
                    attempt: 1,
                    sidecar: "s1".into(),
                    execution_id: "e1".into(),
                },
                step: 2,
                step_name: "load".into(),
                step_attempt: 1,
                status: "succeeded",
                message: String::new(),
                duration_ms: 5,
            },
        );
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "step_finished");
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["run_id"], "r1");
        assert_eq!(v["task"], "t");
        assert_eq!(v["sidecar"], "s1");
        assert_eq!(v["execution_id"], "e1");
        assert_eq!(v["step"], 2);
        assert_eq!(v["step_name"], "load");
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["duration_ms"], 5);
    }

    #[test]
    fn catalog_events_are_flat_objects_with_their_own_type() {
        let ev = RunEvent::new(
            "r1",
            0,
            RunEventKind::DataFlowRows(Box::new(DataFlowRows {
                at: At {
                    task: "t".into(),
                    attempt: 1,
                    sidecar: "s1".into(),
                    execution_id: "e1".into(),
                },
                step: 1,
                step_attempt: 1,
                path: r"\Load\Copy".into(),
                data_flow_path: "OLE DB Source Output".into(),
                source_component: "Source".into(),
                destination_component: "Dest".into(),
                rows: 42,
            })),
        );
        let v: serde_json::Value = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["type"], "data_flow_rows");
        assert_eq!(v["execution_id"], "e1");
        assert_eq!(v["path"], r"\Load\Copy");
        assert_eq!(v["rows"], 42);
        assert_eq!(ev.kind.catalog_at().map(|a| a.task.as_str()), Some("t"));
    }
}
