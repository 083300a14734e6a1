//! The `[sqlagent]` section of the sidecar config.
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlAgentConfig {
    /// ADO-style server, e.g. "tcp:localhost,1433" or "sql1\\INSTANCE".
    pub server: String,
    /// "sql" (user + password) or "windows" (integrated, Windows only).
    #[serde(default = "default_auth")]
    pub auth: String,
    #[serde(default)]
    pub user: Option<String>,
    /// Name of the environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Encrypt the connection (default true).
    #[serde(default = "default_true")]
    pub encrypt: bool,
    /// Accept any server certificate (opt-in, for self-signed test servers).
    #[serde(default)]
    pub trust_server_certificate: bool,
    #[serde(default, with = "agentfleet_common::duration::serde_opt")]
    pub poll_interval: Option<Duration>,
    /// Globs of job names offered and startable (default: all).
    #[serde(default)]
    pub allow_jobs: Vec<String>,
}

fn default_auth() -> String {
    "sql".into()
}

fn default_true() -> bool {
    true
}
