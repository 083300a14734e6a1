//! The `poll` batch: heartbeat, live Agent state, current-session activity and new history rows
//! for the tracked jobs given as JSON in `@P1`.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::catalog::guid_sort_key;
use super::params::parse_guid;
use super::{ConnInfo, Params};
use crate::agent::live::EnumRow;
use crate::agent::{Agent, AgentError, AgentStatus};
use crate::response::{Item, Reply, ResultSet};
use crate::tds::tokens::{Column, ServerMessage};
use crate::tds::values::{SYSNAME, SqlType, Value};

/// What `OPENJSON(@P1) WITH (job_id uniqueidentifier, after_id int)` + GROUP BY yields, keyed
/// by the SQL sort key of the job id (the table variable's primary key order).
type Tracked = BTreeMap<[u8; 16], (Uuid, i32)>;

fn json_error(msg: String) -> ServerMessage {
    ServerMessage::new(13609, 16, msg)
}

/// Parses the tracked-jobs JSON the way the batch's INSERT … SELECT would treat it.
fn tracked_jobs(json: Option<&str>) -> Result<Tracked, ServerMessage> {
    let mut out = Tracked::new();
    let Some(json) = json else {
        return Ok(out); // OPENJSON(NULL) returns no rows
    };
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| {
        json_error(format!(
            "JSON text is not properly formatted. Unexpected character is found at position {}.",
            e.column().saturating_sub(1)
        ))
    })?;
    let items = match v {
        serde_json::Value::Array(a) => a,
        _ => return Ok(out), // WITH over a scalar or object: no array elements to shred
    };
    let mut groups: BTreeMap<[u8; 16], (Uuid, Option<i32>)> = BTreeMap::new();
    for item in items {
        let job = match item.get("job_id") {
            Some(serde_json::Value::String(s)) => Some(parse_guid(s).ok_or_else(|| {
                ServerMessage::new(
                    8169,
                    16,
                    "Conversion failed when converting from a character string to uniqueidentifier.",
                )
            })?),
            _ => None,
        };
        let Some(job) = job else { continue };
        let after = match item.get("after_id") {
            Some(serde_json::Value::Number(n)) => n.as_i64().map(|n| n as i32),
            Some(serde_json::Value::String(s)) => Some(s.trim().parse::<i32>().map_err(|_| {
                ServerMessage::new(
                    245,
                    16,
                    format!("Conversion failed when converting the nvarchar value '{s}' to data type int."),
                )
            })?),
            _ => None,
        };
        let e = groups.entry(guid_sort_key(&job)).or_insert((job, None));
        e.1 = match (e.1, after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    for (k, (job, after)) in groups {
        let after = after.ok_or_else(|| {
            ServerMessage::new(
                515,
                16,
                "Cannot insert the value NULL into column 'after_id', table '@t'; column does not allow nulls. INSERT fails.",
            )
        })?;
        out.insert(k, (job, after));
    }
    Ok(out)
}

pub fn poll(agent: &Agent, conn: &ConnInfo, p: &Params<'_>) -> Reply {
    let mut items = Vec::new();
    let json = match p.text("@P1") {
        Ok(j) => j,
        Err(e) => return Reply::error(e),
    };
    let want_enum = match p.int("@P2") {
        Ok(v) => v == Some(1),
        Err(e) => return Reply::error(e),
    };
    // A statement-level error in the INSERT leaves @t empty and the batch goes on.
    let tracked = tracked_jobs(json.as_deref()).unwrap_or_else(|e| {
        items.push(Item::Message(e));
        Tracked::new()
    });
    let c = &conn.caller;
    let s = agent.lock();
    let sess = s.session_for(c);
    let running = s.status == AgentStatus::Running;

    // xp_sqlagent_enum_jobs inside TRY/CATCH: a missing grant (229) is caught; the Agent's
    // 22022 (Agent stopped) is raised inside the extended procedure and escapes by default.
    let mut enum_err = None;
    let mut live_rows = Vec::new();
    if want_enum && !tracked.is_empty() {
        if !c.may_use("master.dbo.xp_sqlagent_enum_jobs") {
            enum_err = Some(229);
        } else if !running {
            let e = AgentError::agent_not_running();
            if s.settings.errors_escape_catch {
                items.push(Item::Message(e.0.clone()));
            } else {
                enum_err = Some(e.number() as i32);
            }
        } else {
            for (job_id, _) in tracked.values() {
                if s.job(*job_id).is_none() {
                    continue;
                }
                let l = s.enum_view(*job_id).unwrap_or_else(EnumRow::idle);
                live_rows.push(vec![
                    Value::Guid(*job_id),
                    Value::Int(i32::from(l.running)),
                    Value::Int(l.current_step),
                    Value::Int(l.current_retry_attempt),
                    Value::Int(l.job_state),
                    Value::Int(l.request_source),
                    Value::opt_str(l.request_source_id.as_deref()),
                ]);
            }
        }
    }

    let rs1 = ResultSet::new(vec![
        Column::new("agent_session_id", SqlType::Int),
        Column::new("server_now", SqlType::DateTimeOffset),
        Column::new("server_started", SqlType::DateTime),
        Column::new("agent_connected", SqlType::Int),
        Column::new("enum_jobs_error", SqlType::Int),
    ])
    .row(vec![
        Value::opt_int(sess),
        Value::DateTimeOffset(agent.clock.now_offset()),
        Value::DateTime(agent.server_started),
        if c.view_server_state {
            Value::Int(i32::from(running))
        } else {
            Value::Null
        },
        Value::opt_int(enum_err),
    ]);

    let mut rs2 = ResultSet::new(vec![
        Column::new("job_id", SqlType::UniqueIdentifier),
        Column::new("running", SqlType::Int),
        Column::new("current_step", SqlType::Int),
        Column::new("current_retry_attempt", SqlType::Int),
        Column::new("job_state", SqlType::Int),
        Column::new("request_source", SqlType::Int),
        Column::new("request_source_id", SqlType::NVarChar(128)),
    ]);
    rs2.rows = live_rows;

    let mut rs3 = ResultSet::new(vec![
        Column::new("job_id", SqlType::UniqueIdentifier).not_null(),
        Column::new("job_exists", SqlType::Int).not_null(),
        Column::new("run_requested_date", SqlType::DateTime),
        Column::new("run_requested_source", SqlType::NVarChar(128)),
        Column::new("queued_date", SqlType::DateTime),
        Column::new("start_execution_date", SqlType::DateTime),
        Column::new("last_executed_step_id", SqlType::Int),
        Column::new("last_executed_step_date", SqlType::DateTime),
        Column::new("stop_execution_date", SqlType::DateTime),
        Column::new("job_history_id", SqlType::Int),
    ]);
    for (job_id, _) in tracked.values() {
        let a = sess.and_then(|sess| s.msdb.activity(sess, *job_id));
        rs3.rows.push(vec![
            Value::Guid(*job_id),
            Value::Int(i32::from(s.job(*job_id).is_some())),
            Value::opt_datetime(a.and_then(|a| a.run_requested_date)),
            Value::opt_str(a.and_then(|a| a.run_requested_source.as_deref())),
            Value::opt_datetime(a.and_then(|a| a.queued_date)),
            Value::opt_datetime(a.and_then(|a| a.start_execution_date)),
            Value::opt_int(a.and_then(|a| a.last_executed_step_id)),
            Value::opt_datetime(a.and_then(|a| a.last_executed_step_date)),
            Value::opt_datetime(a.and_then(|a| a.stop_execution_date)),
            Value::opt_int(a.and_then(|a| a.job_history_id)),
        ]);
    }

    let mut rs4 = ResultSet::new(vec![
        Column::new("instance_id", SqlType::Int).not_null(),
        Column::new("job_id", SqlType::UniqueIdentifier).not_null(),
        Column::new("step_id", SqlType::Int).not_null(),
        Column::new("step_name", SYSNAME).not_null(),
        Column::new("run_status", SqlType::Int).not_null(),
        Column::new("run_date", SqlType::Int).not_null(),
        Column::new("run_time", SqlType::Int).not_null(),
        Column::new("run_duration", SqlType::Int).not_null(),
        Column::new("retries_attempted", SqlType::Int).not_null(),
        Column::new("sql_message_id", SqlType::Int).not_null(),
        Column::new("sql_severity", SqlType::Int).not_null(),
        Column::new("message", SqlType::NVarChar(4000)),
    ]);
    for (job_id, after) in tracked.values() {
        let mut rows: Vec<_> = s
            .msdb
            .history
            .iter()
            .filter(|h| h.job_id == *job_id && h.instance_id > *after)
            .collect();
        rows.sort_by_key(|h| h.instance_id);
        for h in rows {
            rs4.rows.push(vec![
                Value::Int(h.instance_id),
                Value::Guid(h.job_id),
                Value::Int(h.step_id),
                Value::Str(h.step_name.clone()),
                Value::Int(h.run_status),
                Value::Int(h.run_date),
                Value::Int(h.run_time),
                Value::Int(h.run_duration),
                Value::Int(h.retries_attempted),
                Value::Int(h.sql_message_id),
                Value::Int(h.sql_severity),
                Value::Str(h.message.clone()),
            ]);
        }
    }
    items.extend([rs1, rs2, rs3, rs4].map(Item::ResultSet));
    Reply::with(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_grouped_and_validated() {
        let a = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        let t = tracked_jobs(Some(&format!(
            r#"[{{"job_id":"{a}","after_id":3}},{{"job_id":"{a}","after_id":7}},{{"after_id":1}}]"#
        )))
        .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.values().next().unwrap().1, 7);
        assert_eq!(tracked_jobs(Some("[")).unwrap_err().number, 13609);
        assert_eq!(
            tracked_jobs(Some(r#"[{"job_id":"x","after_id":1}]"#))
                .unwrap_err()
                .number,
            8169
        );
        assert_eq!(
            tracked_jobs(Some(&format!(r#"[{{"job_id":"{a}"}}]"#)))
                .unwrap_err()
                .number,
            515
        );
        assert!(tracked_jobs(None).unwrap().is_empty());
    }
}
