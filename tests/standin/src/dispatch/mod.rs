//! Request dispatch. The stand-in recognises agentfleet's catalogued queries by their
//! first-line marker `-- agentfleet:<name>`, checks their text against msdb's schema
//! (`tsql`: unknown columns, parameters, objects fail as on a real server), reads their
//! parameters by name and answers from the simulated msdb. Anything else gets a clear error, never a hang.

mod catalog;
pub mod objects;
mod params;
mod poll;
mod probes;
mod ssis;
mod ssis_poll;

use crate::agent::{Agent, Caller};
use crate::response::Reply;
use crate::tds::rpc::{ProcRef, RpcCall, SP_EXECUTESQL};
use crate::tds::tokens::ServerMessage;
use crate::tds::values::Value;

pub use catalog::MARKERS;
pub use params::Params;
pub use ssis::MARKERS as SSIS_MARKERS;

/// Who is on the connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub caller: Caller,
    pub app_name: String,
    pub spid: u16,
    /// The database the login asked for (`DB_NAME()`).
    pub database: String,
}

/// A request reduced to what dispatch needs.
#[derive(Debug, Clone)]
pub struct Request {
    /// Batch text or sp_executesql's `@stmt`; empty for a named procedure call.
    pub text: String,
    /// `@P1`… for sp_executesql; the bound parameters for a named procedure.
    pub params: Vec<crate::tds::rpc::Param>,
    /// `Some` for a named-procedure RPC (`tiberius::Command`).
    pub procedure: Option<String>,
}

impl Request {
    pub fn batch(text: String) -> Self {
        Self {
            text,
            params: Vec::new(),
            procedure: None,
        }
    }

    pub fn from_rpc(call: RpcCall) -> Self {
        match call.proc {
            ProcRef::Id(SP_EXECUTESQL) => {
                let mut it = call.params.into_iter();
                let text = match it.next().map(|p| p.value) {
                    Some(Value::Str(s)) => s,
                    _ => String::new(),
                };
                let _declarations = it.next();
                Self {
                    text,
                    params: it.collect(),
                    procedure: None,
                }
            }
            ProcRef::Id(id) => Self {
                text: String::new(),
                params: call.params,
                procedure: Some(format!("#{id}")),
            },
            ProcRef::Name(name) => Self {
                text: String::new(),
                params: call.params,
                procedure: Some(name),
            },
        }
    }

    /// The `-- agentfleet:<name>` (or `-- standin:<name>`) marker of the first line.
    pub fn marker(&self) -> Option<&str> {
        let first = self.text.trim_start().lines().next()?.trim();
        first
            .strip_prefix("-- agentfleet:")
            .or_else(|| first.strip_prefix("-- standin:"))
            .map(str::trim)
    }
}

/// The error every uncatalogued request gets.
pub fn unsupported(what: &str) -> ServerMessage {
    ServerMessage::new(
        50000,
        16,
        format!(
            "sqlagent-standin: unsupported batch ({what}); it only answers agentfleet's catalogued queries (first line `-- agentfleet:<name>`). It is a test stand-in, not SQL Server."
        ),
    )
}

pub fn handle(agent: &Agent, conn: &ConnInfo, req: &Request) -> Reply {
    if let Some(proc_name) = &req.procedure {
        return probes::named_procedure(agent, conn, proc_name, &Params::new(&req.params));
    }
    let p = Params::new(&req.params);
    let first = req.text.trim_start().lines().next().unwrap_or("").trim();
    if let Some(name) = first.strip_prefix("-- agentfleet:") {
        // Compiled like a real server would: a wrong column or parameter fails the batch.
        if let Err(e) = crate::tsql::check_cached(&req.text) {
            return Reply::error(e);
        }
        if let Some(object) = objects::first_denied(&req.text, |o| conn.caller.may_use(o)) {
            return Reply::error(objects::permission_denied(&object));
        }
        return catalog::handle(agent, conn, name.trim(), &p)
            .or_else(|| ssis::handle(agent, conn, name.trim(), &p))
            .unwrap_or_else(|| {
                Reply::error(unsupported(&format!(
                    "unknown marker agentfleet:{}",
                    name.trim()
                )))
            });
    }
    if let Some(rest) = first.strip_prefix("-- standin:") {
        return probes::probe(rest.trim(), &p);
    }
    probes::simple(&req.text).unwrap_or_else(|| {
        let head: String = req.text.chars().take(60).collect();
        Reply::error(unsupported(&format!("no marker; text starts {head:?}")))
    })
}

/// Waits for the history lock if the request reads `sysjobhistory`, as SQL Server would
/// with the batch's `SET LOCK_TIMEOUT`. `false`: the wait timed out.
pub async fn wait_history_lock(agent: &Agent, req: &Request) -> bool {
    match objects::history_read(&req.text) {
        Some(timeout) => agent.history_lock.acquire(timeout).await,
        None => true,
    }
}

/// The answer to a request whose `sysjobhistory` read timed out: error 1222, or for
/// `start_job` (which catches it around its watermark read and then skips `sp_start_job`)
/// its result row with `err_number` 1222.
pub fn lock_timeout_reply(agent: &Agent, conn: &ConnInfo, req: &Request) -> Reply {
    let m = ServerMessage::new(1222, 16, "Lock request time out period exceeded.");
    match req.marker() {
        Some("start_job") => catalog::start_job_lock_timeout(agent, conn, m),
        _ => Reply::error(m),
    }
}
