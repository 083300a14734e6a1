use super::*;

#[test]
fn the_fixture_loads() {
    let s = Schema::get();
    assert!(
        s.tables["msdb.dbo.sysjobhistory"]
            .columns
            .contains_key("instance_id")
    );
    assert!(
        s.procedures["msdb.dbo.sp_start_job"]
            .parameters
            .contains_key("@job_id")
    );
}

#[test]
fn a_wrong_column_or_parameter_gets_the_servers_error() {
    let ok = "SELECT h.instance_id FROM msdb.dbo.sysjobhistory AS h WHERE h.job_id = @P1;";
    let r = check(ok).unwrap();
    assert!(
        r.columns
            .contains(&("msdb.dbo.sysjobhistory".into(), "instance_id".into()))
    );
    let e = check("SELECT h.instanceid FROM msdb.dbo.sysjobhistory AS h;").unwrap_err();
    assert_eq!(
        (e.number, e.text.as_str()),
        (207, "Invalid column name 'instanceid'.")
    );
    let e = check("SELECT MAX(sessionid) FROM msdb.dbo.syssessions;").unwrap_err();
    assert_eq!(e.number, 207);
    let e = check("DECLARE @rc int; EXEC @rc = msdb.dbo.sp_start_job @jobid = @P1;").unwrap_err();
    assert_eq!(
        (e.number, e.text.as_str()),
        (
            8145,
            "@jobid is not a parameter for procedure sp_start_job."
        )
    );
    let e = check("SELECT 1 FROM msdb.dbo.sysjob;").unwrap_err();
    assert_eq!(e.number, 208);
}

#[test]
fn constructs_the_grammar_lacks_are_rewritten_and_said() {
    let r = check(
        "DECLARE @rc int, @x TABLE (a int);\nBEGIN TRY\n    EXEC @rc = msdb.dbo.sp_stop_job @job_id = @P1;\nEND TRY\nBEGIN CATCH\n    SET @rc = ERROR_NUMBER();\nEND CATCH;\nINSERT @x EXEC master.dbo.xp_sqlagent_enum_jobs 1, N'';",
    )
    .unwrap();
    assert!(r.notes.iter().any(|n| n.contains("TRY")), "{r:?}");
    assert!(r.notes.iter().any(|n| n.contains("return-status")), "{r:?}");
    assert!(
        r.notes.iter().any(|n| n.contains("INSERT @x EXEC")),
        "{r:?}"
    );
    assert!(r.unchecked.is_empty(), "{r:?}");
    assert!(
        r.parameters
            .contains(&("msdb.dbo.sp_stop_job".into(), "@job_id".into()))
    );
}

/// The catalogued texts of a sidecar `queries.rs` (`"-- agentfleet:…"` up to `";`).
fn catalogued_texts(source: &str) -> Vec<String> {
    source
        .split("= \"-- agentfleet:")
        .skip(1)
        .filter_map(|rest| {
            rest.find("\";")
                .map(|end| format!("-- agentfleet:{}", &rest[..end]))
        })
        .collect()
}

/// The sidecar's SSIS texts name only SSISDB objects, columns and parameters the fixture has
/// (skipped when the sidecar's source is absent).
#[test]
fn the_ssis_catalogue_checks_against_the_ssisdb_fixture() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sidecar/src/backend/ssis/queries.rs"
    );
    let Ok(source) = std::fs::read_to_string(path) else {
        return;
    };
    let texts = catalogued_texts(&source);
    assert!(texts.len() >= 6, "{}", texts.len());
    let mut checked = Vec::new();
    for t in &texts {
        let r = check(t).unwrap_or_else(|e| panic!("{}: {e:?}", t.lines().next().unwrap()));
        checked.extend(r.columns);
        checked.extend(r.parameters);
    }
    for needed in [
        ("ssisdb.catalog.event_messages", "event_message_id"),
        ("ssisdb.catalog.executable_statistics", "statistics_id"),
        ("ssisdb.catalog.execution_data_statistics", "rows_sent"),
        ("ssisdb.catalog.executions", "created_time"),
        ("ssisdb.catalog.stop_operation", "@operation_id"),
    ] {
        assert!(
            checked.contains(&(needed.0.to_string(), needed.1.to_string())),
            "{needed:?} was not checked"
        );
    }
}

#[test]
fn ssisdb_names_resolve_three_and_two_part() {
    let r = check("SELECT e.status FROM SSISDB.catalog.executions AS e;").unwrap();
    assert!(
        r.columns
            .contains(&("ssisdb.catalog.executions".into(), "status".into()))
    );
    let e = check("SELECT e.statuss FROM catalog.executions AS e;").unwrap_err();
    assert_eq!(
        (e.number, e.text.as_str()),
        (207, "Invalid column name 'statuss'.")
    );
    let e = check("SELECT 1 FROM SSISDB.catalog.execution;").unwrap_err();
    assert_eq!(e.number, 208);
    let e = check("EXEC SSISDB.catalog.start_executions @execution_id = 1;").unwrap_err();
    assert_eq!(e.number, 2812);
    let e = check("EXEC SSISDB.catalog.stop_operation @operationid = 1;").unwrap_err();
    assert_eq!(
        (e.number, e.text.as_str()),
        (
            8145,
            "@operationid is not a parameter for procedure stop_operation."
        )
    );
}
