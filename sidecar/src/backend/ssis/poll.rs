//! Running `ssis_poll` for every followed catalog execution of one server, and the other
//! catalog round trips of the follower (correlation, stop).
use std::collections::HashMap;

use super::correlate::Candidate;
use super::queries;
use super::rows::{DataStat, ExecStatus, Message, Stat};
use crate::backend::sqlagent::connection::{Conn, SqlError};
use crate::backend::sqlagent::rows;

/// Rows per execution and poll: one chatty execution cannot starve the others.
const MAX_MESSAGES: i32 = 500;
const MAX_STATS: i32 = 200;
const MAX_DATA: i32 = 200;

/// One `ssis_poll`, by execution id.
#[derive(Debug, Default)]
pub struct PollResult {
    /// `None` inside: the execution is not visible.
    pub status: HashMap<i64, Option<ExecStatus>>,
    pub polled_at_ms: i64,
    pub messages: HashMap<i64, Vec<Message>>,
    pub stats: HashMap<i64, Vec<Stat>>,
    pub data: HashMap<i64, Vec<DataStat>>,
}

/// `tracked`: (execution id, (message, statistics, data) watermarks).
pub async fn poll(
    conn: &mut Conn,
    tracked: &[(i64, (i64, i64, i64))],
) -> Result<PollResult, SqlError> {
    let list: Vec<serde_json::Value> = tracked
        .iter()
        .map(|(id, (m, s, d))| serde_json::json!({"id": id, "msg": m, "stat": s, "data": d}))
        .collect();
    let json = serde_json::Value::Array(list).to_string();
    // The tail is re-read by the tracker's settled watermark itself (see `tracker`).
    let tail: i64 = 0;
    let sets = conn
        .query(
            queries::SSIS_POLL,
            &[&json.as_str(), &MAX_MESSAGES, &MAX_STATS, &tail, &MAX_DATA],
        )
        .await?;
    let mut it = sets.into_iter();
    let (st, msgs, stats, data) = (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    );
    let mut out = PollResult {
        polled_at_ms: st
            .first()
            .and_then(|r| rows::datetimeoffset(r, "polled_at"))
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(agentfleet_common::now_ms),
        ..Default::default()
    };
    for (id, s) in st.iter().filter_map(ExecStatus::from_row) {
        out.status.insert(id, s);
    }
    for m in msgs.iter().filter_map(Message::from_row) {
        out.messages.entry(m.execution_id).or_default().push(m);
    }
    for s in stats.iter().filter_map(Stat::from_row) {
        out.stats.entry(s.execution_id).or_default().push(s);
    }
    for d in data.iter().filter_map(DataStat::from_row) {
        out.data.entry(d.execution_id).or_default().push(d);
    }
    Ok(out)
}

/// Candidates for an Agent step's execution (`ssis_find_agent_execution`).
pub async fn candidates(
    conn: &mut Conn,
    folder: &str,
    project: &str,
    package: &str,
    created_after_ms: i64,
    env_reference: Option<i64>,
) -> Result<Vec<Candidate>, SqlError> {
    let after = chrono::DateTime::from_timestamp_millis(created_after_ms)
        .unwrap_or_default()
        .fixed_offset();
    let caller: Option<&str> = None;
    let sets = conn
        .query(
            queries::SSIS_FIND_AGENT_EXECUTION,
            &[&folder, &project, &package, &after, &caller, &env_reference],
        )
        .await?;
    Ok(sets
        .first()
        .map(|s| {
            s.iter()
                .filter_map(|r| {
                    Some(Candidate {
                        execution_id: rows::int(r, "execution_id")?,
                        status: rows::int32(r, "status").unwrap_or(0),
                        created_ms: rows::datetimeoffset(r, "created_time")
                            .map(|t| t.timestamp_millis())
                            .unwrap_or(created_after_ms),
                        reference_id: None,
                        caller_info: None,
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What `ssis_stop` answered.
#[derive(Debug, Clone, Default)]
pub struct StopResult {
    pub rc: Option<i32>,
    pub error_number: Option<i32>,
    pub error_message: Option<String>,
    pub status: Option<i32>,
}

pub async fn stop(conn: &mut Conn, execution_id: i64) -> Result<StopResult, SqlError> {
    let sets = conn.query(queries::SSIS_STOP, &[&execution_id]).await?;
    Ok(sets
        .first()
        .and_then(|s| s.first())
        .map(|r| StopResult {
            rc: rows::int32(r, "rc"),
            error_number: rows::int32(r, "error_number"),
            error_message: rows::string(r, "error_message"),
            status: rows::int32(r, "status"),
        })
        .unwrap_or_default())
}
