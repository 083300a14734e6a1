//! The demo's fourth sidecar, `demo-sql`, which offers SQL Server Agent jobs.
//!
//! There is no SQL Server on a demo machine, so the demo starts `sqlagent-standin` in this
//! process: a test double that speaks TDS and simulates SQL Server Agent (asynchronous
//! `sp_start_job`, job steps, Agent's own step retry, msdb history). The sidecar talks to it
//! through its real `[sqlagent]` backend (tiberius, TLS), exactly as it would to a server.
//! The output says plainly that this is a stand-in, not SQL Server.
use std::path::Path;

use sqlagent_standin::config::{LoginConfig, Role};
use sqlagent_standin::{JobsFile, Standin, StandinConfig, TlsSetup};

use super::io_err;
use crate::error::CliError;

/// The simulated Agent's jobs (no login: one with a fresh password is added at start-up).
const STANDIN_JOBS: &str = include_str!("standin.toml");
/// The sidecar's name in the demo fleet.
pub const SIDECAR: &str = "demo-sql";
/// The SQL login the sidecar uses.
const LOGIN: &str = "agentfleet";
/// Where, next to the sidecar's config, the password is kept (never on a command line).
const PASSWORD_FILE: &str = "sqlagent.password";
/// How often the sidecar polls msdb: short, so steps show up promptly in the tour.
const POLL_INTERVAL: &str = "500ms";

/// What the header line of the demo says about it.
pub const LABEL: &str = "SQL Server Agent stand-in (a test double, not SQL Server)";

/// The running stand-in and the `[sqlagent]` section that points at it.
pub struct DemoAgent {
    /// Kept alive for the whole demo: dropping it stops the simulated Agent.
    pub standin: Standin,
    /// The `[sqlagent]` table for the sidecar's config.
    pub section: toml::Table,
    /// Names of the Agent jobs it offers.
    pub jobs: Vec<String>,
}

/// Starts the stand-in on 127.0.0.1 (TLS with a self-signed certificate) with a login whose
/// password is fresh and written to `sidecar_dir/sqlagent.password` (owner-only on Unix).
pub async fn start(sidecar_dir: &Path) -> Result<DemoAgent, CliError> {
    let mut jobs: JobsFile = toml::from_str(STANDIN_JOBS)
        .map_err(|e| CliError::failed(format!("demo stand-in jobs: {e}")))?;
    let password = format!("Demo-{}", uuid::Uuid::new_v4().simple());
    jobs.logins.push(LoginConfig {
        user: LOGIN.into(),
        password: password.clone(),
        role: Role::Sysadmin,
        view_server_state: None,
        read_sessions: None,
        enum_jobs: None,
        nt_client: None,
        deny: Vec::new(),
        windows: false,
        ssis_roles: Vec::new(),
    });
    let names = jobs.jobs.iter().map(|j| j.name.clone()).collect();
    std::fs::create_dir_all(sidecar_dir).map_err(|e| io_err("create", sidecar_dir, e))?;
    let password_path = sidecar_dir.join(PASSWORD_FILE);
    write_secret(&password_path, &password)?;

    let listen = "127.0.0.1:0".parse().expect("a valid socket address");
    let standin = Standin::start(StandinConfig {
        listen,
        jobs,
        tls: TlsSetup::SelfSigned,
    })
    .await
    .map_err(|e| CliError::failed(format!("demo: failed to start the {LABEL}: {e}")))?;

    let mut section = toml::Table::new();
    section.insert(
        "server".into(),
        format!("tcp:127.0.0.1,{}", standin.addr().port()).into(),
    );
    section.insert("auth".into(), "sql".into());
    section.insert("user".into(), LOGIN.into());
    section.insert("password_file".into(), PASSWORD_FILE.into());
    // The stand-in's certificate is self-signed, as on many test servers.
    section.insert("trust_server_certificate".into(), true.into());
    section.insert("poll_interval".into(), POLL_INTERVAL.into());
    Ok(DemoAgent {
        standin,
        section,
        jobs: names,
    })
}

/// Writes a secret readable by the owner only (on Unix; elsewhere the directory's ACL applies).
fn write_secret(path: &Path, secret: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io_err("write", path, e))?;
    writeln!(file, "{secret}").map_err(|e| io_err("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_jobs_parse_and_include_a_retried_step() {
        let jobs: JobsFile = toml::from_str(STANDIN_JOBS).unwrap();
        assert!(jobs.logins.is_empty(), "no password is embedded");
        let names: Vec<&str> = jobs.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DW - Load Sales Mart",
                "DW - Rebuild Indexes",
                "DW - Import Store Sales"
            ]
        );
        let mart = &jobs.jobs[0];
        assert_eq!(mart.steps.len(), 3);
        assert!(
            mart.steps
                .iter()
                .any(|s| s.retries > 0 && s.outcomes[0] == "fail")
        );
    }

    /// The package job's one step runs, at the Verbose level (the data flow's rows), a
    /// package the simulated catalog has: a few tasks, one a data flow, a few seconds.
    #[test]
    fn the_package_job_runs_a_package_of_the_catalog() {
        let jobs: JobsFile = toml::from_str(STANDIN_JOBS).unwrap();
        let job = jobs
            .jobs
            .iter()
            .find(|j| j.name == "DW - Import Store Sales")
            .unwrap();
        assert_eq!(job.steps.len(), 1);
        let step = &job.steps[0];
        assert_eq!(step.subsystem, "SSIS");
        assert!(
            step.command
                .contains(r#"\SSISDB\DW\Sales ETL\Import Store Sales.dtsx"#)
                && step.command.contains(r#"LOGGING_LEVEL(Int16)\"";3"#),
            "{}",
            step.command
        );
        let package = jobs
            .ssis
            .packages
            .iter()
            .find(|p| {
                (p.folder.as_str(), p.project.as_str(), p.name.as_str())
                    == ("DW", "Sales ETL", "Import Store Sales.dtsx")
            })
            .expect("the step's package is deployed");
        assert!((2..=4).contains(&package.tasks.len()));
        assert!(package.tasks.iter().any(|t| !t.rows.is_empty()));
        assert!(package.tasks.iter().all(|t| t.result == "success"));
        let ms: u64 = package
            .tasks
            .iter()
            .map(|t| humantime::parse_duration(&t.duration).unwrap().as_millis() as u64)
            .sum();
        assert!((2_000..=6_000).contains(&ms), "{ms} ms");
    }

    #[tokio::test]
    async fn starts_with_a_password_file_and_a_section_for_the_sidecar() {
        agentfleet_common::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let agent = start(dir.path()).await.unwrap();
        let password = std::fs::read_to_string(dir.path().join(PASSWORD_FILE)).unwrap();
        assert!(password.trim().starts_with("Demo-"));
        assert_eq!(agent.section["password_file"].as_str(), Some(PASSWORD_FILE));
        assert!(!agent.section.contains_key("password"));
        assert_eq!(
            agent.section["server"].as_str().unwrap(),
            format!("tcp:127.0.0.1,{}", agent.standin.addr().port())
        );
    }
}
