//! Who may do what in the simulated SSIS catalog: Windows versus SQL logins, row-level
//! security, stopping, and SQL Server Agent SSIS steps creating catalog executions.

mod common;

use chrono::{DateTime, FixedOffset};
use common::ssis::*;
use common::*;
use sqlagent_standin::Standin;
use tiberius::EncryptionLevel;

#[tokio::test]
async fn row_level_security_hides_other_logins_executions() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    let id = started(&start(&mut c, "Forever.dtsx", 1, "t:rls", "[]").await);
    wait_status(&mut c, id, 2).await;
    let mut other = windows(&s, r"CONTOSO\other", "Other-pw-1").await.unwrap();
    let p = poll(&mut other, &[(id, 0, 0, 0)], 0).await;
    assert_eq!(status_of(&p, id), None, "invisible is absent, no error");
    assert!(p[1].is_empty() && p[2].is_empty());
    let stop = rows(&mut other, &q("ssis_stop"), &[&id])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(stop.get::<i32, _>("error_number"), Some(27143));
    assert_eq!(stop.get::<i32, _>("status"), None);
    let mut auditor = windows(&s, r"CONTOSO\auditor", "Audit-pw-1").await.unwrap();
    let p = poll(&mut auditor, &[(id, 0, 0, 0)], 0).await;
    assert_eq!(
        status_of(&p, id),
        Some(2),
        "ssis_logreader sees every execution"
    );
    assert!(!p[1].is_empty());
    let stop = rows(&mut auditor, &q("ssis_stop"), &[&id])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(
        stop.get::<i32, _>("error_number"),
        Some(27143),
        "logreader may not stop"
    );
    let v = rows(&mut auditor, &q("ssis_visibility"), &[])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(v.get::<i32, _>("is_ssis_logreader"), Some(1));
    assert_eq!(v.get::<i32, _>("is_windows_auth"), Some(1));
    assert_eq!(v.get::<&str, _>("nt_domain"), Some("CONTOSO"));
    assert_eq!(v.get::<&str, _>("database_name"), Some("SSISDB"));
    let mut admin = windows(&s, r"CONTOSO\admin", "Admin-pw-1").await.unwrap();
    let stop = rows(&mut admin, &q("ssis_stop"), &[&id])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(
        (stop.get::<i32, _>("rc"), stop.get::<i32, _>("error_number")),
        (Some(0), None)
    );
    let p = wait_status(&mut c, id, 3).await;
    assert_eq!(
        p[0][0].get::<&str, _>("stopped_by_name"),
        Some(r"CONTOSO\admin")
    );
}

#[tokio::test]
async fn sql_logins_are_refused_by_the_writing_procedures() {
    let s = ssis_standin().await;
    let mut sql = connect(&s).await;
    let r = start(&mut sql, "Load.dtsx", 1, "t:sql", "[]").await;
    assert_eq!(err(&r), (Some("create"), Some(27123)));
    assert_eq!(r.get::<i64, _>("execution_id"), None);
    assert!(
        r.get::<&str, _>("error_message")
            .unwrap()
            .contains("SQL Server Authentication")
    );
    let stop = rows(&mut sql, &q("ssis_stop"), &[&1i64])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(stop.get::<i32, _>("error_number"), Some(27123));
    let v = rows(&mut sql, &q("ssis_visibility"), &[])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(v.get::<i32, _>("is_windows_auth"), Some(0));
    assert_eq!(v.get::<i32, _>("is_sysadmin"), Some(1));
    // Reading works for a SQL login (sysadmin sees everything).
    let mut c = etl(&s).await;
    let id = started(&start(&mut c, "Load.dtsx", 1, "t:read", "[]").await);
    wait_status(&mut sql, id, 7).await;
    // A Windows principal cannot log in with SQL authentication, nor with a wrong password.
    assert!(
        connect_with(config(
            &s,
            r"CONTOSO\etl",
            "Etl-pw-1",
            EncryptionLevel::NotSupported
        ))
        .await
        .is_err()
    );
    let e = windows(&s, r"CONTOSO\etl", "wrong").await.err().unwrap();
    assert_eq!(e.code(), Some(18456), "{e}");
}

#[tokio::test]
async fn stop_while_running_cancels_and_while_pending_is_refused() {
    let s = ssis_standin().await;
    let mut c = etl(&s).await;
    let id = started(&start(&mut c, "Forever.dtsx", 1, "t:stop", "[]").await);
    wait_status(&mut c, id, 2).await;
    let stop = rows(&mut c, &q("ssis_stop"), &[&id])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(stop.get::<i32, _>("rc"), Some(0));
    assert_eq!(stop.get::<i32, _>("status"), Some(8));
    let again = rows(&mut c, &q("ssis_stop"), &[&id])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(
        again.get::<i32, _>("error_number"),
        Some(27126),
        "already stopping"
    );
    let p = wait_status(&mut c, id, 3).await;
    assert!(
        p[0][0]
            .get::<DateTime<FixedOffset>, _>("end_time")
            .is_some()
    );
    let canceled = poll(&mut c, &[(id, 0, 0, 0)], 0).await;
    assert_eq!(canceled[2][0].get::<i32, _>("execution_result"), Some(3));
    // Pending (5) cannot be stopped: 27124, the execution stays pending.
    let pending = started(&start(&mut c, "Queued.dtsx", 1, "t:pending", "[]").await);
    let stop = rows(&mut c, &q("ssis_stop"), &[&pending])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(stop.get::<i32, _>("error_number"), Some(27124));
    assert_eq!(stop.get::<i32, _>("error_severity"), Some(16));
    assert_eq!(stop.get::<i32, _>("status"), Some(5));
    // Stop operations are operations too: execution ids are not contiguous.
    let next = started(&start(&mut c, "Load.dtsx", 1, "t:next", "[]").await);
    assert!(next > pending + 1, "{pending} then {next}");
}

async fn agent_job(s: &Standin, name: &str) -> (Conn, tiberius::Uuid, DateTime<FixedOffset>) {
    let mut sql = connect(s).await;
    let job = s.agent().job_id(name).unwrap();
    let r = rows(&mut sql, "-- agentfleet:start_job", &[&job])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(r.get::<i32, _>("rc"), Some(0));
    let t0 = r.get::<DateTime<FixedOffset>, _>("server_now").unwrap();
    (sql, job, t0)
}

fn step_row(s: &Standin, job: tiberius::Uuid) -> Option<sqlagent_standin::agent::msdb::HistoryRow> {
    let h = s.agent().history(job);
    h.iter()
        .any(|r| r.step_id == 0)
        .then(|| h.into_iter().find(|r| r.step_id == 1))
        .flatten()
}

#[tokio::test]
async fn agent_ssis_steps_run_catalog_executions() {
    let s = ssis_standin().await;
    let (_sql, job, t0) = agent_job(&s, "SSIS Broken").await;
    let step = wait_for("the failed step's history", || async { step_row(&s, job) }).await;
    assert_eq!(step.run_status, 0);
    let m = &step.message;
    let at = m.find("Execution ID: ").expect(m) + 14;
    let id: i64 = m[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    assert!(
        m.contains(&format!("Execution ID: {id}, Execution Status:4.")),
        "{m}"
    );
    // The correlation query finds it for a login that may see Agent-created executions.
    let slack = t0 - chrono::Duration::seconds(5);
    let find = q("ssis_find_agent_execution");
    let none: Option<i64> = None;
    let mut auditor = windows(&s, r"CONTOSO\auditor", "Audit-pw-1").await.unwrap();
    let found = rows(
        &mut auditor,
        &find,
        &[
            &"ETL",
            &"Warehouse",
            &"Broken.dtsx",
            &slack,
            &r"CONTOSO\sqlagent",
            &none,
        ],
    )
    .await
    .remove(0);
    assert_eq!(ids(&found, "execution_id"), [id]);
    assert_eq!(found[0].get::<i32, _>("status"), Some(4));
    let later = t0 + chrono::Duration::minutes(5);
    let after = rows(
        &mut auditor,
        &find,
        &[
            &"ETL",
            &"Warehouse",
            &"Broken.dtsx",
            &later,
            &Option::<&str>::None,
            &none,
        ],
    )
    .await;
    assert!(after[0].is_empty(), "created before the window");
    let mut plain = etl(&s).await;
    let hidden = rows(
        &mut plain,
        &find,
        &[
            &"ETL",
            &"Warehouse",
            &"Broken.dtsx",
            &slack,
            &Option::<&str>::None,
            &none,
        ],
    )
    .await;
    assert!(
        hidden[0].is_empty(),
        "a plain login does not see the Agent's executions"
    );
    // A successful step.
    let (_sql, job, _) = agent_job(&s, "SSIS Load").await;
    let step = wait_for("the successful step's history", || async {
        step_row(&s, job)
    })
    .await;
    assert_eq!(step.run_status, 1, "{}", step.message);
    assert!(
        step.message.ends_with("The step succeeded."),
        "{}",
        step.message
    );
}

#[tokio::test]
async fn stopping_the_agent_job_cancels_its_catalog_execution() {
    let s = ssis_standin().await;
    let (mut sql, job, t0) = agent_job(&s, "SSIS Forever").await;
    let mut admin = windows(&s, r"CONTOSO\admin", "Admin-pw-1").await.unwrap();
    let find = q("ssis_find_agent_execution");
    let none: Option<i64> = None;
    let slack = t0 - chrono::Duration::seconds(5);
    let id = wait_until!(
        "the Agent's execution running",
        async {
            let f = rows(
                &mut admin,
                &find,
                &[
                    &"ETL",
                    &"Warehouse",
                    &"Forever.dtsx",
                    &slack,
                    &Option::<&str>::None,
                    &none,
                ],
            )
            .await;
            f[0].first()
                .filter(|r| r.get::<i32, _>("status") == Some(2))
                .and_then(|r| r.get::<i64, _>("execution_id"))
        }
        .await
    );
    let r = rows(&mut sql, "-- agentfleet:stop_job", &[&job])
        .await
        .remove(0)
        .remove(0);
    assert_eq!(r.get::<i32, _>("rc"), Some(0));
    wait_status(&mut admin, id, 3).await;
    let outcome = wait_for("the job's outcome", || async {
        s.agent().history(job).into_iter().find(|r| r.step_id == 0)
    })
    .await;
    assert_eq!(outcome.run_status, 3);
}
