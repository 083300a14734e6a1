//! Command-line interface (PRODUCT.md "coordinator"). Every flag that configures the
//! process has an `AGENTFLEET_*` environment twin.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "coordinator",
    version,
    about = "Run a plan of SQL Server Agent and command jobs across a fleet of sidecars",
    after_help = "Exit codes: 0 every task succeeded, 1 a task failed/stopped/timed out, 2 bad input (nothing started), 3 fleet unreachable, 4 the run ended but the store could not save all of it (nothing acknowledged; `attach RUN` re-imports), 130 interrupted."
)]
pub struct Cli {
    /// Log filter for diagnostics on stderr (e.g. "info", "agentfleet_coordinator=debug").
    #[arg(
        long,
        global = true,
        env = "AGENTFLEET_LOG",
        default_value = "warn,tiberius=error"
    )]
    pub log: String,
    /// Data directory holding the central run store (`agentfleet.db`); default: the
    /// platform's data directory for agentfleet.
    #[arg(long, global = true, env = "AGENTFLEET_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// OTLP/gRPC collector for traces, metrics and job log lines (e.g.
    /// http://localhost:4317); off when unset. The standard OTEL_EXPORTER_OTLP_* variables
    /// work too.
    #[arg(
        long,
        global = true,
        env = "AGENTFLEET_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Self-contained tour: local sidecars with sample jobs (mTLS on), a sample plan, live progress.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run a plan: place each task on a sidecar, follow every step live; exit code as documented.
    Run(RunArgs),
    /// Check a plan (and with --online, that every task's job is offered by an eligible sidecar).
    Validate(ValidateArgs),
    /// Each sidecar of the fleet: reachable, version, backends, slots, running executions.
    Sidecars(FleetArgs),
    /// The jobs a sidecar offers, with steps and typical duration.
    Jobs(JobsArgs),
    /// Recent runs with outcome and duration (from the central store).
    Runs(RunsArgs),
    /// One run: tasks, placement, attempts, steps, durations, outcomes.
    Show(ShowArgs),
    /// The run's central log, in order; --follow tails a live run.
    Logs(LogsArgs),
    /// One self-contained HTML page of a run: lanes per sidecar slot, steps, retries, critical path, totals, logs.
    Report(ReportArgs),
    /// Re-attach to a run that is still going (after --detach, Ctrl-C of a detached run, a closed laptop or a crash), or whose record is incomplete (exit 4), and drive it to the end.
    Attach(AttachArgs),
    /// Stop a run: no new tasks, running jobs are stopped on their sidecars.
    Cancel(CancelArgs),
    /// Private CA and certificates for mTLS (no openssl needed).
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Internal: the supervisor of one command job of the demo's in-process sidecars.
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    Supervise(agentfleet_sidecar::supervisor::SuperviseArgs),
    /// Internal: one step of the demo's sample command jobs (prints, sleeps, fails as told).
    #[cfg(feature = "demo")]
    #[command(hide = true)]
    DemoStep(crate::demo::DemoStepArgs),
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Fleet file (a `[fleet]` table); default: the plan's own `[fleet]`.
    #[arg(long, env = "AGENTFLEET_FLEET")]
    pub fleet: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plan file (TOML).
    pub plan: PathBuf,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every log line of every job (plain output only; --json always has them).
    #[arg(long, env = "AGENTFLEET_SHOW_LOGS")]
    pub show_logs: bool,
    /// After this long unreachable, a sidecar's executions count as lost.
    #[arg(long, env = "AGENTFLEET_LOST_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub lost_after: std::time::Duration,
    /// Start the run, then let a background coordinator drive it (see `attach`, `logs --follow`, `cancel`).
    #[arg(long)]
    pub detach: bool,
    /// The global `--home`, filled in by `main`.
    #[arg(skip)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Run id, a unique prefix of one, or `last`.
    pub run: String,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
    /// Print every log line of every job.
    #[arg(long, env = "AGENTFLEET_SHOW_LOGS")]
    pub show_logs: bool,
    #[arg(long, env = "AGENTFLEET_LOST_AFTER", default_value = "2m", value_parser = parse_duration)]
    pub lost_after: std::time::Duration,
    /// Take the run over even though another coordinator holds its lease (it renews it
    /// every 5 s while it drives; a lease not renewed for 30 s is taken without --force).
    /// If that coordinator is in fact alive, it is cut off: it can start no job once the
    /// lease is taken (every placement checks it), stops driving within 5 s and exits 1,
    /// but until then it may still stop running jobs (its Ctrl-C, a task or plan timeout).
    /// Meant for a holder known to be gone (e.g. its host is down).
    #[arg(long)]
    pub force: bool,
    /// Set by `run --detach`: the driver id whose lease the background process continues.
    #[arg(long, hide = true)]
    pub driver_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// Run id, a unique prefix of one, or `last`.
    pub run: String,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many runs, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per run on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A run id, a unique prefix of one, or `last`.
    pub run: String,
    /// The whole run as one JSON object.
    #[arg(long, conflicts_with = "timeline")]
    pub json: bool,
    /// The run as lanes over time, one per sidecar slot (as `report` draws them).
    #[arg(long)]
    pub timeline: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A run id, a unique prefix of one, or `last`.
    pub run: String,
    /// Where to write the page; default HOME/reports/RUN.html (private: it holds job output).
    #[arg(long, value_name = "FILE.html")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// A run id, a unique prefix of one, or `last`.
    pub run: String,
    /// Only this task's lines.
    #[arg(long)]
    pub task: Option<String>,
    /// Keep printing new lines until the run ends (works for a run driven by another process).
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    pub plan: PathBuf,
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Also ask the sidecars whether each task's job is offered by an eligible sidecar.
    #[arg(long)]
    pub online: bool,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// The sidecar's name in the fleet.
    pub sidecar: String,
    /// Fleet file (a `[fleet]` table).
    #[arg(long, env = "AGENTFLEET_FLEET")]
    pub fleet: PathBuf,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's working directory (certificates, configs, plan) here instead of a temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// The global `--home`, filled in by `main`.
    #[arg(skip)]
    pub home: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a private CA: DIR/ca.pem and DIR/ca.key.
    #[command(after_help = crate::pki::VALIDITY_HELP)]
    Init {
        dir: PathBuf,
        /// Days the CA is valid (default 10 years).
        #[arg(long, default_value_t = crate::pki::CA_VALIDITY_DAYS)]
        days: u32,
    },
    /// Issue DIR/NAME.pem and DIR/NAME.key for one role, signed by the CA in DIR.
    #[command(after_help = crate::pki::VALIDITY_HELP)]
    Issue {
        dir: PathBuf,
        /// The certificate's name: a sidecar's name, or the coordinator name a sidecar's
        /// `allow_clients` lists. One name cannot be both.
        name: String,
        /// A server certificate for a sidecar (serverAuth only).
        #[arg(
            long,
            conflicts_with = "coordinator",
            required_unless_present = "coordinator"
        )]
        sidecar: bool,
        /// A client certificate for a coordinator (clientAuth only).
        #[arg(long)]
        coordinator: bool,
        /// Host names or IPs the certificate is valid for besides NAME (repeatable);
        /// `localhost` and loopback addresses only when listed here.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Days the certificate is valid (default 2 years).
        #[arg(long, default_value_t = crate::pki::LEAF_VALIDITY_DAYS)]
        days: u32,
    },
    /// Revoke a certificate by NAME (every certificate issued under it) or SERIAL, and
    /// rewrite DIR/crl.pem for the sidecars' `[tls] crl`.
    Revoke {
        dir: PathBuf,
        /// A name given to `pki issue`, or a serial number (hex, as `pki issue` printed it).
        target: String,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    agentfleet_common::duration::parse(s)
}
