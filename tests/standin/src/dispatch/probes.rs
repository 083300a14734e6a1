//! Protocol probes for the stand-in's own tests (`-- standin:<name> [arg]`), the simple probes a
//! driver may send (`SELECT @@VERSION`, `SELECT 1`), and named-procedure RPCs for
//! sp_start_job / sp_stop_job.

use std::time::Duration;

use chrono::{DateTime, NaiveDate};
use uuid::Uuid;

use super::{ConnInfo, Params, unsupported};
use crate::agent::{Agent, AgentError, JobRef};
use crate::response::{Item, Reply, ResultSet};
use crate::tds::tokens::{Column, ServerMessage};
use crate::tds::values::{SqlType, Value};

pub const VERSION: &str = "Microsoft SQL Server 2022 (RTM) - 16.0.1000.6 (X64) -- sqlagent-standin, a test stand-in that simulates SQL Server Agent; not SQL Server";

fn ints(name: &str, values: &[i32]) -> Item {
    let mut rs = ResultSet::new(vec![Column::new(name, SqlType::Int)]);
    rs.rows = values.iter().map(|v| vec![Value::Int(*v)]).collect();
    Item::ResultSet(rs)
}

/// One row of every column type the catalogue uses, then a row of NULLs.
fn types() -> Item {
    let cols = vec![
        Column::new("i32", SqlType::Int),
        Column::new("i64", SqlType::BigInt),
        Column::new("u8", SqlType::TinyInt),
        Column::new("i16", SqlType::SmallInt),
        Column::new("bit", SqlType::Bit),
        Column::new("text", SqlType::NVarChar(128)),
        Column::new("long_text", SqlType::NVarCharMax),
        Column::new("guid", SqlType::UniqueIdentifier),
        Column::new("dt", SqlType::DateTime),
        Column::new("dt2", SqlType::DateTime2),
        Column::new("dto", SqlType::DateTimeOffset),
        Column::new("f", SqlType::Float),
    ];
    let when = NaiveDate::from_ymd_opt(2024, 3, 7)
        .and_then(|d| d.and_hms_milli_opt(9, 30, 5, 120))
        .expect("valid timestamp");
    let dto = DateTime::parse_from_rfc3339("2024-03-07T09:30:05+02:00").expect("valid timestamp");
    let full = vec![
        Value::Int(-7),
        Value::BigInt(1 << 40),
        Value::TinyInt(200),
        Value::SmallInt(-3),
        Value::Bit(true),
        Value::Str("Grüße".into()),
        Value::Str("x".repeat(5000)),
        Value::Guid(Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").expect("valid uuid")),
        Value::DateTime(when),
        Value::DateTime(when),
        Value::DateTimeOffset(dto),
        Value::Float(1.5),
    ];
    let nulls = vec![Value::Null; cols.len()];
    Item::ResultSet(ResultSet::new(cols).row(full).row(nulls))
}

/// One row per decoded parameter: name and the decoded value in debug form.
fn echo(p: &Params<'_>) -> Item {
    let mut rs = ResultSet::new(vec![
        Column::new("name", SqlType::NVarChar(128)),
        Column::new("value", SqlType::NVarCharMax),
    ]);
    for param in p.all() {
        rs.rows.push(vec![
            Value::Str(param.name.clone()),
            Value::Str(format!("{:?}", param.value)),
        ]);
    }
    Item::ResultSet(rs)
}

pub fn probe(spec: &str, p: &Params<'_>) -> Reply {
    let (name, arg) = spec.split_once(' ').unwrap_or((spec, ""));
    let n: u64 = arg.trim().parse().unwrap_or(0);
    let probe_error = || {
        ServerMessage::new(50000, 16, "probe error")
            .with_state(3)
            .in_procedure("standin_probe", 7)
    };
    let items = match name {
        "empty" => vec![],
        "types" => vec![types()],
        "echo" => vec![echo(p)],
        "multi" => vec![
            ints("a", &[1]),
            Item::Message(ServerMessage::new(50001, 0, "between result sets")),
            ints("b", &[]),
            ints("c", &[3]),
        ],
        "error" => vec![Item::Message(probe_error())],
        "rows_then_error" => vec![ints("x", &[1]), Item::Message(probe_error())],
        "rowcount" => vec![Item::RowCount(3), Item::RowCount(2)],
        "many" => vec![ints("n", &(0..n as i32).collect::<Vec<_>>())],
        "drop_mid" => vec![ints("n", &(0..200).collect::<Vec<_>>()), Item::Disconnect],
        "hold" => vec![ints("n", &[1, 2, 3]), Item::HoldUntilAttention],
        "sleep" => vec![Item::Pause(Duration::from_millis(n)), ints("slept", &[1])],
        _ => return Reply::error(unsupported(&format!("unknown probe standin:{name}"))),
    };
    Reply::with(items)
}

/// Tiny fixed statements drivers and humans send to check a connection.
pub fn simple(text: &str) -> Option<Reply> {
    let t = text
        .trim()
        .trim_end_matches(';')
        .trim()
        .to_ascii_lowercase();
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    let item = match t.as_str() {
        "select @@version" => {
            let rs = ResultSet::new(vec![Column::new("", SqlType::NVarChar(300))])
                .row(vec![Value::Str(VERSION.into())]);
            Item::ResultSet(rs)
        }
        "select 1" => Item::ResultSet(
            ResultSet::new(vec![Column::new("", SqlType::Int).not_null()]).row(vec![Value::Int(1)]),
        ),
        "" => return Some(Reply::default()),
        _ => return None,
    };
    Some(Reply::with(vec![item]))
}

/// `Command::new("msdb.dbo.sp_start_job")` etc.: INFO + return status 0, or ERROR + 1.
pub fn named_procedure(agent: &Agent, conn: &ConnInfo, name: &str, p: &Params<'_>) -> Reply {
    let short = name
        .rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    let stop = match short.as_str() {
        "sp_start_job" => false,
        "sp_stop_job" => true,
        "sp_standin_echo" => return echo_procedure(p),
        _ => {
            return Reply::error(ServerMessage::new(
                2812,
                16,
                format!("Could not find stored procedure '{name}'."),
            ));
        }
    };
    let id = p.get("@job_id").filter(|v| !v.is_null());
    let job_name = p.get("@job_name").filter(|v| !v.is_null());
    let job = match (id, job_name) {
        (Some(_), None) => p.guid("@job_id").map(|g| g.map(JobRef::Id)),
        (None, Some(_)) => p.text("@job_name").map(|n| n.map(JobRef::Name)),
        _ => Ok(None),
    };
    let job = match job {
        Ok(Some(j)) => j,
        Ok(None) => return failed(AgentError::identify_job(stop).0),
        Err(e) => return failed(e),
    };
    let result = if stop {
        agent.stop_job(&conn.caller, &job)
    } else {
        agent.start_job(&conn.caller, &job)
    };
    match result {
        Ok(info) => {
            let number = if stop { 14254 } else { 14243 };
            Reply::with(vec![Item::Message(ServerMessage::new(number, 0, info))])
        }
        Err(e) => failed(e.0),
    }
}

fn failed(m: ServerMessage) -> Reply {
    let mut r = Reply::error(m);
    r.return_status = 1;
    r
}

/// `sp_standin_echo`: returns every OUTPUT parameter with the value it was sent, and return
/// status 7 (a probe for RETURNVALUE/RETURNSTATUS handling).
fn echo_procedure(p: &Params<'_>) -> Reply {
    let mut r = Reply::default();
    for (i, param) in p.all().iter().enumerate() {
        if let (true, Some(ty)) = (param.output, param.ty) {
            r.outputs
                .push((i as u16 + 1, param.name.clone(), ty, param.value.clone()));
        }
    }
    r.return_status = 7;
    r
}
