//! One execution of one task on one sidecar: start (idempotent on the execution id),
//! watch with resume from the last sequence number seen, stop on request or timeout.
//! An executor only talks to its sidecar and sends `ExecMsg`s to the dispatcher.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{At, RunEventKind, TaskOutcome};
use crate::fleet::{Sidecar, explain_status, status_detail};

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
    },
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
}

/// Drives one execution to its end. `stop` is the user's (or fail_fast's) stop request.
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

async fn drive(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    tx: &mpsc::Sender<ExecMsg>,
    stop: &CancellationToken,
) -> ExecResult {
    let began = Instant::now();
    let finished = |outcome, message: String| ExecResult::Finished {
        outcome,
        message,
        duration: began.elapsed(),
    };
    if let Err(result) = start(sidecar, spec, stop).await {
        return result.unwrap_or_else(|| {
            finished(TaskOutcome::Canceled, "stopped before it started".into())
        });
    }
    let mut watcher = Watcher {
        spec,
        tx,
        last_seq: spec.resume_after_seq,
    };
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut stop_reason: Option<(TaskOutcome, String)> = None;
    let mut stop_sent = false;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut unreachable_since: Option<Instant> = None;

    loop {
        let mut client = sidecar.client.clone();
        let request = proto::WatchRequest {
            execution_id: spec.at.execution_id.clone(),
            after_seq: watcher.last_seq,
        };
        let broken;
        match client.watch(request).await {
            Ok(response) => {
                unreachable_since = None;
                backoff.reset();
                let mut stream = response.into_inner();
                loop {
                    if stop_reason.is_some() && !stop_sent {
                        stop_sent = send_stop(sidecar, spec, stop_reason.as_ref()).await;
                    }
                    tokio::select! {
                        message = stream.message() => match message {
                            Ok(Some(event)) => {
                                if let Some((outcome, message)) = watcher.handle(event).await {
                                    // A stop we asked for shows as canceled; say why.
                                    let outcome = match (&stop_reason, outcome) {
                                        (Some((why, _)), TaskOutcome::Canceled) => *why,
                                        _ => outcome,
                                    };
                                    let message = match (&stop_reason, outcome) {
                                        (Some((_, why)), TaskOutcome::TimedOut | TaskOutcome::Canceled) => why.clone(),
                                        _ => message,
                                    };
                                    return finished(outcome, message);
                                }
                            }
                            Ok(None) => { broken = "the event stream ended early".into(); break; }
                            Err(status) => { broken = status_detail(&status); break; }
                        },
                        _ = stop.cancelled(), if stop_reason.is_none() => {
                            stop_reason = Some((TaskOutcome::Canceled, "stopped by request".into()));
                        }
                        _ = sleep_until(deadline), if stop_reason.is_none() && deadline.is_some() => {
                            let t = spec.timeout.unwrap_or_default();
                            stop_reason = Some((TaskOutcome::TimedOut, format!("timed out after {}", agentfleet_common::duration::short(t))));
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
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stop.cancelled(), if stop_reason.is_none() => {
                stop_reason = Some((TaskOutcome::Canceled, "stopped by request".into()));
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends StopJob; true when the sidecar took it (else it is sent again after reconnecting).
async fn send_stop(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    reason: Option<&(TaskOutcome, String)>,
) -> bool {
    let request = proto::StopJobRequest {
        execution_id: spec.at.execution_id.clone(),
        reason: reason.map(|r| r.1.clone()).unwrap_or_default(),
    };
    match sidecar.client.clone().stop_job(request).await {
        Ok(_) => true,
        Err(status) => {
            tracing::warn!(sidecar = %sidecar.name, error = %status_detail(&status), "StopJob failed; will retry");
            false
        }
    }
}

/// StartJob, repeated with the same execution id until the sidecar answers: the id makes
/// repeats safe. `Err(None)` = stopped before an answer.
async fn start(
    sidecar: &Sidecar,
    spec: &ExecutionSpec,
    stop: &CancellationToken,
) -> Result<(), Option<ExecResult>> {
    let request = proto::StartJobRequest {
        execution_id: spec.at.execution_id.clone(),
        job: spec.job.clone(),
        params: spec.params.clone().into_iter().collect(),
        run_id: spec.run_id.clone(),
        task: spec.at.task.clone(),
        attempt: spec.at.attempt,
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
        let status = match sidecar.client.clone().start_job(traced).await {
            Ok(_) => return Ok(()),
            Err(status) => status,
        };
        let refused =
            |refusal, message: String| Err(Some(ExecResult::Refused { refusal, message }));
        let detail = status_detail(&status);
        match status.code() {
            tonic::Code::ResourceExhausted => return refused(Refusal::SlotsBusy, detail),
            tonic::Code::Aborted => return refused(Refusal::AlreadyRunning, detail),
            tonic::Code::Unavailable if never_sent(&detail) => {
                return refused(
                    Refusal::Unreachable,
                    explain_status(&sidecar.name, &sidecar.endpoint, &status),
                );
            }
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
                if began.elapsed() < spec.lost_after => {}
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
            _ = stop.cancelled() => {
                // The start may have reached the sidecar: ask it to stop, best effort.
                send_stop(sidecar, spec, Some(&(TaskOutcome::Canceled, "stopped by request".into()))).await;
                return Err(None);
            }
        }
    }
}

/// True when a transport error shows the request cannot have reached the sidecar.
fn never_sent(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("connection refused") || d.contains("tcp connect error") || d.contains("dns error")
}

/// Turns the sidecar's events into run events, skipping anything already seen.
struct Watcher<'a> {
    spec: &'a ExecutionSpec,
    tx: &'a mpsc::Sender<ExecMsg>,
    last_seq: u64,
}

impl Watcher<'_> {
    /// Returns the outcome once the Finished event arrives.
    async fn handle(&mut self, event: proto::Event) -> Option<(TaskOutcome, String)> {
        if event.seq <= self.last_seq {
            return None; // already seen before a reconnect
        }
        let seq = event.seq;
        crate::report::otel::record_event_lag(&self.spec.at.sidecar, event.ts_ms);
        let outcome = self.translate(event).await;
        self.last_seq = seq;
        self.send(RunEventKind::ExecutionSeq {
            at: self.spec.at.clone(),
            seq,
        })
        .await;
        outcome
    }

    /// Sends the run events for one sidecar event; the outcome if it is Finished.
    async fn translate(&mut self, event: proto::Event) -> Option<(TaskOutcome, String)> {
        let at = || self.spec.at.clone();
        let kind = match event.kind? {
            Kind::Accepted(_) => return None,
            Kind::Started(s) => RunEventKind::TaskStarted {
                at: at(),
                step_count: s.step_count,
            },
            Kind::StepStarted(s) => RunEventKind::StepStarted {
                at: at(),
                step: s.step_id,
                step_name: s.step_name,
                step_attempt: s.attempt,
            },
            Kind::StepFinished(s) => RunEventKind::StepFinished {
                at: at(),
                status: s.status().name(),
                step: s.step_id,
                step_name: s.step_name,
                step_attempt: s.attempt,
                message: s.message,
                duration_ms: s.duration_ms,
            },
            Kind::Logs(logs) => {
                for line in logs.lines {
                    let stream = line.stream().name();
                    self.send(RunEventKind::Log {
                        at: at(),
                        step: line.step_id,
                        stream,
                        line: line.line,
                    })
                    .await;
                }
                return None;
            }
            Kind::Finished(f) => return Some((outcome(f.outcome()), f.message)),
        };
        self.send(kind).await;
        None
    }

    async fn send(&self, kind: RunEventKind) {
        let _ = self
            .tx
            .send(ExecMsg::Event {
                task_index: self.spec.task_index,
                kind,
            })
            .await;
    }
}

fn outcome(o: proto::Outcome) -> TaskOutcome {
    match o {
        proto::Outcome::Succeeded => TaskOutcome::Succeeded,
        proto::Outcome::Canceled => TaskOutcome::Canceled,
        proto::Outcome::TimedOut => TaskOutcome::TimedOut,
        proto::Outcome::Lost => TaskOutcome::Lost,
        proto::Outcome::Failed | proto::Outcome::Unspecified => TaskOutcome::Failed,
    }
}
