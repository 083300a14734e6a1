//! Plain timestamped lines on stderr, for when stderr is not a terminal (CI, schedulers,
//! `2> file`): one line per state change, no cursor movement, log lines only when asked.
//!
//! ```text
//! 18:14:04.123 load-facts@sql2 step 2/3 "transform" succeeded in 4.1s
//! 18:14:05.000 load-sales@sql1 step 1/1 › \Load Sales\Copy rows failed in 2.1s, 2500 rows: bad row
//! ```
//!
//! A step that runs an SSIS package also gets a line per catalog status and per package
//! task (sub-step) start and end; data-flow rows only show in the task's end line.
use std::collections::HashMap;
use std::io::Write;

use super::Reporter;
use super::style::{
    Color, duration_ms, one_line, outcome_color, outcome_text, paint, step_label, step_status_text,
    terminal_safe,
};
use crate::events::{At, RunEvent, RunEventKind, TaskOutcome};
use crate::sub_steps::Packages;

/// Which clock the line timestamps use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The machine's time zone: what people reading a log next to other logs expect.
    Local,
    /// UTC, as in the event's `ts` (deterministic, for tests).
    Utc,
}

/// Longest message on a line; the store and `--json` keep the full text.
const MESSAGE_MAX: usize = 200;

pub struct PlainReporter<W: Write + Send> {
    out: W,
    verbose_logs: bool,
    color: bool,
    clock: Clock,
    /// Step count per execution, from `task_started`, for "step n/m".
    step_counts: HashMap<String, u32>,
    /// SSIS packages of the running executions (for a task's rows when it ends).
    packages: Packages,
}

impl PlainReporter<std::io::Stderr> {
    pub fn stderr(verbose_logs: bool, color: bool) -> Self {
        Self::new(std::io::stderr(), verbose_logs, color, Clock::Local)
    }
}

impl<W: Write + Send> PlainReporter<W> {
    pub fn new(out: W, verbose_logs: bool, color: bool, clock: Clock) -> Self {
        Self {
            out,
            verbose_logs,
            color,
            clock,
            step_counts: HashMap::new(),
            packages: Packages::default(),
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    /// The text of `ev` after the timestamp, or `None` when it is not shown.
    fn text(&mut self, ev: &RunEvent) -> Option<String> {
        let c = self.color;
        // The rows of a finished sub-step, from the data-flow events before it.
        let rows = self.packages.apply(&ev.kind).and_then(|p| match &ev.kind {
            RunEventKind::SubStepFinished(s) => p
                .sub_steps
                .iter()
                .find(|x| x.path == s.path)
                .and_then(|x| x.rows_max()),
            _ => None,
        });
        Some(match &ev.kind {
            RunEventKind::ExecutionSeq { .. } | RunEventKind::DataFlowRows(_) => return None,
            RunEventKind::CatalogExecution(e) => format!(
                "{} {} catalog execution {} on {} ({}\\{}\\{}) {}",
                where_(&e.at),
                self.step(&e.at, e.step),
                e.catalog_execution_id,
                e.server,
                e.folder,
                e.project,
                e.package,
                e.status
            ),
            RunEventKind::SubStepStarted(s) => format!(
                "{} {} › {} started",
                where_(&s.at),
                self.step(&s.at, s.step),
                terminal_safe(&s.path)
            ),
            RunEventKind::SubStepFinished(s) => {
                let rows = rows.map(|n| format!(", {n} rows")).unwrap_or_default();
                let color = if s.status == "succeeded" {
                    Color::Green
                } else {
                    Color::Red
                };
                format!(
                    "{} {} › {} {} in {}{rows}{}",
                    where_(&s.at),
                    self.step(&s.at, s.step),
                    terminal_safe(&s.path),
                    paint(c, color, step_status_text(&s.status)),
                    duration_ms(s.duration_ms),
                    message_suffix(&s.message)
                )
            }
            RunEventKind::RunStarted {
                plan,
                tasks,
                sidecars,
                ..
            } => format!(
                "run {} started: plan \"{plan}\", {tasks} task{} on {} sidecar{} ({})",
                ev.run_id,
                plural(*tasks),
                sidecars.len(),
                plural(sidecars.len()),
                sidecars.join(", ")
            ),
            RunEventKind::TaskPlaced { at } => {
                format!(
                    "{} placed on {}{}",
                    at.task,
                    at.sidecar,
                    attempt_note(at.attempt)
                )
            }
            RunEventKind::TaskStarted { at, step_count, .. } => {
                self.step_counts
                    .insert(at.execution_id.clone(), *step_count);
                format!(
                    "{} started{}, {step_count} step{} (execution {})",
                    where_(at),
                    attempt_note(at.attempt),
                    plural(*step_count as usize),
                    at.execution_id
                )
            }
            RunEventKind::StepStarted {
                at,
                step,
                step_name,
                step_attempt,
            } => format!(
                "{} {} \"{step_name}\" started{}",
                where_(at),
                self.step(at, *step),
                attempt_note(*step_attempt)
            ),
            RunEventKind::StepFinished {
                at,
                step,
                step_name,
                step_attempt,
                status,
                message,
                duration_ms: ms,
            } => {
                let color = match *status {
                    "succeeded" => Color::Green,
                    "retry" => Color::Yellow,
                    _ => Color::Red,
                };
                format!(
                    "{} {} \"{step_name}\"{} {} in {}{}",
                    where_(at),
                    self.step(at, *step),
                    attempt_note(*step_attempt),
                    paint(c, color, step_status_text(status)),
                    duration_ms(*ms),
                    message_suffix(message)
                )
            }
            // Written line by line in `event`.
            RunEventKind::Log { .. } => return None,
            RunEventKind::TaskFinished {
                task,
                attempt,
                sidecar,
                execution_id,
                status,
                message,
                duration_ms: ms,
                will_retry,
            } => {
                if let Some(id) = execution_id {
                    self.step_counts.remove(id);
                    self.packages.remove_execution(id);
                }
                let name = match sidecar {
                    Some(s) => format!("{task}@{s}"),
                    None => task.clone(),
                };
                let outcome = paint(c, outcome_color(*status), outcome_text(*status));
                let retry = if *will_retry { ", will retry" } else { "" };
                if *status == TaskOutcome::Skipped {
                    format!("{name} {outcome}{}", message_suffix(message))
                } else {
                    format!(
                        "{name} {outcome}{} in {}{retry}{}",
                        attempt_note(*attempt),
                        duration_ms(*ms),
                        message_suffix(message)
                    )
                }
            }
            RunEventKind::RunFinished {
                status,
                exit_code,
                duration_ms: ms,
                ..
            } => format!(
                "run {} {status} in {} (exit code {exit_code})",
                ev.run_id,
                duration_ms(*ms)
            ),
        })
    }

    fn step(&self, at: &At, step: u32) -> String {
        step_label(step, self.step_counts.get(&at.execution_id).copied())
    }

    fn timestamp(&self, ts_ms: i64) -> String {
        let t = chrono::DateTime::from_timestamp_millis(ts_ms).unwrap_or_default();
        match self.clock {
            Clock::Local => t.with_timezone(&chrono::Local).format("%H:%M:%S%.3f"),
            Clock::Utc => t.format("%H:%M:%S%.3f"),
        }
        .to_string()
    }
}

impl<W: Write + Send> Reporter for PlainReporter<W> {
    fn event(&mut self, ev: &RunEvent) {
        if let RunEventKind::Log { at, lines } = &ev.kind {
            if self.verbose_logs {
                let ts = self.timestamp(ev.ts_ms);
                for l in lines {
                    let text = format!(
                        "{ts} {} [{}] {}\n",
                        where_(at),
                        l.stream,
                        terminal_safe(&l.line)
                    );
                    let _ = self.out.write_all(text.as_bytes());
                }
            }
            return;
        }
        let Some(text) = self.text(ev) else { return };
        let mut line = format!("{} {text}\n", self.timestamp(ev.ts_ms));
        if let RunEventKind::RunFinished {
            summary,
            duration_ms: ms,
            ..
        } = &ev.kind
        {
            line.push('\n');
            line.push_str(&super::summary::render_run(summary, Some(*ms), self.color));
        }
        // One write per line, so lines from other writers never interleave mid-line; a closed
        // stderr must not stop the run.
        let _ = self.out.write_all(line.as_bytes());
    }

    fn finish(&mut self) {
        let _ = self.out.flush();
    }
}

fn where_(at: &At) -> String {
    format!("{}@{}", at.task, at.sidecar)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn attempt_note(attempt: u32) -> String {
    if attempt > 1 {
        format!(" (attempt {attempt})")
    } else {
        String::new()
    }
}

fn message_suffix(message: &str) -> String {
    if message.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", one_line(message, MESSAGE_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::sample_run;

    fn lines(verbose_logs: bool) -> Vec<String> {
        let mut reporter = PlainReporter::new(Vec::new(), verbose_logs, false, Clock::Utc);
        for ev in sample_run() {
            reporter.event(&ev);
        }
        reporter.finish();
        String::from_utf8(reporter.into_inner())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lines_read_well() {
        let lines = lines(false);
        let expected = [
            "18:14:00.000 run r1 started: plan \"nightly-etl\", 2 tasks on 2 sidecars (sql1, sql2)",
            "18:14:00.100 load-facts placed on sql2",
            "18:14:00.200 load-facts@sql2 started, 3 steps (execution e1)",
            "18:14:00.300 load-facts@sql2 step 2/3 \"transform\" started",
            "18:14:04.400 load-facts@sql2 step 2/3 \"transform\" succeeded in 4.1s",
            "18:14:05.000 load-facts@sql2 step 3/3 \"load\" failed (will retry) in 600ms: exit code 3",
            "18:14:06.000 load-facts@sql2 step 3/3 \"load\" (attempt 2) succeeded in 1.0s",
            "18:14:06.100 load-facts@sql2 succeeded in 5.9s",
            "18:14:06.100 report skipped: stage-x did not succeed",
            "18:14:06.200 run r1 failed in 6.2s (exit code 1)",
        ];
        assert_eq!(&lines[..expected.len()], expected);
        // The summary follows the last line.
        assert!(
            lines
                .iter()
                .any(|l| l == "2 tasks: 1 succeeded, 1 skipped in 6.2s")
        );
        assert!(!lines.iter().any(|l| l.contains("[stdout]")));
    }

    #[test]
    fn log_lines_only_when_verbose() {
        let lines = lines(true);
        assert!(
            lines
                .iter()
                .any(|l| l == "18:14:01.000 load-facts@sql2 [stdout] rows: 42"),
            "{lines:#?}"
        );
    }

    #[test]
    fn a_package_shows_its_catalog_execution_and_tasks() {
        let mut reporter = PlainReporter::new(Vec::new(), false, false, Clock::Utc);
        for ev in crate::report::ssis_sample::ssis_run() {
            reporter.event(&ev);
        }
        let text = String::from_utf8(reporter.into_inner()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let expected = [
            r"18:14:00.400 load-sales@sql1 step 1/1 catalog execution 12345 on SQL1 (ETL\Sales\Load Sales.dtsx) running",
            r"18:14:00.500 load-sales@sql1 step 1/1 › \Load Sales\Truncate started",
            r"18:14:00.800 load-sales@sql1 step 1/1 › \Load Sales\Truncate succeeded in 300ms",
            r"18:14:00.900 load-sales@sql1 step 1/1 › \Load Sales\Copy rows started",
            r"18:14:02.100 load-sales@sql1 step 1/1 › \Load Sales\Check started",
            r"18:14:03.000 load-sales@sql1 step 1/1 › \Load Sales\Copy rows failed in 2.1s, 2500 rows: bad row",
            r"18:14:03.100 load-sales@sql1 step 1/1 catalog execution 12345 on SQL1 (ETL\Sales\Load Sales.dtsx) failed",
        ];
        assert_eq!(&lines[4..11], expected, "{text}");
    }
}
