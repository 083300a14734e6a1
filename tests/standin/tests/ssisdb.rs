//! The simulated SSIS catalog through the sidecar's SSIS queries: polling, messages,
//! statistics, logging levels, start errors and retention, as a Windows principal (NTLM).

mod common;

use chrono::{DateTime, FixedOffset};
use common::ssis::*;
use common::*;
use tiberius::Row;

#[tokio::test]
async fn every_ssis_marker_is_served() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sidecar/src/backend/ssis/queries.rs"
    );
    let source = std::fs::read_to_string(path).unwrap();
    for part in source.split("= \"-- agentfleet:").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            sqlagent_standin::dispatch::SSIS_MARKERS.contains(&name.as_str()),
            "{name} is not served"
        );
    }
}

#[tokio::test]
async fn poll_follows_several_executions_to_their_end() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    let params = r#"[{"t":30,"n":"BatchSize","v":"500","ty":"Int32"},{"t":20,"n":"Region","v":"EU","ty":"String"}]"#;
    let ok = started(&start(&mut c, "Load.dtsx", 3, "agentfleet:one", params).await);
    let bad = started(&start(&mut c, "Broken.dtsx", 1, "agentfleet:two", "[]").await);
    assert!(bad > ok);
    wait_status(&mut c, ok, 7).await;
    wait_status(&mut c, bad, 4).await;
    let vanished = 987_654;
    let p = poll(
        &mut c,
        &[(bad, 0, 0, 0), (ok, 0, 0, 0), (vanished, 0, 0, 0)],
        0,
    )
    .await;
    // One status row per tracked id, ordered by id; the vanished one with a NULL status.
    assert_eq!(ids(&p[0], "execution_id"), [ok, bad, vanished]);
    assert_eq!(status_of(&p, vanished), None);
    let row = &p[0][0];
    assert_eq!(row.get::<&str, _>("package_name"), Some("Load.dtsx"));
    assert_eq!(row.get::<&str, _>("caller_name"), Some(r"CONTOSO\etl"));
    let end = row.get::<DateTime<FixedOffset>, _>("end_time").unwrap();
    assert_eq!(end.offset().local_minus_utc(), 7200, "server-local offset");
    assert!(row.get::<i32, _>("process_id").is_some());
    // Messages: ids increase, the Verbose run has diagnostics, the failed one an error.
    let msgs_ok: Vec<&Row> = p[1]
        .iter()
        .filter(|r| r.get::<i64, _>("execution_id") == Some(ok))
        .collect();
    let m_ids: Vec<i64> = msgs_ok
        .iter()
        .map(|r| r.get::<i64, _>("event_message_id").unwrap())
        .collect();
    assert!(m_ids.windows(2).all(|w| w[0] < w[1]), "{m_ids:?}");
    let types = |id: i64| -> Vec<i32> {
        p[1].iter()
            .filter(|r| r.get::<i64, _>("execution_id") == Some(id))
            .map(|r| r.get::<i32, _>("message_type").unwrap())
            .collect()
    };
    assert!(
        types(ok).contains(&90) && types(ok).contains(&110),
        "{:?}",
        types(ok)
    );
    assert!(
        types(bad).contains(&120) && !types(bad).contains(&90),
        "{:?}",
        types(bad)
    );
    let error = p[1]
        .iter()
        .find(|r| r.get::<i32, _>("message_type") == Some(120))
        .unwrap();
    assert_eq!(
        error.get::<&str, _>("message"),
        Some("Violation of PRIMARY KEY constraint.")
    );
    assert_eq!(
        error.get::<&str, _>("execution_path"),
        Some(r"\Broken\Merge")
    );
    assert_eq!(error.get::<&str, _>("event_name"), Some("OnError"));
    // Executable statistics: one complete row per finished task.
    let stats: Vec<(i64, Option<&str>, Option<i32>)> = p[2]
        .iter()
        .map(|r| {
            (
                r.get::<i64, _>("execution_id").unwrap(),
                r.get::<&str, _>("executable_name"),
                r.get::<i32, _>("execution_result"),
            )
        })
        .collect();
    assert_eq!(
        stats,
        [
            (ok, Some("Extract"), Some(0)),
            (ok, Some("Load"), Some(0)),
            (bad, Some("Extract"), Some(0)),
            (bad, Some("Merge"), Some(1))
        ]
    );
    assert!(p[2][0].get::<i32, _>("execution_duration").unwrap() >= 0);
    // Data-flow rows only for the Verbose execution.
    assert_eq!(p[3].len(), 1);
    assert_eq!(p[3][0].get::<i64, _>("execution_id"), Some(ok));
    assert_eq!(p[3][0].get::<i64, _>("rows_sent"), Some(1200));
    assert_eq!(
        p[3][0].get::<&str, _>("source_component_name"),
        Some("Orders")
    );
    // Watermarks: nothing new past the last ids.
    let last_msg = *m_ids.last().unwrap();
    let last_stat = p[2][1].get::<i64, _>("statistics_id").unwrap();
    let last_data = p[3][0].get::<i64, _>("data_stats_id").unwrap();
    let again = poll(&mut c, &[(ok, last_msg, last_stat, last_data)], 0).await;
    assert!(again[1].is_empty() && again[2].is_empty() && again[3].is_empty());
}

#[tokio::test]
async fn logging_levels_gate_messages_statistics_and_rows() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    let none = started(&start(&mut c, "Load.dtsx", 0, "t:none", "[]").await);
    let basic = started(&start(&mut c, "Load.dtsx", 1, "t:basic", "[]").await);
    let perf = started(&start(&mut c, "Load.dtsx", 2, "t:perf", "[]").await);
    for id in [none, basic, perf] {
        wait_status(&mut c, id, 7).await;
    }
    let p = poll(
        &mut c,
        &[(none, 0, 0, 0), (basic, 0, 0, 0), (perf, 0, 0, 0)],
        0,
    )
    .await;
    let types = |id: i64| -> Vec<i32> {
        p[1].iter()
            .filter(|r| r.get::<i64, _>("execution_id") == Some(id))
            .map(|r| r.get::<i32, _>("message_type").unwrap())
            .collect()
    };
    assert!(types(none).is_empty());
    assert!(types(basic).contains(&70) && !types(basic).contains(&90));
    assert_eq!(types(perf), [110]);
    assert!(
        p[2].iter()
            .all(|r| r.get::<i64, _>("execution_id") != Some(none))
    );
    assert!(p[3].is_empty(), "data statistics only at Verbose");
    let bad_level = start(&mut c, "Load.dtsx", 7, "t:bad", "[]").await;
    assert_eq!(err(&bad_level), (Some("params"), Some(27217)));
}

#[tokio::test]
async fn out_of_order_message_ids_need_the_tail_reread() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    s.catalog().hold_next_message();
    let id = started(&start(&mut c, "Load.dtsx", 1, "t:ooo", "[]").await);
    let held = wait_for("a held message", || async {
        s.catalog().held_messages().first().copied()
    })
    .await;
    let seen = wait_until!(
        "messages after the held id",
        async {
            let p = poll(&mut c, &[(id, 0, 0, 0)], 0).await;
            let m = ids(&p[1], "event_message_id");
            m.iter().any(|&m| m > held).then_some(m)
        }
        .await
    );
    assert!(
        !seen.contains(&held),
        "id {held} is not committed yet: {seen:?}"
    );
    let wm = *seen.last().unwrap();
    s.catalog().release_held_messages();
    let plain = poll(&mut c, &[(id, wm, 0, 0)], 0).await;
    assert!(
        !ids(&plain[1], "event_message_id").contains(&held),
        "a pure watermark skips it"
    );
    let tail = poll(&mut c, &[(id, wm, 0, 0)], wm - held + 1).await;
    assert!(
        ids(&tail[1], "event_message_id").contains(&held),
        "the tail re-read finds it"
    );
}

#[tokio::test]
async fn start_errors_come_back_as_a_row_with_the_stage() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    s.catalog().inject_create_timeouts(1);
    assert_eq!(
        err(&start(&mut c, "Load.dtsx", 1, "t:lock", "[]").await),
        (Some("create"), Some(27195))
    );
    // The failed create left an operation with status 4 and no execution.
    let failed = s
        .catalog()
        .lock()
        .operations
        .values()
        .filter(|o| o.operation_type == 200 && o.status == 4)
        .count();
    assert_eq!(failed, 1);
    assert_eq!(
        err(&start(&mut c, "Nope.dtsx", 1, "t:none", "[]").await),
        (Some("create"), Some(27146))
    );
    let r = start(
        &mut c,
        "Load.dtsx",
        1,
        "t:param",
        r#"[{"t":30,"n":"batchsize","v":"1","ty":"Int32"}]"#,
    )
    .await;
    assert_eq!(
        err(&r),
        (Some("params"), Some(27176)),
        "names are case-sensitive"
    );
    assert!(r.get::<i64, _>("execution_id").is_some());
    let r = start(
        &mut c,
        "Load.dtsx",
        1,
        "t:conv",
        r#"[{"t":30,"n":"BatchSize","v":"many","ty":"Int32"}]"#,
    )
    .await;
    assert_eq!(err(&r), (Some("params"), Some(245)));
    let r = start(
        &mut c,
        "Load.dtsx",
        1,
        "t:type",
        r#"[{"t":30,"n":"BatchSize","v":"x","ty":"String"}]"#,
    )
    .await;
    assert_eq!(err(&r), (Some("params"), Some(27147)));
    assert_eq!(
        err(&start(&mut c, "Required.dtsx", 1, "t:req", "[]").await),
        (Some("start"), Some(27184))
    );
    let ok = start(
        &mut c,
        "Required.dtsx",
        1,
        "t:req2",
        r#"[{"t":30,"n":"Target","v":"dw","ty":"String"}]"#,
    )
    .await;
    let id = started(&ok);
    // The token finds the execution again (idempotent retry after a lost answer).
    let found = rows(&mut c, &q("ssis_find_by_token"), &[&"t:req2"])
        .await
        .remove(0);
    assert_eq!(ids(&found, "execution_id"), [id]);
    assert!(rows(&mut c, &q("ssis_find_by_token"), &[&"t:absent"]).await[0].is_empty());
}

#[tokio::test]
async fn retention_deletes_ended_executions_with_their_rows() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    let done = started(&start(&mut c, "Load.dtsx", 3, "t:old", "[]").await);
    let running = started(&start(&mut c, "Forever.dtsx", 1, "t:run", "[]").await);
    wait_status(&mut c, done, 7).await;
    let deleted = s.catalog().cleanup(s.catalog().clock.now_offset());
    assert!(deleted >= 1);
    let p = poll(&mut c, &[(done, 0, 0, 0), (running, 0, 0, 0)], 0).await;
    assert_eq!(status_of(&p, done), None, "deleted: a NULL status row");
    assert!(
        status_of(&p, running).is_some(),
        "running executions are never deleted"
    );
    assert!(
        p[1].iter()
            .chain(&p[2])
            .chain(&p[3])
            .all(|r| r.get::<i64, _>("execution_id") != Some(done))
    );
}
