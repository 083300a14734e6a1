//! Job log lines as OpenTelemetry log records, each carrying the trace and span ids of
//! the step it came from, so that Grafana goes from a step span to its lines and back.
//! They share the export pipeline's rules (`queue.rs`): a bounded queue, drop and count.
use std::time::{Duration, UNIX_EPOCH};

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};

use super::queue::{BatchSink, ExportQueue};

/// The instrumentation scope of every job log record.
const SCOPE: &str = "agentfleet.job";

/// One line of a job's output and where it belongs.
#[derive(Debug, Clone)]
pub struct LogLine<'a> {
    pub trace_id: TraceId,
    /// The step's span (see `ids::step_span_id`).
    pub span_id: SpanId,
    /// When the line was written, Unix ms.
    pub ts_ms: i64,
    /// stdout, stderr, or agent (SQL Server Agent's own messages).
    pub stream: &'a str,
    pub line: &'a str,
    pub run_id: &'a str,
    pub task: &'a str,
    pub attempt: u32,
    pub sidecar: &'a str,
    pub job: &'a str,
    pub execution_id: &'a str,
    pub step: u32,
    pub step_name: &'a str,
    pub step_attempt: u32,
}

/// The log record queue, and the SDK logger that makes records (it has no processors:
/// records go to our own queue, not through the SDK's pipeline).
pub(crate) struct LogRecords {
    queue: ExportQueue<SdkLogRecord>,
    logger: SdkLogger,
    _provider: SdkLoggerProvider,
}

impl LogRecords {
    pub(crate) fn spawn<E: LogExporter + 'static>(
        runtime: &tokio::runtime::Handle,
        exporter: E,
        timeout: Duration,
    ) -> Self {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger(SCOPE);
        let sink = Sink {
            exporter,
            scope: InstrumentationScope::builder(SCOPE).build(),
        };
        Self {
            queue: ExportQueue::spawn(runtime, sink, "log records", timeout),
            logger,
            _provider: provider,
        }
    }

    pub(crate) fn push(&self, line: LogLine<'_>) {
        self.queue.push(record(&self.logger, &line));
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    pub(crate) fn request_flush(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        self.queue.request_flush()
    }
}

/// The record of `line`: body the line; stderr at WARN, everything else INFO (a job's
/// stderr is often progress, so never ERROR by itself); attributes named like the spans'.
fn record(logger: &SdkLogger, line: &LogLine<'_>) -> SdkLogRecord {
    let mut r = logger.create_log_record();
    let at = UNIX_EPOCH + Duration::from_millis(line.ts_ms.max(0) as u64);
    r.set_timestamp(at);
    r.set_observed_timestamp(opentelemetry::time::now());
    let (severity, text) = if line.stream == "stderr" {
        (Severity::Warn, "WARN")
    } else {
        (Severity::Info, "INFO")
    };
    r.set_severity_number(severity);
    r.set_severity_text(text);
    r.set_body(AnyValue::from(line.line.to_owned()));
    r.set_trace_context(line.trace_id, line.span_id, Some(TraceFlags::SAMPLED));
    r.add_attributes([
        ("run.id", AnyValue::from(line.run_id.to_owned())),
        ("task.name", AnyValue::from(line.task.to_owned())),
        ("task.attempt", AnyValue::from(i64::from(line.attempt))),
        ("sidecar.name", AnyValue::from(line.sidecar.to_owned())),
        ("job.name", AnyValue::from(line.job.to_owned())),
        ("execution.id", AnyValue::from(line.execution_id.to_owned())),
        ("step.id", AnyValue::from(i64::from(line.step))),
        ("step.name", AnyValue::from(line.step_name.to_owned())),
        ("step.attempt", AnyValue::from(i64::from(line.step_attempt))),
        ("log.iostream", AnyValue::from(line.stream.to_owned())),
    ]);
    r
}

/// Batches of records to an OTLP log exporter.
struct Sink<E> {
    exporter: E,
    scope: InstrumentationScope,
}

impl<E: LogExporter + 'static> BatchSink<SdkLogRecord> for Sink<E> {
    async fn export(&self, batch: Vec<SdkLogRecord>) -> bool {
        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|r| (r, &self.scope)).collect();
        self.exporter.export(LogBatch::new(&pairs)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_the_step_span_and_the_attributes() {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger(SCOPE);
        let line = LogLine {
            trace_id: TraceId::from(7u128),
            span_id: SpanId::from(9u64),
            ts_ms: 1_000,
            stream: "stderr",
            line: "deadlock victim",
            run_id: "r1",
            task: "load-facts",
            attempt: 2,
            sidecar: "sql2",
            job: "ETL - Load Facts",
            execution_id: "e1",
            step: 3,
            step_name: "load",
            step_attempt: 1,
        };
        let r = record(&logger, &line);
        let trace = r.trace_context().unwrap();
        assert_eq!(
            (trace.trace_id, trace.span_id),
            (TraceId::from(7u128), SpanId::from(9u64))
        );
        assert_eq!(r.timestamp(), Some(UNIX_EPOCH + Duration::from_secs(1)));
        assert_eq!(r.severity_number(), Some(Severity::Warn));
        assert_eq!(
            r.body(),
            Some(&AnyValue::from("deadlock victim".to_owned()))
        );
        let attrs: Vec<String> = r.attributes_iter().map(|(k, _)| k.to_string()).collect();
        for key in [
            "run.id",
            "task.name",
            "task.attempt",
            "sidecar.name",
            "job.name",
            "step.id",
            "log.iostream",
        ] {
            assert!(attrs.iter().any(|a| a == key), "{key} missing: {attrs:?}");
        }
    }
}
