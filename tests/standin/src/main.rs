//! `sqlagent-standin --listen ADDR --jobs FILE [--admin ADDR] [--no-tls]`
//!
//! Prints one JSON line `{"event":"listening","addr":"…"}` to stdout once bound; logs go to
//! stderr. A test stand-in for SQL Server Agent: it is not SQL Server.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use sqlagent_standin::{JobsFile, Standin, StandinConfig, TlsSetup, admin};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "TDS stand-in that simulates SQL Server Agent (not SQL Server)"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "SQLAGENT_STANDIN_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The jobs file (TOML): logins, Agent settings, jobs.
    #[arg(long, env = "SQLAGENT_STANDIN_JOBS")]
    jobs: PathBuf,
    /// Optional line-based admin socket (see README): agent stop|start|restart, drop, fail N.
    #[arg(long, env = "SQLAGENT_STANDIN_ADMIN")]
    admin: Option<SocketAddr>,
    /// Plaintext only: clients must use encrypt=DANGER_PLAINTEXT / EncryptionLevel::NotSupported.
    #[arg(long)]
    no_tls: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let jobs = JobsFile::load(&cli.jobs)?;
    let standin = std::sync::Arc::new(
        Standin::start(StandinConfig {
            listen: cli.listen,
            jobs,
            tls: if cli.no_tls {
                TlsSetup::None
            } else {
                TlsSetup::SelfSigned
            },
        })
        .await?,
    );
    let mut event = serde_json::json!({"event": "listening", "addr": standin.addr().to_string()});
    if let Some(a) = cli.admin {
        let bound = admin::spawn(a, standin.clone()).await?;
        event["admin"] = serde_json::Value::String(bound.to_string());
    }
    println!("{event}");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
