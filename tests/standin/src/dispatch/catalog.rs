//! Answers to agentfleet's catalogued queries (sidecar/src/backend/sqlagent/queries.rs): the
//! result sets and columns exactly as documented there, computed from the simulated msdb.

use uuid::Uuid;

use super::{ConnInfo, Params, poll};
use crate::agent::steps::JobDef;
use crate::agent::{Agent, AgentError, AgentStatus, JobRef, State};
use crate::config::Role;
use crate::response::{Item, Reply, ResultSet};
use crate::tds::tokens::{Column, ServerMessage};
use crate::tds::values::{SYSNAME, SqlType, Value};

/// Every marker this module serves.
pub const MARKERS: &[&str] = &[
    "server_info",
    "check_permissions",
    "job_names",
    "list_jobs",
    "resolve_job",
    "start_probe",
    "start_job",
    "stop_job",
    "poll",
    "object_permission",
];

pub fn handle(agent: &Agent, conn: &ConnInfo, marker: &str, p: &Params<'_>) -> Option<Reply> {
    let result = match marker {
        "server_info" => Ok(server_info(agent, conn)),
        "check_permissions" => Ok(check_permissions(agent, conn)),
        "object_permission" => p.text("@P1").map(|o| object_permission(conn, o)),
        "job_names" => Ok(job_names(agent, conn)),
        "list_jobs" => Ok(list_jobs(agent, conn, None)),
        "resolve_job" => p.text("@P1").map(|name| list_jobs(agent, conn, Some(name))),
        "start_probe" => p.guid("@P1").map(|id| start_probe(agent, conn, id)),
        "start_job" => p.guid("@P1").map(|id| start_job(agent, conn, id)),
        "stop_job" => p.guid("@P1").map(|id| stop_job(agent, conn, id)),
        "poll" => Ok(poll::poll(agent, conn, p)),
        _ => return None,
    };
    let mut reply = result.unwrap_or_else(Reply::error);
    // Every catalogued text starts with SET NOCOUNT ON.
    reply.nocount = true;
    Some(reply)
}

/// SQL Server's uniqueidentifier sort order: byte groups 10-15, 8-9, 6-7, 4-5, 0-3.
pub fn guid_sort_key(g: &Uuid) -> [u8; 16] {
    let b = g.as_bytes();
    let mut k = [0u8; 16];
    k[..6].copy_from_slice(&b[10..16]);
    k[6..8].copy_from_slice(&b[8..10]);
    k[8..10].copy_from_slice(&b[6..8]);
    k[10..12].copy_from_slice(&b[4..6]);
    k[12..].copy_from_slice(&b[0..4]);
    k
}

/// Equality under a case-insensitive collation that ignores trailing spaces.
pub fn sql_eq(a: &str, b: &str) -> bool {
    a.trim_end().to_lowercase() == b.trim_end().to_lowercase()
}

fn int(v: i32) -> Value {
    Value::Int(v)
}

fn flag(b: bool) -> Value {
    Value::Int(i32::from(b))
}

fn server_info(agent: &Agent, conn: &ConnInfo) -> Reply {
    let c = &conn.caller;
    let s = agent.lock();
    let running = s.status == AgentStatus::Running;
    let service = match s.status {
        AgentStatus::Running => 4,
        AgentStatus::Starting => 2,
        AgentStatus::Stopped => 1,
    };
    let cols = vec![
        Column::new("engine_edition", SqlType::Int),
        Column::new("product_version", SqlType::NVarChar(128)),
        Column::new("agent_xps", SqlType::Int),
        Column::new("can_view_server_state", SqlType::Int),
        Column::new("agent_connected", SqlType::Int),
        Column::new("agent_service_status", SqlType::Int),
        Column::new("agent_session_id", SqlType::Int),
        Column::new("server_now", SqlType::DateTimeOffset),
        Column::new("server_started", SqlType::DateTime),
        Column::new("login_name", SqlType::NVarChar(128)),
    ];
    let vss = c.view_server_state;
    let row = vec![
        int(s.settings.engine_edition),
        Value::Str(s.settings.product_version.clone()),
        int(s.settings.agent_xps),
        flag(vss),
        if vss { flag(running) } else { Value::Null },
        if vss { int(service) } else { Value::Null },
        Value::opt_int(s.session_for(c)),
        Value::DateTimeOffset(agent.clock.now_offset()),
        Value::DateTime(agent.server_started),
        Value::Str(c.login.clone()),
    ];
    Reply::with(vec![Item::ResultSet(ResultSet::new(cols).row(row))])
}

fn check_permissions(agent: &Agent, conn: &ConnInfo) -> Reply {
    let c = &conn.caller;
    let compat = agent.lock().settings.msdb_compatibility_level;
    let names = [
        "is_sysadmin",
        "is_agent_operator",
        "is_agent_reader",
        "is_agent_user",
        "can_start_job",
        "can_stop_job",
        "can_read_jobs",
        "can_read_steps",
        "can_read_history",
        "can_read_activity",
        "can_read_sessions",
        "can_view_server_state",
        "can_enum_jobs",
    ];
    // The Agent roles are concentric (Operator ⊃ Reader ⊃ User); IS_ROLEMEMBER follows nesting.
    let (sa, op, rd, us) = match c.role {
        Role::Sysadmin => (true, false, false, false),
        Role::Operator => (false, true, true, true),
        Role::Reader => (false, false, true, true),
        Role::User => (false, false, false, true),
    };
    let values = [
        sa,
        op,
        rd,
        us,
        c.may_use("msdb.dbo.sp_start_job"),
        c.may_use("msdb.dbo.sp_stop_job"),
        c.may_use("msdb.dbo.sysjobs_view"),
        c.may_use("msdb.dbo.sysjobsteps"),
        c.may_use("msdb.dbo.sysjobhistory"),
        c.may_use("msdb.dbo.sysjobactivity"),
        c.may_use("msdb.dbo.syssessions"),
        c.view_server_state,
        c.may_use("master.dbo.xp_sqlagent_enum_jobs"),
    ];
    let mut cols: Vec<Column> = names.iter().map(|n| Column::new(n, SqlType::Int)).collect();
    cols.push(Column::new("msdb_compatibility_level", SqlType::Int));
    let mut row: Vec<Value> = values.iter().map(|b| flag(*b)).collect();
    row.push(int(compat));
    Reply::with(vec![Item::ResultSet(ResultSet::new(cols).row(row))])
}

/// `HAS_PERMS_BY_NAME(@P1, N'OBJECT', @P2)`: 0 for a denied object, and for names that are
/// not msdb/master three-part names (the stand-in knows no others).
fn object_permission(conn: &ConnInfo, object: Option<String>) -> Reply {
    let granted = object.is_some_and(|o| {
        let parts = o.split('.').count();
        let db = o.split('.').next().unwrap_or("").to_lowercase();
        parts == 3 && (db == "msdb" || db == "master") && conn.caller.may_use(&o)
    });
    Reply::with(vec![Item::ResultSet(
        ResultSet::new(vec![Column::new("granted", SqlType::Int)]).row(vec![flag(granted)]),
    )])
}

fn visible_jobs<'s>(s: &'s State, conn: &ConnInfo) -> Vec<&'s JobDef> {
    let mut jobs: Vec<&JobDef> = s.jobs.iter().filter(|j| conn.caller.sees(j)).collect();
    jobs.sort_by_key(|j| j.name.to_lowercase());
    jobs
}

fn job_names(agent: &Agent, conn: &ConnInfo) -> Reply {
    let s = agent.lock();
    let mut rs = ResultSet::new(vec![Column::new("name", SYSNAME)]);
    for j in visible_jobs(&s, conn) {
        rs.rows.push(vec![Value::Str(j.name.clone())]);
    }
    Reply::with(vec![Item::ResultSet(rs)])
}

fn job_columns() -> Vec<Column> {
    vec![
        Column::new("job_id", SqlType::UniqueIdentifier).not_null(),
        Column::new("name", SYSNAME).not_null(),
        Column::new("enabled", SqlType::Int).not_null(),
        Column::new("description", SqlType::NVarChar(512)),
        Column::new("category", SYSNAME),
        Column::new("start_step_id", SqlType::Int).not_null(),
        Column::new("job_type", SqlType::Int).not_null(),
    ]
}

fn step_columns() -> Vec<Column> {
    vec![
        Column::new("job_id", SqlType::UniqueIdentifier).not_null(),
        Column::new("step_id", SqlType::Int).not_null(),
        Column::new("step_name", SYSNAME).not_null(),
        Column::new("subsystem", SqlType::NVarChar(40)).not_null(),
        Column::new("on_success_action", SqlType::Int),
        Column::new("on_success_step_id", SqlType::Int).not_null(),
        Column::new("on_fail_action", SqlType::Int),
        Column::new("on_fail_step_id", SqlType::Int).not_null(),
        Column::new("retry_attempts", SqlType::Int).not_null(),
        Column::new("retry_interval", SqlType::Int).not_null(),
        Column::new("output_file_name", SqlType::NVarChar(200)),
        Column::new("flags", SqlType::Int).not_null(),
    ]
}

/// `list_jobs` (three result sets) or, with a name, `resolve_job` (the first two).
fn list_jobs(agent: &Agent, conn: &ConnInfo, name: Option<Option<String>>) -> Reply {
    let s = agent.lock();
    let mut jobs = visible_jobs(&s, conn);
    if let Some(n) = &name {
        // `WHERE j.name = @name`: NULL matches nothing.
        jobs.retain(|j| n.as_deref().is_some_and(|n| sql_eq(&j.name, n)));
    }
    let mut rs1 = ResultSet::new(job_columns());
    for j in &jobs {
        rs1.rows.push(vec![
            Value::Guid(j.job_id),
            Value::Str(j.name.clone()),
            flag(j.enabled),
            Value::opt_str(j.description.as_deref()),
            Value::Str(j.category.clone()),
            int(j.start_step),
            int(if j.targeted { 1 } else { 0 }),
        ]);
    }
    let mut by_id = jobs.clone();
    by_id.sort_by_key(|j| guid_sort_key(&j.job_id));
    // `resolve_job` also returns each step's command (an SSIS step's `/ISSERVER` line).
    let mut columns = step_columns();
    if name.is_some() {
        columns.push(Column::new("command", SqlType::NVarCharMax));
    }
    let mut rs2 = ResultSet::new(columns);
    for j in &by_id {
        for st in &j.steps {
            rs2.rows.push(vec![
                Value::Guid(j.job_id),
                int(st.id),
                Value::Str(st.name.clone()),
                Value::Str(st.subsystem.clone()),
                int(st.on_success.code()),
                int(st.on_success.target()),
                int(st.on_fail.code()),
                int(st.on_fail.target()),
                int(st.retries),
                int(st.retry_interval_minutes()),
                Value::opt_str(st.output_file.as_deref()),
                int(st.flags),
            ]);
            if name.is_some() {
                rs2.rows
                    .last_mut()
                    .expect("just pushed")
                    .push(Value::Str(st.command.clone()));
            }
        }
    }
    let mut items = vec![Item::ResultSet(rs1), Item::ResultSet(rs2)];
    if name.is_none() {
        let mut rs3 = ResultSet::new(vec![
            Column::new("job_id", SqlType::UniqueIdentifier),
            Column::new("run_duration", SqlType::Int),
        ]);
        for h in &s.msdb.history {
            if h.step_id == 0 && h.run_status == 1 && jobs.iter().any(|j| j.job_id == h.job_id) {
                rs3.rows
                    .push(vec![Value::Guid(h.job_id), int(h.run_duration)]);
            }
        }
        items.push(Item::ResultSet(rs3));
    }
    Reply::with(items)
}

fn start_probe(agent: &Agent, conn: &ConnInfo, job_id: Option<Uuid>) -> Reply {
    let s = agent.lock();
    let sess = s.session_for(&conn.caller);
    let (hwm, running) = match job_id {
        Some(id) => {
            let running = sess
                .and_then(|sess| s.msdb.activity(sess, id))
                .is_some_and(|a| {
                    a.stop_execution_date.is_none()
                        && (a.start_execution_date.is_some() || a.run_requested_date.is_some())
                });
            (s.msdb.history_watermark(id), running)
        }
        None => (0, false),
    };
    let cols = vec![
        Column::new("agent_session_id", SqlType::Int),
        Column::new("history_watermark", SqlType::Int),
        Column::new("requested_not_before", SqlType::DateTime),
        Column::new("server_now", SqlType::DateTimeOffset),
        Column::new("running", SqlType::Int).not_null(),
        Column::new("agent_connected", SqlType::Int),
    ];
    let row = vec![
        Value::opt_int(sess),
        int(hwm),
        Value::DateTime(agent.clock.now_local_seconds()),
        Value::DateTimeOffset(agent.clock.now_offset()),
        flag(running),
        if conn.caller.view_server_state {
            flag(s.status == AgentStatus::Running)
        } else {
            Value::Null
        },
    ];
    Reply::with(vec![Item::ResultSet(ResultSet::new(cols).row(row))])
}

/// Outcome of an msdb procedure call inside the TRY/CATCH of the start/stop batches.
struct ProcOutcome {
    rc: Option<i32>,
    err: Option<AgentError>,
    items: Vec<Item>,
}

fn call_proc(agent: &Agent, result: Result<String, AgentError>) -> ProcOutcome {
    match result {
        // 14243/14254 are severity 0: INFO tokens that tiberius only logs.
        Ok(info) => {
            let number = if info.ends_with("started successfully.") {
                14243
            } else {
                14254
            };
            ProcOutcome {
                rc: Some(0),
                err: None,
                items: vec![Item::Message(ServerMessage::new(number, 0, info))],
            }
        }
        // 22022 is raised inside xp_sqlagent_notify: it escapes the batch's TRY/CATCH (by
        // default). msdb's own T-SQL errors are always caught.
        Err(e) if e.from_extended_procedure() && agent.lock().settings.errors_escape_catch => {
            ProcOutcome {
                rc: None,
                err: None,
                items: vec![Item::Message(e.0.clone())],
            }
        }
        Err(e) => ProcOutcome {
            rc: None,
            err: Some(e),
            items: Vec::new(),
        },
    }
}

fn outcome_columns() -> Vec<Column> {
    vec![
        Column::new("rc", SqlType::Int),
        Column::new("err_number", SqlType::Int),
        Column::new("err_message", SqlType::NVarChar(4000)),
    ]
}

fn outcome_values(o: &ProcOutcome) -> Vec<Value> {
    vec![
        Value::opt_int(o.rc),
        Value::opt_int(o.err.as_ref().map(|e| e.number() as i32)),
        Value::opt_str(o.err.as_ref().map(AgentError::message)),
    ]
}

fn job_ref(job_id: Option<Uuid>) -> Result<JobRef, AgentError> {
    job_id
        .map(JobRef::Id)
        .ok_or_else(|| AgentError::identify_job(false))
}

fn start_job(agent: &Agent, conn: &ConnInfo, job_id: Option<Uuid>) -> Reply {
    // Session, watermark and t0 are read before the call, in the same batch.
    let (sess, hwm) = {
        let s = agent.lock();
        let hwm = job_id.map_or(0, |id| s.msdb.history_watermark(id));
        (s.session_for(&conn.caller), hwm)
    };
    let t0 = agent.clock.now_local_seconds();
    let result = job_ref(job_id).and_then(|r| agent.start_job(&conn.caller, &r));
    let o = call_proc(agent, result);
    let mut cols = outcome_columns();
    cols.extend([
        Column::new("agent_session_id", SqlType::Int),
        Column::new("history_watermark", SqlType::Int),
        Column::new("requested_not_before", SqlType::DateTime),
        Column::new("server_now", SqlType::DateTimeOffset),
    ]);
    let mut row = outcome_values(&o);
    row.extend([
        Value::opt_int(sess),
        int(hwm),
        Value::DateTime(t0),
        Value::DateTimeOffset(agent.clock.now_offset()),
    ]);
    let mut items = o.items;
    items.push(Item::ResultSet(ResultSet::new(cols).row(row)));
    Reply::with(items)
}

/// `start_job` whose watermark read timed out behind the history lock: the batch catches
/// 1222 and skips `sp_start_job`.
pub fn start_job_lock_timeout(agent: &Agent, conn: &ConnInfo, m: ServerMessage) -> Reply {
    let sess = agent.lock().session_for(&conn.caller);
    let mut cols = outcome_columns();
    cols.extend([
        Column::new("agent_session_id", SqlType::Int),
        Column::new("history_watermark", SqlType::Int),
        Column::new("requested_not_before", SqlType::DateTime),
        Column::new("server_now", SqlType::DateTimeOffset),
    ]);
    let row = vec![
        Value::Null,
        int(m.number as i32),
        Value::Str(m.text.clone()),
        Value::opt_int(sess),
        Value::Null,
        Value::DateTime(agent.clock.now_local_seconds()),
        Value::DateTimeOffset(agent.clock.now_offset()),
    ];
    let mut reply = Reply::with(vec![Item::ResultSet(ResultSet::new(cols).row(row))]);
    reply.nocount = true;
    reply
}

fn stop_job(agent: &Agent, conn: &ConnInfo, job_id: Option<Uuid>) -> Reply {
    let result = match job_id {
        Some(id) => agent.stop_job(&conn.caller, &JobRef::Id(id)),
        None => Err(AgentError::identify_job(true)),
    };
    let o = call_proc(agent, result);
    let row = outcome_values(&o);
    let mut items = o.items;
    items.push(Item::ResultSet(ResultSet::new(outcome_columns()).row(row)));
    Reply::with(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_order_is_sql_server_order() {
        let a = Uuid::parse_str("FF000000-0000-0000-0000-000000000000").unwrap();
        let b = Uuid::parse_str("00000000-0000-0000-0000-000000000001").unwrap();
        assert!(guid_sort_key(&a) < guid_sort_key(&b));
        assert!(sql_eq("Nightly ETL ", "nightly etl"));
    }
}
