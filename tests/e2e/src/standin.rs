//! SQL Server Agent for end-to-end tests: the real `sqlagent-standin` binary (a TDS-speaking
//! test double that simulates SQL Server Agent; it is not SQL Server), or a real SQL Server
//! when `AGENTFLEET_TEST_MSSQL` holds an ADO connection string. Also a coordinator run whose
//! `--json` events can be waited on while it runs, for scenarios that act mid-run.
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::background::BackgroundCoordinator;
use crate::binaries;
use crate::coordinator::CoordinatorOutput;
use crate::env::TestEnv;
use crate::files::toml_str;
use crate::process;

/// The ADO connection string of a real SQL Server (with Agent and the sample jobs of
/// `docker/sql/init.sql`); when set, scenarios run against it instead of the stand-in.
pub const ENV_MSSQL: &str = "AGENTFLEET_TEST_MSSQL";
/// The variable the test sidecars read their SQL password from (`password_env`).
pub const PASSWORD_ENV: &str = "AGENTFLEET_SQL_PASSWORD";
/// How long the stand-in may take to bind and say so.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an admin command may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The login every stand-in of the tests accepts.
const STANDIN_USER: &str = "agentfleet";
const STANDIN_PASSWORD: &str = "Standin-Test-1";

/// A running `sqlagent-standin --listen 127.0.0.1:0 --jobs FILE --admin 127.0.0.1:0`;
/// killed when dropped (its stderr is printed when the test is failing).
pub struct StandinProcess {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr_log: PathBuf,
}

impl StandinProcess {
    /// Writes `dir/standin.toml` (a login for the sidecar, then `jobs_toml`), spawns the
    /// stand-in and waits for its `{"event":"listening",...}` line.
    pub fn start(dir: &Path, jobs_toml: &str) -> Self {
        std::fs::create_dir_all(dir).expect("create the stand-in's dir");
        let jobs = dir.join("standin.toml");
        let login = format!(
            "[[login]]\nuser = {}\npassword = {}\n\n",
            toml_str(STANDIN_USER),
            toml_str(STANDIN_PASSWORD)
        );
        std::fs::write(&jobs, login + jobs_toml).expect("write the stand-in's jobs file");
        let stderr_log = dir.join("standin.stderr.log");
        let stderr = std::fs::File::create(&stderr_log).expect("create the stand-in's log");
        let mut cmd = Command::new(binaries::binary("sqlagent-standin"));
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--jobs",
        ])
        .arg(&jobs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Only the first line matters; reading on keeps the pipe from filling up.
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line);
                }
            }
        });
        let mut standin = Self {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            stderr_log,
        };
        let line = rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|e| {
            standin.fail(&format!(
                "printed no `listening` line within {READY_TIMEOUT:?} ({e})"
            ))
        });
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| standin.fail(&format!("printed `{line}`, not JSON: {e}")));
        let addr = |key: &str| -> Option<SocketAddr> { value[key].as_str()?.parse().ok() };
        match (value["event"] == "listening", addr("addr"), addr("admin")) {
            (true, Some(a), Some(b)) => (standin.addr, standin.admin) = (a, b),
            _ => standin.fail(&format!("printed `{line}` as its `listening` line")),
        }
        standin
    }

    /// The TDS address the sidecar connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends one admin command (`agent restart crash`, `drop`, ...) and returns the answer;
    /// panics unless it starts with `ok`.
    pub fn admin(&self, command: &str) -> String {
        let answer = self
            .try_admin(command)
            .unwrap_or_else(|e| panic!("admin command `{command}` failed: {e}"));
        assert!(
            answer.starts_with("ok"),
            "admin command `{command}` answered `{answer}`"
        );
        answer
    }

    fn try_admin(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.admin, ADMIN_TIMEOUT)?;
        stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
        writeln!(stream, "{command}")?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer)?;
        Ok(answer.trim_end().to_owned())
    }

    fn fail(&mut self, what: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        panic!("sqlagent-standin {what}\n--- its stderr ---\n{log}");
    }
}

impl Drop for StandinProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::terminate(&mut child, Duration::from_secs(2));
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            eprintln!(
                "--- sqlagent-standin stderr ---\n{log}--- end of sqlagent-standin stderr ---"
            );
        }
    }
}

/// A real SQL Server, from an ADO connection string such as
/// `Server=tcp:localhost,1433;User Id=agentfleet;Password=...;TrustServerCertificate=true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlServer {
    pub server: String,
    pub user: String,
    pub password: String,
    pub trust_server_certificate: bool,
}

impl SqlServer {
    /// Parses the keys agentfleet needs; values are split at `;` (a password holding `;`
    /// is not supported here).
    pub fn from_ado(text: &str) -> Result<Self, String> {
        let mut server = None;
        let mut user = None;
        let mut password = None;
        let mut trust = false;
        for pair in text.split(';').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not key=value"))?;
            let key = key.trim().to_ascii_lowercase().replace(' ', "");
            let value = value.trim().trim_matches(['{', '}', '"', '\'']).to_owned();
            match key.as_str() {
                "server" | "datasource" | "address" | "addr" | "networkaddress" => {
                    server = Some(value)
                }
                "userid" | "uid" | "user" => user = Some(value),
                "password" | "pwd" => password = Some(value),
                "trustservercertificate" => {
                    trust = matches!(value.to_ascii_lowercase().as_str(), "true" | "yes")
                }
                _ => {}
            }
        }
        Ok(Self {
            server: server.ok_or("no `Server=` in the connection string")?,
            user: user.ok_or("no `User Id=` in the connection string")?,
            password: password.ok_or("no `Password=` in the connection string")?,
            trust_server_certificate: trust,
        })
    }
}

/// Where the scenarios' SQL Server Agent is.
pub enum SqlTarget {
    Standin(StandinProcess),
    Real(SqlServer),
}

impl SqlTarget {
    /// A real server when `AGENTFLEET_TEST_MSSQL` is set, else a fresh stand-in in `dir`
    /// serving `jobs_toml` (which mirrors the jobs `docker/sql/init.sql` creates).
    pub fn from_env(dir: &Path, jobs_toml: &str) -> Self {
        match std::env::var(ENV_MSSQL) {
            Ok(ado) if !ado.trim().is_empty() => {
                Self::Real(SqlServer::from_ado(&ado).unwrap_or_else(|e| panic!("{ENV_MSSQL}: {e}")))
            }
            _ => Self::Standin(StandinProcess::start(&dir.join("standin"), jobs_toml)),
        }
    }

    /// The stand-in, whose fault knobs a real server does not have.
    pub fn standin(&self) -> Option<&StandinProcess> {
        match self {
            Self::Standin(s) => Some(s),
            Self::Real(_) => None,
        }
    }

    /// The sidecar's `[sqlagent]` section, and the environment that carries the password
    /// (never a command line, never the config file).
    pub fn sidecar_section(&self, poll_interval: &str) -> (String, Vec<(String, String)>) {
        let (server, user, password, trust) = match self {
            Self::Standin(s) => (
                format!("tcp:127.0.0.1,{}", s.addr().port()),
                STANDIN_USER.to_owned(),
                STANDIN_PASSWORD.to_owned(),
                true,
            ),
            Self::Real(r) => (
                r.server.clone(),
                r.user.clone(),
                r.password.clone(),
                r.trust_server_certificate,
            ),
        };
        let section = format!(
            "[sqlagent]\nserver = {}\nuser = {}\npassword_env = {}\ntrust_server_certificate = {trust}\npoll_interval = {}\n",
            toml_str(server),
            toml_str(user),
            toml_str(PASSWORD_ENV),
            toml_str(poll_interval)
        );
        (section, vec![(PASSWORD_ENV.to_owned(), password)])
    }
}

/// A `coordinator run PLAN --fleet FLEET --json` still running: its events can be awaited.
pub struct LiveRun(BackgroundCoordinator);

impl LiveRun {
    /// Spawns the run in the test's directory with its `AGENTFLEET_HOME`.
    pub fn spawn(env: &TestEnv, plan: &Path, fleet: &Path) -> Self {
        let args = [
            OsStr::new("run"),
            plan.as_os_str(),
            OsStr::new("--fleet"),
            fleet.as_os_str(),
            OsStr::new("--json"),
        ];
        Self(BackgroundCoordinator::spawn(env, args))
    }

    /// Waits for the first event (from the start of the run) that matches `pred`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.0.wait_for_event(timeout, what, pred)
    }

    /// Waits (bounded) for the run to end; kills it after `timeout`.
    pub fn finish(&mut self, timeout: Duration) -> CoordinatorOutput {
        self.0.finish(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::SqlServer;

    #[test]
    fn ado_connection_strings() {
        let s = SqlServer::from_ado(
            "Server=tcp:localhost,1433; User Id=agentfleet;Password={Secret-1};TrustServerCertificate=True",
        )
        .unwrap();
        assert_eq!(s.password, "Secret-1");
        assert!(s.trust_server_certificate);
        let s = SqlServer::from_ado(
            "server=tcp:localhost,1433;uid=agentfleet;pwd=Secret-1;trustservercertificate=yes",
        )
        .unwrap();
        assert_eq!(s.server, "tcp:localhost,1433");
        assert_eq!(s.user, "agentfleet");
        assert_eq!(s.password, "Secret-1");
        assert!(s.trust_server_certificate);
        assert!(SqlServer::from_ado("server=x;uid=y").is_err());
    }
}
