//! `--json`: one object per line on stdout for every event, log lines included (the
//! contract's fields come from `RunEvent`'s serialization).
//!
//! A run can produce millions of log lines, so output goes through one large buffer and is
//! flushed on every state change (so a consumer sees progress at once), at most every
//! `LOG_FLUSH_INTERVAL` during a stream of log lines, and at the end.
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use super::Reporter;
use crate::events::{LogObject, RunEvent, RunEventKind};

const BUFFER: usize = 64 * 1024;
/// Log lines reach a consumer (`| jq`, a file being tailed) at least this often.
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Checking the clock on every log line is cheap, but not free: look every this many lines.
const LOG_LINES_PER_CLOCK_CHECK: u32 = 64;

pub struct JsonLines<W: Write + Send> {
    out: BufWriter<W>,
    last_flush: Instant,
    unflushed_logs: u32,
    /// Set when stdout is gone (e.g. `| head`): the run goes on, the output stops.
    closed: bool,
}

impl JsonLines<std::io::Stdout> {
    /// On stdout. (`Stdout` rather than a held `StdoutLock`, which is not `Send`; with the
    /// large buffer in front, the lock is taken once per 64 KiB, not per line.)
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(BUFFER, out),
            last_flush: Instant::now(),
            unflushed_logs: 0,
            closed: false,
        }
    }

    /// The writer, flushed. Panics if the final flush fails (tests only use `Vec`).
    pub fn into_inner(self) -> W {
        self.out
            .into_inner()
            .unwrap_or_else(|e| panic!("failed to flush JSON lines: {}", e.error()))
    }

    fn write(&mut self, ev: &RunEvent) -> std::io::Result<()> {
        match &ev.kind {
            // internal bookkeeping, not part of the --json contract
            RunEventKind::ExecutionSeq { .. } => Ok(()),
            RunEventKind::Log { lines, .. } => {
                for object in LogObject::of(ev) {
                    serde_json::to_writer(&mut self.out, &object)?;
                    self.out.write_all(b"\n")?;
                }
                self.unflushed_logs += lines.len() as u32;
                if self.unflushed_logs < LOG_LINES_PER_CLOCK_CHECK
                    || self.last_flush.elapsed() < LOG_FLUSH_INTERVAL
                {
                    return Ok(());
                }
                self.flush()
            }
            _ => {
                serde_json::to_writer(&mut self.out, ev)?;
                self.out.write_all(b"\n")?;
                self.flush()
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.unflushed_logs = 0;
        self.last_flush = Instant::now();
        self.out.flush()
    }
}

impl<W: Write + Send> Reporter for JsonLines<W> {
    fn event(&mut self, ev: &RunEvent) {
        if !self.closed && self.write(ev).is_err() {
            self.closed = true;
        }
    }

    fn finish(&mut self) {
        if !self.closed && self.flush().is_err() {
            self.closed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::sample_run;
    use serde_json::Value;

    fn parse(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_event_is_one_object_per_line_with_contract_fields() {
        let events = sample_run();
        let mut reporter = JsonLines::new(Vec::new());
        for ev in &events {
            reporter.event(ev);
        }
        reporter.finish();
        let objects = parse(&reporter.into_inner());
        // What we wrote is exactly each event's serialization, a log event's as one
        // object per line.
        let expected: Vec<(i64, Value)> = events
            .iter()
            .filter(|ev| !matches!(ev.kind, RunEventKind::ExecutionSeq { .. }))
            .flat_map(|ev| match ev.kind {
                RunEventKind::Log { .. } => LogObject::of(ev)
                    .map(|o| (ev.ts_ms, serde_json::to_value(o).unwrap()))
                    .collect::<Vec<_>>(),
                _ => vec![(ev.ts_ms, serde_json::to_value(ev).unwrap())],
            })
            .collect();
        assert_eq!(objects.len(), expected.len());
        for (obj, (ts_ms, want)) in objects.iter().zip(&expected) {
            assert_eq!(obj["ts"], crate::events::rfc3339(*ts_ms).as_str());
            assert_eq!(obj["run_id"], "r1");
            assert_eq!(obj, want);
        }
        let types: Vec<&str> = objects
            .iter()
            .map(|o| o["type"].as_str().unwrap())
            .collect();
        for t in [
            "run_started",
            "task_placed",
            "task_started",
            "step_started",
            "log",
            "step_finished",
            "task_finished",
            "run_finished",
        ] {
            assert!(types.contains(&t), "no {t} in {types:?}");
        }
        let log = objects.iter().find(|o| o["type"] == "log").unwrap();
        assert_eq!(log["stream"], "stdout");
        assert_eq!(log["line"], "rows: 42");
        assert_eq!(log["task"], "load-facts");
        assert_eq!(log["attempt"], 1);
        assert_eq!(log["sidecar"], "sql2");
        assert_eq!(log["execution_id"], "e1");
        assert_eq!(log["step"], 2);
        let finished = objects
            .iter()
            .find(|o| o["type"] == "run_finished")
            .unwrap();
        assert_eq!(finished["status"], "failed");
        assert_eq!(finished["duration_ms"], 6200);
    }

    #[test]
    fn a_log_event_of_many_lines_is_one_object_per_line_in_order() {
        let at = crate::events::At {
            task: "t".into(),
            attempt: 2,
            sidecar: "s1".into(),
            execution_id: "e1".into(),
        };
        let lines = ["one", "two", "three"].map(|l| crate::events::LogLine {
            step: 1,
            stream: "stderr",
            line: l.into(),
        });
        let ev = RunEvent::new(
            "r1",
            0,
            RunEventKind::Log {
                at,
                lines: lines.to_vec().into(),
            },
        );
        let mut reporter = JsonLines::new(Vec::new());
        reporter.event(&ev);
        reporter.finish();
        let out = reporter.into_inner();
        let text = std::str::from_utf8(&out).unwrap();
        let objects = parse(&out);
        assert_eq!(objects.len(), 3);
        for (obj, want) in objects.iter().zip(["one", "two", "three"]) {
            assert_eq!(obj["type"], "log");
            assert_eq!(obj["line"], want);
            assert_eq!(obj["stream"], "stderr");
            assert_eq!(obj["attempt"], 2);
            assert!(obj.get("lines").is_none(), "{obj}");
        }
        // The field order every object has: ts, run_id, type, then the fields that apply.
        assert!(
            text.starts_with(
                r#"{"ts":"1970-01-01T00:00:00.000Z","run_id":"r1","type":"log","task":"t","attempt":2,"sidecar":"s1","execution_id":"e1","step":1,"stream":"stderr","line":"one"}"#
            ),
            "{text}"
        );
    }

    /// A writer that records how many times it was flushed.
    #[derive(Default)]
    struct CountingFlushes {
        bytes: Vec<u8>,
        flushes: usize,
    }
    impl Write for CountingFlushes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn state_changes_flush_but_log_lines_do_not_each_flush() {
        let events = sample_run();
        let log = events
            .iter()
            .find(|e| matches!(e.kind, RunEventKind::Log { .. }))
            .unwrap();
        let placed = &events[1];
        let mut reporter = JsonLines::new(CountingFlushes::default());
        reporter.event(placed);
        assert_eq!(reporter.out.get_ref().flushes, 1);
        for _ in 0..10_000 {
            reporter.event(log);
        }
        // A fast stream of logs is written in buffer-sized chunks, not flushed per line.
        assert!(
            reporter.out.get_ref().flushes < 10,
            "{}",
            reporter.out.get_ref().flushes
        );
        reporter.finish();
        let out = reporter.into_inner();
        assert_eq!(out.bytes.iter().filter(|&&b| b == b'\n').count(), 10_001);
    }

    /// A writer that fails like a closed pipe.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_stdout_stops_output_quietly() {
        let mut reporter = JsonLines::new(Closed);
        for ev in sample_run() {
            reporter.event(&ev);
        }
        reporter.finish();
        assert!(reporter.closed);
    }
}
