//! SQL Server Agent behaviour through the catalogued queries, as the sidecar will see it.

mod common;

use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use common::*;
use sqlagent_standin::{FailMode, StopMode};
use tiberius::{Row, Uuid};

async fn rows(c: &mut Conn, sql: &str, params: &[&dyn tiberius::ToSql]) -> Vec<Vec<Row>> {
    c.query(sql, params)
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap()
}

async fn start(c: &mut Conn, job: Uuid) -> Row {
    let mut r = rows(c, "-- agentfleet:start_job\nSET NOCOUNT ON;", &[&job]).await;
    r.remove(0).remove(0)
}

async fn stop(c: &mut Conn, job: Uuid) -> Row {
    let mut r = rows(c, "-- agentfleet:stop_job", &[&job]).await;
    r.remove(0).remove(0)
}

/// Runs `poll` for one job; returns its four result sets.
async fn poll(c: &mut Conn, job: Uuid, after: i32) -> Vec<Vec<Row>> {
    let json = format!(
        r#"[{{"job_id":"{}","after_id":{after}}}]"#,
        job.to_string().to_uppercase()
    );
    rows(c, "-- agentfleet:poll", &[&json.as_str(), &1i32]).await
}

fn err_number(r: &Row) -> Option<i32> {
    r.get::<i32, _>("err_number")
}

/// Polls until the job's outcome row (step_id 0) appears; returns its history rows.
async fn history_until_outcome(c: &mut Conn, job: Uuid, after: i32) -> Vec<Row> {
    let mut all = Vec::new();
    let mut cursor = after;
    wait_until!(
        "the outcome row",
        async {
            let mut p = poll(c, job, cursor).await;
            let new = p.remove(3);
            if let Some(last) = new.last() {
                cursor = last.get::<i32, _>("instance_id").unwrap();
            }
            all.extend(new);
            all.iter()
                .any(|r| r.get::<i32, _>("step_id") == Some(0))
                .then_some(())
        }
        .await
    );
    all
}

#[tokio::test]
async fn start_then_activity_and_history_appear_in_order() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Quick").unwrap();
    let probe = rows(&mut c, "-- agentfleet:start_probe", &[&job])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(probe.get::<i32, _>("history_watermark"), Some(0));
    assert_eq!(probe.get::<i32, _>("running"), Some(0));
    let session = probe.get::<i32, _>("agent_session_id").unwrap();

    let r = start(&mut c, job).await;
    assert_eq!(r.get::<i32, _>("rc"), Some(0));
    assert_eq!(err_number(&r), None);
    assert_eq!(r.get::<i32, _>("agent_session_id"), Some(session));
    assert_eq!(r.get::<i32, _>("history_watermark"), Some(0));
    let t0 = r.get::<NaiveDateTime, _>("requested_not_before").unwrap();
    let now = r.get::<DateTime<FixedOffset>, _>("server_now").unwrap();
    assert_eq!(now.offset().local_minus_utc(), 7200);

    // Right after the start the activity row is still the previous (empty) one; then the
    // request, then the execution start are recorded.
    assert_eq!(poll(&mut c, job, 0).await.len(), 4);
    wait_until!(
        "run_requested_date",
        async {
            let c = &mut c;
            let p = poll(c, job, 0).await;
            let a = &p[2][0];
            let req = a.get::<NaiveDateTime, _>("run_requested_date")?;
            assert!(req >= t0);
            assert_eq!(a.get::<&str, _>("run_requested_source"), Some("4"));
            Some(())
        }
        .await
    );
    let hist = history_until_outcome(&mut c, job, 0).await;
    assert_eq!(hist.len(), 2);
    let step = &hist[0];
    assert_eq!(step.get::<i32, _>("step_id"), Some(1));
    assert_eq!(step.get::<&str, _>("step_name"), Some("only"));
    assert_eq!(step.get::<i32, _>("run_status"), Some(1));
    let msg = step.get::<&str, _>("message").unwrap();
    assert!(
        msg.contains("hello") && msg.ends_with("The step succeeded."),
        "{msg}"
    );
    let outcome = &hist[1];
    assert_eq!(outcome.get::<&str, _>("step_name"), Some("(Job outcome)"));
    assert_eq!(outcome.get::<i32, _>("run_status"), Some(1));
    let msg = outcome.get::<&str, _>("message").unwrap();
    assert!(
        msg.starts_with("The job succeeded.  The Job was invoked by User sidecar."),
        "{msg}"
    );
    assert!(
        msg.ends_with("The last step to run was step 1 (only)."),
        "{msg}"
    );
    // run_date/run_time are server-local (UTC+2) integers.
    let local = Utc::now() + chrono::Duration::hours(2);
    let run_date = outcome.get::<i32, _>("run_date").unwrap();
    let today = local.format("%Y%m%d").to_string().parse::<i32>().unwrap();
    assert!(
        run_date == today || run_date + 1 == today,
        "{run_date} vs {today}"
    );
    assert_eq!(outcome.get::<i32, _>("run_duration"), Some(0));
    let outcome_id = outcome.get::<i32, _>("instance_id").unwrap();

    let p = poll(&mut c, job, 0).await;
    let a = &p[2][0];
    assert!(a.get::<NaiveDateTime, _>("stop_execution_date").is_some());
    assert_eq!(a.get::<i32, _>("job_history_id"), Some(outcome_id));
    assert_eq!(a.get::<i32, _>("last_executed_step_id"), Some(1));
    assert_eq!(p[1][0].get::<i32, _>("job_state"), Some(4));

    // list_jobs' third result set now has the successful run.
    let l = rows(&mut c, "-- agentfleet:list_jobs", &[]).await;
    assert_eq!(l.len(), 3);
    assert!(l[2].iter().any(|r| r.get::<Uuid, _>("job_id") == Some(job)));
}

#[tokio::test]
async fn double_start_and_unknown_job() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Forever").unwrap();
    assert_eq!(start(&mut c, job).await.get::<i32, _>("rc"), Some(0));
    // By default the Agent's 22022 (raised inside xp_sqlagent_notify) escapes TRY/CATCH
    // and fails the whole request.
    let e = c
        .query("-- agentfleet:start_job", &[&job])
        .await
        .unwrap()
        .into_results()
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Some(22022));
    assert!(e.to_string().contains("refused because the job"), "{e}");
    // The variation: it is caught and returned as columns.
    s.agent().set_errors_escape_catch(false);
    let r = start(&mut c, job).await;
    assert_eq!(r.get::<i32, _>("rc"), None);
    assert_eq!(err_number(&r), Some(22022));
    let msg = r.get::<&str, _>("err_message").unwrap();
    assert!(
        msg.contains("refused because the job") && msg.contains("User sidecar"),
        "{msg}"
    );

    let unknown = Uuid::from_u128(42);
    let r = start(&mut c, unknown).await;
    assert_eq!(err_number(&r), Some(14262));
    assert!(r.get::<&str, _>("err_message").unwrap().contains("@job_id"));
    let r = stop(&mut c, unknown).await;
    assert_eq!(err_number(&r), Some(14262));

    // msdb's own errors are caught whatever the setting.
    s.agent().set_errors_escape_catch(true);
    assert_eq!(err_number(&start(&mut c, unknown).await), Some(14262));
}

#[tokio::test]
async fn a_queued_job_waits_for_a_worker_thread() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Queued").unwrap();
    assert_eq!(start(&mut c, job).await.get::<i32, _>("rc"), Some(0));
    wait_until!(
        "queued",
        async {
            let p = poll(&mut c, job, 0).await;
            let queued = p[2][0].get::<NaiveDateTime, _>("queued_date").is_some();
            let state = p[1].first().and_then(|r| r.get::<i32, _>("job_state"));
            (queued && state == Some(2)).then(|| {
                assert!(
                    p[2][0]
                        .get::<NaiveDateTime, _>("start_execution_date")
                        .is_none()
                );
            })
        }
        .await
    );
    let hist = history_until_outcome(&mut c, job, 0).await;
    assert_eq!(hist.len(), 2);
    let a = s.agent().activity(job).unwrap();
    assert!(a.queued_date.is_some() && a.start_execution_date.is_some());
}

#[tokio::test]
async fn retries_write_retry_rows_then_success() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Retrying").unwrap();
    assert_eq!(start(&mut c, job).await.get::<i32, _>("rc"), Some(0));
    let hist = history_until_outcome(&mut c, job, 0).await;
    let summary: Vec<(i32, i32, i32)> = hist
        .iter()
        .map(|r| {
            (
                r.get::<i32, _>("step_id").unwrap(),
                r.get::<i32, _>("run_status").unwrap(),
                r.get::<i32, _>("retries_attempted").unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(1, 2, 0), (1, 1, 1), (2, 1, 0), (0, 1, 0)]);
    assert_eq!(hist[0].get::<i32, _>("sql_message_id"), Some(50000));
    assert_eq!(hist[0].get::<i32, _>("sql_severity"), Some(16));
    assert!(
        hist[0]
            .get::<&str, _>("message")
            .unwrap()
            .contains("(Error 50000)")
    );
    assert_eq!(hist[1].get::<i32, _>("sql_message_id"), Some(0));
}

#[tokio::test]
async fn stop_job_ends_as_canceled() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Forever").unwrap();
    // The caught variation of the Agent's 22022 (by default it escapes TRY/CATCH).
    s.agent().set_errors_escape_catch(false);
    let r = stop(&mut c, job).await;
    assert_eq!(err_number(&r), Some(22022));
    assert!(
        r.get::<&str, _>("err_message")
            .unwrap()
            .contains("not currently running")
    );
    start(&mut c, job).await;
    wait_until!(
        "running",
        async {
            let c = &mut c;
            (poll(c, job, 0).await[1].first()?.get::<i32, _>("running") == Some(1)).then_some(())
        }
        .await
    );
    let p = poll(&mut c, job, 0).await;
    let live = &p[1][0];
    assert_eq!(live.get::<i32, _>("current_step"), Some(1));
    assert_eq!(live.get::<i32, _>("job_state"), Some(1));
    assert_eq!(live.get::<i32, _>("request_source"), Some(4));
    assert_eq!(live.get::<&str, _>("request_source_id"), Some(USER));
    assert!(p[3].is_empty(), "no history while the step runs");
    let r = stop(&mut c, job).await;
    assert_eq!((r.get::<i32, _>("rc"), err_number(&r)), (Some(0), None));
    let hist = history_until_outcome(&mut c, job, 0).await;
    assert_eq!(hist.len(), 2);
    assert_eq!(hist[0].get::<i32, _>("run_status"), Some(3));
    assert!(
        hist[0]
            .get::<&str, _>("message")
            .unwrap()
            .contains("stop job request")
    );
    let msg = hist[1].get::<&str, _>("message").unwrap();
    assert_eq!(hist[1].get::<i32, _>("run_status"), Some(3));
    assert!(
        msg.starts_with("The job was stopped prior to completion by User sidecar."),
        "{msg}"
    );
}

#[tokio::test]
async fn agent_restart_gives_a_new_session_and_leaves_ghosts() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Forever").unwrap();
    let old = start(&mut c, job)
        .await
        .get::<i32, _>("agent_session_id")
        .unwrap();
    wait_for("started", || async {
        s.agent().activity(job)?.start_execution_date.map(|_| ())
    })
    .await;

    s.restart_agent(StopMode::Crash);
    let p = poll(&mut c, job, 0).await;
    let new = p[0][0].get::<i32, _>("agent_session_id").unwrap();
    assert_eq!(new, old + 1);
    // The new session's activity row is empty; the old one stays open forever.
    assert!(
        p[2][0]
            .get::<NaiveDateTime, _>("run_requested_date")
            .is_none()
    );
    assert!(p[3].is_empty(), "a crash writes no outcome row");
    let ghost = s.agent().lock().msdb.activity(old, job).cloned().unwrap();
    assert!(ghost.start_execution_date.is_some() && ghost.stop_execution_date.is_none());
    // The job can be started again in the new session.
    assert_eq!(
        start(&mut c, job).await.get::<i32, _>("agent_session_id"),
        Some(new)
    );

    // A graceful stop cancels with "Shutdown Sequence 0".
    wait_for("started", || async {
        s.agent().activity(job)?.start_execution_date.map(|_| ())
    })
    .await;
    s.stop_agent(StopMode::Graceful);
    let hist = s.agent().history(job);
    let outcome = hist.last().unwrap();
    assert_eq!((outcome.step_id, outcome.run_status), (0, 3));
    assert!(outcome.message.contains("Shutdown Sequence 0"));
}

#[tokio::test]
async fn agent_down_starting_and_permissions() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let job = s.agent().job_id("Quick").unwrap();
    s.stop_agent(StopMode::Crash);
    // The caught variation of the Agent's 22022 (by default it escapes TRY/CATCH).
    s.agent().set_errors_escape_catch(false);
    let r = start(&mut c, job).await;
    assert_eq!(err_number(&r), Some(22022));
    assert_eq!(
        r.get::<&str, _>("err_message"),
        Some("SQLServerAgent is not currently running so it cannot be notified of this action.")
    );
    let info = rows(&mut c, "-- agentfleet:server_info", &[])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(info.get::<i32, _>("agent_service_status"), Some(1));
    assert_eq!(info.get::<i32, _>("agent_connected"), Some(0));
    assert_eq!(info.get::<&str, _>("login_name"), Some(USER));

    s.agent().set_startup_time(Duration::from_millis(500));
    s.start_agent();
    assert_eq!(err_number(&start(&mut c, job).await), Some(14258));
    wait_for("agent running", || async {
        (s.agent().status() == sqlagent_standin::AgentStatus::Running).then_some(())
    })
    .await;
    assert_eq!(start(&mut c, job).await.get::<i32, _>("rc"), Some(0));

    // A reader may start only its own jobs; the jobs here belong to sa.
    let mut reader = connect_with(config(
        &s,
        "reader",
        "pw",
        tiberius::EncryptionLevel::NotSupported,
    ))
    .await
    .unwrap();
    let forever = s.agent().job_id("Forever").unwrap();
    assert_eq!(err_number(&start(&mut reader, forever).await), Some(14393));
    let perms = rows(&mut reader, "-- agentfleet:check_permissions", &[])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(perms.get::<i32, _>("is_agent_reader"), Some(1));
    assert_eq!(perms.get::<i32, _>("can_enum_jobs"), Some(0));
    let p = poll(&mut reader, forever, 0).await;
    assert_eq!(p[0][0].get::<i32, _>("enum_jobs_error"), Some(229));
    assert_eq!(p[0][0].get::<i32, _>("agent_connected"), None);

    s.agent().set_execute_denied(true);
    assert_eq!(err_number(&start(&mut c, forever).await), Some(229));
}

#[tokio::test]
async fn catalogue_shapes_and_failures() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let names = rows(&mut c, "-- agentfleet:job_names", &[]).await.remove(0);
    let names: Vec<&str> = names
        .iter()
        .map(|r| r.get::<&str, _>("name").unwrap())
        .collect();
    assert_eq!(names, ["Forever", "Queued", "Quick", "Retrying"]);
    let r = rows(&mut c, "-- agentfleet:resolve_job", &[&"quick "]).await;
    assert_eq!(r[0].len(), 1);
    let j = &r[0][0];
    assert_eq!(j.get::<&str, _>("description"), Some("one fast step"));
    assert_eq!(j.get::<i32, _>("enabled"), Some(1));
    assert_eq!(j.get::<i32, _>("job_type"), Some(1));
    assert_eq!(r[1][0].get::<i32, _>("on_success_action"), Some(1));
    assert_eq!(r[1][0].get::<i32, _>("on_fail_action"), Some(2));
    let bad = c
        .query("-- agentfleet:poll", &[&"[", &0i32])
        .await
        .unwrap()
        .into_results()
        .await;
    assert_eq!(bad.err().unwrap().code(), Some(13609));
    let missing = c.query("-- agentfleet:start_job", &[]).await.err().unwrap();
    assert_eq!(missing.code(), Some(137));
    let unknown = c.query("-- agentfleet:nope", &[]).await.err().unwrap();
    assert!(unknown.to_string().contains("unknown marker"));
    s.fail_next(1, FailMode::Disconnect);
    assert!(c.query("-- agentfleet:job_names", &[]).await.is_err());
}

/// Every marker in the sidecar's catalogue is served (skipped when the file is absent).
#[test]
fn every_catalogued_marker_is_served() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sidecar/src/backend/sqlagent/queries.rs"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for line in text.lines() {
        let Some(i) = line.find("\"-- agentfleet:") else {
            continue;
        };
        let name: String = line[i + 15..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        assert!(
            sqlagent_standin::dispatch::MARKERS.contains(&name.as_str()),
            "marker {name:?} is not served"
        );
    }
}

/// A catalogued batch naming a column msdb does not have fails as a real server's would.
#[tokio::test]
async fn a_wrong_column_fails_the_batch_with_207() {
    let s = standin().await;
    let mut c = connect(&s).await;
    let e = c
        .query(
            "-- agentfleet:job_names\nSET NOCOUNT ON;\nSELECT j.nam FROM msdb.dbo.sysjobs_view AS j ORDER BY j.name;",
            &[],
        )
        .await;
    // tiberius reports an error that precedes every result set from `query` itself.
    let e = match e {
        Err(e) => e,
        Ok(stream) => stream.into_results().await.expect_err("an error"),
    };
    assert_eq!(e.code(), Some(207));
    assert!(e.to_string().contains("Invalid column name 'nam'."), "{e}");
}
