//! The table printed when a run ends: one row per task, then a totals line.
//!
//! ```text
//! TASK             SIDECAR  ATTEMPTS  DURATION  OUTCOME    MESSAGE
//! stage-customers  sql1            1      4.1s  succeeded
//! load-facts       sql2            2     12.0s  failed     step 2 "transform" failed: exit code 3
//! report           -               0         -  skipped    load-facts did not succeed
//!
//! 3 tasks: 1 succeeded, 1 failed, 1 skipped in 16.2s
//! ```
use std::fmt::Write as _;

use super::style::{Color, duration_ms, one_line, outcome_color, outcome_text, paint, width};
use crate::events::{TaskOutcome, TaskSummary};

/// Longest message shown in a row; the store keeps the full text.
const MESSAGE_MAX: usize = 100;
const HEADERS: [&str; 6] = [
    "TASK", "SIDECAR", "ATTEMPTS", "DURATION", "OUTCOME", "MESSAGE",
];
/// Order of the counts in the totals line.
const OUTCOME_ORDER: [TaskOutcome; 6] = [
    TaskOutcome::Succeeded,
    TaskOutcome::Failed,
    TaskOutcome::TimedOut,
    TaskOutcome::Lost,
    TaskOutcome::Canceled,
    TaskOutcome::Skipped,
];

/// The table and the totals line, without the run's duration.
pub fn render(summary: &[TaskSummary], color: bool) -> String {
    render_run(summary, None, color)
}

/// The table and the totals line; `run_duration_ms` ends it with "in 41.2s".
pub fn render_run(summary: &[TaskSummary], run_duration_ms: Option<u64>, color: bool) -> String {
    let rows: Vec<[String; 6]> = summary.iter().map(row).collect();
    // Column widths over the header and every row; the message column is last and unpadded.
    let mut widths = HEADERS.map(width);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(width(cell));
        }
    }

    let mut out = String::new();
    let header = format_row(&HEADERS.map(str::to_owned), &widths);
    let _ = writeln!(out, "{}", paint(color, Color::Bold, &header));
    for (row, task) in rows.iter().zip(summary) {
        let mut line = format_row(row, &widths);
        if color {
            // Colour only the outcome cell, after padding, so escapes never shift columns.
            let start = widths[..4].iter().map(|w| w + 2).sum::<usize>();
            let outcome = row[4].as_str();
            let painted = paint(true, outcome_color(task.status), outcome);
            line = replace_at_char(&line, start, outcome, &painted);
        }
        let _ = writeln!(out, "{line}");
    }
    if !summary.is_empty() {
        out.push('\n');
    }
    out.push_str(&totals(summary, run_duration_ms));
    out.push('\n');
    out
}

/// "12 tasks: 10 succeeded, 1 failed, 1 skipped in 41.2s".
pub fn totals(summary: &[TaskSummary], run_duration_ms: Option<u64>) -> String {
    let n = summary.len();
    let mut text = format!("{n} task{}", if n == 1 { "" } else { "s" });
    let counts: Vec<String> = OUTCOME_ORDER
        .iter()
        .filter_map(|&outcome| {
            let count = summary.iter().filter(|t| t.status == outcome).count();
            (count > 0).then(|| format!("{count} {}", outcome_text(outcome)))
        })
        .collect();
    if !counts.is_empty() {
        text.push_str(": ");
        text.push_str(&counts.join(", "));
    }
    if let Some(ms) = run_duration_ms {
        let _ = write!(text, " in {}", duration_ms(ms));
    }
    text
}

fn row(task: &TaskSummary) -> [String; 6] {
    let ran = task.attempts > 0;
    [
        task.task.clone(),
        task.sidecar.clone().unwrap_or_else(|| "-".into()),
        task.attempts.to_string(),
        if ran {
            duration_ms(task.duration_ms)
        } else {
            "-".into()
        },
        outcome_text(task.status).to_owned(),
        one_line(&task.message, MESSAGE_MAX).into_owned(),
    ]
}

/// Left-aligned text, right-aligned numbers, two spaces between columns, no trailing blanks.
fn format_row(cells: &[String; 6], widths: &[usize; 6]) -> String {
    let mut line = String::new();
    for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        let pad = " ".repeat(w.saturating_sub(width(cell)));
        match i {
            2 | 3 => {
                line.push_str(&pad);
                line.push_str(cell);
            }
            5 => line.push_str(cell),
            _ => {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// Replaces `old` found at character offset `start` of `line` with `new`.
fn replace_at_char(line: &str, start: usize, old: &str, new: &str) -> String {
    let byte = line
        .char_indices()
        .nth(start)
        .map_or(line.len(), |(b, _)| b);
    if line[byte..].starts_with(old) {
        format!("{}{new}{}", &line[..byte], &line[byte + old.len()..])
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        name: &str,
        sidecar: Option<&str>,
        attempts: u32,
        ms: u64,
        status: TaskOutcome,
        msg: &str,
    ) -> TaskSummary {
        TaskSummary {
            task: name.into(),
            sidecar: sidecar.map(Into::into),
            attempts,
            duration_ms: ms,
            status,
            message: msg.into(),
        }
    }

    fn sample() -> Vec<TaskSummary> {
        vec![
            task(
                "stage-customers",
                Some("sql1"),
                1,
                4_100,
                TaskOutcome::Succeeded,
                "",
            ),
            task(
                "load-facts",
                Some("sql2"),
                2,
                12_000,
                TaskOutcome::Failed,
                "exit code 3\nmore",
            ),
            task(
                "report",
                None,
                0,
                0,
                TaskOutcome::Skipped,
                "load-facts did not succeed",
            ),
        ]
    }

    #[test]
    fn table_is_aligned_with_totals() {
        let text = render_run(&sample(), Some(16_200), false);
        let expected = "\
TASK             SIDECAR  ATTEMPTS  DURATION  OUTCOME    MESSAGE
stage-customers  sql1            1      4.1s  succeeded
load-facts       sql2            2     12.0s  failed     exit code 3 …
report           -               0         -  skipped    load-facts did not succeed

3 tasks: 1 succeeded, 1 failed, 1 skipped in 16.2s
";
        assert_eq!(text, expected);
    }

    #[test]
    fn totals_count_every_outcome_and_use_singular() {
        assert_eq!(totals(&[], None), "0 tasks");
        let one = [task("a", Some("s"), 1, 5, TaskOutcome::TimedOut, "")];
        assert_eq!(totals(&one, Some(850)), "1 task: 1 timed out in 850ms");
        let mut many: Vec<_> = (0..10)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    Some("s"),
                    1,
                    1,
                    TaskOutcome::Succeeded,
                    "",
                )
            })
            .collect();
        many.extend(sample().into_iter().skip(1));
        assert_eq!(
            totals(&many, Some(41_200)),
            "12 tasks: 10 succeeded, 1 failed, 1 skipped in 41.2s"
        );
    }

    #[test]
    fn colour_keeps_columns_aligned() {
        let plain = render(&sample(), false);
        let colored = render(&sample(), true);
        assert!(colored.contains("\x1b[32msucceeded\x1b[0m"));
        let stripped = strip_ansi(&colored);
        assert_eq!(stripped, plain);
    }

    fn strip_ansi(text: &str) -> String {
        let mut out = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }
}
