//! Real process trees: timeouts, stop, spawn failures and output capture.
use std::time::Duration;

use agentfleet_common::proto::LogStream;

use super::*;
use crate::process::is_live;

#[tokio::test]
async fn a_timeout_kills_the_tree_and_counts_as_a_failed_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("tried");
    // First attempt: hangs with a grandchild; second attempt: hangs again; no third.
    let mut slow = sh_step(
        "slow",
        &format!("touch '{}'; sleep 1000 & echo $!; wait", marker.display()),
    );
    slow.timeout = Some(Duration::from_millis(500));
    slow.retries = 1;
    let backend = backend(vec![job("j", vec![slow])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 1",
            "step 1 slow #1",
            "step 1 slow #1 Retry: timed out after 500ms",
            "step 1 slow #2",
            "step 1 slow #2 TimedOut: timed out after 500ms",
            "finished Failed: step `slow` failed: timed out after 500ms",
        ]
    );
    let grandchildren = run.lines(LogStream::Stdout);
    assert_eq!(grandchildren.len(), 2);
    for pid in grandchildren {
        let pid: i32 = pid.parse().unwrap();
        assert!(!is_live(pid), "grandchild {pid} survived the timeout");
    }
}

#[tokio::test]
async fn stop_kills_the_whole_tree_and_cancels() {
    // SIGTERM is ignored by the shell and (inherited) by `sleep`: SIGKILL after the grace.
    let stubborn = sh_step("stubborn", "trap '' TERM; sleep 1000 & echo $!; wait");
    let backend = backend(vec![job("j", vec![stubborn, sh_step("never", "true")])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    let pid: i32 = run.until_log(|_| true).await.parse().unwrap();
    assert!(is_live(pid));
    run.stop.cancel();
    run.run_to_end().await;
    assert_eq!(
        run.summary(),
        [
            "started 2",
            "step 1 stubborn #1",
            "step 1 stubborn #1 Canceled: stopped: killed by signal 9 (SIGKILL)",
            "finished Canceled: stopped: stop requested while step `stubborn` was running",
        ]
    );
    assert!(!is_live(pid), "grandchild {pid} survived the stop");
}

#[tokio::test]
async fn stop_during_a_retry_wait_ends_at_once() {
    let mut failing = sh_step("failing", "exit 1");
    failing.retries = 3;
    failing.retry_interval = Some(Duration::from_secs(3600));
    let backend = backend(vec![job("j", vec![failing])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    while !run.summary().iter().any(|e| e.contains("Retry")) {
        assert!(run.next().await);
    }
    run.stop.cancel();
    run.run_to_end().await;
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Canceled: stopped: stop requested while waiting to retry step `failing`"
    );
}

#[tokio::test]
async fn captures_all_output_lines_in_order() {
    let script = "seq 1 100000; seq 1 50000 >&2; printf 'bad \\377 byte\\n'; printf 'no newline'";
    let backend = backend(vec![job("j", vec![sh_step("chatty", script)])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let out = run.lines(LogStream::Stdout);
    assert_eq!(out.len(), 100_002);
    for (i, line) in out[..100_000].iter().enumerate() {
        assert_eq!(*line, (i + 1).to_string());
    }
    assert_eq!(out[100_000], "bad \u{fffd} byte");
    assert_eq!(out[100_001], "no newline");
    let err = run.lines(LogStream::Stderr);
    assert_eq!(err.len(), 50_000);
    assert!(err.iter().zip(1..).all(|(line, n)| *line == n.to_string()));
}

#[tokio::test]
async fn a_background_process_holding_the_pipes_does_not_hold_the_step() {
    let backend = backend(vec![job(
        "j",
        vec![sh_step("leaky", "sleep 1000 & echo $!")],
    )]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let pid: i32 = run.lines(LogStream::Stdout)[0].parse().unwrap();
    // The background process is left alone (the step succeeded); clean up after the test.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    assert_eq!(
        run.summary().last().unwrap(),
        "finished Succeeded: step `leaky` succeeded (last step)"
    );
    let notes = run.lines(LogStream::Agent);
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes[0].contains("stopped reading stdout after 2s"));
}

#[tokio::test]
async fn a_program_that_cannot_start_is_a_failed_step() {
    let mut step = sh_step("missing", "");
    step.run = vec!["agentfleet-no-such-program".to_owned()];
    step.on_failure = Some("succeed".to_owned());
    let backend = backend(vec![job("j", vec![step])]);
    let mut run = Recorder::start(&backend, "j", &[]).await;
    run.run_to_end().await;
    let summary = run.summary();
    assert!(
        summary[2].starts_with(
            "step 1 missing #1 Failed: could not start `agentfleet-no-such-program`: No such file"
        ),
        "{summary:#?}"
    );
    assert!(summary[3].starts_with("finished Succeeded: step `missing` failed: could not start"));
    assert!(summary[3].ends_with("its on_failure action is `succeed`"));
}
