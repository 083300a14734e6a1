//! StartJob, repeated with the same execution id until the sidecar answers: the id makes
//! repeats safe. A resumed execution (a run re-attached from the store) is started with
//! `resume_only`: the sidecar only follows what it already holds and never creates the
//! execution, so re-attaching, or `coordinator cancel`, can never start a job whose
//! original StartJob may never have arrived. Nor is a resumed execution ever handed back
//! to placement as "refused": its sidecar unreachable, it is retried until it counts as
//! LOST (`lost_after`), as its job may be running there.
use std::time::{Duration, Instant};

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto;

use super::stop::{STOP_RESEND_EVERY, StopRequest, send_stop};
use super::{ExecResult, ExecutionSpec, Refusal};
use crate::events::TaskOutcome;
use crate::fleet::{Sidecar, explain_status, status_detail};

/// Who the sidecar recorded as starting the execution; `Err(None)` = a stop was needed
/// before the sidecar answered.
pub(super) async fn start(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    stop: &StopRequest,
) -> Result<String, Option<ExecResult>> {
    let request = proto::StartJobRequest {
        execution_id: spec.at.execution_id.clone(),
        job: spec.job.clone(),
        params: spec.params.clone().into_iter().collect(),
        run_id: spec.run_id.clone(),
        task: spec.at.task.clone(),
        attempt: spec.at.attempt,
        resume_only: spec.resumed,
    };
    let began = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        // W3C trace context: the sidecar's execution span is a child of this attempt's task span.
        let mut traced = tonic::Request::new(request.clone());
        agentfleet_common::telemetry::TraceParent::for_task(
            &spec.run_id,
            &spec.at.task,
            spec.at.attempt,
        )
        .inject(traced.metadata_mut());
        // Not raced against a stop: an abandoned StartJob could still arrive after our
        // StopJob and start the job. The executor's stop deadline bounds this wait.
        let status = match sidecar.client.clone().start_job(traced).await {
            Ok(answer) => {
                let execution = answer.into_inner().execution;
                return Ok(execution.map(|e| e.started_by).unwrap_or_default());
            }
            Err(status) => status,
        };
        let refused =
            |refusal, message: String| Err(Some(ExecResult::Refused { refusal, message }));
        let detail = status_detail(&status);
        match status.code() {
            tonic::Code::NotFound if spec.resumed => {
                return Err(Some(ExecResult::Finished {
                    outcome: TaskOutcome::Lost,
                    message: format!(
                        "sidecar `{}` has no record of this execution: its StartJob never arrived or it was pruned; it was not started",
                        sidecar.name
                    ),
                    duration: began.elapsed(),
                }));
            }
            tonic::Code::ResourceExhausted => return refused(Refusal::SlotsBusy, detail),
            tonic::Code::Aborted => return refused(Refusal::AlreadyRunning, detail),
            // A resumed execution may be running on that sidecar: placing the task again
            // could run a second copy, so it is retried below until it counts as lost.
            tonic::Code::Unavailable if never_sent(&detail) && !spec.resumed => {
                return refused(
                    Refusal::Unreachable,
                    explain_status(&sidecar.name, &sidecar.endpoint, &status),
                );
            }
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
                if began.elapsed() < spec.lost_after => {}
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
                if spec.resumed =>
            {
                return Err(Some(ExecResult::Finished {
                    outcome: TaskOutcome::Lost,
                    message: format!(
                        "sidecar `{}` unreachable for {}: {}",
                        sidecar.name,
                        agentfleet_common::duration::short(began.elapsed()),
                        explain_status(&sidecar.name, &sidecar.endpoint, &status)
                    ),
                    duration: began.elapsed(),
                }));
            }
            _ => {
                return Err(Some(ExecResult::Finished {
                    outcome: TaskOutcome::Failed,
                    message: format!(
                        "could not start job `{}`: {}",
                        spec.job,
                        explain_status(&sidecar.name, &sidecar.endpoint, &status)
                    ),
                    duration: began.elapsed(),
                }));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            // A resumed execution may be running: it is not "stopped before it started";
            // the stop half goes on asking the sidecar, bounded by its deadline.
            () = stop.requested(), if !spec.resumed => {
                return stopped_before_an_answer(sidecar, spec, stop).await;
            }
        }
    }
}

/// The start may have reached the sidecar: ask it to stop, once and bounded (the stop
/// half of the executor goes on sending StopJob only while the execution is followed).
async fn stopped_before_an_answer(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    stop: &StopRequest,
) -> Result<String, Option<ExecResult>> {
    let why = stop.why().map(|w| w.1.clone()).unwrap_or_default();
    let _ = tokio::time::timeout(STOP_RESEND_EVERY, send_stop(sidecar, spec, &why)).await;
    Err(None)
}

/// True when a transport error shows the request cannot have reached the sidecar.
fn never_sent(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("connection refused") || d.contains("tcp connect error") || d.contains("dns error")
}
