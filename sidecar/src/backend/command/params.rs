//! Job parameters: which ones a command job declares, and which values each accepts.
//!
//! A parameter reaches the job's steps as an environment variable, never as part of a
//! command line. That is not enough on its own: a step that expands it again (`%VAR%` in
//! a `.cmd` script, `$VAR` unquoted in `sh -c`) turns `2026-11-24 & whoami` into a second
//! command. So a job can say what each parameter is:
//!
//! ```toml
//! params = { BUSINESS_DATE = "date", REGION = "^[A-Z]{2}$", BATCH = "int" }
//! ```
//!
//! and a value that does not match is refused (INVALID_ARGUMENT) before anything starts.
//! The list form (`params = ["BUSINESS_DATE"]`) declares free `text`. Every value, typed
//! or not, is refused when it holds a control character (no environment holds a NUL, and
//! a newline or ESC in a variable is never what a scheduler meant) or is over
//! `MAX_VALUE_CHARS` long.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest value accepted, in characters.
pub const MAX_VALUE_CHARS: usize = 4096;

/// `params` as written in a `[[job]]`: a list of names (free text) or a table of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Params {
    List(Vec<String>),
    Typed(BTreeMap<String, String>),
}

impl Default for Params {
    fn default() -> Self {
        Self::List(Vec::new())
    }
}

impl Params {
    /// The declared names, in order (the table's order is by name).
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::List(names) => names.clone(),
            Self::Typed(rules) => rules.keys().cloned().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            Self::List(names) => names.iter().any(|n| n == name),
            Self::Typed(rules) => rules.contains_key(name),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Self::List(names) => names.is_empty(),
            Self::Typed(rules) => rules.is_empty(),
        }
    }

    /// Each declared name with its compiled rule, or the first rule that does not parse.
    pub fn rules(&self) -> Result<BTreeMap<String, Rule>, String> {
        match self {
            Self::List(names) => Ok(names.iter().map(|n| (n.clone(), Rule::Text)).collect()),
            Self::Typed(rules) => rules
                .iter()
                .map(|(name, spec)| {
                    Rule::parse(spec)
                        .map(|rule| (name.clone(), rule))
                        .map_err(|e| format!("parameter `{name}`: {e}"))
                })
                .collect(),
        }
    }
}

/// What one parameter accepts.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Any text without control characters.
    Text,
    /// `YYYY-MM-DD`, a real date.
    Date,
    /// RFC 3339, e.g. `2026-11-24T02:00:00Z`.
    DateTime,
    /// A whole number (i64).
    Int,
    /// A decimal number.
    Number,
    /// `true` or `false`.
    Bool,
    /// Letters, digits and `_`, not starting with a digit.
    Identifier,
    /// A regular expression the whole value must match.
    Pattern(regex::Regex),
}

/// The type names a rule may be (anything else is a regular expression).
pub const TYPES: &str = "text, date, datetime, int, number, bool, identifier";

impl Rule {
    /// A type name, or else a regular expression (matched against the whole value).
    pub fn parse(spec: &str) -> Result<Self, String> {
        Ok(match spec.trim() {
            "text" => Self::Text,
            "date" => Self::Date,
            "datetime" => Self::DateTime,
            "int" => Self::Int,
            "number" => Self::Number,
            "bool" => Self::Bool,
            "identifier" => Self::Identifier,
            "" => {
                return Err(format!(
                    "an empty rule; write one of {TYPES}, or a regular expression"
                ));
            }
            pattern => {
                let anchored = format!("^(?:{pattern})$");
                Self::Pattern(regex::Regex::new(&anchored).map_err(|e| {
                    format!("`{pattern}` is neither a type ({TYPES}) nor a valid regular expression: {e}")
                })?)
            }
        })
    }

    /// Ok, or what the value should look like.
    pub fn check(&self, value: &str) -> Result<(), String> {
        if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(format!("it holds the control character U+{:04X}", c as u32));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(format!("it is longer than {MAX_VALUE_CHARS} characters"));
        }
        let ok = match self {
            Self::Text => true,
            Self::Date => {
                value.len() == 10 && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok()
            }
            Self::DateTime => chrono::DateTime::parse_from_rfc3339(value).is_ok(),
            Self::Int => value.parse::<i64>().is_ok(),
            Self::Number => {
                value.parse::<f64>().is_ok_and(f64::is_finite)
                    && value
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
            }
            Self::Bool => matches!(value, "true" | "false"),
            Self::Identifier => {
                !value.is_empty()
                    && !value.starts_with(|c: char| c.is_ascii_digit())
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            }
            Self::Pattern(re) => re.is_match(value),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("it is not {}", self.expected()))
        }
    }

    /// "a date (YYYY-MM-DD)", for refusals.
    fn expected(&self) -> String {
        match self {
            Self::Text => "text".into(),
            Self::Date => "a date (YYYY-MM-DD)".into(),
            Self::DateTime => "a date and time (RFC 3339, e.g. 2026-11-24T02:00:00Z)".into(),
            Self::Int => "a whole number".into(),
            Self::Number => "a number".into(),
            Self::Bool => "true or false".into(),
            Self::Identifier => "an identifier (letters, digits and _)".into(),
            Self::Pattern(re) => {
                let s = re.as_str();
                format!("a match of `{}`", &s[4..s.len() - 2])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, value: &str) -> Result<(), String> {
        Rule::parse(spec).unwrap().check(value)
    }

    #[test]
    fn an_injected_command_is_refused_by_a_typed_parameter() {
        // The reviewer's value: accepted before, and expanded by a `.cmd` step.
        let e = check("date", "2026-11-24 & whoami").unwrap_err();
        assert_eq!(e, "it is not a date (YYYY-MM-DD)");
        assert!(check("date", "2026-11-24").is_ok());
        assert!(check("date", "2026-02-30").is_err());
        assert!(check("^[A-Z]{2}$", "EU").is_ok());
        // Anchored: a match inside the value is not enough.
        let e = check("^[A-Z]{2}$", "EU & whoami").unwrap_err();
        assert!(e.contains("[A-Z]{2}"), "{e}");
        assert!(check("[A-Z]{2}", "EU;x").is_err());
    }

    #[test]
    fn types_accept_what_they_name() {
        assert!(check("int", "-42").is_ok() && check("int", "4.2").is_err());
        assert!(check("number", "4.25e3").is_ok() && check("number", "NaN").is_err());
        assert!(check("number", "inf").is_err());
        assert!(check("bool", "true").is_ok() && check("bool", "yes").is_err());
        assert!(check("identifier", "sales_2026").is_ok());
        assert!(check("identifier", "2026_sales").is_err());
        assert!(check("datetime", "2026-11-24T02:00:00Z").is_ok());
        assert!(check("datetime", "2026-11-24").is_err());
        assert!(check("text", "any text, even & and %PATH%").is_ok());
    }

    #[test]
    fn no_value_holds_control_characters_or_is_endless() {
        for spec in ["text", "^.*$"] {
            assert!(check(spec, "a\nb").unwrap_err().contains("U+000A"));
            assert!(check(spec, "a\0b").unwrap_err().contains("U+0000"));
            assert!(check(spec, "\x1b[2J").is_err());
            assert!(check(spec, "tab\tok").is_ok());
            assert!(check(spec, &"x".repeat(MAX_VALUE_CHARS + 1)).is_err());
        }
    }

    #[test]
    fn both_forms_parse_and_a_bad_rule_is_named() {
        let list: Params = toml::from_str::<toml::Table>("params = [\"A\"]").unwrap()["params"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(list.names(), ["A"]);
        let typed: Params = toml::from_str::<toml::Table>("params = { B = \"int\", A = \"date\" }")
            .unwrap()["params"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(typed.names(), ["A", "B"]);
        assert!(typed.rules().is_ok());
        let bad = Params::Typed([("X".to_owned(), "([".to_owned())].into());
        let e = bad.rules().unwrap_err();
        assert!(
            e.starts_with("parameter `X`: `([` is neither a type"),
            "{e}"
        );
    }
}
