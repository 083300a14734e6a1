//! `coordinator demo`: the whole tour on one machine, on embedded defaults. Creates a
//! throw-away CA and certificates, starts three sidecars on 127.0.0.1 (mTLS on) with
//! sample command jobs and a fourth one with SQL Server Agent jobs (backed by the in-process
//! `sqlagent-standin`, see `sqlagent.rs`), and runs a sample plan over them with live progress.
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{DemoArgs, FleetArgs, RunArgs};
use crate::error::CliError;
use crate::pki;

mod sqlagent;
mod step;

pub use step::{DemoStepArgs, main as step_main};

const PLAN: &str = include_str!("plan.toml");
const JOBS: &str = include_str!("jobs.toml");

/// The demo's sidecars and the jobs each offers (overlapping, so placement has choices).
const SIDECARS: [(&str, &[&str]); 3] = [
    (
        "demo-a",
        &[
            "ETL - Stage Customers",
            "ETL - Stage Products",
            "ETL - Load Dimension",
            "ETL - Load Facts",
            "ETL - Build Aggregates",
            "OPS - Archive Logs",
        ],
    ),
    (
        "demo-b",
        &[
            "ETL - Stage Orders",
            "ETL - Stage Stores",
            "ETL - Load Dimension",
            "ETL - Load Facts",
            "QA - Data Quality Checks",
            "BI - Refresh Cube",
        ],
    ),
    (
        "demo-c",
        &[
            "ETL - Stage Customers",
            "ETL - Stage Orders",
            "ETL - Load Dimension",
            "ETL - Build Aggregates",
            "BI - Publish Report",
            "QA - Data Quality Checks",
        ],
    ),
];
const SLOTS: u32 = 2;

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::failed(format!("demo: failed to {what} `{}`: {e}", path.display()))
}

pub async fn run(args: DemoArgs, interrupt: CancellationToken) -> Result<i32, CliError> {
    let temp;
    let dir: PathBuf = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| io_err("create", d, e))?;
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("agentfleet-demo-")
                .tempdir()
                .map_err(|e| {
                    CliError::failed(format!("demo: failed to create a temporary directory: {e}"))
                })?;
            temp.path().to_owned()
        }
    };
    let pki_dir = dir.join("pki");
    if !pki_dir.join("ca.pem").exists() {
        pki::init(&pki_dir, pki::CA_VALIDITY_DAYS).map_err(|e| CliError::failed(e.to_string()))?;
    }
    pki::issue(
        &pki_dir,
        "coordinator",
        pki::Role::Coordinator,
        &pki::IssueOptions::default(),
    )
    .map_err(|e| CliError::failed(e.to_string()))?;

    // The demo's sidecars listen on 127.0.0.1, and the fleet reaches them there.
    let loopback = pki::IssueOptions::hosts(["127.0.0.1"]);
    eprintln!(
        "agentfleet demo: a throw-away CA and certificates in {}",
        pki_dir.display()
    );
    let shutdown = CancellationToken::new();
    let mut servers = Vec::new();
    let mut fleet = String::from(
        "[fleet.tls]\nca = \"pki/ca.pem\"\ncert = \"pki/coordinator.pem\"\nkey = \"pki/coordinator.key\"\n",
    );
    for (name, jobs) in SIDECARS {
        pki::issue(&pki_dir, name, pki::Role::Sidecar, &loopback)
            .map_err(|e| CliError::failed(e.to_string()))?;
        let config = write_sidecar_config(&dir, name, jobs)?;
        let (addr, handle) = start_sidecar(&config, shutdown.clone()).await?;
        eprintln!(
            "  sidecar {name} listening on https://{addr} (mTLS, {SLOTS} slots, {} jobs)",
            jobs.len()
        );
        fleet.push_str(&format!(
            "\n[fleet.sidecars.{name}]\nendpoint = \"https://{addr}\"\n"
        ));
        servers.push(handle);
    }
    // The fourth sidecar: SQL Server Agent jobs, through the real `[sqlagent]` backend.
    let sql_dir = dir.join(sqlagent::SIDECAR);
    let agent = sqlagent::start(&sql_dir).await?;
    eprintln!(
        "  {} on {} with {} Agent jobs",
        sqlagent::LABEL,
        agent.standin.addr(),
        agent.jobs.len()
    );
    pki::issue(&pki_dir, sqlagent::SIDECAR, pki::Role::Sidecar, &loopback)
        .map_err(|e| CliError::failed(e.to_string()))?;
    let mut config = base_config(sqlagent::SIDECAR);
    config.insert("sqlagent".into(), toml::Value::Table(agent.section.clone()));
    let config = write_config(&dir, sqlagent::SIDECAR, &config)?;
    let (addr, handle) = start_sidecar(&config, shutdown.clone()).await?;
    eprintln!(
        "  sidecar {} listening on https://{addr} (mTLS, {SLOTS} slots, SQL Server Agent jobs: {})",
        sqlagent::SIDECAR,
        agent.jobs.join(", ")
    );
    fleet.push_str(&format!(
        "\n[fleet.sidecars.{}]\nendpoint = \"https://{addr}\"\n",
        sqlagent::SIDECAR
    ));
    servers.push(handle);

    let fleet_path = dir.join("fleet.toml");
    std::fs::write(&fleet_path, fleet).map_err(|e| io_err("write", &fleet_path, e))?;
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, PLAN).map_err(|e| io_err("write", &plan_path, e))?;
    eprintln!(
        "  plan {} ({} tasks; `refresh-cube` fails on purpose and is optional)\n",
        plan_path.display(),
        PLAN.matches("[[task]]").count()
    );

    let result = crate::commands::run(
        RunArgs {
            plan: plan_path.clone(),
            fleet: FleetArgs {
                fleet: Some(fleet_path.clone()),
            },
            json: args.json,
            show_logs: false,
            lost_after: Duration::from_secs(30),
            detach: false,
            home: args.home.clone(),
        },
        interrupt,
    )
    .await;

    shutdown.cancel();
    for handle in servers {
        let _ = tokio::time::timeout(Duration::from_secs(15), handle).await;
    }
    // Only now, with its sidecar gone, stop the simulated Agent.
    drop(agent);
    let code = result?;
    // The picture of the run: its timeline report, next to the store or in --dir.
    let out = args.dir.as_ref().map(|d| d.join("report.html"));
    match crate::inspect::write_report(args.home.as_deref(), "last", out.as_deref()) {
        Ok(path) => eprintln!(
            "\nReport of this run (open it in a browser): {}",
            path.display()
        ),
        Err(e) => eprintln!("\nwarning: the run's report could not be written: {e}"),
    }
    // The run is in the central store: these work after the demo's sidecars are gone.
    let mut keep = String::from(
        "\nThe run is kept in the central store. Look further:\n  coordinator runs\n  coordinator show last --timeline\n  coordinator logs last --task load-facts\n  coordinator show last   (the SSIS package of `store-sales`, task by task)\n",
    );
    if args.dir.is_some() {
        keep.push_str(&format!(
            "The demo's certificates, configs and plan stay in {0}:\n  coordinator validate {1} --fleet {2}\n  sidecar serve --config {0}/demo-a/sidecar.toml   (then `coordinator jobs demo-a --fleet ...` against it)\n",
            dir.display(),
            plan_path.display(),
            fleet_path.display()
        ));
    } else {
        keep.push_str("Run `coordinator demo --dir ./agentfleet-demo` to keep its certificates, configs and plan.\n");
    }
    eprintln!("{keep}");
    Ok(code)
}

/// Writes `DIR/NAME/sidecar.toml` offering `jobs` from the embedded sample jobs, whose
/// steps run `coordinator demo-step` as this very binary (see `step.rs`).
fn write_sidecar_config(dir: &Path, name: &str, jobs: &[&str]) -> Result<PathBuf, CliError> {
    let this = std::env::current_exe()
        .map_err(|e| CliError::failed(format!("demo: failed to find this program's path: {e}")))?;
    let mut config = base_config(name);
    config.insert(
        "job".into(),
        sample_jobs(jobs, &this.display().to_string())?,
    );
    write_config(dir, name, &config)
}

/// The embedded sample jobs named in `jobs`, with `program` in place of `coordinator`.
fn sample_jobs(jobs: &[&str], program: &str) -> Result<toml::Value, CliError> {
    let all: toml::Table =
        toml::from_str(JOBS).map_err(|e| CliError::failed(format!("demo jobs: {e}")))?;
    let mut selected: Vec<toml::Value> = all["job"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| {
            j.get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| jobs.contains(&n))
        })
        .cloned()
        .collect();
    let runs = selected
        .iter_mut()
        .filter_map(|job| job.get_mut("step")?.as_array_mut())
        .flatten()
        .filter_map(|step| step.get_mut("run")?.as_array_mut()?.first_mut());
    for first in runs {
        if first.as_str() == Some("coordinator") {
            *first = program.into();
        }
    }
    Ok(toml::Value::Array(selected))
}

/// The settings every demo sidecar shares: loopback, mTLS with the demo CA, short stop grace.
fn base_config(name: &str) -> toml::Table {
    let mut config = toml::Table::new();
    config.insert("name".into(), name.into());
    config.insert("listen".into(), "127.0.0.1:0".into());
    config.insert("slots".into(), i64::from(SLOTS).into());
    config.insert("state_dir".into(), "state".into());
    config.insert("stop_grace".into(), "3s".into());
    let mut tls = toml::Table::new();
    tls.insert("cert".into(), format!("../pki/{name}.pem").into());
    tls.insert("key".into(), format!("../pki/{name}.key").into());
    tls.insert("client_ca".into(), "../pki/ca.pem".into());
    tls.insert(
        "allow_clients".into(),
        toml::Value::Array(vec!["coordinator".into()]),
    );
    config.insert("tls".into(), toml::Value::Table(tls));
    config
}

/// Writes `DIR/NAME/sidecar.toml`.
fn write_config(dir: &Path, name: &str, config: &toml::Table) -> Result<PathBuf, CliError> {
    let sidecar_dir = dir.join(name);
    std::fs::create_dir_all(&sidecar_dir).map_err(|e| io_err("create", &sidecar_dir, e))?;
    let path = sidecar_dir.join("sidecar.toml");
    let text = toml::to_string_pretty(config)
        .map_err(|e| CliError::failed(format!("demo config: {e}")))?;
    std::fs::write(&path, text).map_err(|e| io_err("write", &path, e))?;
    Ok(path)
}

/// Starts a sidecar in this process from its config file; returns its address.
async fn start_sidecar(
    config_path: &Path,
    shutdown: CancellationToken,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), CliError> {
    let flags = agentfleet_sidecar::config::Flags {
        config: Some(config_path.to_owned()),
        ..Default::default()
    };
    let config = agentfleet_sidecar::config::load(&flags, &|_| None)
        .map_err(|e| CliError::failed(format!("demo sidecar: {e}")))?;
    let state_lock = agentfleet_sidecar::state_lock::StateDirLock::acquire(&config.state_dir)
        .map_err(|e| CliError::failed(format!("demo sidecar: {e}")))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::failed(format!("demo: failed to bind 127.0.0.1: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::failed(e.to_string()))?;
    let backends = agentfleet_sidecar::server::backends(&config)
        .await
        .map_err(|e| CliError::failed(format!("demo sidecar: {e}")))?;
    let handle = tokio::spawn(async move {
        if let Err(e) =
            agentfleet_sidecar::server::serve(&config, &state_lock, backends, listener, shutdown)
                .await
        {
            eprintln!("demo sidecar stopped: {e}");
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample step runs this binary's `demo-step` (no shell: the demo runs on Windows
    /// too), and its actions parse.
    #[test]
    fn sample_steps_run_demo_step_of_this_binary() {
        let names: Vec<&str> = SIDECARS
            .iter()
            .flat_map(|(_, jobs)| *jobs)
            .copied()
            .collect();
        let jobs = sample_jobs(&names, "/opt/bin/coordinator").unwrap();
        let mut steps = 0;
        for job in jobs.as_array().unwrap() {
            for step in job["step"].as_array().unwrap() {
                let run: Vec<&str> = step["run"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                assert_eq!(run[..2], ["/opt/bin/coordinator", "demo-step"], "{run:?}");
                step::check(&run[2..]).unwrap();
                steps += 1;
            }
        }
        assert!(steps >= 15, "{steps} sample steps");
    }
}
