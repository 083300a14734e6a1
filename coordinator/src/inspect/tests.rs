use std::time::Duration;

use super::*;
use crate::events::{At, RunEvent, RunEventKind};
use crate::report::Reporter;
use crate::report::test_support::sample_run;
use crate::store::NewRun;

fn store_with_sample_run() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.create_run(&new_run("r1")).unwrap();
    let mut reporter = store.reporter().unwrap();
    for ev in sample_run() {
        reporter.event(&ev);
    }
    reporter.finish();
    (dir, store)
}

fn new_run(run_id: &str) -> NewRun {
    NewRun {
        run_id: run_id.into(),
        plan_name: "nightly-etl".into(),
        plan_path: "plan.toml".into(),
        plan_text: String::new(),
        fleet_path: None,
        started_ms: 0,
        tasks: vec![
            ("load-facts".into(), "ETL - Load Facts".into()),
            ("report".into(), "BI - Report".into()),
        ],
    }
}

fn at(attempt: u32) -> At {
    At {
        task: "load-facts".into(),
        attempt,
        sidecar: "sql2".into(),
        execution_id: format!("e{attempt}"),
    }
}

#[test]
fn log_lines_are_prefixed_with_task_attempt_step_and_stream() {
    let (_dir, store) = store_with_sample_run();
    let mut out = Vec::new();
    write_logs(&store, "r1", None, None, false, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "load-facts/transform/stdout | rows: 42\n"
    );
    let mut out = Vec::new();
    write_logs(&store, "r1", Some("report"), None, false, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn follow_sees_lines_written_by_another_connection_and_stops_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store.create_run(&new_run("r1")).unwrap();
    // Another "process": its own connection and writer, writing while we follow.
    let path = store.path().to_owned();
    let driver = std::thread::spawn(move || {
        let writer = crate::store::Writer::spawn(&path).unwrap();
        let ev = |kind| RunEvent::new("r1", agentfleet_common::now_ms(), kind);
        writer.send(ev(RunEventKind::TaskPlaced { at: at(2) }));
        for seq in 1..=5u64 {
            writer.send(ev(RunEventKind::log_line(
                at(2),
                1,
                "stderr",
                format!("line {seq}"),
            )));
            writer.send(ev(RunEventKind::ExecutionSeq { at: at(2), seq }));
            writer.flush();
            std::thread::sleep(Duration::from_millis(30));
        }
        writer.send(ev(RunEventKind::RunFinished {
            status: "succeeded",
            exit_code: 0,
            duration_ms: 1,
            summary: Vec::new(),
        }));
        writer.close()
    });
    let mut out = Vec::new();
    write_logs(
        &store,
        "r1",
        None,
        Some(Duration::from_millis(10)),
        false,
        &mut out,
    )
    .unwrap();
    assert_eq!(driver.join().unwrap().lost_events, 0);
    let text = String::from_utf8(out).unwrap();
    let expected: String = (1..=5)
        .map(|i| format!("load-facts#2/1/stderr | line {i}\n"))
        .collect();
    assert_eq!(text, expected);
}

#[test]
fn short_ids_grow_only_where_neighbours_share_a_prefix() {
    let ids = ["0190c3a1f2e47b9c", "0190c3a1f2e99999", "0190d000aaaaaaaa"];
    assert_eq!(
        short_ids(&ids),
        ["0190c3a1f2e4", "0190c3a1f2e9", "0190d000"]
    );
}

#[test]
fn runs_and_show_render_the_sample_run() {
    let (_dir, store) = store_with_sample_run();
    let rows = store.list_runs(10).unwrap();
    let table = render_runs(&rows, 10_000);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("RUN"), "{table}");
    assert!(lines[1].starts_with("r1 "), "{table}");
    assert!(lines[1].contains("nightly-etl"), "{table}");
    assert!(lines[1].contains("failed"), "{table}");
    assert!(lines[1].ends_with("1 ok / 2"), "{table}");

    let snap = store.run_snapshot("r1").unwrap();
    // Who the sidecar says started it (its StartJob answer, carried by task_started).
    assert_eq!(snap.executions[0].started_by, "coordinator");
    let text = show::render(&snap, 10_000);
    for want in [
        "run r1 · plan nightly-etl (plan.toml)",
        "status    failed (exit code 1)",
        "#1 on sql2  succeeded  execution e1 · started by coordinator",
        "3 load (attempt 2)",
        "retry",
        "exit code 3",
        "report      skipped  stage-x did not succeed",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
}

#[test]
fn show_lists_a_packages_tasks_under_its_step_from_the_stored_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut run = new_run("r1");
    run.tasks = vec![("load-sales".into(), "ETL - Load Sales".into())];
    store.create_run(&run).unwrap();
    let mut reporter = store.reporter().unwrap();
    for ev in crate::report::ssis_sample::ssis_run() {
        reporter.event(&ev);
    }
    reporter.finish();

    let snap = store.run_snapshot("r1").unwrap();
    assert_eq!(snap.packages.len(), 1);
    let text = show::render(&snap, 10_000);
    let from = text.find("\n        1 Load Sales").expect(&text) + 1;
    let lines: Vec<&str> = text[from..].lines().collect();
    assert_eq!(
        lines,
        [
            "        1 Load Sales  failed     2.9s  package failed",
            r"          catalog execution 12345 on SQL1 · ETL\Sales\Load Sales.dtsx · failed",
            r"          \Load Sales\Truncate   succeeded  300ms",
            r"          \Load Sales\Copy rows  failed     2.1s  bad row",
            "            OLE DB Source Output  2500 rows  Sales source → Sales table",
            r"          \Load Sales\Check      running    …",
        ],
        "{text}"
    );
    // `show --json` has them too.
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(
        json["packages"][0]["catalog"]["catalog_execution_id"],
        12345
    );
    assert_eq!(json["packages"][0]["sub_steps"][1]["rows"][0]["rows"], 2500);

    // `logs`: the catalog line with its type and task.
    let mut out = Vec::new();
    write_logs(&store, "r1", Some("load-sales"), None, false, &mut out).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "load-sales/Load Sales/catalog | error   \\Load Sales\\Copy rows: bad row\n"
    );
}
