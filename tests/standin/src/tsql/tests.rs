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
