//! The `[ssis]` part of the jobs file: catalog settings and the deployed packages, each a
//! script of tasks (how long, what result, which messages and data-flow row counts).
//! Unknown keys are errors; the format is documented in the crate's README.

use std::time::Duration;

use serde::Deserialize;

use crate::config::humantime_serde_compat;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsisConfig {
    /// Catalog property `SERVER_LOGGING_LEVEL`: the default `LOGGING_LEVEL` of executions.
    pub server_logging_level: i32,
    /// Catalog property `RETENTION_WINDOW` (days); `Catalog::cleanup` takes its own cutoff.
    pub retention_window: i32,
    /// How long a started execution stays pending (5) before ISServerExec reports in (2).
    #[serde(with = "humantime_serde_compat")]
    pub pending_delay: Duration,
    /// How long a stopping (8) execution takes to unwind to canceled (3).
    #[serde(with = "humantime_serde_compat")]
    pub stop_latency: Duration,
    /// The Windows account Agent SSIS steps run as (`caller_name` of their executions).
    pub agent_account: String,
    /// `sys.databases.compatibility_level` of SSISDB (`OPENJSON` needs 130+).
    pub compatibility_level: i32,
    /// `SERVERPROPERTY('ServerName')` / `('MachineName')` recorded on executions.
    pub server_name: String,
    pub machine_name: String,
    #[serde(rename = "package")]
    pub packages: Vec<PackageConfig>,
}

impl Default for SsisConfig {
    fn default() -> Self {
        Self {
            server_logging_level: 1,
            retention_window: 365,
            pending_delay: Duration::from_millis(20),
            stop_latency: Duration::from_millis(30),
            agent_account: r"NT SERVICE\SQLSERVERAGENT".into(),
            compatibility_level: 150,
            server_name: "SQL1".into(),
            machine_name: "SQL1".into(),
            packages: Vec::new(),
        }
    }
}

/// A package deployed to `\SSISDB\<folder>\<project>\<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageConfig {
    pub folder: String,
    pub project: String,
    /// With the `.dtsx` suffix, as `create_execution` expects it.
    pub name: String,
    #[serde(default, rename = "parameter")]
    pub parameters: Vec<ParameterConfig>,
    #[serde(default, rename = "task")]
    pub tasks: Vec<TaskConfig>,
    /// Messages written after the terminal status (the package's last events commit late).
    #[serde(default)]
    pub late_messages: u32,
    /// Overrides `[ssis] pending_delay` for this package ("10s": stays pending long enough
    /// to test a stop while pending).
    #[serde(default, with = "humantime_serde_compat::option")]
    pub pending_delay: Option<Duration>,
}

/// A project (object_type 20) or package (30) parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterConfig {
    pub name: String,
    /// SSIS type: Boolean, Byte, Int16, Int32, Int64, Decimal, Double, DateTime, String.
    #[serde(rename = "type")]
    pub ty: String,
    /// "package" (default) or "project".
    #[serde(default = "package_scope")]
    pub scope: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<String>,
}

/// A control-flow task of the package, run in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    /// `execution_path`; defaults to `\<package name without .dtsx>\<task name>`.
    #[serde(default)]
    pub path: Option<String>,
    /// How long the task runs: "50ms", or "until_stopped".
    #[serde(default = "default_duration")]
    pub duration: String,
    /// "success", "failure" (the package fails) or "crash" (ISServerExec dies: status 6).
    #[serde(default = "default_result")]
    pub result: String,
    #[serde(default)]
    pub messages: Vec<MessageConfig>,
    /// Data-flow paths (logged only at LOGGING_LEVEL 3, Verbose).
    #[serde(default)]
    pub rows: Vec<RowsConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageConfig {
    /// `message_type`: 120 error, 110 warning, 70 information, …
    #[serde(rename = "type")]
    pub message_type: i16,
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsConfig {
    pub path_name: String,
    pub source: String,
    pub destination: String,
    pub rows: i64,
}

fn package_scope() -> String {
    "package".into()
}
fn default_duration() -> String {
    "30ms".into()
}
fn default_result() -> String {
    "success".into()
}

/// SSIS data types a parameter may have (`catalog.object_parameters.data_type`).
pub const SSIS_TYPES: &[&str] = &[
    "Boolean", "Byte", "Int16", "Int32", "Int64", "Decimal", "Double", "DateTime", "String",
];

impl SsisConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for p in &self.packages {
            let key = format!("{}\\{}\\{}", p.folder, p.project, p.name).to_lowercase();
            anyhow::ensure!(names.insert(key), "duplicate package {:?}", p.name);
            for par in &p.parameters {
                anyhow::ensure!(
                    SSIS_TYPES.contains(&par.ty.as_str()),
                    "package {:?} parameter {:?}: type {:?} is not one of {SSIS_TYPES:?}",
                    p.name,
                    par.name,
                    par.ty
                );
                anyhow::ensure!(
                    matches!(par.scope.as_str(), "package" | "project"),
                    "package {:?} parameter {:?}: scope must be \"package\" or \"project\"",
                    p.name,
                    par.name
                );
            }
            for t in &p.tasks {
                crate::agent::steps::parse_duration(&t.duration)
                    .map_err(|e| anyhow::anyhow!("package {:?} task {:?}: {e}", p.name, t.name))?;
                anyhow::ensure!(
                    matches!(t.result.as_str(), "success" | "failure" | "crash"),
                    "package {:?} task {:?}: result {:?} is not success, failure or crash",
                    p.name,
                    t.name,
                    t.result
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::JobsFile;

    /// The SSIS example in the README stays valid.
    #[test]
    fn readme_ssis_example_parses() {
        let readme = include_str!("../../README.md");
        let section = readme
            .find("### Jobs file: Windows logins")
            .expect("the SSIS section");
        let start = readme[section..].find("```toml\n").expect("a toml block") + section + 8;
        let len = readme[start..].find("```").expect("end of block");
        let f = JobsFile::parse(&readme[start..start + len]).unwrap();
        assert!(f.logins[0].windows);
        assert_eq!(f.ssis.packages[0].tasks[0].rows[0].rows, 1200);
        assert!(
            JobsFile::parse(
                &readme[start..start + len].replace("result = \"success\"", "result = \"ok\"")
            )
            .is_err()
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let base = "[[login]]\nuser='a'\npassword='b'\n[[ssis.package]]\nfolder='F'\nproject='P'\nname='X.dtsx'\n";
        assert!(JobsFile::parse(base).is_ok());
        assert!(JobsFile::parse(&format!("{base}bogus = 1\n")).is_err());
        assert!(
            JobsFile::parse(&format!(
                "{base}[[ssis.package.parameter]]\nname='N'\ntype='Int'\n"
            ))
            .is_err()
        );
        assert!(JobsFile::parse("[[login]]\nuser='a'\npassword='b'\nwindows=true\n").is_err());
    }
}
