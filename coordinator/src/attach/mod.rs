//! Driving a run to its end from any coordinator process: the shared `drive` loop used by
//! `run`, `attach RUN` (re-attach after Ctrl-C with --detach, a closed laptop or a crash),
//! `cancel RUN`, and `run --detach` (which hands the run to a background `attach`).
//!
//! The store is the hand-over point: it holds the plan text, every task's state and each
//! running execution's last stored sequence number, so a new driver starts nothing that is
//! finished or running, and resumes every watch exactly where the store ends. One driver
//! at a time, whatever the OS or host: a run's driver holds its lease in the store
//! (`store/lease.rs`); `attach` takes over only a lease that has expired or whose process
//! is gone from this host, or any with `--force`.
//!
//! The same path recovers a run whose store lost events (a full disk): such a run ends
//! `incomplete` with nothing acknowledged, and `attach` re-watches its executions from
//! their stored `last_seq`, re-importing the rest from the sidecars' journals.
//!
//! - `drive`: the drive loop and what happens at its end (durable record, acknowledgement).
//! - `keeper`: the thread that renews the lease and notices `coordinator cancel`.
//! - `reimport`: re-watching lost-in-part attempts of tasks that have finished since.
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{AttachArgs, CancelArgs};
use crate::commands::{fleet_of, take_stock};
use crate::dispatch::{PriorExecution, PriorTask};
use crate::error::{CliError, exit};
use crate::events::TaskOutcome;
use crate::plan::{self, Plan};
use crate::store::{self, Driver, LEASE_RENEW_EVERY, LeaseHolder, RunSnapshot, Store, StoreError};

mod drive;
mod keeper;
mod reimport;

pub use drive::{DriveOptions, drive};
use keeper::CANCEL_POLL;

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
    let driver = match &args.driver_id {
        Some(id) => Driver::adopting(id),
        None => Driver::this_process(),
    };
    take_lease(&store, &run.run_id, &driver, args.force)?;
    // Read only once the lease is ours: a driver that lost it writes nothing after that,
    // so every last_seq read here is final and each watch resumes exactly where it ends.
    let snapshot = store.run_snapshot(&run.run_id).map_err(store_error)?;
    let prepared = async {
        let plan = stored_plan(&snapshot)?;
        let stock = take_stock(fleet_of(&plan)?).await?;
        reimport::reimport_stale(&store, &snapshot, &stock.0, &driver).await?;
        Ok::<_, CliError>((plan, stock))
    };
    let (plan, stock) = match prepared.await {
        Ok(prepared) => prepared,
        Err(e) => {
            // Not driving after all: let the next `attach` take the run at once.
            let _ = Store::open(home).and_then(|mut s| s.end_drive(&run.run_id, &driver, None));
            return Err(e);
        }
    };
    eprintln!("attached to run {} (plan `{}`)", run.run_id, plan.name);
    let options = DriveOptions {
        json: args.json,
        show_logs: args.show_logs,
        lost_after: args.lost_after,
        home: home.to_owned(),
        driver,
    };
    drive(
        &plan,
        &run.run_id,
        prior_from(&snapshot),
        &options,
        interrupt,
        Some(stock),
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
    let mut waiting = false;
    loop {
        let status = store.run_status(&run.run_id).map_err(store_error)?;
        if store::run_is_final(&status) {
            eprintln!("run {} {status}", run.run_id);
            return Ok(exit::OK);
        }
        let holder = store.lease_holder(&run.run_id).map_err(store_error)?;
        if !is_driven(&holder) {
            break;
        }
        if !waiting {
            eprintln!(
                "cancel requested; waiting for the coordinator driving run {} ({}) to stop its jobs",
                run.run_id,
                holder.describe()
            );
            waiting = true;
        }
        tokio::time::sleep(CANCEL_POLL).await;
    }
    // Nobody drives it (any more): stop its running executions ourselves.
    eprintln!(
        "no coordinator drives run {}; stopping its running jobs",
        run.run_id
    );
    let attach_args = AttachArgs {
        run: run.run_id.clone(),
        json: false,
        show_logs: false,
        lost_after: Duration::from_secs(60),
        force: false,
        driver_id: None,
    };
    attach(attach_args, home, CancellationToken::new())
        .await
        .map(|_| exit::OK)
}

/// True while a live coordinator holds the run's lease: its claim has not expired and
/// its process is not known to be gone.
fn is_driven(holder: &LeaseHolder) -> bool {
    holder.is_live(agentfleet_common::now_ms()) && !holder.is_known_dead()
}

/// Makes `driver` the run's driver, or says who drives it.
fn take_lease(store: &Store, run_id: &str, driver: &Driver, force: bool) -> Result<(), CliError> {
    let now = agentfleet_common::now_ms();
    match store
        .take_lease(run_id, driver, force, now)
        .map_err(store_error)?
    {
        Ok(()) => Ok(()),
        Err(holder) => Err(CliError::bad_input(format!(
            "run {run_id} is driven by another coordinator: {} (it renews the lease every {}s while it drives). \
             Watch it with `coordinator logs {id} --follow`, stop it with `coordinator cancel {id}`; \
             if that coordinator is gone, `attach` takes the run over once its lease has expired, \
             or now with --force (a live holder is cut off: it starts nothing more, but until it \
             notices it may still stop running jobs)",
            holder.describe(),
            LEASE_RENEW_EVERY.as_secs(),
            id = short(run_id),
        ))),
    }
}

/// `coordinator run --detach`: hands the recorded run to a background `attach`.
/// The child continues the lease this process took in `create_run` (`--driver-id`).
pub fn detach(run_id: &str, home: &Path, driver: &Driver) -> Result<i32, CliError> {
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
        .args(["attach", run_id, "--driver-id", &driver.id])
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

pub(crate) fn short(run_id: &str) -> &str {
    &run_id[..run_id.len().min(12)]
}
