//! What a package that ran well looks like in each of the coordinator's outputs: the
//! `--json` stream, `show` and `show --json`, and the traces. The package is the
//! stand-in's `Load Sales.dtsx` (see `STANDIN` in `mod.rs`): two tasks, 300 ms and
//! 700 ms, the second a data flow of 2500 rows.
use std::collections::BTreeMap;

use serde_json::Value;

use super::{catalog_lines, catalog_statuses, finished_sub_steps, text};
use crate::RunEvents;
use crate::otlp::ReceivedSpan;

/// The package both successful tasks run, and its two tasks' execution paths.
pub const PACKAGE: &str = "Load Sales.dtsx";
pub const TRUNCATE: &str = r"\Load Sales\Truncate staging";
pub const COPY: &str = r"\Load Sales\Copy rows";
/// The tasks' scripted durations (ms), less what a 1 ms clock may shave off.
pub const TRUNCATE_MS: u64 = 290;
pub const COPY_MS: u64 = 690;

/// What every successful package task must show in the `--json` stream of `task`: the
/// catalog execution found and followed to `succeeded`, both package tasks started and
/// finished with their real durations, the data flow's rows, the catalog's messages.
/// Returns the catalog execution id.
pub fn assert_package_succeeded(events: &RunEvents, task: &str, server: &str) -> i64 {
    let executions = events.of_task("catalog_execution", task);
    let first = executions
        .first()
        .unwrap_or_else(|| panic!("no catalog_execution for {task}"));
    let id = first["catalog_execution_id"].as_i64().unwrap_or_default();
    assert!(id > 0, "{first}");
    for e in &executions {
        assert_eq!(e["catalog_execution_id"], id, "one execution followed: {e}");
        assert_eq!(
            (text(e, "folder"), text(e, "project"), text(e, "package")),
            ("ETL", "Warehouse", PACKAGE),
            "{e}"
        );
        assert_eq!(text(e, "server"), server, "{e}");
        assert_eq!(
            (e["step"].as_u64(), e["step_attempt"].as_u64()),
            (Some(1), Some(1))
        );
    }
    let statuses = catalog_statuses(events, task);
    assert!(
        statuses.contains(&"running".to_owned()),
        "{task}: {statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("succeeded"),
        "{task}"
    );

    let started: Vec<&str> = events
        .of_task("sub_step_started", task)
        .into_iter()
        .map(|e| text(e, "path"))
        .collect();
    for path in [TRUNCATE, COPY] {
        assert!(
            started.contains(&path),
            "{task}: {path} never started: {started:?}"
        );
    }
    assert_eq!(
        finished_sub_steps(events, task),
        [
            ("Truncate staging".to_owned(), "succeeded".to_owned()),
            ("Copy rows".to_owned(), "succeeded".to_owned()),
            // The package itself ends with its catalog execution.
            ("Load Sales".to_owned(), "succeeded".to_owned())
        ],
        "{task}"
    );
    let step = events
        .of_task("step_started", task)
        .first()
        .copied()
        .cloned()
        .unwrap_or_else(|| panic!("no step_started for {task}"));
    let run_started_ms = chrono::DateTime::parse_from_rfc3339(text(&step, "ts"))
        .expect("an RFC 3339 ts")
        .timestamp_millis();
    let mut truncate_end = 0;
    for (path, at_least) in [(TRUNCATE, TRUNCATE_MS), (COPY, COPY_MS)] {
        let f = events
            .of_task("sub_step_finished", task)
            .into_iter()
            .find(|e| e["path"] == path)
            .expect("finished above");
        let took = f["duration_ms"].as_u64().unwrap_or_default();
        assert!(
            (at_least..at_least + 2_000).contains(&took),
            "{task}: {path} took its scripted time: {f}"
        );
        // The catalog's clock (server-local +02:00, converted): within a few seconds of
        // the step's start here, and the copy starts once the truncate ended.
        let start = f["started_at_ms"].as_i64().unwrap_or_default();
        assert!(
            (start - run_started_ms).abs() < 5_000,
            "{task}: {path} started at the catalog's UTC time: {f}"
        );
        if path == COPY {
            assert!(start >= truncate_end - 5, "{task}: tasks in order: {f}");
        }
        truncate_end = start + took as i64;
    }
    let rows: Vec<&Value> = events.of_task("data_flow_rows", task);
    let last = rows
        .last()
        .unwrap_or_else(|| panic!("no data_flow_rows for {task}"));
    assert_eq!(
        (
            text(last, "path"),
            text(last, "data_flow_path"),
            text(last, "source_component"),
            text(last, "destination_component"),
            last["rows"].as_u64()
        ),
        (
            COPY,
            "OLE DB Source Output",
            "Orders",
            "Staging",
            Some(2500)
        ),
        "{task}"
    );
    let lines = catalog_lines(events, task);
    for line in [
        r"info    \Load Sales\Truncate staging: Staging emptied.",
        r"info    \Load Sales\Copy rows: Copied 2500 rows.",
        r"warning \Load Sales\Copy rows: Truncation may occur on column Region.",
    ] {
        assert!(
            lines.iter().any(|l| l == line),
            "{task}: no `{line}` in {lines:#?}"
        );
    }
    // Every catalog event comes before the task's end.
    let end = events
        .position(|e| e["type"] == "task_finished" && e["task"] == task)
        .expect("task_finished");
    let last_catalog = events
        .all()
        .iter()
        .rposition(|e| e["task"] == task && e["type"].as_str().is_some_and(is_catalog_event))
        .expect("catalog events");
    assert!(
        last_catalog < end,
        "{task}: catalog events after the task ended"
    );
    id
}

fn is_catalog_event(kind: &str) -> bool {
    matches!(
        kind,
        "catalog_execution" | "sub_step_started" | "sub_step_finished" | "data_flow_rows"
    )
}

/// The lines of `task`'s block in `coordinator show` (from its name to the next task).
fn show_block<'a>(show: &'a str, task: &str) -> Vec<&'a str> {
    let mut lines = show
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{task} ")));
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("no `{task}` in:\n{show}"));
    std::iter::once(head)
        .chain(lines.take_while(|l| l.starts_with(' ')))
        .collect()
}

/// `coordinator show last`: under `task`'s step, its catalog execution and each package
/// task with status, and the data flow's rows under the copy.
pub fn assert_show_lists_the_package(show: &str, task: &str, step: &str, id: i64, server: &str) {
    let block = show_block(show, task);
    let at = |needle: &str| {
        block
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` under {task}:\n{show}"))
    };
    let step_line = at(&format!("1 {step}  succeeded"));
    let catalog = at(&format!(
        r"catalog execution {id} on {server} · ETL\Warehouse\{PACKAGE} · succeeded"
    ));
    let truncate = at(&format!("{TRUNCATE}  succeeded"));
    let copy = at(&format!("{COPY}         succeeded"));
    let rows = at("OLE DB Source Output  2500 rows  Orders → Staging");
    assert!(
        step_line < catalog && catalog < truncate && truncate < copy && copy < rows,
        "the package sits under its step, in order:\n{show}"
    );
}

/// `show last --json`: `packages` has `task`'s package with its tasks, durations and rows.
pub fn assert_json_package(show: &Value, task: &str, id: i64) {
    let package = show["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["task"] == task)
        .unwrap_or_else(|| panic!("no package of {task} in {show:#}"));
    assert_eq!(
        (package["step"].as_u64(), package["step_attempt"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        package["catalog"]["catalog_execution_id"], id,
        "{package:#}"
    );
    assert_eq!(package["catalog"]["status"], "succeeded", "{package:#}");
    let sub_steps: BTreeMap<&str, &Value> = package["sub_steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| (text(s, "path"), s))
        .collect();
    for (path, at_least) in [(TRUNCATE, TRUNCATE_MS), (COPY, COPY_MS)] {
        let s = sub_steps
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in {package:#}"));
        assert_eq!(s["status"], "succeeded", "{s:#}");
        assert!(
            s["duration_ms"].as_u64().is_some_and(|d| d >= at_least),
            "{s:#}"
        );
    }
    assert_eq!(sub_steps[COPY]["rows"][0]["rows"], 2500, "{package:#}");
}

/// Each package task is a `sub_step` span of the coordinator whose parent is its step's
/// span (the sidecar's), with the catalog's times and the data flow's rows.
pub fn assert_sub_step_spans(spans: &[ReceivedSpan], run_id: &str, execution_ids: &[&str]) {
    let ids: BTreeMap<&str, &ReceivedSpan> =
        spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for execution in execution_ids {
        for (path, at_least) in [(TRUNCATE, TRUNCATE_MS), (COPY, COPY_MS)] {
            let span = spans
                .iter()
                .find(|s| {
                    s.name == "sub_step"
                        && s.attr("execution.id") == Some(execution)
                        && s.attr("sub_step.path") == Some(path)
                })
                .unwrap_or_else(|| panic!("no sub_step span of {path} in {execution}: {spans:#?}"));
            assert_eq!(span.trace_id, run_id, "{span:#?}");
            assert_eq!(span.service, "agentfleet-coordinator", "{span:#?}");
            assert_eq!(span.attr("sub_step.status"), Some("succeeded"), "{span:#?}");
            assert!(!span.error, "{span:#?}");
            let took_ms = (span.end_unix_nano - span.start_unix_nano) / 1_000_000;
            assert!(took_ms >= at_least, "the catalog's duration: {span:#?}");
            let step = ids
                .get(span.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("the sub_step's parent was not exported: {span:#?}"));
            assert_eq!(
                (step.name.as_str(), step.service.as_str()),
                ("step", "agentfleet-sidecar"),
                "{step:#?}"
            );
            assert_eq!(step.attr("execution.id"), Some(*execution), "{step:#?}");
            assert_eq!(step.attr("step.id"), span.attr("step.id"), "{step:#?}");
            if path == COPY {
                assert_eq!(span.attr("ssis.rows"), Some("2500"), "{span:#?}");
            }
        }
    }
}
