//! The run store at its edges, with the real binaries: two coordinators racing to take
//! over one orphaned run (exactly one drives it, no job runs twice), a driver whose run
//! is taken over with `attach --force` (it stops and starts nothing more), and a coordinator
//! home on a disk too small for the run's logs (nothing unsaved is acknowledged, the exit
//! code says so, and `attach` re-imports the rest once there is room; also an attempt
//! whose events the store lost although its task finished since).
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentfleet_e2e::background::BackgroundCoordinator;
use agentfleet_e2e::faults::CountingJob;
use agentfleet_e2e::files::toml_str;
use agentfleet_e2e::tmpfs::Tmpfs;
use agentfleet_e2e::{CoordinatorOutput, Sidecar, SidecarOptions, TestEnv, wait_until};
use serde_json::Value;

/// Until a run has placed and stored its first execution, or a process is gone.
const STARTUP: Duration = Duration::from_secs(30);
/// Until a coordinator that drives a run to its end is done.
const RUN_TIMEOUT: Duration = Duration::from_secs(110);

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

/// `coordinator show last --json`, or None while the store has no run to show.
fn try_show_last(env: &TestEnv) -> Option<Value> {
    let out = agentfleet_e2e::coordinator::run(
        env.path(),
        &env.path().join("home"),
        ["show", "last", "--json"],
        &[],
    );
    serde_json::from_str(&out.stdout).ok()
}

/// Three counting jobs run one at a time (max_parallel = 1), each ~1.2 s (`lines` lines,
/// 10 ms apart): while the first runs, two are still to be placed, which is where two
/// drivers of the run would both start them. Returns the jobs, the sidecar and the plan
/// and fleet files.
fn three_jobs_one_at_a_time(
    env: &TestEnv,
    lines: u32,
) -> (Vec<CountingJob>, Sidecar, PathBuf, PathBuf) {
    let jobs: Vec<CountingJob> = ["count-a", "count-b", "count-c"]
        .iter()
        .map(|name| {
            let markers = env.path().join(format!("markers-{name}"));
            CountingJob::new(name, lines, Duration::from_millis(10), &markers)
        })
        .collect();
    let jobs_toml: String = jobs.iter().map(CountingJob::toml).collect();
    let sidecar = env.start_sidecar("s1", &jobs_toml, SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let tasks: String = jobs
        .iter()
        .map(|j| format!("\n[[task]]\nname = {0}\njob = {0}\n", toml_str(&j.name)))
        .collect();
    let plan = env.write_file(
        "plan.toml",
        &format!("[plan]\nname = \"race\"\nmax_parallel = 1\n{tasks}"),
    );
    (jobs, sidecar, plan, fleet)
}

/// Waits until the store holds an execution of the last run with a sequence number.
fn wait_for_stored_execution(env: &TestEnv) {
    wait_until(STARTUP, "the first task's execution in the store", || {
        let show = try_show_last(env)?;
        let executions = show["executions"].as_array()?;
        executions
            .iter()
            .any(|e| e["last_seq"].as_u64() > Some(0))
            .then_some(())
    });
}

fn assert_each_ran_once(jobs: &[CountingJob], outputs: &[&CoordinatorOutput]) {
    for job in jobs {
        let runs = job.runs();
        if runs != 1 {
            let outputs: Vec<String> = outputs.iter().map(|o| o.to_string()).collect();
            panic!("`{}` ran {runs} times:\n{}", job.name, outputs.join("\n"));
        }
    }
}

#[test]
fn two_attaches_of_an_orphaned_run_one_drives_the_other_is_refused() {
    let env = TestEnv::new("attach-race");
    let (jobs, _sidecar, plan, fleet) = three_jobs_one_at_a_time(&env, 100);
    let mut first = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    wait_for_stored_execution(&env);
    let killed = first.kill();
    assert_eq!(killed.code(), None, "the coordinator was killed: {killed}");

    // Both at once, on the orphaned run.
    let mut one = BackgroundCoordinator::spawn(&env, ["attach", "last", "--json"]);
    let mut two = BackgroundCoordinator::spawn(&env, ["attach", "last", "--json"]);
    let pids = (one.pid(), two.pid());
    let (one, two) = (one.finish(RUN_TIMEOUT), two.finish(RUN_TIMEOUT));
    assert_each_ran_once(&jobs, &[&one, &two]);
    let ((winner, winner_pid), (loser, _)) = if one.code() == Some(0) {
        ((one, pids.0), (two, pids.1))
    } else {
        ((two, pids.1), (one, pids.0))
    };
    assert_eq!(
        winner.code(),
        Some(0),
        "one attach drives the run to its end:\n{winner}\n{loser}"
    );
    assert_eq!(
        loser.code(),
        Some(2),
        "the other is refused:\n{loser}\n{winner}"
    );
    let holder = format!("process {winner_pid} on host ");
    assert!(
        loser.stderr.contains("is driven by another coordinator")
            && loser.stderr.contains(&holder)
            && loser.stderr.contains("lease until "),
        "the refusal names the driver ({holder}...) and its lease:\n{loser}"
    );
    assert!(
        loser.events().all().is_empty(),
        "the refused attach drove nothing:\n{loser}"
    );
    eprintln!("the refused attach said: {}", loser.stderr.trim());
    let show = try_show_last(&env).expect("show last");
    assert_eq!(show["run"]["status"], "succeeded", "{show:#}");
    assert_eq!(
        show["executions"].as_array().map(Vec::len),
        Some(3),
        "{show:#}"
    );
}

#[test]
fn a_driver_whose_run_is_taken_with_force_stops_and_starts_nothing_more() {
    let env = TestEnv::new("attach-force");
    // Longer jobs (~3.5 s each): the run is taken over while its first task runs.
    let (jobs, _sidecar, plan, fleet) = three_jobs_one_at_a_time(&env, 300);
    let mut first = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    wait_for_stored_execution(&env);

    let taken = env.coordinator(["attach", "last", "--force", "--json"]);
    let first = first.finish(RUN_TIMEOUT);
    assert_each_ran_once(&jobs, &[&first, &taken]);
    assert_eq!(
        taken.code(),
        Some(0),
        "the forced attach drives the run:\n{taken}"
    );
    assert_eq!(
        first.code(),
        Some(1),
        "the first driver stops once it finds its lease taken:\n{first}"
    );
    assert!(
        first.stderr.contains("lost the lease of run"),
        "and says so:\n{first}"
    );
    let events = first.events();
    assert_eq!(
        events.of_type("task_placed").len(),
        1,
        "the first driver placed only the first task:\n{first}"
    );
    let show = try_show_last(&env).expect("show last");
    assert_eq!(show["run"]["status"], "succeeded", "{show:#}");
}

/// Lines the store-filling job prints: 200 000 of 100 bytes (20 MB).
const BIG_LINES: u32 = 200_000;

fn big_line(i: u32) -> String {
    format!("line-{i:06}-{}", "x".repeat(88))
}

/// The execution directories a sidecar's journal holds.
fn journal_entries(state_dir: &Path) -> Vec<String> {
    std::fs::read_dir(state_dir.join("executions"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_full_store_is_not_acknowledged_exits_4_and_attach_re_imports_once_there_is_room() {
    let env = TestEnv::new("store-full");
    let home: PathBuf = env.path().join("home");
    let disk = match Tmpfs::mount(&home, "2m") {
        Ok(disk) => disk,
        Err(e) => {
            eprintln!("skipped: cannot mount tmpfs ({e})");
            return;
        }
    };
    let job = format!(
        "[[job]]\nname = \"big\"\n[[job.step]]\nname = \"print\"\nrun = [\"seq\", \"-f\", {}, \"1\", \"{BIG_LINES}\"]\n",
        toml_str(format!("line-%06g-{}", "x".repeat(88)))
    );
    let sidecar = env.start_sidecar("s1", &job, SidecarOptions::default());
    let fleet = env.write_fleet(&[&sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"full\"\n\n[[task]]\nname = \"big\"\njob = \"big\"\n",
    );

    let out = env.coordinator(run_args(&plan, &fleet, &[]));
    assert_eq!(
        out.code(),
        Some(4),
        "a record the store could not keep:\n{out}"
    );
    let entries = journal_entries(sidecar.state_dir());
    assert_eq!(
        entries.len(),
        1,
        "the sidecar keeps the journal: {entries:?}\n{out}"
    );
    let execution = &entries[0];
    for said in [
        "could not save",
        &format!("execution {execution} (task big, attempt 1): "),
        "free space in",
        "coordinator attach",
    ] {
        assert!(
            out.stderr.contains(said),
            "the message says `{said}`:\n{out}"
        );
    }

    eprintln!("the run on a full store said: {}", out.stderr.trim());
    disk.resize("256m").expect("grow the coordinator's disk");
    let attach = env.coordinator(["attach", "last"]);
    assert_eq!(
        attach.code(),
        Some(0),
        "attach re-imports the rest:\n{attach}"
    );
    let logs = env.coordinator(["logs", "last"]);
    assert_eq!(logs.code(), Some(0), "{logs}");
    let stored: Vec<&str> = logs
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("big/print/stdout | "))
        .collect();
    assert_eq!(stored.len(), BIG_LINES as usize, "every line stored once");
    if let Some(i) = (1..=BIG_LINES).position(|i| stored[i as usize - 1] != big_line(i)) {
        panic!(
            "stored line #{} is {:?}, not {:?}",
            i + 1,
            stored[i],
            big_line(i as u32 + 1)
        );
    }
    let show = try_show_last(&env).expect("show last");
    assert_eq!(show["run"]["status"], "succeeded", "{show:#}");
    // Complete now, and acknowledged: the sidecar lets its copy go.
    wait_until(
        STARTUP,
        "the sidecar to prune the acknowledged journal",
        || {
            journal_entries(sidecar.state_dir())
                .is_empty()
                .then_some(())
        },
    );
}

/// A job that prints `line-1` … `line-300`, then fails on its first run and succeeds on
/// the next (a marker file says which); `markers/flaky-runs` counts its runs.
fn flaky_job(markers: &Path) -> String {
    let script = "echo \"$AGENTFLEET_EXECUTION_ID\" >> \"$MARKERS/flaky-runs\"; \
         i=1; while [ $i -le 300 ]; do echo line-$i; i=$((i+1)); done; \
         if [ -e \"$MARKERS/flaky-ran\" ]; then exit 0; fi; touch \"$MARKERS/flaky-ran\"; exit 1";
    format!(
        "[[job]]\nname = \"flaky\"\nenv = {{ MARKERS = {} }}\n[[job.step]]\nname = \"print\"\nrun = [\"sh\", \"-c\", {}]\n",
        agentfleet_e2e::files::toml_path(markers),
        toml_str(script)
    )
}

/// Takes every event of `execution_id` out of the store at `home`, as a full disk would
/// have kept them out: no steps, no log lines, `last_seq` 0, not finished.
fn forget_execution(home: &Path, execution_id: &str) {
    let db = rusqlite::Connection::open(home.join("agentfleet.db")).expect("open the store");
    db.execute_batch(&format!(
        "BEGIN;
         DELETE FROM logs WHERE src IN
             (SELECT id FROM log_sources WHERE execution_id = '{execution_id}');
         DELETE FROM steps WHERE execution_id = '{execution_id}';
         UPDATE executions SET last_seq = 0, finished_ms = NULL, status = 'running'
             WHERE execution_id = '{execution_id}';
         COMMIT;"
    ))
    .expect("take the execution's events out of the store");
}

#[test]
fn attach_re_imports_a_lost_attempt_of_a_task_that_finished_since() {
    let env = TestEnv::new("reimport-attempt");
    let markers = env.path().join("markers");
    let slow = CountingJob::new("slow", 600, Duration::from_millis(10), &markers);
    let jobs = format!("{}{}", flaky_job(&markers), slow.toml());
    let _sidecar = env.start_sidecar("s1", &jobs, SidecarOptions::default());
    let fleet = env.write_fleet(&[&_sidecar]);
    let plan = env.write_file(
        "plan.toml",
        "[plan]\nname = \"reimport\"\n\n[[task]]\nname = \"flaky\"\njob = \"flaky\"\nretries = 1\n\n\
         [[task]]\nname = \"slow\"\njob = \"slow\"\nafter = [\"flaky\"]\n",
    );

    // Killed while `slow` runs: both attempts of `flaky` are stored and not acknowledged.
    let mut first = BackgroundCoordinator::spawn(&env, run_args(&plan, &fleet, &["--json"]));
    let first_attempt = wait_until(STARTUP, "`slow` to run, stored", || {
        let show = try_show_last(&env)?;
        let executions = show["executions"].as_array()?;
        executions
            .iter()
            .any(|e| e["task"] == "slow" && e["last_seq"].as_u64() > Some(0))
            .then_some(())?;
        let attempt = executions
            .iter()
            .find(|e| e["task"] == "flaky" && e["attempt"] == 1)?;
        Some(attempt["execution_id"].as_str()?.to_owned())
    });
    let killed = first.kill();
    assert_eq!(killed.code(), None, "the coordinator was killed: {killed}");
    forget_execution(&env.path().join("home"), &first_attempt);

    let out = env.coordinator(["attach", "last"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let logs = env.coordinator(["logs", "last", "--task", "flaky"]);
    let expected: Vec<String> = (1..=300).map(|i| format!("line-{i}")).collect();
    for prefix in ["flaky/print/stdout | ", "flaky#2/print/stdout | "] {
        let lines: Vec<&str> = logs
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect();
        assert_eq!(
            lines, expected,
            "`{prefix}` lines, each once and in order:\n{logs}"
        );
    }
    assert!(
        out.stderr.contains(&format!(
            "re-importing execution {first_attempt} (task flaky, attempt 1)"
        )),
        "{out}"
    );
    let runs = std::fs::read_to_string(markers.join("flaky-runs")).unwrap_or_default();
    assert_eq!(
        runs.lines().count(),
        2,
        "`flaky` ran twice, no more:\n{runs}"
    );
    let show = try_show_last(&env).expect("show last");
    assert_eq!(show["run"]["status"], "succeeded", "{show:#}");
    let attempt = show["executions"]
        .as_array()
        .and_then(|all| {
            all.iter()
                .find(|e| e["execution_id"] == first_attempt.as_str())
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(attempt["status"], "failed", "{show:#}");
    assert!(attempt["finished_ms"].as_i64().is_some(), "{show:#}");
    let tasks = show["tasks"].as_array().cloned().unwrap_or_default();
    assert!(
        tasks
            .iter()
            .any(|t| t["task"] == "flaky" && t["status"] == "succeeded"),
        "the task keeps its last attempt's outcome: {show:#}"
    );
}
