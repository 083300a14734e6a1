//! `coordinator report` and `show --timeline` of a known run on the real binaries: the
//! data the page embeds (lanes, bars, retries, totals), the text lanes, and the page
//! rendered by headless Chromium without a console message, with a screenshot.
use std::collections::BTreeMap;

use agentfleet_e2e::browser::{Chromium, file_url};
use agentfleet_e2e::{SidecarOptions, TestEnv};
use serde_json::Value;

const JOBS: &str = r#"
[[job]]
name = "quick"
[[job.step]]
name = "work"
run = ["sh", "-c", "echo first line; echo working; echo last line; sleep 0.3"]

[[job]]
name = "flaky-step"
[[job.step]]
name = "prepare"
run = ["sh", "-c", "echo preparing"]
[[job.step]]
name = "merge"
run = ["sh", "-c", "m=\"$MARKERS/step-$AGENTFLEET_EXECUTION_ID\"; if [ ! -e \"$m\" ]; then touch \"$m\"; echo 'deadlock victim' >&2; exit 1; fi; echo merged"]
retries = 1
retry_interval = "100ms"

[[job]]
name = "fails-first-time"
[[job.step]]
name = "load"
run = ["sh", "-c", "m=\"$MARKERS/task\"; if [ ! -e \"$m\" ]; then touch \"$m\"; echo 'first execution fails' >&2; exit 1; fi; echo loaded"]

[[job]]
name = "always-fails"
[[job.step]]
name = "work"
run = ["sh", "-c", "echo 'error: the source is down' >&2; exit 3"]
"#;

const PLAN: &str = r#"
[plan]
name = "e2e-report"

[[task]]
name = "stage"
job = "quick"

[[task]]
name = "load"
job = "flaky-step"
after = ["stage"]

[[task]]
name = "retried"
job = "fails-first-time"
retries = 1

[[task]]
name = "broken"
job = "always-fails"

[[task]]
name = "child"
job = "quick"
after = ["broken"]
"#;

/// The timeline a report page embeds.
fn embedded(page: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"timeline-data\">";
    let start = page.find(open).expect("the page embeds its data") + open.len();
    let end = start
        + page[start..]
            .find("</script>")
            .expect("the data element ends");
    serde_json::from_str(&page[start..end]).expect("the embedded data is JSON")
}

fn ms(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_report_of_a_run_shows_its_lanes_bars_retries_and_totals() {
    let env = TestEnv::new("report");
    let markers = env.path().join("markers");
    std::fs::create_dir_all(&markers).unwrap();
    let jobs = JOBS.replace("$MARKERS", &markers.display().to_string());
    let one_slot = SidecarOptions {
        slots: 1,
        ..SidecarOptions::default()
    };
    let s1 = env.start_sidecar("s1", &jobs, SidecarOptions::default());
    let s2 = env.start_sidecar("s2", &jobs, one_slot);
    let fleet = env.write_fleet(&[&s1, &s2]);
    let plan = env.write_file("plan.toml", PLAN);
    let run = env.run_plan(&plan, &fleet);
    assert_eq!(run.code(), Some(1), "{run}");

    let out = env.coordinator(["report", "last", "--out", "report.html"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stderr.contains("report.html"), "{out}");
    let page_path = env.path().join("report.html");
    let page = std::fs::read_to_string(&page_path).expect("the report was written");
    let data = embedded(&page);

    // One lane per slot: s1 has 2, s2 has 1.
    let lanes: Vec<(String, i64)> = data["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["sidecar"].as_str().unwrap().to_owned(), ms(&l["slot"])))
        .collect();
    assert_eq!(
        lanes,
        vec![("s1".into(), 1), ("s1".into(), 2), ("s2".into(), 1)]
    );

    // One bar per execution, on a lane of its own sidecar, never overlapping in a lane.
    let bars = data["bars"].as_array().unwrap();
    let mut per_task: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for bar in bars {
        per_task
            .entry(bar["task"].as_str().unwrap())
            .or_default()
            .push(bar);
        let lane = &data["lanes"][ms(&bar["lane"]) as usize];
        assert_eq!(lane["sidecar"], bar["sidecar"], "{bar}");
        assert!(ms(&bar["start"]) <= ms(&bar["end"]), "{bar}");
        for other in bars
            .iter()
            .filter(|o| o["lane"] == bar["lane"] && *o != bar)
        {
            let apart =
                ms(&other["end"]) <= ms(&bar["start"]) || ms(&bar["end"]) <= ms(&other["start"]);
            assert!(apart, "{bar} overlaps {other}");
        }
    }
    let tasks: Vec<&str> = per_task.keys().copied().collect();
    assert_eq!(tasks, vec!["broken", "load", "retried", "stage"]);
    let retried = &per_task["retried"];
    assert_eq!(retried.len(), 2);
    assert_eq!(
        (&retried[0]["status"], &retried[0]["retried"]),
        (&Value::from("failed"), &Value::from(true))
    );
    assert_eq!(
        (&retried[1]["status"], &retried[1]["retried"]),
        (&Value::from("succeeded"), &Value::from(false))
    );
    assert_eq!(per_task["broken"][0]["status"], "failed");
    // The step retried inside its job, and the steps sit inside their bar.
    let load = per_task["load"][0];
    let steps: Vec<(&str, &str)> = load["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("prepare", "succeeded"),
            ("merge", "retry"),
            ("merge", "succeeded")
        ]
    );
    for s in load["steps"].as_array().unwrap() {
        assert!(
            ms(&s["start"]) >= ms(&load["start"]) - 50 && ms(&s["end"]) <= ms(&load["end"]) + 50,
            "{s} in {load}"
        );
    }
    // Log excerpts: first and last lines of each execution.
    let stage = per_task["stage"][0];
    assert_eq!(stage["log"]["total"], 3);
    assert_eq!(stage["log"]["head"][0]["line"], "first line");
    assert_eq!(stage["log"]["head"][2]["line"], "last line");

    // The task that never ran, and the totals.
    assert_eq!(data["unstarted"][0]["task"], "child");
    assert_eq!(data["unstarted"][0]["status"], "skipped");
    let totals = &data["totals"];
    assert_eq!(totals["tasks"], 5);
    assert_eq!(totals["executions"], 5);
    assert_eq!(totals["retried"], 1);
    assert_eq!(totals["step_retries"], 1);
    assert_eq!(totals["slots"], 3);
    assert_eq!(
        totals["outcomes"],
        serde_json::json!({"failed": 1, "skipped": 1, "succeeded": 3})
    );
    let work: i64 = bars.iter().map(|b| ms(&b["end"]) - ms(&b["start"])).sum();
    assert_eq!(ms(&totals["total_work_ms"]), work);
    let bound = ms(&totals["lower_bound_ms"]);
    let by_work = (work + 2) / 3;
    assert_eq!(
        bound,
        by_work
            .max(ms(&totals["longest_task_ms"]))
            .max(ms(&totals["critical_path_ms"]))
    );
    let makespan = ms(&totals["makespan_ms"]);
    assert!(
        bound <= makespan,
        "lower bound {bound} > makespan {makespan}"
    );
    assert!(bars.iter().all(|b| ms(&b["end"]) <= makespan));
    // The critical path is a chain of the plan, as long as the work on it.
    let path: Vec<&str> = data["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        path == ["stage", "load"] || path == ["retried"] || path == ["broken"],
        "{path:?}"
    );
    let on_path: i64 = bars
        .iter()
        .filter(|b| path.contains(&b["task"].as_str().unwrap()))
        .map(|b| ms(&b["end"]) - ms(&b["start"]))
        .sum();
    assert_eq!(ms(&totals["critical_path_ms"]), on_path);

    // The same lanes as text, fitted to the width asked for.
    let text = agentfleet_e2e::coordinator::run(
        env.path(),
        &env.path().join("home"),
        ["show", "last", "--timeline"],
        &[("COLUMNS", "90")],
    );
    assert_eq!(text.code(), Some(0), "{text}");
    let lane_lines: Vec<&str> = text.stdout.lines().filter(|l| l.contains('│')).collect();
    assert_eq!(lane_lines.len(), 3, "{text}");
    assert!(lane_lines.iter().all(|l| l.chars().count() == 90), "{text}");
    assert!(text.stdout.contains("not run      child skipped"), "{text}");
    assert!(text.stdout.contains("failed       broken #1 on"), "{text}");
    assert!(
        !text.stdout.contains('\x1b'),
        "colour without a terminal: {text}"
    );

    render_in_chromium(&page_path);
}

/// The page in headless Chromium: its scripts run to the end without a console message,
/// and a screenshot (of the page with one task selected) is written to the target's tmp
/// directory for people to look at.
fn render_in_chromium(page: &std::path::Path) {
    let Some(chromium) = Chromium::find() else {
        eprintln!(
            "SKIPPED the Chromium part of this test: no `chromium` on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        );
        return;
    };
    let loaded = chromium.dump_dom(page);
    assert!(
        loaded.console.is_empty(),
        "console messages: {:#?}",
        loaded.console
    );
    assert!(
        loaded.dom.contains("data-rendered=\"5 bars\""),
        "the page's script did not finish:\n{}",
        loaded.stderr
    );
    let png = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-e2e.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("{}#task=load", file_url(page));
    let shot = chromium.screenshot(&url, &png, 1400, 1600);
    assert!(
        shot.console.is_empty(),
        "console messages: {:#?}",
        shot.console
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "no screenshot at {} ({size} bytes)",
        png.display()
    );
    eprintln!("screenshot of the report: {}", png.display());
}
