//! `sqlagent-standin`: a TDS-speaking stand-in for SQL Server Agent, for tests and demos.
//!
//! tiberius connects to it for real (PRELOGIN, optional TLS, LOGIN7, SQL batches and RPCs), and
//! it answers agentfleet's catalogued queries (`-- agentfleet:<name>` markers) from a simulated
//! msdb that behaves like SQL Server Agent: asynchronous starts, one running instance per job,
//! history rows at step and job end, sessions per Agent start, 22022/14262/14258/14393/229.
//!
//! It is **not SQL Server**: it checks each catalogued batch with a T-SQL grammar against a
//! schema fixture of msdb / master (`tsql`: unknown columns, parameters, objects), but types,
//! conversions and built-in function semantics only a real server can check. Free-form SQL
//! gets a clear error.
//!
//! It also simulates the SSIS catalog (SSISDB, `ssisdb`): executions created, started,
//! followed and stopped through the catalog procedures and views, as Windows (NTLM) logins.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod config;
pub mod dispatch;
pub mod response;
mod server;
pub mod ssisdb;
pub mod tds;
pub mod tsql;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use agent::{Agent, AgentStatus, StopMode};
pub use config::JobsFile;
use tds::tls::TlsMaterial;
use tds::tokens::ServerMessage;

/// How requests fail while the "fail next N" knob is armed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailMode {
    /// Answer with this ERROR token instead of running the query.
    Error(ServerMessage),
    /// Close the connection without answering.
    Disconnect,
}

impl FailMode {
    /// Error 1222, what the sidecar's `SET LOCK_TIMEOUT` produces behind the row limiter.
    pub fn lock_timeout() -> Self {
        FailMode::Error(ServerMessage::new(
            1222,
            16,
            "Lock request time out period exceeded.",
        ))
    }
}

/// TLS choice for the listener.
#[derive(Clone, Default)]
pub enum TlsSetup {
    /// Plaintext only: clients must use `EncryptionLevel::NotSupported`
    /// (`encrypt=DANGER_PLAINTEXT`); others get tiberius's encryption-level error.
    None,
    /// A fresh self-signed certificate for `localhost`/`127.0.0.1` (clients use `trust_cert()`
    /// or trust [`Standin::cert_pem`]).
    #[default]
    SelfSigned,
    Provided(TlsMaterial),
}

pub struct StandinConfig {
    pub listen: SocketAddr,
    pub jobs: JobsFile,
    pub tls: TlsSetup,
}

/// A request as the stand-in received it (for tests that assert what a client sent).
#[derive(Debug, Clone)]
pub struct CapturedRequest {
    pub login: String,
    pub app_name: String,
    pub marker: Option<String>,
    pub sql: String,
    pub params: Vec<tds::rpc::Param>,
}

/// State shared by the listener, the connections and the control handle.
pub(crate) struct Shared {
    pub agent: Agent,
    pub jobs: JobsFile,
    pub tls: Option<TlsMaterial>,
    pub fail: Mutex<(u32, FailMode)>,
    pub drop_tx: watch::Sender<u64>,
    pub captured: Mutex<VecDeque<CapturedRequest>>,
    pub next_spid: std::sync::atomic::AtomicU16,
}

const CAPTURE_LIMIT: usize = 2000;

impl Shared {
    /// Consumes one armed failure, if any.
    pub fn take_failure(&self) -> Option<FailMode> {
        let mut f = self.fail.lock().unwrap_or_else(|p| p.into_inner());
        if f.0 == 0 {
            return None;
        }
        f.0 -= 1;
        Some(f.1.clone())
    }

    pub fn capture(&self, r: CapturedRequest) {
        let mut c = self.captured.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() == CAPTURE_LIMIT {
            c.pop_front();
        }
        c.push_back(r);
    }
}

/// A running stand-in. Dropping it stops the listener and every connection.
pub struct Standin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Standin {
    pub async fn start(config: StandinConfig) -> anyhow::Result<Self> {
        config.jobs.validate()?;
        let jobs = config
            .jobs
            .jobs
            .iter()
            .map(agent::steps::JobDef::from_config)
            .collect();
        let agent = Agent::new(config.jobs.agent.clone(), jobs, &config.jobs.ssis)?;
        let tls = match config.tls {
            TlsSetup::None => None,
            TlsSetup::SelfSigned => Some(TlsMaterial::self_signed()?),
            TlsSetup::Provided(m) => Some(m),
        };
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            agent,
            jobs: config.jobs,
            tls,
            fail: Mutex::new((0, FailMode::lock_timeout())),
            drop_tx: watch::channel(0).0,
            captured: Mutex::new(VecDeque::new()),
            next_spid: std::sync::atomic::AtomicU16::new(51),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(server::accept_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
        ));
        Ok(Self {
            addr,
            shared,
            shutdown,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulated Agent: snapshots of msdb and finer knobs.
    pub fn agent(&self) -> &Agent {
        &self.shared.agent
    }

    /// PEM of the server certificate (when TLS is on), to trust it as a CA bundle.
    pub fn cert_pem(&self) -> Option<String> {
        self.shared.tls.as_ref().map(|t| t.cert_pem.clone())
    }

    /// The simulated SSIS catalog: snapshots, injections and retention.
    pub fn catalog(&self) -> &ssisdb::Catalog {
        &self.shared.agent.catalog
    }

    pub fn stop_agent(&self, mode: StopMode) {
        self.shared.agent.stop_service(mode);
    }

    pub fn start_agent(&self) {
        self.shared.agent.start_service();
    }

    pub fn restart_agent(&self, mode: StopMode) {
        self.shared.agent.restart_service(mode);
    }

    /// Closes every client connection (mid-response or idle); clients see an I/O error.
    pub fn drop_connections(&self) {
        self.shared.drop_tx.send_modify(|g| *g += 1);
    }

    /// Makes the next `n` requests (any connection) fail with `mode`.
    pub fn fail_next(&self, n: u32, mode: FailMode) {
        *self.shared.fail.lock().unwrap_or_else(|p| p.into_inner()) = (n, mode);
    }

    /// Requests received so far (the most recent 2000).
    pub fn requests(&self) -> Vec<CapturedRequest> {
        let c = self
            .shared
            .captured
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.iter().cloned().collect()
    }

    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.shutdown.cancel();
        // Ends the simulated runs too, so no job task outlives the stand-in.
        self.shared.agent.stop_service(StopMode::Crash);
        self.shared.agent.catalog.shutdown();
    }
}
