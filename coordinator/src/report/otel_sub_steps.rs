//! Sub-step spans: one per task or container of a step's SSIS package, a child of the
//! step's span (which the sidecar exports), with the sub-step's own start and duration
//! from the catalog. A sub-step still open when its task ends is ended with status
//! `unfinished` at its step's end (or, failing that, the task's), so that no span is left
//! out. Not at the step's end itself: for an Agent SSIS step the sidecar reads msdb and the
//! catalog separately, so the step's end may arrive before its package's last task ends.
use std::collections::HashMap;

use agentfleet_common::telemetry::{SpanRecord, ids};
use opentelemetry::trace::SpanId;
use opentelemetry::{Array, StringValue, Value};

use crate::events::{RunEvent, RunEventKind};
use crate::sub_steps::{CatalogInfo, Packages, StepPackage, SubStep};

/// What a sub-step span is cut from.
struct Ended<'a> {
    package: &'a StepPackage,
    sub_step: &'a SubStep,
    end_ms: i64,
}

/// Folds the catalog events of a run and hands out a span for each sub-step that ends.
#[derive(Default)]
pub(super) struct SubStepSpans {
    packages: Packages,
    /// When each step attempt (execution, step, attempt) ended, Unix ms: where its
    /// package's sub-steps still open at the task's end are ended.
    step_ends: HashMap<(String, u32, u32), i64>,
}

impl SubStepSpans {
    /// The spans `ev` ends (none for most events).
    pub(super) fn on_event(&mut self, ev: &RunEvent) -> Vec<SpanRecord> {
        let run_id = ev.run_id.as_str();
        match &ev.kind {
            RunEventKind::SubStepFinished(f) => {
                let Some(package) = self.packages.apply(&ev.kind) else {
                    return Vec::new();
                };
                let Some(sub_step) = package.sub_steps.iter().find(|s| s.path == f.path) else {
                    return Vec::new();
                };
                let end_ms = f.started_at_ms + f.duration_ms as i64;
                vec![span(
                    run_id,
                    &Ended {
                        package,
                        sub_step,
                        end_ms,
                    },
                )]
            }
            RunEventKind::StepFinished {
                at,
                step,
                step_attempt,
                ..
            } => {
                // Only steps that ran a package are remembered (until their task ends).
                if self
                    .packages
                    .get(&at.execution_id, *step, *step_attempt)
                    .is_some()
                {
                    let key = (at.execution_id.clone(), *step, *step_attempt);
                    self.step_ends.insert(key, ev.ts_ms);
                }
                Vec::new()
            }
            RunEventKind::TaskFinished {
                execution_id: Some(id),
                ..
            } => {
                let packages = self.packages.remove_execution(id);
                let spans = self.end_unfinished(run_id, &packages, ev.ts_ms);
                self.step_ends
                    .retain(|(execution, _, _), _| execution != id);
                spans
            }
            // An interrupted run may end without its tasks' ends.
            RunEventKind::RunFinished { .. } => {
                let packages = std::mem::take(&mut self.packages).into_vec();
                let spans = self.end_unfinished(run_id, &packages, ev.ts_ms);
                self.step_ends.clear();
                spans
            }
            other => {
                self.packages.apply(other);
                Vec::new()
            }
        }
    }
}

impl SubStepSpans {
    /// Spans for the sub-steps of `packages` still running, each ended at its step's end
    /// (`end_ms` when the step's end never came).
    fn end_unfinished(
        &self,
        run_id: &str,
        packages: &[StepPackage],
        end_ms: i64,
    ) -> Vec<SpanRecord> {
        packages
            .iter()
            .flat_map(|p| {
                let key = (p.execution_id.clone(), p.step, p.step_attempt);
                let step_end = self.step_ends.get(&key).copied().unwrap_or(end_ms);
                unfinished(run_id, p, step_end)
            })
            .collect()
    }
}

/// Spans for the sub-steps of `package` still running at `end_ms`.
fn unfinished(run_id: &str, package: &StepPackage, end_ms: i64) -> Vec<SpanRecord> {
    package
        .running()
        .map(|sub_step| {
            span(
                run_id,
                &Ended {
                    package,
                    sub_step,
                    end_ms,
                },
            )
        })
        .collect()
}

/// The span id of a sub-step. The common derivation has no kind for sub-steps (the
/// sidecar exports none), so it is fed a key no execution id can equal: stable across
/// processes, so a re-attached coordinator names the same span the same way.
pub(super) fn sub_step_span_id(
    execution_id: &str,
    step: u32,
    step_attempt: u32,
    path: &str,
) -> SpanId {
    ids::execution_span_id(&format!(
        "sub-step\u{1f}{execution_id}\u{1f}{step}\u{1f}{step_attempt}\u{1f}{path}"
    ))
}

fn span(run_id: &str, e: &Ended<'_>) -> SpanRecord {
    let (p, s) = (e.package, e.sub_step);
    let start_ms = s.started_at_ms.unwrap_or(e.end_ms).min(e.end_ms);
    let mut span = SpanRecord::new(
        "sub_step",
        ids::run_trace_id(run_id),
        sub_step_span_id(&p.execution_id, p.step, p.step_attempt, &s.path),
        ids::step_span_id(&p.execution_id, p.step, p.step_attempt),
    )
    .times(start_ms, e.end_ms)
    .attr("sub_step.path", s.path.clone())
    .attr("sub_step.name", s.name.clone())
    .attr("step.id", i64::from(p.step))
    .attr("step.attempt", i64::from(p.step_attempt))
    .attr("execution.id", p.execution_id.clone());
    if let Some(CatalogInfo {
        catalog_execution_id,
        ..
    }) = &p.catalog
    {
        span = span.attr("ssis.catalog_execution_id", *catalog_execution_id);
    }
    if let Some(rows) = s.rows_max() {
        let paths: Vec<StringValue> = s
            .rows
            .iter()
            .map(|r| format!("{}: {}", r.data_flow_path, r.rows).into())
            .collect();
        span = span
            .attr("ssis.rows", rows as i64)
            .attr("ssis.data_flow_rows", Value::Array(Array::String(paths)));
    }
    if !s.message.is_empty() {
        span = span.attr("sub_step.message", s.message.clone());
    }
    if s.is_running() {
        return span.attr("sub_step.status", "unfinished");
    }
    span = span.attr("sub_step.status", s.status.clone());
    if s.status == "succeeded" {
        span.ok()
    } else {
        span.error(format!("sub-step {}: {}", s.status, s.message))
    }
}
