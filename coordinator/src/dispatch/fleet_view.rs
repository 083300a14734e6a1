//! The dispatcher's view of the fleet: what each sidecar offers, which parameters its jobs
//! declare, and what can never be placed.
use std::collections::{BTreeMap, HashMap};

use std::time::Duration;

use tokio::sync::mpsc;

use super::Dispatcher;
use crate::execution::ExecMsg;
use crate::fleet::{Sidecar, SidecarInfo};
use crate::schedule::{self, SidecarState};

impl Dispatcher<'_> {
    /// Tasks whose job no reachable eligible sidecar offers, with the reason. Checked
    /// before anything starts.
    pub fn unplaceable(&self) -> Vec<(String, String)> {
        self.plan
            .tasks
            .iter()
            .filter_map(|t| {
                schedule::unplaceable_reason(&self.ready_task(t.index), &self.states)
                    .or_else(|| self.param_problem(t.index))
                    .map(|why| (t.name.clone(), why))
            })
            .collect()
    }

    /// Parameters the task sets itself (not plan defaults) that a sidecar offering its job
    /// does not declare. Nothing over the wire becomes a command line, and SQL Server Agent
    /// jobs take no parameters at all (sp_start_job has none).
    pub(super) fn param_problem(&self, index: usize) -> Option<String> {
        let task = &self.plan.tasks[index];
        let own: Vec<&String> = task
            .params
            .iter()
            .filter(|(k, v)| self.plan.params.get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        if own.is_empty() {
            return None;
        }
        for ((sidecar, job), (backend, declared)) in &self.declared {
            if job != &task.job || !(task.on.is_empty() || task.on.contains(sidecar)) {
                continue;
            }
            if backend == "sqlagent" {
                return Some(format!(
                    "job `{job}` on `{sidecar}` is a SQL Server Agent job, which takes no parameters (sp_start_job has none); remove `params` from this task"
                ));
            }
            if let Some(p) = own.iter().find(|p| !declared.contains(p)) {
                return Some(format!(
                    "parameter `{p}` is not declared by job `{job}` on `{sidecar}` (it declares: {}); declare it with `params = [...]` in the sidecar's [[job]]",
                    if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
        }
        None
    }

    /// The task's parameters the job on `sidecar` declares (plan defaults it does not
    /// declare are not sent).
    pub(super) fn params_for(&self, index: usize, sidecar: &str) -> BTreeMap<String, String> {
        let task = &self.plan.tasks[index];
        let declared = self.declared.get(&(sidecar.to_owned(), task.job.clone()));
        task.params
            .iter()
            .filter(|(k, _)| declared.is_some_and(|(_, d)| d.contains(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

pub(super) fn sidecar_state(name: &str, info: Option<&SidecarInfo>) -> SidecarState {
    let describe = info.and_then(|i| i.describe.clone()).unwrap_or_default();
    SidecarState {
        name: name.to_owned(),
        offers: info.map(SidecarInfo::offers).unwrap_or_default(),
        slots: describe.slots as usize,
        running: describe.running as usize,
        running_jobs: describe
            .running_jobs
            .into_iter()
            .fold(HashMap::new(), |mut counts, job| {
                *counts.entry(job).or_default() += 1;
                counts
            }),
        max_instances: info
            .map(|i| {
                i.jobs
                    .iter()
                    .filter(|j| j.max_instances > 1)
                    .map(|j| (j.name.clone(), j.max_instances as usize))
                    .collect()
            })
            .unwrap_or_default(),
        reachable: info.is_some_and(|i| i.reachable),
    }
}

/// Each reachable sidecar's slots, for `run_started` (the run report's capacity).
pub(super) fn slots(states: &[SidecarState]) -> BTreeMap<String, u32> {
    states
        .iter()
        .filter(|s| s.reachable && s.slots > 0)
        .map(|s| (s.name.clone(), s.slots as u32))
        .collect()
}

/// Expected duration per job: the largest median any sidecar reports (pessimistic, so
/// long jobs start early).
pub(super) fn expected_durations(infos: &BTreeMap<String, SidecarInfo>) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for job in infos.values().flat_map(|i| &i.jobs) {
        if let Some(stats) = job.stats.as_ref().filter(|s| s.count > 0) {
            let e = out.entry(job.name.clone()).or_default();
            *e = (*e).max(stats.median_ms);
        }
    }
    out
}

/// Asks every sidecar, every `every`, what it offers and runs, for the whole run. The
/// dispatcher's own bookkeeping only knows its own executions; this is how it learns that
/// a job someone else started has ended, or that a sidecar that was down is back.
pub(super) async fn refresh(sidecars: Vec<Sidecar>, tx: mpsc::Sender<ExecMsg>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        for (sidecar, info) in crate::fleet::probe(&sidecars).await {
            if tx.send(ExecMsg::Refreshed { sidecar, info }).await.is_err() {
                return;
            }
        }
    }
}

impl Dispatcher<'_> {
    /// Takes a sidecar's fresh view of itself. Its running count and jobs include our own
    /// executions; a start that races with this is refused by the sidecar and placed again.
    pub(super) fn on_refreshed(&mut self, name: &str, info: &SidecarInfo) {
        let Some(state) = self.states.iter_mut().find(|s| s.name == name) else {
            return;
        };
        if !info.reachable {
            // Unreachable for now; running executions watch (and time out) on their own.
            state.reachable = false;
            return;
        }
        let fresh = sidecar_state(name, Some(info));
        *state = fresh;
    }
}
