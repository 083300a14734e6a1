//! The run report of a large run: 2,000 tasks (a chain every 40, so the critical path is
//! 50 tasks long) on 10 sidecars of 4 slots, 3 steps and 30 log lines per execution, one
//! task in 20 failing once and retried. Builds the run in a store, then times reading it
//! back and rendering the page, and prints the page's size. With Debian's `chromium` on
//! PATH, also loads the page headless and prints how long its script took to draw it (the
//! page records that itself, from navigation start to the end of its script).
//!
//! `cargo bench -p agentfleet-coordinator --bench report` (optionally `-- TASKS`).
use std::fmt::Write as _;
use std::time::Instant;

use agentfleet_coordinator::events::{At, RunEvent, RunEventKind, TaskOutcome};
use agentfleet_coordinator::report::Reporter;
use agentfleet_coordinator::store::{NewRun, Store};
use agentfleet_coordinator::timeline;

const SIDECARS: usize = 10;
const SLOTS: usize = 4;
const STEPS: u32 = 3;
const LINES_PER_STEP: u32 = 10;

fn main() {
    let tasks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2_000);
    let lanes = SIDECARS * SLOTS;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = Store::open(dir.path()).expect("open the store");
    let t0 = agentfleet_common::now_ms();
    let mut plan = String::from("[plan]\nname = \"bench\"\n");
    for i in 0..tasks {
        let _ = write!(plan, "[[task]]\nname = \"t{i}\"\njob = \"job{}\"\n", i % 7);
        if i >= lanes {
            let _ = writeln!(plan, "after = [\"t{}\"]", i - lanes);
        }
    }
    store
        .create_run(&NewRun {
            run_id: "bench".into(),
            plan_name: "bench".into(),
            plan_path: "bench.toml".into(),
            plan_text: plan,
            fleet_path: None,
            started_ms: t0,
            tasks: (0..tasks)
                .map(|i| (format!("t{i}"), format!("job{}", i % 7)))
                .collect(),
        })
        .expect("record the run");

    let mut reporter = store.reporter().expect("a store reporter");
    let mut send = |ms: i64, kind| reporter.event(&RunEvent::new("bench", t0 + ms, kind));
    let sidecars: Vec<String> = (0..SIDECARS).map(|s| format!("sql{s}")).collect();
    send(
        0,
        RunEventKind::RunStarted {
            plan: "bench".into(),
            tasks,
            sidecars: sidecars.clone(),
            slots: sidecars.iter().map(|s| (s.clone(), SLOTS as u32)).collect(),
        },
    );
    // Lane l runs tasks l, l + lanes, l + 2 × lanes, ... one after another.
    let mut free_at = vec![0i64; lanes];
    for i in 0..tasks {
        let lane = i % lanes;
        let sidecar = &sidecars[lane / SLOTS];
        let attempts = if i % 20 == 7 { 2 } else { 1 };
        for attempt in 1..=attempts {
            let at = At {
                task: format!("t{i}"),
                attempt,
                sidecar: sidecar.clone(),
                execution_id: format!("e{i}-{attempt}"),
            };
            let start = free_at[lane] + 50;
            let took = 2_000 + (i as i64 * 7919) % 9_000;
            let failed = attempt < attempts;
            send(start, RunEventKind::TaskPlaced { at: at.clone() });
            for step in 1..=STEPS {
                let from = start + took * i64::from(step - 1) / i64::from(STEPS);
                let to = start + took * i64::from(step) / i64::from(STEPS);
                let step_name = format!("step {step}");
                send(
                    from,
                    RunEventKind::StepStarted {
                        at: at.clone(),
                        step,
                        step_name: step_name.clone(),
                        step_attempt: 1,
                    },
                );
                for n in 0..LINES_PER_STEP {
                    send(
                        from + i64::from(n),
                        RunEventKind::log_line(
                            at.clone(),
                            step,
                            "stdout",
                            format!("{} rows processed in batch {n} of step {step}", n * 1000),
                        ),
                    );
                }
                let status = if failed && step == STEPS {
                    "failed"
                } else {
                    "succeeded"
                };
                send(
                    to,
                    RunEventKind::StepFinished {
                        at: at.clone(),
                        step,
                        step_name,
                        step_attempt: 1,
                        status,
                        message: String::new(),
                        duration_ms: (to - from) as u64,
                    },
                );
            }
            free_at[lane] = start + took;
            send(
                start + took,
                RunEventKind::TaskFinished {
                    task: at.task.clone(),
                    attempt,
                    sidecar: Some(sidecar.clone()),
                    execution_id: Some(at.execution_id.clone()),
                    status: if failed {
                        TaskOutcome::Failed
                    } else {
                        TaskOutcome::Succeeded
                    },
                    message: String::new(),
                    duration_ms: took as u64,
                    will_retry: failed,
                },
            );
        }
    }
    let end = free_at.iter().copied().max().unwrap_or(0) + 10;
    send(
        end,
        RunEventKind::RunFinished {
            status: "succeeded",
            exit_code: 0,
            duration_ms: end as u64,
            summary: Vec::new(),
        },
    );
    reporter.finish();

    let started = Instant::now();
    let t = timeline::build(&store, "bench", agentfleet_common::now_ms()).expect("the timeline");
    let built = started.elapsed();
    let page = timeline::html::render(&t);
    let rendered = started.elapsed() - built;
    println!(
        "{tasks} tasks, {} executions on {} lanes: read from the store in {:.0} ms, page made in {:.0} ms, {:.2} MB ({} log lines embedded of {})",
        t.bars.len(),
        t.lanes.len(),
        built.as_secs_f64() * 1000.0,
        rendered.as_secs_f64() * 1000.0,
        page.len() as f64 / 1e6,
        t.bars
            .iter()
            .map(|b| b.log.head.len() + b.log.tail.len())
            .sum::<usize>(),
        t.bars.iter().map(|b| b.log.total).sum::<u64>(),
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-bench.html");
    std::fs::write(&out, &page).expect("write the page");
    println!("page: {}", out.display());
    browser_time(&out);
}

/// Loads the page in headless Chromium and prints the draw time it recorded.
fn browser_time(page: &std::path::Path) {
    let Some(chromium) = which("chromium") else {
        println!("no chromium on PATH: browser time not measured");
        return;
    };
    let profile = tempfile::tempdir().expect("a profile directory");
    let started = Instant::now();
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let wall = started.elapsed();
    let dom = String::from_utf8_lossy(&out.stdout);
    let ms = dom
        .split("data-render-ms=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?");
    println!(
        "chromium: page parsed and drawn in {ms} ms (from navigation start; whole headless load {:.1} s)",
        wall.as_secs_f64()
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
