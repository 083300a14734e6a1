//! Property tests for bad plan input (issue 14, item 10): whatever the text, `parse`
//! returns, and every problem it reports is a diagnostic naming the plan file and a line
//! in it; a valid generated plan comes back as the tasks it was generated from.
//!
//! Case counts are small so the whole module runs in a few seconds in a debug build.
use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::*;

const PLAN_PATH: &str = "fuzz/plan.toml";

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// A TOML string literal for any text (escapes quotes, control characters, NUL).
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Parses and checks the contract for refused input: no panic (the call returning is the
/// check), and each diagnostic names the file and a line that exists in the text. The one
/// diagnostic about the whole file (a plan without any task) has no line by design.
fn check_parse(text: &str) -> Result<Option<Plan>, TestCaseError> {
    let path = Path::new(PLAN_PATH);
    match parse(text, path) {
        Ok(plan) => Ok(Some(plan)),
        Err(err) => {
            let diagnostics = err.diagnostics();
            prop_assert!(
                !diagnostics.is_empty(),
                "refused without a diagnostic: {err}"
            );
            let lines_in_text = text.split('\n').count();
            for d in diagnostics {
                prop_assert_eq!(d.path.as_deref(), Some(path), "no file in {}", d);
                let whole_file = d.message.starts_with("the plan has no tasks");
                match d.line {
                    Some(line) => prop_assert!(
                        (1..=lines_in_text).contains(&line),
                        "line {line} is outside the text ({lines_in_text} lines): {d}"
                    ),
                    None => prop_assert!(whole_file, "diagnostic without a line: {d}"),
                }
                prop_assert!(d.to_string().starts_with(PLAN_PATH), "{d}");
            }
            Ok(None)
        }
    }
}

/// Values of every TOML type, including the awkward ones: huge and negative numbers,
/// special floats, strings with NUL, odd Unicode and long runs, dates, deep nesting.
fn arb_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("9223372036854775808".to_owned()),
        Just("-0".to_owned()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("-inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        ".{0,20}".prop_map(|s| quoted(&s)),
        Just(quoted("nul\0inside")),
        Just(quoted("\u{202e}right-to-left\u{feff}\u{10ffff}")),
        (1usize..5000).prop_map(|n| quoted(&"x".repeat(n))),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("07:32:00".to_owned()),
        Just("'''multi\nline'''".to_owned()),
        "[a-z]{1,8}(s|m|h)".prop_map(|s| quoted(&s)),
        Just("\"task-1\"".to_owned()),
        Just("\"task-2\"".to_owned()),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..4).prop_map(|kv| {
                let pairs: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", pairs.join(", "))
            }),
        ]
    })
}

/// Keys the plan knows, in their sections, and keys it does not.
fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "job",
            "after",
            "on",
            "retries",
            "timeout",
            "priority",
            "rerun_if_lost",
            "optional",
            "params",
            "max_parallel",
            "fail_fast",
            "insecure",
            "endpoint",
            "plan",
            "task",
            "fleet",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_-]{0,12}",
        ".{1,10}".prop_map(|s| quoted(&s)),
        Just("a.b.c.d.e.f".to_owned()),
        // Past toml's limit of 80 parts, which it reports without a position.
        (70usize..100).prop_map(|parts| vec!["k"; parts].join(".")),
    ]
}

fn arb_header() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "[plan]",
            "[plan.params]",
            "[[task]]",
            "[[task]]",
            "[[task]]",
            "[task]",
            "[fleet]",
            "[fleet.tls]",
            "[fleet.sidecars.s1]",
            "[[plan]]",
            "[task.params]",
            "[[fleet.sidecars]]",
        ])
        .prop_map(str::to_owned),
        (1usize..40).prop_map(|depth| format!("[{}]", vec!["t"; depth].join("."))),
        arb_key().prop_map(|k| format!("[{k}]")),
    ]
}

/// Keys of one table, each once (TOML refuses a key twice; that is covered by the text
/// properties): the given known keys with wrong or right values, and unknown keys.
fn arb_table(known: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    let key = prop_oneof![
        3 => prop::sample::select(known).prop_map(str::to_owned),
        1 => arb_key(),
    ];
    prop::collection::btree_map(key, arb_value(), 0..6).prop_map(|table| {
        table
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect()
    })
}

/// A task table that often is right but for one thing: a name from a tiny pool (so
/// duplicates are common), `after` naming tasks of that pool (so are cycles and
/// self-dependencies), and random other keys.
fn arb_task_table() -> impl Strategy<Value = String> {
    const POOL: [&str; 3] = ["task-1", "task-2", "task-3"];
    (
        prop::option::of(prop::sample::select(POOL.to_vec())),
        prop::option::of(prop::collection::vec(
            prop::sample::select(POOL.to_vec()),
            0..3,
        )),
        any::<bool>(),
        arb_table(&[
            "retries",
            "timeout",
            "priority",
            "on",
            "params",
            "optional",
            "rerun_if_lost",
        ]),
    )
        .prop_map(|(name, after, has_job, rest)| {
            let mut lines = vec!["[[task]]".to_owned()];
            lines.extend(name.map(|n| format!("name = \"{n}\"")));
            lines.extend(after.map(|a| format!("after = {a:?}")));
            if has_job {
                lines.push("job = \"J\"".into());
            }
            lines.extend(
                rest.into_iter()
                    .filter(|l| !["name ", "after ", "job "].iter().any(|k| l.starts_with(k))),
            );
            lines.join("\n")
        })
}

/// The body of a `[fleet]` that decodes, so the fleet's own checks run: sidecars with
/// odd names and endpoints (relative sockets, no port, empty), TLS or not.
fn arb_fleet_sidecars() -> impl Strategy<Value = Vec<String>> {
    let endpoint = prop_oneof![
        Just("unix:/run/s.sock".to_owned()),
        Just("unix:relative.sock".to_owned()),
        Just("https://sql1:7443".to_owned()),
        Just("sql1".to_owned()),
        Just(String::new()),
        ".{0,20}",
    ];
    let name = prop_oneof![
        prop::sample::select(vec!["s1", "s2", "task-1"]).prop_map(str::to_owned),
        ".{1,8}",
    ];
    (
        any::<bool>(),
        prop::collection::btree_map(name, endpoint, 0..3),
        prop::option::of(prop::collection::vec(".{0,12}", 3)),
    )
        .prop_map(|(insecure, sidecars, tls)| {
            let mut lines = vec![format!("insecure = {insecure}")];
            if let Some(files) = tls {
                lines.push(format!(
                    "tls = {{ ca = {}, cert = {}, key = {} }}",
                    quoted(&files[0]),
                    quoted(&files[1]),
                    quoted(&files[2])
                ));
            }
            let entries: Vec<String> = sidecars
                .iter()
                .map(|(name, endpoint)| {
                    format!("{} = {{ endpoint = {} }}", quoted(name), quoted(endpoint))
                })
                .collect();
            lines.push(format!("sidecars = {{ {} }}", entries.join(", ")));
            lines
        })
}

/// Plan-shaped text that is valid TOML (mostly) but a wrong plan in many ways: unknown
/// keys and sections, wrong types, huge numbers, odd strings, deep nesting, duplicate
/// task names, `after` cycles.
fn arb_wrong_plan() -> impl Strategy<Value = String> {
    (
        prop::collection::btree_map(arb_key(), arb_value(), 0..3),
        prop::option::of(arb_table(&[
            "name",
            "max_parallel",
            "timeout",
            "fail_fast",
            "params",
        ])),
        prop::option::of(arb_table(&["REGION", "BUSINESS_DATE"])),
        prop::collection::vec(arb_task_table(), 0..6),
        prop::option::of(prop_oneof![
            arb_table(&["insecure", "sidecars", "tls"]),
            arb_fleet_sidecars(),
        ]),
        prop::option::of((arb_header(), arb_table(&["name", "job"]))),
    )
        .prop_map(|(top, plan, params, tasks, fleet, extra)| {
            let mut sections: Vec<String> =
                top.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
            let mut table = |header: &str, lines: Vec<String>| {
                sections.push(header.to_owned());
                sections.extend(lines);
            };
            if let Some(lines) = plan {
                table("[plan]", lines);
            }
            if let Some(lines) = params {
                table("[plan.params]", lines);
            }
            if let Some(lines) = fleet {
                table("[fleet]", lines);
            }
            if let Some((header, lines)) = extra {
                table(&header, lines);
            }
            sections.extend(tasks);
            sections.join("\n")
        })
}

/// One task of a generated valid plan.
#[derive(Debug, Clone)]
struct GenTask {
    job: String,
    after: Vec<usize>,
    on: Vec<String>,
    retries: u32,
    priority: i32,
    optional: bool,
    params: BTreeMap<String, String>,
}

fn arb_valid_plan() -> impl Strategy<Value = Vec<GenTask>> {
    (1usize..8).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (
                    // Non-blank job names with odd Unicode, quotes and backslashes inside.
                    "[A-Za-zé日\\-][A-Za-z0-9 é日\"\\\\\u{1F600}-]{0,15}",
                    // `after` only names earlier tasks: a DAG by construction.
                    prop::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(3)),
                    prop::sample::subsequence(vec!["s1".to_owned(), "s2".to_owned()], 0..=2),
                    any::<u32>(),
                    any::<i32>(),
                    any::<bool>(),
                    prop::collection::btree_map("[A-Z][A-Z_]{0,5}", ".{0,10}", 0..3),
                )
                    .prop_map(
                        |(job, after, on, retries, priority, optional, params)| GenTask {
                            job,
                            after,
                            on,
                            retries,
                            priority,
                            optional,
                            params,
                        },
                    )
            })
            .collect::<Vec<_>>()
    })
}

fn render(tasks: &[GenTask]) -> String {
    let mut text = String::from(
        "[fleet]\ninsecure = true\n[fleet.sidecars.s1]\nendpoint = \"unix:/run/s1.sock\"\n\
         [fleet.sidecars.s2]\nendpoint = \"unix:/run/s2.sock\"\n",
    );
    for (i, t) in tasks.iter().enumerate() {
        let after: Vec<String> = t
            .after
            .iter()
            .map(|a| quoted(&format!("task-{a}")))
            .collect();
        let on: Vec<String> = t.on.iter().map(|s| quoted(s)).collect();
        let params: Vec<String> = t
            .params
            .iter()
            .map(|(k, v)| format!("{k} = {}", quoted(v)))
            .collect();
        text.push_str(&format!(
            "\n[[task]]\nname = \"task-{i}\"\njob = {}\nafter = [{}]\non = [{}]\nretries = {}\n\
             priority = {}\noptional = {}\nparams = {{ {} }}\n",
            quoted(&t.job),
            after.join(", "),
            on.join(", "),
            t.retries,
            t.priority,
            t.optional,
            params.join(", "),
        ));
    }
    text
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn arbitrary_text_never_panics_and_errors_have_a_line(text in "(?s).{0,400}") {
        check_parse(&text)?;
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_parse(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn wrong_plans_never_panic_and_errors_have_a_line(text in arb_wrong_plan()) {
        check_parse(&text)?;
    }

    #[test]
    fn a_valid_generated_plan_round_trips(tasks in arb_valid_plan()) {
        let text = render(&tasks);
        let plan = match check_parse(&text)? {
            Some(plan) => plan,
            None => {
                let err = parse(&text, Path::new(PLAN_PATH)).unwrap_err();
                return Err(TestCaseError::fail(format!("valid plan refused: {err}\n{text}")));
            }
        };
        prop_assert_eq!(plan.tasks.len(), tasks.len());
        for (i, (got, want)) in plan.tasks.iter().zip(&tasks).enumerate() {
            prop_assert_eq!(got.index, i);
            prop_assert_eq!(&got.name, &format!("task-{i}"));
            prop_assert_eq!(&got.job, &want.job);
            prop_assert_eq!(&got.after, &want.after);
            prop_assert_eq!(&got.on, &want.on);
            prop_assert_eq!(got.retries, want.retries);
            prop_assert_eq!(got.priority, want.priority);
            prop_assert_eq!(got.optional, want.optional);
            prop_assert_eq!(&got.params, &want.params);
        }
        // Dependencies first: every task comes after the tasks it waits for.
        let position: BTreeMap<usize, usize> =
            plan.topo_order().iter().enumerate().map(|(pos, &t)| (t, pos)).collect();
        for t in &plan.tasks {
            for a in &t.after {
                prop_assert!(position[a] < position[&t.index]);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// Duplicate names and `after` cycles among otherwise valid tasks are refused with a
    /// line, never accepted.
    #[test]
    fn duplicates_and_cycles_are_refused_with_a_line(
        n in 2usize..6,
        duplicate in any::<bool>(),
        cycle_len in 1usize..6,
    ) {
        let cycle_len = cycle_len.min(n);
        let mut text = String::new();
        for i in 0..n {
            let name = if duplicate && i == n - 1 { 0 } else { i };
            // Task i waits for i + 1 around a ring of the first `cycle_len` tasks.
            let after = if i < cycle_len { format!("[\"t{}\"]", (i + 1) % cycle_len) } else { "[]".into() };
            text.push_str(&format!("[[task]]\nname = \"t{name}\"\njob = \"J\"\nafter = {after}\n"));
        }
        prop_assert!(check_parse(&text)?.is_none(), "accepted:\n{}", text);
    }
}

/// Nesting far deeper than any generated case: the TOML parser's recursion limit must
/// refuse it with a line, rather than the stack overflowing (an abort, not a panic).
#[test]
fn very_deep_nesting_is_refused_with_a_line() {
    let depth = 100_000;
    let deep = [
        format!(
            "[plan]\nname = {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        format!(
            "[plan]\nname = {}1{}\n",
            "{ a = ".repeat(depth),
            " }".repeat(depth)
        ),
        format!("[plan]\n{} = 1\n", vec!["a"; depth].join(".")),
        format!("[{}]\n", vec!["a"; depth].join(".")),
    ];
    for text in deep {
        let refused = check_parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert!(refused.is_none(), "accepted a nesting {depth} deep");
    }
}

/// toml reports a dotted key of more than 80 parts without a position; found by
/// `very_deep_nesting_is_refused_with_a_line`, which got `plan.toml: not valid TOML:
/// recursion limit` without a line.
#[test]
fn a_too_deep_dotted_key_is_reported_at_its_line() {
    let key = vec!["a"; 100].join(".");
    for (text, line) in [
        (format!("[plan]\nname = \"n\"\n{key} = 1\n"), 3),
        (
            format!("[[task]]\nname = \"t\"\njob = \"j\"\n\n[{key}]\n"),
            5,
        ),
        // Alone, the line fails in a second way too (a string that goes on below).
        (format!("[plan]\n{key} = {{ a = '''multi\nline''' }}\n"), 2),
    ] {
        let err = parse(&text, Path::new(PLAN_PATH)).unwrap_err();
        let lines: Vec<Option<usize>> = err.diagnostics().iter().map(|d| d.line).collect();
        assert_eq!(lines, [Some(line)], "{err}");
    }
}
