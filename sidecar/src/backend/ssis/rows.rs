//! Typed views of the catalog result sets documented in `queries.rs`, read tolerantly
//! (see `sqlagent::rows`): a missing or mistyped column reads as NULL.
use tiberius::Row;

use crate::backend::sqlagent::rows::{datetimeoffset, int, int32, string};

fn ms(row: &Row, col: &str) -> Option<i64> {
    datetimeoffset(row, col).map(|t| t.timestamp_millis())
}

/// A catalog execution's row in the status result set (`status` NULL: no row visible).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStatus {
    pub execution_id: i64,
    pub status: i32,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl ExecStatus {
    /// `None` for an execution the catalog did not return (vanished or invisible).
    pub fn from_row(row: &Row) -> Option<(i64, Option<Self>)> {
        let id = int(row, "execution_id")?;
        let status = int32(row, "status").map(|status| Self {
            execution_id: id,
            status,
            start_ms: ms(row, "start_time"),
            end_ms: ms(row, "end_time"),
        });
        Some((id, status))
    }
}

/// One `catalog.event_messages` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub execution_id: i64,
    pub id: i64,
    pub time_ms: i64,
    pub message_type: i32,
    pub source_type: i32,
    pub event_name: Option<String>,
    pub source_name: Option<String>,
    pub execution_path: Option<String>,
    pub message: String,
}

impl Message {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            execution_id: int(row, "execution_id")?,
            id: int(row, "event_message_id")?,
            time_ms: ms(row, "message_time").unwrap_or(0),
            message_type: int32(row, "message_type").unwrap_or(-1),
            source_type: int32(row, "message_source_type").unwrap_or(0),
            event_name: string(row, "event_name"),
            source_name: string(row, "message_source_name"),
            execution_path: string(row, "execution_path"),
            message: string(row, "message").unwrap_or_default(),
        })
    }

    /// A package-side message whose `event_messages` half is not visible yet (the
    /// catalog writes the two rows in two statements): read it again next poll.
    pub fn is_half_written(&self) -> bool {
        (30..=60).contains(&self.source_type) && self.event_name.is_none()
    }
}

/// One `catalog.executable_statistics` row (a finished task or container iteration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub execution_id: i64,
    pub id: i64,
    pub path: String,
    pub name: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub duration_ms: i64,
    /// 0 success, 1 failure, 2 completion, 3 canceled.
    pub result: i32,
}

impl Stat {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            execution_id: int(row, "execution_id")?,
            id: int(row, "statistics_id")?,
            path: string(row, "execution_path").unwrap_or_default(),
            name: string(row, "executable_name"),
            start_ms: ms(row, "start_time"),
            end_ms: ms(row, "end_time"),
            duration_ms: int(row, "execution_duration").unwrap_or(0),
            result: int32(row, "execution_result").unwrap_or(1),
        })
    }
}

/// One `catalog.execution_data_statistics` row (Verbose logging only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataStat {
    pub execution_id: i64,
    pub id: i64,
    pub path: String,
    pub data_flow_path: String,
    pub source: String,
    pub destination: String,
    pub rows: i64,
    pub time_ms: i64,
}

impl DataStat {
    pub fn from_row(row: &Row) -> Option<Self> {
        Some(Self {
            execution_id: int(row, "execution_id")?,
            id: int(row, "data_stats_id")?,
            path: string(row, "execution_path").unwrap_or_default(),
            data_flow_path: string(row, "dataflow_path_name").unwrap_or_default(),
            source: string(row, "source_component_name").unwrap_or_default(),
            destination: string(row, "destination_component_name").unwrap_or_default(),
            rows: int(row, "rows_sent").unwrap_or(0),
            time_ms: ms(row, "created_time").unwrap_or(0),
        })
    }
}
