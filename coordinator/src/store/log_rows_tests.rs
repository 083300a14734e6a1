//! Log rows of many lines (`log_rows`): what goes in comes out line by line, numbered
//! without gaps, whatever page or excerpt is asked for.
use super::*;
use crate::events::{At, LogLine, RunEvent, RunEventKind};

fn at(execution_id: &str, task: &str) -> At {
    At {
        task: task.into(),
        attempt: 1,
        sidecar: "s1".into(),
        execution_id: execution_id.into(),
    }
}

/// Sends a log event of `lines` and its sequence mark (the writer keeps an execution's
/// events until the mark that says they were passed on).
fn send(writer: &Writer, at: At, lines: &[(u32, &'static str, &str)]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    writer.send(batch(at.clone(), lines));
    let seq = SEQ.fetch_add(1, Ordering::SeqCst) + 1;
    writer.send(RunEvent::new(
        "r1",
        5_000,
        RunEventKind::ExecutionSeq { at, seq },
    ));
}

fn batch(at: At, lines: &[(u32, &'static str, &str)]) -> RunEvent {
    let lines = lines
        .iter()
        .map(|&(step, stream, line)| LogLine {
            step,
            stream,
            line: line.into(),
        })
        .collect::<Vec<_>>()
        .into();
    RunEvent::new("r1", 5_000, RunEventKind::Log { at, lines })
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("home")).unwrap();
    store
        .create_run(&NewRun {
            run_id: "r1".into(),
            plan_name: "p".into(),
            plan_path: "p.toml".into(),
            plan_text: String::new(),
            fleet_path: None,
            started_ms: 0,
            tasks: vec![("a".into(), "job".into()), ("b".into(), "job".into())],
        })
        .unwrap();
    (dir, store)
}

fn rows(store: &Store) -> i64 {
    store
        .conn
        .query_row("SELECT count(*) FROM logs", [], |r| r.get(0))
        .unwrap()
}

fn texts(rows: &[LogRow]) -> Vec<String> {
    rows.iter().map(|r| r.line.clone()).collect()
}

#[test]
fn a_batch_is_few_rows_and_reads_back_line_by_line() {
    let (_dir, store) = open();
    let writer = store.writer().unwrap();
    let lines: Vec<String> = (0..3_000).map(|i| format!("line {i}")).collect();
    let refs: Vec<(u32, &'static str, &str)> =
        lines.iter().map(|l| (1, "stdout", l.as_str())).collect();
    send(&writer, at("e1", "a"), &refs);
    writer.close();
    // 3,000 lines of one step and stream: rows of at most MAX_ROW_LINES lines.
    assert_eq!(rows(&store), 3);
    let all = store.logs_after("r1", None, 0, 10_000).unwrap();
    assert_eq!(texts(&all), lines);
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "numbered without gaps"
    );
    assert!(
        all.iter()
            .all(|r| r.step == 1 && r.stream == "stdout" && r.ts_ms == 5_000)
    );
}

#[test]
fn pages_start_and_end_inside_a_row() {
    let (_dir, store) = open();
    let writer = store.writer().unwrap();
    let lines: Vec<String> = (0..50).map(|i| format!("l{i}")).collect();
    let refs: Vec<(u32, &'static str, &str)> =
        lines.iter().map(|l| (2, "stderr", l.as_str())).collect();
    send(&writer, at("e1", "a"), &refs);
    writer.close();
    assert_eq!(rows(&store), 1);
    // `logs --follow` pages by the last id it printed.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.logs_after("r1", Some("a"), after, 7).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 7);
        after = page.last().unwrap().id;
        seen.extend(texts(&page));
    }
    assert_eq!(seen, lines);
}

#[test]
fn steps_streams_newlines_and_empty_lines_survive() {
    let (_dir, store) = open();
    let writer = store.writer().unwrap();
    let input = [
        (1, "stdout", "a"),
        (1, "stdout", ""),
        (1, "stdout", "b"),
        (1, "stderr", "warn"),
        (2, "stderr", "two\nlines in one"),
        (2, "agent", "history"),
        (2, "agent", ""),
    ];
    send(&writer, at("e1", "a"), &input);
    // Another source between two batches of the first: each keeps its own lines.
    send(&writer, at("e2", "b"), &[(1, "stdout", "other")]);
    send(&writer, at("e1", "a"), &[(1, "stdout", "after")]);
    writer.close();
    let a = store.logs_after("r1", Some("a"), 0, 100).unwrap();
    let got: Vec<(u32, &str, &str)> = a
        .iter()
        .map(|r| (r.step, r.stream.as_str(), r.line.as_str()))
        .collect();
    let mut want = input.to_vec();
    want.push((1, "stdout", "after"));
    assert_eq!(got, want);
    let all = store.logs_after("r1", None, 0, 100).unwrap();
    assert_eq!(all.len(), 9);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(all[7].line, "other");
}

#[test]
fn excerpts_count_lines_and_cut_inside_rows() {
    let (_dir, store) = open();
    let writer = store.writer().unwrap();
    let lines: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
    let refs: Vec<(u32, &'static str, &str)> =
        lines.iter().map(|l| (1, "stdout", l.as_str())).collect();
    send(&writer, at("e1", "a"), &refs[..60]);
    send(&writer, at("e1", "a"), &refs[60..]);
    writer.close();
    let excerpts = store.log_excerpts("r1", 3, 4).unwrap();
    let e = &excerpts["e1"];
    assert_eq!(e.total, 100);
    let head: Vec<&str> = e.head.iter().map(|l| l.line.as_str()).collect();
    let tail: Vec<&str> = e.tail.iter().map(|l| l.line.as_str()).collect();
    assert_eq!(head, ["n0", "n1", "n2"]);
    assert_eq!(tail, ["n96", "n97", "n98", "n99"]);
}

#[test]
fn rows_written_before_version_5_read_as_before() {
    let (_dir, store) = open();
    let writer = store.writer().unwrap();
    send(
        &writer,
        at("e1", "a"),
        &[(1, "stdout", "new 1"), (1, "stdout", "new 2")],
    );
    writer.close();
    // An old row (one line each, `n` defaulted) with a '\n' in its text, then new rows
    // numbered after it.
    store
        .conn
        .execute_batch(
            "INSERT INTO logs (id, run, src, step, stream, line, ts_ms)
             SELECT 100, run, src, 1, 1, 'old
line', 1 FROM logs LIMIT 1;",
        )
        .unwrap();
    let writer = store.writer().unwrap();
    send(
        &writer,
        at("e1", "a"),
        &[(1, "stdout", "x"), (1, "stdout", "y")],
    );
    writer.close();
    let all = store.logs_after("r1", None, 0, 100).unwrap();
    assert_eq!(texts(&all), ["new 1", "new 2", "old\nline", "x", "y"]);
    assert_eq!(all[2].id, 100);
    assert_eq!(all[3].id, 101);
}
