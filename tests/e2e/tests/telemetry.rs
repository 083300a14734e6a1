//! OpenTelemetry end to end: the real coordinator and three real sidecars export to an
//! in-test OTLP receiver; one run is one trace, run → task → execution → step across the
//! two services, with the steps' real times and error status where a step failed, and
//! every job log line is a log record with the trace and span ids of its step. And a
//! collector that is down never slows or breaks a run.
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use agentfleet_e2e::otlp::{OtlpReceiver, ReceivedSpan, closed_endpoint};
use agentfleet_e2e::{SidecarOptions, TestEnv, toml_str};

/// How long exported spans may take to arrive after the run ends.
const SPANS_TIMEOUT: Duration = Duration::from_secs(30);

fn jobs() -> String {
    let job = |name: &str, steps: &[(&str, &str)]| {
        let mut text = format!("[[job]]\nname = {}\n", toml_str(name));
        for (step, script) in steps {
            text += &format!(
                "[[job.step]]\nname = {}\nrun = [\"sh\", \"-c\", {}]\n",
                toml_str(step),
                toml_str(script)
            );
        }
        text + "\n"
    };
    [
        job(
            "two-steps",
            &[
                ("extract", "echo extracting; sleep 0.3"),
                ("load", "echo loaded"),
            ],
        ),
        job(
            "fails",
            &[("work", "echo 'error: the source is down' >&2; exit 3")],
        ),
    ]
    .concat()
}

fn options(otlp: &str) -> SidecarOptions {
    SidecarOptions {
        slots: 2,
        env: vec![("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.into())],
        ..SidecarOptions::default()
    }
}

const PLAN: &str = r#"
[plan]
name = "traced"

[[task]]
name = "first"
job = "two-steps"

[[task]]
name = "second"
job = "two-steps"
after = ["first"]

[[task]]
name = "broken"
job = "fails"
"#;

fn run(env: &TestEnv, otlp: &str) -> agentfleet_e2e::CoordinatorOutput {
    let plan = env.path().join("plan.toml");
    let fleet = env.path().join("fleet.toml");
    env.coordinator([
        OsStr::new("run"),
        plan.as_os_str(),
        OsStr::new("--fleet"),
        fleet.as_os_str(),
        OsStr::new("--json"),
        OsStr::new("--otlp-endpoint"),
        OsStr::new(otlp),
    ])
}

fn by_id(spans: &[ReceivedSpan]) -> BTreeMap<&str, &ReceivedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

#[test]
fn one_trace_per_run_across_coordinator_and_sidecars() {
    let env = TestEnv::new("telemetry-trace");
    let receiver = OtlpReceiver::start();
    let sidecars: Vec<_> = ["s1", "s2", "s3"]
        .iter()
        .map(|name| {
            let mut options = options(&receiver.endpoint());
            // Every sidecar serves Prometheus metrics on an admin port of its own.
            options
                .env
                .push(("AGENTFLEET_ADMIN_LISTEN".into(), "127.0.0.1:0".into()));
            env.start_sidecar(name, &jobs(), options)
        })
        .collect();
    env.write_fleet(&sidecars.iter().collect::<Vec<_>>());
    env.write_file("plan.toml", PLAN);

    let out = run(&env, &receiver.endpoint());
    assert_eq!(out.code(), Some(1), "one task fails\n{out}");
    let run_id = out.events().of_type("run_started")[0]["run_id"]
        .as_str()
        .expect("run_started has run_id")
        .to_owned();

    // 1 run, 3 task attempts, 3 executions, 5 steps (two per two-steps run, one failing).
    let spans = receiver.wait_for_spans(SPANS_TIMEOUT, "the run's spans", |spans| {
        let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
        count("run") >= 1 && count("task") >= 3 && count("execution") >= 3 && count("step") >= 5
    });
    let spans: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.trace_id == run_id).collect();
    let of =
        |name: &str| -> Vec<&ReceivedSpan> { spans.iter().filter(|s| s.name == name).collect() };
    let (runs, tasks, executions, steps) = (of("run"), of("task"), of("execution"), of("step"));
    assert_eq!(runs.len(), 1, "one run span in the run's trace: {spans:#?}");
    assert_eq!(tasks.len(), 3, "{tasks:#?}");
    assert_eq!(executions.len(), 3, "{executions:#?}");
    assert_eq!(steps.len(), 5, "{steps:#?}");
    let run = runs[0];
    assert_eq!(run.attr("run.id"), Some(run_id.as_str()));
    assert_eq!(run.attr("plan.name"), Some("traced"));
    assert!(run.parent_span_id.is_empty(), "the run span is the root");
    assert!(run.error, "the run failed");

    // Parent chain run → task → execution → step, across the two services.
    let ids = by_id(&spans);
    for task in &tasks {
        assert_eq!(task.parent_span_id, run.span_id, "{task:#?}");
        assert_eq!(task.service, "agentfleet-coordinator");
    }
    for execution in &executions {
        let task = ids
            .get(execution.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the execution's parent is a task span: {execution:#?}"));
        assert_eq!(task.name, "task");
        assert_eq!(task.attr("execution.id"), execution.attr("execution.id"));
        assert_eq!(execution.service, "agentfleet-sidecar");
        assert_ne!(execution.service, task.service);
        assert_eq!(execution.attr("run.id"), Some(run_id.as_str()));
    }
    let sidecars_used: BTreeSet<&str> = executions
        .iter()
        .filter_map(|e| e.attr("sidecar.name"))
        .collect();
    assert!(!sidecars_used.is_empty());
    for step in &steps {
        let execution = ids
            .get(step.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the step's parent is an execution span: {step:#?}"));
        assert_eq!(execution.name, "execution");
        assert_eq!(step.service, "agentfleet-sidecar");
        // Real times, inside the run.
        assert!(step.start_unix_nano <= step.end_unix_nano, "{step:#?}");
        assert!(
            step.start_unix_nano >= run.start_unix_nano && step.end_unix_nano <= run.end_unix_nano,
            "step within the run's bounds: {step:#?}\nrun: {run:#?}"
        );
    }
    let extract = steps
        .iter()
        .find(|s| s.attr("step.name") == Some("extract"))
        .expect("an extract step");
    assert!(
        extract.end_unix_nano - extract.start_unix_nano >= 250_000_000,
        "the extract step slept 0.3s: {extract:#?}"
    );

    // The failed step, its execution and its task are errors; the others are not.
    let failed: Vec<&&ReceivedSpan> = steps.iter().filter(|s| s.error).collect();
    assert_eq!(failed.len(), 1, "{steps:#?}");
    assert_eq!(failed[0].attr("step.name"), Some("work"));
    assert_eq!(failed[0].attr("step.status"), Some("failed"));
    let broken = tasks
        .iter()
        .find(|t| t.attr("task.name") == Some("broken"))
        .expect("the broken task's span");
    assert!(broken.error);
    assert!(tasks.iter().filter(|t| t.error).count() == 1);
    assert_eq!(executions.iter().filter(|e| e.error).count(), 1);

    // Every log line is a log record in the run's trace, on the span of its step.
    let logs = receiver.wait_for_logs(SPANS_TIMEOUT, "the run's log records", |logs| {
        logs.iter().filter(|l| l.trace_id == run_id).count() >= 5
    });
    let logs: Vec<_> = logs.into_iter().filter(|l| l.trace_id == run_id).collect();
    let bodies: BTreeSet<&str> = logs.iter().map(|l| l.body.as_str()).collect();
    assert_eq!(
        bodies,
        BTreeSet::from(["extracting", "loaded", "error: the source is down"]),
        "{logs:#?}"
    );
    assert_eq!(
        logs.len(),
        5,
        "two lines per two-steps run, one of the failing one: {logs:#?}"
    );
    for log in &logs {
        let step = ids
            .get(log.span_id.as_str())
            .unwrap_or_else(|| panic!("the record's span is a step span: {log:#?}"));
        assert_eq!(step.name, "step", "{log:#?}");
        assert_eq!(log.attr("step.name"), step.attr("step.name"), "{log:#?}");
        assert_eq!(
            log.attr("execution.id"),
            step.attr("execution.id"),
            "{log:#?}"
        );
        assert_eq!(log.attr("run.id"), Some(run_id.as_str()));
        let task = log.attr("task.name").expect("task.name");
        let job = if task == "broken" {
            "fails"
        } else {
            "two-steps"
        };
        assert_eq!(log.attr("job.name"), Some(job), "{log:#?}");
        assert_eq!(log.attr("task.attempt"), Some("1"));
        assert!(log.attr("sidecar.name").is_some_and(|s| s.starts_with('s')));
        // Stamped when the coordinator received it: after its step started, within the run.
        assert!(
            log.time_unix_nano >= step.start_unix_nano.saturating_sub(1_000_000)
                && log.time_unix_nano <= run.end_unix_nano,
            "the line's time: {log:#?}\n{step:#?}"
        );
    }
    let stderr = logs
        .iter()
        .find(|l| l.body == "error: the source is down")
        .expect("the failing line");
    assert_eq!(stderr.attr("log.iostream"), Some("stderr"));
    assert_eq!(stderr.severity_text, "WARN");

    // Each sidecar's admin port serves the same metrics in the Prometheus text format.
    let finished: usize = sidecars.iter().map(admin_finished_count).sum();
    assert_eq!(finished, 3, "three executions finished across the fleet");

    // Metrics arrive from both services (pushed at least once, at exit for the coordinator).
    let metrics = wait_for_coordinator_metrics(&receiver);
    assert!(
        metrics.contains(&(
            "agentfleet-coordinator".into(),
            "agentfleet.coordinator.tasks.finished".into()
        )),
        "{metrics:#?}"
    );
}

/// The coordinator pushes its metrics when it exits; the sidecars every minute or when
/// they stop, so only the coordinator's are awaited here.
fn wait_for_coordinator_metrics(receiver: &OtlpReceiver) -> BTreeSet<(String, String)> {
    agentfleet_e2e::wait_until(SPANS_TIMEOUT, "the coordinator's metrics", || {
        let metrics = receiver.metrics();
        metrics
            .iter()
            .any(|(service, _)| service == "agentfleet-coordinator")
            .then_some(metrics)
    })
}

#[test]
fn a_collector_that_is_down_does_not_slow_or_break_a_run() {
    let env = TestEnv::new("telemetry-down");
    let nowhere = closed_endpoint();
    let s1 = env.start_sidecar("s1", &jobs(), options(&nowhere));
    env.write_fleet(&[&s1]);
    env.write_file(
        "plan.toml",
        "[plan]\nname = \"quiet\"\n[[task]]\nname = \"only\"\njob = \"two-steps\"\n",
    );
    let began = Instant::now();
    let out = run(&env, &nowhere);
    let took = began.elapsed();
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(
        out.events().final_task_finished("only")["status"],
        "succeeded"
    );
    // The job takes ~0.3s; the flush on exit gives up after 3s.
    assert!(
        took < Duration::from_secs(15),
        "the run took {took:?}\n{out}"
    );
}

/// The sum of `agentfleet_sidecar_executions_finished_total` on a sidecar's `/metrics`,
/// whose admin address it logged on start.
fn admin_finished_count(sidecar: &agentfleet_e2e::Sidecar) -> usize {
    use std::io::{Read, Write};
    let addr = agentfleet_e2e::wait_until(Duration::from_secs(10), "the admin address", || {
        let log = std::fs::read_to_string(sidecar.stderr_log()).ok()?;
        let line = log.lines().find(|l| l.contains("admin server listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        addr.parse::<std::net::SocketAddr>().ok()
    });
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read /metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("agentfleet_sidecar_executions_running"),
        "{response}"
    );
    response
        .lines()
        .filter(|l| l.starts_with("agentfleet_sidecar_executions_finished_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}
