use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const T0: i64 = 1_700_000_000_000;

fn tracker() -> CatalogTracker {
    CatalogTracker::new(
        1,
        CatalogIdent {
            execution_id: 42,
            server: "sql1".into(),
            folder: "F".into(),
            project: "P".into(),
            package: "Load.dtsx".into(),
        },
    )
}

fn status(s: i32) -> ExecStatus {
    ExecStatus {
        execution_id: 42,
        status: s,
        start_ms: Some(T0),
        end_ms: is_terminal(s).then_some(T0 + 10_000),
    }
}

fn msg(id: i64, time_ms: i64, message_type: i32, path: &str, text: &str) -> Message {
    Message {
        execution_id: 42,
        id,
        time_ms,
        message_type,
        source_type: 40,
        event_name: Some("OnSomething".into()),
        source_name: Some(path.rsplit('\\').next().unwrap_or("").to_string()),
        execution_path: Some(path.to_string()),
        message: text.to_string(),
    }
}

fn log_ids(out: &[Out]) -> Vec<i64> {
    out.iter()
        .filter_map(|o| match o {
            Out::Log { line, .. } => Some(line.catalog_message_id),
            _ => None,
        })
        .collect()
}

fn kinds(out: &[Out]) -> Vec<&Kind> {
    out.iter()
        .filter_map(|o| match o {
            Out::Event { kind, .. } => Some(kind),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_status_changes_sub_steps_and_messages() {
    let mut t = tracker();
    let out = t.discovered(5, T0);
    assert!(
        matches!(kinds(&out)[..], [Kind::CatalogExecution(c)] if c.status == 5 && c.catalog_execution_id == 42)
    );

    let st = status(2);
    let msgs = [
        msg(
            10,
            T0 + 100,
            message_type::PRE_EXECUTE,
            "\\Load\\Copy rows",
            "start",
        ),
        msg(
            11,
            T0 + 200,
            message_type::INFORMATION,
            "\\Load\\Copy rows",
            "copying",
        ),
        msg(12, T0 + 300, 60, "\\Load\\Copy rows", "progress 50%"),
    ];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 1000,
        messages: &msgs,
        ..Default::default()
    });
    assert_eq!(log_ids(&out), vec![11]);
    let k = kinds(&out);
    assert!(
        matches!(k[0], Kind::SubStepStarted(s) if s.path == "\\Load\\Copy rows" && s.name == "Copy rows" && s.started_at_ms == T0 + 100)
    );
    assert!(matches!(k[1], Kind::CatalogExecution(c) if c.status == 2));

    let stats = [Stat {
        execution_id: 42,
        id: 5,
        path: "\\Load\\Copy rows".into(),
        name: Some("Copy rows".into()),
        start_ms: Some(T0 + 100),
        end_ms: Some(T0 + 2100),
        duration_ms: 2000,
        result: 1,
    }];
    let err = [msg(
        13,
        T0 + 2000,
        message_type::ERROR,
        "\\Load\\Copy rows",
        "boom",
    )];
    let st = status(4);
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 3000,
        messages: &err,
        stats: &stats,
        ..Default::default()
    });
    assert_eq!(log_ids(&out), vec![13]);
    let k = kinds(&out);
    assert!(
        matches!(k[0], Kind::SubStepFinished(f) if f.status == proto::StepStatus::Failed as i32 && f.duration_ms == 2000 && f.started_at_ms == T0 + 100 && f.message == "boom")
    );
    assert!(matches!(k[1], Kind::CatalogExecution(c) if c.status == 4));
    assert!(!t.is_done(), "late messages are still looked for");
    let late = [msg(
        14,
        T0 + 2500,
        message_type::ERROR,
        "\\Load",
        "package failed",
    )];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 3000 + FINAL_SWEEP_MS,
        messages: &late,
        ..Default::default()
    });
    assert_eq!(log_ids(&out), vec![14]);
    assert!(!t.is_done(), "a poll that found something is not the last");
    t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 4000 + FINAL_SWEEP_MS,
        ..Default::default()
    });
    assert!(t.is_done());
    assert_eq!(t.outcome().unwrap().0, proto::Outcome::Failed);
}

#[test]
fn the_first_poll_names_the_execution_before_its_messages() {
    let mut t = tracker();
    let st = status(2);
    let msgs = [msg(3, T0, message_type::INFORMATION, "\\P\\T", "hello")];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0,
        messages: &msgs,
        ..Default::default()
    });
    assert!(matches!(&out[0], Out::Event { kind: Kind::CatalogExecution(c), .. } if c.status == 2));
    assert_eq!(log_ids(&out), vec![3]);
}

#[test]
fn the_journal_attributes_catalog_messages_to_their_execution() {
    use agentfleet_common::proto::event::Kind as K;
    let exec = |id: i64| {
        K::CatalogExecution(proto::CatalogExecution {
            step_id: 1,
            catalog_execution_id: id,
            status: 2,
            ..Default::default()
        })
    };
    let logs = |id: i64| {
        K::Logs(proto::Logs {
            lines: vec![proto::LogLine {
                step_id: 1,
                catalog_message_id: id,
                ..Default::default()
            }],
        })
    };
    let mut r = crate::backend::ResumeState::default();
    // Messages journaled in the same tick as (before) the status that names the execution.
    for k in [logs(5), exec(42), logs(6)] {
        r.observe(&k);
    }
    assert_eq!(r.catalog[&1].ident.execution_id, 42);
    assert_eq!(r.catalog[&1].message_ids, [5, 6].into());
    // A retried step's new execution starts afresh.
    for k in [exec(50), logs(9)] {
        r.observe(&k);
    }
    assert_eq!(r.catalog[&1].message_ids, [9].into());
}

#[test]
fn execution_results_map_to_sub_step_statuses() {
    for (result, expect) in [
        (0, proto::StepStatus::Succeeded),
        (1, proto::StepStatus::Failed),
        (2, proto::StepStatus::Succeeded),
        (3, proto::StepStatus::Canceled),
    ] {
        let mut t = tracker();
        let st = status(2);
        let stats = [Stat {
            execution_id: 42,
            id: 1,
            path: "\\P\\Loop[2]".into(),
            name: None,
            duration_ms: 5,
            result,
            ..Default::default()
        }];
        let out = t.observe(&Observation {
            status: Some(&st),
            polled_at_ms: T0,
            stats: &stats,
            ..Default::default()
        });
        assert!(
            matches!(kinds(&out)[1], Kind::SubStepFinished(f) if f.status == expect as i32 && f.name == "Loop")
        );
    }
}

#[test]
fn a_late_lower_id_is_found_and_a_half_written_message_waits() {
    let mut t = tracker();
    let st = status(2);
    let mut half = msg(20, T0, message_type::ERROR, "\\P\\T", "half");
    half.event_name = None;
    let first = [
        msg(21, T0, message_type::WARNING, "\\P\\T", "w"),
        half.clone(),
    ];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 10_000,
        messages: &first,
        ..Default::default()
    });
    assert_eq!(log_ids(&out), vec![21]);
    assert_eq!(
        t.watermarks().0,
        0,
        "the half-written 20 holds the watermark"
    );
    // 19 commits late; 20 is complete now.
    let second = [
        msg(19, T0, message_type::ERROR, "\\P\\T", "late"),
        msg(20, T0, message_type::ERROR, "\\P\\T", "whole"),
        first[0].clone(),
    ];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 11_000,
        messages: &second,
        ..Default::default()
    });
    assert_eq!(log_ids(&out), vec![19, 20]);
    assert_eq!(t.watermarks().0, 21);
}

#[test]
fn a_vanished_execution_is_lost() {
    let mut t = tracker();
    t.discovered(2, T0);
    for i in 0..3 {
        assert!(!t.is_done());
        t.observe(&Observation {
            status: None,
            polled_at_ms: T0 + i,
            ..Default::default()
        });
    }
    assert_eq!(t.outcome().unwrap().0, proto::Outcome::Lost);
}

#[test]
fn data_flow_rows_are_running_totals() {
    let mut t = tracker();
    let st = status(2);
    let d = |id, rows| DataStat {
        execution_id: 42,
        id,
        path: "\\P\\DFT".into(),
        data_flow_path: "OLE DB Source Output".into(),
        source: "src".into(),
        destination: "dst".into(),
        rows,
        time_ms: T0,
    };
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0,
        data: &[d(1, 100), d(2, 50)],
        ..Default::default()
    });
    assert!(
        matches!(kinds(&out)[..], [Kind::CatalogExecution(_), Kind::DataFlowRows(r)] if r.rows == 150)
    );
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 1,
        data: &[d(1, 100), d(2, 50), d(3, 10)],
        ..Default::default()
    });
    assert!(matches!(kinds(&out)[..], [Kind::DataFlowRows(r)] if r.rows == 160));
}

/// The rows a data flow moved and its end read in one poll: the rows come first, so that
/// whoever cuts the task's record at its end (the coordinator's sub_step span) has them.
#[test]
fn rows_read_with_a_tasks_end_come_before_it() {
    let mut t = tracker();
    let st = status(2);
    let rows = [DataStat {
        execution_id: 42,
        id: 1,
        path: "\\P\\DFT".into(),
        data_flow_path: "OLE DB Source Output".into(),
        source: "src".into(),
        destination: "dst".into(),
        rows: 2500,
        time_ms: T0 + 900,
    }];
    let stats = [Stat {
        execution_id: 42,
        id: 1,
        path: "\\P\\DFT".into(),
        name: Some("DFT".into()),
        start_ms: Some(T0),
        end_ms: Some(T0 + 1000),
        duration_ms: 1000,
        result: 0,
    }];
    let out = t.observe(&Observation {
        status: Some(&st),
        polled_at_ms: T0 + 1100,
        stats: &stats,
        data: &rows,
        ..Default::default()
    });
    assert!(
        matches!(
            kinds(&out)[..],
            [Kind::CatalogExecution(_), Kind::DataFlowRows(r), Kind::SubStepFinished(f)]
                if r.rows == 2500 && f.path == "\\P\\DFT"
        ),
        "{:?}",
        kinds(&out)
    );
}

/// A simulated catalog: message i (id `ids[i]`) is committed at `commit[i]` ms and shown
/// by polls from then on, `limit` rows at most per poll above the watermark.
fn visible(msgs: &[(Message, i64)], wm: i64, at: i64, limit: usize) -> Vec<Message> {
    let mut v: Vec<Message> = msgs
        .iter()
        .filter(|(m, commit)| *commit <= at && m.id > wm)
        .map(|(m, _)| m.clone())
        .collect();
    v.sort_by_key(|m| m.id);
    v.truncate(limit);
    v
}

fn resume_from(out: &[Out], ident: CatalogIdent) -> CatalogResume {
    let mut r = CatalogResume {
        ident,
        ..Default::default()
    };
    for o in out {
        match o {
            Out::Log { line, .. } => {
                r.message_ids.insert(line.catalog_message_id);
            }
            Out::Event {
                kind: Kind::CatalogExecution(c),
                ..
            } => r.status = c.status,
            Out::Event {
                kind: Kind::SubStepStarted(s),
                ..
            } => {
                r.started_paths.insert(s.path.clone());
            }
            _ => {}
        }
    }
    r
}

proptest! {
    /// Whatever the commit order (within the settle delay), the poll size and a restart,
    /// every logged message is shown exactly once and every task start once.
    #[test]
    fn every_message_exactly_once(
        delays in prop::collection::vec(0i64..SETTLE_MS - 100, 1..60),
        gaps in prop::collection::vec(1i64..4, 60),
        limit in 1usize..10,
        restart_at in prop::option::of(0usize..30),
    ) {
        let mut id = 0;
        let msgs: Vec<(Message, i64)> = delays.iter().enumerate().map(|(i, d)| {
            id += gaps[i];
            let time = T0 + (i as i64) * 150;
            let ty = if i % 4 == 0 { message_type::PRE_EXECUTE } else { message_type::ERROR };
            (msg(id, time, ty, &format!("\\P\\T{}", i / 4), "m"), time + d)
        }).collect();
        let mut t = tracker();
        let mut all = Vec::new();
        let st = status(2);
        for tick in 0..240usize {
            if Some(tick) == restart_at {
                let ident = t.ident.clone();
                t = CatalogTracker::new(1, ident.clone());
                t.restore(&resume_from(&all, ident));
            }
            let at = T0 + tick as i64 * 500;
            let rows = visible(&msgs, t.watermarks().0, at, limit);
            all.extend(t.observe(&Observation { status: Some(&st), polled_at_ms: at, messages: &rows, ..Default::default() }));
        }
        let mut shown = log_ids(&all);
        let expect: Vec<i64> = msgs.iter().filter(|(m, _)| m.message_type == message_type::ERROR).map(|(m, _)| m.id).collect();
        shown.sort_unstable();
        prop_assert_eq!(shown, expect);
        let starts: Vec<String> = kinds(&all).iter().filter_map(|k| match k { Kind::SubStepStarted(s) => Some(s.path.clone()), _ => None }).collect();
        let mut unique = starts.clone();
        unique.dedup();
        prop_assert_eq!(starts.len(), unique.len());
        prop_assert_eq!(starts.len(), delays.len().div_ceil(4));
        let statuses: BTreeMap<i32, usize> = kinds(&all).iter().filter_map(|k| match k { Kind::CatalogExecution(c) => Some(c.status), _ => None }).fold(BTreeMap::new(), |mut m, s| { *m.entry(s).or_default() += 1; m });
        prop_assert_eq!(statuses.get(&2).copied(), Some(1));
    }
}

#[test]
fn a_sub_step_without_statistics_ends_with_its_execution() {
    let mut t = tracker();
    t.discovered(2, T0);
    // The package and one task start; only the task gets a statistics row.
    let msgs = [
        msg(10, T0 + 50, message_type::PRE_EXECUTE, "\\Load", "package"),
        msg(
            11,
            T0 + 100,
            message_type::PRE_EXECUTE,
            "\\Load\\Copy",
            "task",
        ),
    ];
    let stats = [Stat {
        execution_id: 42,
        id: 5,
        path: "\\Load\\Copy".into(),
        name: Some("Copy".into()),
        start_ms: Some(T0 + 100),
        end_ms: Some(T0 + 900),
        duration_ms: 800,
        result: 0,
    }];
    let running = status(2);
    t.observe(&Observation {
        status: Some(&running),
        polled_at_ms: T0 + 1_000,
        messages: &msgs,
        stats: &stats,
        ..Default::default()
    });
    let ended = status(7);
    let finished = |out: &[Out]| -> Vec<proto::SubStepFinished> {
        kinds(out)
            .into_iter()
            .filter_map(|k| match k {
                Kind::SubStepFinished(f) => Some(f.clone()),
                _ => None,
            })
            .collect()
    };
    // At the terminal status the late messages are still swept: nothing is closed yet.
    let out = t.observe(&Observation {
        status: Some(&ended),
        polled_at_ms: T0 + 11_000,
        ..Default::default()
    });
    assert!(finished(&out).is_empty());
    let out = t.observe(&Observation {
        status: Some(&ended),
        polled_at_ms: T0 + 11_000 + FINAL_SWEEP_MS,
        ..Default::default()
    });
    assert!(t.is_done());
    let closed = finished(&out);
    assert_eq!(closed.len(), 1, "{closed:?}");
    let package = &closed[0];
    assert_eq!(package.path, "\\Load");
    assert_eq!(package.status, proto::StepStatus::Succeeded as i32);
    assert_eq!(package.started_at_ms, T0 + 50);
    // It ends when the execution ended (status(7) ends at T0 + 10 s).
    assert_eq!(package.duration_ms, 10_000 - 50);
}
