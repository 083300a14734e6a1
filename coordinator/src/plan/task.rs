//! One `[[task]]` as decoded → a checked [`Task`]: name, job, `after` targets, `on`
//! against the fleet, numbers, timeout and parameters.
use std::collections::BTreeMap;

use super::Task;
use super::build::parse_timeout;
use super::diagnostic::{Diagnostic, Source, did_you_mean};
use super::raw::{self, RawTask, key_subject};
use crate::fleet_config::FleetConfig;

/// What checking one task needs to know about the rest of the plan.
pub(super) struct TaskContext<'a> {
    pub(super) src: Source<'a>,
    pub(super) index: usize,
    pub(super) subject: &'a str,
    pub(super) index_of: &'a BTreeMap<&'a str, usize>,
    /// The line of every task, by index.
    pub(super) lines: &'a [usize],
    pub(super) fleet: Option<&'a FleetConfig>,
}

impl TaskContext<'_> {
    pub(super) fn task(
        &self,
        rt: RawTask,
        key_lines: BTreeMap<String, usize>,
        plan_params: &BTreeMap<String, String>,
        out: &mut Vec<Diagnostic>,
    ) -> Task {
        let (src, subject) = (self.src, self.subject);
        let line = self.lines[self.index];
        let at = |key: &str| key_subject(subject, key);
        let table_line_diag = |key: &str, message: String| Diagnostic {
            path: Some(src.path.to_owned()),
            line: Some(line),
            subject: Some(subject.to_owned()),
            message: format!("missing key `{key}`: {message}"),
        };

        let name = match &rt.name {
            None => {
                out.push(table_line_diag(
                    "name",
                    "every task needs a name, unique in the plan, e.g. name = \"stage-customers\""
                        .into(),
                ));
                String::new()
            }
            Some(n) if n.get_ref().trim().is_empty() => {
                out.push(src.diag(
                    &n.span(),
                    at("name"),
                    "the task name is empty: give the task a name, unique in the plan",
                ));
                String::new()
            }
            Some(n) => {
                let first = self.index_of[n.get_ref().as_str()];
                if first != self.index {
                    out.push(src.diag(&n.span(), at("name"), format!("the task at line {} has this name already; task names must be unique in the plan", self.lines[first])));
                }
                n.get_ref().clone()
            }
        };
        let job = match &rt.job {
            None => {
                out.push(table_line_diag("job", "say which job to run, by its name on the sidecars, e.g. job = \"ETL - Stage Customers\"".into()));
                String::new()
            }
            Some(j) if j.get_ref().trim().is_empty() => {
                out.push(src.diag(&j.span(), at("job"), "the job name is empty: write the job's name as the sidecars list it (see `coordinator jobs SIDECAR`)"));
                String::new()
            }
            Some(j) => j.get_ref().clone(),
        };

        let mut after = Vec::new();
        for dep in &rt.after {
            let dep_name = dep.get_ref().as_str();
            match self.index_of.get(dep_name) {
                Some(&i) if i == self.index => out.push(src.diag(
                    &dep.span(),
                    at("after"),
                    format!("a task cannot wait for itself: remove \"{dep_name}\" from `after`"),
                )),
                Some(&i) => after.push(i),
                None => {
                    let hint = did_you_mean(dep_name, self.index_of.keys().copied(), "\"");
                    out.push(src.diag(
                        &dep.span(),
                        at("after"),
                        format!("no task named \"{dep_name}\"{hint}"),
                    ));
                }
            }
        }
        after.sort_unstable();
        after.dedup();

        let mut on: Vec<String> = Vec::new();
        for entry in &rt.on {
            let sidecar = entry.get_ref();
            if sidecar.trim().is_empty() {
                out.push(src.diag(
                    &entry.span(),
                    at("on"),
                    "empty sidecar name: list sidecars by their names in the fleet",
                ));
                continue;
            }
            if let Some(fleet) = self.fleet.filter(|f| !f.sidecars.contains_key(sidecar)) {
                let names = fleet.sidecars.keys().map(String::as_str);
                let hint = did_you_mean(sidecar, names.clone(), "\"");
                let known: Vec<&str> = names.collect();
                out.push(src.diag(
                    &entry.span(),
                    at("on"),
                    format!(
                        "no sidecar named \"{sidecar}\" in the fleet{hint}; the fleet has: {}",
                        known.join(", ")
                    ),
                ));
            }
            if !on.contains(sidecar) {
                on.push(sidecar.clone());
            }
        }

        let retries = match &rt.retries {
            None => 0,
            Some(r) => u32::try_from(*r.get_ref()).unwrap_or_else(|_| {
                out.push(src.diag(&r.span(), at("retries"), format!("retries = {} is out of range: it counts further attempts after a failure, 0 or more", r.get_ref())));
                0
            }),
        };
        let timeout = rt
            .timeout
            .as_ref()
            .and_then(|t| parse_timeout(src, t, &at("timeout"), out));
        let mut params = plan_params.clone();
        params.extend(raw::params(src, &rt.params, subject, out));

        Task {
            index: self.index,
            name,
            job,
            on,
            after,
            retries,
            timeout,
            priority: rt.priority,
            rerun_if_lost: rt.rerun_if_lost,
            optional: rt.optional,
            params,
            line,
            key_lines,
        }
    }
}
