//! Errors in plan and fleet files. Each problem names the file, the line, what it is about
//! (`task "load" key `after``) and what to do, so a user can fix the file without guessing.
//! Problems are collected, not returned one at a time: a user fixing a plan sees all of them.
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, when the input came from one.
    pub path: Option<PathBuf>,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// What the problem is about, e.g. `task "load" key `after``.
    pub subject: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{}:{line}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if let Some(subject) = &self.subject {
            write!(f, "{subject}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A plan or fleet file that could not be used. Maps to exit code 2 (bad input).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("failed to read {what} `{}`: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One or more problems, sorted by file and line; displayed one per line.
    #[error("{}", DisplayLines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl PlanError {
    /// The problems found (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PlanError::Read { .. } => &[],
            PlanError::Invalid(d) => d,
        }
    }

    pub(crate) fn invalid(mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by(|a, b| (&a.path, a.line).cmp(&(&b.path, b.line)));
        diagnostics.dedup();
        PlanError::Invalid(diagnostics)
    }
}

struct DisplayLines<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The text of one input file, to turn byte spans into line numbers.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// 1-based line of a byte offset.
    pub fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The line of the first non-blank character of a span: spans of tables may start at
    /// the newline ending the previous line.
    pub fn span_line(&self, span: &Range<usize>) -> usize {
        let text = self.text.get(span.clone()).unwrap_or("");
        let skip = text.len() - text.trim_start().len();
        self.line(span.start + skip)
    }

    /// The line of a TOML error that came without a position (toml reports a dotted key
    /// of more than 80 parts so): the first line that, parsed on its own, fails the same
    /// way (among all its errors). Such errors come from one line alone; `None` when no
    /// line does.
    pub fn line_of_unplaced(&self, e: &toml::de::Error) -> Option<usize> {
        self.text
            .lines()
            .position(|line| {
                toml::de::DeTable::parse_recoverable(line)
                    .1
                    .iter()
                    .any(|alone| alone.span().is_none() && alone.message() == e.message())
            })
            .map(|i| i + 1)
    }

    pub fn diag(
        &self,
        span: &Range<usize>,
        subject: impl Into<Option<String>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            path: Some(self.path.to_owned()),
            line: Some(self.span_line(span)),
            subject: subject.into(),
            message: message.into(),
        }
    }
}

/// The candidate closest to `word` by edit distance, when close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word_lower, &c.to_lowercase()), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" or "".
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    quote: &str,
) -> String {
    match closest(word, candidates) {
        Some(c) => format!(" (did you mean {quote}{c}{quote}?)"),
        None => String::new(),
    }
}

/// Edit distance over chars where swapping two neighbours counts as one edit (optimal
/// string alignment), so that "kye" is one typo away from "key".
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // d[i][j]: distance between a[..i] and b[..j]; three rows suffice.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j - 1] + cost).min(prev[j] + 1).min(row[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("stage-custmers", "stage-customers"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("kye", "key"), 1);
        assert_eq!(edit_distance("abc", ""), 3);
    }

    #[test]
    fn suggests_only_close_names() {
        let names = ["stage-customers", "load-facts"];
        assert_eq!(closest("stage-custmers", names), Some("stage-customers"));
        assert_eq!(closest("Load-Facts", names), Some("load-facts"));
        assert_eq!(closest("something-else", names), None);
    }

    #[test]
    fn lines_from_offsets() {
        let src = Source {
            path: Path::new("p.toml"),
            text: "a = 1\n\n[plan]\nb = 2\n",
        };
        assert_eq!(src.line(0), 1);
        assert_eq!(src.line(7), 3);
        assert_eq!(src.span_line(&(5..12)), 3);
    }

    #[test]
    fn display_forms() {
        let d = Diagnostic {
            path: Some("plan.toml".into()),
            line: Some(12),
            subject: Some("task \"load\" key `after`".into()),
            message: "no task named \"x\"".into(),
        };
        assert_eq!(
            d.to_string(),
            "plan.toml:12: task \"load\" key `after`: no task named \"x\""
        );
        let e = PlanError::invalid(vec![d.clone(), Diagnostic { line: Some(3), ..d }]);
        assert!(e.to_string().starts_with("plan.toml:3: "));
        assert_eq!(e.to_string().lines().count(), 2);
    }
}
