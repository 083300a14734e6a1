//! Metric names, units and label keys: set once here for both binaries (and the README and
//! the Grafana dashboard, which use the Prometheus forms of these names). Labels are of
//! low cardinality: a sidecar, a backend, an outcome or status — never an execution id,
//! a run id or a task name.

/// Label keys.
pub const SIDECAR: &str = "sidecar";
pub const BACKEND: &str = "backend";
pub const OUTCOME: &str = "outcome";
pub const STATUS: &str = "status";

/// Unit strings (UCUM, as OpenTelemetry wants them).
pub const SECONDS: &str = "s";
pub const BYTES: &str = "By";

// Sidecar.
/// Gauge: executions running now. Labels: sidecar.
pub const SIDECAR_EXECUTIONS_RUNNING: &str = "agentfleet.sidecar.executions.running";
/// Counter: executions accepted. Labels: sidecar, backend.
pub const SIDECAR_EXECUTIONS_STARTED: &str = "agentfleet.sidecar.executions.started";
/// Counter: executions finished. Labels: sidecar, backend, outcome.
pub const SIDECAR_EXECUTIONS_FINISHED: &str = "agentfleet.sidecar.executions.finished";
/// Histogram (s): accepted → finished. Labels: sidecar, backend, outcome.
pub const SIDECAR_JOB_DURATION: &str = "agentfleet.sidecar.job.duration";
/// Histogram (s): one step attempt. Labels: sidecar, backend, status.
pub const SIDECAR_STEP_DURATION: &str = "agentfleet.sidecar.step.duration";
/// Gauge (By): bytes of the execution journal on disk. Labels: sidecar.
pub const SIDECAR_JOURNAL_SIZE: &str = "agentfleet.sidecar.journal.size";

// Coordinator.
/// Up-down counter: tasks running now (placed, not finished). Labels: sidecar.
pub const COORDINATOR_TASKS_RUNNING: &str = "agentfleet.coordinator.tasks.running";
/// Counter: task attempts finished. Labels: outcome.
pub const COORDINATOR_TASKS_FINISHED: &str = "agentfleet.coordinator.tasks.finished";
/// Histogram (s): a task ready to run → placed on a sidecar. Labels: sidecar.
pub const COORDINATOR_PLACEMENT_WAIT: &str = "agentfleet.coordinator.placement.wait";
/// Histogram (s): a sidecar event's own timestamp → the coordinator receiving it. Labels: sidecar.
pub const COORDINATOR_EVENT_LAG: &str = "agentfleet.coordinator.event.lag";
/// Counter: runs finished. Labels: status.
pub const COORDINATOR_RUNS_FINISHED: &str = "agentfleet.coordinator.runs.finished";

/// Bucket bounds (s) for job and step durations: seconds to hours.
pub const DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0,
];
/// Bucket bounds (s) for waits and lags: milliseconds to minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The meter every agentfleet instrument comes from (the global provider: a no-op until
/// export or a Prometheus scrape is set up, so create instruments after that).
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder(super::span::SCOPE)
            .with_version(crate::VERSION)
            .build(),
    )
}
