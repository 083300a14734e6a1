//! The `ssis_poll` batch: status, new messages (with the tail re-read), new executable
//! statistics and new data-flow row counts of the tracked executions given as JSON in `@P1`,
//! as the login sees them (row-level security: an invisible execution is a NULL row).

use std::collections::BTreeMap;

use super::{ConnInfo, Params};
use crate::agent::Agent;
use crate::response::{Item, Reply, ResultSet};
use crate::ssisdb::model::may_read;
use crate::tds::tokens::{Column, ServerMessage};
use crate::tds::values::{SYSNAME, SqlType, Value};

/// Watermarks per tracked execution: (messages, statistics, data statistics).
type Tracked = BTreeMap<i64, (i64, i64, i64)>;

/// `OPENJSON(@P1) WITH (id bigint, msg bigint, stat bigint, data bigint)` grouped by id.
fn tracked(json: Option<&str>) -> Result<Tracked, ServerMessage> {
    let mut out = Tracked::new();
    let Some(json) = json else { return Ok(out) };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        ServerMessage::new(
            13609,
            16,
            format!("JSON text is not properly formatted. Unexpected character is found at position {}.", e.column().saturating_sub(1)),
        )
    })?;
    let serde_json::Value::Array(items) = v else {
        return Ok(out);
    };
    let num = |x: Option<&serde_json::Value>| -> Result<i64, ServerMessage> {
        match x {
            Some(serde_json::Value::Number(n)) => Ok(n.as_i64().unwrap_or(0)),
            Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| {
                ServerMessage::new(8114, 16, "Error converting data type nvarchar to bigint.")
            }),
            _ => Ok(0),
        }
    };
    for item in &items {
        let Some(id) = item.get("id").filter(|v| !v.is_null()) else {
            continue;
        };
        let id = num(Some(id))?;
        let w = (
            num(item.get("msg"))?,
            num(item.get("stat"))?,
            num(item.get("data"))?,
        );
        let e = out.entry(id).or_insert((0, 0, 0));
        *e = (e.0.max(w.0), e.1.max(w.1), e.2.max(w.2));
    }
    Ok(out)
}

fn opt_big(v: Option<i64>) -> Value {
    v.map_or(Value::Null, Value::BigInt)
}

fn dto(v: Option<crate::ssisdb::model::Time>) -> Value {
    v.map_or(Value::Null, Value::DateTimeOffset)
}

pub fn poll(agent: &Agent, conn: &ConnInfo, p: &Params<'_>) -> Result<Reply, ServerMessage> {
    let json = p.text("@P1")?;
    let limit = |n: Option<i64>| n.unwrap_or(0).max(0) as usize;
    let (max_msg, max_stat, tail, max_data) = (
        limit(p.int("@P2")?),
        limit(p.int("@P3")?),
        p.int("@P4")?.unwrap_or(0),
        limit(p.int("@P5")?),
    );
    let mut items = Vec::new();
    // A statement-level error in the INSERT leaves @t empty and the batch goes on.
    let tracked = tracked(json.as_deref()).unwrap_or_else(|e| {
        items.push(Item::Message(e));
        Tracked::new()
    });
    let cat = &agent.catalog;
    let now = cat.clock.now_offset();
    let s = cat.lock();
    let visible = |id: i64| {
        let op = s.operations.get(&id)?;
        (s.executions.contains_key(&id) && may_read(&conn.caller, op)).then_some(op)
    };

    let mut rs1 = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("status", SqlType::Int),
        Column::new("package_name", SqlType::NVarChar(260)),
        Column::new("created_time", SqlType::DateTimeOffset),
        Column::new("start_time", SqlType::DateTimeOffset),
        Column::new("end_time", SqlType::DateTimeOffset),
        Column::new("process_id", SqlType::Int),
        Column::new("caller_name", SYSNAME),
        Column::new("stopped_by_name", SqlType::NVarChar(128)),
        Column::new("server_name", SqlType::NVarChar(128)),
        Column::new("machine_name", SqlType::NVarChar(128)),
        Column::new("polled_at", SqlType::DateTimeOffset).not_null(),
        Column::new("max_message_id", SqlType::BigInt),
    ]);
    for id in tracked.keys() {
        let op = visible(*id);
        let e = op.and_then(|_| s.executions.get(id));
        let max_message = op.and_then(|_| {
            s.messages
                .iter()
                .filter(|m| m.operation_id == *id && m.visible)
                .map(|m| m.id)
                .max()
        });
        rs1.rows.push(vec![
            Value::BigInt(*id),
            Value::opt_int(op.map(|o| o.status)),
            Value::opt_str(e.map(|e| e.package.as_str())),
            dto(op.map(|o| o.created_time)),
            dto(op.and_then(|o| o.start_time)),
            dto(op.and_then(|o| o.end_time)),
            Value::opt_int(op.and_then(|o| o.process_id)),
            Value::opt_str(op.map(|o| o.caller_name.as_str())),
            Value::opt_str(op.and_then(|o| o.stopped_by_name.as_deref())),
            Value::opt_str(op.map(|o| o.server_name.as_str())),
            Value::opt_str(op.map(|o| o.machine_name.as_str())),
            Value::DateTimeOffset(now),
            opt_big(max_message),
        ]);
    }

    let mut rs2 = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("event_message_id", SqlType::BigInt),
        Column::new("message_time", SqlType::DateTimeOffset),
        Column::new("message_type", SqlType::Int),
        Column::new("message_source_type", SqlType::Int),
        Column::new("message_code", SqlType::Int),
        Column::new("event_name", SqlType::NVarChar(1024)),
        Column::new("package_name", SqlType::NVarChar(260)),
        Column::new("message_source_name", SqlType::NVarChar(4000)),
        Column::new("subcomponent_name", SqlType::NVarChar(4000)),
        Column::new("execution_path", SqlType::NVarCharMax),
        Column::new("package_path", SqlType::NVarCharMax),
        Column::new("thread_id", SqlType::Int),
        Column::new("message", SqlType::NVarCharMax),
    ]);
    let mut rs3 = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("statistics_id", SqlType::BigInt),
        Column::new("executable_id", SqlType::BigInt),
        Column::new("executable_name", SqlType::NVarChar(4000)),
        Column::new("package_name", SqlType::NVarChar(260)),
        Column::new("execution_path", SqlType::NVarCharMax),
        Column::new("start_time", SqlType::DateTimeOffset),
        Column::new("end_time", SqlType::DateTimeOffset),
        Column::new("execution_duration", SqlType::Int),
        Column::new("execution_result", SqlType::Int),
    ]);
    let mut rs4 = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("data_stats_id", SqlType::BigInt),
        Column::new("package_name", SqlType::NVarChar(260)),
        Column::new("task_name", SqlType::NVarChar(4000)),
        Column::new("dataflow_path_id_string", SqlType::NVarChar(4000)),
        Column::new("dataflow_path_name", SqlType::NVarChar(4000)),
        Column::new("source_component_name", SqlType::NVarChar(4000)),
        Column::new("destination_component_name", SqlType::NVarChar(4000)),
        Column::new("rows_sent", SqlType::BigInt),
        Column::new("created_time", SqlType::DateTimeOffset),
        Column::new("execution_path", SqlType::NVarCharMax),
    ]);
    for (id, (msg_wm, stat_wm, data_wm)) in &tracked {
        if visible(*id).is_none() {
            continue;
        }
        let from = if *msg_wm > tail { msg_wm - tail } else { 0 };
        for m in s
            .messages
            .iter()
            .filter(|m| m.operation_id == *id && m.visible && m.id > from)
            .take(max_msg)
        {
            let ev = m.event.as_ref();
            rs2.rows.push(vec![
                Value::BigInt(*id),
                Value::BigInt(m.id),
                Value::DateTimeOffset(m.time),
                Value::Int(i32::from(m.message_type)),
                Value::Int(i32::from(m.source_type)),
                Value::opt_int(ev.and_then(|e| e.message_code)),
                Value::opt_str(ev.map(|e| e.event_name.as_str())),
                Value::opt_str(ev.map(|e| e.package_name.as_str())),
                Value::opt_str(m.source_name().as_deref()),
                Value::opt_str(ev.and_then(|e| e.subcomponent_name.as_deref())),
                Value::opt_str(ev.map(|e| e.execution_path.as_str())),
                Value::opt_str(ev.map(|e| e.package_path.as_str())),
                Value::opt_int(ev.map(|e| e.thread_id)),
                Value::Str(m.text.clone()),
            ]);
        }
        for x in s
            .stats
            .iter()
            .filter(|x| x.execution_id == *id && x.id > *stat_wm)
            .take(max_stat)
        {
            let exe = s.executables.iter().find(|e| e.id == x.executable_id);
            rs3.rows.push(vec![
                Value::BigInt(*id),
                Value::BigInt(x.id),
                Value::BigInt(x.executable_id),
                Value::opt_str(exe.map(|e| e.name.as_str())),
                Value::opt_str(exe.map(|e| e.package_name.as_str())),
                Value::Str(x.execution_path.clone()),
                Value::DateTimeOffset(x.start_time),
                Value::DateTimeOffset(x.end_time),
                Value::Int(x.duration_ms),
                Value::Int(i32::from(x.result)),
            ]);
        }
        for d in s
            .data
            .iter()
            .filter(|d| d.execution_id == *id && d.id > *data_wm)
            .take(max_data)
        {
            rs4.rows.push(vec![
                Value::BigInt(*id),
                Value::BigInt(d.id),
                Value::Str(d.package_name.clone()),
                Value::Str(d.task_name.clone()),
                Value::Str(d.path_id_string.clone()),
                Value::Str(d.path_name.clone()),
                Value::Str(d.source.clone()),
                Value::Str(d.destination.clone()),
                Value::BigInt(d.rows_sent),
                Value::DateTimeOffset(d.created_time),
                Value::Str(d.execution_path.clone()),
            ]);
        }
    }
    items.extend([rs1, rs2, rs3, rs4].map(Item::ResultSet));
    Ok(Reply::with(items))
}
