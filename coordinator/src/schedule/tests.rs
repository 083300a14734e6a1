use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

fn sidecar(name: &str, jobs: &[&str], slots: usize, running: usize) -> SidecarState {
    SidecarState {
        name: name.into(),
        offers: jobs.iter().map(|j| (*j).to_owned()).collect(),
        slots,
        running,
        running_jobs: HashMap::new(),
        max_instances: HashMap::new(),
        reachable: true,
    }
}

fn task(task: usize, job: &str) -> ReadyTask {
    ReadyTask {
        task,
        job: job.into(),
        on: Vec::new(),
        priority: 0,
        expected_ms: None,
        avoid: Vec::new(),
    }
}

fn pairs(p: &[Placement]) -> Vec<(usize, &str)> {
    p.iter().map(|p| (p.task, p.sidecar.as_str())).collect()
}

#[test]
fn priority_then_longest_then_plan_order() {
    let s = [sidecar("a", &["j0", "j1", "j2", "j3", "j4"], 5, 0)];
    let mut ready: Vec<ReadyTask> = (0..5).map(|i| task(i, &format!("j{i}"))).collect();
    ready[0].expected_ms = Some(10);
    ready[1].expected_ms = Some(50);
    ready[2].expected_ms = None;
    ready[3].priority = 1;
    ready[3].expected_ms = Some(1);
    ready[4].expected_ms = Some(50);
    let order: Vec<usize> = place(&ready, &s, 10).iter().map(|p| p.task).collect();
    assert_eq!(order, [3, 2, 1, 4, 0]);
}

#[test]
fn spreads_by_free_share_then_running_then_name() {
    let s = [
        sidecar("big", &["x", "y", "z"], 8, 4),   // half free
        sidecar("small", &["x", "y", "z"], 2, 0), // all free
        sidecar("mid", &["x", "y", "z"], 4, 0),   // all free, same share as small
    ];
    let ready = [task(0, "x"), task(1, "y"), task(2, "z")];
    // x: small and mid tie on share and running, mid < small by name.
    // y: small (2/2) beats mid (3/4) and big (4/8).
    // z: mid (3/4) beats big (4/8) and small (1/2).
    assert_eq!(
        pairs(&place(&ready, &s, 10)),
        [(0, "mid"), (1, "small"), (2, "mid")]
    );
}

#[test]
fn avoid_is_a_preference() {
    let s = [sidecar("a", &["x"], 4, 0), sidecar("b", &["x"], 4, 3)];
    let mut t = task(0, "x");
    t.avoid = vec!["a".into()];
    assert_eq!(pairs(&place(&[t.clone()], &s, 1)), [(0, "b")]);
    t.avoid = vec!["a".into(), "b".into()];
    assert_eq!(pairs(&place(&[t.clone()], &s, 1)), [(0, "a")]);
    t.avoid = vec!["a".into()];
    assert_eq!(
        pairs(&place(&[t], &s[..1], 1)),
        [(0, "a")],
        "the only sidecar is still used"
    );
}

#[test]
fn eligibility_rules() {
    let mut busy = sidecar("busy", &["x"], 4, 1);
    busy.running_jobs.insert("x".into(), 1);
    let mut down = sidecar("down", &["x"], 4, 0);
    down.reachable = false;
    let full = sidecar("full", &["x"], 2, 2);
    let other = sidecar("other", &["y"], 4, 0);
    let s = [busy, down, full, other];
    assert!(place(&[task(0, "x")], &s, 5).is_empty());

    let s = [sidecar("a", &["x"], 4, 0), sidecar("b", &["x"], 4, 0)];
    let mut t = task(0, "x");
    t.on = vec!["b".into()];
    assert_eq!(pairs(&place(&[t], &s, 5)), [(0, "b")]);
    // The same job twice: once per sidecar.
    let ready = [task(0, "x"), task(1, "x"), task(2, "x")];
    assert_eq!(pairs(&place(&ready, &s, 5)), [(0, "a"), (1, "b")]);
    assert_eq!(place(&ready, &s, 1).len(), 1, "free_parallel caps the call");
}

#[test]
fn a_job_runs_up_to_its_max_instances_on_one_sidecar() {
    let mut fan = sidecar("fan", &["load"], 8, 1);
    fan.running_jobs.insert("load".into(), 1);
    fan.max_instances.insert("load".into(), 4);
    let ready: Vec<ReadyTask> = (0..6).map(|i| task(i, "load")).collect();
    // One runs already: three more fit, although five slots are free.
    assert_eq!(
        pairs(&place(&ready, std::slice::from_ref(&fan), 10)),
        [(0, "fan"), (1, "fan"), (2, "fan")]
    );
    // A sidecar that does not allow more than one (the default) still takes only one.
    let single = sidecar("single", &["load"], 8, 0);
    assert_eq!(place(&ready, &[single], 10).len(), 1);
}

#[test]
fn never_placeable() {
    let mut down = sidecar("down", &[], 2, 0);
    down.reachable = false;
    let s = [sidecar("a", &["x"], 2, 0), sidecar("b", &["y"], 2, 0)];
    assert_eq!(unplaceable_reason(&task(0, "x"), &s), None);
    let r = unplaceable_reason(&task(0, "z"), &s).unwrap();
    assert!(
        r.starts_with("no sidecar offers job \"z\" (sidecars: a, b)"),
        "{r}"
    );
    let mut t = task(0, "x");
    t.on = vec!["b".into(), "c".into()];
    let r = unplaceable_reason(&t, &s).unwrap();
    assert_eq!(
        r,
        "none of the sidecars in `on` (b, c) offers job \"x\"; not in the fleet: c; it is offered by a: add one to `on`"
    );
    // A sidecar that is down and never told us its jobs may still offer it.
    let with_down = [s[0].clone(), s[1].clone(), down];
    assert_eq!(unplaceable_reason(&task(0, "z"), &with_down), None);
    let zero = [sidecar("a", &["x"], 0, 0)];
    assert!(
        unplaceable_reason(&task(0, "x"), &zero)
            .unwrap()
            .contains("no slots")
    );
}

const JOBS: [&str; 6] = ["j0", "j1", "j2", "j3", "j4", "j5"];
const NAMES: [&str; 4] = ["s0", "s1", "s2", "s3"];

fn arb_sidecar(i: usize) -> impl Strategy<Value = SidecarState> {
    (
        proptest::sample::subsequence(JOBS.to_vec(), 0..=JOBS.len()),
        0usize..4,
        0usize..4,
        proptest::sample::subsequence(JOBS.to_vec(), 0..=2),
        proptest::collection::vec(1usize..4, JOBS.len()),
        proptest::bool::weighted(0.85),
    )
        .prop_map(
            move |(offers, slots, running, running_jobs, instances, reachable)| SidecarState {
                name: NAMES[i].into(),
                offers: offers.into_iter().map(String::from).collect(),
                slots,
                running: running.min(slots),
                running_jobs: running_jobs
                    .into_iter()
                    .map(|j| (j.to_owned(), 1))
                    .collect(),
                max_instances: JOBS
                    .iter()
                    .zip(instances)
                    .map(|(j, n)| ((*j).to_owned(), n))
                    .collect(),
                reachable,
            },
        )
}

fn arb_task(i: usize) -> impl Strategy<Value = ReadyTask> {
    (
        0..JOBS.len(),
        proptest::sample::subsequence(NAMES.to_vec(), 0..=2),
        -1i32..2,
        proptest::option::of(0u64..100),
        proptest::sample::subsequence(NAMES.to_vec(), 0..=1),
    )
        .prop_map(move |(job, on, priority, expected_ms, avoid)| ReadyTask {
            task: i,
            job: JOBS[job].into(),
            on: on.into_iter().map(String::from).collect(),
            priority,
            expected_ms,
            avoid: avoid.into_iter().map(String::from).collect(),
        })
}

fn arb_input() -> impl Strategy<Value = (Vec<ReadyTask>, Vec<SidecarState>, usize)> {
    let sidecars = (0..NAMES.len()).map(arb_sidecar).collect::<Vec<_>>();
    let tasks = (1usize..12).prop_flat_map(|n| (0..n).map(arb_task).collect::<Vec<_>>());
    (tasks, sidecars, 0usize..10)
}

proptest! {
    #[test]
    fn placements_respect_every_limit((ready, sidecars, free) in arb_input()) {
        let placed = place(&ready, &sidecars, free);
        prop_assert!(placed.len() <= free);
        let by_name: HashMap<&str, &SidecarState> = sidecars.iter().map(|s| (s.name.as_str(), s)).collect();
        let by_task: HashMap<usize, &ReadyTask> = ready.iter().map(|t| (t.task, t)).collect();
        let mut per_sidecar: HashMap<&str, usize> = HashMap::new();
        let mut jobs_on: HashMap<(&str, &str), usize> = HashMap::new();
        let mut tasks_seen = HashSet::new();
        for p in &placed {
            let s = by_name[p.sidecar.as_str()];
            let t = by_task[&p.task];
            prop_assert!(tasks_seen.insert(p.task), "task placed twice");
            prop_assert!(s.reachable);
            prop_assert!(s.offers.contains(&t.job));
            prop_assert!(t.on.is_empty() || t.on.contains(&s.name));
            let on_it = jobs_on.entry((s.name.as_str(), t.job.as_str())).or_default();
            *on_it += 1;
            prop_assert!(s.instances_running(&t.job) + *on_it <= s.instances_allowed(&t.job),
                "job {} more often than its max_instances on {}", t.job, s.name);
            *per_sidecar.entry(&s.name).or_default() += 1;
        }
        for (name, n) in per_sidecar {
            let s = by_name[name];
            prop_assert!(s.running + n <= s.slots, "over the slots of {}", name);
        }
    }

    #[test]
    fn deterministic_and_independent_of_input_order((ready, sidecars, free) in arb_input()) {
        let first = place(&ready, &sidecars, free);
        prop_assert_eq!(&first, &place(&ready, &sidecars, free));
        let mut reversed = ready.clone();
        reversed.reverse();
        prop_assert_eq!(&first, &place(&reversed, &sidecars, free));
    }

    /// A ready task left waiting while a lower-priority one was placed must have had no
    /// sidecar it could use, even before the lower one took its slot.
    #[test]
    fn higher_priority_never_waits_behind_lower((ready, sidecars, free) in arb_input()) {
        let placed = place(&ready, &sidecars, free);
        let placed_tasks: HashSet<usize> = placed.iter().map(|p| p.task).collect();
        let Some(lowest_placed) = ready.iter().filter(|t| placed_tasks.contains(&t.task)).map(|t| t.priority).min() else {
            return Ok(());
        };
        for waiting in ready.iter().filter(|t| !placed_tasks.contains(&t.task) && t.priority > lowest_placed) {
            // Without the lower-priority tasks, would it fit? Then it fits now too, because
            // it was considered before any of them.
            let alone: Vec<ReadyTask> = ready.iter().filter(|t| t.priority >= waiting.priority).cloned().collect();
            let again = place(&alone, &sidecars, free);
            prop_assert!(!again.iter().any(|p| p.task == waiting.task),
                "task {} (priority {}) waited while priority {} ran", waiting.task, waiting.priority, lowest_placed);
        }
    }

    /// A task said never to be placeable is not placed even with every slot free.
    #[test]
    fn unplaceable_means_never_placed((ready, mut sidecars, _free) in arb_input()) {
        for s in &mut sidecars {
            s.running = 0;
            s.running_jobs.clear();
            s.reachable = true;
        }
        for t in &ready {
            if unplaceable_reason(t, &sidecars).is_some() {
                prop_assert!(place(std::slice::from_ref(t), &sidecars, 1).is_empty());
            }
        }
    }
}
