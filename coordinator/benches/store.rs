//! Store write throughput: 1M log lines of 100 bytes through the batched writer, as a run
//! would send them (a sequence mark after every 100 lines, like a sidecar batch), then
//! MB/s of log text, the database size, and the process's peak resident memory.
//!
//! `cargo bench -p agentfleet-coordinator --bench store` (optionally `-- LINES`).
use std::time::Instant;

use agentfleet_coordinator::events::{At, RunEvent, RunEventKind};
use agentfleet_coordinator::store::{NewRun, Store};

const LINE_BYTES: usize = 100;
const LINES_PER_MARK: u64 = 100;

fn main() {
    let lines: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = Store::open(dir.path()).expect("open the store");
    let run_id = "bench";
    store
        .create_run(&NewRun {
            run_id: run_id.into(),
            plan_name: "bench".into(),
            plan_path: "bench.toml".into(),
            plan_text: String::new(),
            fleet_path: None,
            started_ms: agentfleet_common::now_ms(),
            tasks: vec![("load".into(), "ETL - Load".into())],
        })
        .expect("record the run");
    let at = At {
        task: "load".into(),
        attempt: 1,
        sidecar: "sql1".into(),
        execution_id: agentfleet_common::ids::new_execution_id(),
    };
    let event = |kind| RunEvent::new(run_id, agentfleet_common::now_ms(), kind);
    let line = "x".repeat(LINE_BYTES);

    let started = Instant::now();
    let writer = store.writer().expect("start the writer");
    writer.send(event(RunEventKind::TaskPlaced { at: at.clone() }));
    for i in 1..=lines {
        writer.send(event(RunEventKind::log_line(
            at.clone(),
            1,
            "stdout",
            line.clone(),
        )));
        if i % LINES_PER_MARK == 0 || i == lines {
            writer.send(event(RunEventKind::ExecutionSeq {
                at: at.clone(),
                seq: i,
            }));
        }
    }
    let stats = writer.close();
    let elapsed = started.elapsed().as_secs_f64();

    let mb = (lines as usize * LINE_BYTES) as f64 / 1e6;
    let db_mb = ["agentfleet.db", "agentfleet.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / 1e6;
    println!("store bench: {lines} log lines of {LINE_BYTES} bytes ({mb:.0} MB of text)");
    println!(
        "  {elapsed:.2} s, {:.1} MB/s, {:.0} lines/s, {} batches, {} lost",
        mb / elapsed,
        lines as f64 / elapsed,
        stats.batches,
        stats.lost_events
    );
    println!("  database {db_mb:.0} MB, peak RSS {}", peak_rss());
}

/// The process's peak resident set size (VmHWM), where /proc has it.
fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l["VmHWM:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown (no /proc)".into())
}
