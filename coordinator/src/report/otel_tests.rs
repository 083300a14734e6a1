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

#[test]
fn each_package_task_is_a_child_span_of_its_step() {
    use crate::report::ssis_sample::{ssis_run, t0};
    use agentfleet_common::telemetry::span::system_time;

    let spans = collect(&ssis_run());
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    assert_eq!(names, ["sub_step", "sub_step", "sub_step", "task", "run"]);
    let (truncate, copy, check) = (&spans[0], &spans[1], &spans[2]);
    let step = ids::step_span_id("e1", 1, 1);
    for (span, path) in [
        (truncate, r"\Load Sales\Truncate"),
        (copy, r"\Load Sales\Copy rows"),
        (check, r"\Load Sales\Check"),
    ] {
        assert_eq!(span.parent_span_id, step, "{path}");
        assert_eq!(span.span_context.trace_id(), ids::run_trace_id("r1"));
        assert_eq!(
            span.span_context.span_id(),
            super::super::otel_sub_steps::sub_step_span_id("e1", 1, 1, path)
        );
        assert_eq!(attr(span, "sub_step.path").as_deref(), Some(path));
        assert_eq!(
            attr(span, "ssis.catalog_execution_id").as_deref(),
            Some("12345")
        );
    }
    let ids: std::collections::HashSet<_> =
        spans.iter().map(|s| s.span_context.span_id()).collect();
    assert_eq!(ids.len(), spans.len(), "every span its own id");

    // The catalog's own times, not when the events arrived.
    assert_eq!(truncate.start_time, system_time(t0() + 500));
    assert_eq!(truncate.end_time, system_time(t0() + 800));
    assert_eq!(truncate.status, Status::Ok);
    assert_eq!(copy.start_time, system_time(t0() + 900));
    assert_eq!(copy.end_time, system_time(t0() + 3_000));
    assert!(
        matches!(&copy.status, Status::Error { description } if description.contains("bad row")),
        "{:?}",
        copy.status
    );
    assert_eq!(attr(copy, "ssis.rows").as_deref(), Some("2500"));
    // Never finished: ended with its step, neither ok nor an error.
    assert_eq!(check.start_time, system_time(t0() + 2_100));
    assert_eq!(check.end_time, system_time(t0() + 3_200));
    assert_eq!(check.status, Status::Unset);
    assert_eq!(
        attr(check, "sub_step.status").as_deref(),
        Some("unfinished")
    );
}

#[test]
fn a_sub_step_open_when_its_task_ends_is_ended_with_the_task() {
    let mut events = crate::report::ssis_sample::ssis_run();
    // No step_finished (its events were lost): the task's end closes `Check`.
    events.retain(|e| !matches!(e.kind, RunEventKind::StepFinished { .. }));
    let spans = collect(&events);
    let check = spans
        .iter()
        .find(|s| attr(s, "sub_step.name").as_deref() == Some("Check"))
        .unwrap();
    assert_eq!(
        check.end_time,
        agentfleet_common::telemetry::span::system_time(crate::report::ssis_sample::t0() + 3_300)
    );
}

#[test]
fn a_sub_step_that_finishes_after_its_step_ended_gets_one_span_with_its_outcome() {
    use crate::report::ssis_sample::{ssis_run, t0};
    use agentfleet_common::telemetry::span::system_time;

    // An Agent SSIS step: the sidecar reads msdb and the catalog separately, so the
    // step's end can arrive before the last task's (and the catalog's final status).
    let mut events = ssis_run();
    let step_end = events
        .iter()
        .position(|e| matches!(e.kind, RunEventKind::StepFinished { .. }))
        .unwrap();
    let copy_end = events
        .iter()
        .position(|e| matches!(e.kind, RunEventKind::SubStepFinished(_)) && e.ts_ms == t0() + 3_000)
        .unwrap();
    let step_finished = events.remove(step_end);
    events.insert(copy_end, step_finished);

    let spans = collect(&events);
    let copies: Vec<_> = spans
        .iter()
        .filter(|s| attr(s, "sub_step.name").as_deref() == Some("Copy rows"))
        .collect();
    assert_eq!(copies.len(), 1, "one span per package task: {copies:#?}");
    assert_eq!(
        attr(copies[0], "sub_step.status").as_deref(),
        Some("failed")
    );
    assert_eq!(copies[0].end_time, system_time(t0() + 3_000));
    assert_eq!(
        attr(copies[0], "ssis.catalog_execution_id").as_deref(),
        Some("12345")
    );
    // What never finished still ends with its step, not later with the task.
    let check = spans
        .iter()
        .find(|s| attr(s, "sub_step.name").as_deref() == Some("Check"))
        .unwrap();
    assert_eq!(
        attr(check, "sub_step.status").as_deref(),
        Some("unfinished")
    );
    assert_eq!(check.end_time, system_time(t0() + 3_200));
}
