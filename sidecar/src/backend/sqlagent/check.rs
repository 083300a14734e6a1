//! `sidecar check` for the `[sqlagent]` section: what can be verified without starting a job.
use super::SqlAgentConfig;
use super::catalog::JobFilter;
use super::connection::{Conn, Settings, SqlError};
use super::queries;
use super::rows;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct CheckItem {
    /// What was checked: "sqlagent config", "sqlagent reachable", ...
    pub name: String,
    pub status: CheckStatus,
    /// What was found, and on failure what to do.
    pub detail: String,
}

fn item(name: &str, status: CheckStatus, detail: impl Into<String>) -> CheckItem {
    CheckItem {
        name: format!("sqlagent {name}"),
        status,
        detail: detail.into(),
    }
}

/// Runs every check; stops early only when the next ones cannot run (bad config, no login).
pub async fn check(cfg: &SqlAgentConfig) -> Vec<CheckItem> {
    use CheckStatus::{Fail, Ok as Pass, Warn};
    let mut out = Vec::new();
    let settings = match Settings::from_config(cfg)
        .and_then(|s| JobFilter::new(&cfg.allow_jobs).map(|f| (s, f)))
    {
        Ok(v) => v,
        Err(e) => {
            out.push(item("config", Fail, e));
            return out;
        }
    };
    let (settings, filter) = settings;
    out.push(item(
        "config",
        Pass,
        format!("server {}", settings.address()),
    ));
    let mut conn = Conn::new(settings.clone());
    let info = match conn.query(queries::SERVER_INFO, &[]).await {
        Ok(sets) => sets.into_iter().next().and_then(|s| s.into_iter().next()),
        Err(SqlError::Connection(e)) => {
            out.push(item("reachable", Fail, format!("{e}; is SQL Server listening on TCP there (SQL Server Configuration Manager → TCP/IP)?")));
            return out;
        }
        Err(e) => {
            out.push(item("reachable", Pass, settings.address()));
            out.push(item("login", Fail, format!("{e}; check `user` and the password source, and that the login may connect to msdb")));
            return out;
        }
    };
    out.push(item("reachable", Pass, settings.address()));
    let Some(info) = info else {
        out.push(item("login", Fail, "server_info returned no row"));
        return out;
    };
    let login = rows::string(&info, "login_name").unwrap_or_default();
    let version = rows::string(&info, "product_version").unwrap_or_default();
    out.push(item(
        "login",
        Pass,
        format!("logged in as {login}, SQL Server {version}"),
    ));

    let edition = rows::int(&info, "engine_edition").unwrap_or(0);
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if edition == 4 || edition == 5 {
        out.push(item(
            "agent",
            Fail,
            "this edition has no SQL Server Agent (Express or Azure SQL Database)",
        ));
        return out;
    }
    if major != 0 && major < 13 {
        out.push(item(
            "version",
            Fail,
            format!("SQL Server {version}: the sidecar needs SQL Server 2016 (13.x) or later"),
        ));
    }
    let xps = rows::int(&info, "agent_xps");
    let svc = rows::int(&info, "agent_service_status");
    let connected = rows::int(&info, "agent_connected");
    let session = rows::int(&info, "agent_session_id");
    let agent = match (xps, svc, connected) {
        (Some(0), _, _) => item(
            "agent",
            Fail,
            "the `Agent XPs` option is off: SQL Server Agent has never been started; start the SQL Server Agent service",
        ),
        (_, Some(4), _) | (_, None, Some(1)) => item(
            "agent",
            Pass,
            format!(
                "SQL Server Agent is running (session {})",
                session.unwrap_or(0)
            ),
        ),
        (_, Some(s), _) => item(
            "agent",
            Fail,
            format!("the SQL Server Agent service is not running (status {s}); start it"),
        ),
        (_, None, Some(0)) => item(
            "agent",
            Fail,
            "SQL Server Agent is not connected to the engine; start the SQL Server Agent service",
        ),
        _ => item(
            "agent",
            Warn,
            "cannot tell whether SQL Server Agent runs (grant VIEW SERVER STATE to see it)",
        ),
    };
    out.push(agent);

    match conn.query(queries::CHECK_PERMISSIONS, &[]).await {
        Ok(sets) => {
            if let Some(p) = sets.first().and_then(|s| s.first()) {
                let has = |c: &str| rows::int(p, c).unwrap_or(0) != 0;
                if has("is_sysadmin") || has("is_agent_operator") {
                    out.push(item(
                        "permissions",
                        Pass,
                        if has("is_sysadmin") {
                            "sysadmin"
                        } else {
                            "SQLAgentOperatorRole"
                        },
                    ));
                } else {
                    out.push(item("permissions", Fail, "the login can start only jobs it owns: add it to the msdb role SQLAgentOperatorRole"));
                }
                if !has("can_enum_jobs") {
                    out.push(item("live step", Warn, "no EXECUTE on master.dbo.xp_sqlagent_enum_jobs (or it is not visible to the login): the running step is inferred from the step flow"));
                }
                match rows::int(p, "msdb_compatibility_level") {
                    Some(level) if level < 130 => out.push(item(
                        "msdb compatibility",
                        Fail,
                        format!("msdb has compatibility level {level}; the poll uses OPENJSON, which needs 130 or more (ALTER DATABASE msdb SET COMPATIBILITY_LEVEL = 130)"),
                    )),
                    Some(level) => out.push(item("msdb compatibility", Pass, format!("level {level}"))),
                    None => out.push(item("msdb compatibility", Warn, "cannot read msdb's compatibility level (the poll needs 130 or more)")),
                }
            }
        }
        Err(e) => out.push(item(
            "permissions",
            Warn,
            format!("could not read permissions: {e}"),
        )),
    }
    out.push(object_access(&mut conn).await);

    match conn.query(queries::JOB_NAMES, &[]).await {
        Ok(sets) => {
            let names: Vec<String> = sets
                .first()
                .map(|s| s.iter().filter_map(|r| rows::string(r, "name")).collect())
                .unwrap_or_default();
            let allowed = names.iter().filter(|n| filter.allows(n)).count();
            let status = if allowed == 0 { Warn } else { Pass };
            out.push(item(
                "jobs",
                status,
                format!(
                    "{} jobs visible, {allowed} offered (allow_jobs)",
                    names.len()
                ),
            ));
        }
        Err(e) => out.push(item("jobs", Fail, format!("cannot list jobs: {e}"))),
    }
    out
}

/// One item for every object the catalogued queries touch (derived from the texts by
/// `queries::objects`): the ones the login lacks, required ones failing the check.
async fn object_access(conn: &mut Conn) -> CheckItem {
    let (mut missing, mut degraded) = (Vec::new(), Vec::new());
    for o in queries::objects() {
        let granted = match conn
            .query(queries::OBJECT_PERMISSION, &[&o.object, &o.permission])
            .await
        {
            Ok(sets) => {
                sets.first()
                    .and_then(|s| s.first())
                    .and_then(|r| rows::int(r, "granted"))
                    .unwrap_or(0)
                    != 0
            }
            Err(e) => {
                return item(
                    "object access",
                    CheckStatus::Warn,
                    format!("could not check the grants: {e}"),
                );
            }
        };
        if !granted {
            let what = format!("{} on {}", o.permission, o.object);
            if o.optional {
                degraded.push(what);
            } else {
                missing.push(what);
            }
        }
    }
    if !missing.is_empty() {
        item(
            "object access",
            CheckStatus::Fail,
            format!(
                "grant {} (every poll or start would fail with error 229 otherwise)",
                missing.join(", ")
            ),
        )
    } else if !degraded.is_empty() {
        item(
            "object access",
            CheckStatus::Ok,
            format!(
                "every object the queries need; optional and missing: {}",
                degraded.join(", ")
            ),
        )
    } else {
        item(
            "object access",
            CheckStatus::Ok,
            "every object the queries touch",
        )
    }
}
