//! The plan: a TOML file of tasks (child jobs), their dependencies and limits, turned into a
//! validated graph. Pure apart from reading the file: everything a run needs to know about
//! the plan is checked here, before anything starts, and every problem found is reported
//! with its file and line.
mod build;
mod diagnostic;
mod graph;
pub(crate) mod raw;
mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use diagnostic::Source;
pub use diagnostic::{Diagnostic, PlanError};

use crate::fleet_config::{self, FleetConfig};

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `[plan] name`, by default the file name without extension.
    pub name: String,
    /// Cap on tasks running at once across the fleet; `None`: only the sidecars' slots.
    pub max_parallel: Option<usize>,
    /// Limit for the whole run.
    pub timeout: Option<Duration>,
    /// Stop starting tasks after the first failure.
    pub fail_fast: bool,
    /// `[plan.params]`: defaults for every task (already merged into each task's params).
    pub params: BTreeMap<String, String>,
    /// In file order; `Task::index` is the position here.
    pub tasks: Vec<Task>,
    /// The fleet in effect: a `--fleet` file if one was given, else the plan's `[fleet]`.
    pub fleet: Option<FleetConfig>,
    /// The file the plan was read from.
    pub path: PathBuf,
    dependants: Vec<Vec<usize>>,
    order: Vec<usize>,
}

/// One `[[task]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub index: usize,
    pub name: String,
    /// The job's name on the sidecars.
    pub job: String,
    /// Eligible sidecars; empty: every sidecar offering the job.
    pub on: Vec<String>,
    /// Indices of the tasks that must succeed first, ascending.
    pub after: Vec<usize>,
    /// Further attempts after a failure.
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// Higher goes first among ready tasks.
    pub priority: i32,
    /// If the sidecar is lost mid-run, start again elsewhere.
    pub rerun_if_lost: bool,
    /// Its failure (or skip) does not fail the run's exit code; dependants are still skipped.
    pub optional: bool,
    /// The plan's defaults overridden by the task's own.
    pub params: BTreeMap<String, String>,
    /// The line of the task in the plan file (its `name`, else its `[[task]]`), for
    /// messages about the task that come later (e.g. at run start).
    pub line: usize,
    /// The line of each key the task sets.
    pub key_lines: BTreeMap<String, usize>,
}

impl Task {
    /// The line of `key` if the task sets it, else the task's line.
    pub fn line_of(&self, key: &str) -> usize {
        self.key_lines.get(key).copied().unwrap_or(self.line)
    }
}

impl Plan {
    /// The tasks that list task `i` in `after` (they wait for it), ascending.
    pub fn dependants(&self, i: usize) -> &[usize] {
        self.dependants.get(i).map_or(&[], Vec::as_slice)
    }

    /// Every task index once, each after its dependencies; ties in plan order.
    pub fn topo_order(&self) -> &[usize] {
        &self.order
    }

    /// The task named `name`.
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    /// A message located at `key` of task `task`, in the same form as the plan's own
    /// errors, for problems found later (e.g. at run start: a job no sidecar offers).
    pub fn diagnostic(&self, task: usize, key: &str, message: impl Into<String>) -> Diagnostic {
        let t = &self.tasks[task];
        Diagnostic {
            path: Some(self.path.clone()),
            line: Some(t.line_of(key)),
            subject: Some(format!("task \"{}\" key `{key}`", t.name)),
            message: message.into(),
        }
    }
}

/// Reads and validates a plan; the fleet is the plan's `[fleet]`, if any.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    load_with_fleet(path, None)
}

/// Reads and validates a plan with the fleet in effect: `fleet_file` (`--fleet`) when
/// given, which overrides the plan's own `[fleet]`. Problems in both files are reported
/// together.
pub fn load_with_fleet(path: &Path, fleet_file: Option<&Path>) -> Result<Plan, PlanError> {
    let mut problems = Vec::new();
    let choice = match fleet_file {
        None => FleetChoice::Inline,
        Some(file) => match fleet_config::load_fleet(file) {
            Ok(fleet) => FleetChoice::Given(Some(fleet)),
            Err(PlanError::Invalid(d)) => {
                problems = d;
                FleetChoice::Given(None)
            }
            Err(e) => return Err(e),
        },
    };
    let text = read_text(path, "plan")?;
    match build::parse(&text, path, choice) {
        Ok(plan) if problems.is_empty() => Ok(plan),
        Ok(_) => Err(PlanError::invalid(problems)),
        Err(e) => {
            problems.extend(e.diagnostics().iter().cloned());
            Err(PlanError::invalid(problems))
        }
    }
}

/// Validates plan text; `path` is used in messages and to resolve the `[fleet]`'s
/// relative paths.
pub fn parse(text: &str, path: &Path) -> Result<Plan, PlanError> {
    build::parse(text, path, FleetChoice::Inline)
}

/// Like [`parse`], with the fleet given separately (it overrides the plan's `[fleet]`).
pub fn parse_with_fleet(text: &str, path: &Path, fleet: FleetConfig) -> Result<Plan, PlanError> {
    build::parse(text, path, FleetChoice::Given(Some(fleet)))
}

/// Where the fleet in effect comes from.
pub(crate) enum FleetChoice {
    /// The plan's own `[fleet]`, if it has one.
    Inline,
    /// A separate file; `None` when that file had problems (already reported), so that
    /// `on` is not checked against a fleet we do not know.
    Given(Option<FleetConfig>),
}

pub(crate) fn read_text(path: &Path, what: &'static str) -> Result<String, PlanError> {
    std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz_tests;
