//! Small text helpers shared by the human reporters: durations, one-line messages and
//! ANSI colour that is a no-op when colour is off (NO_COLOR, or not a terminal).
use std::borrow::Cow;
use std::time::Duration;

use crate::events::TaskOutcome;

/// Plain ANSI SGR codes: enough for a handful of colours without another dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Color {
    Red,
    Green,
    Yellow,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Self::Red => "31",
            Self::Green => "32",
            Self::Yellow => "33",
            Self::Dim => "2",
            Self::Bold => "1",
        }
    }
}

/// Wraps `text` in `color` when `enabled`. Pad before painting so alignment ignores escapes.
pub(crate) fn paint(enabled: bool, color: Color, text: &str) -> Cow<'_, str> {
    if enabled && !text.is_empty() {
        Cow::Owned(format!("\x1b[{}m{text}\x1b[0m", color.code()))
    } else {
        Cow::Borrowed(text)
    }
}

/// "850ms", "12.3s", "4m05s", "2h03m".
pub(crate) fn duration_ms(ms: u64) -> String {
    agentfleet_common::duration::short(Duration::from_millis(ms))
}

/// The first line of `text`, at most `max` characters (an ellipsis marks the cut), so a
/// multi-line error message cannot break a table or a progress line; terminal-safe (see
/// `terminal_safe`).
pub(crate) fn one_line(text: &str, max: usize) -> Cow<'_, str> {
    let first = text.trim().lines().next().unwrap_or("").trim_end();
    let more_lines = first.len() < text.trim().len();
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        Cow::Owned(format!("{}…", terminal_safe(&cut)))
    } else if more_lines {
        Cow::Owned(format!("{} …", terminal_safe(first)))
    } else {
        terminal_safe(first)
    }
}

/// Job output and messages come from the servers' jobs, so they must not drive the
/// operator's terminal: control characters (ESC starting an ANSI or OSC sequence that
/// retitles the window or rewrites the screen, BEL, a carriage return that overwrites the
/// line) and bidirectional overrides (text that reads other than it is) are shown as
/// escapes such as `\x1b` instead. Tabs stay. The store and `--json` keep the raw text.
pub(crate) fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            c if !acts_on_terminal(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

fn acts_on_terminal(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Display width for alignment; names are expected to be mostly ASCII.
pub(crate) fn width(text: &str) -> usize {
    text.chars().count()
}

/// Outcome words for people ("timed out", not "timed_out").
pub(crate) fn outcome_text(outcome: TaskOutcome) -> &'static str {
    match outcome {
        TaskOutcome::TimedOut => "timed out",
        other => other.as_str(),
    }
}

pub(crate) fn outcome_color(outcome: TaskOutcome) -> Color {
    match outcome {
        TaskOutcome::Succeeded => Color::Green,
        TaskOutcome::Failed | TaskOutcome::TimedOut | TaskOutcome::Lost => Color::Red,
        TaskOutcome::Canceled => Color::Yellow,
        TaskOutcome::Skipped => Color::Dim,
    }
}

/// The mark in front of a finished task: ✓ succeeded, ✗ did not, ↻ will be retried,
/// ⊘ skipped or canceled (never ran to an end of its own).
pub(crate) fn outcome_symbol(outcome: TaskOutcome, will_retry: bool) -> (&'static str, Color) {
    if will_retry {
        return ("↻", Color::Yellow);
    }
    match outcome {
        TaskOutcome::Succeeded => ("✓", Color::Green),
        TaskOutcome::Skipped | TaskOutcome::Canceled => ("⊘", outcome_color(outcome)),
        _ => ("✗", Color::Red),
    }
}

/// Step status words ("retry" reads as a failure that will be retried).
pub(crate) fn step_status_text(status: &str) -> &str {
    match status {
        "retry" => "failed (will retry)",
        "timed_out" => "timed out",
        other => other,
    }
}

/// "step 2/3" when the step count is known, "step 2" otherwise.
pub(crate) fn step_label(step: u32, step_count: Option<u32>) -> String {
    match step_count {
        Some(n) if n > 0 => format!("step {step}/{n}"),
        _ => format!("step {step}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_cuts_long_and_multi_line_text() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
        assert_eq!(one_line("first\nsecond", 20), "first …");
        assert_eq!(one_line("  padded \n", 20), "padded");
    }

    #[test]
    fn control_characters_from_jobs_are_shown_not_obeyed() {
        // A job retitling the terminal (OSC 0), clearing it, and hiding text with CR.
        assert_eq!(
            terminal_safe("\x1b]0;pwned\x07 \x1b[2J ok\rfake"),
            "\\x1b]0;pwned\\x07 \\x1b[2J ok\\x0dfake"
        );
        assert_eq!(
            terminal_safe("tab\tstays, ünïcode too"),
            "tab\tstays, ünïcode too"
        );
        assert_eq!(
            terminal_safe("C1 \u{9b}31m, RLO \u{202e}"),
            "C1 \\x9b31m, RLO \\u{202e}"
        );
        assert_eq!(one_line("\x1b[31mred\x1b[0m", 40), "\\x1b[31mred\\x1b[0m");
        assert!(!one_line(&"\x07".repeat(50), 10).contains('\x07'));
    }

    #[test]
    fn paint_is_a_no_op_without_colour() {
        assert_eq!(paint(false, Color::Red, "x"), "x");
        assert_eq!(paint(true, Color::Red, "x"), "\x1b[31mx\x1b[0m");
    }
}
