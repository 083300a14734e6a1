//! `coordinator`: thin entry point. Parses arguments, sets up crypto and logging,
//! runs the command, maps the result to the documented exit code.
use std::path::PathBuf;

use clap::Parser;

use agentfleet_coordinator::cli::{Cli, Command};
use agentfleet_coordinator::{attach, commands, error::CliError, inspect, pki};

fn main() {
    let cli = Cli::parse();
    #[cfg(feature = "demo")]
    match &cli.command {
        // The demo's sidecars start their command jobs' supervisors, and the supervisors
        // the sample steps, as this binary.
        Command::Supervise(args) => {
            std::process::exit(i32::from(agentfleet_sidecar::supervisor::main(args)));
        }
        Command::DemoStep(args) => {
            std::process::exit(i32::from(agentfleet_coordinator::demo::step_main(args)));
        }
        _ => {}
    }
    agentfleet_common::tls::install_crypto_provider();
    agentfleet_common::telemetry::init(&cli.log, agentfleet_common::telemetry::LogFormat::Plain);
    let telemetry = start_telemetry(cli.otlp_endpoint.as_deref());
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    let code = match runtime.block_on(dispatch(cli.command, cli.home)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.code
        }
    };
    // Don't wait for stray blocking tasks (e.g. a terminal reader) on the way out.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    // Off the async runtime (it blocks), bounded: a collector that is down costs at most this.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown(std::time::Duration::from_secs(3));
    }
    std::process::exit(code);
}

/// OTLP export of spans and metrics, when an endpoint is configured (flag, its env twin
/// or the standard OTEL_* variables). A broken setup is reported and skipped: telemetry
/// never stops a run.
fn start_telemetry(
    endpoint: Option<&str>,
) -> Option<&'static agentfleet_common::telemetry::Telemetry> {
    use agentfleet_common::telemetry::{ExportSettings, export};
    let env = |k: &str| std::env::var(k).ok();
    let settings = ExportSettings::resolve("agentfleet-coordinator", endpoint, &env);
    export::start(&settings).unwrap_or_else(|e| {
        eprintln!("warning: {e}; continuing without telemetry export");
        None
    })
}

fn home_or_default(home: Option<PathBuf>) -> Result<PathBuf, CliError> {
    agentfleet_coordinator::store::home_dir(home.as_deref()).map_err(attach::store_error)
}

async fn dispatch(command: Command, home: Option<PathBuf>) -> Result<i32, CliError> {
    match command {
        Command::Run(mut args) => {
            args.home = home;
            commands::run(args, agentfleet_common::shutdown::install()).await
        }
        Command::Runs(args) => inspect::runs(home.as_deref(), args).await,
        Command::Attach(args) => {
            let home = home_or_default(home)?;
            attach::attach(args, &home, agentfleet_common::shutdown::install()).await
        }
        Command::Cancel(args) => attach::cancel(args, &home_or_default(home)?).await,
        Command::Show(args) => inspect::show(home.as_deref(), args).await,
        Command::Logs(args) => inspect::logs(home.as_deref(), args).await,
        Command::Report(args) => inspect::report(home.as_deref(), args).await,
        Command::Validate(args) => commands::validate(args).await,
        Command::Sidecars(args) => commands::sidecars(args).await,
        Command::Jobs(args) => commands::jobs(args).await,
        #[cfg(feature = "demo")]
        Command::Demo(mut args) => {
            args.home = home;
            agentfleet_coordinator::demo::run(args, agentfleet_common::shutdown::install()).await
        }
        #[cfg(feature = "demo")]
        Command::Supervise(_) | Command::DemoStep(_) => {
            unreachable!("handled before the runtime starts")
        }
        Command::Pki(command) => pki::run_command(command),
    }
}
