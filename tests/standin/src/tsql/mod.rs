//! Checks every catalogued batch with a real T-SQL grammar (`sqlparser`, MS SQL dialect)
//! against the schema fixtures (`schema/msdb.toml`, `schema/ssisdb.toml`), the way SQL Server
//! compiles a batch: an unknown column of an msdb / master / SSISDB table or view is error
//! 207, an unknown procedure parameter 8145, an unknown object 208 / 2812 — and then nothing
//! in the batch runs.
//!
//! What the grammar lacks is rewritten first, and the rewrite is reported (`Report::notes`):
//! `BEGIN TRY … END CATCH` (the statements inside are checked as if unwrapped),
//! `EXEC @rc = proc` (checked as `EXEC proc`) and `INSERT @t EXEC proc` (checked as
//! `EXEC proc`; the column count of the target is not compared). A batch that still does not
//! parse is checked statement by statement; statements the grammar cannot read are listed in
//! `Report::unchecked` and logged, never silently passed.
//!
//! Not checked (only a real server can): types and conversions, permissions beyond the
//! stand-in's own model, semantics of built-in functions, name resolution of table
//! variables, temp tables and `OPENJSON … WITH` columns, and everything about objects
//! outside msdb / master / SSISDB / `sys.*`.

mod resolve;
pub mod schema;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sqlparser::dialect::MsSqlDialect;
use sqlparser::parser::Parser;

use crate::tds::tokens::ServerMessage;
pub use schema::Schema;

/// What a check looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Rewrites applied because the grammar lacks a construct.
    pub notes: Vec<String>,
    /// Statements the grammar could not read at all (not checked).
    pub unchecked: Vec<String>,
    /// `(object, column)` pairs verified against the fixture.
    pub columns: Vec<(String, String)>,
    /// `(procedure, parameter)` pairs verified against the fixture.
    pub parameters: Vec<(String, String)>,
}

/// Checks one batch against the shipped fixture.
pub fn check(text: &str) -> Result<Report, ServerMessage> {
    check_with(Schema::get(), text)
}

/// Like [`check`], remembered per text (the sidecar sends the same few texts every tick).
pub fn check_cached(text: &str) -> Result<(), ServerMessage> {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<(), ServerMessage>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(text) {
        return r.clone();
    }
    let result = check(text).map(|report| {
        for s in &report.unchecked {
            tracing::warn!(statement = %s, "T-SQL statement not checked: the grammar lacks a construct in it");
        }
    });
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() < 256 {
        c.insert(text.to_string(), result.clone());
    }
    result
}

pub fn check_with(schema: &Schema, text: &str) -> Result<Report, ServerMessage> {
    let mut report = Report::default();
    let code = rewrite(text, &mut report.notes);
    let dialect = MsSqlDialect {};
    match Parser::parse_sql(&dialect, &code) {
        Ok(statements) => {
            for s in &statements {
                resolve::statement(schema, s, &mut report)?;
            }
        }
        Err(_) => {
            for piece in split_statements(&code) {
                match Parser::parse_sql(&dialect, &piece) {
                    Ok(statements) => {
                        for s in &statements {
                            resolve::statement(schema, s, &mut report)?;
                        }
                    }
                    Err(e) => report.unchecked.push(format!(
                        "{} ({e})",
                        piece.trim().chars().take(80).collect::<String>()
                    )),
                }
            }
        }
    }
    Ok(report)
}

/// Replaces whole words `from` (case-insensitive, outside literals) by `to`.
fn replace_words(code: &str, from: &str, to: &str) -> (String, bool) {
    let lower = code.to_lowercase();
    let from_l = from.to_lowercase();
    let mut out = String::with_capacity(code.len());
    let (mut i, mut hit) = (0, false);
    while let Some(j) = lower[i..].find(&from_l).map(|j| j + i) {
        let before = lower[..j].chars().next_back();
        let after = lower[j + from_l.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@');
        out.push_str(&code[i..j]);
        if word(before) || word(after) {
            out.push_str(&code[j..j + from_l.len()]);
        } else {
            out.push_str(to);
            hit = true;
        }
        i = j + from_l.len();
    }
    out.push_str(&code[i..]);
    (out, hit)
}

/// Rewrites the constructs the grammar lacks (see the module docs), noting each.
fn rewrite(text: &str, notes: &mut Vec<String>) -> String {
    // Comments first (the marker line), keeping literals intact.
    let mut code: String = strip_comments(text);
    for (from, to, note) in [
        (
            "BEGIN TRY",
            "",
            "BEGIN TRY … END CATCH: the statements inside are checked unwrapped",
        ),
        ("END TRY;", "", ""),
        ("END TRY", "", ""),
        ("BEGIN CATCH", "", ""),
        ("END CATCH;", "", ""),
        ("END CATCH", "", ""),
    ] {
        let (c, hit) = replace_words(&code, from, to);
        code = c;
        if hit && !note.is_empty() {
            notes.push(note.to_string());
        }
    }
    // EXEC @rc = proc …  →  EXEC proc …
    let mut out = String::new();
    let mut rest = code.as_str();
    while let Some(i) = find_word(rest, "EXEC") {
        let after = &rest[i + 4..];
        let trimmed = after.trim_start();
        let assigned = trimmed
            .starts_with('@')
            .then(|| trimmed.find('='))
            .flatten()
            .filter(|eq| !trimmed[..*eq].trim().contains(char::is_whitespace));
        if let Some(eq) = assigned {
            let var = trimmed[..eq].trim();
            notes.push(format!(
                "EXEC {var} = proc: checked as EXEC proc (the grammar lacks the return-status form)"
            ));
            out.push_str(&rest[..i + 4]);
            out.push(' ');
            rest = &trimmed[eq + 1..];
            continue;
        }
        out.push_str(&rest[..i + 4]);
        rest = after;
    }
    out.push_str(rest);
    // INSERT @t EXEC proc …  →  EXEC proc …
    let mut code = out;
    let mut search = 0;
    while let Some(i) = find_word(&code[search..], "INSERT").map(|i| i + search) {
        let after = &code[i + 6..];
        let t = after.trim_start();
        let target_len = t.find(char::is_whitespace).unwrap_or(t.len());
        let rest = t[target_len..].trim_start();
        if t.starts_with('@') && find_word(rest, "EXEC") == Some(0) {
            let target = t[..target_len].to_string();
            let start_of_exec = code.len() - rest.len();
            code.replace_range(i..start_of_exec, "");
            notes.push(format!(
                "INSERT {target} EXEC: checked as EXEC (the grammar lacks INSERT … EXEC)"
            ));
        }
        search = i + 6;
        if search >= code.len() {
            break;
        }
    }
    code
}

/// Position of `word` as a whole word (case-insensitive).
fn find_word(s: &str, word: &str) -> Option<usize> {
    let lower = s.to_lowercase();
    let w = word.to_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find(&w).map(|i| i + from) {
        let before = lower[..i].chars().next_back();
        let after = lower[i + w.len()..].chars().next();
        let wordy = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !wordy(before) && !wordy(after) {
            return Some(i);
        }
        from = i + w.len();
    }
    None
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_str = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_str = !in_str;
        }
        if !in_str && c == '-' && chars.peek() == Some(&'-') {
            for d in chars.by_ref() {
                if d == '\n' {
                    out.push('\n');
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Splits at `;` outside literals and parentheses.
fn split_statements(code: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut in_str) = (Vec::new(), String::new(), 0i32, false);
    for c in code.chars() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            ';' if !in_str && depth == 0 => {
                if !cur.trim().is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// 207 as SQL Server words it.
pub fn invalid_column(name: &str) -> ServerMessage {
    ServerMessage::new(207, 16, format!("Invalid column name '{name}'."))
}

/// 8145 as SQL Server words it.
pub fn not_a_parameter(param: &str, procedure: &str) -> ServerMessage {
    ServerMessage::new(
        8145,
        16,
        format!("{param} is not a parameter for procedure {procedure}."),
    )
}

#[cfg(test)]
mod tests;
