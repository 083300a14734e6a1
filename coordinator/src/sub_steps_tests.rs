use super::*;
use crate::events::SubStepFinished;
use crate::report::ssis_sample::{at, ssis_run, t0};

fn fold(events: &[crate::events::RunEvent]) -> Vec<StepPackage> {
    let mut packages = Packages::default();
    for ev in events {
        packages.apply(&ev.kind);
    }
    packages.into_vec()
}

#[test]
fn a_package_folds_into_its_catalog_execution_and_sub_steps() {
    let packages = fold(&ssis_run());
    assert_eq!(packages.len(), 1);
    let p = &packages[0];
    assert_eq!(
        (p.execution_id.as_str(), p.step, p.step_attempt),
        ("e1", 1, 1)
    );
    let catalog = p.catalog.as_ref().unwrap();
    assert_eq!(catalog.catalog_execution_id, 12345);
    assert_eq!(catalog.status, "failed", "the last status wins");
    let names: Vec<(&str, &str)> = p
        .sub_steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("Truncate", "succeeded"),
            ("Copy rows", "failed"),
            ("Check", "running")
        ]
    );
    let copy = &p.sub_steps[1];
    assert_eq!(copy.started_at_ms, Some(t0() + 900));
    assert_eq!(copy.duration_ms, Some(2_100));
    assert_eq!(copy.message, "bad row");
    // A running total: the latest replaces the earlier one.
    assert_eq!(copy.rows.len(), 1);
    assert_eq!(copy.rows[0].rows, 2_500);
    assert_eq!(copy.rows_max(), Some(2_500));
    assert_eq!(p.finished_counts(), (2, 1));
    assert_eq!(p.running().count(), 1);
}

#[test]
fn a_sub_step_reported_only_once_finished_is_placed_by_its_start() {
    // A catalog at a low logging level: no start events, finishes in any order.
    let finished = |name: &str, from: i64| {
        RunEventKind::SubStepFinished(Box::new(SubStepFinished {
            at: at(),
            step: 1,
            step_attempt: 2,
            path: format!(r"\P\{name}"),
            name: name.into(),
            status: "succeeded".into(),
            started_at_ms: from,
            duration_ms: 10,
            message: String::new(),
        }))
    };
    let mut packages = Packages::default();
    packages.apply(&finished("second", 200));
    packages.apply(&finished("first", 100));
    assert!(packages.get("e1", 1, 1).is_none(), "another step attempt");
    assert_eq!(packages.get("e1", 1, 2).unwrap().sub_steps.len(), 2);
    let list = packages.into_vec();
    let names: Vec<&str> = list[0].sub_steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["first", "second"]);
}

#[test]
fn forgetting_an_execution_keeps_the_others_reachable() {
    let mut packages = Packages::default();
    for ev in ssis_run() {
        packages.apply(&ev.kind);
    }
    let mut other = ssis_run();
    for ev in &mut other {
        if let RunEventKind::SubStepStarted(s) = &mut ev.kind {
            s.at.execution_id = "e2".into();
            packages.apply(&ev.kind);
        }
    }
    let gone = packages.remove_execution("e1");
    assert_eq!(gone.len(), 1);
    assert!(packages.get("e1", 1, 1).is_none());
    assert_eq!(packages.get("e2", 1, 1).unwrap().sub_steps.len(), 3);
}
