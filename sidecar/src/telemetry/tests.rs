use super::*;
use opentelemetry::trace::Status;

const RUN: &str = "01936f0e5c7a7d3e8a1b2c3d4e5f6071";

fn execution() -> proto::Execution {
    proto::Execution {
        execution_id: "e1".into(),
        job: "nightly".into(),
        backend: "command".into(),
        run_id: RUN.into(),
        task: "load".into(),
        attempt: 2,
        accepted_at_ms: 1_000,
        ..Default::default()
    }
}

fn event(seq: u64, ts_ms: i64, kind: Kind) -> proto::Event {
    proto::Event {
        execution_id: "e1".into(),
        seq,
        ts_ms,
        kind: Some(kind),
    }
}

fn step_finished(
    step_id: u32,
    attempt: u32,
    status: proto::StepStatus,
    started_at_ms: i64,
    duration_ms: u64,
) -> Kind {
    Kind::StepFinished(proto::StepFinished {
        step_id,
        step_name: format!("step-{step_id}"),
        status: status as i32,
        message: if status == proto::StepStatus::Succeeded {
            String::new()
        } else {
            "exit code 3".into()
        },
        duration_ms,
        attempt,
        started_at_ms,
        ..Default::default()
    })
}

#[test]
fn spans_from_events_have_real_times_and_parents() {
    let parent = TraceParent::for_task(RUN, "load", 2);
    let mut spans = ExecutionSpans::new("s1", &execution(), Some(parent));
    let mut out = Vec::new();
    let events = [
        event(
            1,
            1_000,
            Kind::Accepted(proto::Accepted {
                job: "nightly".into(),
                backend: "command".into(),
            }),
        ),
        event(2, 1_010, Kind::Started(proto::Started { step_count: 2 })),
        event(
            3,
            1_020,
            Kind::StepStarted(proto::StepStarted {
                step_id: 1,
                step_name: "step-1".into(),
                attempt: 1,
            }),
        ),
        // Learned after the fact: its own clock says it ran 1_020..1_520.
        event(
            4,
            9_000,
            step_finished(1, 1, proto::StepStatus::Succeeded, 1_020, 500),
        ),
        // No start time of its own: from its StepStarted.
        event(
            5,
            2_000,
            Kind::StepStarted(proto::StepStarted {
                step_id: 2,
                step_name: "step-2".into(),
                attempt: 1,
            }),
        ),
        event(
            6,
            2_300,
            step_finished(2, 1, proto::StepStatus::Failed, 0, 0),
        ),
        event(
            7,
            2_400,
            Kind::Finished(proto::Finished {
                outcome: proto::Outcome::Failed as i32,
                message: "step 2 failed".into(),
            }),
        ),
    ];
    for e in &events {
        out.extend(spans.observe(e, None));
    }
    let data: Vec<_> = out.into_iter().map(SpanRecord::into_span_data).collect();
    assert_eq!(data.len(), 3);
    let (step1, step2, exec) = (&data[0], &data[1], &data[2]);

    assert_eq!(exec.name, "execution");
    assert_eq!(exec.span_context.trace_id(), ids::run_trace_id(RUN));
    assert_eq!(exec.span_context.span_id(), ids::execution_span_id("e1"));
    assert_eq!(exec.parent_span_id, ids::task_span_id(RUN, "load", 2));
    assert!(exec.parent_span_is_remote);
    assert_eq!(
        exec.start_time,
        agentfleet_common::telemetry::span::system_time(1_000)
    );
    assert_eq!(
        exec.end_time,
        agentfleet_common::telemetry::span::system_time(2_400)
    );
    assert!(matches!(exec.status, Status::Error { .. }));

    assert_eq!(step1.parent_span_id, ids::execution_span_id("e1"));
    assert_eq!(step1.span_context.span_id(), ids::step_span_id("e1", 1, 1));
    assert_eq!(
        step1.start_time,
        agentfleet_common::telemetry::span::system_time(1_020)
    );
    assert_eq!(
        step1.end_time,
        agentfleet_common::telemetry::span::system_time(1_520)
    );
    assert_eq!(step1.status, Status::Ok);

    assert_eq!(
        step2.start_time,
        agentfleet_common::telemetry::span::system_time(2_000)
    );
    assert_eq!(
        step2.end_time,
        agentfleet_common::telemetry::span::system_time(2_300)
    );
    assert!(matches!(step2.status, Status::Error { .. }));
    assert!(
        step2
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == "step.message")
    );
}

#[test]
fn parent_from_metadata_or_request() {
    let req = proto::StartJobRequest {
        run_id: RUN.into(),
        task: "load".into(),
        attempt: 1,
        ..Default::default()
    };
    let empty = tonic::metadata::MetadataMap::new();
    assert_eq!(
        parent_of(&empty, &req),
        Some(TraceParent::for_task(RUN, "load", 1))
    );

    let foreign =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let mut metadata = tonic::metadata::MetadataMap::new();
    foreign.inject(&mut metadata);
    assert_eq!(parent_of(&metadata, &req), Some(foreign));

    assert_eq!(parent_of(&empty, &proto::StartJobRequest::default()), None);
}
