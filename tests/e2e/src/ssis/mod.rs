//! SSIS catalog end to end: the real `sqlagent-standin` (a TDS test double; it is not SQL
//! Server) with a simulated SSISDB, a Windows (NTLM) login and Agent jobs whose step runs a
//! package, and one real sidecar with `[sqlagent]` (a SQL login, enough to follow Agent
//! steps into the catalog) and `[ssis]` (the Windows login catalog jobs need).
//!
//! Always the stand-in, also when `AGENTFLEET_TEST_MSSQL` names a real server: SQL Server
//! on Linux (the docker image) has no SSIS catalog, and there is no deployed project to
//! run (see docker/sql/init.sql).
pub mod package_checks;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::process::run_with_deadline;
use crate::standin::{SqlTarget, StandinProcess};
use crate::{CoordinatorOutput, RunEvents, Sidecar, SidecarOptions, TestEnv, binaries, toml_str};

/// The Windows principal catalog jobs log in as, and its password (verified by NTLMv2).
pub const WINDOWS_USER: &str = r"CONTOSO\etl";
const WINDOWS_PASSWORD: &str = "Etl-pw-1";
/// The variable the sidecar reads the Windows password from (`[ssis] password_env`).
const SSIS_PASSWORD_ENV: &str = "AGENTFLEET_SSIS_PASSWORD";

/// The stand-in's SSISDB and Agent: one package that loads (two tasks, a data flow of
/// 2500 rows, information and warning messages), one whose second task fails, one that
/// runs until stopped; an Agent job with an SSIS step for the first two.
const STANDIN: &str = r#"
[[login]]
user = 'CONTOSO\etl'
password = "Etl-pw-1"
windows = true
role = "user"

[agent]
server_name = "SQL1"
# Server-local times differ from UTC, as on most servers: catalog times must convert.
utc_offset = "+02:00"

[ssis]
pending_delay = "50ms"
stop_latency = "150ms"
agent_account = 'CONTOSO\sqlagent'

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Load Sales.dtsx"
[[ssis.package.task]]
name = "Truncate staging"
duration = "300ms"
messages = [{ type = 70, text = "Staging emptied." }]
[[ssis.package.task]]
name = "Copy rows"
duration = "700ms"
messages = [{ type = 70, text = "Copied 2500 rows." }, { type = 110, text = "Truncation may occur on column Region." }]
rows = [{ path_name = "OLE DB Source Output", source = "Orders", destination = "Staging", rows = 2500 }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Merge Customers.dtsx"
[[ssis.package.task]]
name = "Extract"
duration = "200ms"
messages = [{ type = 70, text = "Extracted 40 customers." }]
[[ssis.package.task]]
name = "Merge"
duration = "200ms"
result = "failure"
messages = [{ type = 120, text = "Violation of PRIMARY KEY constraint 'PK_Customer'." }, { type = 120, text = "The Merge task failed." }]

[[ssis.package]]
folder = "ETL"
project = "Warehouse"
name = "Wait Forever.dtsx"
[[ssis.package.task]]
name = "Wait"
duration = "until_stopped"

[[job]]
name = "SSIS - Agent Load Sales"
start_latency = "10ms"
[[job.step]]
name = "Run Load Sales"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Load Sales.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::LOGGING_LEVEL(Int16)\"";3 /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'

[[job]]
name = "SSIS - Agent Merge Customers"
start_latency = "10ms"
[[job.step]]
name = "Run Merge Customers"
subsystem = "SSIS"
command = '/ISSERVER "\"\SSISDB\ETL\Warehouse\Merge Customers.dtsx\"" /SERVER "\"SQL1\"" /Par "\"$ServerOption::SYNCHRONIZED(Boolean)\"";True /CALLERINFO SQLAGENT /REPORTING E'
"#;

/// The sidecar's catalog jobs: the same packages, started directly (Verbose logging for
/// the row counts).
const CATALOG_JOBS: &str = r#"
[[catalog_job]]
name = "SSIS - Load Sales"
folder = "ETL"
project = "Warehouse"
package = "Load Sales"
logging_level = "verbose"

[[catalog_job]]
name = "SSIS - Merge Customers"
folder = "ETL"
project = "Warehouse"
package = "Merge Customers.dtsx"

[[catalog_job]]
name = "SSIS - Wait Forever"
folder = "ETL"
project = "Warehouse"
package = "Wait Forever.dtsx"
"#;

/// One scenario's processes; fields drop in order: sidecar, stand-in, then the test dir.
pub struct SsisWorld {
    pub sidecar: Sidecar,
    pub target: SqlTarget,
    pub env: TestEnv,
}

impl SsisWorld {
    /// The stand-in and a sidecar offering its Agent jobs and the catalog jobs; the
    /// sidecar exports its spans to `otlp` when given.
    pub fn start(test: &str, otlp: Option<&str>) -> Self {
        let env = TestEnv::new(test);
        let target =
            SqlTarget::Standin(StandinProcess::start(&env.path().join("standin"), STANDIN));
        let (sqlagent, mut vars) = target.sidecar_section("200ms");
        let config = format!(
            "{sqlagent}\n{}\n{CATALOG_JOBS}",
            ssis_section(&target, "windows", WINDOWS_USER)
        );
        vars.push((SSIS_PASSWORD_ENV.into(), WINDOWS_PASSWORD.into()));
        if let Some(endpoint) = otlp {
            vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()));
        }
        let options = SidecarOptions {
            env: vars,
            ..SidecarOptions::default()
        };
        let sidecar = env.start_sidecar("sql1", &config, options);
        Self {
            sidecar,
            target,
            env,
        }
    }

    /// Writes a plan of `tasks` (`(name, job)`) and the fleet file.
    pub fn plan(&self, tasks: &[(&str, &str)]) -> (PathBuf, PathBuf) {
        let mut text = String::from("[plan]\nname = \"ssis-e2e\"\n");
        for (name, job) in tasks {
            text += &format!(
                "\n[[task]]\nname = {}\njob = {}\n",
                toml_str(name),
                toml_str(job)
            );
        }
        let plan = self.env.write_file("plan.toml", &text);
        (plan, self.env.write_fleet(&[&self.sidecar]))
    }

    /// `coordinator run PLAN --json` (plus `extra` arguments) to the end.
    pub fn run(&self, tasks: &[(&str, &str)], extra: &[&str]) -> (CoordinatorOutput, RunEvents) {
        let (plan, fleet) = self.plan(tasks);
        let mut args = vec![
            OsStr::new("run"),
            plan.as_os_str(),
            OsStr::new("--fleet"),
            fleet.as_os_str(),
            OsStr::new("--json"),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = self.env.coordinator(args);
        let events = out.events();
        (out, events)
    }

    /// `coordinator ARGS`, which must exit 0; its stdout.
    pub fn coordinator_ok(&self, args: &[&str]) -> String {
        let out = self.env.coordinator(args);
        assert_eq!(out.code(), Some(0), "{out}");
        out.stdout
    }

    /// Writes a config for another sidecar whose catalog jobs would log in with the
    /// stand-in's SQL login: through `[ssis]` with `auth = "sql"` when `explicit`, else
    /// through `[sqlagent]` alone (no `[ssis]`). Returns the config's path.
    pub fn write_sql_login_config(&self, explicit: bool) -> PathBuf {
        let (sqlagent, _) = self.target.sidecar_section("200ms");
        let ssis = if explicit {
            ssis_section(&self.target, "sql", "agentfleet")
        } else {
            String::new()
        };
        let text = self.sidecar_config_text(&format!("{sqlagent}\n{ssis}\n{CATALOG_JOBS}"));
        self.env.write_file("sql-login/sidecar.toml", &text)
    }

    /// The running sidecar's own config with its jobs replaced by `jobs` (same TLS files).
    fn sidecar_config_text(&self, jobs: &str) -> String {
        let own = std::fs::read_to_string(self.sidecar.dir().join("sidecar.toml"))
            .expect("read the sidecar's config");
        let head = own
            .split("[sqlagent]")
            .next()
            .expect("the config has a head");
        let state = self.env.path().join("sql-login").join("state");
        std::fs::create_dir_all(&state).expect("create the other state dir");
        let head = head.replace(
            &toml_str(self.sidecar.state_dir().to_str().expect("UTF-8 paths")),
            &toml_str(state.to_str().expect("UTF-8 paths")),
        );
        format!("{head}{jobs}")
    }

    /// `sidecar SUBCOMMAND --config CONFIG` with the sidecar's password variables, to the
    /// end (bounded): its exit code and everything it printed.
    pub fn sidecar_command(&self, subcommand: &str, config: &Path) -> (Option<i32>, String) {
        let mut cmd = Command::new(binaries::binary("sidecar"));
        cmd.arg(subcommand)
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1");
        let (_, vars) = self.target.sidecar_section("200ms");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        // A refused config ends at once; one that is not would serve until killed here.
        let out = run_with_deadline(cmd, Duration::from_secs(30)).expect("run the sidecar");
        assert!(
            !out.timed_out,
            "`sidecar {subcommand}` did not end:\n{}{}",
            out.stdout, out.stderr
        );
        (out.status.code(), format!("{}{}", out.stdout, out.stderr))
    }
}

/// An `[ssis]` section for the stand-in with `auth` and `user` (the password from the
/// variable the sidecar is given: the Windows one, or the SQL login's for a SQL user).
fn ssis_section(target: &SqlTarget, auth: &str, user: &str) -> String {
    let standin = target
        .standin()
        .expect("SSIS scenarios run on the stand-in");
    let password_env = if auth == "windows" {
        SSIS_PASSWORD_ENV
    } else {
        crate::standin::PASSWORD_ENV
    };
    format!(
        "[ssis]\nserver = {}\nauth = {}\nuser = {}\npassword_env = {}\ntrust_server_certificate = true\npoll_interval = \"200ms\"\n",
        toml_str(format!("tcp:127.0.0.1,{}", standin.addr().port())),
        toml_str(auth),
        toml_str(user),
        toml_str(password_env)
    )
}

/// `key` of `event` as text ("" when absent).
pub fn text<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or_default()
}

/// The `log` lines of stream `catalog` of `task`.
pub fn catalog_lines(events: &RunEvents, task: &str) -> Vec<String> {
    events
        .of_task("log", task)
        .into_iter()
        .filter(|l| l["stream"] == "catalog")
        .map(|l| text(l, "line").to_owned())
        .collect()
}

/// The catalog statuses `task`'s `catalog_execution` events reported, in order.
pub fn catalog_statuses(events: &RunEvents, task: &str) -> Vec<String> {
    events
        .of_task("catalog_execution", task)
        .into_iter()
        .map(|e| text(e, "status").to_owned())
        .collect()
}

/// `(name, status)` of `task`'s `sub_step_finished` events, in order.
pub fn finished_sub_steps(events: &RunEvents, task: &str) -> Vec<(String, String)> {
    events
        .of_task("sub_step_finished", task)
        .into_iter()
        .map(|e| (text(e, "name").to_owned(), text(e, "status").to_owned()))
        .collect()
}
