use std::sync::{Arc, Mutex};

use agentfleet_common::telemetry::ids;
use opentelemetry::trace::{SpanId, Status};

use super::*;
use crate::events::At;
use crate::report::test_support::sample_run;

fn collect(events: &[RunEvent]) -> Vec<opentelemetry_sdk::trace::SpanData> {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = spans.clone();
    let mut reporter = OtelReporter::new(Box::new(move |s: SpanRecord| {
        sink.lock().unwrap().push(s.into_span_data())
    }));
    events.iter().for_each(|e| reporter.event(e));
    reporter.finish();
    spans.lock().unwrap().clone()
}

fn attr(span: &opentelemetry_sdk::trace::SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

#[test]
fn run_and_task_spans_from_events() {
    let spans = collect(&sample_run());
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["task", "task", "run"]);
    let (load, skipped, run) = (&spans[0], &spans[1], &spans[2]);

    // One trace (from the run id), run → task parentage by derived ids.
    let trace = ids::run_trace_id("r1");
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    assert_eq!(run.parent_span_id, SpanId::INVALID);
    assert_eq!(run.span_context.span_id(), ids::run_span_id("r1"));
    assert_eq!(load.parent_span_id, ids::run_span_id("r1"));
    assert_eq!(
        load.span_context.span_id(),
        ids::task_span_id("r1", "load-facts", 1)
    );

    // The task spans from placement to its end; the run from its start to its end.
    assert_eq!(
        load.end_time
            .duration_since(load.start_time)
            .unwrap()
            .as_millis(),
        6_000
    );
    assert_eq!(
        run.end_time
            .duration_since(run.start_time)
            .unwrap()
            .as_millis(),
        6_200
    );
    assert_eq!(attr(load, "sidecar.name").as_deref(), Some("sql2"));
    assert_eq!(attr(load, "execution.id").as_deref(), Some("e1"));
    assert_eq!(load.status, Status::Ok);
    assert_eq!(attr(skipped, "task.outcome").as_deref(), Some("skipped"));
    assert_eq!(skipped.status, Status::Unset);
    assert_eq!(attr(run, "plan.name").as_deref(), Some("nightly-etl"));
    assert!(matches!(run.status, Status::Error { .. }), "the run failed");
}

#[test]
fn a_failed_attempt_is_an_error_span_and_the_retry_its_own_span() {
    let at = |attempt| At {
        task: "t".into(),
        attempt,
        sidecar: "s1".into(),
        execution_id: format!("e{attempt}"),
    };
    let finished = |attempt, status, will_retry| RunEventKind::TaskFinished {
        task: "t".into(),
        attempt,
        sidecar: Some("s1".into()),
        execution_id: None,
        status,
        message: "exit code 3".into(),
        duration_ms: 10,
        will_retry,
    };
    let events = vec![
        RunEvent::new("r1", 0, RunEventKind::TaskPlaced { at: at(1) }),
        RunEvent::new("r1", 10, finished(1, TaskOutcome::Failed, true)),
        RunEvent::new("r1", 20, RunEventKind::TaskPlaced { at: at(2) }),
        RunEvent::new("r1", 30, finished(2, TaskOutcome::Succeeded, false)),
    ];
    let spans = collect(&events);
    assert_eq!(spans.len(), 2);
    assert!(matches!(spans[0].status, Status::Error { .. }));
    assert_eq!(spans[1].status, Status::Ok);
    assert_ne!(
        spans[0].span_context.span_id(),
        spans[1].span_context.span_id()
    );
    assert_eq!(
        spans[1].span_context.span_id(),
        ids::task_span_id("r1", "t", 2)
    );
}
