//! Reporters turn the run's events into output: live progress or plain lines for people
//! on stderr, JSON lines for programs on stdout, and the final summary table. They only
//! consume `RunEvent`s and never feed anything back into the run.
mod json;
mod live;
pub mod otel;
pub mod otel_logs;
mod otel_sub_steps;
mod package_line;
mod plain;
mod style;
pub mod summary;

pub use json::JsonLines;
pub use live::LiveReporter;
pub use plain::{Clock, PlainReporter};
pub(crate) use style::terminal_safe;

use crate::events::RunEvent;

/// A consumer of a run's events, called in order from one task.
pub trait Reporter: Send {
    fn event(&mut self, ev: &RunEvent);
    /// Called once at the end (also after an error): flush, clear the screen's bars.
    fn finish(&mut self) {}
}

/// How this process should report; see [`ReportOptions::detect`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportOptions {
    /// `--json`: one object per event on stdout.
    pub json: bool,
    /// stderr is a terminal: live progress bars instead of plain lines.
    pub terminal: bool,
    /// ANSI colour on stderr: `NO_COLOR` unset (or empty) and a terminal.
    pub color: bool,
    /// Show job log lines in the human output too (they are always in `--json` and the store).
    pub verbose_logs: bool,
}

impl ReportOptions {
    /// Terminal and colour from this process's stderr and `NO_COLOR` (https://no-color.org).
    pub fn detect(json: bool, verbose_logs: bool) -> Self {
        use std::io::IsTerminal;
        let terminal = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            json,
            terminal,
            color: terminal && !no_color,
            verbose_logs,
        }
    }
}

/// The reporters for `opts`: people always get stderr output (live on a terminal, plain
/// lines otherwise); `--json` adds JSON lines on stdout, so data and progress never mix.
pub fn reporters(opts: ReportOptions) -> Vec<Box<dyn Reporter>> {
    let mut out: Vec<Box<dyn Reporter>> = Vec::with_capacity(2);
    if opts.terminal {
        out.push(Box::new(LiveReporter::stderr(
            opts.color,
            opts.verbose_logs,
        )));
    } else {
        out.push(Box::new(PlainReporter::stderr(
            opts.verbose_logs,
            opts.color,
        )));
    }
    if opts.json {
        out.push(Box::new(JsonLines::stdout()));
    }
    // Spans and metrics, when this process exports telemetry.
    if let Some(otel) = otel::OtelReporter::when_enabled() {
        out.push(Box::new(otel));
    }
    // Job log lines as log records, when this process exports them.
    if let Some(logs) = otel_logs::LogRecords::when_enabled() {
        out.push(Box::new(logs));
    }
    out
}

/// Sends `ev` to every reporter.
pub fn broadcast(reporters: &mut [Box<dyn Reporter>], ev: &RunEvent) {
    for r in reporters.iter_mut() {
        r.event(ev);
    }
}

/// Finishes every reporter.
pub fn finish_all(reporters: &mut [Box<dyn Reporter>]) {
    for r in reporters.iter_mut() {
        r.finish();
    }
}

#[cfg(test)]
pub(crate) mod ssis_sample;

#[cfg(test)]
pub(crate) mod test_support {
    use crate::events::{At, RunEvent, RunEventKind, TaskOutcome, TaskSummary};

    /// A small run: load-facts on sql2 (a step retried once, a log line), report skipped.
    /// Starts at 2026-11-25T18:14:00Z.
    pub(crate) fn sample_run() -> Vec<RunEvent> {
        let t0 = chrono::NaiveDate::from_ymd_opt(2026, 11, 25)
            .unwrap()
            .and_hms_opt(18, 14, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let at = At {
            task: "load-facts".into(),
            attempt: 1,
            sidecar: "sql2".into(),
            execution_id: "e1".into(),
        };
        let finished = |step: u32, name: &str, step_attempt, status, message: &str, ms| {
            RunEventKind::StepFinished {
                at: at.clone(),
                step,
                step_name: name.into(),
                step_attempt,
                status,
                message: message.into(),
                duration_ms: ms,
            }
        };
        let ev = |ms: i64, kind| RunEvent::new("r1", t0 + ms, kind);
        vec![
            ev(
                0,
                RunEventKind::RunStarted {
                    plan: "nightly-etl".into(),
                    tasks: 2,
                    sidecars: vec!["sql1".into(), "sql2".into()],
                    slots: [("sql1".into(), 2), ("sql2".into(), 2)].into(),
                },
            ),
            ev(100, RunEventKind::TaskPlaced { at: at.clone() }),
            ev(
                200,
                RunEventKind::TaskStarted {
                    at: at.clone(),
                    step_count: 3,
                    started_by: "coordinator".into(),
                },
            ),
            ev(
                300,
                RunEventKind::StepStarted {
                    at: at.clone(),
                    step: 2,
                    step_name: "transform".into(),
                    step_attempt: 1,
                },
            ),
            ev(
                1_000,
                RunEventKind::log_line(at.clone(), 2, "stdout", "rows: 42"),
            ),
            ev(4_400, finished(2, "transform", 1, "succeeded", "", 4_100)),
            ev(5_000, finished(3, "load", 1, "retry", "exit code 3", 600)),
            ev(6_000, finished(3, "load", 2, "succeeded", "", 1_000)),
            ev(
                6_100,
                RunEventKind::TaskFinished {
                    task: "load-facts".into(),
                    attempt: 1,
                    sidecar: Some("sql2".into()),
                    execution_id: Some("e1".into()),
                    status: TaskOutcome::Succeeded,
                    message: String::new(),
                    duration_ms: 5_900,
                    will_retry: false,
                },
            ),
            ev(
                6_100,
                RunEventKind::TaskFinished {
                    task: "report".into(),
                    attempt: 0,
                    sidecar: None,
                    execution_id: None,
                    status: TaskOutcome::Skipped,
                    message: "stage-x did not succeed".into(),
                    duration_ms: 0,
                    will_retry: false,
                },
            ),
            ev(
                6_200,
                RunEventKind::RunFinished {
                    status: "failed",
                    exit_code: 1,
                    duration_ms: 6_200,
                    summary: vec![
                        TaskSummary {
                            task: "load-facts".into(),
                            sidecar: Some("sql2".into()),
                            attempts: 1,
                            duration_ms: 5_900,
                            status: TaskOutcome::Succeeded,
                            message: String::new(),
                        },
                        TaskSummary {
                            task: "report".into(),
                            sidecar: None,
                            attempts: 0,
                            duration_ms: 0,
                            status: TaskOutcome::Skipped,
                            message: "stage-x did not succeed".into(),
                        },
                    ],
                },
            ),
        ]
    }
}
