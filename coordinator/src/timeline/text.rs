//! `coordinator show RUN --timeline`: the report's lanes drawn with characters, fitted to
//! a width. Without colour every outcome has its own fill character, so the picture reads
//! the same piped into a file; with colour (a terminal without `NO_COLOR`) bars get the
//! report's colours and the critical path is underlined.
//!
//! ```text
//! nightly-etl · run 0190c3a1 · failed · makespan 25.3s · lower bound 18.0s (critical path)
//!              0s         5s         10s        15s        20s        25s
//! demo-a  1 │*stage-customers=*load-facts=======      report==        │
//!         2 │ extract====  xrefresh-cubexx                            │
//! package      load-sales #1 step 1: catalog 12345 failed · 3 tasks: 1 succeeded, 1 failed, 1 running · failed \Load Sales\Copy rows: bad row
//! ```
use std::fmt::Write as _;
use std::time::Duration;

use super::{Bar, PackageBars, Timeline};
use crate::report::terminal_safe;

/// Narrowest chart drawn, whatever the width asked for.
const MIN_CHART: usize = 20;

/// The fill character of a bar of `status` (also the legend's).
fn fill(status: &str) -> char {
    match status {
        "succeeded" => '=',
        "failed" => 'x',
        "timed_out" => 't',
        "canceled" => '-',
        "lost" => '?',
        _ => '>',
    }
}

/// ANSI background (and foreground) for a bar of `status`.
fn paint(status: &str) -> &'static str {
    match status {
        "succeeded" => "\x1b[42;30m",
        "failed" => "\x1b[41;97m",
        "timed_out" => "\x1b[43;30m",
        "canceled" => "\x1b[100;97m",
        "lost" => "\x1b[45;97m",
        _ => "\x1b[44;97m",
    }
}

const RESET: &str = "\x1b[0m";
const CRITICAL: &str = "\x1b[1;4m";

fn short(ms: i64) -> String {
    if ms <= 0 {
        return "0".to_owned();
    }
    agentfleet_common::duration::short(Duration::from_millis(ms as u64))
}

/// The timeline in `width` columns; `color` for ANSI colours.
pub fn render(t: &Timeline, width: usize, color: bool) -> String {
    let mut out = String::new();
    let totals = &t.totals;
    let _ = writeln!(
        out,
        "{} · run {} · {} · makespan {} · lower bound {} ({})",
        t.run.plan,
        &t.run.id[..t.run.id.len().min(8)],
        t.run.status,
        short(totals.makespan_ms),
        short(totals.lower_bound_ms),
        totals.bound_by
    );
    let outcomes: Vec<String> = totals
        .outcomes
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    let _ = writeln!(
        out,
        "tasks        {} · {} executions, {} retried, {} step retries",
        outcomes.join(" · "),
        totals.executions,
        totals.retried,
        totals.step_retries
    );
    let name_width = t
        .lanes
        .iter()
        .map(|l| l.sidecar.chars().count())
        .max()
        .unwrap_or(0)
        .min(24);
    let slot_width = t
        .lanes
        .iter()
        .map(|l| l.slot.to_string().len())
        .max()
        .unwrap_or(1);
    let label = name_width + 1 + slot_width + 2;
    let chart = width.saturating_sub(label + 1).max(MIN_CHART);
    let span = totals.makespan_ms.max(1);
    let col = |ms: i64| ((ms.clamp(0, span) as i128 * chart as i128) / span as i128) as usize;

    out.push_str(&ruler(label, chart, span));
    let lanes = t.bars_by_lane();
    for (i, lane) in t.lanes.iter().enumerate() {
        let first = i == 0 || t.lanes[i - 1].sidecar != lane.sidecar;
        let name: String = if first {
            lane.sidecar.chars().take(name_width).collect()
        } else {
            String::new()
        };
        let _ = write!(out, "{name:<name_width$} {:>slot_width$} │", lane.slot);
        out.push_str(&draw_lane(&lanes[i], chart, &col, color));
        out.push_str("│\n");
    }
    legend(&mut out, color);
    let usage: Vec<String> = t
        .sidecars
        .iter()
        .map(|s| {
            format!(
                "{} {:.0}% of {} slots",
                s.name,
                s.utilisation * 100.0,
                s.slots.max(s.lanes)
            )
        })
        .collect();
    let _ = writeln!(out, "utilisation  {}", usage.join(" · "));
    if !t.critical_path.is_empty() {
        let _ = writeln!(
            out,
            "critical     {} ({})",
            t.critical_path.join(" → "),
            short(totals.critical_path_ms)
        );
    }
    let retried: Vec<String> = t
        .bars
        .iter()
        .filter(|b| b.retried)
        .map(|b| format!("{} #{} {}", b.task, b.attempt, b.status))
        .collect();
    if !retried.is_empty() {
        let _ = writeln!(out, "retried      {}", retried.join(" · "));
    }
    for b in t
        .bars
        .iter()
        .filter(|b| !b.retried && !matches!(b.status.as_str(), "succeeded" | "running"))
    {
        let why = if b.message.is_empty() {
            String::new()
        } else {
            format!(": {}", terminal_safe(&b.message))
        };
        let _ = writeln!(
            out,
            "{:<12} {} #{} on {}{why}",
            b.status, b.task, b.attempt, b.sidecar
        );
    }
    for b in &t.bars {
        for st in &b.steps {
            if let Some(p) = &st.package {
                let _ = writeln!(out, "package      {}", package_line(b, st.step, p));
            }
        }
    }
    for u in &t.unstarted {
        let why = if u.message.is_empty() {
            String::new()
        } else {
            format!(": {}", terminal_safe(&u.message))
        };
        let _ = writeln!(out, "not run      {} {}{why}", u.task, u.status);
    }
    out
}

/// A step's SSIS package in one line: catalog execution, task counts by status, and the
/// first task that failed (the lanes are too coarse for the package's own tasks; the HTML
/// report lists them all).
fn package_line(b: &Bar, step: u32, p: &PackageBars) -> String {
    let mut parts = Vec::new();
    if let (Some(id), Some(status)) = (p.catalog_execution_id, &p.catalog_status) {
        parts.push(format!("catalog {id} {status}"));
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for s in &p.sub_steps {
        match counts.iter_mut().find(|(k, _)| *k == s.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((&s.status, 1)),
        }
    }
    counts.sort();
    let counts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.push(format!(
        "{} tasks: {}",
        p.sub_steps.len(),
        counts.join(", ")
    ));
    if let Some(f) = p
        .sub_steps
        .iter()
        .find(|s| !matches!(s.status.as_str(), "succeeded" | "running"))
    {
        let why = if f.message.is_empty() {
            String::new()
        } else {
            format!(": {}", terminal_safe(&f.message))
        };
        parts.push(format!("{} {}{why}", f.status, terminal_safe(&f.path)));
    }
    format!(
        "{} #{} step {step}: {}",
        b.task,
        b.attempt,
        parts.join(" · ")
    )
}

/// Time marks above the lanes, as many as fit.
fn ruler(label: usize, chart: usize, span: i64) -> String {
    let mut line: Vec<char> = vec![' '; chart + 12];
    let marks = (chart / 12).max(1);
    for k in 0..=marks {
        let at = chart * k / marks;
        let text = short(span * k as i64 / marks as i64);
        let start = at.min(chart + 12 - text.len());
        if line[start..start + text.len()].iter().all(|c| *c == ' ')
            && (start == 0 || line[start - 1] == ' ')
        {
            for (j, c) in text.chars().enumerate() {
                line[start + j] = c;
            }
        }
    }
    let text: String = line.into_iter().collect();
    format!("{}{}\n", " ".repeat(label + 1), text.trim_end())
}

/// One lane's bars in `chart` columns: each bar at least one column, as much of its task's
/// name written into it as fits (a `*` before it on the critical path), and a `|` where
/// it starts right after another bar, so that neighbours never merge.
fn draw_lane(bars: &[&Bar], chart: usize, col: &dyn Fn(i64) -> usize, color: bool) -> String {
    // (char, the bar that owns it) per column.
    let mut cells: Vec<(char, Option<&Bar>)> = vec![(' ', None); chart];
    for bar in bars {
        let from = col(bar.start).min(chart - 1);
        let to = col(bar.end).clamp(from + 1, chart);
        let mut text: Vec<char> = Vec::new();
        if bar.critical {
            text.push('*');
        }
        text.extend(bar.task.chars());
        if bar.attempt > 1 {
            text.extend(format!("#{}", bar.attempt).chars());
        }
        let adjacent = from > 0 && cells[from - 1].1.is_some();
        if adjacent && to - from > 1 {
            text.insert(0, '|');
        }
        // The name up to one column before the bar's end (its last column shows the fill).
        let mut room = (to - from).saturating_sub(1);
        // A cut name would hide a failure's fill: such a bar shows its name whole or not at all.
        if bar.status != "succeeded" && room < text.len() {
            room = usize::from(adjacent);
        }
        for (k, cell) in cells[from..to].iter_mut().enumerate() {
            let c = if k < room || (adjacent && k == 0) {
                text.get(k).copied().unwrap_or(fill(&bar.status))
            } else {
                fill(&bar.status)
            };
            *cell = (c, Some(bar));
        }
    }
    if !color {
        return cells.into_iter().map(|(c, _)| c).collect();
    }
    let mut out = String::new();
    let mut current: Option<*const Bar> = None;
    for (c, bar) in cells {
        let id = bar.map(|b| b as *const Bar);
        if id != current {
            out.push_str(RESET);
            if let Some(b) = bar {
                out.push_str(paint(&b.status));
                if b.critical {
                    out.push_str(CRITICAL);
                }
            }
            current = id;
        }
        // With colour the fill is the background: blank, so names read cleanly.
        out.push(if bar.is_some_and(|b| c == fill(&b.status)) {
            ' '
        } else {
            c
        });
    }
    out.push_str(RESET);
    out
}

fn legend(out: &mut String, color: bool) {
    let items = [
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("timed_out", "timed out"),
        ("canceled", "canceled"),
        ("lost", "lost"),
        ("running", "running"),
    ];
    let parts: Vec<String> = items
        .iter()
        .map(|(status, name)| {
            if color {
                format!("{} {RESET} {name}", paint(status))
            } else {
                format!("{} {name}", fill(status))
            }
        })
        .collect();
    let _ = writeln!(out, "legend       {} · * critical path", parts.join("  "));
}
