//! The drive loop shared by `run`, `attach` and `cancel`: one dispatcher, the reporters
//! (the store's among them), the lease keeper, and what happens at the end: the store's
//! record is made durable and checked before any sidecar is told it may delete its copy.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::keeper::LeaseKeeper;
use super::{open_store, short, store_error};
use crate::commands::{Stock, fleet_of, spawn_reporters_with, take_stock};
use crate::dispatch::{Dispatcher, PriorTask, RunOptions};
use crate::error::{CliError, exit};
use crate::events::RunEvent;
use crate::fleet::Sidecar;
use crate::plan::Plan;
use crate::store::{Driver, Store, StoreError, WriterStats};

const REPORT_CHANNEL: usize = 4096;

/// How to present a run while driving it, and who drives it.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub json: bool,
    pub show_logs: bool,
    pub lost_after: Duration,
    pub home: PathBuf,
    /// This process, holding the run's lease (taken by `create_run` or `attach`).
    pub driver: Driver,
}

/// Runs `plan` (run `run_id`, already recorded in the store, its lease held by
/// `options.driver`) to its end, resuming from `prior`. Returns the plan's exit code, or
/// [`exit::INCOMPLETE`] when the store could not save all of the run.
pub async fn drive(
    plan: &Plan,
    run_id: &str,
    prior: BTreeMap<String, PriorTask>,
    options: &DriveOptions,
    interrupt: CancellationToken,
    stock: Option<Stock>,
) -> Result<i32, CliError> {
    // `run` has already taken stock (and checked the plan against it): don't probe twice.
    let (sidecars, infos) = match stock {
        Some(stock) => stock,
        None => take_stock(fleet_of(plan)?).await?,
    };
    let driver = &options.driver;
    let (tx, rx) = mpsc::channel::<RunEvent>(REPORT_CHANNEL);
    let mut store = open_store(&options.home)?;
    let lease_lost = CancellationToken::new();
    let run_options = RunOptions {
        lost_after: options.lost_after,
        past_durations: store.job_durations().unwrap_or_default(),
        placement_log: Some(Arc::new(StorePlacementLog {
            store: Mutex::new(open_store(&options.home)?),
            driver: driver.clone(),
            lease_lost: lease_lost.clone(),
        })),
    };
    let dispatcher = Dispatcher::new(
        plan,
        run_id.to_owned(),
        sidecars.clone(),
        &infos,
        tx,
        run_options,
    );
    crate::report::otel::set_plan(plan);
    let reporter = store.reporter_for(run_id, driver).map_err(store_error)?;
    let saved = reporter.outcome();
    let reporting = spawn_reporters_with(rx, options.json, options.show_logs, Some(reporter));
    let cancel = CancellationToken::new();
    if store.cancel_requested(run_id).unwrap_or(false) {
        cancel.cancel(); // `coordinator cancel` of a run nobody drove: start nothing new
    }
    let keeper = LeaseKeeper::start(
        open_store(&options.home)?,
        run_id,
        driver.clone(),
        cancel.clone(),
        lease_lost.clone(),
    )?;
    // A driver that lost its lease drops its dispatcher on the spot: it starts nothing
    // more and stops nothing (the jobs are the new driver's now).
    let result = tokio::select! {
        result = dispatcher.run(interrupt, cancel, prior) => Some(result),
        _ = lease_lost.cancelled() => None,
    };
    keeper.stop();
    let _ = reporting.await;
    let stats = saved.get().unwrap_or_else(|| WriterStats {
        last_error: Some("the store reporter did not finish".into()),
        ..WriterStats::default()
    });
    let Some(result) = result.filter(|_| stats.superseded_events == 0) else {
        return Err(lease_lost_error(&store, run_id));
    };
    finish_record(
        &mut store,
        run_id,
        driver,
        &sidecars,
        &stats,
        result.exit_code,
    )
    .await
}

/// Makes the run's record durable and, only when it is complete and durable, lets the
/// sidecars delete their copies. An incomplete record ends the run with exit code 4 and
/// a message that says what is missing and how to recover it.
async fn finish_record(
    store: &mut Store,
    run_id: &str,
    driver: &Driver,
    sidecars: &[Sidecar],
    stats: &WriterStats,
    exit_code: i32,
) -> Result<i32, CliError> {
    let incomplete = !stats.losses.is_empty() || stats.last_error.is_some();
    let ended = store.end_drive(run_id, driver, incomplete.then_some(exit::INCOMPLETE));
    if incomplete {
        let code = if exit_code == exit::INTERRUPTED {
            exit::INTERRUPTED
        } else {
            exit::INCOMPLETE
        };
        return Err(CliError {
            code,
            message: incomplete_message(store, run_id, stats, exit_code),
        });
    }
    match ended {
        Ok(true) => acknowledge(store, run_id, sidecars).await,
        Ok(false) => eprintln!(
            "warning: another coordinator took run {run_id} over as it ended; its executions are left for that one to acknowledge"
        ),
        Err(e) => eprintln!(
            "warning: could not make sure the run store is on disk ({e}); its executions are not acknowledged, so the sidecars keep their journals (for 7 days)"
        ),
    }
    Ok(exit_code)
}

fn incomplete_message(store: &Store, run_id: &str, stats: &WriterStats, exit_code: i32) -> String {
    let home = store
        .path()
        .parent()
        .map_or_else(String::new, |p| p.display().to_string());
    format!(
        "the run store could not save {lost} events of run {run_id} ({why}):\n{which}\n\
         The run ended (its tasks' exit code would be {exit_code}), but its record is incomplete, so no \
         execution of it was acknowledged: the sidecars keep their journals (for 7 days).\n\
         To recover: free space in {home} (or fix the error above), then `coordinator attach {short}` \
         re-imports the missing events from the sidecars and completes the record.",
        lost = stats.lost_events,
        why = stats.last_error.as_deref().unwrap_or("unknown error"),
        which = stats.losses.describe(),
        short = short(run_id),
    )
}

fn lease_lost_error(store: &Store, run_id: &str) -> CliError {
    let holder = store
        .lease_holder(run_id)
        .map_or_else(|e| e.to_string(), |h| h.describe());
    CliError::failed(format!(
        "lost the lease of run {run_id}: another coordinator drives it now ({holder}). \
         This one stopped without starting anything more; the jobs it started keep running \
         and are watched by the new driver (`coordinator logs {} --follow`)",
        short(run_id)
    ))
}

/// Records placements in the store before their StartJob goes out, only while this
/// driver holds the run's lease (so a driver that lost it starts nothing).
struct StorePlacementLog {
    store: Mutex<Store>,
    driver: Driver,
    lease_lost: CancellationToken,
}

impl crate::dispatch::PlacementLog for StorePlacementLog {
    fn record(&self, placed: &RunEvent) -> Result<(), String> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        match store.record_placement(placed, &self.driver) {
            Ok(()) => Ok(()),
            Err(e @ StoreError::NotDriver { .. }) => {
                tracing::error!(error = %e, "lost the run's lease: starting nothing more");
                self.lease_lost.cancel();
                Err(e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn refused(&self, execution_id: &str) {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = store.close_refused_execution(execution_id) {
            tracing::warn!(%execution_id, error = %e, "could not mark a refused start in the run store");
        }
    }
}

/// Tells each sidecar which finished executions of the run are stored, so it may prune
/// its journal (best effort: the sidecar's age limit is the safety net). Called only once
/// the store's last commit is synced to disk and nothing of the run was lost.
async fn acknowledge(store: &Store, run_id: &str, sidecars: &[Sidecar]) {
    let Ok(snapshot) = store.run_snapshot(run_id) else {
        return;
    };
    let mut by_sidecar: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for e in snapshot
        .executions
        .iter()
        .filter(|e| e.finished_ms.is_some())
    {
        by_sidecar
            .entry(&e.sidecar)
            .or_default()
            .push(e.execution_id.clone());
    }
    for sidecar in sidecars {
        if let Some(ids) = by_sidecar.remove(sidecar.name.as_str()) {
            let request = agentfleet_common::proto::AckExecutionsRequest { execution_ids: ids };
            let mut client = sidecar.client.clone();
            let ack = tokio::time::timeout(Duration::from_secs(5), client.ack_executions(request));
            if let Ok(Err(status)) = ack.await {
                tracing::debug!(sidecar = %sidecar.name, %status, "acknowledging executions failed");
            }
        }
    }
}
