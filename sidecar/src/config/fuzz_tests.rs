//! Property tests for bad sidecar config input (issue 14, item 10): whatever the text,
//! `from_text` returns, and a refusal names the config file and, when it points into the
//! file, a line that exists there.
use std::path::Path;

use proptest::prelude::*;

use super::*;

const CONFIG_PATH: &str = "/etc/agentfleet/sidecar.toml";

/// A config that exercises every section: mutations of it reach deep into the loader.
const VALID: &str = r#"name = "sql1"
listen = "0.0.0.0:7443"
state_dir = "state"
slots = 4
stop_grace = "10s"

[tls]
cert = "pki/sql1.pem"
key = "pki/sql1.key"
client_ca = "/etc/pki/ca.pem"
allow_clients = ["coordinator"]
crl = "pki/ca.crl"
revoked = ["01:02"]

[telemetry]
service_name = "sidecar-sql1"

[[job]]
name = "ETL - Stage"
params = ["BUSINESS_DATE"]
[[job.step]]
name = "extract"
run = ["scripts/extract.sh", "--fast"]
on_success = "goto:load"
on_failure = "fail"
[[job.step]]
name = "load"
run = ["dtexec", "/F", "x.dtsx"]
"#;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Parses and checks the refusal contract; the call returning at all is the no-panic check.
fn check(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new(CONFIG_PATH);
    let Err(err) = from_text(text, path, &Flags::default(), &|_| None) else {
        return Ok(());
    };
    let lines_in_text = text.split('\n').count();
    let shown = err.to_string();
    prop_assert!(shown.contains(CONFIG_PATH), "no file in: {shown}");
    match &err {
        ConfigError::Parse { path: p, line, .. } => {
            prop_assert_eq!(p.as_path(), path);
            prop_assert!(
                (1..=lines_in_text).contains(line),
                "line {line} of {lines_in_text}: {shown}"
            );
            prop_assert!(
                shown.starts_with(&format!("{CONFIG_PATH}:{line}:")),
                "{shown}"
            );
        }
        ConfigError::Invalid { path: p, problems } => {
            prop_assert_eq!(p.as_path(), path);
            prop_assert!(!problems.is_empty());
            for problem in problems {
                if let Some(line) = problem.line {
                    prop_assert!(
                        (1..=lines_in_text).contains(&line),
                        "line {line} of {lines_in_text}: {shown}"
                    );
                }
            }
        }
        other => prop_assert!(false, "unexpected kind of error for file text: {other:?}"),
    }
    Ok(())
}

/// One edit of the valid config at a byte position (wrapped to the text's length).
#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    FlipByte { at: usize, mask: u8 },
    DuplicateLine { line: usize },
    DropLine { line: usize },
    ReplaceValue { line: usize, value: String },
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,12}".prop_map(|s| toml::Value::String(s).to_string()),
        Just("\"\\u0000\"".to_owned()),
        Just("\"\u{202e}\u{feff}\u{10ffff}\"".to_owned()),
        (1usize..5000).prop_map(|n| format!("\"{}\"", "y".repeat(n))),
        Just("[[[[[[[[[[]]]]]]]]]]".to_owned()),
        Just("{ a = { b = { c = [1, \"x\", {}] } } }".to_owned()),
        Just("\"-5s\"".to_owned()),
        Just("\"99999999999999999999h\"".to_owned()),
        Just("\"goto:\"".to_owned()),
        Just("\"goto:nowhere\"".to_owned()),
        Just("[]".to_owned()),
    ];
    prop_oneof![
        (any::<usize>(), 1usize..20).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), ".{1,20}").prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::FlipByte { at, mask }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        any::<usize>().prop_map(|line| Mutation::DropLine { line }),
        (any::<usize>(), value).prop_map(|(line, value)| Mutation::ReplaceValue { line, value }),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    match mutation {
        Mutation::Delete { at, len } => {
            let at = at % (bytes.len() + 1);
            let end = (at + len).min(bytes.len());
            bytes.drain(at..end);
        }
        Mutation::Insert { at, text } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, text.bytes());
        }
        Mutation::FlipByte { at, mask } => {
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] ^= mask;
            }
        }
        Mutation::DuplicateLine { line } => {
            let i = line % lines.len();
            lines.insert(i, lines[i].clone());
            return lines.join("\n");
        }
        Mutation::DropLine { line } => {
            lines.remove(line % lines.len());
            return lines.join("\n");
        }
        Mutation::ReplaceValue { line, value } => {
            let i = line % lines.len();
            if let Some((key, _)) = lines[i].split_once('=') {
                lines[i] = format!("{key}= {value}");
            }
            return lines.join("\n");
        }
    }
    // Byte edits may cut a character in two: the loader gets text, so make it text.
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn the_config_mutated_here_is_valid() {
    from_text(VALID, Path::new(CONFIG_PATH), &Flags::default(), &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Nesting far deeper than any generated case: refused with a line by the TOML parser's
/// recursion limit, rather than overflowing the stack (an abort, not a panic).
#[test]
fn very_deep_nesting_is_refused_with_a_line() {
    let depth = 100_000;
    let deep = [
        format!("name = {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        format!("name = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth)),
        format!("{} = 1\n", vec!["a"; depth].join(".")),
        format!("[{}]\n", vec!["job"; depth].join(".")),
    ];
    for text in deep {
        check(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(from_text(&text, Path::new(CONFIG_PATH), &Flags::default(), &|_| None).is_err());
    }
}

/// toml reports a dotted key of more than 80 parts without a position, which the
/// loader showed as line 1 wherever the key was.
#[test]
fn a_too_deep_dotted_key_is_reported_at_its_line() {
    let key = vec!["a"; 100].join(".");
    for (text, line) in [
        (format!("name = \"sql1\"\nslots = 2\n{key} = 1\n"), 3),
        (format!("name = \"sql1\"\n\n[{key}]\n"), 3),
    ] {
        match from_text(&text, Path::new(CONFIG_PATH), &Flags::default(), &|_| None) {
            Err(ConfigError::Parse { line: got, .. }) => assert_eq!(got, line, "{text}"),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_name_the_file(text in "(?s).{0,400}") {
        check(&text)?;
    }

    #[test]
    fn mutated_valid_configs_never_panic_and_errors_name_the_file(
        mutations in prop::collection::vec(arb_mutation(), 1..5),
    ) {
        let text = mutations.iter().fold(VALID.to_owned(), |text, m| apply(&text, m));
        check(&text)?;
    }
}
