//! SQL Server Agent job steps of subsystem SSIS (`ssisdb.md` §4): the step's command is a
//! dtexec `/ISSERVER` line; the step creates a catalog execution as the Agent's account,
//! sets the `/Par` values, starts it and, with `SYNCHRONIZED`, waits for its end.
//!
//! Assumptions (unconfirmed on a real instance, marked in `ssisdb.md` §9):
//! * `/CALLERINFO SQLAGENT` is stored as the `CALLER_INFO` system parameter `SQLAGENT`.
//! * A failed step's history message carries `Execution ID: <n>, Execution Status:<s>.`;
//!   a successful one does not.
//! * Without `SYNCHRONIZED` the step succeeds as soon as the execution has started.
//! * Stopping the job (`sp_stop_job`) stops the catalog execution too.

use tokio_util::sync::CancellationToken;

use super::model::status;
use super::procedures::text_value;
use super::{Catalog, CatalogError};
use crate::agent::Caller;
use crate::tds::values::Value;

/// What a step command asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCommand {
    pub folder: String,
    pub project: String,
    pub package: String,
    pub server: Option<String>,
    pub env_reference: Option<i64>,
    /// `$Project::` (20), `$Package::` (30) and `$ServerOption::` (50) values, as text.
    pub params: Vec<(i64, String, String)>,
    pub caller_info: Option<String>,
}

/// Splits at whitespace outside `"…"`; `\"` is an escaped quote inside a token.
fn tokens(command: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push_str("\\\"");
            }
            '"' => {
                quoted = !quoted;
                cur.push('"');
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A token without its quoting (`"\"x\""` → `x`).
fn unquote(t: &str) -> String {
    t.replace("\\\"", "").replace('"', "")
}

/// Parses an `/ISSERVER "\"\SSISDB\folder\project\package.dtsx\"" /SERVER … /Par … ` line.
pub fn parse(command: &str) -> Result<StepCommand, String> {
    let toks = tokens(command);
    let mut cmd = StepCommand {
        folder: String::new(),
        project: String::new(),
        package: String::new(),
        server: None,
        env_reference: None,
        params: Vec::new(),
        caller_info: None,
    };
    let mut i = 0;
    while i < toks.len() {
        let opt = toks[i].to_ascii_uppercase();
        let arg = toks.get(i + 1).map(|t| unquote(t));
        i += 2;
        match (opt.as_str(), arg) {
            ("/ISSERVER", Some(path)) => {
                let parts: Vec<&str> = path.split('\\').filter(|p| !p.is_empty()).collect();
                let [db, folder, project, package] = parts[..] else {
                    return Err(format!(
                        "/ISSERVER path {path:?} is not \\SSISDB\\folder\\project\\package"
                    ));
                };
                if !db.eq_ignore_ascii_case("SSISDB") {
                    return Err(format!("/ISSERVER path {path:?} is not in SSISDB"));
                }
                (cmd.folder, cmd.project, cmd.package) =
                    (folder.into(), project.into(), package.into());
            }
            ("/SERVER", Some(s)) => cmd.server = Some(s),
            ("/ENVREFERENCE", Some(r)) => cmd.env_reference = r.trim().parse().ok(),
            ("/CALLERINFO", Some(c)) => cmd.caller_info = Some(c),
            ("/PAR", Some(p)) => {
                let (name, value) = p
                    .split_once(';')
                    .ok_or_else(|| format!("/Par {p:?} has no value"))?;
                let (kind, name) = if let Some(n) = name.strip_prefix("$ServerOption::") {
                    (50, n.split('(').next().unwrap_or(n))
                } else if let Some(n) = name.strip_prefix("$Project::") {
                    (20, n)
                } else if let Some(n) = name.strip_prefix("$Package::") {
                    (30, n)
                } else {
                    (30, name)
                };
                cmd.params.push((kind, name.to_string(), value.to_string()));
            }
            ("/REPORTING", Some(_)) | ("/ENVREFERENCE", None) => {}
            (_, _) => i -= 1, // a flag without a value
        }
    }
    if cmd.package.is_empty() {
        return Err("no /ISSERVER path".into());
    }
    Ok(cmd)
}

/// How an SSIS step attempt ended.
#[derive(Debug)]
pub enum StepEnd {
    Finished { ok: bool, message: String },
    Stopped,
    SessionEnded,
}

fn failed_before_start(account: &str, e: &CatalogError) -> StepEnd {
    StepEnd::Finished {
        ok: false,
        message: format!(
            "Executed as user: {account}. Failed to execute IS server package because of error 0x80131904. Server: SQL1, Description: {}  The step failed.",
            e.message()
        ),
    }
}

/// Runs one attempt of an SSIS step as `account`.
pub async fn run_step(
    cat: &Catalog,
    account: &str,
    command: &str,
    stop: &CancellationToken,
    session: &CancellationToken,
) -> StepEnd {
    let cmd = match parse(command) {
        Ok(c) => c,
        Err(e) => {
            return StepEnd::Finished {
                ok: false,
                message: format!(
                    "Executed as user: {account}. The command line parameters are invalid: {e}  The step failed."
                ),
            };
        }
    };
    let caller = Caller::windows_account(account);
    let started_at = cat.clock.now_offset();
    let mut synchronized = false;
    let created = cat.create_execution(
        &caller,
        Some(&cmd.folder),
        Some(&cmd.project),
        Some(&cmd.package),
        cmd.env_reference,
        false,
    );
    let id = match created {
        Ok(id) => id,
        Err(e) => return failed_before_start(account, &e),
    };
    let mut settings = cmd.params.clone();
    if let Some(c) = &cmd.caller_info {
        settings.push((50, "CALLER_INFO".into(), c.clone()));
    }
    for (kind, name, text) in &settings {
        let ty = cat
            .parameter_type(id, *kind, name)
            .unwrap_or_else(|| "String".into());
        let value = text_value(&ty, text).unwrap_or(Value::Str(text.clone()));
        if *kind == 50 && name == "SYNCHRONIZED" {
            synchronized = matches!(value, Value::Bit(true));
        }
        if let Err(e) = cat.set_parameter(&caller, id, *kind, name, &value) {
            return failed_before_start(account, &e);
        }
    }
    if let Err(e) = cat.start_execution(&caller, id) {
        return failed_before_start(account, &e);
    }
    if !synchronized {
        return StepEnd::Finished {
            ok: true,
            message: format!(
                "Executed as user: {account}. The package execution was started (Execution ID: {id}).  The step succeeded."
            ),
        };
    }
    let end = tokio::select! {
        biased;
        _ = session.cancelled() => return StepEnd::SessionEnded,
        s = cat.wait_status(id, status::is_terminal) => s,
        _ = stop.cancelled() => {
            stop_execution(cat, &caller, id).await;
            return StepEnd::Stopped;
        }
    };
    let end = end.unwrap_or(status::ENDED_UNEXPECTEDLY);
    let finished = cat.clock.now_offset();
    let elapsed = (finished - started_at).num_milliseconds() as f64 / 1000.0;
    let times = format!(
        "Started:  {}  Finished: {}  Elapsed:  {elapsed:.3} seconds.",
        started_at.format("%-I:%M:%S %p"),
        finished.format("%-I:%M:%S %p")
    );
    let head = format!(
        "Executed as user: {account}. Microsoft (R) SQL Server Execute Package Utility  Version 16.0.1000.6 for 64-bit  Copyright (C) 2022 Microsoft. All rights reserved."
    );
    if end == status::SUCCEEDED {
        StepEnd::Finished {
            ok: true,
            message: format!(
                "{head}    {times}  The package execution finished.  The step succeeded."
            ),
        }
    } else {
        StepEnd::Finished {
            ok: false,
            message: format!(
                "{head}    Package execution on IS Server failed. Execution ID: {id}, Execution Status:{end}.  To view the details for the execution, right-click on the Integration Services Catalog, and open the [All Executions] report  {times}  The package execution failed.  The step failed."
            ),
        }
    }
}

/// Stops the step's execution; a pending one cannot be stopped yet (27124), so wait for it
/// to run first.
async fn stop_execution(cat: &Catalog, caller: &Caller, id: i64) {
    loop {
        match cat.status(id) {
            Some(status::PENDING) => {
                cat.wait_status(id, |s| s != status::PENDING).await;
            }
            Some(status::RUNNING) => {
                let _ = cat.stop_operation(caller, Some(id));
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ssms_generated_command() {
        let c = parse(
            r#"/ISSERVER "\"\SSISDB\ETL\Warehouse\Load Sales.dtsx\"" /SERVER "\"SQL1\"" /ENVREFERENCE 3 /Par "\"$Project::Region\"";"\"EU West\"" /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";1 /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E"#,
        )
        .unwrap();
        assert_eq!(
            (c.folder.as_str(), c.project.as_str(), c.package.as_str()),
            ("ETL", "Warehouse", "Load Sales.dtsx")
        );
        assert_eq!(c.server.as_deref(), Some("SQL1"));
        assert_eq!(c.env_reference, Some(3));
        assert_eq!(c.caller_info.as_deref(), Some("SQLAGENT"));
        assert_eq!(
            c.params,
            [
                (20, "Region".to_string(), "EU West".to_string()),
                (50, "LOGGING_LEVEL".to_string(), "1".to_string()),
                (50, "SYNCHRONIZED".to_string(), "True".to_string()),
            ]
        );
        assert!(parse("/SERVER x").is_err());
    }
}
