//! The OpenTelemetry reporter: a run's events become the `run` span and one `task` span
//! per attempt, and the coordinator's metrics (tasks running and finished, placement
//! wait, runs finished). The sidecars export the `execution` and `step` spans below the
//! task spans; the coordinator adds a `sub_step` span per task of an SSIS package below
//! its step's span (`otel_sub_steps.rs`). Every id is derived (see `agentfleet_common::telemetry::ids`), so the
//! spans of all processes form one trace per run, also across `coordinator attach`.
//!
//! Spans are exported when what they describe ends, with the times of the events: a
//! task attempt starts when its execution id was minted (UUIDv7 time) and a run when its
//! run id was, so a re-attached coordinator exports the true start times.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

use agentfleet_common::telemetry::{SpanRecord, export, ids, metrics as names, span::uuid_v7_ms};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, UpDownCounter};
use opentelemetry::trace::{SpanId, SpanKind};

use super::Reporter;
use super::otel_sub_steps::SubStepSpans;
use crate::events::{RunEvent, RunEventKind, TaskOutcome};

/// Each task's dependencies, for the placement wait (ready = the last dependency
/// succeeded). Set by the command that knows the plan; without it only retries count.
static DEPENDENCIES: Mutex<Option<BTreeMap<String, Vec<String>>>> = Mutex::new(None);

/// Tells the reporters which tasks each task waits for (`after` in the plan) and which
/// job it runs.
pub fn set_plan(plan: &crate::plan::Plan) {
    let deps = plan
        .tasks
        .iter()
        .map(|t| {
            let after = t.after.iter().map(|&d| plan.tasks[d].name.clone());
            (t.name.clone(), after.collect())
        })
        .collect();
    *DEPENDENCIES.lock().unwrap_or_else(|e| e.into_inner()) = Some(deps);
    super::otel_logs::set_jobs(plan);
}

/// Records how long a sidecar event took to reach the coordinator (its own timestamp →
/// now). Called by executors; a no-op unless metrics are exported.
pub fn record_event_lag(sidecar: &str, event_ts_ms: i64) {
    static LAG: OnceLock<Histogram<f64>> = OnceLock::new();
    if export::get().is_none() {
        return;
    }
    let lag = LAG.get_or_init(|| {
        names::meter()
            .f64_histogram(names::COORDINATOR_EVENT_LAG)
            .with_unit(names::SECONDS)
            .with_description("Sidecar event timestamp to coordinator receipt")
            .with_boundaries(names::LATENCY_BUCKETS.to_vec())
            .build()
    });
    let seconds = (agentfleet_common::now_ms() - event_ts_ms).max(0) as f64 / 1000.0;
    lag.record(
        seconds,
        &[KeyValue::new(names::SIDECAR, sidecar.to_owned())],
    );
}

struct Instruments {
    running: UpDownCounter<i64>,
    finished: Counter<u64>,
    placement_wait: Histogram<f64>,
    runs: Counter<u64>,
}

/// One placed attempt of a task, until it finishes.
struct Attempt {
    sidecar: String,
    execution_id: String,
    start_ms: i64,
}

pub struct OtelReporter {
    run_id: String,
    plan: String,
    run_start_ms: i64,
    attempts: HashMap<(String, u32), Attempt>,
    /// When each task became ready again (a retry) or its last dependency succeeded.
    ready_ms: HashMap<String, i64>,
    succeeded_ms: HashMap<String, i64>,
    deps: Option<BTreeMap<String, Vec<String>>>,
    metrics: Instruments,
    sub_steps: SubStepSpans,
    /// Where finished spans go: the export queue (a collector in tests).
    sink: Box<dyn FnMut(SpanRecord) + Send>,
}

impl OtelReporter {
    /// The reporter, when this process exports telemetry.
    pub fn when_enabled() -> Option<Self> {
        export::get()?;
        Some(Self::new(Box::new(export::export_span)))
    }

    /// A reporter that hands its finished spans to `sink`.
    pub fn new(sink: Box<dyn FnMut(SpanRecord) + Send>) -> Self {
        let meter = names::meter();
        Self {
            run_id: String::new(),
            plan: String::new(),
            run_start_ms: 0,
            attempts: HashMap::new(),
            ready_ms: HashMap::new(),
            succeeded_ms: HashMap::new(),
            deps: DEPENDENCIES
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            metrics: Instruments {
                running: meter
                    .i64_up_down_counter(names::COORDINATOR_TASKS_RUNNING)
                    .with_unit("{task}")
                    .with_description("Tasks placed on a sidecar and not finished")
                    .build(),
                finished: meter
                    .u64_counter(names::COORDINATOR_TASKS_FINISHED)
                    .with_unit("{task}")
                    .with_description("Task attempts finished, by outcome")
                    .build(),
                placement_wait: meter
                    .f64_histogram(names::COORDINATOR_PLACEMENT_WAIT)
                    .with_unit(names::SECONDS)
                    .with_description("Task ready to run until placed on a sidecar")
                    .with_boundaries(names::LATENCY_BUCKETS.to_vec())
                    .build(),
                runs: meter
                    .u64_counter(names::COORDINATOR_RUNS_FINISHED)
                    .with_unit("{run}")
                    .with_description("Runs finished, by status")
                    .build(),
            },
            sub_steps: SubStepSpans::default(),
            sink,
        }
    }

    fn trace(&self) -> opentelemetry::trace::TraceId {
        ids::run_trace_id(&self.run_id)
    }

    /// When `task` became ready for its first attempt, if that can be known.
    fn first_ready_ms(&self, task: &str) -> Option<i64> {
        let deps = self.deps.as_ref()?.get(task)?;
        deps.iter()
            .map(|d| self.succeeded_ms.get(d).copied())
            .try_fold(self.run_start_ms, |latest, t| Some(latest.max(t?)))
    }

    fn task_span(&self, task: &str, attempt: u32, start_ms: i64, end_ms: i64) -> SpanRecord {
        SpanRecord::new(
            "task",
            self.trace(),
            ids::task_span_id(&self.run_id, task, attempt),
            ids::run_span_id(&self.run_id),
        )
        .kind(SpanKind::Client)
        .times(start_ms, end_ms)
        .attr("run.id", self.run_id.clone())
        .attr("task.name", task.to_owned())
        .attr("task.attempt", i64::from(attempt))
    }

    fn on_event(&mut self, ev: &RunEvent, ts_ms: i64) {
        // Before the task's span: a sub-step ended with its task is exported first.
        for span in self.sub_steps.on_event(ev) {
            (self.sink)(span);
        }
        match &ev.kind {
            RunEventKind::RunStarted { plan, .. } => {
                self.run_id = ev.run_id.clone();
                self.plan = plan.clone();
                self.run_start_ms = uuid_v7_ms(&ev.run_id).unwrap_or(ts_ms);
            }
            RunEventKind::TaskPlaced { at } => {
                let start_ms = uuid_v7_ms(&at.execution_id).unwrap_or(ts_ms);
                let ready = self.ready_ms.remove(&at.task).or_else(|| {
                    (at.attempt == 1)
                        .then(|| self.first_ready_ms(&at.task))
                        .flatten()
                });
                // A re-attached execution was placed long ago: its wait is not new.
                if let Some(ready) = ready.filter(|r| *r <= start_ms) {
                    let seconds = (start_ms - ready) as f64 / 1000.0;
                    let labels = [KeyValue::new(names::SIDECAR, at.sidecar.clone())];
                    self.metrics.placement_wait.record(seconds, &labels);
                }
                self.metrics
                    .running
                    .add(1, &[KeyValue::new(names::SIDECAR, at.sidecar.clone())]);
                self.attempts.insert(
                    (at.task.clone(), at.attempt),
                    Attempt {
                        sidecar: at.sidecar.clone(),
                        execution_id: at.execution_id.clone(),
                        start_ms,
                    },
                );
            }
            RunEventKind::TaskFinished {
                task,
                attempt,
                status,
                message,
                will_retry,
                ..
            } => {
                let placed = self.attempts.remove(&(task.clone(), *attempt));
                let start_ms = placed.as_ref().map_or(ts_ms, |a| a.start_ms);
                let mut span = self
                    .task_span(task, *attempt, start_ms, ts_ms)
                    .attr("task.outcome", status.as_str())
                    .attr("task.will_retry", *will_retry);
                if let Some(a) = &placed {
                    span = span
                        .attr("sidecar.name", a.sidecar.clone())
                        .attr("execution.id", a.execution_id.clone());
                    let labels = [KeyValue::new(names::SIDECAR, a.sidecar.clone())];
                    self.metrics.running.add(-1, &labels);
                }
                if !message.is_empty() {
                    span = span.attr("task.message", message.clone());
                }
                span = match status {
                    TaskOutcome::Succeeded => span.ok(),
                    TaskOutcome::Skipped => span,
                    _ => span.error(format!("task {}: {message}", status.as_str())),
                };
                (self.sink)(span);
                self.metrics
                    .finished
                    .add(1, &[KeyValue::new(names::OUTCOME, status.as_str())]);
                if *will_retry {
                    self.ready_ms.insert(task.clone(), ts_ms);
                }
                if *status == TaskOutcome::Succeeded {
                    self.succeeded_ms.insert(task.clone(), ts_ms);
                }
            }
            RunEventKind::RunFinished {
                status, exit_code, ..
            } => {
                let mut span = SpanRecord::new(
                    "run",
                    self.trace(),
                    ids::run_span_id(&self.run_id),
                    SpanId::INVALID,
                )
                .times(self.run_start_ms, ts_ms)
                .attr("run.id", self.run_id.clone())
                .attr("plan.name", self.plan.clone())
                .attr("run.status", *status)
                .attr("run.exit_code", i64::from(*exit_code));
                span = if *status == "succeeded" {
                    span.ok()
                } else {
                    span.error(format!("run {status}"))
                };
                (self.sink)(span);
                self.metrics
                    .runs
                    .add(1, &[KeyValue::new(names::STATUS, *status)]);
            }
            _ => {}
        }
    }
}

impl Reporter for OtelReporter {
    fn event(&mut self, ev: &RunEvent) {
        let ts_ms = ev.ts_ms;
        if self.run_id.is_empty() {
            // A re-attached run may not start with RunStarted.
            self.run_id = ev.run_id.clone();
            self.run_start_ms = uuid_v7_ms(&ev.run_id).unwrap_or(ts_ms);
        }
        self.on_event(ev, ts_ms);
    }
}

#[cfg(test)]
#[path = "otel_tests.rs"]
mod tests;
