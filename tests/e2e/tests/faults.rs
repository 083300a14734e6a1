//! "Nothing lost": faults between the coordinator and its sidecars, with the real binaries
//! on 127.0.0.1 and mTLS. Connections cut again and again mid-run, the coordinator killed
//! with SIGKILL and the run re-attached, `cancel` of a detached run and of an orphaned
//! one, and 100 MB of output: every log line is stored exactly once and in order, and no
//! job runs twice.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use agentfleet_e2e::background::{BackgroundCoordinator, mb};
use agentfleet_e2e::faults::{CountingJob, log_lines};
use agentfleet_e2e::files::{toml_path, toml_str};
use agentfleet_e2e::process::{is_alive, send_signal};
use agentfleet_e2e::proxy::{Proxy, write_fleet_through};
use agentfleet_e2e::{SidecarOptions, TestEnv, log_volume, wait_until};
use serde_json::Value;

/// Until a started run has placed its task and said so.
const STARTUP: Duration = Duration::from_secs(30);
/// Until a run of the counting job ends (it prints for a few seconds).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);
/// Until a stopped job's processes are gone, or a job has recorded its pid.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// The counting job of these tests: `line-1` … `line-300`, one every 10 ms (~3.5 s).
fn counting_job(env: &TestEnv) -> CountingJob {
    CountingJob::new(
        "numbered",
        300,
        Duration::from_millis(10),
        &env.path().join("markers"),
    )
}

/// A plan with one task `TASK` running job `TASK`.
fn one_task_plan(env: &TestEnv, task: &str) -> PathBuf {
    env.write_file(
        "plan.toml",
        &format!(
            "[plan]\nname = \"faults\"\n\n[[task]]\nname = {0}\njob = {0}\n",
            toml_str(task)
        ),
    )
}

fn run_args<'a>(plan: &'a Path, fleet: &'a Path, extra: &'a [&'a str]) -> Vec<&'a OsStr> {
    let mut args = vec![
        OsStr::new("run"),
        plan.as_os_str(),
        OsStr::new("--fleet"),
        fleet.as_os_str(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    args
}

/// The text of `task`'s stdout lines in `coordinator logs last` (the central store).
fn stored_lines(env: &TestEnv, task: &str, step: &str) -> Vec<String> {
    let out = env.coordinator(["logs", "last"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let prefix = format!("{task}/{step}/stdout | ");
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
        .collect()
}

/// `coordinator show last --json`: the stored run, tasks and executions.
fn show_last(env: &TestEnv) -> Value {
    let out = env.coordinator(["show", "last", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("`show --json` printed no JSON ({e}):\n{out}"))
}

/// Waits until the store holds an execution of the last run with a sequence number (what
/// `attach` and `cancel` resume from), polling `show last --json`.
fn wait_for_stored_execution(env: &TestEnv) {
    wait_until(PROCESS_TIMEOUT, "the store to record the execution", || {
        let out = agentfleet_e2e::coordinator::run(
            env.path(),
            &env.path().join("home"),
            ["show", "last", "--json"],
            &[],
        );
        let show: Value = serde_json::from_str(&out.stdout).ok()?;
        let executions = show["executions"].as_array()?;
        executions
            .iter()
            .any(|e| e["last_seq"].as_u64() > Some(0))
            .then_some(())
    });
}

/// Asserts `actual` is `expected` exactly; on failure, says where they first differ
/// rather than printing hundreds of lines.
fn assert_same_lines(actual: &[String], expected: &[String], what: &str) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    panic!(
        "{what}: {} lines where {} were expected; first difference at #{first}: {:?} instead of {:?}",
        actual.len(),
        expected.len(),
        actual.get(first),
        expected.get(first)
    );
}

/// Kills processes a failing test may leave behind (a detached coordinator, a job's
/// `sleep`), each only if its command line still matches, so a reused pid is left alone.
#[derive(Default)]
struct KillOnDrop(Vec<(u32, &'static str)>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for (pid, needle) in &self.0 {
            let matches = std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle));
            if is_alive(*pid) && matches {
                send_signal(*pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn cut_connections_lose_and_repeat_nothing() {
    let env = TestEnv::new("cut-connections");
    let job = counting_job(&env);
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let proxy = Proxy::to_sidecar(&sidecar);
    let fleet = write_fleet_through(&env, "fleet.toml", &[(&sidecar, &proxy)]);
    let plan = one_task_plan(&env, &job.name);

    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    // From here on StartJob, Watch and StopJob are all exposed to the cuts.
    run.wait_for_event(STARTUP, "run_started", |e| e["type"] == "run_started");
    let (stop_cutting, cutter_stop) = mpsc::channel::<()>();
    let proxy_ref = &proxy;
    let (out, cuts) = std::thread::scope(|scope| {
        let cutter = scope.spawn(move || {
            let mut cuts = 0u64;
            // Every 300–500 ms (a fixed, uneven rhythm) until the run has ended.
            while let Err(mpsc::RecvTimeoutError::Timeout) =
                cutter_stop.recv_timeout(Duration::from_millis(300 + (cuts * 137) % 201))
            {
                proxy_ref.cut_all();
                cuts += 1;
            }
            cuts
        });
        let out = run.finish(RUN_TIMEOUT);
        let _ = stop_cutting.send(());
        (out, cutter.join().expect("the cutter thread"))
    });
    eprintln!(
        "{cuts} cuts severed {} live connections ({} accepted)",
        proxy.severed(),
        proxy.accepted()
    );

    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        proxy.severed() >= 3,
        "only {} of {cuts} cuts hit a live connection: the run was barely disturbed\n{out}",
        proxy.severed()
    );
    let events = out.events();
    let finished = events.final_task_finished(&job.name);
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(
        events.of_task("task_placed", &job.name).len(),
        1,
        "one placement, one execution: {out}"
    );
    assert_same_lines(
        &log_lines(&events, &job.name),
        &job.expected_lines(),
        "the --json log events",
    );
    assert_same_lines(
        &stored_lines(&env, &job.name, "count"),
        &job.expected_lines(),
        "the stored log (coordinator logs last)",
    );
    assert_eq!(job.runs(), 1, "the job started more than once");
}

#[test]
fn a_killed_coordinator_is_replaced_by_attach_without_loss_or_rerun() {
    let env = TestEnv::new("kill-coordinator");
    let job = counting_job(&env);
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = one_task_plan(&env, &job.name);

    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    // A third of the way in: lines are stored (batches commit every 100 ms), more follow.
    run.wait_for_event(RUN_TIMEOUT, "line-100 in the --json log", |e| {
        e["type"] == "log" && e["line"] == "line-100"
    });
    let killed = run.kill();
    assert_eq!(killed.code(), None, "the coordinator was killed: {killed}");
    let progress_at_kill = std::fs::read_to_string(job.markers.join("progress"))
        .map(|t| t.lines().count())
        .unwrap_or(0);

    let out = env.coordinator(["attach", "last", "--json"]);
    eprintln!(
        "killed with the job at line {progress_at_kill} of {}; attach printed {} log lines",
        job.lines,
        log_lines(&out.events(), &job.name).len()
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let finished = out.events().final_task_finished(&job.name).clone();
    assert_eq!(finished["status"], "succeeded", "{finished}");

    assert_same_lines(
        &stored_lines(&env, &job.name, "count"),
        &job.expected_lines(),
        "the stored log (coordinator logs last)",
    );
    assert_eq!(job.runs(), 1, "the job started more than once");
    let show = show_last(&env);
    assert_eq!(show["run"]["status"], "succeeded", "{show:#}");
    assert_eq!(show["run"]["exit_code"], 0, "{show:#}");
    let executions = show["executions"].as_array().expect("executions");
    assert_eq!(executions.len(), 1, "one execution: {show:#}");
    assert_eq!(executions[0]["status"], "succeeded", "{show:#}");
}

/// Kills a coordinator as soon as its job has started: before its store has recorded the
/// execution (the store writer commits in batches, after the first Watch event). Returns
/// how many executions the store held at the kill, for the failure message.
fn kill_as_soon_as_started(
    run: &mut BackgroundCoordinator,
    env: &TestEnv,
    started: impl Fn() -> bool,
) -> usize {
    wait_until(PROCESS_TIMEOUT, "the job to start", || {
        started().then_some(())
    });
    let killed = run.kill();
    assert_eq!(killed.code(), None, "the coordinator was killed: {killed}");
    show_last(env)["executions"].as_array().map_or(0, Vec::len)
}

#[test]
fn a_job_started_just_before_the_coordinator_died_is_not_started_again() {
    let env = TestEnv::new("kill-after-start");
    let job = counting_job(&env);
    // Two sidecars: with one, the re-placed task would wait for the orphan instead (see
    // `a_run_whose_job_is_already_running_waits_for_it_then_runs`).
    let s1 = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let s2 = env.start_sidecar("s2", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&s1, &s2]);
    let plan = one_task_plan(&env, &job.name);

    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    let stored = kill_as_soon_as_started(&mut run, &env, || job.runs() >= 1);

    let out = env.coordinator(["attach", "last", "--json"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        job.runs(),
        1,
        "the job started again after the coordinator died (the store held {stored} executions at the kill)"
    );
    assert_same_lines(
        &stored_lines(&env, &job.name, "count"),
        &job.expected_lines(),
        "the stored log (coordinator logs last)",
    );
}

#[test]
fn a_run_whose_job_is_already_running_waits_for_it_then_runs() {
    let env = TestEnv::new("job-already-running");
    let job = counting_job(&env);
    let sidecar = env.start_sidecar("s1", &job.toml(), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = one_task_plan(&env, &job.name);
    let mut leftovers = KillOnDrop::default();

    // A first run of the same job, in the background (as after `attach` of an orphaned
    // execution, or another coordinator's run).
    let first = env.coordinator(run_args(&plan, &fleet, &["--detach"]));
    assert_eq!(first.code(), Some(0), "{first}");
    wait_until(PROCESS_TIMEOUT, "the first run's job to start", || {
        (job.runs() >= 1).then_some(())
    });
    if let Some(driver) = show_last(&env)["run"]["driver_pid"].as_u64() {
        leftovers.0.push((driver as u32, "coordinator"));
    }

    let mut second = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    let out = second.finish(RUN_TIMEOUT);
    assert_eq!(out.code(), Some(0), "the second run did not finish: {out}");
    assert_eq!(job.runs(), 2, "each run ran the job once: {out}");
}

/// A job that starts `sleep 1000` and records the sleep's pid in `MARKERS/long.pid`
/// (renamed into place, so the file is complete once it exists), then waits for it.
fn long_job(markers: &Path) -> String {
    std::fs::create_dir_all(markers).expect("create the markers dir");
    let script = "sleep 1000 & echo $! > \"$MARKERS/long.pid.tmp\"; \
                  mv \"$MARKERS/long.pid.tmp\" \"$MARKERS/long.pid\"; wait";
    format!(
        "[[job]]\nname = \"long\"\nenv = {{ MARKERS = {} }}\n[[job.step]]\nname = \"sleep\"\nrun = [\"sh\", \"-c\", {}]\n",
        toml_path(markers),
        toml_str(script)
    )
}

/// Waits for the long job's `sleep` to run, and returns its pid.
fn long_job_pid(markers: &Path) -> u32 {
    let pid_file = markers.join("long.pid");
    let pid = wait_until(PROCESS_TIMEOUT, "the long job to record its pid", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    assert!(is_alive(pid), "the job's sleep {pid} runs");
    pid
}

/// After `coordinator cancel`: the job's process is gone and the store says canceled.
fn assert_canceled(env: &TestEnv, job_pid: u32) {
    wait_until(
        PROCESS_TIMEOUT,
        &format!("the job's process {job_pid} to be gone after cancel"),
        || (!is_alive(job_pid)).then_some(()),
    );
    let show = wait_until(PROCESS_TIMEOUT, "the run to be stored as ended", || {
        let show = show_last(env);
        (show["run"]["status"] != "running").then_some(show)
    });
    assert_eq!(show["run"]["status"], "canceled", "{show:#}");
    // Exit code 1: at least one task was stopped.
    assert_eq!(show["run"]["exit_code"], 1, "{show:#}");
    assert_eq!(show["tasks"][0]["status"], "canceled", "{show:#}");
}

#[test]
fn cancel_stops_the_job_of_a_detached_run() {
    let env = TestEnv::new("cancel-detached");
    let markers = env.path().join("markers");
    let sidecar = env.start_sidecar("s1", &long_job(&markers), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = one_task_plan(&env, "long");
    let mut leftovers = KillOnDrop::default();

    let detached = env.coordinator(run_args(&plan, &fleet, &["--detach"]));
    assert_eq!(detached.code(), Some(0), "{detached}");
    let job_pid = long_job_pid(&markers);
    leftovers.0.push((job_pid, "sleep"));
    // The job started, so the background coordinator drives the run by now.
    let driver: u32 = show_last(&env)["run"]["driver_pid"]
        .as_u64()
        .and_then(|p| p.try_into().ok())
        .expect("a driver pid");
    leftovers.0.push((driver, "coordinator"));
    assert!(is_alive(driver), "the background coordinator {driver} runs");

    let cancel = env.coordinator(["cancel", "last"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    assert_canceled(&env, job_pid);
    wait_until(
        PROCESS_TIMEOUT,
        "the background coordinator to exit",
        || (!is_alive(driver)).then_some(()),
    );
}

#[test]
fn cancel_stops_the_job_of_a_run_whose_coordinator_was_killed() {
    let env = TestEnv::new("cancel-orphan");
    let markers = env.path().join("markers");
    let sidecar = env.start_sidecar("s1", &long_job(&markers), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = one_task_plan(&env, "long");
    let mut leftovers = KillOnDrop::default();

    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    let job_pid = long_job_pid(&markers);
    leftovers.0.push((job_pid, "sleep"));
    // Killed once the store knows the execution (a kill before that is another story:
    // `a_job_started_just_before_the_coordinator_died_is_not_started_again`).
    wait_for_stored_execution(&env);
    let killed = run.kill();
    assert_eq!(killed.code(), None, "the coordinator was killed: {killed}");
    assert!(is_alive(job_pid), "the job outlives its coordinator");

    let cancel = env.coordinator(["cancel", "last"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    assert_canceled(&env, job_pid);
}

#[test]
fn cancel_stops_a_job_started_just_before_the_coordinator_died() {
    let env = TestEnv::new("cancel-after-start");
    let markers = env.path().join("markers");
    let sidecar = env.start_sidecar("s1", &long_job(&markers), SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = one_task_plan(&env, "long");
    let mut leftovers = KillOnDrop::default();

    let mut run = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    let pid_file = markers.join("long.pid");
    let stored = kill_as_soon_as_started(&mut run, &env, || pid_file.exists());
    let job_pid = long_job_pid(&markers);
    leftovers.0.push((job_pid, "sleep"));
    eprintln!("the store held {stored} executions when the coordinator was killed");

    let cancel = env.coordinator(["cancel", "last"]);
    assert_eq!(cancel.code(), Some(0), "{cancel}");
    assert_canceled(&env, job_pid);
}

/// 100 MiB of output (1 Mi lines of 100 bytes) all stored, with bounded memory on both
/// sides. Prints the throughput and each process's peak memory; asserts only a generous
/// memory bound, so that a real leak (memory growing with the volume) fails it.
#[test]
fn a_hundred_megabytes_of_output_are_stored_with_bounded_memory() {
    /// Far above what streaming needs, far below holding the output in memory a few times.
    const MEMORY_BOUND: u64 = 500_000_000;
    let env = TestEnv::new("log-volume");
    let shipped = log_volume::ship(&env, 1024 * 1024);
    eprintln!("{}", shipped.report());

    assert_eq!(shipped.run.code(), Some(0), "{}", shipped.run);
    let stored = &shipped.stored;
    assert_eq!(stored.first_problem, None, "{stored:?}");
    assert_eq!(stored.lines, shipped.lines, "{stored:?}");
    assert_eq!(stored.bytes, shipped.bytes, "{stored:?}");
    for process in ["sidecar", "supervisor", "coordinator"] {
        let peak = shipped
            .peaks
            .get(process)
            .unwrap_or_else(|| panic!("the {process} was never sampled: {:?}", shipped.peaks));
        assert!(
            peak.hwm.max(peak.rss) < MEMORY_BOUND,
            "the {process} peaked at {:.0} MB resident",
            mb(peak.hwm.max(peak.rss))
        );
    }
}
