//! `coordinator demo-step ACTION...` (hidden): what the demo's sample command-job steps run.
//! The steps print progress, sleep and fail through this very binary rather than `sh`, so
//! the same sample jobs run on Linux, macOS and Windows. The demo writes the binary's own
//! path into the sidecars' configs (see `mod.rs`).
//!
//! Actions run in order:
//!
//! | action | what it does |
//! |---|---|
//! | `say:TEXT` | prints TEXT on stdout |
//! | `warn:TEXT` | prints TEXT on stderr |
//! | `sleep:DURATION` | sleeps, e.g. `sleep:500ms` |
//! | `fail:CODE:TEXT` | prints TEXT on stderr and exits with CODE |
//! | `fail-first:CODE:TEXT` | the same on the step's first attempt (`AGENTFLEET_ATTEMPT` = 1); on a retry, goes on |
//!
//! `{NAME}` in TEXT is replaced by the environment variable NAME (the step's parameters and
//! `AGENTFLEET_*` variables), or left as it is when NAME is not set.
use std::io::Write as _;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args)]
pub struct DemoStepArgs {
    /// Actions, in order: say:TEXT, warn:TEXT, sleep:DURATION, fail:CODE:TEXT,
    /// fail-first:CODE:TEXT. `{NAME}` in TEXT is the environment variable NAME.
    #[arg(required = true, allow_hyphen_values = true)]
    pub actions: Vec<String>,
}

/// One parsed action.
#[derive(Debug, PartialEq)]
enum Action<'a> {
    Say(&'a str),
    Warn(&'a str),
    Sleep(Duration),
    Fail {
        code: u8,
        text: &'a str,
        first_attempt_only: bool,
    },
}

fn parse(action: &str) -> Result<Action<'_>, String> {
    let (kind, rest) = action
        .split_once(':')
        .ok_or_else(|| format!("`{action}`: expected KIND:VALUE"))?;
    let fail = |first_attempt_only| {
        let (code, text) = rest
            .split_once(':')
            .ok_or_else(|| format!("`{action}`: expected {kind}:CODE:TEXT"))?;
        let code = code
            .parse()
            .map_err(|_| format!("`{action}`: `{code}` is not an exit code (1-255)"))?;
        Ok(Action::Fail {
            code,
            text,
            first_attempt_only,
        })
    };
    match kind {
        "say" => Ok(Action::Say(rest)),
        "warn" => Ok(Action::Warn(rest)),
        "sleep" => agentfleet_common::duration::parse(rest)
            .map(Action::Sleep)
            .map_err(|e| format!("`{action}`: {e}")),
        "fail" => fail(false),
        "fail-first" => fail(true),
        _ => Err(format!(
            "`{action}`: unknown action `{kind}` (say, warn, sleep, fail, fail-first)"
        )),
    }
}

/// Replaces each `{NAME}` whose variable `lookup` knows; leaves the rest as written.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').and_then(|close| {
            let name = &after[..close];
            lookup(name).map(|value| (value, close))
        }) {
            Some((value, close)) => {
                out.push_str(&value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks that every action parses (for the sample jobs' test).
#[cfg(test)]
pub(super) fn check(actions: &[&str]) -> Result<(), String> {
    actions.iter().try_for_each(|a| parse(a).map(drop))
}

/// Runs the actions; returns the process exit code (0, a `fail` code, or 2 for bad actions,
/// which are all checked before the first one runs).
pub fn main(args: &DemoStepArgs) -> u8 {
    let actions: Result<Vec<Action<'_>>, String> = args.actions.iter().map(|a| parse(a)).collect();
    let actions = match actions {
        Ok(actions) => actions,
        Err(e) => {
            eprintln!("demo-step: {e}");
            return 2;
        }
    };
    let lookup = |name: &str| std::env::var(name).ok();
    let first_attempt = lookup("AGENTFLEET_ATTEMPT").is_none_or(|a| a == "1");
    for action in actions {
        match action {
            // Flushed line by line, so the sidecar streams each as it comes.
            Action::Say(text) => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", expand(text, &lookup));
                let _ = out.flush();
            }
            Action::Warn(text) => eprintln!("{}", expand(text, &lookup)),
            Action::Sleep(d) => std::thread::sleep(d),
            Action::Fail {
                code,
                text,
                first_attempt_only,
            } => {
                if first_attempt_only && !first_attempt {
                    continue;
                }
                eprintln!("{}", expand(text, &lookup));
                return code;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(parse("say:a: b").unwrap(), Action::Say("a: b"));
        assert_eq!(parse("warn:x").unwrap(), Action::Warn("x"));
        assert_eq!(
            parse("sleep:500ms").unwrap(),
            Action::Sleep(Duration::from_millis(500))
        );
        assert_eq!(
            parse("fail-first:1:deadlock: rerun").unwrap(),
            Action::Fail {
                code: 1,
                text: "deadlock: rerun",
                first_attempt_only: true
            }
        );
        assert!(parse("fail:x:y").unwrap_err().contains("not an exit code"));
        assert!(parse("fail:3").unwrap_err().contains("CODE:TEXT"));
        assert!(parse("sleep:soon").unwrap_err().contains("not a duration"));
        assert!(parse("shout:x").unwrap_err().contains("unknown action"));
        assert!(parse("say").unwrap_err().contains("KIND:VALUE"));
    }

    #[test]
    fn placeholders_expand_known_variables_only() {
        let lookup = |name: &str| (name == "DATE").then(|| "2026-11-24".to_owned());
        assert_eq!(
            expand("load {DATE}: {UNSET} {", &lookup),
            "load 2026-11-24: {UNSET} {"
        );
        assert_eq!(expand("{DATE}{DATE}", &lookup), "2026-11-242026-11-24");
        assert_eq!(expand("no braces", &lookup), "no braces");
    }
}
