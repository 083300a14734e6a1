//! The sidecar config: one loader for the TOML file (PRODUCT.md "The sidecar config").
//!
//! Layering: defaults → file → `AGENTFLEET_*` environment → command-line flags, then
//! `validate()`. The file says *what* to run (jobs, TLS, the SQL Server); flags and the
//! environment say *how this process behaves* (where to listen, where state lives, the log
//! format). The environment is passed in as a function, so tests never touch the process's.
//!
//! Errors name the file, the line and the key, and say what to do.
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentfleet_common::telemetry::LogFormat;
use serde::Deserialize;

use crate::backend::command::JobConfig;
use crate::backend::sqlagent::SqlAgentConfig;
use crate::backend::ssis::CatalogJobConfig;

mod validate;
pub use validate::{Problem, unix_socket_path};

/// Environment twins of the flags.
pub const ENV_CONFIG: &str = "AGENTFLEET_CONFIG";
pub const ENV_LISTEN: &str = "AGENTFLEET_LISTEN";
pub const ENV_STATE_DIR: &str = "AGENTFLEET_STATE_DIR";
pub const ENV_LOG_FORMAT: &str = "AGENTFLEET_LOG_FORMAT";

pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";
pub const DEFAULT_SLOTS: u32 = 4;
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The validated sidecar configuration.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The config file it came from (absolute or as given).
    pub source: PathBuf,
    pub name: String,
    /// `host:port` to listen on.
    pub listen: String,
    /// Executions at once.
    pub slots: u32,
    /// Durable execution journal and log spool.
    pub state_dir: PathBuf,
    /// Plaintext gRPC without client authentication; only allowed on loopback.
    pub insecure: bool,
    /// How long a stopped execution may take to finish before it is killed.
    pub stop_grace: Duration,
    pub tls: Option<TlsConfig>,
    pub telemetry: TelemetryConfig,
    pub sqlagent: Option<SqlAgentConfig>,
    /// `[ssis]`: the connection of catalog jobs (same keys as `[sqlagent]`; without it,
    /// catalog jobs use `[sqlagent]`'s).
    pub ssis: Option<SqlAgentConfig>,
    pub jobs: Vec<JobConfig>,
    /// `[[catalog_job]]`: packages deployed to the SSIS catalog.
    pub catalog_jobs: Vec<CatalogJobConfig>,
    pub log_format: LogFormat,
    /// How command jobs' supervisor processes are started: not a file setting; by default
    /// the running binary's hidden `supervise` entry (a program embedding the sidecar, such
    /// as the coordinator's demo, offers the same entry or sets another command).
    pub supervisor: crate::supervisor::SupervisorCommand,
}

/// `[tls]`: this sidecar's certificate, and who may call it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signed the client (coordinator) certificates.
    pub client_ca: PathBuf,
    /// Coordinator names allowed to call: the NAME of a client certificate's
    /// `spiffe://agentfleet/coordinator/NAME` URI (`coordinator pki issue DIR NAME --coordinator`).
    pub allow_clients: Vec<String>,
    /// A CRL signed by `client_ca` (`coordinator pki revoke` writes `DIR/crl.pem`); re-read
    /// while running when it changes.
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// Client certificate names or serial numbers refused although `client_ca` signed them.
    #[serde(default)]
    pub revoked: Vec<String>,
}

/// `[telemetry]`: OpenTelemetry export, off unless an endpoint is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Default: "agentfleet-sidecar".
    #[serde(default)]
    pub service_name: Option<String>,
    /// `host:port` of the admin HTTP server (/metrics, /healthz, /readyz); off when absent.
    #[serde(default)]
    pub admin_listen: Option<String>,
}

/// The file as written; every top-level setting is optional here because the
/// environment or a flag may supply it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    name: Option<String>,
    listen: Option<String>,
    slots: Option<u32>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    #[serde(default, with = "agentfleet_common::duration::serde_opt")]
    stop_grace: Option<Duration>,
    tls: Option<TlsConfig>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    sqlagent: Option<SqlAgentConfig>,
    ssis: Option<SqlAgentConfig>,
    #[serde(rename = "job", default)]
    jobs: Vec<JobConfig>,
    #[serde(rename = "catalog_job", default)]
    catalog_jobs: Vec<CatalogJobConfig>,
}

/// Settings given on the command line (each overrides its environment twin).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Origin {
    #[default]
    Default,
    File,
    Env(&'static str),
    Flag(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no config file given: pass --config FILE or set {ENV_CONFIG}")]
    NoConfigFile,
    #[error("failed to read config file `{}`: {source}; check the path passed to --config or {ENV_CONFIG}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}\n{snippet}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        snippet: String,
    },
    #[error("{origin}: `{value}` is not a valid {what}: {hint}")]
    BadValue {
        origin: String,
        what: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("{}", validate::render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Parses "plain" or "json".
pub fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "plain" | "text" => Ok(LogFormat::Plain),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "`{text}` is not a log format; use `plain` or `json`"
        )),
    }
}

/// The log format from flags and environment alone (telemetry starts before the file is read).
pub fn log_format(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LogFormat, ConfigError> {
    if let Some(format) = flags.log_format {
        return Ok(format);
    }
    match env(ENV_LOG_FORMAT) {
        Some(text) => parse_log_format(&text).map_err(|_| ConfigError::BadValue {
            origin: ENV_LOG_FORMAT.into(),
            what: "log format",
            value: text,
            hint: "use `plain` or `json`",
        }),
        None => Ok(LogFormat::Plain),
    }
}

/// The config file named by the flag or its environment twin.
pub fn config_path(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    flags
        .config
        .clone()
        .or_else(|| env(ENV_CONFIG).filter(|s| !s.is_empty()).map(PathBuf::from))
        .ok_or(ConfigError::NoConfigFile)
}

/// Loads, layers and validates the config. `env` looks up environment variables
/// (`|k| std::env::var(k).ok()` in `main`, a map in tests).
pub fn load(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SidecarConfig, ConfigError> {
    let path = config_path(flags, env)?;
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    from_text(&text, &path, flags, env)
}

/// Like `load`, for a file already read (`path` is used for messages and relative paths).
pub fn from_text(
    text: &str,
    path: &Path,
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SidecarConfig, ConfigError> {
    let file: FileConfig = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
    let spans = validate::Spans::parse(text);
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let mut origins = validate::Origins::default();
    let listen = layer(
        file.listen,
        env(ENV_LISTEN),
        flags.listen.clone(),
        ENV_LISTEN,
        "--listen",
        &mut origins.listen,
    )
    .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let state_dir = match layer(
        file.state_dir.map(|p| resolve(&base, &p)),
        env(ENV_STATE_DIR)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        flags.state_dir.clone(),
        ENV_STATE_DIR,
        "--state-dir",
        &mut origins.state_dir,
    ) {
        Some(dir) => dir,
        None => PathBuf::new(), // reported by validate()
    };

    let mut jobs = file.jobs;
    for job in &mut jobs {
        job.working_dir = job.working_dir.as_ref().map(|d| resolve(&base, d));
        for step in &mut job.steps {
            // A program given as a relative path ("scripts/load.sh") is relative to the
            // config file, like every other path in it; a bare name is looked up on PATH.
            if let Some(program) = step.run.first_mut() {
                let p = Path::new(program.as_str());
                if p.is_relative() && p.components().count() > 1 {
                    *program = base.join(p).to_string_lossy().into_owned();
                }
            }
        }
    }
    let tls = file.tls.map(|t| TlsConfig {
        cert: resolve(&base, &t.cert),
        key: resolve(&base, &t.key),
        client_ca: resolve(&base, &t.client_ca),
        allow_clients: t.allow_clients,
        crl: t.crl.map(|p| resolve(&base, &p)),
        revoked: t.revoked,
    });
    let connection = |s: Option<SqlAgentConfig>| {
        s.map(|mut s| {
            s.password_file = s.password_file.map(|p| resolve(&base, &p));
            s
        })
    };
    let sqlagent = connection(file.sqlagent);
    let ssis = connection(file.ssis);

    let config = SidecarConfig {
        source: path.to_owned(),
        name: file.name.unwrap_or_default(),
        listen,
        slots: file.slots.unwrap_or(DEFAULT_SLOTS),
        state_dir,
        insecure: file.insecure,
        stop_grace: file.stop_grace.unwrap_or(DEFAULT_STOP_GRACE),
        tls,
        telemetry: file.telemetry,
        sqlagent,
        ssis,
        jobs,
        catalog_jobs: file.catalog_jobs,
        log_format: log_format(flags, env)?,
        supervisor: crate::supervisor::SupervisorCommand::this_program(),
    };
    let problems = validate::validate(&config, &spans, &origins, text);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }
}

/// file → env → flag; the last one given wins, and its origin is recorded.
fn layer<T>(
    file: Option<T>,
    env: Option<T>,
    flag: Option<T>,
    env_name: &'static str,
    flag_name: &'static str,
    origin: &mut Origin,
) -> Option<T> {
    let mut value = None;
    *origin = Origin::Default;
    if let Some(v) = file {
        value = Some(v);
        *origin = Origin::File;
    }
    if let Some(v) = env {
        value = Some(v);
        *origin = Origin::Env(env_name);
    }
    if let Some(v) = flag {
        value = Some(v);
        *origin = Origin::Flag(flag_name);
    }
    value
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => validate::line_col(text, span.start),
        // toml gives no position for some errors (a dotted key of more than 80 parts):
        // they come from one line alone, the first that fails the same way on its own.
        None => text
            .lines()
            .position(|line| {
                toml::de::DeTable::parse_recoverable(line)
                    .1
                    .iter()
                    .any(|alone| alone.span().is_none() && alone.message() == e.message())
            })
            .map_or((1, 1), |i| (i + 1, 1)),
    };
    let content = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: format!(
            "{}; fix the file, then run `sidecar check`",
            e.message().trim_end()
        ),
        snippet: format!("  {line} | {content}"),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
