//! Placement benchmark: what the scheduling order buys in makespan, and what a `place` call
//! costs. Event-driven simulations call the real `schedule::place` each time a task ends.
//!
//! Run: `cargo bench -p agentfleet-coordinator --bench placement`. Prints plain numbers.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::hint::black_box;
use std::time::Instant;

use agentfleet_coordinator::schedule::{ReadyTask, SidecarState, place};

/// 40 lognormal durations, sum 60 s, seed 42 (the project's shared bench data
/// `w2_durations.json`: `random.Random(42)`, `lognormvariate(0, 0.8)`, scaled to sum 60.00 s).
#[expect(
    clippy::approx_constant,
    reason = "3.14 is a measured duration, not pi"
)]
const DURATIONS_S: [f64; 40] = [
    1.15, 0.63, 2.58, 0.85, 0.43, 1.48, 0.37, 3.79, 0.73, 2.44, 3.14, 4.49, 6.0, 0.65, 3.09, 3.06,
    1.27, 0.56, 0.44, 0.44, 1.26, 0.76, 1.59, 0.18, 0.45, 1.21, 0.67, 2.0, 1.34, 2.7, 0.61, 1.06,
    2.94, 0.79, 0.23, 1.89, 0.36, 1.61, 0.39, 0.37,
];

/// One task of a simulated plan.
struct SimTask {
    job: String,
    actual_ms: u64,
    /// What the scheduler is told; `None`: unknown.
    expected_ms: Option<u64>,
    after: Vec<usize>,
    on: Vec<String>,
}

fn ms(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

/// Runs the plan to the end on `sidecars` (name, slots), every job offered everywhere;
/// returns the makespan in ms.
fn simulate(tasks: &[SimTask], sidecars: &[(&str, usize)]) -> u64 {
    let offers: HashSet<String> = tasks.iter().map(|t| t.job.clone()).collect();
    let mut states: Vec<SidecarState> = sidecars
        .iter()
        .map(|&(name, slots)| SidecarState {
            name: name.to_owned(),
            offers: offers.clone(),
            slots,
            running: 0,
            running_jobs: HashMap::new(),
            max_instances: HashMap::new(),
            reachable: true,
        })
        .collect();
    let mut started = vec![false; tasks.len()];
    let mut done = vec![false; tasks.len()];
    // (finish time, task, sidecar index)
    let mut running: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
    let mut now = 0;
    loop {
        let ready: Vec<ReadyTask> = (0..tasks.len())
            .filter(|&i| !started[i] && tasks[i].after.iter().all(|&d| done[d]))
            .map(|i| ReadyTask {
                task: i,
                job: tasks[i].job.clone(),
                on: tasks[i].on.clone(),
                priority: 0,
                expected_ms: tasks[i].expected_ms,
                avoid: Vec::new(),
            })
            .collect();
        for p in place(&ready, &states, usize::MAX) {
            let s = states
                .iter()
                .position(|s| s.name == p.sidecar)
                .expect("known sidecar");
            states[s].started(&tasks[p.task].job);
            started[p.task] = true;
            running.push(Reverse((now + tasks[p.task].actual_ms, p.task, s)));
        }
        let Some(Reverse((finish, task, s))) = running.pop() else {
            assert!(done.iter().all(|&d| d), "simulation stuck");
            return now;
        };
        now = finish;
        done[task] = true;
        states[s].ended(&tasks[task].job);
    }
}

fn report(label: &str, makespan_ms: u64, bound_ms: u64) {
    println!(
        "{label:<44} makespan {:>6.2} s   ratio to bound {:.3}",
        makespan_ms as f64 / 1000.0,
        makespan_ms as f64 / bound_ms as f64
    );
}

fn one_sidecar_four_slots() {
    let make = |expected: &dyn Fn(usize, u64) -> Option<u64>| -> Vec<SimTask> {
        DURATIONS_S
            .iter()
            .enumerate()
            .map(|(i, &d)| SimTask {
                job: format!("job-{i:02}"),
                actual_ms: ms(d),
                expected_ms: expected(i, ms(d)),
                after: Vec::new(),
                on: Vec::new(),
            })
            .collect()
    };
    let slots = 4;
    let sum: u64 = DURATIONS_S.iter().map(|&d| ms(d)).sum();
    let longest = DURATIONS_S.iter().map(|&d| ms(d)).max().unwrap_or(0);
    let bound = (sum / slots as u64).max(longest);
    println!(
        "scenario 1: 40 independent tasks, 1 sidecar x {slots} slots, sum {:.2} s",
        sum as f64 / 1000.0
    );
    println!(
        "{:<44} makespan {:>6.2} s",
        "lower bound max(sum/slots, longest)",
        bound as f64 / 1000.0
    );
    let sidecars = [("sql1", slots)];
    report(
        "plan order (expected durations unknown)",
        simulate(&make(&|_, _| None), &sidecars),
        bound,
    );
    report(
        "LPT (expected durations known)",
        simulate(&make(&|_, d| Some(d)), &sidecars),
        bound,
    );
    // Every 8th job is new (no statistics yet): unknowns go first, see schedule.rs.
    let some_unknown = make(&|i, d| (i % 8 != 0).then_some(d));
    report(
        "LPT, 5 of 40 unknown",
        simulate(&some_unknown, &sidecars),
        bound,
    );
}

fn three_sidecars_dag() {
    // A small ETL, as wide as the fleet: eight extracts, two loads that each wait for half
    // of them, then two consumers. Durations are entries of the same data set, in the
    // order the extracts would be listed by hand.
    let spec: [(&str, usize, &[usize], &[&str]); 12] = [
        ("extract-customers", 7, &[], &[]),
        ("extract-orders", 10, &[], &[]),
        ("extract-products", 14, &[], &["sql3"]),
        ("extract-stores", 15, &[], &[]),
        ("extract-prices", 29, &[], &[]),
        ("extract-returns", 32, &[], &[]),
        ("extract-stock", 11, &[], &[]),
        ("extract-web", 12, &[], &[]),
        ("load-sales", 2, &[0, 1, 2, 3], &["sql1", "sql2"]),
        ("load-inventory", 9, &[4, 5, 6, 7], &[]),
        ("report", 27, &[8, 9], &[]),
        ("audit", 35, &[8], &[]),
    ];
    let make = |known: bool| -> Vec<SimTask> {
        spec.iter()
            .map(|(job, d, after, on)| SimTask {
                job: (*job).to_owned(),
                actual_ms: ms(DURATIONS_S[*d]),
                expected_ms: known.then(|| ms(DURATIONS_S[*d])),
                after: after.to_vec(),
                on: on.iter().map(|s| (*s).to_owned()).collect(),
            })
            .collect()
    };
    let tasks = make(true);
    let sum: u64 = tasks.iter().map(|t| t.actual_ms).sum();
    // Longest path through the DAG (tasks are listed after their dependencies).
    let mut finish = vec![0u64; tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        finish[i] = t.after.iter().map(|&d| finish[d]).max().unwrap_or(0) + t.actual_ms;
    }
    let critical = finish.iter().copied().max().unwrap_or(0);
    let bound = (sum / 6).max(critical);
    println!();
    println!(
        "scenario 2: 12 jobs in a DAG, 3 sidecars x 2 slots, sum {:.2} s, critical path {:.2} s",
        sum as f64 / 1000.0,
        critical as f64 / 1000.0
    );
    println!(
        "{:<44} makespan {:>6.2} s",
        "lower bound max(sum/6, critical path)",
        bound as f64 / 1000.0
    );
    let sidecars = [("sql1", 2), ("sql2", 2), ("sql3", 2)];
    report(
        "plan order (expected durations unknown)",
        simulate(&make(false), &sidecars),
        bound,
    );
    report(
        "LPT (expected durations known)",
        simulate(&tasks, &sidecars),
        bound,
    );
}

fn time_place() {
    let jobs = 2000;
    let ready: Vec<ReadyTask> = (0..10_000)
        .map(|i| ReadyTask {
            task: i,
            job: format!("job-{:04}", i % jobs),
            on: Vec::new(),
            priority: (i % 3) as i32,
            expected_ms: (i % 5 != 0).then_some((i as u64 * 7919) % 100_000),
            avoid: Vec::new(),
        })
        .collect();
    let all_jobs: HashSet<String> = (0..jobs).map(|j| format!("job-{j:04}")).collect();
    let sidecars: Vec<SidecarState> = (0..50)
        .map(|s| SidecarState {
            name: format!("sql{s:02}"),
            offers: all_jobs.clone(),
            slots: 8,
            running: s % 9 % 8,
            running_jobs: (0..s % 9 % 8)
                .map(|k| (format!("job-{:04}", (s * 13 + k) % jobs), 1))
                .collect(),
            max_instances: HashMap::new(),
            reachable: s % 10 != 9,
        })
        .collect();
    println!();
    println!("place(): 10000 ready tasks x 50 sidecars (8 slots each)");
    timed("  with free slots", &ready, &sidecars);
    // The costly case: free slots everywhere but no task fits, so every task checks every
    // sidecar and nothing stops the scan early.
    let nothing_fits: Vec<SidecarState> = sidecars
        .iter()
        .map(|s| SidecarState {
            offers: HashSet::from(["other-job".to_owned()]),
            running: 0,
            ..s.clone()
        })
        .collect();
    timed("  no task fits anywhere", &ready, &nothing_fits);
}

fn timed(label: &str, ready: &[ReadyTask], sidecars: &[SidecarState]) {
    let placed = place(ready, sidecars, usize::MAX).len();
    let iterations = 30;
    let start = Instant::now();
    for _ in 0..iterations {
        black_box(place(black_box(ready), black_box(sidecars), usize::MAX));
    }
    let per_call = start.elapsed().as_nanos() / iterations;
    println!("{label:<28} {per_call:>12} ns per call   {placed} placed");
}

fn main() {
    one_sidecar_four_slots();
    three_sidecars_dag();
    time_place();
}
