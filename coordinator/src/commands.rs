//! The commands that talk to a fleet: `run`, `validate`, `sidecars`, `jobs`.
use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{FleetArgs, JobsArgs, RunArgs, ValidateArgs};
use crate::dispatch::{Dispatcher, RunOptions};
use crate::error::{CliError, exit};
use crate::events::RunEvent;
use crate::fleet::{self, Sidecar, SidecarInfo};
use crate::fleet_config::FleetConfig;
use crate::plan::{self, Plan};
use crate::report::{self, ReportOptions};
use crate::store::{self, NewRun, Store, StoreError, StoreReporter};

fn load_plan(path: &Path, fleet: &FleetArgs) -> Result<Plan, CliError> {
    plan::load_with_fleet(path, fleet.fleet.as_deref())
        .map_err(|e| CliError::bad_input(e.to_string()))
}

pub fn fleet_of(plan: &Plan) -> Result<&FleetConfig, CliError> {
    plan.fleet.as_ref().ok_or_else(|| {
        CliError::bad_input(format!(
            "{}: no fleet: add a `[fleet]` table to the plan or pass `--fleet FILE`",
            plan.path.display()
        ))
    })
}

/// The fleet's clients and what each sidecar said about itself.
pub type Stock = (Vec<Sidecar>, BTreeMap<String, SidecarInfo>);

/// Connects to the fleet and asks every sidecar what it offers. Exit 3 when none answers.
pub async fn take_stock(
    config: &FleetConfig,
) -> Result<(Vec<Sidecar>, BTreeMap<String, SidecarInfo>), CliError> {
    let sidecars = fleet::connect(config).map_err(|e| CliError::bad_input(e.to_string()))?;
    let infos = fleet::probe(&sidecars).await;
    if infos.values().all(|i| !i.reachable) {
        let reasons: Vec<String> = infos.values().filter_map(|i| i.error.clone()).collect();
        return Err(CliError::unreachable(format!(
            "no sidecar of the fleet could be reached:\n  {}",
            reasons.join("\n  ")
        )));
    }
    for info in infos.values().filter(|i| !i.reachable) {
        if let Some(e) = &info.error {
            eprintln!("warning: {e}");
        }
    }
    Ok((sidecars, infos))
}

/// Checks that every task can be placed; exit 3 if it may be an unreachable sidecar's
/// fault, else exit 2 (bad input). Nothing has started yet.
pub fn check_placeable(
    plan: &Plan,
    dispatcher: &Dispatcher<'_>,
    infos: &BTreeMap<String, SidecarInfo>,
) -> Result<(), CliError> {
    let problems = dispatcher.unplaceable();
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|(task, why)| {
            let index = plan.task(task).map(|t| t.index).unwrap_or_default();
            plan.diagnostic(index, "job", why.clone()).to_string()
        })
        .collect();
    let unreachable: Vec<&String> = infos
        .iter()
        .filter(|(_, i)| !i.reachable)
        .map(|(n, _)| n)
        .collect();
    if unreachable.is_empty() {
        Err(CliError::bad_input(lines.join("\n")))
    } else {
        Err(CliError::unreachable(format!(
            "{}\n(unreachable sidecars that might offer these jobs: {})",
            lines.join("\n"),
            unreachable
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

pub async fn run(args: RunArgs, interrupt: CancellationToken) -> Result<i32, CliError> {
    let plan = load_plan(&args.plan, &args.fleet)?;
    let (sidecars, infos) = take_stock(fleet_of(&plan)?).await?;
    let run_id = agentfleet_common::ids::new_run_id();
    // Check everything before recording or starting anything.
    let (tx, _rx) = mpsc::channel::<RunEvent>(1);
    let probe = Dispatcher::new(
        &plan,
        run_id.clone(),
        sidecars.clone(),
        &infos,
        tx,
        RunOptions::default(),
    );
    check_placeable(&plan, &probe, &infos)?;
    drop(probe);
    let home = store::home_dir(args.home.as_deref()).map_err(crate::attach::store_error)?;
    let driver = store::Driver::this_process();
    record_run(&args, &plan, &run_id, &home, &driver)?;
    if args.detach {
        return crate::attach::detach(&run_id, &home, &driver);
    }
    let options = crate::attach::DriveOptions {
        json: args.json,
        show_logs: args.show_logs,
        lost_after: args.lost_after,
        home,
        driver,
    };
    let stock = Some((sidecars, infos));
    crate::attach::drive(&plan, &run_id, BTreeMap::new(), &options, interrupt, stock).await
}

/// Records the new run in the central store, its lease held by `driver` (nothing has
/// started yet, so a store that cannot be opened is bad input).
fn record_run(
    args: &RunArgs,
    plan: &Plan,
    run_id: &str,
    home: &Path,
    driver: &store::Driver,
) -> Result<(), CliError> {
    let bad_store = |e: StoreError| {
        CliError::bad_input(format!(
            "{e} (the run store's directory is set by --home or AGENTFLEET_HOME)"
        ))
    };
    let mut store = Store::open(home).map_err(bad_store)?;
    // The plan as it is run, so a re-attach works even if the file changes meanwhile.
    let plan_text = std::fs::read_to_string(&plan.path).unwrap_or_default();
    store
        .create_run_as(
            &NewRun {
                run_id: run_id.to_owned(),
                plan_name: plan.name.clone(),
                plan_path: std::path::absolute(&plan.path).unwrap_or_else(|_| plan.path.clone()),
                plan_text,
                fleet_path: args
                    .fleet
                    .fleet
                    .as_ref()
                    .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())),
                started_ms: agentfleet_common::now_ms(),
                tasks: plan
                    .tasks
                    .iter()
                    .map(|t| (t.name.clone(), t.job.clone()))
                    .collect(),
            },
            driver,
        )
        .map_err(bad_store)
}

/// Runs the reporters on a blocking thread (they write to the terminal and stdout), plus the
/// store's reporter when given (it saves every event; finishing it commits the last batch).
pub fn spawn_reporters_with(
    mut rx: mpsc::Receiver<RunEvent>,
    json: bool,
    show_logs: bool,
    store: Option<StoreReporter>,
) -> tokio::task::JoinHandle<()> {
    let options = ReportOptions::detect(json, show_logs);
    tokio::task::spawn_blocking(move || {
        let mut reporters = report::reporters(options);
        if let Some(store) = store {
            reporters.push(Box::new(store));
        }
        while let Some(event) = rx.blocking_recv() {
            report::broadcast(&mut reporters, &event);
        }
        report::finish_all(&mut reporters);
    })
}

pub async fn validate(args: ValidateArgs) -> Result<i32, CliError> {
    let plan = load_plan(&args.plan, &args.fleet)?;
    if args.online {
        let (sidecars, infos) = take_stock(fleet_of(&plan)?).await?;
        let (tx, _rx) = mpsc::channel(1);
        let dispatcher = Dispatcher::new(
            &plan,
            String::new(),
            sidecars,
            &infos,
            tx,
            RunOptions::default(),
        );
        check_placeable(&plan, &dispatcher, &infos)?;
    }
    eprintln!(
        "{}: ok: plan `{}`, {} tasks{}",
        plan.path.display(),
        plan.name,
        plan.tasks.len(),
        if args.online {
            ", every job offered by an eligible sidecar"
        } else {
            ""
        }
    );
    Ok(exit::OK)
}

fn load_fleet(fleet: &FleetArgs) -> Result<FleetConfig, CliError> {
    let path = fleet.fleet.as_deref().ok_or_else(|| {
        CliError::bad_input("which fleet? pass `--fleet FILE` (a file with a `[fleet]` table)")
    })?;
    crate::fleet_config::load_fleet(path).map_err(|e| CliError::bad_input(e.to_string()))
}

pub async fn sidecars(args: FleetArgs) -> Result<i32, CliError> {
    let config = load_fleet(&args)?;
    let sidecars = fleet::connect(&config).map_err(|e| CliError::bad_input(e.to_string()))?;
    let infos = fleet::probe(&sidecars).await;
    println!(
        "{:<16} {:<10} {:<9} {:<18} {:>5} {:>7}  JOBS",
        "SIDECAR", "REACHABLE", "VERSION", "BACKENDS", "SLOTS", "RUNNING"
    );
    for s in &sidecars {
        let info = &infos[&s.name];
        match &info.describe {
            Some(d) => println!(
                "{:<16} {:<10} {:<9} {:<18} {:>5} {:>7}  {}",
                s.name,
                "yes",
                d.version,
                d.backends.join(","),
                d.slots,
                d.running,
                info.jobs.len()
            ),
            None => println!(
                "{:<16} {:<10} {}",
                s.name,
                "no",
                info.error.clone().unwrap_or_default()
            ),
        }
    }
    Ok(if infos.values().all(|i| i.reachable) {
        exit::OK
    } else {
        exit::UNREACHABLE
    })
}

pub async fn jobs(args: JobsArgs) -> Result<i32, CliError> {
    let config = load_fleet(&FleetArgs {
        fleet: Some(args.fleet.clone()),
    })?;
    let sidecars = fleet::connect(&config).map_err(|e| CliError::bad_input(e.to_string()))?;
    let Some(sidecar) = sidecars.iter().find(|s| s.name == args.sidecar) else {
        let names: Vec<&str> = sidecars.iter().map(|s| s.name.as_str()).collect();
        return Err(CliError::bad_input(format!(
            "no sidecar `{}` in the fleet; it has: {}",
            args.sidecar,
            names.join(", ")
        )));
    };
    let infos = fleet::probe(std::slice::from_ref(sidecar)).await;
    let info = &infos[&sidecar.name];
    if !info.reachable {
        return Err(CliError::unreachable(
            info.error.clone().unwrap_or_default(),
        ));
    }
    for job in &info.jobs {
        let typical = job
            .stats
            .as_ref()
            .filter(|s| s.count > 0)
            .map(|s| {
                format!(
                    "typical {} (p90 {}, {} runs)",
                    agentfleet_common::duration::short(std::time::Duration::from_millis(
                        s.median_ms
                    )),
                    agentfleet_common::duration::short(std::time::Duration::from_millis(s.p90_ms)),
                    s.count
                )
            })
            .unwrap_or_else(|| "no history yet".into());
        let state = if job.enabled { "" } else { " [disabled]" };
        println!("{} ({}){state}: {typical}", job.name, job.backend);
        if !job.params.is_empty() {
            println!("  params: {}", job.params.join(", "));
        }
        for step in &job.steps {
            println!(
                "  {:>2}. {:<28} {:<10} on success: {:<10} on failure: {:<10} retries: {}",
                step.id, step.name, step.subsystem, step.on_success, step.on_failure, step.retries
            );
        }
    }
    Ok(exit::OK)
}
