//! Re-importing executions the store holds only in part although their task has finished
//! since: an attempt whose events were lost (a full disk) and that a later attempt
//! followed. The dispatcher re-watches only the running attempt of an unfinished task, so
//! `attach` watches these here, before driving, from their stored `last_seq`.
//!
//! Only executions the sidecar still lists are watched (a watch starts with StartJob,
//! which would start a job the sidecar no longer knows): the others are reported as beyond
//! recovery. Only their own rows change (steps, logs, `last_seq`, their end); the task's
//! row keeps what its last attempt recorded.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{short, store_error};
use crate::error::{CliError, exit};
use crate::events::{RunEvent, RunEventKind};
use crate::execution::{self, ExecMsg, ExecResult, ExecutionSpec};
use crate::fleet::Sidecar;
use crate::store::{Driver, ExecutionRow, LeaseGuard, RetryPolicy, RunSnapshot, Store, Writer};

/// How long a sidecar may stay unreachable while one of these is watched.
const LOST_AFTER: Duration = Duration::from_secs(60);

/// Unfinished executions of finished tasks.
fn stale(snapshot: &RunSnapshot) -> Vec<&ExecutionRow> {
    let finished: BTreeSet<&str> = snapshot
        .tasks
        .iter()
        .filter(|t| crate::store::task_is_final(&t.status))
        .map(|t| t.task.as_str())
        .collect();
    snapshot
        .executions
        .iter()
        .filter(|e| e.finished_ms.is_none() && finished.contains(e.task.as_str()))
        .collect()
}

/// Re-imports the stale executions of `snapshot`'s run (see the module docs). An error
/// when the store cannot keep them this time either.
pub async fn reimport_stale(
    store: &Store,
    snapshot: &RunSnapshot,
    sidecars: &[Sidecar],
    driver: &Driver,
) -> Result<(), CliError> {
    let stale = stale(snapshot);
    if stale.is_empty() {
        return Ok(());
    }
    let run_id = snapshot.run.run_id.as_str();
    let known = listed_executions(sidecars, &stale).await;
    let guard = LeaseGuard {
        run_id: run_id.to_owned(),
        driver_id: driver.id.clone(),
    };
    let writer = Writer::spawn_with(store.path(), Some(guard), RetryPolicy::default())
        .map_err(store_error)?;
    let mut ends = Vec::new();
    for row in stale {
        let sidecar = sidecars.iter().find(|s| s.name == row.sidecar);
        let Some(sidecar) = sidecar.filter(|_| known.contains(&row.execution_id)) else {
            eprintln!(
                "warning: execution {} (task {}, attempt {}) is unfinished in the store but not on sidecar {} (never started, or pruned): nothing to re-import from it",
                row.execution_id, row.task, row.attempt, row.sidecar
            );
            continue;
        };
        eprintln!(
            "re-importing execution {} (task {}, attempt {}) from sidecar {} after sequence number {}",
            row.execution_id, row.task, row.attempt, row.sidecar, row.last_seq
        );
        if let Some(end) = watch_into(&writer, run_id, row, sidecar).await {
            ends.push((row.execution_id.clone(), end));
        }
    }
    let stats = writer.close();
    if !stats.losses.is_empty() || stats.last_error.is_some() || stats.superseded_events > 0 {
        return Err(CliError {
            code: exit::INCOMPLETE,
            message: format!(
                "the run store could not re-import run {run_id} ({}):\n{}\nFree space (or fix the error), then `coordinator attach {}` again",
                stats
                    .last_error
                    .as_deref()
                    .unwrap_or("another coordinator took the run over"),
                stats.losses.describe(),
                short(run_id)
            ),
        });
    }
    for (execution_id, (status, message)) in ends {
        store
            .close_reimported_execution(&execution_id, status, &message)
            .map_err(store_error)?;
    }
    Ok(())
}

/// The stale executions their sidecars still list.
async fn listed_executions(sidecars: &[Sidecar], stale: &[&ExecutionRow]) -> BTreeSet<String> {
    let wanted: BTreeSet<&str> = stale.iter().map(|e| e.sidecar.as_str()).collect();
    let mut known = BTreeSet::new();
    for sidecar in sidecars.iter().filter(|s| wanted.contains(s.name.as_str())) {
        let request = agentfleet_common::proto::ListExecutionsRequest {
            running_only: false,
        };
        let listed = tokio::time::timeout(
            Duration::from_secs(10),
            sidecar.client.clone().list_executions(request),
        )
        .await;
        match listed {
            Ok(Ok(response)) => known.extend(
                response
                    .into_inner()
                    .executions
                    .into_iter()
                    .map(|e| e.execution_id),
            ),
            Ok(Err(status)) => {
                tracing::warn!(sidecar = %sidecar.name, %status, "could not list executions")
            }
            Err(_) => tracing::warn!(sidecar = %sidecar.name, "listing executions timed out"),
        }
    }
    known
}

/// Watches `row` from its stored `last_seq` to its end, sending its events to `writer`.
/// Its end (status, message), or None when it could not be followed to one.
async fn watch_into(
    writer: &Writer,
    run_id: &str,
    row: &ExecutionRow,
    sidecar: &Sidecar,
) -> Option<(&'static str, String)> {
    let (tx, mut rx) = mpsc::channel(1024);
    let spec = ExecutionSpec {
        run_id: run_id.to_owned(),
        task_index: 0,
        at: crate::events::At {
            task: row.task.clone(),
            attempt: row.attempt,
            sidecar: row.sidecar.clone(),
            execution_id: row.execution_id.clone(),
        },
        job: row.job.clone(),
        params: BTreeMap::new(),
        timeout: None,
        lost_after: LOST_AFTER,
        resume_after_seq: row.last_seq,
        // Follow only: a sidecar that no longer knows it answers NOT_FOUND, never starts it.
        resumed: true,
    };
    tokio::spawn(execution::run(
        sidecar.clone(),
        spec,
        tx,
        CancellationToken::new(),
    ));
    while let Some(msg) = rx.recv().await {
        match msg {
            // The task's own row is final: only the execution's rows are filled in.
            ExecMsg::Event {
                kind: RunEventKind::TaskStarted { .. },
                ..
            } => {}
            ExecMsg::Event { kind, .. } => {
                writer.send(RunEvent::new(run_id, agentfleet_common::now_ms(), kind));
            }
            ExecMsg::Done {
                result:
                    ExecResult::Finished {
                        outcome, message, ..
                    },
                ..
            } => return Some((outcome.as_str(), message)),
            ExecMsg::Done { result, .. } => {
                tracing::warn!(execution = %row.execution_id, ?result, "could not re-import the execution");
                return None;
            }
            ExecMsg::Refreshed { .. } => {}
        }
    }
    None
}
