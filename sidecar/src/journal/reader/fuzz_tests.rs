//! Property tests for bad journal input (issue 14, item 10): `scan` and `read_from` on
//! random bytes, torn, bit-flipped and over-long journals. The contract (module docs of
//! `journal` and `reader`): events are length-delimited, numbered 1, 2, 3, ... and end at
//! the Finished event; `scan` keeps the well-formed prefix and cuts the rest; `read_from`
//! leaves a record still being written for the next call and refuses a corrupt one.
//!
//! What these cannot check: a record carries no checksum, so a flipped bit inside a
//! string or number of an event can decode to a well-formed, wrong event. The checks on
//! corruption are therefore about framing and order, not about payload bytes.
use std::path::Path;

use agentfleet_common::proto::{self, Event, event::Kind};
use proptest::prelude::*;

use super::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (0u32..20).prop_map(|step_count| Kind::Started(proto::Started { step_count })),
        prop::collection::vec(".{0,40}", 0..4).prop_map(|lines| {
            Kind::Logs(proto::Logs {
                lines: lines
                    .into_iter()
                    .map(|line| proto::LogLine {
                        step_id: 1,
                        line,
                        ..Default::default()
                    })
                    .collect(),
            })
        }),
        (any::<u32>(), ".{0,20}").prop_map(|(step_id, step_name)| {
            Kind::StepStarted(proto::StepStarted {
                step_id,
                step_name,
                ..Default::default()
            })
        }),
    ]
}

/// A well-formed journal: events numbered from 1, the last one Finished when `finished`.
fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    (prop::collection::vec(arb_kind(), 0..12), any::<bool>()).prop_map(|(kinds, finished)| {
        let mut kinds = kinds;
        if finished {
            kinds.push(Kind::Finished(proto::Finished {
                outcome: proto::Outcome::Succeeded as i32,
                message: "done".into(),
            }));
        }
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                execution_id: "0190f4a2-7c1e-7000-8000-000000000001".into(),
                seq: i as u64 + 1,
                ts_ms: 1_700_000_000_000 + i as i64,
                kind: Some(kind),
            })
            .collect()
    })
}

/// The file's bytes and where each record starts (plus the end, as a last entry).
fn encode(events: &[Event]) -> (Vec<u8>, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut bounds = vec![0];
    for e in events {
        bytes.extend(e.encode_length_delimited_to_vec());
        bounds.push(bytes.len() as u64);
    }
    (bytes, bounds)
}

fn write_journal(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.pb");
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// Everything `read_from` returns from the start, in one go.
fn read_all(path: &Path) -> std::io::Result<(Vec<Event>, u64)> {
    read_from(path, 0, usize::MAX)
}

/// The scan's own invariants, whatever the file: its progress is the fold of the events
/// of the prefix it kept, numbered from 1 without gaps, and nothing after a Finished one.
fn check_scan(path: &Path, file_len: u64) -> Result<Scan, TestCaseError> {
    let scan = scan(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(scan.file_len, file_len);
    prop_assert!(scan.good_len <= scan.file_len);
    let kept = std::fs::read(path).unwrap()[..scan.good_len as usize].to_vec();
    let (_dir, prefix) = write_journal(&kept);
    let (events, end) = read_all(&prefix).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(end, scan.good_len, "the kept prefix is whole records");
    let mut progress = Progress::default();
    for (i, e) in events.iter().enumerate() {
        prop_assert_eq!(e.seq, i as u64 + 1);
        prop_assert!(
            progress.finished.is_none(),
            "an event after Finished was kept"
        );
        progress.observe(e);
    }
    prop_assert_eq!(&progress, &scan.progress);
    Ok(scan)
}

/// A length prefix (protobuf varint) for `len`.
fn varint(mut len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// A torn record that claims almost `MAX_RECORD` bytes must not reserve them: a watcher
/// re-reads the torn tail on every poll. Before `read_body`, the buffer was reserved at the
/// claimed length (64 MiB less one byte here) for the 10 bytes that are there.
#[test]
fn a_torn_record_reserves_only_what_it_reads() {
    let claimed = MAX_RECORD - 1;
    let mut tail: &[u8] = &[0u8; 10];
    let body = read_body(&mut tail, claimed).unwrap();
    assert_eq!(body.len(), 10);
    assert!(
        body.capacity() as u64 <= BODY_RESERVE,
        "reserved {} bytes for a 10-byte tail",
        body.capacity()
    );

    let mut file = varint(claimed);
    file.extend([0u8; 10]);
    let (_dir, path) = write_journal(&file);
    let scan = scan(&path).unwrap();
    assert_eq!((scan.good_len, scan.progress.last_seq), (0, 0));
    assert_eq!(read_all(&path).unwrap(), (Vec::new(), 0));
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let (_dir, path) = write_journal(&bytes);
        check_scan(&path, bytes.len() as u64)?;
        match read_all(&path) {
            Ok((_, end)) => prop_assert!(end <= bytes.len() as u64),
            Err(e) => prop_assert_eq!(e.kind(), std::io::ErrorKind::InvalidData),
        }
    }

    /// A journal cut anywhere (a crash mid-append) keeps exactly its whole records; the
    /// torn one is cut by the scan and left for later by `read_from`.
    #[test]
    fn a_torn_tail_is_cut_at_the_last_whole_record(
        events in arb_events(),
        cut in any::<prop::sample::Index>(),
    ) {
        let (bytes, bounds) = encode(&events);
        let cut = cut.index(bytes.len() + 1);
        let (_dir, path) = write_journal(&bytes[..cut]);
        let whole = bounds.iter().filter(|&&b| b <= cut as u64).count() - 1;
        let scan = check_scan(&path, cut as u64)?;
        prop_assert_eq!(scan.good_len, bounds[whole]);
        prop_assert_eq!(scan.progress.last_seq, whole as u64);
        let (read, end) = read_all(&path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&read[..], &events[..whole]);
        prop_assert_eq!(end, bounds[whole]);
        prop_assert_eq!(read_from(&path, end, usize::MAX).unwrap(), (Vec::new(), end));
    }

    /// A flipped byte never takes the records before it down, and the scan never keeps
    /// more events than were written or keeps one out of order.
    #[test]
    fn a_flipped_byte_keeps_the_records_before_it(
        events in arb_events().prop_filter("needs a record", |e| !e.is_empty()),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let (mut bytes, bounds) = encode(&events);
        let at = at.index(bytes.len());
        bytes[at] ^= mask;
        let (_dir, path) = write_journal(&bytes);
        // The record holding the flipped byte.
        let hit = bounds.iter().filter(|&&b| b <= at as u64).count() - 1;
        let scan = check_scan(&path, bytes.len() as u64)?;
        prop_assert!(scan.good_len >= bounds[hit], "a record before the flipped byte was cut");
        prop_assert!(scan.progress.last_seq >= hit as u64);
        prop_assert!(scan.progress.last_seq <= events.len() as u64);
        // The records before the flip come back as written, whatever follows them (a
        // budget of exactly their bytes stops `read_from` before the damaged one).
        let (read, end) = read_from(&path, 0, bounds[hit] as usize)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&read[..], &events[..hit]);
        prop_assert_eq!(end, bounds[hit]);
    }

    /// Whatever a record after the good ones claims as its length (4 GiB, the largest
    /// varint, just over or under the limit), nothing is allocated for it up front and the
    /// good records are kept.
    #[test]
    fn a_huge_declared_length_keeps_the_good_prefix(
        events in arb_events(),
        claimed in prop_oneof![
            Just(4u64 << 30),
            Just(u64::MAX),
            Just(MAX_RECORD + 1),
            Just(MAX_RECORD - 1),
            (MAX_RECORD + 1)..u64::MAX,
        ],
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (mut bytes, bounds) = encode(&events);
        let good = *bounds.last().unwrap();
        bytes.extend(varint(claimed));
        bytes.extend(&tail);
        let (_dir, path) = write_journal(&bytes);
        let scan = check_scan(&path, bytes.len() as u64)?;
        prop_assert_eq!(scan.good_len, good);
        prop_assert_eq!(scan.progress.last_seq, events.len() as u64);
        match read_all(&path) {
            // At most the limit: a record still being written, left for the next call.
            Ok((read, end)) => {
                prop_assert!(claimed <= MAX_RECORD);
                prop_assert_eq!(&read, &events);
                prop_assert_eq!(end, good);
            }
            Err(e) => {
                prop_assert!(claimed > MAX_RECORD, "{e}");
                prop_assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            }
        }
    }
}

proptest! {
    // Thirty distinct inputs: more cases would only repeat them.
    #![proptest_config(config(30))]

    /// An overlong length prefix (more than ten varint bytes) is corruption, not a record.
    #[test]
    fn an_overlong_length_prefix_is_corruption(extra in 10usize..40) {
        let mut bytes = vec![0x80u8; extra];
        bytes.push(0x01);
        let (_dir, path) = write_journal(&bytes);
        let scan = check_scan(&path, bytes.len() as u64)?;
        prop_assert_eq!(scan.good_len, 0);
        let err = read_all(&path).unwrap_err();
        prop_assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
