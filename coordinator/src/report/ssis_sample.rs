//! A run whose one step runs an SSIS package, for the tests of every reader of catalog
//! progress (live view, plain lines, store, `show`, report, traces).
use crate::events::{
    At, CatalogExecution, DataFlowRows, RunEvent, RunEventKind, SubStepFinished, SubStepStarted,
    TaskOutcome, TaskSummary,
};

/// 2026-11-25T18:14:00Z, as in `sample_run`.
pub(crate) fn t0() -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
        .unwrap()
        .and_hms_opt(18, 14, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

pub(crate) fn at() -> At {
    At {
        task: "load-sales".into(),
        attempt: 1,
        sidecar: "sql1".into(),
        execution_id: "e1".into(),
    }
}

/// load-sales on sql1, step 1 runs `Load Sales.dtsx` as catalog execution 12345:
/// `Truncate` succeeds (0.5s → 0.8s), `Copy rows` fails after moving 2500 rows
/// (0.9s → 3.0s), `Check` starts at 2.1s and never finishes; the step fails at 3.2s.
pub(crate) fn ssis_run() -> Vec<RunEvent> {
    let t0 = t0();
    let ev = |ms: i64, kind| RunEvent::new("r1", t0 + ms, kind);
    let catalog = |status: &str| {
        RunEventKind::CatalogExecution(Box::new(CatalogExecution {
            at: at(),
            step: 1,
            step_attempt: 1,
            catalog_execution_id: 12345,
            server: "SQL1".into(),
            folder: "ETL".into(),
            project: "Sales".into(),
            package: "Load Sales.dtsx".into(),
            status: status.into(),
        }))
    };
    let started = |name: &str, ms: i64| {
        RunEventKind::SubStepStarted(Box::new(SubStepStarted {
            at: at(),
            step: 1,
            step_attempt: 1,
            path: format!(r"\Load Sales\{name}"),
            name: name.into(),
            started_at_ms: t0 + ms,
        }))
    };
    let finished = |name: &str, status: &str, from: i64, took: u64, message: &str| {
        RunEventKind::SubStepFinished(Box::new(SubStepFinished {
            at: at(),
            step: 1,
            step_attempt: 1,
            path: format!(r"\Load Sales\{name}"),
            name: name.into(),
            status: status.into(),
            started_at_ms: t0 + from,
            duration_ms: took,
            message: message.into(),
        }))
    };
    let rows = |n| {
        RunEventKind::DataFlowRows(Box::new(DataFlowRows {
            at: at(),
            step: 1,
            step_attempt: 1,
            path: r"\Load Sales\Copy rows".into(),
            data_flow_path: "OLE DB Source Output".into(),
            source_component: "Sales source".into(),
            destination_component: "Sales table".into(),
            rows: n,
        }))
    };
    let summary = TaskSummary {
        task: "load-sales".into(),
        sidecar: Some("sql1".into()),
        attempts: 1,
        duration_ms: 3_200,
        status: TaskOutcome::Failed,
        message: "package failed".into(),
    };
    vec![
        ev(
            0,
            RunEventKind::RunStarted {
                plan: "sales".into(),
                tasks: 1,
                sidecars: vec!["sql1".into()],
                slots: [("sql1".into(), 1)].into(),
            },
        ),
        ev(100, RunEventKind::TaskPlaced { at: at() }),
        ev(
            200,
            RunEventKind::TaskStarted {
                at: at(),
                step_count: 1,
                started_by: String::new(),
            },
        ),
        ev(
            300,
            RunEventKind::StepStarted {
                at: at(),
                step: 1,
                step_name: "Load Sales".into(),
                step_attempt: 1,
            },
        ),
        ev(400, catalog("running")),
        ev(500, started("Truncate", 500)),
        ev(800, finished("Truncate", "succeeded", 500, 300, "")),
        ev(900, started("Copy rows", 900)),
        ev(1_500, rows(1_000)),
        ev(2_000, rows(2_500)),
        ev(2_100, started("Check", 2_100)),
        ev(
            2_500,
            RunEventKind::log_line(
                at(),
                1,
                "catalog",
                crate::events::catalog_line(120, r"\Load Sales\Copy rows", "bad row"),
            ),
        ),
        ev(
            3_000,
            finished("Copy rows", "failed", 900, 2_100, "bad row"),
        ),
        ev(3_100, catalog("failed")),
        ev(
            3_200,
            RunEventKind::StepFinished {
                at: at(),
                step: 1,
                step_name: "Load Sales".into(),
                step_attempt: 1,
                status: "failed",
                message: "package failed".into(),
                duration_ms: 2_900,
            },
        ),
        ev(
            3_300,
            RunEventKind::TaskFinished {
                task: "load-sales".into(),
                attempt: 1,
                sidecar: Some("sql1".into()),
                execution_id: Some("e1".into()),
                status: TaskOutcome::Failed,
                message: "package failed".into(),
                duration_ms: 3_200,
                will_retry: false,
            },
        ),
        ev(
            3_400,
            RunEventKind::RunFinished {
                status: "failed",
                exit_code: 1,
                duration_ms: 3_400,
                summary: vec![summary],
            },
        ),
    ]
}
