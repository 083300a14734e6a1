//! Property tests for loading damaged executions at start-up (issue 14, item 10): a
//! record that is random, cut or fine, next to events that are random, torn, bit-flipped
//! or fine. Loading never panics and lists the execution once; a readable record loads
//! read-only with the scan's progress (its events file not changed by a byte); an
//! unreadable one is quarantined with its files intact and listed as LOST.
use agentfleet_common::proto::{self, Event, event::Kind};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::journal::EVENTS_FILE;

const ID: &str = "0190f4a2-7c1e-7000-8000-000000000001";

fn record() -> ExecutionRecord {
    ExecutionRecord {
        execution_id: ID.into(),
        job: "job-a".into(),
        backend: "command".into(),
        run_id: "run1".into(),
        task: "t".into(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: 1,
        supervised: false,
        started_by: String::new(),
    }
}

/// Well-formed events (Accepted, then log lines), numbered from 1.
fn journal_bytes(lines: &[String]) -> Vec<u8> {
    let accepted = Kind::Accepted(proto::Accepted {
        job: "job-a".into(),
        backend: "command".into(),
    });
    let logs = lines.iter().map(|line| {
        Kind::Logs(proto::Logs {
            lines: vec![proto::LogLine {
                step_id: 1,
                line: line.clone(),
                ..Default::default()
            }],
        })
    });
    std::iter::once(accepted)
        .chain(logs)
        .enumerate()
        .flat_map(|(i, kind)| {
            Event {
                execution_id: ID.into(),
                seq: i as u64 + 1,
                ts_ms: 1,
                kind: Some(kind),
            }
            .encode_length_delimited_to_vec()
        })
        .collect()
}

/// Bytes for a file: a valid one as is, cut, with a byte flipped, or random instead.
fn arb_damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    let (cut_from, flip_from) = (valid.clone(), valid.clone());
    prop_oneof![
        Just(valid),
        (0..=len).prop_map(move |cut| cut_from[..cut].to_vec()),
        (0..len.max(1), 1u8..=255).prop_map(move |(at, mask)| {
            let mut bytes = flip_from.clone();
            if let Some(b) = bytes.get_mut(at) {
                *b ^= mask;
            }
            bytes
        }),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

fn arb_files() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let record = serde_json::to_vec(&record()).unwrap();
    let events = prop::collection::vec(".{0,30}", 0..8).prop_map(|lines| journal_bytes(&lines));
    (arb_damaged(record), events.prop_flat_map(arb_damaged))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 128,
        ..ProptestConfig::default()
    })]

    #[test]
    fn damaged_executions_load_read_only_or_go_to_the_quarantine(
        (record_bytes, events_bytes) in arb_files(),
    ) {
        let state = tempfile::tempdir().unwrap();
        let journal = Journal::open(state.path()).unwrap();
        std::fs::create_dir_all(journal.dir(ID)).unwrap();
        std::fs::write(journal.dir(ID).join(RECORD_FILE), &record_bytes).unwrap();
        std::fs::write(journal.events_path(ID), &events_bytes).unwrap();

        let loaded = journal.load_all().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(loaded.len(), 1);
        let loaded = &loaded[0];
        match serde_json::from_slice::<ExecutionRecord>(&record_bytes) {
            Ok(parsed) => {
                let scan = reader::scan(&journal.events_path(ID)).unwrap();
                prop_assert_eq!(&loaded.record, &parsed);
                prop_assert_eq!(&loaded.progress, &scan.progress);
                prop_assert_eq!(loaded.len, scan.good_len);
                prop_assert_eq!(std::fs::read(journal.events_path(ID)).unwrap(), events_bytes);
            }
            Err(_) => {
                let finished = loaded.progress.finished.as_ref();
                prop_assert_eq!(finished.map(|f| f.outcome), Some(proto::Outcome::Lost));
                let moved: Vec<_> = std::fs::read_dir(journal.quarantine_dir())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
                prop_assert_eq!(moved.len(), 1, "quarantined once");
                prop_assert_eq!(std::fs::read(moved[0].join(RECORD_FILE)).unwrap(), record_bytes);
                prop_assert_eq!(std::fs::read(moved[0].join(EVENTS_FILE)).unwrap(), events_bytes);
            }
        }
    }
}
