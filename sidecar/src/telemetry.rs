//! The sidecar's telemetry: OTLP export and the admin server set up from `[telemetry]`,
//! and, per execution, spans and metrics built from its journaled events.
//!
//! Nothing here sits on the execution's path. A follower task reads the execution's events
//! like any watcher does (from the durable journal, then live) and turns them into an
//! `execution` span and one `step` span per step attempt, with the times the events carry
//! (a step's own clock, or SQL Server Agent history learned after the fact). The execution
//! span's parent is the coordinator's task span: from the W3C `traceparent` of StartJob,
//! or derived from the run id, task and attempt the request carries (the same derivation
//! the coordinator uses).
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use agentfleet_common::telemetry::{
    ExportSettings, SpanRecord, TraceParent, export, ids, metrics as names,
};
use futures::StreamExt;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{SpanId, SpanKind};
use tokio_util::sync::CancellationToken;

use crate::config::SidecarConfig;
use crate::executions::Registry;
use crate::server::ServeError;

/// Environment twin of `[telemetry] admin_listen`.
pub const ENV_ADMIN_LISTEN: &str = "AGENTFLEET_ADMIN_LISTEN";
/// The `service.name` when neither the config nor `OTEL_SERVICE_NAME` sets one.
pub const DEFAULT_SERVICE_NAME: &str = "agentfleet-sidecar";
/// How long flushing telemetry may hold up the end of shutdown.
const FLUSH_LIMIT: Duration = Duration::from_secs(3);

/// What `start` set up; call [`SidecarTelemetry::shutdown`] at the end of shutdown.
pub struct SidecarTelemetry {
    export: Option<&'static export::Telemetry>,
    admin: Option<tokio::task::JoinHandle<()>>,
    admin_stop: CancellationToken,
}

/// Instruments shared by every follower (created once the meter provider is set).
struct Instruments {
    sidecar: String,
    started: Counter<u64>,
    finished: Counter<u64>,
    job_duration: Histogram<f64>,
    step_duration: Histogram<f64>,
}

static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();

/// Starts OTLP export (when configured), the Prometheus-backed metrics and the admin
/// server (when `admin_listen` is set). An exporter that cannot be set up is logged and
/// skipped: telemetry never keeps the sidecar from serving. `shutdown` makes `/readyz`
/// answer 503 once the sidecar is going down.
pub async fn start(
    config: &SidecarConfig,
    registry: &Registry,
    shutdown: &CancellationToken,
) -> Result<SidecarTelemetry, ServeError> {
    let env = |k: &str| std::env::var(k).ok();
    let admin_listen = env(ENV_ADMIN_LISTEN)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| config.telemetry.admin_listen.clone());
    let service = config
        .telemetry
        .service_name
        .as_deref()
        .unwrap_or(DEFAULT_SERVICE_NAME);
    let mut settings =
        ExportSettings::resolve(service, config.telemetry.otlp_endpoint.as_deref(), &env);
    settings.prometheus = admin_listen.is_some();
    // Job log lines are exported by the coordinator, which has them all (with the run's
    // task and job names); the sidecar exports spans and metrics only.
    settings.logs_endpoint = None;
    let export = match export::start(&settings) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "telemetry export is off");
            None
        }
    };
    if export.is_some() {
        register_instruments(config, registry);
        // Executions still running from before a restart (handed over to their
        // supervisors, or an Agent job): follow them from where the journal is now; what
        // came before was exported by the previous process.
        for execution in registry.list(true) {
            let parent = (!execution.run_id.is_empty()).then(|| {
                TraceParent::for_task(&execution.run_id, &execution.task, execution.attempt)
            });
            follow_from(registry, &execution, parent, execution.last_seq);
        }
    }
    let admin_stop = CancellationToken::new();
    let admin = match admin_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            Some(crate::admin::spawn(
                listener,
                export,
                shutdown.clone(),
                admin_stop.clone(),
            ))
        }
        None => None,
    };
    Ok(SidecarTelemetry {
        export,
        admin,
        admin_stop,
    })
}

impl SidecarTelemetry {
    /// Stops the admin server and flushes spans and metrics (bounded; off the async workers).
    pub async fn shutdown(self) {
        self.admin_stop.cancel();
        if let Some(admin) = self.admin {
            let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
        }
        if let Some(export) = self.export {
            let _ = tokio::task::spawn_blocking(move || export.shutdown(FLUSH_LIMIT)).await;
        }
    }
}

fn register_instruments(config: &SidecarConfig, registry: &Registry) {
    let meter = names::meter();
    let sidecar = KeyValue::new(names::SIDECAR, config.name.clone());
    INSTRUMENTS.get_or_init(|| {
        // Observable gauges read the registry and the disk when metrics are collected.
        let running = registry.clone();
        let label = sidecar.clone();
        let _running = meter
            .u64_observable_gauge(names::SIDECAR_EXECUTIONS_RUNNING)
            .with_unit("{execution}")
            .with_description("Executions running on this sidecar")
            .with_callback(move |g| {
                g.observe(
                    running.list(true).len() as u64,
                    std::slice::from_ref(&label),
                )
            })
            .build();
        let root = config.state_dir.join("executions");
        let label = sidecar.clone();
        let _journal = meter
            .u64_observable_gauge(names::SIDECAR_JOURNAL_SIZE)
            .with_unit(names::BYTES)
            .with_description("Bytes of the execution journal on disk")
            .with_callback(move |g| g.observe(dir_size(&root), std::slice::from_ref(&label)))
            .build();
        Instruments {
            sidecar: config.name.clone(),
            started: meter
                .u64_counter(names::SIDECAR_EXECUTIONS_STARTED)
                .with_unit("{execution}")
                .with_description("Executions accepted")
                .build(),
            finished: meter
                .u64_counter(names::SIDECAR_EXECUTIONS_FINISHED)
                .with_unit("{execution}")
                .with_description("Executions finished, by outcome")
                .build(),
            job_duration: meter
                .f64_histogram(names::SIDECAR_JOB_DURATION)
                .with_unit(names::SECONDS)
                .with_description("Execution duration, accepted to finished")
                .with_boundaries(names::DURATION_BUCKETS.to_vec())
                .build(),
            step_duration: meter
                .f64_histogram(names::SIDECAR_STEP_DURATION)
                .with_unit(names::SECONDS)
                .with_description("Step attempt duration")
                .with_boundaries(names::DURATION_BUCKETS.to_vec())
                .build(),
        }
    });
}

/// Bytes of the files under `dir`, two levels deep (`executions/<id>/<file>`).
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_dir(e.path()).ok())
        .flat_map(|files| files.flatten())
        .filter_map(|f| f.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The trace context for a StartJob: a valid `traceparent` in its metadata, else the one
/// derived from the run id, task and attempt it carries, else none (a root span).
pub fn parent_of(
    metadata: &tonic::metadata::MetadataMap,
    req: &proto::StartJobRequest,
) -> Option<TraceParent> {
    TraceParent::extract(metadata).or_else(|| {
        (!req.run_id.is_empty()).then(|| TraceParent::for_task(&req.run_id, &req.task, req.attempt))
    })
}

/// Follows a newly created execution's events into spans and metrics, in a task of its
/// own. A no-op when neither spans nor metrics are exported.
pub fn follow(registry: &Registry, execution: &proto::Execution, parent: Option<TraceParent>) {
    follow_from(registry, execution, parent, 0);
}

/// [`follow`], from the events after `after_seq`.
fn follow_from(
    registry: &Registry,
    execution: &proto::Execution,
    parent: Option<TraceParent>,
    after_seq: u64,
) {
    let Some(instruments) = INSTRUMENTS.get() else {
        return;
    };
    let Ok(events) = registry.watch(&execution.execution_id, after_seq) else {
        return;
    };
    let mut spans = ExecutionSpans::new(&instruments.sidecar, execution, parent);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        // Policy on error: the stream ends (shutdown) and whatever is known is exported.
        while let Some(Ok(event)) = events.next().await {
            for span in spans.observe(&event, Some(instruments)) {
                export::export_span(span);
            }
        }
    });
}

/// Turns one execution's events into spans (and metric records).
pub struct ExecutionSpans {
    sidecar: String,
    execution: proto::Execution,
    parent: Option<TraceParent>,
    accepted_ms: i64,
    /// (step id, attempt) → when its StepStarted said it started.
    step_started: HashMap<(u32, u32), i64>,
}

impl ExecutionSpans {
    pub fn new(sidecar: &str, execution: &proto::Execution, parent: Option<TraceParent>) -> Self {
        Self {
            sidecar: sidecar.to_owned(),
            execution: execution.clone(),
            parent,
            accepted_ms: execution.accepted_at_ms,
            step_started: HashMap::new(),
        }
    }

    fn trace_id(&self) -> opentelemetry::trace::TraceId {
        match &self.parent {
            Some(p) => p.trace_id,
            None => ids::run_trace_id(&self.execution.execution_id),
        }
    }

    fn labels(&self, extra: Option<(&'static str, &'static str)>) -> Vec<KeyValue> {
        let mut labels = vec![
            KeyValue::new(names::SIDECAR, self.sidecar.clone()),
            KeyValue::new(names::BACKEND, self.execution.backend.clone()),
        ];
        labels.extend(extra.map(|(k, v)| KeyValue::new(k, v)));
        labels
    }

    /// The spans finished by `event` (a step span, or the execution span).
    fn observe(&mut self, event: &proto::Event, metrics: Option<&Instruments>) -> Vec<SpanRecord> {
        let exec_id = self.execution.execution_id.clone();
        match &event.kind {
            Some(Kind::Accepted(_)) => {
                self.accepted_ms = event.ts_ms;
                if let Some(m) = metrics {
                    m.started.add(1, &self.labels(None));
                }
                Vec::new()
            }
            Some(Kind::StepStarted(s)) => {
                self.step_started
                    .insert((s.step_id, s.attempt), event.ts_ms);
                Vec::new()
            }
            Some(Kind::StepFinished(s)) => {
                let status = proto::StepStatus::name(s.status());
                // The step's own clock first; then its StepStarted; then back from the end.
                let start = if s.started_at_ms > 0 {
                    s.started_at_ms
                } else {
                    self.step_started
                        .get(&(s.step_id, s.attempt))
                        .copied()
                        .unwrap_or(event.ts_ms - s.duration_ms as i64)
                };
                let end = if s.duration_ms > 0 || s.started_at_ms > 0 {
                    start + s.duration_ms as i64
                } else {
                    event.ts_ms
                };
                if let Some(m) = metrics {
                    let seconds = (end - start).max(0) as f64 / 1000.0;
                    m.step_duration
                        .record(seconds, &self.labels(Some((names::STATUS, status))));
                }
                let mut span = SpanRecord::new(
                    "step",
                    self.trace_id(),
                    ids::step_span_id(&exec_id, s.step_id, s.attempt),
                    ids::execution_span_id(&exec_id),
                )
                .times(start, end)
                .attr("step.id", i64::from(s.step_id))
                .attr("step.name", s.step_name.clone())
                .attr("step.attempt", i64::from(s.attempt))
                .attr("step.retries", i64::from(s.attempt.saturating_sub(1)))
                .attr("step.status", status)
                .attr("execution.id", exec_id.clone());
                if !s.message.is_empty() {
                    span = span.attr("step.message", s.message.clone());
                }
                if s.sql_message_id != 0 {
                    span = span
                        .attr("sql.message_id", i64::from(s.sql_message_id))
                        .attr("sql.severity", i64::from(s.sql_severity));
                }
                span = if status == "succeeded" {
                    span.ok()
                } else {
                    span.error(format!("step {status}: {}", s.message))
                };
                vec![span]
            }
            Some(Kind::Finished(f)) => {
                let outcome = proto::Outcome::name(f.outcome());
                if let Some(m) = metrics {
                    let labels = self.labels(Some((names::OUTCOME, outcome)));
                    m.finished.add(1, &labels);
                    let seconds = (event.ts_ms - self.accepted_ms).max(0) as f64 / 1000.0;
                    m.job_duration.record(seconds, &labels);
                }
                vec![self.execution_span(event.ts_ms, outcome, &f.message)]
            }
            _ => Vec::new(),
        }
    }

    fn execution_span(&self, end_ms: i64, outcome: &'static str, message: &str) -> SpanRecord {
        let e = &self.execution;
        let mut span = SpanRecord::new(
            "execution",
            self.trace_id(),
            ids::execution_span_id(&e.execution_id),
            self.parent.map_or(SpanId::INVALID, |p| p.parent_id),
        )
        .kind(SpanKind::Server)
        .times(self.accepted_ms, end_ms)
        .attr("job.name", e.job.clone())
        .attr("job.backend", e.backend.clone())
        .attr("sidecar.name", self.sidecar.clone())
        .attr("execution.id", e.execution_id.clone())
        .attr("execution.outcome", outcome);
        if self.parent.is_some() {
            span = span.remote_parent();
        }
        if !e.run_id.is_empty() {
            span = span
                .attr("run.id", e.run_id.clone())
                .attr("task.name", e.task.clone())
                .attr("task.attempt", i64::from(e.attempt));
        }
        if !message.is_empty() {
            span = span.attr("execution.message", message.to_owned());
        }
        if outcome == "succeeded" {
            span.ok()
        } else {
            span.error(format!("execution {outcome}: {message}"))
        }
    }
}

#[cfg(test)]
#[path = "telemetry/tests.rs"]
mod tests;
