//! Journal throughput: append 100 MB of 100-byte log lines through the real sink and
//! writer (numbering, coalescing into `Logs` events, one write per batch), then replay
//! them all through the Watch reader. Prints MB/s, lines/s and the peak RSS.
//!
//! `cargo bench -p agentfleet-sidecar --bench journal` (add `-- --mb 10` for a quick run).
use std::time::Instant;

use agentfleet_common::proto::{self, LogStream, event::Kind};
use agentfleet_sidecar::events::EventSink;
use agentfleet_sidecar::journal::{ExecutionRecord, Journal, reader, writer};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const LINE_BYTES: usize = 100;

fn main() {
    let mb: usize = std::env::args()
        .skip_while(|a| a != "--mb")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let lines = mb * 1024 * 1024 / LINE_BYTES;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(bench(lines));
    println!("peak RSS (VmHWM): {}", peak_rss());
}

async fn bench(lines: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal = Journal::open(dir.path()).expect("journal");
    let record = ExecutionRecord {
        execution_id: "bench".into(),
        job: "bench".into(),
        backend: "command".into(),
        run_id: String::new(),
        task: String::new(),
        attempt: 1,
        params: Default::default(),
        accepted_at_ms: agentfleet_common::now_ms(),
        supervised: false,
        started_by: String::new(),
    };
    let (file, progress) = journal.create(&record).expect("create");
    let (progress, _) = watch::channel(progress);
    let (sink, rx) = EventSink::channel("bench");
    let writer = writer::spawn(file, rx, progress.clone(), "bench".into());
    let payload_bytes = (lines * LINE_BYTES) as f64;

    let t0 = Instant::now();
    sink.emit(Kind::Started(proto::Started { step_count: 1 }))
        .await;
    for i in 0..lines {
        let mut line = format!("{i:>12} ");
        line.extend(std::iter::repeat_n('x', LINE_BYTES - line.len()));
        sink.log(1, LogStream::Stdout, line).await;
    }
    sink.emit(Kind::Finished(proto::Finished {
        outcome: proto::Outcome::Succeeded as i32,
        message: String::new(),
    }))
    .await;
    drop(sink);
    writer.await.expect("writer");
    let append = t0.elapsed().as_secs_f64();
    let on_disk = std::fs::metadata(journal.events_path("bench"))
        .expect("events file")
        .len();
    println!(
        "append: {lines} lines, {:.0} MB of lines ({:.0} MB on disk, {} events) in {append:.2}s: {:.1} MB/s, {:.0} lines/s",
        payload_bytes / 1e6,
        on_disk as f64 / 1e6,
        progress.borrow().last_seq,
        payload_bytes / 1e6 / append,
        lines as f64 / append
    );

    let t0 = Instant::now();
    let stream = reader::watch(
        journal.events_path("bench"),
        0,
        progress.subscribe(),
        CancellationToken::new(),
    );
    let replayed: usize = stream
        .map(|e| match e.expect("event").kind {
            Some(Kind::Logs(l)) => l.lines.len(),
            _ => 0,
        })
        .fold(0, |n, k| async move { n + k })
        .await;
    let replay = t0.elapsed().as_secs_f64();
    assert_eq!(replayed, lines, "every line replayed");
    println!(
        "watch replay: {replayed} lines in {replay:.2}s: {:.1} MB/s, {:.0} lines/s",
        payload_bytes / 1e6 / replay,
        replayed as f64 / replay
    );
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".into())
}
