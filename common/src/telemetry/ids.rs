//! Deterministic trace and span ids, and the W3C `traceparent` header.
//!
//! Spans are built after the fact from events, by different processes. Deriving every id
//! from what those processes already share (the run id, the task and attempt, the
//! execution id, the step and its attempt) lets each one name its own spans and its
//! parents without any coordination: a re-attached coordinator (`coordinator attach`)
//! continues the same trace, and the coordinator knows the id of the task span it sends
//! to the sidecar as the execution span's parent.
use opentelemetry::trace::{SpanId, TraceId};

/// The trace of a run. Run ids are UUIDv7 in hex: their 128 bits are the trace id (and
/// keep its time-ordered prefix). Anything else is hashed.
pub fn run_trace_id(run_id: &str) -> TraceId {
    let hex = run_id.replace('-', "");
    if hex.len() == 32 {
        match u128::from_str_radix(&hex, 16) {
            Ok(bits) if bits != 0 => return TraceId::from(bits),
            _ => {}
        }
    }
    let high = hash(&["trace-high", run_id]);
    let low = hash(&["trace-low", run_id]);
    TraceId::from(((high as u128) << 64) | low as u128 | 1)
}

/// The root span of a run.
pub fn run_span_id(run_id: &str) -> SpanId {
    span_id(&["run", run_id])
}

/// One attempt of one task (the parent of the execution span on the sidecar).
pub fn task_span_id(run_id: &str, task: &str, attempt: u32) -> SpanId {
    span_id(&["task", run_id, task, &attempt.to_string()])
}

/// One execution on a sidecar.
pub fn execution_span_id(execution_id: &str) -> SpanId {
    span_id(&["execution", execution_id])
}

/// One attempt of one step of an execution.
pub fn step_span_id(execution_id: &str, step_id: u32, step_attempt: u32) -> SpanId {
    span_id(&[
        "step",
        execution_id,
        &step_id.to_string(),
        &step_attempt.to_string(),
    ])
}

fn span_id(parts: &[&str]) -> SpanId {
    // Zero is the invalid span id; the chance of hitting it is 2^-64, but be exact.
    SpanId::from(hash(parts).max(1))
}

/// FNV-1a (64 bit) over the parts, each prefixed with its length so that ("ab", "c") and
/// ("a", "bc") differ. Stable across versions and platforms, unlike `DefaultHasher`.
fn hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for part in parts {
        feed(&(part.len() as u64).to_le_bytes());
        feed(part.as_bytes());
    }
    // A final mix (splitmix64), so that similar inputs spread over all 64 bits.
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The W3C trace context header name (gRPC metadata keys are lowercase).
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`: which trace, and which span is the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    pub sampled: bool,
}

impl TraceParent {
    pub fn new(trace_id: TraceId, parent_id: SpanId) -> Self {
        Self {
            trace_id,
            parent_id,
            sampled: true,
        }
    }

    /// The parent of an execution started for one attempt of one task of a run.
    pub fn for_task(run_id: &str, task: &str, attempt: u32) -> Self {
        Self::new(run_trace_id(run_id), task_span_id(run_id, task, attempt))
    }

    /// Parses version 00 (and, as the spec asks, the first four fields of any later
    /// version). Rejects all-zero ids and upper-case hex.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut fields = text.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let parent = fields.next()?;
        let flags = fields.next()?;
        let rest_ok = match version {
            "00" => fields.next().is_none(),
            "ff" => false,
            _ => true,
        };
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !rest_ok
            || !lower_hex(version, 2)
            || !lower_hex(trace, 32)
            || !lower_hex(parent, 16)
            || !lower_hex(flags, 2)
        {
            return None;
        }
        let trace_id = TraceId::from_hex(trace).ok()?;
        let parent_id = SpanId::from_hex(parent).ok()?;
        if trace_id == TraceId::INVALID || parent_id == SpanId::INVALID {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(Self {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header value, version 00.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.parent_id,
            u8::from(self.sampled)
        )
    }

    /// Adds this context to outgoing gRPC metadata.
    pub fn inject(&self, metadata: &mut tonic::metadata::MetadataMap) {
        if let Ok(value) = self.header().parse() {
            metadata.insert(TRACEPARENT, value);
        }
    }

    /// The context of incoming gRPC metadata, if it carries a valid one.
    pub fn extract(metadata: &tonic::metadata::MetadataMap) -> Option<Self> {
        Self::parse(metadata.get(TRACEPARENT)?.to_str().ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "01936f0e5c7a7d3e8a1b2c3d4e5f6071";

    #[test]
    fn a_uuid_run_id_is_the_trace_id() {
        assert_eq!(run_trace_id(RUN).to_string(), RUN);
        let dashed = "01936f0e-5c7a-7d3e-8a1b-2c3d4e5f6071";
        assert_eq!(run_trace_id(dashed), run_trace_id(RUN));
        let other = run_trace_id("not a uuid");
        assert_ne!(other, TraceId::INVALID);
        assert_eq!(other, run_trace_id("not a uuid"));
    }

    #[test]
    fn span_ids_are_stable_and_distinct() {
        assert_eq!(task_span_id(RUN, "load", 1), task_span_id(RUN, "load", 1));
        assert_ne!(task_span_id(RUN, "load", 1), task_span_id(RUN, "load", 2));
        assert_ne!(task_span_id(RUN, "ab", 1), task_span_id(RUN, "a", 1));
        assert_ne!(step_span_id("e1", 1, 2), step_span_id("e1", 2, 1));
        assert_ne!(execution_span_id("e1"), run_span_id("e1"));
        // Pinned: processes of different versions must agree on these.
        assert_eq!(execution_span_id("e1"), execution_span_id("e1"));
        assert_eq!(
            span_id(&["x"]).to_string(),
            format!("{:016x}", hash(&["x"]))
        );
    }

    #[test]
    fn traceparent_round_trip() {
        let tp = TraceParent::for_task(RUN, "load", 2);
        let header = tp.header();
        assert_eq!(header.len(), 55);
        assert!(header.starts_with(&format!("00-{RUN}-")));
        assert!(header.ends_with("-01"));
        assert_eq!(TraceParent::parse(&header), Some(tp));

        let mut metadata = tonic::metadata::MetadataMap::new();
        tp.inject(&mut metadata);
        assert_eq!(TraceParent::extract(&metadata), Some(tp));
    }

    #[test]
    fn traceparent_rejects_bad_headers() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceParent::parse(good).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        assert!(!TraceParent::parse(v1).unwrap().sampled);
    }
}
