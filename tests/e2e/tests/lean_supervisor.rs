//! The sidecar starts each command job's supervisor from the lean `agentfleet-supervisor`
//! binary installed beside it (real binaries on 127.0.0.1).
use std::time::Duration;

use agentfleet_e2e::background::BackgroundCoordinator;
use agentfleet_e2e::process::pids_with_arg;
use agentfleet_e2e::{SidecarOptions, TestEnv, toml_str, wait_until};

#[test]
fn supervisors_run_from_the_lean_binary_beside_the_sidecar() {
    let env = TestEnv::new("lean_supervisor");
    let go = env.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; echo done",
        go.display()
    );
    let sidecar = env.start_sidecar(
        "s1",
        &format!(
            "[[job]]\nname = \"wait\"\n[[job.step]]\nname = \"w\"\nrun = [\"sh\", \"-c\", {}]\n",
            toml_str(&script)
        ),
        SidecarOptions::default(),
    );
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"lean\"\n\n[[task]]\nname = \"wait\"\njob = \"wait\"\n",
    );
    let mut run = BackgroundCoordinator::spawn(
        &env,
        [
            "run".as_ref(),
            plan.as_os_str(),
            "--fleet".as_ref(),
            fleet.as_os_str(),
            "--json".as_ref(),
        ],
    );
    run.wait_for_event(Duration::from_secs(60), "the task to start", |e| {
        e["type"] == "task_started"
    });
    let state_dir = sidecar.state_dir().to_string_lossy().into_owned();
    let supervisor = wait_until(Duration::from_secs(30), "the supervisor", || {
        pids_with_arg(&state_dir).into_iter().find(|&pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with("agentfleet-supervisor"))
        })
    });
    let cmdline = std::fs::read(format!("/proc/{supervisor}/cmdline")).unwrap();
    assert!(
        !cmdline.split(|b| *b == 0).any(|arg| arg == b"supervise"),
        "the lean binary takes no subcommand"
    );
    std::fs::write(&go, b"").unwrap();
    let out = run.finish(Duration::from_secs(60));
    assert_eq!(out.code(), Some(0), "{out}");
}
