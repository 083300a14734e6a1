//! A known run through the store, then its timeline: lanes, bars, retries, totals, and
//! both renderings.
use super::*;
use crate::events::{At, RunEvent, RunEventKind, TaskOutcome};
use crate::report::Reporter;
use crate::store::{NewRun, Store};

const T0: i64 = 1_764_094_440_000;
const PLAN: &str = r#"
[plan]
name = "known"
[[task]]
name = "a"
job = "stage"
[[task]]
name = "b"
job = "load"
after = ["a"]
[[task]]
name = "c"
job = "flaky"
retries = 1
[[task]]
name = "d"
job = "report"
after = ["c"]
"#;

fn at(task: &str, attempt: u32, sidecar: &str) -> At {
    At {
        task: task.into(),
        attempt,
        sidecar: sidecar.into(),
        execution_id: format!("e-{task}{attempt}"),
    }
}

/// s1 (2 slots) runs a (0-4s), c#1 (0.5-1.5s, fails, retried) and b (4.1-9.1s, after a;
/// its step retried once, 250 log lines); s2 (1 slot) runs c#2 (1.6-2.6s, fails); d is
/// skipped. The run ends at 9.2s.
fn known_run() -> Vec<RunEvent> {
    let mut evs = Vec::new();
    push(
        &mut evs,
        0,
        RunEventKind::RunStarted {
            plan: "known".into(),
            tasks: 4,
            sidecars: vec!["s1".into(), "s2".into()],
            slots: [("s1".into(), 2), ("s2".into(), 1)].into(),
        },
    );
    let e = &mut evs;
    execution(
        e,
        at("a", 1, "s1"),
        (0, 4_000),
        &[(1, 1, "succeeded", 100, 4_000)],
        TaskOutcome::Succeeded,
        false,
    );
    execution(
        e,
        at("c", 1, "s1"),
        (500, 1_500),
        &[(1, 1, "failed", 600, 1_500)],
        TaskOutcome::Failed,
        true,
    );
    execution(
        e,
        at("c", 2, "s2"),
        (1_600, 2_600),
        &[(1, 1, "failed", 1_700, 2_600)],
        TaskOutcome::Failed,
        false,
    );
    for n in 0..250 {
        let line = format!("line {n}");
        let kind = RunEventKind::log_line(at("b", 1, "s1"), 1, "stdout", line);
        push(e, 4_300, kind);
    }
    execution(
        e,
        at("b", 1, "s1"),
        (4_100, 9_100),
        &[
            (1, 1, "retry", 4_200, 4_700),
            (1, 2, "succeeded", 4_800, 9_000),
        ],
        TaskOutcome::Succeeded,
        false,
    );
    let skipped = RunEventKind::TaskFinished {
        task: "d".into(),
        attempt: 0,
        sidecar: None,
        execution_id: None,
        status: TaskOutcome::Skipped,
        message: "c did not succeed".into(),
        duration_ms: 0,
        will_retry: false,
    };
    push(e, 9_150, skipped);
    let finished = RunEventKind::RunFinished {
        status: "failed",
        exit_code: 1,
        duration_ms: 9_200,
        summary: Vec::new(),
    };
    push(e, 9_200, finished);
    evs
}

fn push(evs: &mut Vec<RunEvent>, ms: i64, kind: RunEventKind) {
    evs.push(RunEvent::new("r1", T0 + ms, kind));
}

/// One execution from placement to its end, with (step, attempt, status, from, to) steps.
fn execution(
    evs: &mut Vec<RunEvent>,
    at: At,
    (from, to): (i64, i64),
    steps: &[(u32, u32, &'static str, i64, i64)],
    status: TaskOutcome,
    will_retry: bool,
) {
    push(evs, from, RunEventKind::TaskPlaced { at: at.clone() });
    for &(step, step_attempt, result, s_from, s_to) in steps {
        let step_name = format!("step{step}");
        let started = RunEventKind::StepStarted {
            at: at.clone(),
            step,
            step_name: step_name.clone(),
            step_attempt,
        };
        push(evs, s_from, started);
        let finished = RunEventKind::StepFinished {
            at: at.clone(),
            step,
            step_name,
            step_attempt,
            status: result,
            message: String::new(),
            duration_ms: (s_to - s_from) as u64,
        };
        push(evs, s_to, finished);
    }
    let finished = RunEventKind::TaskFinished {
        task: at.task.clone(),
        attempt: at.attempt,
        sidecar: Some(at.sidecar.clone()),
        execution_id: Some(at.execution_id.clone()),
        status,
        message: String::new(),
        duration_ms: (to - from) as u64,
        will_retry,
    };
    push(evs, to, finished);
}

fn known_timeline() -> (tempfile::TempDir, Timeline) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    store
        .create_run(&NewRun {
            run_id: "r1".into(),
            plan_name: "known".into(),
            plan_path: "plan.toml".into(),
            plan_text: PLAN.into(),
            fleet_path: None,
            started_ms: T0,
            tasks: ["a", "b", "c", "d"]
                .iter()
                .map(|t| (t.to_string(), format!("job-{t}")))
                .collect(),
        })
        .unwrap();
    let mut reporter = store.reporter().unwrap();
    for ev in known_run() {
        reporter.event(&ev);
    }
    reporter.finish();
    let timeline = build(&store, "r1", T0 + 60_000).unwrap();
    (dir, timeline)
}

#[test]
fn lanes_are_slots_and_bars_are_executions() {
    let (_dir, t) = known_timeline();
    let lanes: Vec<(&str, u32)> = t
        .lanes
        .iter()
        .map(|l| (l.sidecar.as_str(), l.slot))
        .collect();
    assert_eq!(lanes, vec![("s1", 1), ("s1", 2), ("s2", 1)]);
    let bars: Vec<(&str, u32, usize, i64, i64, &str, bool)> = t
        .bars
        .iter()
        .map(|b| {
            (
                b.task.as_str(),
                b.attempt,
                b.lane,
                b.start,
                b.end,
                b.status.as_str(),
                b.retried,
            )
        })
        .collect();
    assert_eq!(
        bars,
        vec![
            ("a", 1, 0, 0, 4_000, "succeeded", false),
            ("c", 1, 1, 500, 1_500, "failed", true),
            ("c", 2, 2, 1_600, 2_600, "failed", false),
            ("b", 1, 0, 4_100, 9_100, "succeeded", false),
        ]
    );
    let b = &t.bars[3];
    let steps: Vec<(u32, u32, &str, i64, i64)> = b
        .steps
        .iter()
        .map(|s| (s.step, s.attempt, s.status.as_str(), s.start, s.end))
        .collect();
    assert_eq!(
        steps,
        vec![
            (1, 1, "retry", 4_200, 4_700),
            (1, 2, "succeeded", 4_800, 9_000)
        ]
    );
    assert_eq!(
        (b.log.total, b.log.head.len(), b.log.tail.len()),
        (250, 100, 100)
    );
    assert_eq!(b.log.head[0].line, "line 0");
    assert_eq!(b.log.tail.last().unwrap().line, "line 249");
}

#[test]
fn totals_critical_path_and_tasks_that_did_not_run() {
    let (_dir, t) = known_timeline();
    let totals = &t.totals;
    assert_eq!(totals.makespan_ms, 9_200);
    assert_eq!(totals.total_work_ms, 11_000);
    assert_eq!(totals.slots, 3);
    assert_eq!(
        (totals.longest_task.as_str(), totals.longest_task_ms),
        ("b", 5_000)
    );
    assert_eq!(totals.critical_path_ms, 9_000);
    assert_eq!(
        (totals.lower_bound_ms, totals.bound_by),
        (9_000, "critical path")
    );
    assert_eq!((totals.retried, totals.step_retries), (1, 1));
    assert_eq!(
        totals.outcomes,
        [
            ("failed".to_owned(), 1),
            ("skipped".to_owned(), 1),
            ("succeeded".to_owned(), 2)
        ]
        .into()
    );
    assert_eq!(t.critical_path, vec!["a", "b"]);
    assert!(
        t.bars
            .iter()
            .filter(|b| b.critical)
            .all(|b| b.task == "a" || b.task == "b")
    );
    assert_eq!(t.unstarted.len(), 1);
    assert_eq!(
        (t.unstarted[0].task.as_str(), t.unstarted[0].status.as_str()),
        ("d", "skipped")
    );
    // s1: 4.0 + 1.0 + 5.0 s busy of 2 slots × 9.2 s.
    let s1 = &t.sidecars[0];
    assert_eq!((s1.slots, s1.lanes, s1.busy_ms), (2, 2, 10_000));
    assert!((s1.utilisation - 10_000.0 / 18_400.0).abs() < 1e-9);
}

#[test]
fn the_page_embeds_the_timeline() {
    let (_dir, t) = known_timeline();
    let page = html::render(&t);
    let data = html::embedded_json(&page).expect("the page embeds its data");
    assert_eq!(data["totals"]["makespan_ms"], 9_200);
    assert_eq!(data["bars"].as_array().unwrap().len(), 4);
    assert_eq!(data["critical_path"], serde_json::json!(["a", "b"]));
}

#[test]
fn text_lanes_fit_the_width_and_name_every_outcome() {
    let (_dir, t) = known_timeline();
    let text = text::render(&t, 80, false);
    for line in text.lines().skip(3).take(3) {
        assert_eq!(line.chars().count(), 80, "{line:?}");
    }
    assert!(text.contains("s1 1 │*a="), "{text}");
    assert!(text.contains("xx"), "failed bars are drawn with x: {text}");
    assert!(text.contains("critical     a → b (9.0s)"), "{text}");
    assert!(text.contains("retried      c #1 failed"), "{text}");
    assert!(text.contains("tasks        1 failed · 1 skipped · 2 succeeded · 4 executions, 1 retried, 1 step retries"), "{text}");
    assert!(
        text.contains("not run      d skipped: c did not succeed"),
        "{text}"
    );
    assert!(!text.contains('\x1b'));
    let colored = text::render(&t, 80, true);
    assert!(colored.contains("\x1b[42;30m"), "{colored}");
}

#[test]
fn a_steps_package_tasks_nest_in_its_step_bar() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let t0 = crate::report::ssis_sample::t0();
    store
        .create_run(&NewRun {
            run_id: "r1".into(),
            plan_name: "sales".into(),
            plan_path: "plan.toml".into(),
            plan_text: String::new(),
            fleet_path: None,
            started_ms: t0,
            tasks: vec![("load-sales".into(), "ETL - Load Sales".into())],
        })
        .unwrap();
    let mut reporter = store.reporter().unwrap();
    for ev in crate::report::ssis_sample::ssis_run() {
        reporter.event(&ev);
    }
    reporter.finish();
    let t = build(&store, "r1", t0 + 10_000).unwrap();
    let step = &t.bars[0].steps[0];
    // The step: 0.3s → 3.2s (its end event less its duration), in ms from the run's start.
    assert_eq!((step.start, step.end), (300, 3_200));
    let package = step.package.as_ref().expect("the step ran a package");
    assert_eq!(package.catalog_execution_id, Some(12345));
    assert_eq!(package.catalog_status.as_deref(), Some("failed"));
    let bars: Vec<(&str, &str, i64, i64, Option<u64>)> = package
        .sub_steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str(), s.start, s.end, s.rows))
        .collect();
    assert_eq!(
        bars,
        [
            ("Truncate", "succeeded", 500, 800, None),
            ("Copy rows", "failed", 900, 3_000, Some(2_500)),
            // Never finished: it ends with its step.
            ("Check", "running", 2_100, 3_200, None),
        ]
    );
    let text = text::render(&t, 80, false);
    assert!(
        text.contains(
            r"package      load-sales #1 step 1: catalog 12345 failed · 3 tasks: 1 failed, 1 running, 1 succeeded · failed \Load Sales\Copy rows: bad row"
        ),
        "{text}"
    );
    let data = html::embedded_json(&html::render(&t)).unwrap();
    assert_eq!(
        data["bars"][0]["steps"][0]["package"]["sub_steps"][1]["path"],
        r"\Load Sales\Copy rows"
    );
}
