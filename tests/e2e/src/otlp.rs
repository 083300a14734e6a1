//! An in-test OTLP/gRPC receiver on 127.0.0.1:0: the real binaries export their spans,
//! log records and metrics to it, and tests look at what arrived (with bounded waits, never fixed sleeps).
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

/// One received span, flattened with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    /// Lower-case hex, as in `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
    pub error: bool,
    pub status_message: String,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One received log record, flattened with its resource's `service.name`.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    pub service: String,
    /// Lower-case hex; empty when the record has none.
    pub trace_id: String,
    pub span_id: String,
    pub body: String,
    pub severity_text: String,
    pub time_unix_nano: u64,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedLog {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<ReceivedSpan>,
    logs: Vec<ReceivedLog>,
    /// (service.name, metric name)
    metrics: BTreeSet<(String, String)>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Received>>);

impl Sink {
    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    sink: Sink,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtlpReceiver {
    /// Serves OTLP traces and metrics on 127.0.0.1 on a port of its own.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the OTLP receiver");
        let sink = Sink::default();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("the receiver's address");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()))
            .add_service(LogsServiceServer::new(sink.clone()))
            .serve_with_incoming(incoming);
        runtime.spawn(server);
        Self {
            addr,
            sink,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`, for `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.sink.lock().spans.clone()
    }

    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.sink.lock().logs.clone()
    }

    /// Waits (bounded) until `done` holds for the log records received so far.
    pub fn wait_for_logs(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedLog]) -> bool,
    ) -> Vec<ReceivedLog> {
        crate::wait_until(timeout, what, || {
            let logs = self.logs();
            done(&logs).then_some(logs)
        })
    }

    /// (service.name, metric name) of every metric received.
    pub fn metrics(&self) -> BTreeSet<(String, String)> {
        self.sink.lock().metrics.clone()
    }

    /// Waits (bounded) until `done` holds for the spans received so far; returns them.
    pub fn wait_for_spans(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        crate::wait_until(timeout, what, || {
            let spans = self.spans();
            done(&spans).then_some(spans)
        })
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// An OTLP endpoint where nothing listens (a port bound, then released).
pub fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = listener.local_addr().expect("its address");
    drop(listener);
    format!("http://{addr}")
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = self.lock();
        for rs in request.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let status = span.status.unwrap_or_default();
                received.spans.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    error: status.code == StatusCode::Error as i32,
                    status_message: status.message,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.lock();
        for rm in request.into_inner().resource_metrics {
            let resource = rm
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for metric in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                received.metrics.insert((service.clone(), metric.name));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let mut received = self.lock();
        for rl in request.into_inner().resource_logs {
            let resource = rl
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for record in rl.scope_logs.into_iter().flat_map(|s| s.log_records) {
                received.logs.push(ReceivedLog {
                    service: service.clone(),
                    trace_id: hex(&record.trace_id),
                    span_id: hex(&record.span_id),
                    body: text(&record.body),
                    severity_text: record.severity_text,
                    time_unix_nano: record.time_unix_nano,
                    attributes: attributes(&record.attributes),
                });
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}
