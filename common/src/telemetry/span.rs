//! Spans built after the fact: explicit ids, explicit start and end times, attributes and
//! a status, turned into the SDK's `SpanData` for an exporter. Nothing here touches the
//! `tracing` spans of the code paths; a span describes something that happened to a run,
//! a task, an execution or a step, at the times that thing reports.
use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// The instrumentation scope of every span agentfleet builds.
pub const SCOPE: &str = "agentfleet";

/// One finished span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `SpanId::INVALID` for a root span.
    pub parent_id: SpanId,
    /// The parent was made by another process (the coordinator, for an execution span).
    pub parent_remote: bool,
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub start_ms: i64,
    pub end_ms: i64,
    pub attributes: Vec<KeyValue>,
    pub status: Status,
    /// Point events inside the span: (Unix ms, name, attributes).
    pub events: Vec<(i64, Cow<'static, str>, Vec<KeyValue>)>,
}

impl SpanRecord {
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        trace_id: TraceId,
        span_id: SpanId,
        parent_id: SpanId,
    ) -> Self {
        Self {
            trace_id,
            span_id,
            parent_id,
            parent_remote: false,
            name: name.into(),
            kind: SpanKind::Internal,
            start_ms: 0,
            end_ms: 0,
            attributes: Vec::new(),
            status: Status::Unset,
            events: Vec::new(),
        }
    }

    pub fn kind(mut self, kind: SpanKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn remote_parent(mut self) -> Self {
        self.parent_remote = true;
        self
    }

    /// Start and end in Unix milliseconds; an end before the start is moved to the start
    /// (clocks of different hosts may disagree slightly).
    pub fn times(mut self, start_ms: i64, end_ms: i64) -> Self {
        self.start_ms = start_ms;
        self.end_ms = end_ms.max(start_ms);
        self
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// Error status with `message` (what failed, for the trace view).
    pub fn error(mut self, message: impl Into<Cow<'static, str>>) -> Self {
        self.status = Status::error(message);
        self
    }

    pub fn ok(mut self) -> Self {
        self.status = Status::Ok;
        self
    }

    pub fn event(
        mut self,
        ts_ms: i64,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<KeyValue>,
    ) -> Self {
        self.events.push((ts_ms, name.into(), attributes));
        self
    }

    /// The SDK's form, for a `SpanExporter`.
    pub fn into_span_data(self) -> SpanData {
        let mut events = SpanEvents::default();
        events.events = self
            .events
            .into_iter()
            .map(|(ts, name, attrs)| {
                opentelemetry::trace::Event::new(name, system_time(ts), attrs, 0)
            })
            .collect();
        SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                self.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: self.parent_id,
            parent_span_is_remote: self.parent_remote,
            span_kind: self.kind,
            name: self.name,
            start_time: system_time(self.start_ms),
            end_time: system_time(self.end_ms),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: self.status,
            instrumentation_scope: InstrumentationScope::builder(SCOPE)
                .with_version(crate::VERSION)
                .build(),
        }
    }
}

/// Unix milliseconds as a `SystemTime` (negative values clamp to the epoch).
pub fn system_time(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// The creation time (Unix ms) encoded in a UUIDv7 id such as a run or execution id: the
/// true start of a run or a task attempt, even for a process that learns of it later.
pub fn uuid_v7_ms(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos) / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_span_data() {
        let data = SpanRecord::new(
            "step",
            TraceId::from(7u128),
            SpanId::from(2u64),
            SpanId::from(1u64),
        )
        .remote_parent()
        .times(1_000, 900)
        .attr("step.id", 3i64)
        .error("exit code 3")
        .into_span_data();
        assert_eq!(data.name, "step");
        assert_eq!(data.parent_span_id, SpanId::from(1u64));
        assert!(data.parent_span_is_remote);
        assert_eq!(data.start_time, system_time(1_000));
        assert_eq!(data.end_time, data.start_time, "end never before start");
        assert_eq!(data.status, Status::error("exit code 3"));
        assert!(data.span_context.is_sampled());
    }

    #[test]
    fn uuid_v7_time() {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let ms = uuid_v7_ms(&id).unwrap();
        assert!((crate::now_ms() - ms).abs() < 5_000);
        assert_eq!(uuid_v7_ms("e1"), None);
        assert_eq!(uuid_v7_ms(&uuid::Uuid::new_v4().to_string()), None);
    }
}
