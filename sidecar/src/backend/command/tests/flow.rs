//! The step flow: order, retries, on_success / on_failure, goto, refusals.
use std::collections::BTreeMap;
use std::time::Duration;

use agentfleet_common::proto::LogStream;

use super::*;

#[tokio::test]
async fn multi_step_job_succeeds_with_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut etl = job(
        "etl",
        vec![
            sh_step(
                "extract",
                "echo \"$AGENTFLEET_JOB/$AGENTFLEET_STEP/$AGENTFLEET_EXECUTION_ID\"; echo \"$BUSINESS_DATE $REGION\"; pwd",
            ),
            sh_step("transform", "echo warn >&2"),
            sh_step("load", "exit 0"),
        ],
    );
    etl.params = super::super::params::Params::List(vec!["BUSINESS_DATE".to_owned()]);
    etl.env = BTreeMap::from([("REGION".to_owned(), "eu".to_owned())]);
    etl.working_dir = Some(dir.path().to_owned());
    let backend = backend(vec![etl]);

    let mut run = Recorder::start(&backend, "etl", &[("BUSINESS_DATE", "2026-11-24")]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 3",
            "step 1 extract #1",
            "step 1 extract #1 Succeeded: exit code 0",
            "step 2 transform #1",
            "step 2 transform #1 Succeeded: exit code 0",
            "step 3 load #1",
            "step 3 load #1 Succeeded: exit code 0",
            "finished Succeeded: step `load` succeeded (last step)",
        ]
    );
    let cwd = dir.path().canonicalize().unwrap();
    assert_eq!(
        run.lines(LogStream::Stdout),
        ["etl/extract/exec-1", "2026-11-24 eu", cwd.to_str().unwrap()]
    );
    assert_eq!(run.lines(LogStream::Stderr), ["warn"]);
    assert!(run.logs.iter().all(|l| l.step_id == 1 || l.line == "warn"));

    let listed = backend.list_jobs().await.unwrap();
    assert_eq!(listed[0].stats.unwrap().count, 1);
    assert_eq!(listed[0].steps[2].on_success, "next");
    assert_eq!(listed[0].steps[2].on_failure, "fail");
    assert_eq!(listed[0].params, ["BUSINESS_DATE"]);
}

#[tokio::test]
async fn a_failed_step_fails_the_job() {
    let backend = backend(vec![job(
        "j",
        vec![sh_step("load", "exit 2"), sh_step("never", "exit 0")],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 2",
            "step 1 load #1",
            "step 1 load #1 Failed: exit code 2",
            "finished Failed: step `load` failed: exit code 2",
        ]
    );
    assert_eq!(
        backend.list_jobs().await.unwrap()[0].stats.unwrap().count,
        0
    );
}

#[tokio::test]
async fn on_failure_goto_jumps_over_steps() {
    let mut load = sh_step("load", "exit 2");
    load.on_failure = Some("goto:cleanup".to_owned());
    let mut cleanup = sh_step("cleanup", "echo cleaning");
    cleanup.on_success = Some("fail".to_owned());
    let backend = backend(vec![job(
        "j",
        vec![load, sh_step("report", "echo never"), cleanup],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 3",
            "step 1 load #1",
            "step 1 load #1 Failed: exit code 2",
            "step 3 cleanup #1",
            "step 3 cleanup #1 Succeeded: exit code 0",
            "finished Failed: step `cleanup` succeeded, and its on_success action is `fail`",
        ]
    );
    assert_eq!(run.lines(LogStream::Stdout), ["cleaning"]);
}

#[tokio::test]
async fn a_step_that_fails_once_succeeds_on_retry_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    let mut flaky = sh_step(
        "flaky",
        &format!(
            "if [ -e '{m}' ]; then echo second; else touch '{m}'; echo first; exit 3; fi",
            m = marker.display()
        ),
    );
    flaky.retries = 2;
    flaky.retry_interval = Some(Duration::from_millis(400));
    let backend = backend(vec![job("j", vec![flaky])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 1",
            "step 1 flaky #1",
            "step 1 flaky #1 Retry: exit code 3",
            "step 1 flaky #2",
            "step 1 flaky #2 Succeeded: exit code 0",
            "finished Succeeded: step `flaky` succeeded (last step)",
        ]
    );
    assert_eq!(run.lines(LogStream::Stdout), ["first", "second"]);
    let waited = run.ts_of("step 1 flaky #2") - run.ts_of("step 1 flaky #1 Retry: exit code 3");
    assert!(waited >= 400, "retried after {waited} ms");
}

#[tokio::test]
async fn endless_goto_loops_are_cut() {
    let mut spin = sh_step("spin", "true");
    spin.on_success = Some("goto:spin".to_owned());
    let mut backend = backend(vec![job("j", vec![spin])]);
    backend.max_step_runs = 5;
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(run.summary().len(), 1 + 5 * 2 + 1);
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Failed: gave up after 5 step runs: the steps' on_success/on_failure actions \
         loop (the last step run was `spin`)"
    );
}

#[tokio::test]
async fn refuses_bad_starts() {
    let mut declared = job("j", vec![sh_step("s", "true")]);
    declared.params = super::super::params::Params::List(vec!["BUSINESS_DATE".to_owned()]);
    let mut broken = job("broken", vec![sh_step("s", "true")]);
    broken.steps[0].on_failure = Some("goto:nowhere".to_owned());
    let backend = backend(vec![declared, broken]);

    let (_run, ctx) = Recorder::context("j", &[("PATH", "/tmp/evil")]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::InvalidArgument(_)));
    assert_eq!(
        err.to_string(),
        "job `j` does not declare the parameter `PATH`; it declares: BUSINESS_DATE"
    );

    let (_run, ctx) = Recorder::context("nope", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::NotFound { .. }), "{err}");

    let (_run, ctx) = Recorder::context("broken", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(
        err.to_string().contains("there is no step `nowhere`"),
        "{err}"
    );
    let listed = backend.list_jobs().await.unwrap();
    assert!(listed[0].enabled);
    assert!(!listed[1].enabled);
}

#[tokio::test]
async fn a_job_runs_at_most_max_instances_at_once() {
    let mut fan = job("fan", vec![sh_step("wait", "echo up; sleep 1000")]);
    fan.max_instances = 2;
    let backend = backend(vec![fan]);
    let mut first = Recorder::start(&backend, "fan", &[]).await;
    let mut second = Recorder::start(&backend, "fan", &[]).await;
    first.until_log(|l| l.line == "up").await;
    second.until_log(|l| l.line == "up").await;
    let (_third, ctx) = Recorder::context("fan", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyRunning(_)), "{err}");
    assert_eq!(backend.list_jobs().await.unwrap()[0].max_instances, 2);
    for run in [&mut first, &mut second] {
        run.stop.cancel();
    }
    first.run_to_end().await;
    second.run_to_end().await;
}

#[tokio::test]
async fn a_job_never_runs_twice_at_once() {
    let backend = backend(vec![job("j", vec![sh_step("wait", "echo up; sleep 1000")])]);
    let mut first = Recorder::start(&backend, "j", &[]).await;
    first.until_log(|l| l.line == "up").await;
    let (_second, ctx) = Recorder::context("j", &[]);
    let err = backend.start(ctx).await.unwrap_err();
    assert!(matches!(err, BackendError::AlreadyRunning(_)), "{err}");
    first.stop.cancel();
    first.run_to_end().await;
    // Free again once Finished was sent.
    let mut third = Recorder::start(&backend, "j", &[]).await;
    third.until_log(|l| l.line == "up").await;
    third.stop.cancel();
    third.run_to_end().await;
}
