//! The jobs file: logins, Agent settings, the simulated jobs and the SSIS catalog's packages
//! (TOML, unknown keys rejected).
//! The format is documented in the crate's README.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsFile {
    #[serde(default, rename = "login")]
    pub logins: Vec<LoginConfig>,
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default, rename = "job")]
    pub jobs: Vec<JobConfig>,
    /// The simulated SSIS catalog (SSISDB).
    #[serde(default)]
    pub ssis: crate::ssisdb::config::SsisConfig,
}

/// Database roles of SSISDB a login may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsisRole {
    /// Sees, stops and manages every operation.
    SsisAdmin,
    /// Reads every operation's log (SQL Server 2016+); stops none but its own.
    SsisLogreader,
}

/// msdb role of a login, which decides what it sees and may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees and starts everything; may read syssessions, VIEW SERVER STATE, xp_sqlagent_enum_jobs.
    #[default]
    Sysadmin,
    /// SQLAgentOperatorRole: sees all jobs, starts and stops any local job.
    Operator,
    /// SQLAgentReaderRole: sees all jobs, starts and stops only its own (14393 otherwise).
    Reader,
    /// SQLAgentUserRole: sees only its own jobs (others are 14262).
    User,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    pub user: String,
    pub password: String,
    #[serde(default)]
    pub role: Role,
    /// Overrides of permissions that default to "sysadmin only".
    #[serde(default)]
    pub view_server_state: Option<bool>,
    #[serde(default)]
    pub read_sessions: Option<bool>,
    #[serde(default)]
    pub enum_jobs: Option<bool>,
    /// What `NT_CLIENT()` returns for this login (a Windows login's name as Windows reports
    /// it, e.g. `CONTOSO\svc_sidecar` in another case than the stored login). The Agent
    /// records `ISNULL(NT_CLIENT(), SUSER_SNAME())` as the requester of a start.
    #[serde(default)]
    pub nt_client: Option<String>,
    /// Objects the login has no SELECT/EXECUTE on, as three-part names
    /// (`msdb.dbo.sysjobs`): a batch that reads one fails with 229, and
    /// `HAS_PERMS_BY_NAME` answers 0 for it.
    #[serde(default)]
    pub deny: Vec<String>,
    /// A Windows principal (`DOMAIN\user`): logs in with NTLM (tiberius
    /// `AuthMethod::windows`), not with a SQL Server password login. The catalog's writing
    /// procedures refuse every other login (27123).
    #[serde(default)]
    pub windows: bool,
    /// SSISDB roles (`ssis_admin`, `ssis_logreader`).
    #[serde(default)]
    pub ssis_roles: Vec<SsisRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Whether the Agent runs when the stand-in starts.
    pub running: bool,
    /// Server-local time = UTC + this offset, e.g. "+02:00".
    pub utc_offset: String,
    pub server_name: String,
    pub engine_edition: i32,
    pub product_version: String,
    /// `sys.configurations` "Agent XPs" value; 0 makes starts fail with 15281.
    pub agent_xps: i32,
    /// How long the Agent stays in its start-up phase (14258) after a start or restart.
    #[serde(with = "humantime_serde_compat")]
    pub startup_time: Duration,
    /// Delay between sp_start_job returning and the Agent recording the request.
    #[serde(with = "humantime_serde_compat")]
    pub request_latency: Duration,
    /// Delay between sp_stop_job and the job ending as canceled.
    #[serde(with = "humantime_serde_compat")]
    pub stop_latency: Duration,
    /// EXECUTE denied on `xp_sqlagent_notify` (error 229, as on Managed Instance).
    pub execute_denied: bool,
    /// Errors raised inside an extended procedure — 22022 from `xp_sqlagent_notify` (start
    /// and stop) and from `xp_sqlagent_enum_jobs` (poll) — escape the batch's TRY/CATCH as
    /// ERROR tokens (what the field reports; the default). `false`: they are caught like
    /// msdb's own T-SQL errors (14262, 14393, …), which always are.
    pub errors_escape_catch: bool,
    /// How far `xp_sqlagent_enum_jobs` lags the Agent: it reports the live state as it was
    /// this long ago, so right after a step's history row it can still show that step.
    #[serde(with = "humantime_serde_compat")]
    pub live_lag: Duration,
    /// `sys.databases.compatibility_level` of msdb (the poll's OPENJSON needs 130+).
    pub msdb_compatibility_level: i32,
    pub history_max_rows: usize,
    pub history_max_rows_per_job: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            running: true,
            utc_offset: "+00:00".into(),
            server_name: "SQLAGENT-STANDIN".into(),
            engine_edition: 3,
            product_version: "16.0.1000.6".into(),
            agent_xps: 1,
            startup_time: Duration::ZERO,
            request_latency: Duration::from_millis(10),
            stop_latency: Duration::from_millis(20),
            execute_denied: false,
            errors_escape_catch: true,
            live_lag: Duration::ZERO,
            msdb_compatibility_level: 160,
            history_max_rows: 1000,
            history_max_rows_per_job: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    /// Derived from the name when absent, so it is stable across restarts.
    #[serde(default)]
    pub job_id: Option<Uuid>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_category")]
    pub category: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Owner login (matters for the reader and user roles).
    #[serde(default = "default_owner")]
    pub owner: String,
    /// false = no `sysjobservers` row (job_type 0; start fails with 14256).
    #[serde(default = "yes")]
    pub targeted: bool,
    #[serde(default = "one")]
    pub start_step: i32,
    /// Delay between sp_start_job and `start_execution_date`.
    #[serde(default = "default_start_latency", with = "humantime_serde_compat")]
    pub start_latency: Duration,
    /// Time spent waiting for a worker thread after the request (`queued_date`, job_state 2).
    #[serde(default, with = "humantime_serde_compat")]
    pub queue_delay: Duration,
    #[serde(rename = "step")]
    pub steps: Vec<StepConfig>,
}

/// A step action: an msdb code (1..=4) or a word.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ActionConfig {
    Code(u8),
    Word(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    #[serde(default)]
    pub id: Option<i32>,
    pub name: String,
    #[serde(default = "default_subsystem")]
    pub subsystem: String,
    #[serde(default)]
    pub command: String,
    #[serde(default = "default_database")]
    pub database: String,
    #[serde(default)]
    pub on_success: Option<ActionConfig>,
    #[serde(default)]
    pub on_success_step: Option<i32>,
    #[serde(default)]
    pub on_fail: Option<ActionConfig>,
    #[serde(default)]
    pub on_fail_step: Option<i32>,
    #[serde(default)]
    pub retries: i32,
    /// Real wait between attempts; `sysjobsteps.retry_interval` shows it in whole minutes.
    #[serde(default, with = "humantime_serde_compat")]
    pub retry_interval: Duration,
    /// How long each attempt runs; "until_stopped" runs until sp_stop_job or an Agent stop.
    #[serde(default = "default_duration")]
    pub duration: String,
    /// Per attempt: "succeed" or "fail"; the last entry repeats.
    #[serde(default = "default_outcomes")]
    pub outcomes: Vec<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub sql_message_id: i32,
    #[serde(default)]
    pub sql_severity: i32,
    #[serde(default)]
    pub output_file: Option<String>,
    #[serde(default)]
    pub flags: i32,
}

fn yes() -> bool {
    true
}
fn one() -> i32 {
    1
}
fn default_category() -> String {
    "[Uncategorized (Local)]".into()
}
fn default_owner() -> String {
    "sa".into()
}
fn default_subsystem() -> String {
    "TSQL".into()
}
fn default_database() -> String {
    "master".into()
}
fn default_duration() -> String {
    "50ms".into()
}
fn default_outcomes() -> Vec<String> {
    vec!["succeed".into()]
}
fn default_start_latency() -> Duration {
    Duration::from_millis(30)
}

/// serde glue for humantime strings ("150ms", "2s").
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// An optional duration (`#[serde(default, with = "…::option")]`).
    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

impl JobsFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("failed to read jobs file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("jobs file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let f: JobsFile = toml::from_str(text)?;
        f.validate()?;
        Ok(f)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.logins.is_empty(),
            "at least one [[login]] is required"
        );
        crate::agent::clock::parse_offset(&self.agent.utc_offset)?;
        for l in &self.logins {
            anyhow::ensure!(
                !l.windows || l.user.contains('\\'),
                "login {:?}: a Windows login is named DOMAIN\\user",
                l.user
            );
        }
        self.ssis.validate()?;
        let mut names = std::collections::HashSet::new();
        for j in &self.jobs {
            anyhow::ensure!(names.insert(&j.name), "duplicate job name {:?}", j.name);
            anyhow::ensure!(!j.steps.is_empty(), "job {:?} has no [[job.step]]", j.name);
            for s in &j.steps {
                crate::agent::steps::parse_action(s.on_success.as_ref(), true)
                    .map_err(|e| anyhow::anyhow!("job {:?} step {:?}: {e}", j.name, s.name))?;
                crate::agent::steps::parse_action(s.on_fail.as_ref(), false)
                    .map_err(|e| anyhow::anyhow!("job {:?} step {:?}: {e}", j.name, s.name))?;
                crate::agent::steps::parse_duration(&s.duration)
                    .map_err(|e| anyhow::anyhow!("job {:?} step {:?}: {e}", j.name, s.name))?;
                for o in &s.outcomes {
                    anyhow::ensure!(
                        matches!(o.as_str(), "succeed" | "fail"),
                        "job {:?} step {:?}: outcome {o:?} is not \"succeed\" or \"fail\"",
                        j.name,
                        s.name
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The jobs-file example in the README stays valid.
    #[test]
    fn readme_example_parses() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let len = readme[start..].find("```").expect("end of block");
        let f = JobsFile::parse(&readme[start..start + len]).unwrap();
        assert_eq!(f.jobs[0].steps[0].retries, 2);
        assert_eq!(f.agent.utc_offset, "+02:00");
    }

    #[test]
    fn parses_minimal_and_rejects_unknown_keys() {
        let f = JobsFile::parse(
            r#"
            [[login]]
            user = "sidecar"
            password = "pw"
            [[job]]
            name = "A"
            [[job.step]]
            name = "one"
            outcomes = ["fail", "succeed"]
            retries = 1
            retry_interval = "100ms"
            on_fail = "quit_failure"
            "#,
        )
        .unwrap();
        assert_eq!(
            f.jobs[0].steps[0].retry_interval,
            Duration::from_millis(100)
        );
        assert!(JobsFile::parse("[[login]]\nuser='a'\npassword='b'\nbogus=1").is_err());
    }
}
