//! Placement: which ready task goes to which sidecar next. Pure and deterministic: the
//! dispatcher calls [`place`] whenever something changes (a task became ready, a slot
//! freed, a sidecar came back) and starts what it returns; tasks not returned wait.
//!
//! Order of tasks (who gets a slot first):
//! 1. priority, higher first: the user said so;
//! 2. expected duration, longest first (LPT). With the whole set of tasks ready, starting
//!    the long ones first and filling the gaps with short ones keeps the makespan within
//!    4/3 of optimal; in plan order one long task drawn last can end alone, long after the
//!    rest. Tasks with an unknown duration go *before* the known ones: an unknown job may be
//!    the longest of all, and started last it would add its whole length to the run, while
//!    started first and turning out short it costs almost nothing, since known short jobs
//!    still fill the tail. (Putting unknowns last risks the worst case to save a little in
//!    the best one.)
//! 3. plan order, so equal tasks start as the user listed them.
//!
//! Choice of sidecar for a task, among eligible ones (reachable, offers the job, in `on`,
//! a free slot, running fewer executions of that job than its `max_instances` there: 1
//! unless the sidecar's config allows more):
//! 1. not in `avoid` (e.g. where the previous attempt failed): a retry is more useful
//!    elsewhere, and this stays a preference, so an avoided sidecar is still used when it is
//!    the only one;
//! 2. most free capacity, as the share of slots free, so a 2-slot and an 8-slot server fill
//!    proportionally;
//! 3. fewest running;
//! 4. name, for determinism.
use std::cmp::{Ordering, Reverse};
use std::collections::{HashMap, HashSet};

/// A task whose dependencies are done, waiting for a sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyTask {
    /// Index in the plan (plan order).
    pub task: usize,
    pub job: String,
    /// Eligible sidecars; empty: any.
    pub on: Vec<String>,
    pub priority: i32,
    /// Typical duration of the job (from the sidecars' statistics), if known.
    pub expected_ms: Option<u64>,
    /// Sidecars to avoid if another will do.
    pub avoid: Vec<String>,
}

/// What the dispatcher knows about one sidecar now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarState {
    pub name: String,
    /// Jobs it offers.
    pub offers: HashSet<String>,
    /// Executions it runs at once.
    pub slots: usize,
    /// Executions it runs now (ours and others').
    pub running: usize,
    /// Executions it runs now, per job (ours and others').
    pub running_jobs: HashMap<String, usize>,
    /// Per job, how many executions may run at once here; a job not listed: 1 (SQL Server
    /// Agent refuses to start a job that is already running; command jobs may allow more).
    pub max_instances: HashMap<String, usize>,
    pub reachable: bool,
}

impl SidecarState {
    /// How many executions of `job` may run here at once.
    pub fn instances_allowed(&self, job: &str) -> usize {
        self.max_instances.get(job).copied().unwrap_or(1).max(1)
    }

    /// How many executions of `job` run here now.
    pub fn instances_running(&self, job: &str) -> usize {
        self.running_jobs.get(job).copied().unwrap_or(0)
    }

    /// Counts an execution of `job` started here.
    pub fn started(&mut self, job: &str) {
        self.running += 1;
        *self.running_jobs.entry(job.to_owned()).or_default() += 1;
    }

    /// Counts an execution of `job` here as ended.
    pub fn ended(&mut self, job: &str) {
        self.running = self.running.saturating_sub(1);
        if let Some(n) = self.running_jobs.get_mut(job) {
            *n -= 1;
            if *n == 0 {
                self.running_jobs.remove(job);
            }
        }
    }
}

/// Start `task` on `sidecar`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub task: usize,
    pub sidecar: String,
}

/// Places ready tasks on sidecars; at most `free_parallel` placements (the plan's
/// `max_parallel` minus what runs). See the module comment for the rules.
pub fn place(
    ready: &[ReadyTask],
    sidecars: &[SidecarState],
    free_parallel: usize,
) -> Vec<Placement> {
    let mut budget = free_parallel;
    let mut state: Vec<Load<'_>> = sidecars
        .iter()
        .map(|s| Load {
            side: s,
            running: s.running,
            placed_jobs: HashMap::new(),
        })
        .collect();
    let mut free_total: usize = state
        .iter()
        .filter(|l| l.side.reachable)
        .map(Load::free)
        .sum();
    let mut order: Vec<&ReadyTask> = ready.iter().collect();
    order.sort_unstable_by_key(|t| task_key(t));

    // Per job, the sidecars that could run it in this call at all (reachable, offering it,
    // not running it already): computed once per distinct job, so that many ready tasks of
    // few jobs do not look up every sidecar's job sets again and again.
    let mut could_run: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut placements = Vec::new();
    for task in order {
        if budget == 0 || free_total == 0 {
            break;
        }
        let candidates = could_run.entry(task.job.as_str()).or_insert_with(|| {
            (0..state.len())
                .filter(|&i| state[i].could_run(&task.job))
                .collect()
        });
        let best = candidates
            .iter()
            .map(|&i| (i, &state[i]))
            .filter(|(_, l)| l.has_room_for(task))
            .min_by(|(_, a), (_, b)| sidecar_order(task, a, b))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let load = &mut state[i];
            load.running += 1;
            *load.placed_jobs.entry(&task.job).or_default() += 1;
            budget -= 1;
            free_total -= 1;
            placements.push(Placement {
                task: task.task,
                sidecar: load.side.name.clone(),
            });
        }
    }
    placements
}

/// Why `task` can never be placed on these sidecars, whatever frees up: no sidecar (in
/// `on`, if given) offers its job or has any slots. `None` when it may be placed later.
/// An unreachable sidecar that offers nothing is taken as not known yet, so a sidecar that
/// was down at the start does not fail tasks it may well run once it is back.
pub fn unplaceable_reason(task: &ReadyTask, sidecars: &[SidecarState]) -> Option<String> {
    let unknown_on: Vec<&str> = task
        .on
        .iter()
        .filter(|n| !sidecars.iter().any(|s| &s.name == *n))
        .map(String::as_str)
        .collect();
    let candidates: Vec<&SidecarState> = sidecars
        .iter()
        .filter(|s| task.on.is_empty() || task.on.contains(&s.name))
        .collect();
    let may_offer =
        |s: &SidecarState| s.offers.contains(&task.job) || (!s.reachable && s.offers.is_empty());
    if candidates.iter().any(|s| may_offer(s) && s.slots > 0) {
        return None;
    }
    let job = &task.job;
    let offered_by: Vec<&str> = sidecars
        .iter()
        .filter(|s| s.offers.contains(job))
        .map(|s| s.name.as_str())
        .collect();
    if candidates.iter().any(|s| may_offer(s)) {
        return Some(format!(
            "the sidecars that offer job \"{job}\" have no slots"
        ));
    }
    if task.on.is_empty() {
        let names: Vec<&str> = sidecars.iter().map(|s| s.name.as_str()).collect();
        return Some(format!(
            "no sidecar offers job \"{job}\" (sidecars: {}); check the job's name with `coordinator jobs SIDECAR`",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    let mut message = format!(
        "none of the sidecars in `on` ({}) offers job \"{job}\"",
        task.on.join(", ")
    );
    if !unknown_on.is_empty() {
        message.push_str(&format!("; not in the fleet: {}", unknown_on.join(", ")));
    }
    if offered_by.is_empty() {
        message.push_str(
            "; no sidecar offers it at all: check the job's name with `coordinator jobs SIDECAR`",
        );
    } else {
        message.push_str(&format!(
            "; it is offered by {}: add one to `on`",
            offered_by.join(", ")
        ));
    }
    Some(message)
}

/// A sidecar's load during one `place` call, including placements made in the call.
struct Load<'a> {
    side: &'a SidecarState,
    running: usize,
    /// Executions placed here in this call, per job.
    placed_jobs: HashMap<&'a str, usize>,
}

impl Load<'_> {
    fn free(&self) -> usize {
        self.side.slots.saturating_sub(self.running)
    }

    /// What does not change during a call: reachable, offers the job, not running it as
    /// often as it may already.
    fn could_run(&self, job: &str) -> bool {
        let s = self.side;
        s.reachable && s.offers.contains(job) && s.instances_running(job) < s.instances_allowed(job)
    }

    /// The rest of eligibility, given [`Load::could_run`]: a free slot, allowed by `on`,
    /// and room for one more instance of the job with those placed earlier in this call.
    fn has_room_for(&self, task: &ReadyTask) -> bool {
        let job = task.job.as_str();
        let placed = self.placed_jobs.get(job).copied().unwrap_or(0);
        self.free() > 0
            && (task.on.is_empty() || task.on.contains(&self.side.name))
            && self.side.instances_running(job) + placed < self.side.instances_allowed(job)
    }
}

/// Which ready task goes first: the smallest key. Plan indices are unique, so the order is
/// total and an unstable sort is deterministic.
fn task_key(t: &ReadyTask) -> (Reverse<i32>, Reverse<u128>, usize) {
    // Unknown durations sort as longest (see the module comment).
    let expected = t.expected_ms.map_or(u128::MAX, u128::from);
    (Reverse(t.priority), Reverse(expected), t.task)
}

/// Which sidecar `task` prefers: `Less` means `a`.
fn sidecar_order(task: &ReadyTask, a: &Load<'_>, b: &Load<'_>) -> Ordering {
    let avoided = |l: &Load<'_>| task.avoid.contains(&l.side.name);
    // free_a / slots_a > free_b / slots_b, compared without division.
    let share = |x: &Load<'_>, y: &Load<'_>| (x.free() as u128) * (y.side.slots as u128);
    avoided(a)
        .cmp(&avoided(b))
        .then_with(|| share(b, a).cmp(&share(a, b)))
        .then_with(|| a.running.cmp(&b.running))
        .then_with(|| a.side.name.cmp(&b.side.name))
}

#[cfg(test)]
mod tests;
