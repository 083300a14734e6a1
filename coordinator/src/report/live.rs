//! Live progress on a terminal (stderr): one line per running task under a status line,
//! and a permanent line printed above them as each task finishes.
//!
//! ```text
//! ✓ stage-customers  sql1   4.1s
//! ↻ load-facts       sql2   3.2s  attempt 1 failed, will retry: exit code 3
//! ⠙ load-facts       sql2   1.2s  step 2/3 transform (attempt 2) │ rows: 42
//! ⠙ load-sales       sql1   3.0s  step 1/1 Load Sales
//!     ↳ catalog 12345 running · ▸ Copy rows 2500 rows · ✓ Truncate 300ms · 1 done
//! ⠙ publish          sql1   0.3s  placed, starting…
//!   1/4 done · 2 running · 1 waiting
//! ```
//!
//! Drawing is rate-limited by indicatif; log lines only update a bar's message, at most
//! every `LOG_REFRESH`, so a chatty job cannot slow the run or make the screen flicker.
//! A step that runs an SSIS package gets one more line, its package's progress
//! (`package_line.rs`), until the next step starts.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use super::Reporter;
use super::package_line::package_line;
use super::style::{
    Color, duration_ms, one_line, outcome_symbol, outcome_text, paint, step_label, width,
};
use crate::events::{RunEvent, RunEventKind, TaskOutcome};
use crate::sub_steps::Packages;

const TICK: Duration = Duration::from_millis(100);
const LOG_REFRESH: Duration = Duration::from_millis(250);
const LOG_MAX: usize = 120;
const MESSAGE_MAX: usize = 160;

/// One running (placed or started) task.
struct Running {
    bar: ProgressBar,
    sidecar: String,
    step_count: u32,
    /// The step line without the log tail: "step 2/3 transform (attempt 2)".
    step: String,
    last_log_at: Option<Instant>,
    /// The line under the bar with the running step's SSIS package, once it has one.
    package: Option<ProgressBar>,
}

/// What the permanent line of a finished task shows.
#[derive(Clone, Copy)]
struct Finished<'a> {
    task: &'a str,
    sidecar: Option<&'a str>,
    outcome: TaskOutcome,
    will_retry: bool,
    attempt: u32,
    ms: u64,
    message: &'a str,
}

pub struct LiveReporter {
    multi: MultiProgress,
    color: bool,
    verbose_logs: bool,
    running: HashMap<String, Running>,
    /// SSIS packages of the running executions' steps.
    packages: Packages,
    /// Bottom line: how many tasks are done, running and waiting.
    status: ProgressBar,
    total: usize,
    done: usize,
    failed: usize,
    task_width: usize,
    sidecar_width: usize,
}

impl LiveReporter {
    /// On stderr (the caller has checked it is a terminal).
    pub fn stderr(color: bool, verbose_logs: bool) -> Self {
        Self::with_target(ProgressDrawTarget::stderr(), color, verbose_logs)
    }

    /// On any draw target; `ProgressDrawTarget::hidden()` for tests.
    pub fn with_target(target: ProgressDrawTarget, color: bool, verbose_logs: bool) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let status = multi.add(ProgressBar::new_spinner());
        status.set_style(ProgressStyle::with_template("  {wide_msg}").expect("valid template"));
        Self {
            multi,
            color,
            verbose_logs,
            running: HashMap::new(),
            packages: Packages::default(),
            status,
            total: 0,
            done: 0,
            failed: 0,
            task_width: 12,
            sidecar_width: 6,
        }
    }

    /// Tasks currently shown with a bar (tests and callers that want a count).
    pub fn running(&self) -> usize {
        self.running.len()
    }

    fn bar_style(&self) -> ProgressStyle {
        let template = if self.color {
            "{spinner:.cyan} {prefix} {t:>6.dim}  {wide_msg}"
        } else {
            "{spinner} {prefix} {t:>6}  {wide_msg}"
        };
        ProgressStyle::with_template(template)
            .expect("valid template")
            .with_key("t", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&duration_ms(state.elapsed().as_millis() as u64));
            })
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
    }

    /// "task  sidecar" padded to the widest names seen so far.
    fn prefix(&self, task: &str, sidecar: &str) -> String {
        let sidecar = format!("{sidecar:<w$}", w = self.sidecar_width);
        format!(
            "{task:<w$}  {}",
            paint(self.color, Color::Dim, &sidecar),
            w = self.task_width
        )
    }

    /// Widens the name columns when a longer name shows up, re-padding the running bars so
    /// they stay aligned.
    fn fit(&mut self, task: &str, sidecar: &str) {
        let (tw, sw) = (width(task).min(40), width(sidecar).min(24));
        if tw <= self.task_width && sw <= self.sidecar_width {
            return;
        }
        self.task_width = self.task_width.max(tw);
        self.sidecar_width = self.sidecar_width.max(sw);
        for (name, r) in &self.running {
            r.bar.set_prefix(self.prefix(name, &r.sidecar));
        }
    }

    fn update_status(&self) {
        let running = self.running.len();
        let waiting = self.total.saturating_sub(self.done + running);
        let mut text = format!("{}/{} done · {running} running", self.done, self.total);
        if waiting > 0 {
            text.push_str(&format!(" · {waiting} waiting"));
        }
        if self.failed > 0 {
            let failed = format!("{} failed", self.failed);
            text.push_str(&format!(" · {}", paint(self.color, Color::Red, &failed)));
        }
        self.status.set_message(text);
    }

    fn placed(&mut self, task: &str, sidecar: &str, attempt: u32) {
        self.fit(task, sidecar);
        let bar = self
            .multi
            .insert_before(&self.status, ProgressBar::new_spinner());
        bar.set_style(self.bar_style());
        bar.set_prefix(self.prefix(task, sidecar));
        let step = if attempt > 1 {
            format!("placed (attempt {attempt}), starting…")
        } else {
            "placed, starting…".to_owned()
        };
        bar.set_message(step.clone());
        bar.enable_steady_tick(TICK);
        let old = self.running.insert(
            task.to_owned(),
            Running {
                bar,
                sidecar: sidecar.to_owned(),
                step_count: 0,
                step,
                last_log_at: None,
                package: None,
            },
        );
        if let Some(old) = old {
            self.remove_running(&old);
        }
        self.update_status();
    }

    fn remove_bar(&self, bar: &ProgressBar) {
        bar.finish_and_clear();
        self.multi.remove(bar);
    }

    /// Removes a task's bar and its package line.
    fn remove_running(&self, r: &Running) {
        if let Some(p) = &r.package {
            self.remove_bar(p);
        }
        self.remove_bar(&r.bar);
    }

    /// Folds a catalog progress event in and redraws its task's package line (added under
    /// the task's bar the first time).
    fn package_event(&mut self, kind: &RunEventKind) {
        let Some(package) = self.packages.apply(kind) else {
            return;
        };
        let Some(r) = self.running.get_mut(&package.task) else {
            return;
        };
        let line = package_line(package, self.color);
        let bar = r.package.get_or_insert_with(|| {
            let bar = self.multi.insert_after(&r.bar, ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("    {wide_msg}").expect("valid template"));
            bar
        });
        bar.set_message(line);
    }

    /// The permanent line for a finished task.
    fn finished_line(&self, f: &Finished<'_>) -> String {
        let Finished {
            task,
            sidecar,
            outcome,
            will_retry,
            attempt,
            ms,
            message,
        } = *f;
        let (symbol, color) = outcome_symbol(outcome, will_retry);
        let mut line = format!(
            "{} {task:<tw$}  {}",
            paint(self.color, color, symbol),
            paint(
                self.color,
                Color::Dim,
                &format!("{:<sw$}", sidecar.unwrap_or("-"), sw = self.sidecar_width)
            ),
            tw = self.task_width
        );
        if outcome != TaskOutcome::Skipped {
            line.push_str(&format!(" {:>6}", duration_ms(ms)));
        }
        let what = if will_retry {
            format!("attempt {attempt} {}, will retry", outcome_text(outcome))
        } else if outcome == TaskOutcome::Succeeded {
            String::new()
        } else {
            outcome_text(outcome).to_owned()
        };
        let message = one_line(message, MESSAGE_MAX);
        let text = match (what.is_empty(), message.is_empty()) {
            (true, _) => message.into_owned(),
            (false, true) => what,
            (false, false) => format!("{what}: {message}"),
        };
        if !text.is_empty() {
            line.push_str("  ");
            let color = if outcome == TaskOutcome::Succeeded {
                Color::Dim
            } else {
                color
            };
            line.push_str(&paint(self.color, color, &text));
        }
        line
    }

    fn println(&self, text: &str) {
        // A closed terminal must not stop the run.
        let _ = self.multi.println(text);
    }

    fn clear_all(&mut self) {
        let running: Vec<Running> = self.running.drain().map(|(_, r)| r).collect();
        for r in &running {
            self.remove_running(r);
        }
        self.status.finish_and_clear();
    }
}

impl Reporter for LiveReporter {
    fn event(&mut self, ev: &RunEvent) {
        match &ev.kind {
            RunEventKind::RunStarted {
                plan,
                tasks,
                sidecars,
                ..
            } => {
                self.total = *tasks;
                let text = format!(
                    "run {} · plan {plan} · {tasks} tasks on {} sidecars",
                    ev.run_id,
                    sidecars.len()
                );
                self.println(&paint(self.color, Color::Bold, &text));
                self.update_status();
            }
            RunEventKind::TaskPlaced { at } => self.placed(&at.task, &at.sidecar, at.attempt),
            RunEventKind::TaskStarted { at, step_count, .. } => {
                if !self.running.contains_key(&at.task) {
                    self.placed(&at.task, &at.sidecar, at.attempt);
                }
                if let Some(r) = self.running.get_mut(&at.task) {
                    r.step_count = *step_count;
                    r.step = "started".to_owned();
                    r.bar.reset_elapsed();
                    r.bar.set_message(r.step.clone());
                }
            }
            RunEventKind::StepStarted {
                at,
                step,
                step_name,
                step_attempt,
            } => {
                if let Some(r) = self.running.get_mut(&at.task) {
                    // The previous step's package is done with.
                    if let Some(p) = r.package.take() {
                        p.finish_and_clear();
                        self.multi.remove(&p);
                    }
                    let mut text = format!("{} {step_name}", step_label(*step, Some(r.step_count)));
                    if *step_attempt > 1 {
                        text.push_str(&format!(" (attempt {step_attempt})"));
                    }
                    r.step = text;
                    r.last_log_at = None;
                    r.bar.set_message(r.step.clone());
                }
            }
            RunEventKind::StepFinished {
                at,
                step,
                step_name,
                status,
                ..
            } if *status != "succeeded" => {
                if let Some(r) = self.running.get_mut(&at.task) {
                    let label = step_label(*step, Some(r.step_count));
                    r.step = match *status {
                        "retry" => format!("{label} {step_name} failed, retrying"),
                        other => format!("{label} {step_name} {other}"),
                    };
                    r.bar.set_message(r.step.clone());
                }
            }
            RunEventKind::StepFinished { .. } | RunEventKind::ExecutionSeq { .. } => {}
            RunEventKind::CatalogExecution(_)
            | RunEventKind::SubStepStarted(_)
            | RunEventKind::SubStepFinished(_)
            | RunEventKind::DataFlowRows(_) => self.package_event(&ev.kind),
            RunEventKind::Log { at, lines } => {
                if self.verbose_logs {
                    for l in lines {
                        let text = format!("{}@{} [{}] {}", at.task, at.sidecar, l.stream, l.line);
                        self.println(&paint(self.color, Color::Dim, &text));
                    }
                    return;
                }
                let Some(r) = self.running.get_mut(&at.task) else {
                    return;
                };
                let Some(last) = lines.last() else {
                    return;
                };
                let now = Instant::now();
                if r.last_log_at.is_some_and(|t| now - t < LOG_REFRESH) {
                    return;
                }
                r.last_log_at = Some(now);
                let tail = one_line(&last.line, LOG_MAX);
                let tail = paint(self.color, Color::Dim, &tail);
                r.bar.set_message(format!("{} │ {tail}", r.step));
            }
            RunEventKind::TaskFinished {
                task,
                attempt,
                sidecar,
                status,
                message,
                duration_ms: ms,
                will_retry,
                execution_id,
            } => {
                let sidecar = sidecar
                    .clone()
                    .or_else(|| self.running.get(task).map(|r| r.sidecar.clone()));
                if let Some(r) = self.running.remove(task) {
                    self.remove_running(&r);
                }
                if let Some(id) = execution_id {
                    self.packages.remove_execution(id);
                }
                self.fit(task, sidecar.as_deref().unwrap_or("-"));
                let line = self.finished_line(&Finished {
                    task,
                    sidecar: sidecar.as_deref(),
                    outcome: *status,
                    will_retry: *will_retry,
                    attempt: *attempt,
                    ms: *ms,
                    message,
                });
                self.println(&line);
                if !will_retry {
                    self.done += 1;
                    if !matches!(status, TaskOutcome::Succeeded | TaskOutcome::Skipped) {
                        self.failed += 1;
                    }
                }
                self.update_status();
            }
            RunEventKind::RunFinished {
                summary,
                duration_ms: ms,
                ..
            } => {
                self.clear_all();
                let table = super::summary::render_run(summary, Some(*ms), self.color);
                self.println(&format!("\n{}", table.trim_end()));
            }
        }
    }

    fn finish(&mut self) {
        self.clear_all();
    }
}

impl Drop for LiveReporter {
    /// Stops the spinners' tick threads and leaves the terminal clean, even when a run ends
    /// without `run_finished` (an error, a panic).
    fn drop(&mut self) {
        self.clear_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::test_support::sample_run;

    #[test]
    fn drives_a_whole_run_on_a_hidden_target() {
        let mut live = LiveReporter::with_target(ProgressDrawTarget::hidden(), true, false);
        let events = sample_run();
        for ev in &events {
            live.event(ev);
            if matches!(ev.kind, RunEventKind::Log { .. }) {
                // A chatty job: many log lines in a row must stay cheap.
                let start = Instant::now();
                for _ in 0..100_000 {
                    live.event(ev);
                }
                assert!(start.elapsed() < Duration::from_secs(5));
                assert_eq!(live.running(), 1);
            }
        }
        assert_eq!(live.running(), 0);
        assert_eq!(live.done, 2);
        live.finish();
    }

    #[test]
    fn verbose_logs_and_unknown_tasks_do_not_panic() {
        let mut live = LiveReporter::with_target(ProgressDrawTarget::hidden(), false, true);
        // Events for a task never placed (e.g. after re-attaching) are tolerated.
        for ev in sample_run().iter().skip(2) {
            live.event(ev);
        }
        drop(live);
    }

    #[test]
    fn finished_lines() {
        let live = LiveReporter::with_target(ProgressDrawTarget::hidden(), false, false);
        let line = |outcome, will_retry, message| {
            live.finished_line(&Finished {
                task: "load-facts",
                sidecar: Some("sql2"),
                outcome,
                will_retry,
                attempt: 1,
                ms: 3_200,
                message,
            })
        };
        assert_eq!(
            line(TaskOutcome::Succeeded, false, ""),
            "✓ load-facts    sql2     3.2s"
        );
        assert_eq!(
            line(TaskOutcome::Failed, true, "exit code 3"),
            "↻ load-facts    sql2     3.2s  attempt 1 failed, will retry: exit code 3"
        );
        assert_eq!(
            line(TaskOutcome::TimedOut, false, ""),
            "✗ load-facts    sql2     3.2s  timed out"
        );
        assert_eq!(
            live.finished_line(&Finished {
                task: "report",
                sidecar: None,
                outcome: TaskOutcome::Skipped,
                will_retry: false,
                attempt: 0,
                ms: 0,
                message: "x failed",
            }),
            "⊘ report        -       skipped: x failed"
        );
    }

    #[test]
    fn a_package_line_follows_its_step_and_goes_with_its_task() {
        let mut live = LiveReporter::with_target(ProgressDrawTarget::hidden(), false, false);
        let events = crate::report::ssis_sample::ssis_run();
        for ev in &events[..10] {
            live.event(ev);
        }
        let package = live.running["load-sales"].package.as_ref().unwrap();
        assert_eq!(
            package.message(),
            "↳ catalog 12345 running · ▸ Copy rows 2500 rows · ✓ Truncate 300ms · 1 done"
        );
        // The next step has no package (yet): the line goes.
        let mut next = events[3].clone();
        if let RunEventKind::StepStarted { step, .. } = &mut next.kind {
            *step = 2;
        }
        live.event(&next);
        assert!(live.running["load-sales"].package.is_none());
        for ev in &events[10..] {
            live.event(ev);
        }
        assert_eq!(live.running(), 0);
        assert!(
            live.packages.get("e1", 1, 1).is_none(),
            "forgotten with its task"
        );
    }
}
