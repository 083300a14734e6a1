//! `coordinator show RUN` as text: the run, then each task with its attempts (where each
//! ran) and each attempt's steps with their outcomes and durations; under a step that ran
//! an SSIS package, the package's tasks (`show_package.rs`).
//!
//! ```text
//! run 0190c3a1f2e47b9c8d0e1f2a3b4c5d6e · plan nightly-etl (plans/nightly.toml)
//! status    failed (exit code 1)
//! started   2026-11-25 18:14:00 · took 6.2s
//! driver    pid 4242 on etl-host
//! tasks     1 ok, 0 failed, 1 other / 2
//!
//! load-facts  succeeded  5.9s  ETL - Load Facts
//!   #1 on sql2  succeeded  execution e1 · started by coordinator
//!        2 transform           succeeded  4.1s
//!        3 load                retry      600ms  exit code 3
//!        3 load (attempt 2)    succeeded  1.0s
//! report  skipped: `stage-x` failed
//! ```
use std::fmt::Write as _;
use std::time::Duration;

use super::show_package::render_package;
use super::{local_time, run_duration};
use crate::store::{RunSnapshot, StepRow};
use crate::sub_steps::StepPackage;

/// Longest message shown on a line; `--json` has the full text.
const MESSAGE_MAX: usize = 160;

pub fn render(s: &RunSnapshot, now_ms: i64) -> String {
    let run = &s.run;
    let mut out = String::new();
    let plan_path = if run.plan_path.is_empty() {
        String::new()
    } else {
        format!(" ({})", run.plan_path)
    };
    let _ = writeln!(
        out,
        "run {} · plan {}{plan_path}",
        run.run_id, run.plan_name
    );
    let mut status = run.status.clone();
    if let Some(code) = run.exit_code {
        status.push_str(&format!(" (exit code {code})"));
    }
    if run.cancel_requested {
        status.push_str(", cancel requested");
    }
    let _ = writeln!(out, "status    {status}");
    let took = if run.finished_ms.is_some() {
        "took"
    } else {
        "running for"
    };
    let _ = writeln!(
        out,
        "started   {} · {took} {}",
        local_time(run.started_ms),
        run_duration(run, now_ms)
    );
    if let (Some(pid), Some(host)) = (run.driver_pid, &run.driver_host) {
        let _ = writeln!(out, "driver    pid {pid} on {host}");
    }
    let other = run
        .tasks_total
        .saturating_sub(run.tasks_succeeded + run.tasks_failed);
    let _ = writeln!(
        out,
        "tasks     {} ok, {} failed, {other} other / {}",
        run.tasks_succeeded, run.tasks_failed, run.tasks_total
    );
    out.push('\n');

    let width = s
        .tasks
        .iter()
        .map(|t| t.task.chars().count())
        .max()
        .unwrap_or(0);
    for task in &s.tasks {
        let executions: Vec<_> = s
            .executions
            .iter()
            .filter(|e| e.task == task.task)
            .collect();
        if executions.is_empty() {
            // Never started: waiting, skipped or canceled before placement.
            let _ = writeln!(
                out,
                "{:<width$}  {}{}",
                task.task,
                task.status,
                message(&task.message)
            );
            continue;
        }
        // The last attempt's message usually is the task's: say it once.
        let last_message = executions.last().map(|e| e.message.as_str());
        let task_message = if last_message == Some(task.message.as_str()) {
            String::new()
        } else {
            message(&task.message)
        };
        let _ = writeln!(
            out,
            "{:<width$}  {}  {}  {}{task_message}",
            task.task,
            task.status,
            ms(task.duration_ms),
            task.job,
        );
        for e in executions {
            // Who its sidecar recorded as the caller of StartJob (its audit log has more).
            let started_by = if e.started_by.is_empty() {
                String::new()
            } else {
                format!(
                    " · started by {}",
                    crate::report::terminal_safe(&e.started_by)
                )
            };
            let _ = writeln!(
                out,
                "  #{} on {}  {}  execution {}{started_by}{}",
                e.attempt,
                e.sidecar,
                e.status,
                e.execution_id,
                message(&e.message)
            );
            let steps: Vec<&StepRow> = s
                .steps
                .iter()
                .filter(|st| st.execution_id == e.execution_id)
                .collect();
            let labels: Vec<String> = steps.iter().map(|st| step_label(st)).collect();
            let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
            let packages: Vec<&StepPackage> = s
                .packages
                .iter()
                .filter(|p| p.execution_id == e.execution_id)
                .collect();
            for (st, label) in steps.iter().zip(&labels) {
                let took = st.duration_ms.map(ms).unwrap_or_else(|| "…".into());
                let _ = writeln!(
                    out,
                    "       {label:<label_width$}  {:<9}  {took}{}",
                    st.status,
                    message(&st.message)
                );
                for p in packages
                    .iter()
                    .filter(|p| p.step == st.step && p.step_attempt == st.attempt)
                {
                    render_package(&mut out, p);
                }
            }
            // A package whose step row was not kept (its events were lost, say).
            for p in packages.iter().filter(|p| {
                !steps
                    .iter()
                    .any(|st| p.step == st.step && p.step_attempt == st.attempt)
            }) {
                let _ = writeln!(out, "       {:>2} (attempt {})", p.step, p.step_attempt);
                render_package(&mut out, p);
            }
        }
    }
    out
}

fn step_label(st: &StepRow) -> String {
    let mut label = format!("{:>2} {}", st.step, st.name);
    if st.attempt > 1 {
        label.push_str(&format!(" (attempt {})", st.attempt));
    }
    label
}

pub(super) fn ms(ms: u64) -> String {
    agentfleet_common::duration::short(Duration::from_millis(ms))
}

pub(super) fn message(m: &str) -> String {
    let m = m.trim();
    if m.is_empty() {
        return String::new();
    }
    let one_line: String = m.split_whitespace().collect::<Vec<_>>().join(" ");
    let one_line = crate::report::terminal_safe(&one_line);
    if one_line.chars().count() > MESSAGE_MAX {
        let cut: String = one_line.chars().take(MESSAGE_MAX - 1).collect();
        format!("  {cut}…")
    } else {
        format!("  {one_line}")
    }
}
