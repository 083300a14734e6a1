//! One execution of one task on one sidecar: start (idempotent on the execution id;
//! follow-only for a resumed execution, `start.rs`), watch with resume from the last
//! sequence number seen (`watcher.rs`), and stop on request or timeout, bounded
//! (`stop.rs`). An executor only talks to its sidecar and sends `ExecMsg`s to the
//! dispatcher.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{At, RunEventKind, TaskOutcome};
use crate::fleet::{Sidecar, explain_status, status_detail};

mod start;
mod stop;
mod watcher;

use stop::StopRequest;
pub use stop::{STOP_CONFIRM_DEADLINE, STOP_RESEND_EVERY};
use watcher::Watcher;

/// What the dispatcher asks an executor to do.
pub struct ExecutionSpec {
    pub run_id: String,
    pub task_index: usize,
    pub at: At,
    pub job: String,
    pub params: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
    /// After this long without reaching the sidecar, the execution counts as lost.
    pub lost_after: Duration,
    /// Resume watching after this sidecar sequence number (0 for a new execution; the
    /// stored `last_seq` when re-attaching to a run).
    pub resume_after_seq: u64,
    /// Re-attaching to an execution an earlier coordinator recorded: StartJob only
    /// follows it (`resume_only`), and a sidecar that does not know it makes it LOST.
    pub resumed: bool,
}

/// Messages from executors to the dispatcher (one bounded channel, backpressure).
#[derive(Debug)]
pub enum ExecMsg {
    Event {
        task_index: usize,
        kind: RunEventKind,
    },
    Done {
        task_index: usize,
        result: ExecResult,
    },
    /// What a sidecar said about itself just now (the dispatcher's periodic refresh).
    Refreshed {
        sidecar: String,
        info: crate::fleet::SidecarInfo,
        /// Its running executions, (id, job), when it listed them.
        running: Option<Vec<(String, String)>>,
    },
}

impl ExecMsg {
    /// Whether the dispatcher may be able to place more after this message: an execution
    /// ended (or was refused), or a sidecar's view changed. Events never free anything.
    pub fn may_free_capacity(&self) -> bool {
        !matches!(self, Self::Event { .. })
    }
}

/// Why a sidecar did not take a start; the task is placed again, not failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SlotsBusy,
    AlreadyRunning,
    /// The request never reached the sidecar (connection refused, no route).
    Unreachable,
}

#[derive(Debug)]
pub enum ExecResult {
    Refused {
        refusal: Refusal,
        message: String,
    },
    Finished {
        outcome: TaskOutcome,
        message: String,
        duration: Duration,
    },
    /// A stop was needed (a cancel, a timeout) and the sidecar did not confirm it within
    /// [`STOP_CONFIRM_DEADLINE`]: the executor gave up, and the job may still be running
    /// there, so the task may be rerun only where a lost one may (`rerun_if_lost`).
    StopUnconfirmed {
        outcome: TaskOutcome,
        message: String,
        duration: Duration,
    },
}

/// Drives one execution to its end. `stop` is the user's (or fail_fast's, or the run
/// timeout's) stop request.
pub async fn run(
    sidecar: Sidecar,
    spec: ExecutionSpec,
    tx: mpsc::Sender<ExecMsg>,
    stop: CancellationToken,
) {
    let task_index = spec.task_index;
    let result = drive(&sidecar, &spec, &tx, &stop).await;
    let _ = tx.send(ExecMsg::Done { task_index, result }).await;
}

/// Follows the execution while the stop half waits for a stop to be needed; whichever
/// ends first ends the execution: the Finished event (or a start that failed, or a lost
/// sidecar), or the stop half giving up on a stop the sidecar never confirmed.
async fn drive(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    tx: &mpsc::Sender<ExecMsg>,
    stop: &CancellationToken,
) -> ExecResult {
    let began = Instant::now();
    let request = StopRequest::default();
    tokio::select! {
        result = follow(sidecar, spec, tx, &request, began) => result,
        result = stop::enforce(sidecar, spec, stop, &request, began) => result,
    }
}

/// Starts the execution, then watches it to its Finished event, reconnecting with
/// backoff; LOST once the sidecar is unreachable for `lost_after` or forgot it.
async fn follow(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    tx: &mpsc::Sender<ExecMsg>,
    stop: &StopRequest,
    began: Instant,
) -> ExecResult {
    let finished = |outcome, message: String| ExecResult::Finished {
        outcome,
        message,
        duration: began.elapsed(),
    };
    let started_by = match start::start(sidecar, spec, stop).await {
        Ok(started_by) => started_by,
        Err(result) => {
            return result.unwrap_or_else(|| match stop.why() {
                Some((outcome @ TaskOutcome::TimedOut, why)) => {
                    finished(*outcome, format!("{why}; stopped before it started"))
                }
                _ => finished(TaskOutcome::Canceled, "stopped before it started".into()),
            });
        }
    };
    let mut watcher = Watcher {
        spec,
        tx,
        last_seq: spec.resume_after_seq,
        started_by,
        step_attempts: Default::default(),
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut unreachable_since: Option<Instant> = None;

    loop {
        let request = proto::WatchRequest {
            execution_id: spec.at.execution_id.clone(),
            after_seq: watcher.last_seq,
        };
        let broken;
        match sidecar.client.clone().watch(request).await {
            Ok(response) => {
                unreachable_since = None;
                backoff.reset();
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            if let Some((outcome, message)) = watcher.handle(event).await {
                                let (outcome, message) = as_asked(stop, outcome, message);
                                return finished(outcome, message);
                            }
                        }
                        Ok(None) => {
                            broken = "the event stream ended early".into();
                            break;
                        }
                        Err(status) => {
                            broken = status_detail(&status);
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                return finished(
                    TaskOutcome::Lost,
                    format!(
                        "sidecar `{}` no longer knows this execution: {}",
                        sidecar.name,
                        status.message()
                    ),
                );
            }
            Err(status) => broken = explain_status(&sidecar.name, &sidecar.endpoint, &status),
        }
        // The stream broke: resume from the last sequence number, with backoff.
        let since = *unreachable_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= spec.lost_after {
            return finished(
                TaskOutcome::Lost,
                format!(
                    "sidecar `{}` unreachable for {}: {broken}",
                    sidecar.name,
                    agentfleet_common::duration::short(since.elapsed())
                ),
            );
        }
        tracing::debug!(sidecar = %sidecar.name, execution = %spec.at.execution_id, %broken, "watch broke; resuming");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// A stop we asked for shows as canceled on the sidecar: name it as asked (timed out,
/// canceled) and say why.
fn as_asked(stop: &StopRequest, outcome: TaskOutcome, message: String) -> (TaskOutcome, String) {
    match (stop.why(), outcome) {
        (Some((why_outcome, why)), TaskOutcome::Canceled) => (*why_outcome, why.clone()),
        (Some((_, why)), TaskOutcome::TimedOut) => (outcome, why.clone()),
        _ => (outcome, message),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
