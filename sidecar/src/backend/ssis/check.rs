//! `sidecar check` for the SSIS catalog: what the login can see in SSISDB, and whether the
//! catalog jobs can start packages with it.
use super::queries;
use crate::backend::sqlagent::SqlAgentConfig;
use crate::backend::sqlagent::check::{CheckItem, CheckStatus};
use crate::backend::sqlagent::connection::{Conn, Settings};
use crate::backend::sqlagent::rows;

fn item(name: &str, status: CheckStatus, detail: impl Into<String>) -> CheckItem {
    CheckItem {
        name: format!("ssis {name}"),
        status,
        detail: detail.into(),
    }
}

/// `section`: "ssis" or "sqlagent" (whose connection is checked); `catalog_jobs`: whether
/// the config has catalog jobs (which need Windows authentication and EXECUTE).
pub async fn check(cfg: &SqlAgentConfig, section: &str, catalog_jobs: bool) -> Vec<CheckItem> {
    use CheckStatus::{Fail, Ok as Pass, Warn};
    let mut out = Vec::new();
    let settings = match Settings::from_config(cfg) {
        Ok(s) => s.with_database("SSISDB"),
        Err(e) => {
            out.push(item("connection", Fail, format!("[{section}] {e}")));
            return out;
        }
    };
    let mut conn = Conn::new(settings.clone());
    let row = match conn.query(queries::SSIS_VISIBILITY, &[]).await {
        Ok(sets) => sets.into_iter().next().and_then(|s| s.into_iter().next()),
        Err(e) => {
            let status = if catalog_jobs { Fail } else { Warn };
            out.push(item("catalog", status, format!("cannot read SSISDB on {} ({e}); the login needs a user in SSISDB (catalog progress of SSIS steps is not shown otherwise)", settings.address())));
            return out;
        }
    };
    let Some(r) = row else {
        out.push(item("catalog", Warn, "ssis_visibility returned no row"));
        return out;
    };
    let has = |c: &str| rows::int(&r, c).unwrap_or(0) != 0;
    let login = rows::string(&r, "login_name").unwrap_or_default();
    let windows = has("is_windows_auth");
    let auth = if windows {
        "Windows authentication"
    } else {
        "SQL Server authentication"
    };
    let sees = if has("is_sysadmin") {
        "sysadmin: sees and may stop every execution"
    } else if has("is_ssis_admin") {
        "ssis_admin: sees and may stop every execution"
    } else if has("is_ssis_logreader") {
        "ssis_logreader: sees every execution (Agent-started ones too), stops only its own"
    } else {
        "only the executions it created: Agent SSIS steps' executions stay invisible (grant ssis_logreader)"
    };
    let follow_status = if has("is_sysadmin") || has("is_ssis_admin") || has("is_ssis_logreader") {
        Pass
    } else {
        Warn
    };
    out.push(item(
        "visibility",
        follow_status,
        format!("{login} ({auth}) — {sees}"),
    ));
    if catalog_jobs {
        let can = has("can_create_execution") && has("can_start_execution");
        match (windows, can) {
            (true, true) => out.push(item("start packages", Pass, format!("catalog jobs can start packages as {login}{}", if has("can_stop_operation") { " and stop them" } else { "" }))),
            (false, _) => out.push(item("start packages", Fail, format!("{login} uses SQL Server authentication: SSISDB refuses to start or stop packages for it (error 27123); set auth = \"windows\" in [{section}] (on Linux with user = 'DOMAIN\\name' and a password source)"))),
            (true, false) => out.push(item("start packages", Fail, format!("{login} lacks EXECUTE on SSISDB.catalog.create_execution/start_execution: add it to SSISDB (ssis_admin, or a user granted EXECUTE on the projects)"))),
        }
    }
    match rows::int(&r, "ssisdb_compatibility_level") {
        Some(level) if level < 130 => out.push(item("compatibility", Fail, format!("SSISDB has compatibility level {level}; the poll uses OPENJSON, which needs 130 or more"))),
        _ => {}
    }
    if let Some(level) = rows::int(&r, "server_logging_level") {
        out.push(item("logging level", Pass, format!("server default {level} (1 Basic logs task starts and messages; 3 Verbose adds data-flow row counts)")));
    }
    out
}
