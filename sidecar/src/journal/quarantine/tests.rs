use agentfleet_common::proto::{self, event::Kind};

use crate::journal::{ExecutionRecord, Journal, reader};

fn record(id: &str) -> ExecutionRecord {
    ExecutionRecord {
        execution_id: id.into(),
        job: "job-a".into(),
        backend: "command".into(),
        run_id: "run1".into(),
        task: "t".into(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: 7,
        supervised: true,
        started_by: String::new(),
    }
}

/// The files of every directory in the quarantine, by name.
fn quarantined(journal: &Journal) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(journal.quarantine_dir()).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(f.path()).unwrap()));
        }
    }
    files.sort();
    files
}

/// A record that does not parse (corruption, or another sidecar version) is moved to the
/// quarantine, never deleted, and the execution is listed as LOST saying where it went.
#[test]
fn an_unparseable_record_is_quarantined_and_the_execution_lost() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    journal.create(&record("q1")).unwrap();
    let record_path = journal.dir("q1").join("execution.json");
    std::fs::write(
        &record_path,
        b"{\"execution_id\": \"q1\", \"job\": \"job-a\", \"acce",
    )
    .unwrap();
    let events = std::fs::read(journal.events_path("q1")).unwrap();

    let loaded = journal.load_all().unwrap();
    assert_eq!(loaded.len(), 1, "still listed");
    let finish = loaded[0].progress.finished.clone().expect("ended");
    assert_eq!(finish.outcome, proto::Outcome::Lost);
    assert!(
        finish.message.starts_with("journal unreadable, moved to ")
            && finish
                .message
                .contains(&journal.quarantine_dir().display().to_string()),
        "{}",
        finish.message
    );
    // Nothing deleted: the original files are in the quarantine, as they were.
    let kept = quarantined(&journal);
    let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"execution.json") && names.contains(&"events.pb"),
        "{names:?}"
    );
    assert!(kept.contains(&("events.pb".to_owned(), events)));

    // In its place, a journal that says so, read like any other from now on.
    let (on_disk, _) = reader::read_from(&journal.events_path("q1"), 0, usize::MAX).unwrap();
    assert_eq!(on_disk.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    assert!(matches!(on_disk[1].kind, Some(Kind::Finished(_))));
    let again = journal.load_all().unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].progress, loaded[0].progress);
    assert_eq!(
        std::fs::read_dir(journal.quarantine_dir()).unwrap().count(),
        1
    );
}

/// A newer version's record (valid JSON this version cannot read): what can be read of
/// it is kept, so a repeated StartJob for the same job finds the LOST execution.
#[test]
fn a_record_of_another_version_keeps_its_job_name() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    journal.create(&record("q2")).unwrap();
    std::fs::write(
        journal.dir("q2").join("execution.json"),
        br#"{"execution_id": "q2", "job": "job-a", "backend": "command", "attempt": "first", "accepted_at_ms": 7}"#,
    )
    .unwrap();
    let loaded = journal.load_all().unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].record.job, "job-a");
    assert_eq!(loaded[0].record.accepted_at_ms, 7);
    assert!(!loaded[0].record.supervised, "nothing to follow");
    assert_eq!(
        loaded[0].progress.finished.as_ref().map(|f| f.outcome),
        Some(proto::Outcome::Lost)
    );
}
