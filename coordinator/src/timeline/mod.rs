//! A run as a timeline: one lane per sidecar slot, one bar per execution with its steps,
//! the tasks that never ran, the DAG's critical path and the totals that say how good the
//! run was (makespan against its lower bound, utilisation per sidecar). Built from the
//! store alone, so it works for any run, finished or not; drawn as a self-contained HTML
//! page (`coordinator report`) and as text lanes (`coordinator show RUN --timeline`).
//!
//! Times are milliseconds from the run's start, which keeps the page's data small.
use std::collections::BTreeMap;

use serde::Serialize;

mod build;
pub mod html;
mod lanes;
mod package;
#[cfg(test)]
mod tests;
pub mod text;

pub use build::{LOG_BUDGET, build, log_lines_per_execution};
pub use package::{PackageBars, SubStepBar};

use crate::store::LogExcerpt;

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub run: RunInfo,
    pub totals: Totals,
    /// Per sidecar (in the order of `lanes`): its slots, lanes, busy time and utilisation.
    pub sidecars: Vec<SidecarUse>,
    /// One lane per slot: the bars of `lanes[i]` have `lane == i`.
    pub lanes: Vec<Lane>,
    /// One bar per execution, in start order.
    pub bars: Vec<Bar>,
    /// Tasks that never got an execution (skipped, canceled before placement, waiting).
    pub unstarted: Vec<Unstarted>,
    /// The DAG's critical path: task names, first to last.
    pub critical_path: Vec<String>,
    /// False when the plan's dependencies could not be read (the path is then empty).
    pub dependencies_known: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: String,
    pub plan: String,
    pub status: String,
    pub exit_code: Option<i32>,
    /// Unix ms of the start; everything else is relative to it.
    pub started_ms: i64,
    /// Unix ms of the end, or of when the report was made for a run still going.
    pub ended_ms: i64,
    pub finished: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Totals {
    pub makespan_ms: i64,
    /// max(total work ÷ slots, longest task, critical path): no schedule of these
    /// durations on this fleet could have finished sooner.
    pub lower_bound_ms: i64,
    /// Which of the three the lower bound is: "work", "longest task" or "critical path".
    pub bound_by: &'static str,
    /// Sum of every execution's duration, retries included.
    pub total_work_ms: i64,
    /// Slots the run could use at once: the fleet's, capped by the plan's `max_parallel`.
    pub slots: u32,
    /// The longest task: its executions' durations added up (retries run one after another).
    pub longest_task_ms: i64,
    pub longest_task: String,
    pub critical_path_ms: i64,
    /// Task outcomes ("succeeded", "failed", "skipped", ...) and how many.
    pub outcomes: BTreeMap<String, u32>,
    pub tasks: u32,
    pub executions: u32,
    /// Executions after which the task was tried again.
    pub retried: u32,
    /// Step attempts that ended "retry" (a step retried inside its job).
    pub step_retries: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SidecarUse {
    pub name: String,
    /// Slots as the sidecar described itself (0 when the run did not record them).
    pub slots: u32,
    pub lanes: u32,
    pub busy_ms: i64,
    /// busy ÷ (lanes × makespan), 0..1.
    pub utilisation: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Lane {
    pub sidecar: String,
    /// 1-based slot number on its sidecar.
    pub slot: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bar {
    pub lane: usize,
    pub task: String,
    pub job: String,
    pub attempt: u32,
    pub sidecar: String,
    pub execution_id: String,
    pub start: i64,
    pub end: i64,
    /// The execution's outcome ("succeeded", "failed", ..., "running").
    pub status: String,
    pub message: String,
    /// Another attempt of the task followed this one.
    pub retried: bool,
    pub critical: bool,
    pub steps: Vec<StepBar>,
    pub log: LogExcerpt,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepBar {
    pub step: u32,
    pub attempt: u32,
    pub name: String,
    pub status: String,
    pub message: String,
    pub start: i64,
    pub end: i64,
    /// The SSIS package the step ran, if it ran one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageBars>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unstarted {
    pub task: String,
    pub job: String,
    pub status: String,
    pub message: String,
    pub critical: bool,
}

impl Timeline {
    /// Bars per lane, each lane's bars in start order (what both renderings walk).
    pub fn bars_by_lane(&self) -> Vec<Vec<&Bar>> {
        let mut lanes: Vec<Vec<&Bar>> = vec![Vec::new(); self.lanes.len()];
        for bar in &self.bars {
            lanes[bar.lane].push(bar);
        }
        lanes
    }
}
