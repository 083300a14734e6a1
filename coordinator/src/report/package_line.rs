//! The live view's line under a task whose step runs an SSIS package: the catalog
//! execution, the package's running tasks and the last ones that finished, and counts.
//! One line however big the package, so that a run of many tasks still fits the screen.
//!
//! ```text
//!   ↳ catalog 12345 running · ▸ Copy rows 2500 rows · ✓ Truncate 300ms · 1 done
//! ```
use std::fmt::Write as _;

use super::style::{Color, duration_ms, one_line, paint};
use crate::sub_steps::{StepPackage, SubStep};

/// Running sub-steps named on the line; more are counted.
const RUNNING_SHOWN: usize = 2;
/// Finished sub-steps named on the line, the latest first.
const FINISHED_SHOWN: usize = 2;
/// Longest sub-step name shown.
const NAME_MAX: usize = 40;

/// The line for `package` (without the leading indent).
pub(crate) fn package_line(package: &StepPackage, color: bool) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = &package.catalog {
        let status = paint(color, status_color(&c.status), &c.status);
        parts.push(format!("catalog {} {status}", c.catalog_execution_id));
    }
    let running: Vec<&SubStep> = package.running().collect();
    for s in running.iter().take(RUNNING_SHOWN) {
        let mut text = format!("▸ {}", one_line(&s.name, NAME_MAX));
        if let Some(rows) = s.rows_max() {
            let _ = write!(text, " {rows} rows");
        }
        parts.push(text);
    }
    if running.len() > RUNNING_SHOWN {
        parts.push(format!("+{} running", running.len() - RUNNING_SHOWN));
    }
    // The latest to finish: largest end time (start + duration).
    let mut finished: Vec<&SubStep> = package
        .sub_steps
        .iter()
        .filter(|s| !s.is_running())
        .collect();
    finished.sort_by_key(|s| {
        std::cmp::Reverse(s.started_at_ms.unwrap_or(0) + s.duration_ms.unwrap_or(0) as i64)
    });
    for s in finished.iter().take(FINISHED_SHOWN) {
        let (symbol, c) = if s.status == "succeeded" {
            ("✓", Color::Green)
        } else {
            ("✗", Color::Red)
        };
        let took = s.duration_ms.map(duration_ms).unwrap_or_default();
        parts.push(format!(
            "{} {} {took}",
            paint(color, c, symbol),
            one_line(&s.name, NAME_MAX)
        ));
    }
    let (done, failed) = package.finished_counts();
    if done > 0 {
        let mut counts = format!("{done} done");
        if failed > 0 {
            let bad = format!("{failed} not succeeded");
            let _ = write!(counts, ", {}", paint(color, Color::Red, &bad));
        }
        parts.push(counts);
    }
    format!("↳ {}", parts.join(" · "))
}

fn status_color(catalog_status: &str) -> Color {
    match catalog_status {
        "succeeded" | "completed" => Color::Green,
        "failed" | "ended_unexpectedly" | "canceled" => Color::Red,
        _ => Color::Dim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{RunEventKind, SubStepStarted};
    use crate::report::ssis_sample::ssis_run;
    use crate::sub_steps::Packages;

    /// The line after each of the sample's first `n` events.
    fn line_after(n: usize) -> String {
        let mut packages = Packages::default();
        let mut line = String::new();
        for ev in ssis_run().iter().take(n) {
            if let Some(p) = packages.apply(&ev.kind) {
                line = package_line(p, false);
            }
        }
        line
    }

    #[test]
    fn the_line_follows_the_package() {
        assert_eq!(line_after(5), "↳ catalog 12345 running");
        assert_eq!(line_after(6), "↳ catalog 12345 running · ▸ Truncate");
        assert_eq!(
            line_after(10),
            "↳ catalog 12345 running · ▸ Copy rows 2500 rows · ✓ Truncate 300ms · 1 done"
        );
        assert_eq!(
            line_after(14),
            "↳ catalog 12345 failed · ▸ Check · ✗ Copy rows 2.1s · ✓ Truncate 300ms · 2 done, 1 not succeeded"
        );
    }

    #[test]
    fn many_running_tasks_are_counted_not_listed() {
        let mut packages = Packages::default();
        let mut line = String::new();
        for i in 0..5 {
            let kind = RunEventKind::SubStepStarted(Box::new(SubStepStarted {
                at: crate::report::ssis_sample::at(),
                step: 1,
                step_attempt: 1,
                path: format!(r"\P\t{i}"),
                name: format!("t{i}"),
                started_at_ms: i,
            }));
            line = package_line(packages.apply(&kind).unwrap(), false);
        }
        assert_eq!(line, "↳ ▸ t0 · ▸ t1 · +3 running");
    }
}
