//! Answers to the SSIS catalogue (sidecar/src/backend/ssis/queries.rs): start, stop, the
//! token and Agent-step look-ups and the visibility check, computed from the simulated
//! catalog with the columns and types documented there. The poll is in `ssis_poll`.

use super::catalog::sql_eq;
use super::{ConnInfo, Params, ssis_poll};
use crate::agent::Agent;
use crate::response::{Item, Reply, ResultSet};
use crate::ssisdb::CatalogError;
use crate::ssisdb::model::{Time, may_read};
use crate::ssisdb::procedures::text_value;
use crate::tds::tokens::{Column, ServerMessage};
use crate::tds::values::{SYSNAME, SqlType, Value};

/// Every marker this module serves.
pub const MARKERS: &[&str] = &[
    "ssis_poll",
    "ssis_find_agent_execution",
    "ssis_start",
    "ssis_find_by_token",
    "ssis_stop",
    "ssis_visibility",
];

pub fn handle(agent: &Agent, conn: &ConnInfo, marker: &str, p: &Params<'_>) -> Option<Reply> {
    let result = match marker {
        "ssis_poll" => ssis_poll::poll(agent, conn, p),
        "ssis_find_agent_execution" => find_agent_execution(agent, conn, p),
        "ssis_start" => start(agent, conn, p),
        "ssis_find_by_token" => find_by_token(agent, conn, p),
        "ssis_stop" => stop(agent, conn, p),
        "ssis_visibility" => Ok(visibility(agent, conn)),
        _ => return None,
    };
    let mut reply = result.unwrap_or_else(Reply::error);
    reply.nocount = true;
    Some(reply)
}

fn one_row(columns: Vec<Column>, row: Vec<Value>) -> Reply {
    Reply::with(vec![Item::ResultSet(ResultSet::new(columns).row(row))])
}

/// `CONVERT(<type>, @s)` failing on text: error 245 as SQL Server words it.
fn conversion_failed(text: &str, ssis_type: &str) -> ServerMessage {
    let sql = match ssis_type {
        "Boolean" => "bit",
        "Byte" => "tinyint",
        "Int16" => "smallint",
        "Int64" => "bigint",
        "Decimal" => "numeric",
        "Double" => "float",
        "DateTime" => "datetime2",
        _ => "int",
    };
    ServerMessage::new(
        245,
        16,
        format!(
            "Conversion failed when converting the nvarchar value '{text}' to data type {sql}."
        ),
    )
}

/// The `@P8` JSON of `ssis_start`: (object type, name, value, SSIS type) per element.
type ParamSpec = (Option<i64>, Option<String>, Option<String>, Option<String>);

fn param_specs(json: Option<&str>) -> Result<Vec<ParamSpec>, ServerMessage> {
    let v: serde_json::Value = serde_json::from_str(json.unwrap_or("[]")).map_err(|e| {
        ServerMessage::new(
            13609,
            16,
            format!("JSON text is not properly formatted. Unexpected character is found at position {}.", e.column().saturating_sub(1)),
        )
    })?;
    let text = |x: Option<&serde_json::Value>| match x {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    Ok(match v {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| {
                (
                    i.get("t").and_then(serde_json::Value::as_i64),
                    text(i.get("n")),
                    text(i.get("v")),
                    text(i.get("ty")),
                )
            })
            .collect(),
        _ => Vec::new(),
    })
}

fn start(agent: &Agent, conn: &ConnInfo, p: &Params<'_>) -> Result<Reply, ServerMessage> {
    let (folder, project, package) = (p.text("@P1")?, p.text("@P2")?, p.text("@P3")?);
    let (reference, use32, log) = (p.int("@P4")?, p.int("@P5")?, p.int("@P6")?);
    let (token, json) = (p.text("@P7")?, p.text("@P8")?);
    let cat = &agent.catalog;
    let caller = &conn.caller;
    let columns = vec![
        Column::new("execution_id", SqlType::BigInt),
        Column::new("stage", SqlType::NVarChar(16)),
        Column::new("error_number", SqlType::Int),
        Column::new("error_severity", SqlType::Int),
        Column::new("error_state", SqlType::Int),
        Column::new("error_message", SqlType::NVarChar(4000)),
    ];
    let row = |id: Option<i64>, stage: &str, e: Option<&ServerMessage>| {
        vec![
            id.map_or(Value::Null, Value::BigInt),
            Value::Str(stage.to_string()),
            Value::opt_int(e.map(|e| e.number as i32)),
            Value::opt_int(e.map(|e| i32::from(e.class))),
            Value::opt_int(e.map(|e| i32::from(e.state))),
            Value::opt_str(e.map(|e| e.text.as_str())),
        ]
    };
    let id = match cat.create_execution(
        caller,
        folder.as_deref(),
        project.as_deref(),
        package.as_deref(),
        reference,
        use32 == Some(1),
    ) {
        Ok(id) => id,
        Err(CatalogError(e)) => return Ok(one_row(columns, row(None, "create", Some(&e)))),
    };
    let params = || -> Result<(), ServerMessage> {
        let set = |kind: i64, name: &str, v: Value| {
            cat.set_parameter(caller, id, kind, name, &v)
                .map_err(|e| e.0)
        };
        set(
            50,
            "LOGGING_LEVEL",
            log.map_or(Value::Null, |l| Value::Int(l as i32)),
        )?;
        set(50, "SYNCHRONIZED", Value::Bit(false))?;
        set(
            50,
            "CALLER_INFO",
            token.clone().map_or(Value::Null, Value::Str),
        )?;
        for (t, n, v, ty) in param_specs(json.as_deref())? {
            let ty = ty.unwrap_or_default();
            let value = match &v {
                None => Value::Null,
                Some(text) => text_value(&ty, text).ok_or_else(|| conversion_failed(text, &ty))?,
            };
            match (t, n) {
                (Some(t), Some(n)) => set(t, &n, value)?,
                _ => return Err(CatalogError::null_input("set_execution_parameter_value").0),
            }
        }
        Ok(())
    };
    if let Err(e) = params() {
        return Ok(one_row(columns, row(Some(id), "params", Some(&e))));
    }
    // SYNCHRONIZED was just set to 0: start_execution returns at once.
    match cat.start_execution(caller, id) {
        Ok(_) => Ok(one_row(columns, row(Some(id), "started", None))),
        Err(CatalogError(e)) => Ok(one_row(columns, row(Some(id), "start", Some(&e)))),
    }
}

fn stop(agent: &Agent, conn: &ConnInfo, p: &Params<'_>) -> Result<Reply, ServerMessage> {
    let id = p.int("@P1")?;
    let cat = &agent.catalog;
    let result = cat.stop_operation(&conn.caller, id);
    let status = id.and_then(|id| {
        let s = cat.lock();
        let op = s.operations.get(&id)?;
        (s.executions.contains_key(&id) && may_read(&conn.caller, op)).then_some(op.status)
    });
    let e = result.err().map(|e| e.0);
    Ok(one_row(
        vec![
            Column::new("rc", SqlType::Int),
            Column::new("error_number", SqlType::Int),
            Column::new("error_severity", SqlType::Int),
            Column::new("error_message", SqlType::NVarChar(4000)),
            Column::new("status", SqlType::Int),
        ],
        vec![
            if e.is_none() {
                Value::Int(0)
            } else {
                Value::Null
            },
            Value::opt_int(e.as_ref().map(|e| e.number as i32)),
            Value::opt_int(e.as_ref().map(|e| i32::from(e.class))),
            Value::opt_str(e.as_ref().map(|e| e.text.as_str())),
            Value::opt_int(status),
        ],
    ))
}

/// An execution the login may read (RLS), with what the two look-ups compare.
struct Visible {
    id: i64,
    status: i32,
    created: Time,
    caller_name: String,
    server_name: String,
    caller_info: Option<String>,
    execution: crate::ssisdb::model::Execution,
}

fn visible_executions(agent: &Agent, conn: &ConnInfo) -> Vec<Visible> {
    let s = agent.catalog.lock();
    s.executions
        .values()
        .filter_map(|e| {
            let op = s.operations.get(&e.id)?;
            may_read(&conn.caller, op).then(|| Visible {
                id: e.id,
                status: op.status,
                created: op.created_time,
                caller_name: op.caller_name.clone(),
                server_name: op.server_name.clone(),
                caller_info: s.caller_info(e.id),
                execution: e.clone(),
            })
        })
        .collect()
}

fn find_by_token(agent: &Agent, conn: &ConnInfo, p: &Params<'_>) -> Result<Reply, ServerMessage> {
    let token = p.text("@P1")?;
    let mut rs = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("status", SqlType::Int).not_null(),
        Column::new("created_time", SqlType::DateTimeOffset).not_null(),
    ]);
    for v in visible_executions(agent, conn) {
        if let (Some(info), Some(token)) = (&v.caller_info, &token)
            && sql_eq(info, token)
        {
            rs.rows.push(vec![
                Value::BigInt(v.id),
                Value::Int(v.status),
                Value::DateTimeOffset(v.created),
            ]);
        }
    }
    Ok(Reply::with(vec![Item::ResultSet(rs)]))
}

fn find_agent_execution(
    agent: &Agent,
    conn: &ConnInfo,
    p: &Params<'_>,
) -> Result<Reply, ServerMessage> {
    let (folder, project, package) = (p.text("@P1")?, p.text("@P2")?, p.text("@P3")?);
    let since: Option<Time> = match p.get("@P4") {
        Some(Value::DateTimeOffset(t)) => Some(*t),
        // datetime2 converts to datetimeoffset with offset +00:00.
        Some(Value::DateTime(t)) => Some(t.and_utc().fixed_offset()),
        Some(Value::Null) => None,
        Some(_) => {
            return Err(ServerMessage::new(
                206,
                16,
                "Operand type clash: the @P4 value is incompatible with datetimeoffset",
            ));
        }
        None => {
            return Err(ServerMessage::new(
                137,
                15,
                "Must declare the scalar variable \"@P4\".",
            ));
        }
    };
    let (caller, envref) = (p.text("@P5")?, p.int("@P6")?);
    let mut rs = ResultSet::new(vec![
        Column::new("execution_id", SqlType::BigInt).not_null(),
        Column::new("status", SqlType::Int).not_null(),
        Column::new("created_time", SqlType::DateTimeOffset).not_null(),
        Column::new("caller_name", SYSNAME),
        Column::new("server_name", SqlType::NVarChar(128)),
    ]);
    let eq = |a: &str, b: &Option<String>| b.as_deref().is_some_and(|b| sql_eq(a, b));
    for v in visible_executions(agent, conn) {
        let e = &v.execution;
        let matches = eq(&e.folder, &folder)
            && eq(&e.project, &project)
            && eq(&e.package, &package)
            && since.is_some_and(|t| v.created >= t)
            && caller.as_ref().is_none_or(|c| sql_eq(&v.caller_name, c))
            && envref.is_none_or(|r| e.reference_id == Some(r))
            // Assumption: an Agent step stores CALLER_INFO = 'SQLAGENT' (ssisdb.md §4.1).
            && v.caller_info.as_deref().is_some_and(|i| sql_eq(i, "SQLAGENT"));
        if matches {
            rs.rows.push(vec![
                Value::BigInt(v.id),
                Value::Int(v.status),
                Value::DateTimeOffset(v.created),
                Value::Str(v.caller_name),
                Value::Str(v.server_name),
            ]);
        }
    }
    Ok(Reply::with(vec![Item::ResultSet(rs)]))
}

fn visibility(agent: &Agent, conn: &ConnInfo) -> Reply {
    let c = &conn.caller;
    let (level, retention, compat) = {
        let s = agent.catalog.lock();
        (
            s.settings.server_logging_level,
            s.settings.retention_window,
            s.settings.compatibility_level,
        )
    };
    // A Windows session reports its domain and user in sys.dm_exec_sessions.
    let (domain, user) = match c.login.split_once('\\') {
        Some((d, u)) if c.windows => (Some(d.to_string()), Some(u.to_string())),
        _ => (None, None),
    };
    let flag = |b: bool| Value::Int(i32::from(b));
    let names = [
        ("login_name", SqlType::NVarChar(128)),
        ("is_windows_auth", SqlType::Int),
        ("nt_domain", SqlType::NVarChar(128)),
        ("nt_user_name", SqlType::NVarChar(128)),
        ("database_name", SqlType::NVarChar(128)),
        ("is_sysadmin", SqlType::Int),
        ("is_ssis_admin", SqlType::Int),
        ("is_ssis_logreader", SqlType::Int),
        ("can_create_execution", SqlType::Int),
        ("can_start_execution", SqlType::Int),
        ("can_stop_operation", SqlType::Int),
        ("ssisdb_compatibility_level", SqlType::Int),
        ("server_logging_level", SqlType::Int),
        ("retention_window_days", SqlType::Int),
    ];
    let columns = names.iter().map(|(n, t)| Column::new(n, *t)).collect();
    let may = |o: &str| c.may_use(o);
    one_row(
        columns,
        vec![
            Value::Str(c.login.clone()),
            flag(c.windows),
            Value::opt_str(domain.as_deref()),
            Value::opt_str(user.as_deref()),
            Value::Str(conn.database.clone()),
            flag(c.is_sysadmin()),
            flag(c.ssis_admin),
            flag(c.ssis_logreader),
            flag(may("ssisdb.catalog.create_execution")),
            flag(may("ssisdb.catalog.start_execution")),
            flag(may("ssisdb.catalog.stop_operation")),
            Value::Int(compat),
            Value::Int(level),
            Value::Int(retention),
        ],
    )
}
