//! Driving a run to its end from any coordinator process: the shared `drive` loop used by
//! `run`, `attach RUN` (re-attach after Ctrl-C with --detach, a closed laptop or a crash),
//! `cancel RUN`, and `run --detach` (which hands the run to a background `attach`).
//!
//! The store is the hand-over point: it holds the plan text, every task's state and each
//! running execution's last stored sequence number, so a new driver starts nothing that is
//! finished or running, and resumes every watch exactly where the store ends.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{AttachArgs, CancelArgs};
use crate::commands::{Stock, fleet_of, spawn_reporters_with, take_stock};
use crate::dispatch::{Dispatcher, PriorExecution, PriorTask, RunOptions};
use crate::error::{CliError, exit};
use crate::events::{RunEvent, TaskOutcome};
use crate::fleet::Sidecar;
use crate::plan::{self, Plan};
use crate::store::{self, Liveness, RunSnapshot, Store, StoreError};

/// How often the driver looks for `coordinator cancel` in the store.
const CANCEL_POLL: Duration = Duration::from_millis(500);
const REPORT_CHANNEL: usize = 4096;

/// How to present a run while driving it.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub json: bool,
    pub show_logs: bool,
    pub lost_after: Duration,
    pub home: PathBuf,
}

pub fn store_error(e: StoreError) -> CliError {
    if e.is_bad_run() {
        CliError::bad_input(e.to_string())
    } else {
        CliError::failed(format!(
            "{e} (the run store's directory is set by --home or AGENTFLEET_HOME)"
        ))
    }
}

pub fn open_store(home: &Path) -> Result<Store, CliError> {
    Store::open(home).map_err(store_error)
}

/// Runs `plan` (run `run_id`, already recorded in the store and owned by this process) to
/// its end, resuming from `prior`. Returns the plan's exit code.
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
    let (tx, rx) = mpsc::channel::<RunEvent>(REPORT_CHANNEL);
    let store = open_store(&options.home)?;
    let run_options = RunOptions {
        lost_after: options.lost_after,
        past_durations: store.job_durations().unwrap_or_default(),
        placement_log: Some(std::sync::Arc::new(StorePlacementLog(
            std::sync::Mutex::new(open_store(&options.home)?),
        ))),
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
    let reporter = store.reporter().map_err(store_error)?;
    let reporting = spawn_reporters_with(rx, options.json, options.show_logs, Some(reporter));
    let cancel = CancellationToken::new();
    if store.cancel_requested(run_id).unwrap_or(false) {
        cancel.cancel(); // `coordinator cancel` of a run nobody drove: start nothing new
    }
    let poller = tokio::spawn(poll_cancel(
        options.home.clone(),
        run_id.to_owned(),
        cancel.clone(),
    ));
    let result = dispatcher.run(interrupt, cancel, prior).await;
    poller.abort();
    let _ = reporting.await;
    acknowledge(&store, run_id, &sidecars).await;
    Ok(result.exit_code)
}

/// Records placements in the store before their StartJob goes out.
struct StorePlacementLog(std::sync::Mutex<Store>);

impl crate::dispatch::PlacementLog for StorePlacementLog {
    fn record(&self, placed: &RunEvent) -> Result<(), String> {
        let mut store = self.0.lock().unwrap_or_else(|e| e.into_inner());
        store.record_event(placed).map_err(|e| e.to_string())
    }

    fn refused(&self, execution_id: &str) {
        let store = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = store.close_refused_execution(execution_id) {
            tracing::warn!(%execution_id, error = %e, "could not mark a refused start in the run store");
        }
    }
}

/// Cancels `cancel` once `coordinator cancel RUN` has asked for it in the store.
async fn poll_cancel(home: PathBuf, run_id: String, cancel: CancellationToken) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        let (home, id) = (home.clone(), run_id.clone());
        let asked = tokio::task::spawn_blocking(move || {
            Store::open(&home).and_then(|s| s.cancel_requested(&id))
        })
        .await;
        if let Ok(Ok(true)) = asked {
            tracing::info!(run = %run_id, "cancel requested through the store");
            cancel.cancel();
            return;
        }
    }
}

/// Tells each sidecar which finished executions of the run are safely stored, so it may
/// prune its journal (best effort: the sidecar's age limit is the safety net).
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

/// What the store says an earlier driver did, in the dispatcher's terms.
pub fn prior_from(snapshot: &RunSnapshot) -> BTreeMap<String, PriorTask> {
    let mut prior = BTreeMap::new();
    for t in &snapshot.tasks {
        let running = snapshot
            .executions
            .iter()
            .filter(|e| e.task == t.task && e.finished_ms.is_none())
            .max_by_key(|e| e.attempt)
            .map(|e| PriorExecution {
                execution_id: e.execution_id.clone(),
                attempt: e.attempt,
                sidecar: e.sidecar.clone(),
                last_seq: e.last_seq,
            });
        prior.insert(
            t.task.clone(),
            PriorTask {
                outcome: final_outcome(&t.status),
                attempts: t.attempts,
                sidecar: t.sidecar.clone(),
                duration: Duration::from_millis(t.duration_ms),
                message: t.message.clone(),
                running,
            },
        );
    }
    prior
}

fn final_outcome(status: &str) -> Option<TaskOutcome> {
    Some(match status {
        "succeeded" => TaskOutcome::Succeeded,
        "failed" => TaskOutcome::Failed,
        "canceled" => TaskOutcome::Canceled,
        "timed_out" => TaskOutcome::TimedOut,
        "skipped" => TaskOutcome::Skipped,
        "lost" => TaskOutcome::Lost,
        _ => return None,
    })
}

/// The plan as it was run (its stored text), with the fleet it was run with.
fn stored_plan(snapshot: &RunSnapshot) -> Result<Plan, CliError> {
    let parsed = match &snapshot.fleet_path {
        Some(fleet) => crate::fleet_config::load_fleet(fleet)
            .and_then(|f| plan::parse_with_fleet(&snapshot.plan_text, &snapshot.plan_path, f)),
        None => plan::parse(&snapshot.plan_text, &snapshot.plan_path),
    };
    parsed.map_err(|e| {
        CliError::bad_input(format!("the stored plan of this run no longer loads: {e}"))
    })
}

/// `coordinator attach RUN`.
pub async fn attach(
    args: AttachArgs,
    home: &Path,
    interrupt: CancellationToken,
) -> Result<i32, CliError> {
    let store = open_store(home)?;
    let run = store.resolve_run(&args.run).map_err(store_error)?;
    if store::run_is_final(&run.status) {
        eprintln!(
            "run {} already ended: {} (exit code {}); `coordinator show {}` has the details",
            run.run_id,
            run.status,
            run.exit_code.unwrap_or_default(),
            short(&run.run_id)
        );
        return Ok(run.exit_code.unwrap_or(exit::OK));
    }
    let liveness = store::driver_liveness(run.driver_pid, run.driver_host.as_deref());
    if liveness == Liveness::Alive
        && !args.force
        && !args.detached_child
        && run.driver_pid != Some(std::process::id())
    {
        return Err(CliError::bad_input(format!(
            "run {} is being driven by process {} on this host; watch it with `coordinator logs {} --follow`, stop it with `coordinator cancel {}`, or pass --force if that process is not a coordinator",
            run.run_id,
            run.driver_pid.unwrap_or_default(),
            short(&run.run_id),
            short(&run.run_id)
        )));
    }
    let snapshot = store.run_snapshot(&run.run_id).map_err(store_error)?;
    let plan = stored_plan(&snapshot)?;
    store
        .set_driver(&run.run_id, std::process::id(), &store::this_host())
        .map_err(store_error)?;
    eprintln!("attached to run {} (plan `{}`)", run.run_id, plan.name);
    let options = DriveOptions {
        json: args.json,
        show_logs: args.show_logs,
        lost_after: args.lost_after,
        home: home.to_owned(),
    };
    drive(
        &plan,
        &run.run_id,
        prior_from(&snapshot),
        &options,
        interrupt,
        None,
    )
    .await
}

/// `coordinator cancel RUN`: no new tasks, running jobs stopped on their sidecars.
pub async fn cancel(args: CancelArgs, home: &Path) -> Result<i32, CliError> {
    let store = open_store(home)?;
    let run = store.resolve_run(&args.run).map_err(store_error)?;
    if store::run_is_final(&run.status) {
        eprintln!("run {} already ended: {}", run.run_id, run.status);
        return Ok(exit::OK);
    }
    store.request_cancel(&run.run_id).map_err(store_error)?;
    match store::driver_liveness(run.driver_pid, run.driver_host.as_deref()) {
        Liveness::Alive => {
            eprintln!(
                "cancel requested; waiting for the coordinator driving run {} to stop its jobs",
                run.run_id
            );
            loop {
                tokio::time::sleep(CANCEL_POLL).await;
                let status = store.run_status(&run.run_id).map_err(store_error)?;
                if store::run_is_final(&status) {
                    eprintln!("run {} {status}", run.run_id);
                    return Ok(exit::OK);
                }
            }
        }
        Liveness::Unknown => {
            eprintln!(
                "cancel requested; the coordinator driving run {} on {} will stop it (or run `coordinator cancel` there)",
                run.run_id,
                run.driver_host.as_deref().unwrap_or("another host")
            );
            Ok(exit::OK)
        }
        Liveness::Gone => {
            // Nobody drives it: stop its running executions ourselves.
            eprintln!(
                "no coordinator drives run {}; stopping its running jobs",
                run.run_id
            );
            let attach_args = AttachArgs {
                run: run.run_id.clone(),
                json: false,
                show_logs: false,
                lost_after: Duration::from_secs(60),
                force: true,
                detached_child: false,
            };
            attach(attach_args, home, CancellationToken::new())
                .await
                .map(|_| exit::OK)
        }
    }
}

/// `coordinator run --detach`: hands the recorded run to a background `attach`.
pub fn detach(run_id: &str, home: &Path) -> Result<i32, CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the coordinator binary: {e}")))?;
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", logs.display())))?;
    let log_path = logs.join(format!("{run_id}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| CliError::failed(e.to_string()))?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("--home")
        .arg(home)
        .args(["attach", run_id, "--detached-child"])
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err);
    #[cfg(unix)]
    {
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let child = command
        .spawn()
        .map_err(|e| CliError::failed(format!("cannot start the background coordinator: {e}")))?;
    let id = short(run_id);
    eprintln!(
        "run {run_id} continues in the background (pid {}, output in {})\n  follow:  coordinator logs {id} --follow\n  status:  coordinator show {id}\n  stop:    coordinator cancel {id}",
        child.id(),
        log_path.display()
    );
    Ok(exit::OK)
}

fn short(run_id: &str) -> &str {
    &run_id[..run_id.len().min(12)]
}
