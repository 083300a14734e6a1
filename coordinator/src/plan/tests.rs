use std::path::Path;
use std::time::Duration;

use super::*;

const NIGHTLY: &str = r#"
[plan]
name = "nightly-etl"
max_parallel = 8
timeout = "6h"
fail_fast = false
[plan.params]
BUSINESS_DATE = "2026-11-24"
REGION = "eu"

[[task]]
name = "stage-customers"
job = "ETL - Stage Customers"
on = ["sql1", "sql2"]
after = []
retries = 1
timeout = "45m"
priority = 0
rerun_if_lost = false

[[task]]
name = "stage-orders"
job = "ETL - Stage Orders"
priority = 5
params = { REGION = "us", BATCH = 500 }

[[task]]
name = "load-facts"
job = "ETL - Load Facts"
after = ["stage-orders", "stage-customers"]

[fleet]
insecure = true
[fleet.sidecars.sql1]
endpoint = "unix:/run/agentfleet/sql1.sock"
[fleet.sidecars.sql2]
endpoint = "unix:/run/agentfleet/sql2.sock"
"#;

fn parse_ok(text: &str) -> Plan {
    parse(text, Path::new("plan.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<String> {
    let err = parse(text, Path::new("plan.toml")).expect_err("plan should be refused");
    err.diagnostics().iter().map(ToString::to_string).collect()
}

#[test]
fn parses_the_documented_plan() {
    let plan = parse_ok(NIGHTLY);
    assert_eq!(plan.name, "nightly-etl");
    assert_eq!(plan.max_parallel, Some(8));
    assert_eq!(plan.timeout, Some(Duration::from_secs(6 * 3600)));
    assert!(!plan.fail_fast);
    assert_eq!(plan.tasks.len(), 3);
    let stage = &plan.tasks[0];
    assert_eq!(stage.index, 0);
    assert_eq!(stage.on, ["sql1", "sql2"]);
    assert_eq!(stage.retries, 1);
    assert_eq!(stage.timeout, Some(Duration::from_secs(45 * 60)));
    assert_eq!(stage.line, 12);
    assert_eq!(stage.line_of("timeout"), 17);
    let orders = plan.task("stage-orders").unwrap();
    assert_eq!(orders.priority, 5);
    assert_eq!(
        orders.params["REGION"], "us",
        "the task overrides the plan default"
    );
    assert_eq!(orders.params["BATCH"], "500");
    assert_eq!(orders.params["BUSINESS_DATE"], "2026-11-24");
    let load = plan.task("load-facts").unwrap();
    assert_eq!(load.after, [0, 1]);
    assert_eq!(plan.dependants(0), [2]);
    assert_eq!(plan.dependants(2), [] as [usize; 0]);
    assert_eq!(plan.topo_order(), [0, 1, 2]);
    assert_eq!(plan.fleet.as_ref().unwrap().sidecars.len(), 2);
}

#[test]
fn defaults_and_name_from_file() {
    let plan = parse(
        "[[task]]\nname = \"a\"\njob = \"J\"\n",
        Path::new("dir/nightly.toml"),
    )
    .unwrap();
    assert_eq!(plan.name, "nightly");
    assert_eq!(plan.max_parallel, None);
    let t = &plan.tasks[0];
    assert_eq!((t.retries, t.priority, t.rerun_if_lost), (0, 0, false));
    assert!(plan.fleet.is_none());
}

#[test]
fn unquoted_dates_are_parameters_too() {
    let plan = parse_ok("[plan.params]\nDAY = 2026-11-24\n[[task]]\nname = \"a\"\njob = \"J\"\n");
    assert_eq!(plan.tasks[0].params["DAY"], "2026-11-24");
}

#[test]
fn after_names_a_missing_task_with_a_suggestion() {
    let text = "[[task]]\nname = \"stage-customers\"\njob = \"A\"\n\n[[task]]\nname = \"load\"\njob = \"B\"\nafter = [\"stage-custmers\"]\n";
    assert_eq!(
        errors(text),
        [
            r#"plan.toml:8: task "load" key `after`: no task named "stage-custmers" (did you mean "stage-customers"?)"#
        ]
    );
}

#[test]
fn unknown_keys_are_all_reported_with_allowed_keys() {
    let text = "[plan]\nnmae = \"x\"\n[[task]]\nname = \"a\"\njob = \"J\"\nafte = [\"b\"]\n[[tasks]]\nname = \"b\"\n";
    let e = errors(text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert!(e[0].starts_with("plan.toml:2: [plan] key `nmae`: unknown key (did you mean `name`?); allowed keys: name, max_parallel"), "{}", e[0]);
    assert!(e[1].starts_with("plan.toml:6: task \"a\" key `afte`: unknown key (did you mean `after`?); allowed keys: name, job, on, after,"), "{}", e[1]);
    assert!(
        e[2].starts_with("plan.toml:7: key `tasks`: unknown key (did you mean `task`?)"),
        "{}",
        e[2]
    );
}

#[test]
fn duplicate_names_empty_jobs_and_bad_numbers() {
    let text = r#"
[plan]
max_parallel = 0
[[task]]
name = "a"
job = ""
retries = -1
[[task]]
name = "a"
job = "J"
"#;
    let e = errors(text);
    assert_eq!(e.len(), 4, "{e:#?}");
    assert!(
        e[0].starts_with(
            "plan.toml:3: [plan] key `max_parallel`: max_parallel = 0 would never start"
        ),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("plan.toml:6: task \"a\" key `job`: the job name is empty"),
        "{}",
        e[1]
    );
    assert!(
        e[2].starts_with("plan.toml:7: task \"a\" key `retries`: retries = -1 is out of range"),
        "{}",
        e[2]
    );
    assert!(
        e[3].starts_with(
            "plan.toml:9: task \"a\" key `name`: the task at line 5 has this name already"
        ),
        "{}",
        e[3]
    );
}

#[test]
fn missing_name_and_job() {
    let e = errors("[[task]]\nretries = 1\n");
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e[0].contains("task #1: missing key `name`"), "{}", e[0]);
    assert!(e[1].contains("task #1: missing key `job`"), "{}", e[1]);
}

#[test]
fn bad_durations_say_what_is_accepted() {
    let e = errors(
        "[plan]\ntimeout = \"soon\"\n[[task]]\nname = \"a\"\njob = \"J\"\ntimeout = \"0s\"\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with("plan.toml:2: [plan] key `timeout`: `soon` is not a duration"),
        "{}",
        e[0]
    );
    assert!(e[0].contains("\"45m\""), "{}", e[0]);
    assert!(
        e[1].starts_with("plan.toml:6: task \"a\" key `timeout`: a timeout of 0"),
        "{}",
        e[1]
    );
}

#[test]
fn wrong_types_name_the_key() {
    let e = errors("[[task]]\nname = \"a\"\njob = \"J\"\npriority = \"high\"\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("plan.toml:4: task \"a\" key `priority`: invalid type"),
        "{}",
        e[0]
    );
}

#[test]
fn cycles_and_self_dependencies() {
    let text = r#"
[[task]]
name = "a"
job = "J"
after = ["b"]
[[task]]
name = "b"
job = "J"
after = ["a"]
[[task]]
name = "c"
job = "J"
after = ["c"]
"#;
    let e = errors(text);
    // Both problems at once, in line order: the cycle a → b → a and c waiting for itself.
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e[0].starts_with(
            "plan.toml:5: task \"a\" key `after`: dependency cycle: \"a\" → \"b\" → \"a\""
        ),
        "{}",
        e[0]
    );
    assert!(
        e[1].starts_with("plan.toml:13: task \"c\" key `after`: a task cannot wait for itself"),
        "{}",
        e[1]
    );
    let e = errors(&text.replace("after = [\"c\"]", ""));
    assert_eq!(
        e,
        [
            r#"plan.toml:5: task "a" key `after`: dependency cycle: "a" → "b" → "a" (each waits for the next, so none can start); remove one of these `after` entries"#
        ]
    );
}

#[test]
fn on_must_name_a_sidecar_of_the_fleet() {
    let text = NIGHTLY.replace(r#"on = ["sql1", "sql2"]"#, r#"on = ["sql1", "sq2"]"#);
    let e = errors(&text);
    assert_eq!(
        e,
        [
            r#"plan.toml:14: task "stage-customers" key `on`: no sidecar named "sq2" in the fleet (did you mean "sql2"?); the fleet has: sql1, sql2"#
        ]
    );
}

#[test]
fn a_given_fleet_overrides_the_inline_one() {
    let text = NIGHTLY.replace(r#"on = ["sql1", "sql2"]"#, r#"on = ["sql3"]"#);
    let fleet = crate::fleet_config::parse_fleet(
        "[fleet]\ninsecure = true\n[fleet.sidecars.sql3]\nendpoint = \"unix:/run/agentfleet/sql3.sock\"\n",
        Path::new("fleet.toml"),
    )
    .unwrap();
    let plan = parse_with_fleet(&text, Path::new("plan.toml"), fleet).unwrap();
    assert!(plan.fleet.unwrap().sidecars.contains_key("sql3"));
}

#[test]
fn syntax_errors_have_a_line() {
    let e = errors("[[task]]\nname = \"a\njob = \"J\"\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("plan.toml:2: not valid TOML"), "{}", e[0]);
}

#[test]
fn a_single_task_table_is_explained() {
    let e = errors("[task]\nname = \"a\"\njob = \"J\"\n");
    assert!(e[0].contains("[[task]] table (two brackets)"), "{}", e[0]);
}

#[test]
fn empty_plan_and_bad_params() {
    assert!(errors("[plan]\nname = \"x\"\n")[0].contains("the plan has no tasks"));
    let e = errors(
        "[[task]]\nname = \"a\"\njob = \"J\"\nparams = { \"BAD-NAME\" = \"x\", LIST = [1] }\n",
    );
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(
        e.iter()
            .any(|m| m.contains("cannot be an environment variable"))
    );
    assert!(
        e.iter()
            .any(|m| m.contains("a parameter value is text, not array"))
    );
}

#[test]
fn load_reads_files_and_merges_fleet_problems() {
    let dir = tempfile::tempdir().unwrap();
    let plan_path = dir.path().join("plan.toml");
    std::fs::write(
        &plan_path,
        "[[task]]\nname = \"a\"\njob = \"J\"\non = [\"x\"]\n",
    )
    .unwrap();
    let fleet_path = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet_path,
        "[fleet]\ninsecure = true\n[fleet.sidecars.x]\nendpoint = \"http://10.0.0.1:7443\"\n",
    )
    .unwrap();
    let plan = load(&plan_path).unwrap();
    assert_eq!(plan.path, plan_path);
    let err = load_with_fleet(&plan_path, Some(&fleet_path)).unwrap_err();
    assert_eq!(err.diagnostics().len(), 1, "{err}");
    assert!(
        err.to_string().contains(
            "fleet.toml:4: [fleet.sidecars.x] key `endpoint`: http:// is plaintext over TCP"
        ),
        "{err}"
    );
    let missing = load(&dir.path().join("nope.toml")).unwrap_err();
    assert!(matches!(missing, PlanError::Read { .. }));
    assert!(
        missing.to_string().starts_with("failed to read plan `"),
        "{missing}"
    );
}

#[test]
fn a_cycle_is_reported_next_to_other_problems() {
    let text = r#"
[[task]]
name = "a"
job = "J"
after = ["missing"]
[[task]]
name = "b"
job = "J"
after = ["c"]
[[task]]
name = "c"
job = "J"
after = ["b"]
"#;
    let err = parse(text, Path::new("plan.toml")).unwrap_err().to_string();
    assert!(err.contains("no task named \"missing\""), "{err}");
    assert!(err.contains("dependency cycle"), "{err}");
}
