use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};

use super::*;
use crate::events::At;

fn spec() -> ExecutionSpec {
    ExecutionSpec {
        run_id: "r1".into(),
        task_index: 0,
        at: At {
            task: "load".into(),
            attempt: 1,
            sidecar: "sql1".into(),
            execution_id: "e1".into(),
        },
        job: "ETL".into(),
        params: Default::default(),
        timeout: None,
        lost_after: Duration::from_secs(60),
        resume_after_seq: 0,
        resumed: false,
    }
}

/// The run events the watcher sends for `kinds` (as events 1, 2, ...), without the
/// sequence marks.
async fn translate(kinds: Vec<Kind>) -> Vec<RunEventKind> {
    let spec = spec();
    let (tx, mut rx) = mpsc::channel(100);
    let mut watcher = Watcher {
        spec: &spec,
        tx: &tx,
        last_seq: 0,
        started_by: String::new(),
        step_attempts: HashMap::new(),
    };
    for (i, kind) in kinds.into_iter().enumerate() {
        let event = proto::Event {
            execution_id: "e1".into(),
            seq: i as u64 + 1,
            ts_ms: 1_000,
            kind: Some(kind),
        };
        watcher.handle(event).await;
    }
    drop(tx);
    let mut out = Vec::new();
    while let Some(msg) = rx.recv().await {
        if let ExecMsg::Event { kind, .. } = msg
            && !matches!(kind, RunEventKind::ExecutionSeq { .. })
        {
            out.push(kind);
        }
    }
    out
}

fn step_started(step_id: u32, attempt: u32) -> Kind {
    Kind::StepStarted(proto::StepStarted {
        step_id,
        step_name: "load".into(),
        attempt,
    })
}

#[tokio::test]
async fn catalog_progress_becomes_run_events_of_the_step_attempt() {
    let kinds = vec![
        step_started(2, 1),
        step_started(2, 2),
        Kind::CatalogExecution(proto::CatalogExecution {
            step_id: 2,
            catalog_execution_id: 12345,
            server: "SQL1".into(),
            folder: "ETL".into(),
            project: "Sales".into(),
            package: "Load.dtsx".into(),
            status: 2,
        }),
        Kind::SubStepStarted(proto::SubStepStarted {
            step_id: 2,
            path: r"\Load\Copy rows".into(),
            name: "Copy rows".into(),
            started_at_ms: 900,
        }),
        Kind::DataFlowRows(proto::DataFlowRows {
            step_id: 2,
            path: r"\Load\Copy rows".into(),
            data_flow_path: "OLE DB Source Output".into(),
            source_component: "Source".into(),
            destination_component: "Dest".into(),
            rows: 500,
        }),
        Kind::SubStepFinished(proto::SubStepFinished {
            step_id: 2,
            path: r"\Load\Copy rows".into(),
            name: "Copy rows".into(),
            status: proto::StepStatus::Failed as i32,
            started_at_ms: 900,
            duration_ms: 80,
            message: "bad row".into(),
        }),
        // A step the watcher never saw start (a resumed watch): attempt 1.
        Kind::SubStepStarted(proto::SubStepStarted {
            step_id: 3,
            path: r"\Other".into(),
            name: "Other".into(),
            started_at_ms: 950,
        }),
    ];
    let events = translate(kinds).await;
    assert_eq!(events.len(), 7, "{events:#?}");
    let RunEventKind::CatalogExecution(c) = &events[2] else {
        panic!("{:?}", events[2]);
    };
    assert_eq!((c.step, c.step_attempt), (2, 2));
    assert_eq!(c.catalog_execution_id, 12345);
    assert_eq!(c.status, "running");
    assert_eq!(c.package, "Load.dtsx");
    let RunEventKind::SubStepStarted(s) = &events[3] else {
        panic!("{:?}", events[3]);
    };
    assert_eq!((s.step_attempt, s.started_at_ms), (2, 900));
    let RunEventKind::DataFlowRows(d) = &events[4] else {
        panic!("{:?}", events[4]);
    };
    assert_eq!(
        (d.rows, d.data_flow_path.as_str()),
        (500, "OLE DB Source Output")
    );
    let RunEventKind::SubStepFinished(f) = &events[5] else {
        panic!("{:?}", events[5]);
    };
    assert_eq!(f.status, "failed");
    assert_eq!((f.duration_ms, f.message.as_str()), (80, "bad row"));
    assert_eq!(f.at.execution_id, "e1");
    let RunEventKind::SubStepStarted(other) = &events[6] else {
        panic!("{:?}", events[6]);
    };
    assert_eq!((other.step, other.step_attempt), (3, 1));
}

#[tokio::test]
async fn catalog_lines_carry_their_type_and_task_in_the_text() {
    let line = |stream: proto::LogStream, text: &str, kind, path: &str| proto::LogLine {
        step_id: 1,
        stream: stream as i32,
        line: text.into(),
        catalog_message_id: 7,
        catalog_message_type: kind,
        source_path: path.into(),
        ..Default::default()
    };
    let kinds = vec![Kind::Logs(proto::Logs {
        lines: vec![
            line(
                proto::LogStream::Catalog,
                "bad row",
                120,
                r"\Load\Copy rows",
            ),
            line(proto::LogStream::Catalog, "started", 70, ""),
            line(proto::LogStream::Stdout, "plain", 0, ""),
        ],
    })];
    let texts: Vec<(&'static str, String)> = translate(kinds)
        .await
        .into_iter()
        .flat_map(|k| match k {
            RunEventKind::Log { lines, .. } => lines
                .iter()
                .map(|l| (l.stream, l.line.clone()))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        [
            ("catalog", r"error   \Load\Copy rows: bad row".to_owned()),
            ("catalog", "info    started".to_owned()),
            ("stdout", "plain".to_owned()),
        ]
    );
}
