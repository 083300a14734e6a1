//! `[[job]]` sections of the sidecar config: command jobs and their steps.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Parameters a task may set, with the values each accepts (see `params.rs`); they
    /// reach the steps as environment variables.
    #[serde(default)]
    pub params: super::params::Params,
    /// Parameters whose values are secret (passwords, tokens): they still reach the steps,
    /// but are never written to the audit log or the sidecar's own log. Each must be one
    /// `params` declares.
    #[serde(default)]
    pub secret_params: Vec<String>,
    /// Working directory of every step (default: the sidecar's).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Extra environment for every step.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables of the sidecar's environment the steps get besides the OS basics (names,
    /// or prefixes ending in `*`, e.g. ["ORACLE_*"]); see `environment.rs`.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// How many executions of this job may run at once on this sidecar (each within the
    /// sidecar's `slots`). Default 1, SQL Server Agent's rule; more for a job that is safe
    /// to run side by side, e.g. one load per `PARTITION` parameter.
    #[serde(default = "one_instance")]
    pub max_instances: u32,
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
}

/// The most executions of one job that may run at once on one sidecar.
pub const MAX_INSTANCES_LIMIT: u32 = 1024;

fn one_instance() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// What happens after a step: the value of `on_success` / `on_failure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// Go to the next step; after the last step, end the job with this step's result.
    Next,
    /// End the job, reporting success.
    Succeed,
    /// End the job, reporting failure.
    Fail,
    /// Go to the step with this name.
    Goto(String),
}

/// `on_success` when not written.
pub const DEFAULT_ON_SUCCESS: &str = "next";
/// `on_failure` when not written.
pub const DEFAULT_ON_FAILURE: &str = "fail";

impl StepAction {
    /// Parses "next" | "succeed" | "fail" | "goto:<step name>".
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(target) = text.strip_prefix("goto:") {
            let target = target.trim();
            if target.is_empty() {
                return Err("`goto:` needs a step name, e.g. \"goto:cleanup\"".to_owned());
            }
            return Ok(Self::Goto(target.to_owned()));
        }
        match text {
            "next" => Ok(Self::Next),
            "succeed" => Ok(Self::Succeed),
            "fail" => Ok(Self::Fail),
            other => Err(format!(
                "`{other}` is not a step action; write \"next\", \"succeed\", \"fail\" or \"goto:<step name>\""
            )),
        }
    }
}

impl StepConfig {
    /// `on_success` as written, or the default.
    pub fn on_success_text(&self) -> &str {
        self.on_success.as_deref().unwrap_or(DEFAULT_ON_SUCCESS)
    }

    /// `on_failure` as written, or the default.
    pub fn on_failure_text(&self) -> &str {
        self.on_failure.as_deref().unwrap_or(DEFAULT_ON_FAILURE)
    }
}

impl JobConfig {
    /// Checks what the types cannot: at least one step, unique step names, a program per
    /// step, actions that parse and `goto` targets that exist, usable parameter names.
    /// The message names the job and step, for the config loader to add the file.
    pub fn validate(&self) -> Result<(), String> {
        let job = &self.name;
        if job.trim().is_empty() {
            return Err("a [[job]] has an empty name".to_owned());
        }
        if self.steps.is_empty() {
            return Err(format!(
                "job `{job}` has no steps; add at least one [[job.step]]"
            ));
        }
        if !(1..=MAX_INSTANCES_LIMIT).contains(&self.max_instances) {
            return Err(format!(
                "job `{job}`: max_instances = {} is out of range; use 1 to {MAX_INSTANCES_LIMIT}",
                self.max_instances
            ));
        }
        for param in &self.params.names() {
            if param.is_empty() || param.contains(['=', '\0']) {
                return Err(format!(
                    "job `{job}`: `{param}` cannot be an environment variable name"
                ));
            }
        }
        self.params
            .rules()
            .map_err(|e| format!("job `{job}`: {e}"))?;
        if let Some(secret) = self.secret_params.iter().find(|s| !self.params.contains(s)) {
            return Err(format!(
                "job `{job}`: secret_params names `{secret}`, which params does not declare"
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for step in &self.steps {
            let name = &step.name;
            if !seen.insert(name.as_str()) {
                return Err(format!("job `{job}` has two steps named `{name}`"));
            }
            if step.run.first().is_none_or(|program| program.is_empty()) {
                return Err(format!(
                    "job `{job}`, step `{name}`: `run` needs a program, e.g. run = [\"dtexec\", \"/F\", \"package.dtsx\"]"
                ));
            }
        }
        for step in &self.steps {
            for (key, text) in [
                ("on_success", step.on_success_text()),
                ("on_failure", step.on_failure_text()),
            ] {
                let action = StepAction::parse(text)
                    .map_err(|e| format!("job `{job}`, step `{}`, {key}: {e}", step.name))?;
                if let StepAction::Goto(target) = action
                    && !seen.contains(target.as_str())
                {
                    return Err(format!(
                        "job `{job}`, step `{}`, {key}: there is no step `{target}`",
                        step.name
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(steps: &[(&str, Option<&str>)]) -> JobConfig {
        let steps = steps
            .iter()
            .map(|(name, on_failure)| StepConfig {
                name: (*name).to_owned(),
                run: vec!["true".to_owned()],
                on_success: None,
                on_failure: on_failure.map(str::to_owned),
                retries: 0,
                retry_interval: None,
                timeout: None,
            })
            .collect();
        JobConfig {
            name: "j".to_owned(),
            description: String::new(),
            params: Default::default(),
            secret_params: Vec::new(),
            working_dir: None,
            inherit_env: Vec::new(),
            env: BTreeMap::new(),
            max_instances: 1,
            steps,
        }
    }

    #[test]
    fn parses_actions() {
        assert_eq!(StepAction::parse(" next "), Ok(StepAction::Next));
        assert_eq!(StepAction::parse("succeed"), Ok(StepAction::Succeed));
        assert_eq!(StepAction::parse("fail"), Ok(StepAction::Fail));
        assert_eq!(
            StepAction::parse("goto: load"),
            Ok(StepAction::Goto("load".to_owned()))
        );
        assert!(StepAction::parse("goto:").is_err());
        assert!(
            StepAction::parse("quit")
                .unwrap_err()
                .contains("not a step action")
        );
    }

    #[test]
    fn validates_jobs() {
        assert_eq!(
            job(&[("a", None), ("b", Some("goto:a"))]).validate(),
            Ok(())
        );
        assert!(job(&[]).validate().unwrap_err().contains("no steps"));
        assert!(
            job(&[("a", None), ("a", None)])
                .validate()
                .unwrap_err()
                .contains("two steps named `a`")
        );
        assert!(
            job(&[("a", Some("goto:z"))])
                .validate()
                .unwrap_err()
                .contains("there is no step `z`")
        );
        let mut secret = job(&[("a", None)]);
        secret.params = crate::backend::command::params::Params::List(vec!["USER".into()]);
        secret.secret_params = vec!["PASSWORD".into()];
        assert_eq!(
            secret.validate().unwrap_err(),
            "job `j`: secret_params names `PASSWORD`, which params does not declare"
        );
        secret.params =
            crate::backend::command::params::Params::List(vec!["USER".into(), "PASSWORD".into()]);
        assert_eq!(secret.validate(), Ok(()));
        let mut none_at_once = job(&[("a", None)]);
        none_at_once.max_instances = 0;
        assert_eq!(
            none_at_once.validate().unwrap_err(),
            "job `j`: max_instances = 0 is out of range; use 1 to 1024"
        );
        let mut no_program = job(&[("a", None)]);
        no_program.steps[0].run.clear();
        assert!(
            no_program
                .validate()
                .unwrap_err()
                .contains("needs a program")
        );
    }
}
