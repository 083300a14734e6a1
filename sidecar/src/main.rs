//! `sidecar`: parses arguments, installs the crypto provider and telemetry, calls the
//! library, maps the result to an exit code (0 ok, 1 failed, 2 bad config or flags).
use std::path::PathBuf;
use std::process::ExitCode;

use agentfleet_common::telemetry::{self, LogFormat};
use agentfleet_sidecar::{check, config, server, service, supervisor};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "agentfleet sidecar: starts SQL Server Agent jobs and command jobs on this server for the coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service in the foreground (also what the service manager runs).
    Serve(ConfigArgs),
    /// Validate the config and test TLS files, the state directory, the jobs' programs and the SQL Server connection.
    Check(ConfigArgs),
    /// Register as a service started at boot: a systemd unit on Linux, a Windows service on Windows.
    Install {
        #[command(flatten)]
        config: ConfigArgs,
        /// Linux: run the service as this existing account (hardened unit; it gets the state_dir).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print what would be registered instead of registering it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop and remove the service (systemd unit or Windows service).
    Uninstall {
        /// Print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Internal: the supervisor of one command-job execution, started by `serve`.
    #[command(hide = true)]
    Supervise(supervisor::SuperviseArgs),
    /// Internal: `serve` under the Windows service control manager (what `install` registers).
    #[command(name = "service-run", hide = true)]
    ServiceRun {
        #[command(flatten)]
        config: ConfigArgs,
        /// Write the log here instead of stderr (a service has none).
        #[arg(long, value_name = "FILE")]
        log_file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// The sidecar config file [env: AGENTFLEET_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, host:port (overrides `listen`) [env: AGENTFLEET_LISTEN]
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Where the execution journal lives (overrides `state_dir`) [env: AGENTFLEET_STATE_DIR]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Log format on stderr: plain or json [env: AGENTFLEET_LOG_FORMAT]
    #[arg(long, value_name = "FORMAT", value_parser = config::parse_log_format)]
    log_format: Option<LogFormat>,
}

impl ConfigArgs {
    fn flags(&self) -> config::Flags {
        config::Flags {
            config: self.config.clone(),
            listen: self.listen.clone(),
            state_dir: self.state_dir.clone(),
            log_format: self.log_format,
        }
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Supervise(args) = &cli.command {
        // Its own runtime and log (the execution's supervisor.log); see `supervisor`.
        return ExitCode::from(supervisor::main(args));
    }
    agentfleet_common::tls::install_crypto_provider();
    if let Command::ServiceRun { config, log_file } = &cli.command {
        // Its own log (a file) and runtime, on the service control manager's thread.
        return ExitCode::from(service::run_as_windows_service(
            service::windows_spec::Launch {
                flags: config.flags(),
                log_file: log_file.clone(),
            },
        ));
    }
    let flags = match &cli.command {
        Command::Serve(a) | Command::Check(a) | Command::Install { config: a, .. } => a.flags(),
        Command::Uninstall { .. } | Command::Supervise(_) | Command::ServiceRun { .. } => {
            config::Flags::default()
        }
    };
    let format = match config::log_format(&flags, &env) {
        Ok(f) => f,
        Err(e) => return fail(2, &e),
    };
    telemetry::init("info", format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("failed to start the async runtime: {e}")),
    };
    match cli.command {
        Command::Serve(_) => runtime.block_on(serve(&flags)),
        Command::Check(_) => {
            let ok = runtime.block_on(check::run(&flags, &env, &mut std::io::stdout()));
            ExitCode::from(if ok { 0 } else { 1 })
        }
        Command::Install { dry_run, user, .. } => {
            let cfg = match config::load(&flags, &env) {
                Ok(c) => c,
                Err(e) => return fail(2, &e),
            };
            report(service::install(
                &cfg.source,
                &cfg.state_dir,
                cfg.stop_grace,
                user.as_deref(),
                dry_run,
            ))
        }
        Command::Uninstall { dry_run } => report(service::uninstall(dry_run)),
        Command::Supervise(_) | Command::ServiceRun { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

async fn serve(flags: &config::Flags) -> ExitCode {
    let cfg = match config::load(flags, &env) {
        Ok(c) => c,
        Err(e) => return fail(2, &e),
    };
    let shutdown = agentfleet_common::shutdown::install();
    match server::run(cfg, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e),
    }
}

fn report(result: Result<Vec<String>, service::ServiceError>) -> ExitCode {
    match result {
        Ok(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("sidecar: {error}");
    ExitCode::from(code)
}
