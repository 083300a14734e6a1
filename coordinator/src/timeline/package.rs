//! The SSIS package of a step in the timeline: its tasks and containers as sub-step bars
//! nested in the step's bar (the report lists them under the step), and its catalog
//! execution.
use serde::Serialize;

use crate::sub_steps::StepPackage;

/// The catalog execution and sub-steps of a step that ran an SSIS package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageBars {
    /// SSISDB execution id and its last status; None until the sidecar found it.
    pub catalog_execution_id: Option<i64>,
    pub catalog_status: Option<String>,
    pub sub_steps: Vec<SubStepBar>,
}

/// One task or container, in ms from the run's start like every time of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct SubStepBar {
    pub path: String,
    pub name: String,
    /// "running" for one that had not finished when its step ended (or the report was
    /// made), then it ends with its step.
    pub status: String,
    pub message: String,
    pub start: i64,
    pub end: i64,
    /// The busiest data-flow path's rows, when the catalog logged them.
    pub rows: Option<u64>,
}

/// `package` as bars inside its step's bar (`step_start`..`step_end`, from `t0`): the
/// catalog's clock is not the coordinator's, and a sub-step cannot outlast its step.
pub fn package_bars(package: &StepPackage, t0: i64, step_start: i64, step_end: i64) -> PackageBars {
    let sub_steps = package
        .sub_steps
        .iter()
        .map(|s| {
            let start = s
                .started_at_ms
                .map_or(step_start, |ms| ms - t0)
                .clamp(step_start, step_end);
            let end = s
                .duration_ms
                .map_or(step_end, |d| start + d as i64)
                .clamp(start, step_end);
            SubStepBar {
                path: s.path.clone(),
                name: s.name.clone(),
                status: s.status.clone(),
                message: super::build::cut(&s.message),
                start,
                end,
                rows: s.rows_max(),
            }
        })
        .collect();
    PackageBars {
        catalog_execution_id: package.catalog.as_ref().map(|c| c.catalog_execution_id),
        catalog_status: package.catalog.as_ref().map(|c| c.status.clone()),
        sub_steps,
    }
}
