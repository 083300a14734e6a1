//! The run lease: one driver per run, whatever races for it.
use std::path::Path;
use std::sync::{Arc, Barrier};

use super::*;
use crate::events::{At, RunEvent, RunEventKind};

fn new_run(run_id: &str) -> NewRun {
    NewRun {
        run_id: run_id.into(),
        plan_name: "p".into(),
        plan_path: "plan.toml".into(),
        plan_text: String::new(),
        fleet_path: None,
        started_ms: agentfleet_common::now_ms(),
        tasks: vec![("t".into(), "job".into())],
    }
}

fn driver(id: &str, pid: u32, host: &str) -> Driver {
    Driver {
        id: id.into(),
        pid,
        host: host.into(),
    }
}

fn placed(run_id: &str, execution_id: &str) -> RunEvent {
    RunEvent::new(
        run_id,
        agentfleet_common::now_ms(),
        RunEventKind::TaskPlaced {
            at: At {
                task: "t".into(),
                attempt: 1,
                sidecar: "s1".into(),
                execution_id: execution_id.into(),
            },
        },
    )
}

/// A run whose driver, on another host, stopped renewing its lease long ago.
fn orphaned_run(home: &Path, run_id: &str) {
    let mut store = Store::open(home).unwrap();
    let gone = driver("crashed", 77, "gone-host.example");
    store.create_run_as(&new_run(run_id), &gone).unwrap();
    store.take_lease(run_id, &gone, true, 0).unwrap().unwrap();
}

#[test]
fn of_two_coordinators_racing_for_an_expired_lease_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_owned();
    for round in 0..20 {
        let run_id = format!("run-{round}");
        orphaned_run(&home, &run_id);
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|name| {
                let (home, run_id, barrier) = (home.clone(), run_id.clone(), barrier.clone());
                std::thread::spawn(move || {
                    // Each its own connection, as two processes would have.
                    let store = Store::open(&home).unwrap();
                    let me = driver(name, 1000, "racer-host.example");
                    barrier.wait();
                    let now = agentfleet_common::now_ms();
                    (name, store.take_lease(&run_id, &me, false, now).unwrap())
                })
            })
            .collect();
        let results: Vec<_> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let winners: Vec<&str> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let holder = Store::open(&home).unwrap().lease_holder(&run_id).unwrap();
        assert_eq!(holder.driver_id.as_deref(), Some(winners[0]));
        for (_, result) in &results {
            if let Err(refused_by) = result {
                assert_eq!(refused_by.driver_id.as_deref(), Some(winners[0]));
                assert!(refused_by.is_live(agentfleet_common::now_ms()));
            }
        }
    }
}

#[test]
fn a_live_lease_is_refused_with_its_holder_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut a_store = Store::open(dir.path()).unwrap();
    let b_store = Store::open(dir.path()).unwrap();
    let a = driver("a", 1111, "host-a.example");
    let b = driver("b", 2222, "host-b.example");
    a_store.create_run_as(&new_run("r1"), &a).unwrap();

    let now = agentfleet_common::now_ms();
    let refused = b_store
        .take_lease("r1", &b, false, now)
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.driver_id.as_deref(), Some("a"));
    let said = refused.describe();
    assert!(
        said.contains("process 1111 on host host-a.example, lease until "),
        "{said}"
    );
    // A renewal keeps it; once it has expired unrenewed, it is free.
    a_store.renew_lease("r1", &a, now).unwrap().unwrap();
    let expired = now + LEASE_TTL.as_millis() as i64 + 1;
    b_store
        .take_lease("r1", &b, false, expired)
        .unwrap()
        .unwrap();

    // The old holder finds out at its next renewal, and can place nothing more.
    let lost = a_store.renew_lease("r1", &a, expired).unwrap().unwrap_err();
    assert_eq!(lost.driver_id.as_deref(), Some("b"));
    let err = a_store
        .record_placement(&placed("r1", "e1"), &a)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotDriver { .. }), "{err}");
    assert!(b_store.run_snapshot("r1").unwrap().executions.is_empty());
    let mut b_store = b_store;
    b_store.record_placement(&placed("r1", "e2"), &b).unwrap();
    assert_eq!(b_store.run_snapshot("r1").unwrap().executions.len(), 1);
}

#[test]
fn force_takes_a_live_lease_and_a_released_one_is_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let a = driver("a", 1111, "host-a.example");
    let b = driver("b", 2222, "host-b.example");
    let c = driver("c", 3333, "host-c.example");
    store.create_run_as(&new_run("r1"), &a).unwrap();
    let now = agentfleet_common::now_ms();
    store.take_lease("r1", &b, true, now).unwrap().unwrap();
    assert!(
        !store.end_drive("r1", &a, None).unwrap(),
        "a no longer holds it"
    );
    assert!(store.end_drive("r1", &b, None).unwrap());
    let holder = store.lease_holder("r1").unwrap();
    assert!(!holder.is_live(now), "{holder:?}");
    store.take_lease("r1", &c, false, now).unwrap().unwrap();
}

#[test]
fn a_crashed_holder_on_this_host_need_not_be_waited_out() {
    if !cfg!(target_os = "linux") {
        return; // liveness by pid needs /proc
    }
    let dir = tempfile::tempdir().unwrap();
    let store_a = Store::open(dir.path()).unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    // Beyond the default pid_max: no such process, on this very host.
    let crashed = driver("crashed", u32::MAX - 1, &this_host());
    store.create_run_as(&new_run("r1"), &crashed).unwrap();
    let holder = store_a.lease_holder("r1").unwrap();
    assert!(holder.is_live(agentfleet_common::now_ms()) && holder.is_known_dead());
    let me = driver("me", std::process::id(), &this_host());
    let now = agentfleet_common::now_ms();
    store.take_lease("r1", &me, false, now).unwrap().unwrap();
    // This process is alive: a second taker waits for the lease.
    let other = driver("other", 1, "elsewhere.example");
    assert!(
        store_a
            .take_lease("r1", &other, false, now)
            .unwrap()
            .is_err()
    );
}

#[test]
fn the_writer_of_a_driver_that_lost_its_lease_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let a = driver("a", 1111, "host-a.example");
    let b = driver("b", 2222, "host-b.example");
    store.create_run_as(&new_run("r1"), &a).unwrap();
    let mut reporter = store.reporter_for("r1", &a).unwrap();
    use crate::report::Reporter;
    reporter.event(&placed("r1", "e1"));
    reporter.flush();
    assert_eq!(store.run_snapshot("r1").unwrap().executions.len(), 1);

    store
        .take_lease("r1", &b, true, agentfleet_common::now_ms())
        .unwrap()
        .unwrap();
    reporter.event(&placed("r1", "e2"));
    let stats = reporter.close().unwrap();
    assert_eq!(stats.superseded_events, 1, "{stats:?}");
    assert_eq!(stats.lost_events, 0, "{stats:?}");
    assert_eq!(store.run_snapshot("r1").unwrap().executions.len(), 1);
}
