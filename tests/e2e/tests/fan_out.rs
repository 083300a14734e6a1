//! Fan-out of one job on one sidecar (`max_instances`), with the real binaries on
//! 127.0.0.1: four partitions of one load job run side by side on a single server, and a
//! job that does not allow it still runs one at a time.
use agentfleet_e2e::{SidecarOptions, TestEnv};

/// A one-step job `load` whose step marks its partition as started, then waits (up to
/// `wait_s` seconds) until `want` partitions have started; it fails when they did not
/// all run at the same time. `extra` goes into the `[[job]]` section.
fn load_job(marks: &std::path::Path, want: usize, wait_s: u32, extra: &str) -> String {
    let script = format!(
        "touch {marks}/$PARTITION; i=0; \
         while [ $(ls {marks} | wc -l) -lt {want} ]; do \
           i=$((i+1)); [ $i -gt {ticks} ] && echo alone && exit 1; sleep 0.05; \
         done; echo together",
        marks = marks.display(),
        ticks = wait_s * 20,
    );
    format!(
        "[[job]]\nname = \"load\"\nparams = [\"PARTITION\"]\n{extra}\n[[job.step]]\nname = \"work\"\nrun = [\"sh\", \"-c\", {script:?}]\n"
    )
}

fn plan(env: &TestEnv, partitions: usize) -> std::path::PathBuf {
    let mut plan = String::from("[plan]\nname = \"fan-out\"\n");
    for p in 0..partitions {
        plan.push_str(&format!(
            "\n[[task]]\nname = \"p{p}\"\njob = \"load\"\nparams = {{ PARTITION = \"{p}\" }}\n"
        ));
    }
    env.write_file("plan.toml", &plan)
}

#[test]
fn one_job_runs_up_to_max_instances_at_once_on_one_sidecar() {
    let env = TestEnv::new("fan_out");
    let marks = env.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let sidecar = env.start_sidecar(
        "s1",
        &load_job(&marks, 4, 60, "max_instances = 4"),
        SidecarOptions {
            slots: 4,
            ..Default::default()
        },
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.run_plan(&plan(&env, 4), &fleet);
    // Each step succeeds only when all four partitions ran at the same time.
    assert_eq!(out.code(), Some(0), "{out}");
    let events = out.events();
    for p in 0..4 {
        let finished = events.final_task_finished(&format!("p{p}"));
        assert_eq!(finished["status"], "succeeded", "{finished}");
    }
    assert_eq!(events.placed_on(None).len(), 1);
}

#[test]
fn without_max_instances_a_job_runs_once_at_a_time() {
    let env = TestEnv::new("fan_out_default");
    let marks = env.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    // Each partition waits for two to run together, which never happens: it gives up
    // after 1 s ("alone") and the run goes on with the next one.
    let sidecar = env.start_sidecar(
        "s1",
        &load_job(&marks, 2, 1, ""),
        SidecarOptions {
            slots: 4,
            ..Default::default()
        },
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let out = env.run_plan(&plan(&env, 2), &fleet);
    assert_ne!(out.code(), Some(0), "{out}");
    let events = out.events();
    // The first ran alone and failed; the second saw the first's mark and succeeded.
    let outcomes: Vec<String> = (0..2)
        .map(|p| events.final_task_finished(&format!("p{p}"))["status"].to_string())
        .collect();
    assert!(
        outcomes.contains(&"\"failed\"".to_owned()),
        "one partition ran alone: {outcomes:?}"
    );
}
