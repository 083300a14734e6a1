//! The dispatcher's view of the fleet: what each sidecar offers, which parameters its jobs
//! declare, and what can never be placed.
use std::collections::{BTreeMap, HashMap, HashSet};

use std::time::Duration;

use tokio::sync::mpsc;

use super::{Dispatcher, State};
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
        let infos = crate::fleet::probe(&sidecars).await;
        let lists = sidecars.iter().map(|s| {
            let reachable = infos.get(&s.name).is_some_and(|i| i.reachable);
            async move {
                let running = if reachable {
                    running_executions(s).await
                } else {
                    None
                };
                (s.name.clone(), running)
            }
        });
        let mut lists: HashMap<String, Option<Vec<(String, String)>>> =
            futures::future::join_all(lists).await.into_iter().collect();
        for (sidecar, info) in infos {
            let running = lists.remove(&sidecar).flatten();
            let msg = ExecMsg::Refreshed {
                sidecar,
                info,
                running,
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// A sidecar's running executions as (id, job); None when it does not answer in time.
async fn running_executions(sidecar: &Sidecar) -> Option<Vec<(String, String)>> {
    let mut client = sidecar.client.clone();
    let request = agentfleet_common::proto::ListExecutionsRequest { running_only: true };
    let reply = tokio::time::timeout(LIST_TIMEOUT, client.list_executions(request))
        .await
        .ok()?
        .ok()?;
    Some(
        reply
            .into_inner()
            .executions
            .into_iter()
            .map(|e| (e.execution_id, e.job))
            .collect(),
    )
}

/// How long a sidecar gets to list its running executions during a refresh.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

impl Dispatcher<'_> {
    /// Takes a sidecar's fresh view of itself: what it offers, its slots, and what others
    /// run there. Our own executions are counted from our own bookkeeping, not from its
    /// snapshot: the snapshot misses our starts still in flight and still lists ours that
    /// ended just before it was taken, and either would make us place too many (a refused
    /// start and a cooldown) or too few (idle slots until the next refresh).
    pub(super) fn on_refreshed(
        &mut self,
        name: &str,
        info: &SidecarInfo,
        running: Option<&[(String, String)]>,
    ) {
        // Every execution of ours this run knows (running or ended), and ours running here.
        let mut ours_known: HashSet<&str> = HashSet::new();
        let mut ours_here: Vec<&str> = Vec::new();
        for (run, task) in self.tasks.iter().zip(&self.plan.tasks) {
            if let Some(id) = run.execution_id.as_deref() {
                ours_known.insert(id);
            }
            if matches!(&run.state, State::Running { sidecar } if sidecar == name) {
                ours_here.push(task.job.as_str());
            }
        }
        let Some(state) = self.states.iter_mut().find(|s| s.name == name) else {
            return;
        };
        if !info.reachable {
            // Unreachable for now; running executions watch (and time out) on their own.
            state.reachable = false;
            return;
        }
        let mut fresh = sidecar_state(name, Some(info));
        if let Some(running) = running {
            count_running(&mut fresh, running, &ours_known, &ours_here);
        }
        *state = fresh;
    }
}

/// Sets what runs on a sidecar: the executions it listed that are not ours (`ours_known`:
/// every execution of ours, running or ended), plus the jobs of ours running there
/// (`ours_here`) as our own bookkeeping has them.
fn count_running(
    state: &mut SidecarState,
    listed: &[(String, String)],
    ours_known: &HashSet<&str>,
    ours_here: &[&str],
) {
    state.running = 0;
    state.running_jobs.clear();
    let others = listed
        .iter()
        .filter(|(id, _)| !ours_known.contains(id.as_str()))
        .map(|(_, job)| job.as_str());
    for job in others.chain(ours_here.iter().copied()) {
        state.started(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refresh_counts_others_from_the_sidecar_and_ours_from_our_bookkeeping() {
        let mut state = sidecar_state("s1", None);
        let listed: Vec<(String, String)> = [
            ("ours-running", "load"),
            // Ours, ended after the sidecar listed it: not running any more.
            ("ours-ended", "load"),
            ("theirs", "other"),
        ]
        .into_iter()
        .map(|(id, job)| (id.to_owned(), job.to_owned()))
        .collect();
        let ours_known =
            HashSet::from(["ours-running", "ours-ended", "in-flight-1", "in-flight-2"]);
        // Ours running there: one it listed, two whose starts it had not taken yet. The
        // snapshot alone says 3 run (2 of `load`): one too many ended, two too few started.
        count_running(&mut state, &listed, &ours_known, &["load", "load", "load"]);
        assert_eq!(state.running, 4);
        assert_eq!(state.instances_running("load"), 3);
        assert_eq!(state.instances_running("other"), 1);
    }
}
