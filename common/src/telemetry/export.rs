//! The export pipeline of one process: a bounded span queue drained by an exporter task,
//! an OTel meter provider (OTLP push and/or an in-process reader for Prometheus), all on
//! a small runtime of its own.
//!
//! Export never slows or breaks the work it describes:
//! - spans go into a bounded queue with `try_send`; when it is full (or an export fails,
//!   e.g. the collector is down) they are dropped and counted, never waited for;
//! - exports run on a dedicated one-thread runtime, so a slow collector cannot take an
//!   async worker of the coordinator or the sidecar;
//! - `shutdown` flushes within a time limit and blocks: call it off the async worker
//!   threads (from `main` after the runtime's work, or inside `spawn_blocking`).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{ManualReader, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::mpsc;

use super::prometheus::SharedReader;
use super::settings::ExportSettings;
use super::span::SpanRecord;

/// Spans waiting for export; beyond this they are dropped and counted.
pub const SPAN_QUEUE: usize = 4096;
/// Most spans in one export request.
const MAX_BATCH: usize = 512;
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
    spans: Option<SpanQueue>,
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
                Some(SpanQueue::spawn(&runtime, exporter))
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
            "telemetry export on"
        );
        Ok(Self {
            settings: settings.clone(),
            spans,
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
        self.spans
            .as_ref()
            .map_or(0, |q| q.dropped.load(Ordering::Relaxed))
    }

    /// Exports what is queued and the last metrics, giving up after `limit`. Blocks: call
    /// it off the async worker threads.
    pub fn shutdown(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        if let Some(queue) = &self.spans {
            let (done, wait) = std::sync::mpsc::channel();
            if queue.flush.send(done).is_ok() {
                let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            }
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

/// The bounded span queue and its exporter task.
struct SpanQueue {
    tx: mpsc::Sender<SpanData>,
    /// Flush requests: rare control messages, so unbounded; each carries its reply.
    flush: mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    dropped: Arc<AtomicU64>,
}

impl SpanQueue {
    fn spawn<E: SpanExporter + 'static>(runtime: &tokio::runtime::Runtime, exporter: E) -> Self {
        let (tx, rx) = mpsc::channel(SPAN_QUEUE);
        let (flush, flush_rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        runtime.spawn(export_loop(exporter, rx, flush_rx, dropped.clone()));
        Self { tx, flush, dropped }
    }

    fn push(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!("telemetry: span queue full; dropping spans (counted)");
            }
        }
    }
}

/// Exports whatever is queued as soon as it is there (batches form while an export is in
/// flight); answers flush requests after exporting everything queued before them.
async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut flush: mpsc::UnboundedReceiver<std::sync::mpsc::Sender<()>>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            Some(done) = flush.recv() => {
                while let Ok(span) = rx.try_recv() {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        export(&exporter, &mut batch, &dropped).await;
                    }
                }
                export(&exporter, &mut batch, &dropped).await;
                let _ = done.send(());
            }
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                export(&exporter, &mut batch, &dropped).await;
            }
        }
    }
}

async fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>, dropped: &AtomicU64) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    let count = spans.len() as u64;
    let ok = matches!(
        tokio::time::timeout(
            EXPORT_TIMEOUT + Duration::from_secs(1),
            exporter.export(spans)
        )
        .await,
        Ok(Ok(()))
    );
    if !ok {
        let before = dropped.fetch_add(count, Ordering::Relaxed);
        tracing::debug!(
            count,
            dropped_before = before,
            "telemetry: span export failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceId};
    use opentelemetry_sdk::error::OTelSdkResult;
    use std::sync::Mutex;

    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>, bool);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.1 {
                return Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "down".into(),
                ));
            }
            self.0.lock().unwrap().extend(batch);
            Ok(())
        }
    }

    fn span(n: u64) -> SpanData {
        SpanRecord::new("s", TraceId::from(1u128), SpanId::from(n), SpanId::INVALID)
            .times(0, 1)
            .into_span_data()
    }

    fn flush(queue: &SpanQueue) {
        let (done, wait) = std::sync::mpsc::channel();
        queue.flush.send(done).unwrap();
        wait.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn exports_and_flushes() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sink = Collect::default();
        let queue = SpanQueue::spawn(&rt, sink.clone());
        (1..=1000).for_each(|n| queue.push(span(n)));
        flush(&queue);
        assert_eq!(sink.0.lock().unwrap().len(), 1000);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failing_collector_drops_and_counts() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let queue = SpanQueue::spawn(&rt, Collect(Default::default(), true));
        (1..=10).for_each(|n| queue.push(span(n)));
        flush(&queue);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 10);
    }
}
