//! The plan file as written: serde structures with spans, and the helpers that turn toml's
//! spanned document into them while collecting every problem with its line.
//!
//! Unknown keys are checked by hand on the spanned document before decoding, so that all of
//! them are reported at once (serde stops at the first) with a did-you-mean; the structures
//! still `deny_unknown_fields` as a backstop.
use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{Diagnostic, Source, did_you_mean};

pub(crate) const TOP_KEYS: &[&str] = &["plan", "task", "fleet"];
pub(crate) const PLAN_KEYS: &[&str] = &["name", "max_parallel", "timeout", "fail_fast", "params"];
pub(crate) const TASK_KEYS: &[&str] = &[
    "name",
    "job",
    "on",
    "after",
    "retries",
    "timeout",
    "priority",
    "rerun_if_lost",
    "optional",
    "params",
];

/// `[plan]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlan {
    pub name: Option<Spanned<String>>,
    pub max_parallel: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub fail_fast: bool,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
}

/// One `[[task]]`. `name` and `job` are optional here so that a missing one gets a message
/// saying what to write rather than serde's "missing field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTask {
    pub name: Option<Spanned<String>>,
    pub job: Option<Spanned<String>>,
    #[serde(default)]
    pub on: Vec<Spanned<String>>,
    #[serde(default)]
    pub after: Vec<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub rerun_if_lost: bool,
    #[serde(default)]
    pub optional: bool,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<toml::Value>>,
}

/// "subject key `k`".
pub(crate) fn key_subject(subject: &str, key: &str) -> String {
    if subject.is_empty() {
        format!("key `{key}`")
    } else {
        format!("{subject} key `{key}`")
    }
}

/// Reports every key of `table` that is not in `allowed`. Returns true when all are known.
pub(crate) fn check_keys(
    src: Source<'_>,
    table: &DeTable<'_>,
    allowed: &[&str],
    subject: &str,
    out: &mut Vec<Diagnostic>,
) -> bool {
    let mut ok = true;
    for key in table.keys() {
        let name: &str = key.get_ref();
        if allowed.contains(&name) {
            continue;
        }
        ok = false;
        let hint = did_you_mean(name, allowed.iter().copied(), "`");
        out.push(src.diag(
            &key.span(),
            key_subject(subject, name),
            format!("unknown key{hint}; allowed keys: {}", allowed.join(", ")),
        ));
    }
    ok
}

/// A copy of `table` without the keys not in `allowed` (already reported by
/// [`check_keys`]), so that one typo does not hide the rest of the table.
pub(crate) fn known_only<'i>(table: &DeTable<'i>, allowed: &[&str]) -> DeTable<'i> {
    table
        .iter()
        .filter(|(k, _)| allowed.contains(&k.get_ref().as_ref()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The 1-based line of each key of a table.
pub(crate) fn key_lines(src: Source<'_>, table: &DeTable<'_>) -> BTreeMap<String, usize> {
    table
        .keys()
        .map(|k| (k.get_ref().to_string(), src.span_line(&k.span())))
        .collect()
}

/// Decodes a spanned value (usually a table) into `T`. A type error names the key whose
/// value holds the error's span.
pub(crate) fn decode<T: DeserializeOwned>(
    src: Source<'_>,
    value: Spanned<DeValue<'_>>,
    subject: &str,
) -> Result<T, Diagnostic> {
    let whole = value.span();
    // Keys and value spans, to name the key an error is about.
    let keys: Vec<(String, std::ops::Range<usize>)> = match value.get_ref() {
        DeValue::Table(t) => t
            .iter()
            .map(|(k, v)| (k.get_ref().to_string(), v.span()))
            .collect(),
        _ => Vec::new(),
    };
    T::deserialize(ValueDeserializer::from(value)).map_err(|e| {
        let span = e.span().unwrap_or(whole);
        let key = keys
            .iter()
            .find(|(_, s)| s.start <= span.start && span.end <= s.end)
            .map(|(k, _)| k.as_str());
        let subject = match key {
            Some(k) => key_subject(subject, k),
            None => subject.to_owned(),
        };
        let subject = (!subject.is_empty()).then_some(subject);
        src.diag(&span, subject, e.message().to_owned())
    })
}

/// Parameter values: text, or a number, boolean or date taken as written (so that
/// `BUSINESS_DATE = 2026-11-24` without quotes works too).
pub(crate) fn param_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(d) => Ok(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => Err(format!(
            "a parameter value is text, not {}: write e.g. NAME = \"value\"",
            value.type_str()
        )),
    }
}

/// Parameters reach job steps as environment variables, so their names must be valid ones
/// on every platform.
pub(crate) fn check_param_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!(
            "parameter name `{name}` cannot be an environment variable: use letters, digits \
             and _, not starting with a digit (e.g. BUSINESS_DATE)"
        ))
    }
}

/// Converts `[plan.params]` or a task's `params` into text values, reporting bad ones.
pub(crate) fn params(
    src: Source<'_>,
    raw: &BTreeMap<String, Spanned<toml::Value>>,
    subject: &str,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for (name, value) in raw {
        let checked = check_param_name(name).and_then(|()| param_text(value.get_ref()));
        match checked {
            Ok(text) => {
                params.insert(name.clone(), text);
            }
            Err(message) => out.push(src.diag(
                &value.span(),
                key_subject(subject, &format!("params.{name}")),
                message,
            )),
        }
    }
    params
}
