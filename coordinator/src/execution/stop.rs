//! Stopping an execution, bounded. Once a stop is needed (the user's cancel or Ctrl-C /
//! SIGTERM, fail_fast, the plan's timeout: all through the executor's stop token; or the
//! task's own timeout), StopJob is sent at once and again every [`STOP_RESEND_EVERY`],
//! on a timer of its own, whatever the event stream does (a sidecar may lose a request
//! across a restart, or stop answering altogether). If the execution has not ended
//! [`STOP_CONFIRM_DEADLINE`] after the stop was first needed, the executor gives up on
//! it: the task ends as canceled or timed out with a message saying the sidecar did not
//! confirm the stop, so a run, and a coordinator asked to exit, always end.
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use agentfleet_common::proto;
use tokio_util::sync::CancellationToken;

use super::{ExecResult, ExecutionSpec};
use crate::events::TaskOutcome;
use crate::fleet::{Sidecar, status_detail};

/// How often StopJob is sent again until the execution ends; also the bound of one
/// StopJob call (a sidecar that does not answer must not delay the next one).
pub const STOP_RESEND_EVERY: Duration = Duration::from_secs(2);

/// How long after a stop is first needed the executor waits for the sidecar to confirm
/// it (the Finished event) before giving up on the execution. Longer than a sidecar's
/// default `stop_grace` (10 s, then the job's processes are killed) plus the time to
/// journal and stream the Finished event, so that a working sidecar always confirms.
pub const STOP_CONFIRM_DEADLINE: Duration = Duration::from_secs(30);

/// Why the execution is being stopped, once it is: shared by the half of the executor
/// that follows the execution (to name the outcome) and the half that stops it.
#[derive(Debug, Default)]
pub(super) struct StopRequest {
    why: OnceLock<(TaskOutcome, String)>,
    requested: CancellationToken,
}

impl StopRequest {
    /// The first request wins; later ones change nothing.
    fn request(&self, outcome: TaskOutcome, message: String) {
        if self.why.set((outcome, message)).is_ok() {
            self.requested.cancel();
        }
    }

    /// The outcome and message the stop gives the task, once a stop is needed.
    pub(super) fn why(&self) -> Option<&(TaskOutcome, String)> {
        self.why.get()
    }

    /// Resolves once a stop is needed.
    pub(super) async fn requested(&self) {
        self.requested.cancelled().await;
    }
}

/// Waits until a stop is needed (`stop` cancelled, or the task's timeout from `began`),
/// records why in `request`, then sends StopJob on the timer until the deadline and
/// returns the given-up result. The caller races this against following the execution:
/// whichever ends first ends the execution.
pub(super) async fn enforce(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    stop: &CancellationToken,
    request: &StopRequest,
    began: Instant,
) -> ExecResult {
    let timeout_at = spec
        .timeout
        .map(|t| tokio::time::Instant::from_std(began) + t);
    tokio::select! {
        _ = stop.cancelled() => {
            request.request(TaskOutcome::Canceled, "stopped by request".into());
        }
        _ = super::sleep_until(timeout_at), if timeout_at.is_some() => {
            let t = spec.timeout.unwrap_or_default();
            let message = format!("timed out after {}", agentfleet_common::duration::short(t));
            request.request(TaskOutcome::TimedOut, message);
        }
    }
    let (outcome, why) = request
        .why()
        .cloned()
        .unwrap_or((TaskOutcome::Canceled, "stopped by request".to_owned()));
    resend_until(STOP_RESEND_EVERY, STOP_CONFIRM_DEADLINE, || {
        send_stop(sidecar, spec, &why)
    })
    .await;
    tracing::warn!(sidecar = %sidecar.name, execution = %spec.at.execution_id, "the sidecar did not confirm the stop; giving up on the execution");
    ExecResult::StopUnconfirmed {
        outcome,
        message: not_confirmed(&why, &sidecar.name),
        duration: began.elapsed(),
    }
}

/// The message of an execution given up on after a stop nobody confirmed.
pub(super) fn not_confirmed(why: &str, sidecar: &str) -> String {
    format!(
        "{why}; sidecar `{sidecar}` did not confirm the stop within {}s: the job may still be running on {sidecar}",
        STOP_CONFIRM_DEADLINE.as_secs()
    )
}

/// Calls `send` at once and then every `every` (each call bounded by `every`), until
/// `deadline` has passed; returns at the deadline, also in the middle of a call.
pub(super) async fn resend_until<F, Fut>(every: Duration, deadline: Duration, mut send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let attempt = async {
            tick.tick().await;
            let _ = tokio::time::timeout(every, send()).await;
        };
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(give_up) => return,
            _ = attempt => {}
        }
    }
}

/// Sends StopJob once; true when the sidecar took it.
pub(super) async fn send_stop(sidecar: &Sidecar, spec: &ExecutionSpec, reason: &str) -> bool {
    let request = proto::StopJobRequest {
        execution_id: spec.at.execution_id.clone(),
        reason: reason.to_owned(),
    };
    match sidecar.client.clone().stop_job(request).await {
        Ok(_) => true,
        Err(status) => {
            // Debug only: it is sent again every few seconds; giving up is the warning.
            tracing::debug!(sidecar = %sidecar.name, error = %status_detail(&status), "StopJob failed; will send it again");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Sends counted over a deadline, with each send taking `takes` (None: never answers).
    async fn sends_within_deadline(takes: Option<Duration>) -> (usize, Duration) {
        let sends = AtomicUsize::new(0);
        let began = tokio::time::Instant::now();
        resend_until(STOP_RESEND_EVERY, STOP_CONFIRM_DEADLINE, || {
            sends.fetch_add(1, Ordering::SeqCst);
            async move {
                match takes {
                    Some(t) => tokio::time::sleep(t).await,
                    None => std::future::pending().await,
                }
                false
            }
        })
        .await;
        (sends.load(Ordering::SeqCst), began.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn stop_is_sent_again_on_a_timer_until_the_deadline() {
        let (sends, took) = sends_within_deadline(Some(Duration::from_millis(10))).await;
        // At 0 s, 2 s, ... 28 s: the deadline at 30 s wins over the tick due then.
        let expected = (STOP_CONFIRM_DEADLINE.as_secs() / STOP_RESEND_EVERY.as_secs()) as usize;
        assert_eq!(sends, expected);
        assert_eq!(took, STOP_CONFIRM_DEADLINE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sidecar_that_never_answers_does_not_hold_up_the_deadline() {
        let (sends, took) = sends_within_deadline(None).await;
        assert!(
            sends >= 2,
            "a hung StopJob delays the next one: {sends} sends"
        );
        assert_eq!(took, STOP_CONFIRM_DEADLINE);
    }

    #[test]
    fn the_message_says_the_job_may_still_run() {
        let m = not_confirmed("timed out after 1s", "s1");
        assert!(
            m.starts_with("timed out after 1s; sidecar `s1` did not confirm the stop within 30s"),
            "{m}"
        );
        assert!(m.ends_with("the job may still be running on s1"), "{m}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_stop_request_names_the_outcome() {
        let request = StopRequest::default();
        assert!(request.why().is_none());
        request.request(TaskOutcome::TimedOut, "timed out after 1s".into());
        request.request(TaskOutcome::Canceled, "stopped by request".into());
        request.requested().await;
        assert_eq!(request.why().unwrap().0, TaskOutcome::TimedOut);
    }
}
