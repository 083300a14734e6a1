//! Builds a [`Timeline`] from what the store holds about a run: `load` reads, `assemble`
//! computes (pure, so tests give it rows directly).
use std::collections::{BTreeMap, HashMap};

use super::lanes;
use super::{Bar, Lane, RunInfo, SidecarUse, StepBar, Timeline, Totals, Unstarted};
use crate::store::{LogExcerpt, RunFleet, RunSnapshot, Store, StoreError, run_is_final};

/// Log lines a report embeds in all (first and last lines of each execution share it), so
/// that a run with gigabytes of logs still makes a page a browser opens at once.
pub const LOG_BUDGET: usize = 20_000;
/// At most this many first (and as many last) lines of one execution.
const LOG_LINES_MAX: usize = 100;
/// At least this many, however many executions share the budget.
const LOG_LINES_MIN: usize = 3;
/// A longer log line is cut in the page (`coordinator logs` has it whole).
const LINE_MAX_CHARS: usize = 2_000;

/// How many first (and as many last) lines of each of `executions` a report embeds.
pub fn log_lines_per_execution(executions: usize) -> usize {
    (LOG_BUDGET / executions.max(1) / 2).clamp(LOG_LINES_MIN, LOG_LINES_MAX)
}

/// The plan's dependencies, as far as the stored plan text says.
pub struct Dependencies {
    /// Task names in plan order.
    pub names: Vec<String>,
    pub after: Vec<Vec<usize>>,
    pub order: Vec<usize>,
    pub max_parallel: Option<usize>,
}

/// Everything `assemble` needs.
pub struct Input {
    pub snapshot: RunSnapshot,
    pub fleet: RunFleet,
    pub logs: HashMap<String, LogExcerpt>,
    pub dependencies: Option<Dependencies>,
    /// The end of a run still going.
    pub now_ms: i64,
}

/// The timeline of `run_id` as the store has it now.
pub fn build(store: &Store, run_id: &str, now_ms: i64) -> Result<Timeline, StoreError> {
    let snapshot = store.run_snapshot(run_id)?;
    let fleet = store.run_fleet(run_id)?;
    let per = log_lines_per_execution(snapshot.executions.len());
    let logs = store.log_excerpts(run_id, per, per)?;
    let dependencies = dependencies(&snapshot);
    Ok(assemble(Input {
        snapshot,
        fleet,
        logs,
        dependencies,
        now_ms,
    }))
}

/// The dependencies of the plan text the run was started with; None when it no longer
/// parses (e.g. a plan written for another version).
fn dependencies(snapshot: &RunSnapshot) -> Option<Dependencies> {
    let plan = crate::plan::parse(&snapshot.plan_text, &snapshot.plan_path).ok()?;
    Some(Dependencies {
        names: plan.tasks.iter().map(|t| t.name.clone()).collect(),
        after: plan.tasks.iter().map(|t| t.after.clone()).collect(),
        order: plan.topo_order().to_vec(),
        max_parallel: plan.max_parallel,
    })
}

pub fn assemble(input: Input) -> Timeline {
    let Input {
        snapshot: s,
        fleet,
        mut logs,
        dependencies,
        now_ms,
    } = input;
    let t0 = s.run.started_ms;
    let finished = run_is_final(&s.run.status) && s.run.finished_ms.is_some();
    let ended_ms = s.run.finished_ms.unwrap_or(now_ms).max(t0);
    let run_end = ended_ms - t0;

    // Bars, in start order, not yet in lanes.
    let last_attempt: HashMap<&str, u32> = s.executions.iter().fold(HashMap::new(), |mut m, e| {
        let a = m.entry(e.task.as_str()).or_insert(0);
        *a = (*a).max(e.attempt);
        m
    });
    let jobs: HashMap<&str, &str> = s
        .tasks
        .iter()
        .map(|t| (t.task.as_str(), t.job.as_str()))
        .collect();
    let executions: HashMap<&str, &crate::store::ExecutionRow> = s
        .executions
        .iter()
        .map(|e| (e.execution_id.as_str(), e))
        .collect();
    let mut steps_of: HashMap<&str, Vec<StepBar>> = HashMap::new();
    let mut step_retries = 0;
    for st in &s.steps {
        let Some(e) = executions.get(st.execution_id.as_str()) else {
            continue;
        };
        // A step's start is when its event reached the coordinator and its duration the
        // sidecar's own measure: kept inside its execution's bar, where it belongs.
        let exec_start = e.started_ms - t0;
        let exec_end = e.finished_ms.map_or(run_end, |f| f - t0).max(exec_start);
        let start = st
            .started_ms
            .map_or(exec_start, |ms| ms - t0)
            .clamp(exec_start, exec_end);
        let end = st
            .duration_ms
            .map_or(exec_end, |d| start + d as i64)
            .clamp(start, exec_end);
        if st.status == "retry" {
            step_retries += 1;
        }
        let package = s
            .packages
            .iter()
            .find(|p| {
                p.execution_id == st.execution_id
                    && p.step == st.step
                    && p.step_attempt == st.attempt
            })
            .map(|p| super::package::package_bars(p, t0, start, end));
        steps_of
            .entry(st.execution_id.as_str())
            .or_default()
            .push(StepBar {
                step: st.step,
                attempt: st.attempt,
                name: st.name.clone(),
                status: st.status.clone(),
                message: cut(&st.message),
                start,
                end,
                package,
            });
    }
    let mut bars: Vec<Bar> = s
        .executions
        .iter()
        .map(|e| {
            let start = e.started_ms - t0;
            let end = e.finished_ms.map_or(run_end, |f| f - t0).max(start);
            let mut log = logs.remove(&e.execution_id).unwrap_or_default();
            for line in log.head.iter_mut().chain(log.tail.iter_mut()) {
                line.line = cut(&line.line);
                line.ts_ms -= t0;
            }
            Bar {
                lane: 0,
                task: e.task.clone(),
                job: if e.job.is_empty() {
                    jobs.get(e.task.as_str())
                        .map_or(String::new(), |j| (*j).to_owned())
                } else {
                    e.job.clone()
                },
                attempt: e.attempt,
                sidecar: e.sidecar.clone(),
                execution_id: e.execution_id.clone(),
                start,
                end,
                status: if e.finished_ms.is_some() && task_final(&e.status) {
                    e.status.clone()
                } else {
                    "running".to_owned()
                },
                message: cut(&e.message),
                retried: last_attempt
                    .get(e.task.as_str())
                    .is_some_and(|&a| a > e.attempt),
                critical: false,
                steps: steps_of.remove(e.execution_id.as_str()).unwrap_or_default(),
                log,
            }
        })
        .collect();
    bars.sort_by_key(|b| (b.start, b.end));

    // Lanes: the sidecars the run started with, then any other that ran something.
    let mut sidecar_names = fleet.sidecars.clone();
    for b in &bars {
        if !sidecar_names.contains(&b.sidecar) {
            sidecar_names.push(b.sidecar.clone());
        }
    }
    let mut lane_list = Vec::new();
    let mut sidecars = Vec::new();
    let mut capacity_total = 0u32;
    for name in &sidecar_names {
        let mine: Vec<usize> = (0..bars.len())
            .filter(|&i| bars[i].sidecar == *name)
            .collect();
        let intervals: Vec<(i64, i64)> =
            mine.iter().map(|&i| (bars[i].start, bars[i].end)).collect();
        let (assigned, used) = lanes::assign(&intervals);
        let slots = fleet.slots.get(name).copied().unwrap_or(0);
        let lane_count = (used as u32).max(slots).max(1);
        let first = lane_list.len();
        for (&i, lane) in mine.iter().zip(assigned) {
            bars[i].lane = first + lane;
        }
        lane_list.extend((1..=lane_count).map(|slot| Lane {
            sidecar: name.clone(),
            slot,
        }));
        let busy_ms: i64 = intervals.iter().map(|(a, b)| b - a).sum();
        let capacity = if slots > 0 { slots } else { lane_count };
        capacity_total += capacity;
        sidecars.push(SidecarUse {
            name: name.clone(),
            slots,
            lanes: lane_count,
            busy_ms,
            utilisation: ratio(busy_ms, i64::from(capacity) * run_end),
        });
    }

    // Work per task and the critical path over the plan's dependencies.
    let mut work: HashMap<String, i64> = HashMap::new();
    for b in &bars {
        *work.entry(b.task.clone()).or_default() += b.end - b.start;
    }
    let (critical_path, critical_path_ms) = match &dependencies {
        Some(d) => {
            let w: Vec<i64> = d
                .names
                .iter()
                .map(|n| work.get(n.as_str()).copied().unwrap_or(0))
                .collect();
            let (path, len) = lanes::critical_path(&w, &d.after, &d.order);
            (
                path.into_iter()
                    .map(|i| d.names[i].clone())
                    .collect::<Vec<_>>(),
                len,
            )
        }
        None => (Vec::new(), 0),
    };
    for b in &mut bars {
        b.critical = critical_path.contains(&b.task);
    }
    let (longest_task, longest_task_ms) = work
        .iter()
        .map(|(t, w)| (t.clone(), *w))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .unwrap_or_default();
    let total_work_ms: i64 = bars.iter().map(|b| b.end - b.start).sum();
    let slots = match dependencies.as_ref().and_then(|d| d.max_parallel) {
        Some(cap) if cap > 0 => capacity_total.min(cap as u32),
        _ => capacity_total,
    };
    let by_work = if slots > 0 {
        (total_work_ms + i64::from(slots) - 1) / i64::from(slots)
    } else {
        0
    };
    let (lower_bound_ms, bound_by) = [
        (critical_path_ms, "critical path"),
        (longest_task_ms, "longest task"),
        (by_work, "work"),
    ]
    .into_iter()
    .max_by_key(|(ms, _)| *ms)
    .unwrap_or((0, "work"));

    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    for t in &s.tasks {
        *outcomes.entry(t.status.clone()).or_default() += 1;
    }
    let unstarted = s
        .tasks
        .iter()
        .filter(|t| !work.contains_key(t.task.as_str()))
        .map(|t| Unstarted {
            task: t.task.clone(),
            job: t.job.clone(),
            status: t.status.clone(),
            message: cut(&t.message),
            critical: critical_path.contains(&t.task),
        })
        .collect();
    let totals = Totals {
        makespan_ms: run_end,
        lower_bound_ms,
        bound_by,
        total_work_ms,
        slots,
        longest_task_ms,
        longest_task,
        critical_path_ms,
        outcomes,
        tasks: s.tasks.len() as u32,
        executions: bars.len() as u32,
        retried: bars.iter().filter(|b| b.retried).count() as u32,
        step_retries,
    };
    Timeline {
        run: RunInfo {
            id: s.run.run_id.clone(),
            plan: s.run.plan_name.clone(),
            status: s.run.status.clone(),
            exit_code: s.run.exit_code,
            started_ms: t0,
            ended_ms,
            finished,
        },
        totals,
        sidecars,
        lanes: lane_list,
        bars,
        unstarted,
        critical_path,
        dependencies_known: dependencies.is_some(),
    }
}

/// True for an execution status after which nothing changes.
fn task_final(status: &str) -> bool {
    crate::store::task_is_final(status)
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        (part as f64 / whole as f64).clamp(0.0, 1.0)
    }
}

/// `text` cut to `LINE_MAX_CHARS` characters (with an ellipsis when cut).
pub(super) fn cut(text: &str) -> String {
    match text.char_indices().nth(LINE_MAX_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
