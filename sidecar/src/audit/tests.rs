use super::*;

fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn only_declared_non_secret_values_are_shown() {
    let given = params(&[
        ("BUSINESS_DATE", "2026-11-24"),
        ("PASSWORD", "hunter2"),
        ("UNDECLARED", "maybe-a-secret"),
    ]);
    let shown: BTreeSet<String> = ["BUSINESS_DATE".to_owned()].into();
    let redacted = redact(&given, &shown);
    assert_eq!(
        redacted,
        params(&[
            ("BUSINESS_DATE", "2026-11-24"),
            ("PASSWORD", REDACTED),
            ("UNDECLARED", REDACTED),
        ])
    );
    // Unknown job: nothing is shown.
    let none = redact(&given, &BTreeSet::new());
    assert!(none.values().all(|v| v == REDACTED), "{none:?}");
}

#[test]
fn a_line_is_one_json_object_with_the_call_the_caller_and_the_answer() {
    let mut entry = Entry::now("StartJob", "coordinator", "127.0.0.1:5000", Answer::Created);
    entry.execution_id = "e1".into();
    entry.job = "etl".into();
    entry.params = redact(&params(&[("PASSWORD", "hunter2")]), &BTreeSet::new());
    let line = entry.line();
    assert!(
        line.ends_with('\n') && !line.trim_end().contains('\n'),
        "{line}"
    );
    assert!(!line.contains("hunter2"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["call"], "StartJob");
    assert_eq!(v["caller"], "coordinator");
    assert_eq!(v["peer"], "127.0.0.1:5000");
    assert_eq!(v["execution_id"], "e1");
    assert_eq!(v["job"], "etl");
    assert_eq!(v["params"]["PASSWORD"], REDACTED);
    assert_eq!(v["answer"]["result"], "created");
    assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{v}");
    // Empty fields are left out.
    assert!(v.get("reason").is_none(), "{v}");

    let refused = Entry::now(
        "StartJob",
        "certificate `intruder` (serial 0a)",
        "127.0.0.1:5001",
        Answer::refused(&tonic::Status::permission_denied("not in allow_clients")),
    );
    let v: serde_json::Value = serde_json::from_str(&refused.line()).unwrap();
    assert_eq!(v["answer"]["result"], "refused");
    assert_eq!(v["answer"]["code"], "PERMISSION_DENIED");
    assert_eq!(v["answer"]["message"], "not in allow_clients");
    assert_eq!(
        code_name(tonic::Code::Unauthenticated),
        "UNAUTHENTICATED",
        "gRPC's spelling"
    );
}

#[test]
fn the_log_is_private_appended_and_rotated_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    let entry = Entry::now("StopJob", "coordinator", "unix", Answer::Stopping);
    let line_len = entry.line().len() as u64;
    // Room for two lines: the third starts a new file.
    let log = AuditLog::with_limit(path.clone(), line_len * 2);
    log.record(&entry);
    log.record(&entry);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    log.record(&entry);
    let rotated = dir.path().join(ROTATED_FILE);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        2
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

    // A second log on the same file (a restarted sidecar) appends, never truncates.
    let again = AuditLog::with_limit(path.clone(), line_len * 10);
    again.record(&entry);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
}

#[test]
fn a_local_caller_is_named_by_its_uid() {
    assert_eq!(Caller::local(Some(1000)).0, "local uid 1000");
    assert_eq!(Caller::local(None).0, "local");
}
