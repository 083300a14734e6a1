//! The export pipeline of one process: bounded queues of spans and log records drained by
//! exporter tasks, an OTel meter provider (OTLP push and/or an in-process reader for
//! Prometheus), all on a small runtime of its own.
//!
//! Export never slows or breaks the work it describes:
//! - spans and log records go into bounded queues with `try_send`; when one is full (or an
//!   export fails, e.g. the collector is down) they are dropped and counted, never waited
//!   for (`queue.rs`);
//! - exports run on a dedicated one-thread runtime, so a slow collector cannot take an
//!   async worker of the coordinator or the sidecar;
//! - `shutdown` flushes within a time limit and blocks: call it off the async worker
//!   threads (from `main` after the runtime's work, or inside `spawn_blocking`).
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::LogExporter as _;
use opentelemetry_sdk::metrics::{ManualReader, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::log_record::{LogLine, LogRecords};
use super::prometheus::SharedReader;
use super::queue::{BatchSink, ExportQueue};
use super::settings::ExportSettings;
use super::span::SpanRecord;

/// Spans (and, separately, log records) waiting for export; beyond this they are dropped
/// and counted.
pub const SPAN_QUEUE: usize = super::queue::QUEUE;
/// One export call, retries included, gives up after this long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("failed to start the telemetry runtime: {0}")]
    Runtime(std::io::Error),
    #[error("failed to set up the OTLP exporter for `{endpoint}`: {message}")]
    Exporter { endpoint: String, message: String },
}

/// The process's telemetry export; see [`start`].
pub struct Telemetry {
    settings: ExportSettings,
    spans: Option<ExportQueue<SpanData>>,
    logs: Option<LogRecords>,
    meters: Option<SdkMeterProvider>,
    prometheus: Option<SharedReader>,
    /// Runs the exporters' I/O; lives as long as the process.
    _runtime: tokio::runtime::Runtime,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Starts export as `settings` say, once per process; None when there is nothing to
/// export. A second call keeps the first pipeline (in-process tests start several servers).
pub fn start(settings: &ExportSettings) -> Result<Option<&'static Telemetry>, ExportError> {
    if !settings.any() {
        return Ok(None);
    }
    if let Some(existing) = TELEMETRY.get() {
        if existing.settings != *settings {
            tracing::warn!("telemetry export is already running; keeping its first settings");
        }
        return Ok(Some(existing));
    }
    let telemetry = Telemetry::build(settings)?;
    // A concurrent first call may have won; either pipeline is fine, keep the winner. The
    // loser owns a runtime, which must not be dropped on an async thread.
    if let Err(loser) = TELEMETRY.set(telemetry) {
        std::thread::spawn(move || drop(loser));
    }
    Ok(TELEMETRY.get())
}

/// The running export, if [`start`] set one up.
pub fn get() -> Option<&'static Telemetry> {
    TELEMETRY.get()
}

/// Queues a finished span for export; a no-op when spans are not exported.
pub fn export_span(span: SpanRecord) {
    if let Some(queue) = get().and_then(|t| t.spans.as_ref()) {
        queue.push(span.into_span_data());
    }
}

/// Queues a job's log line for export as a log record; a no-op when logs are not exported.
pub fn export_log(line: LogLine<'_>) {
    if let Some(logs) = get().and_then(|t| t.logs.as_ref()) {
        logs.push(line);
    }
}

/// True when log records are exported.
pub fn logs_enabled() -> bool {
    get().is_some_and(|t| t.logs.is_some())
}

/// True when spans are exported (callers can skip building them otherwise).
pub fn spans_enabled() -> bool {
    get().is_some_and(|t| t.spans.is_some())
}

impl Telemetry {
    fn build(settings: &ExportSettings) -> Result<Self, ExportError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agentfleet-telemetry")
            .enable_all()
            .build()
            .map_err(ExportError::Runtime)?;
        // tonic channels spawn their connection task on the current runtime: ours.
        let _entered = runtime.enter();
        let resource = resource(settings);

        let spans = match &settings.traces_endpoint {
            Some(endpoint) => {
                let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| ExportError::Exporter {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?;
                exporter.set_resource(&resource);
                let sink = Spans(exporter);
                Some(ExportQueue::spawn(
                    runtime.handle(),
                    sink,
                    "spans",
                    EXPORT_TIMEOUT,
                ))
            }
            None => None,
        };

        let logs = match &settings.logs_endpoint {
            Some(endpoint) => {
                let mut exporter = opentelemetry_otlp::LogExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| ExportError::Exporter {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?;
                exporter.set_resource(&resource);
                Some(LogRecords::spawn(
                    runtime.handle(),
                    exporter,
                    EXPORT_TIMEOUT,
                ))
            }
            None => None,
        };

        let mut meters = None;
        let mut prometheus = None;
        if settings.metrics_endpoint.is_some() || settings.prometheus {
            let mut builder = SdkMeterProvider::builder().with_resource(resource);
            if let Some(endpoint) = &settings.metrics_endpoint {
                let exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint.clone())
                    .with_timeout(EXPORT_TIMEOUT)
                    .build()
                    .map_err(|e| ExportError::Exporter {
                        endpoint: endpoint.clone(),
                        message: e.to_string(),
                    })?;
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            if settings.prometheus {
                let reader = SharedReader(Arc::new(ManualReader::builder().build()));
                builder = builder.with_reader(reader.clone());
                prometheus = Some(reader);
            }
            let provider = builder.build();
            opentelemetry::global::set_meter_provider(provider.clone());
            meters = Some(provider);
        }
        drop(_entered);
        tracing::info!(
            service = %settings.service_name,
            traces = settings.traces_endpoint.as_deref().unwrap_or("off"),
            metrics = settings.metrics_endpoint.as_deref().unwrap_or("off"),
            logs = settings.logs_endpoint.as_deref().unwrap_or("off"),
            "telemetry export on"
        );
        Ok(Self {
            settings: settings.clone(),
            spans,
            logs,
            meters,
            prometheus,
            _runtime: runtime,
        })
    }

    /// The metrics in Prometheus text format, when kept for a scrape. Blocking (metric
    /// callbacks may read files): call it inside `spawn_blocking`.
    pub fn prometheus_text(&self) -> Option<String> {
        self.prometheus.as_ref().map(SharedReader::render)
    }

    /// Spans dropped so far (queue full, or the collector did not take them).
    pub fn dropped_spans(&self) -> u64 {
        self.spans.as_ref().map_or(0, ExportQueue::dropped)
    }

    /// Log records dropped so far (queue full, or the collector did not take them).
    pub fn dropped_logs(&self) -> u64 {
        self.logs.as_ref().map_or(0, LogRecords::dropped)
    }

    /// Exports what is queued and the last metrics, giving up after `limit`. Blocks: call
    /// it off the async worker threads.
    pub fn shutdown(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        // Both queues flush at once; each wait is bounded by the same deadline.
        let waits = [
            self.spans.as_ref().and_then(ExportQueue::request_flush),
            self.logs.as_ref().and_then(LogRecords::request_flush),
        ];
        for wait in waits.into_iter().flatten() {
            let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        if let Some(provider) = self.meters.clone() {
            // The SDK's shutdown waits on its reader thread; bound it from here.
            let (done, wait) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = provider.shutdown();
                let _ = done.send(());
            });
            let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
        let dropped = self.dropped_spans();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "telemetry: spans were dropped (queue full or collector unreachable)"
            );
        }
        let dropped = self.dropped_logs();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "telemetry: log records were dropped (queue full or collector unreachable)"
            );
        }
    }
}

fn resource(settings: &ExportSettings) -> Resource {
    let mut attributes = vec![KeyValue::new("service.version", crate::VERSION)];
    attributes.extend(
        settings
            .resource
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(settings.service_name.clone())
        .build()
}

/// Spans to an OTLP span exporter.
struct Spans<E>(E);

impl<E: SpanExporter + 'static> BatchSink<SpanData> for Spans<E> {
    async fn export(&self, batch: Vec<SpanData>) -> bool {
        self.0.export(batch).await.is_ok()
    }
}
