//! History-row → event mapping and step-flow bookkeeping of `Tracker`.
use super::*;
use crate::backend::sqlagent::rows::StepDef;
use chrono::{FixedOffset, TimeZone};
use tiberius::Uuid;

const JOB: Uuid = Uuid::from_u128(0x6F9619FF_8B86_D011_B42D_00C04FC964FF);

fn step(id: i32, name: &str, ok: i32, fail: i32, retries: i32) -> StepDef {
    StepDef {
        step_id: id,
        name: name.into(),
        subsystem: "TSQL".into(),
        on_success_action: ok,
        on_fail_action: fail,
        retry_attempts: retries,
        ..Default::default()
    }
}

fn job() -> JobDef {
    JobDef {
        job_id: JOB,
        name: "ETL - Load".into(),
        enabled: true,
        start_step_id: 1,
        job_type: 1,
        steps: vec![step(1, "extract", 3, 2, 1), step(2, "load", 1, 2, 0)],
        ..Default::default()
    }
}

fn hb(session: i32) -> Heartbeat {
    Heartbeat {
        agent_session_id: Some(session),
        server_now: Some(
            FixedOffset::east_opt(3600)
                .unwrap()
                .with_ymd_and_hms(2024, 3, 15, 9, 0, 0)
                .unwrap(),
        ),
        ..Default::default()
    }
}

fn row(id: i32, step_id: i32, status: i32, time: i32, dur: i32, msg: &str) -> History {
    History {
        instance_id: id,
        job_id: JOB,
        step_id,
        step_name: format!("s{step_id}"),
        run_status: status,
        run_date: 20240315,
        run_time: time,
        run_duration: dur,
        message: msg.into(),
        ..Default::default()
    }
}

fn tracker() -> Tracker {
    Tracker::new(job(), Some(7), None, 100, None, 0)
}

fn observe(
    t: &mut Tracker,
    hb: &Heartbeat,
    live: LiveView<'_>,
    activity: Option<&Activity>,
    rows: &[History],
    now_ms: i64,
) -> Vec<Out> {
    t.observe(&Observation {
        heartbeat: hb,
        live,
        activity,
        rows,
        now_ms,
    })
}

fn kinds(out: &[Out]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Out::Event {
                kind: Kind::Started(s),
                ..
            } => format!("started/{}", s.step_count),
            Out::Event {
                kind: Kind::StepStarted(s),
                ..
            } => format!("step_started/{}/{}", s.step_id, s.attempt),
            Out::Event {
                kind: Kind::StepFinished(s),
                ..
            } => format!("step_finished/{}/{}/{}", s.step_id, s.attempt, s.status),
            Out::Event {
                kind: Kind::Finished(f),
                ..
            } => format!("finished/{}", f.outcome),
            Out::Event { kind, .. } => format!("{kind:?}"),
            Out::Log { step_id, .. } => format!("log/{step_id}"),
        })
        .collect()
}

#[test]
fn a_run_finished_between_polls_is_reported_fully() {
    let mut t = tracker();
    let rows = [
        row(
            101,
            1,
            1,
            90000,
            5,
            "Executed as user: x. The step succeeded.",
        ),
        row(102, 2, 1, 90005, 10, "The step succeeded."),
        row(
            103,
            0,
            1,
            90000,
            15,
            "The job succeeded.  The Job was invoked by User agentfleet.",
        ),
        row(104, 1, 1, 91000, 1, "next run: not ours"),
    ];
    let out = observe(&mut t, &hb(7), LiveView::Infer, None, &rows, 1);
    assert_eq!(
        kinds(&out),
        [
            "started/2",
            "step_started/1/1",
            "log/1",
            "step_finished/1/1/1",
            "step_started/2/1",
            "log/2",
            "step_finished/2/1/1",
            "log/0",
            "finished/1"
        ]
    );
    assert_eq!(t.cursor, 103, "stops at the outcome row");
    // Times: run_time 09:00:00 at +01:00 is 08:00:00 UTC; duration from HHMMSS.
    let Out::Event {
        ts_ms,
        kind: Kind::StepFinished(sf),
    } = &out[3]
    else {
        panic!()
    };
    let start = chrono::Utc
        .with_ymd_and_hms(2024, 3, 15, 8, 0, 0)
        .unwrap()
        .timestamp_millis();
    assert_eq!(sf.started_at_ms, start);
    assert_eq!(sf.duration_ms, 5000);
    assert_eq!(*ts_ms, start + 5000);
}

#[test]
fn retries_count_attempts_and_failures_map() {
    let mut t = tracker();
    let rows = [
        row(101, 1, 2, 90000, 3, "The step failed (will retry)."),
        row(102, 1, 0, 90100, 3, "The step failed."),
        row(103, 0, 0, 90000, 103, "The job failed."),
    ];
    let out = observe(&mut t, &hb(7), LiveView::Infer, None, &rows, 1);
    let k = kinds(&out);
    assert!(k.contains(&"step_finished/1/1/3".to_string()), "{k:?}");
    assert!(k.contains(&"step_started/1/2".to_string()), "{k:?}");
    assert!(k.contains(&"step_finished/1/2/2".to_string()), "{k:?}");
    assert_eq!(k.last().unwrap(), "finished/2");
}

#[test]
fn live_step_then_its_row_do_not_repeat_step_started() {
    let mut t = tracker();
    let act = Activity {
        job_exists: true,
        run_requested_date: Some(
            chrono::NaiveDate::from_ymd_opt(2024, 3, 15)
                .unwrap()
                .and_hms_opt(9, 0, 0)
                .unwrap(),
        ),
        ..Default::default()
    };
    let live = Live {
        job_id: JOB,
        running: true,
        current_step: 1,
        current_retry_attempt: 0,
        job_state: 1,
        request_source: 4,
        request_source_id: None,
    };
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(Some(&live)),
        Some(&act),
        &[],
        1,
    );
    assert_eq!(kinds(&out), ["started/2", "step_started/1/1"]);
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(Some(&live)),
        Some(&act),
        &[],
        2,
    );
    assert!(out.is_empty());
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(None),
        Some(&act),
        &[row(101, 1, 1, 90000, 2, "ok")],
        3,
    );
    assert_eq!(kinds(&out), ["log/1", "step_finished/1/1/1"]);
}

#[test]
fn infers_the_next_step_from_the_flow_without_live_data() {
    let mut t = tracker();
    let d = chrono::NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
    let act = Activity {
        job_exists: true,
        run_requested_date: Some(d.and_hms_opt(9, 0, 0).unwrap()),
        start_execution_date: Some(d.and_hms_opt(9, 0, 0).unwrap()),
        ..Default::default()
    };
    let out = observe(&mut t, &hb(7), LiveView::Infer, Some(&act), &[], 1);
    assert_eq!(kinds(&out), ["started/2", "step_started/1/1"]);
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Infer,
        Some(&act),
        &[row(101, 1, 1, 90000, 2, "")],
        2,
    );
    // Step 1 succeeded with "go to next step": step 2 is running now.
    assert_eq!(kinds(&out), ["step_finished/1/1/1", "step_started/2/1"]);
}

#[test]
fn the_previous_runs_activity_row_is_not_ours() {
    let t = Tracker::new(
        job(),
        Some(7),
        None,
        100,
        Some(
            chrono::NaiveDate::from_ymd_opt(2024, 3, 15)
                .unwrap()
                .and_hms_opt(9, 0, 0)
                .unwrap(),
        ),
        0,
    );
    let d = chrono::NaiveDate::from_ymd_opt(2024, 3, 15).unwrap();
    let old = Activity {
        job_exists: true,
        run_requested_date: Some(d.and_hms_opt(8, 0, 0).unwrap()),
        stop_execution_date: Some(d.and_hms_opt(8, 1, 0).unwrap()),
        job_history_id: Some(90),
        ..Default::default()
    };
    assert!(!t.accepts(&old));
    // Same second as the previous run, but that run's outcome row is before the watermark.
    let same_second = Activity {
        run_requested_date: Some(d.and_hms_opt(9, 0, 0).unwrap()),
        job_history_id: Some(99),
        ..old.clone()
    };
    assert!(!t.accepts(&same_second));
    let ours = Activity {
        job_history_id: Some(120),
        ..same_second.clone()
    };
    assert!(t.accepts(&ours));
    let running = Activity {
        stop_execution_date: None,
        ..same_second
    };
    assert!(t.accepts(&running));
}

#[test]
fn agent_restart_engine_restart_and_deletion_end_as_lost() {
    let mut t = tracker();
    let out = observe(&mut t, &hb(8), LiveView::Infer, None, &[], 1);
    assert_eq!(kinds(&out), ["finished/5"]);
    assert!(
        observe(&mut t, &hb(8), LiveView::Infer, None, &[], 2).is_empty(),
        "exactly one Finished"
    );

    let mut t = tracker();
    let mut h = hb(7);
    h.server_started = Some(
        chrono::NaiveDate::from_ymd_opt(2024, 3, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );
    assert!(observe(&mut t, &h, LiveView::Infer, None, &[], 1).is_empty());
    h.server_started = Some(
        chrono::NaiveDate::from_ymd_opt(2024, 3, 15)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap(),
    );
    assert_eq!(
        kinds(&observe(&mut t, &h, LiveView::Infer, None, &[], 2)),
        ["finished/5"]
    );

    let mut t = tracker();
    let gone = Activity {
        job_exists: false,
        ..Default::default()
    };
    assert_eq!(
        kinds(&observe(
            &mut t,
            &hb(7),
            LiveView::Infer,
            Some(&gone),
            &[],
            1
        )),
        ["finished/5"]
    );
}

#[test]
fn a_graceful_agent_stop_reports_the_shutdown_outcome_not_lost() {
    let mut t = tracker();
    let rows = [
        row(101, 1, 3, 90000, 1, "The step was cancelled (stopped)."),
        row(
            102,
            0,
            3,
            90000,
            1,
            "The job was stopped prior to completion by Shutdown Sequence 0.",
        ),
    ];
    // Session already changed in the same tick: history is consumed first.
    let out = observe(&mut t, &hb(8), LiveView::Infer, None, &rows, 1);
    assert_eq!(kinds(&out).last().unwrap(), "finished/3");
}

/// `xp_sqlagent_enum_jobs` lags the history insert: the tick that reads step k's row can
/// still see step k running, for one tick or several. That must not reopen k and end the
/// run with a failed "recorded no result" step; a retry row is followed by the next attempt.
#[test]
fn a_stale_live_snapshot_after_a_steps_row_does_not_reopen_it() {
    let mut t = Tracker::new(
        JobDef {
            steps: vec![step(1, "only", 1, 2, 1)],
            ..job()
        },
        Some(7),
        None,
        100,
        None,
        0,
    );
    let live = |retry: i32| Live {
        job_id: JOB,
        running: true,
        current_step: 1,
        current_retry_attempt: retry,
        job_state: 1,
        request_source: 4,
        request_source_id: None,
    };
    let l0 = live(0);
    let out = observe(&mut t, &hb(7), LiveView::Enum(Some(&l0)), None, &[], 1);
    assert_eq!(kinds(&out), ["started/1", "step_started/1/1"]);
    // Attempt 1 fails and will be retried; the snapshot still shows attempt 1 (stale) ...
    let retry_row = row(101, 1, 2, 90000, 1, "retrying");
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(Some(&l0)),
        None,
        std::slice::from_ref(&retry_row),
        2,
    );
    assert_eq!(kinds(&out), ["log/1", "step_finished/1/1/3"]);
    // ... then attempt 2 (a fresh snapshot) opens it.
    let l1 = live(1);
    let out = observe(&mut t, &hb(7), LiveView::Enum(Some(&l1)), None, &[], 3);
    assert_eq!(kinds(&out), ["step_started/1/2"]);
    // Attempt 2 succeeds; the stale snapshot keeps showing it for two more ticks.
    let ok_row = row(102, 1, 1, 90002, 1, "done");
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(Some(&l1)),
        None,
        std::slice::from_ref(&ok_row),
        4,
    );
    assert_eq!(kinds(&out), ["log/1", "step_finished/1/2/1"]);
    let out = observe(&mut t, &hb(7), LiveView::Enum(Some(&l1)), None, &[], 5);
    assert!(out.is_empty(), "{:?}", kinds(&out));
    let out = observe(
        &mut t,
        &hb(7),
        LiveView::Enum(None),
        None,
        &[row(103, 0, 1, 90000, 3, "The job succeeded.")],
        6,
    );
    assert_eq!(kinds(&out), ["log/0", "finished/1"]);
}
