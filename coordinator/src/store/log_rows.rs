//! How log lines sit in the `logs` table (schema version 5).
//!
//! A row holds `n` consecutive lines of one source with one step, stream and time, joined
//! by '\n', and the lines are numbered `id` .. `id + n - 1`: the writer leaves those ids
//! free, so a line's number still orders the run's lines and is `logs --follow`'s cursor.
//! A line that itself holds a '\n' is a row of its own (n = 1, its text verbatim), as is
//! every row written before version 5.
//!
//! Why rows of many lines: one row per line cost the store's writer an INSERT and two
//! index updates per line, about two thirds of the coordinator's CPU while a job printed
//! 100-byte lines. A sidecar already sends lines in batches; a row per batch (per step
//! and stream) makes the per-line cost a copy.
use rusqlite::{OptionalExtension, Transaction, params};

use super::apply::stream_code;
use crate::events::LogLine;

/// At most this many lines in one row. Readers rely on it to find the row holding a
/// given line with an index range (`id > line - MAX_ROW_LINES`).
pub const MAX_ROW_LINES: i64 = 1024;
/// A row stops growing past this many bytes of text (a few long lines make a row).
const MAX_ROW_BYTES: usize = 256 * 1024;

/// Appends `lines` (of one source, all at `ts_ms`) as few rows.
pub fn insert(
    tx: &Transaction<'_>,
    run: i64,
    src: i64,
    ts_ms: i64,
    lines: &[LogLine],
) -> rusqlite::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    // The writer holds the write lock for the whole transaction: nobody else takes ids
    // between this read and the inserts.
    let mut next: i64 = tx
        .prepare_cached("SELECT id + n FROM logs ORDER BY id DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(1);
    let mut stmt = tx.prepare_cached(
        "INSERT INTO logs (id, run, src, step, stream, line, ts_ms, n)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut text = String::new();
    let mut rest = lines;
    while let Some(first) = rest.first() {
        let n = row_len(rest);
        let line: &str = if n == 1 {
            &first.line
        } else {
            text.clear();
            for (i, l) in rest[..n].iter().enumerate() {
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(&l.line);
            }
            &text
        };
        stmt.execute(params![
            next,
            run,
            src,
            first.step,
            stream_code(first.stream),
            line,
            ts_ms,
            n as i64
        ])?;
        next += n as i64;
        rest = &rest[n..];
    }
    Ok(())
}

/// How many of `lines` (at least one) the next row takes.
fn row_len(lines: &[LogLine]) -> usize {
    let first = &lines[0];
    if first.line.contains('\n') {
        return 1;
    }
    let mut bytes = first.line.len();
    let mut n = 1;
    for l in &lines[1..] {
        bytes += 1 + l.line.len();
        if n as i64 == MAX_ROW_LINES
            || l.step != first.step
            || l.stream != first.stream
            || bytes > MAX_ROW_BYTES
            || l.line.contains('\n')
        {
            break;
        }
        n += 1;
    }
    n
}

/// The lines of a row with their numbers: (`id + k`, line k).
pub fn split(id: i64, n: i64, text: &str) -> impl DoubleEndedIterator<Item = (i64, &str)> {
    // A row of one line is verbatim: it may hold a '\n' of its own.
    let lines: Vec<&str> = if n <= 1 {
        vec![text]
    } else {
        text.split('\n').collect()
    };
    lines
        .into_iter()
        .enumerate()
        .map(move |(k, l)| (id + k as i64, l))
}
