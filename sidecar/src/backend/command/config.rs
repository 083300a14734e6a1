//! `[[job]]` sections of the sidecar config: command jobs and their steps.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Parameters a task may set; they reach the steps as environment variables.
    #[serde(default)]
    pub params: Vec<String>,
    /// Working directory of every step (default: the sidecar's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Extra environment for every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    pub name: String,
    /// Program and arguments; never passed through a shell.
    pub run: Vec<String>,
    /// "next" | "succeed" | "fail" | "goto:<step name>"; default "next".
    #[serde(default)]
    pub on_success: Option<String>,
    /// Default "fail".
    #[serde(default)]
    pub on_failure: Option<String>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default, with = "agentfleet_common::duration::serde_opt")]
    pub retry_interval: Option<Duration>,
    #[serde(default, with = "agentfleet_common::duration::serde_opt")]
    pub timeout: Option<Duration>,
}
