//! The gRPC server: the `agentfleet.sidecar.v1.Sidecar` service over mTLS, with client
//! authorization (coordinator role, `allow_clients`, revocation: see `auth`), standard
//! health checking and server reflection.
//!
//! Shutdown, in order and bounded: report NOT_SERVING, refuse new starts, hand running
//! command jobs (to their supervisors) and SQL Server Agent jobs (to the next start) over,
//! stop other running executions and wait for their Finished events (`stop_grace` + 5s),
//! end open Watch streams, then close the listener and connections (5s more at most).
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, sidecar_server::SidecarServer};
use agentfleet_common::tls::TlsError;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::transport::Server;

use crate::backend::{Backend, BackendError};
use crate::config::SidecarConfig;
use crate::executions::{Registry, RegistryError};
use crate::state_lock::StateDirLock;

mod auth;
mod listener;
#[cfg(unix)]
mod local;
mod service;
mod tls;

pub use auth::Authorize;
pub use service::SidecarService;

/// Extra time, beyond `stop_grace`, that stopped executions get to report Finished.
const FINISH_MARGIN: Duration = Duration::from_secs(5);
/// Time the transport gets to close connections after the executions are done.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// HTTP/2 ping interval on idle connections, and how long a ping may go unanswered.
const HTTP2_KEEPALIVE: Duration = Duration::from_secs(30);
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Concurrent streams on one connection: a coordinator holds one Watch per execution it
/// follows here, so this bounds a client, not the slots.
const MAX_STREAMS_PER_CONNECTION: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "failed to listen on `{addr}`: {source}; is another process using the port? (change `listen` or pass --listen)"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("failed to set up TLS: {0}")]
    TlsSetup(#[from] tls::TlsSetupError),
    #[error(transparent)]
    Crl(#[from] auth::CrlError),
    #[error("failed to configure the gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("failed to set up server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    StateDir(#[from] crate::state_lock::StateLockError),
    #[error("failed to open the execution journal: {0}")]
    Registry(#[from] RegistryError),
    #[error("failed to set up the {backend} backend: {source}")]
    Backend {
        backend: &'static str,
        source: BackendError,
    },
    #[error("the gRPC server stopped: {0}")]
    Stopped(String),
}

/// What the sidecar listens on: TCP with mTLS, or (insecure mode) a Unix socket.
pub enum Bound {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl From<TcpListener> for Bound {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl Bound {
    /// `127.0.0.1:7443`, or `unix:/path` (what the `listening` line says).
    fn describe(&self) -> std::io::Result<String> {
        match self {
            Self::Tcp(l) => Ok(l.local_addr()?.to_string()),
            #[cfg(unix)]
            Self::Unix(_, path) => Ok(format!("unix:{}", path.display())),
        }
    }
}

/// Binds the configured `listen` address.
pub async fn bind(config: &SidecarConfig) -> Result<Bound, ServeError> {
    let failed = |source| ServeError::Bind {
        addr: config.listen.clone(),
        source,
    };
    #[cfg(unix)]
    if let Some(path) = crate::config::unix_socket_path(&config.listen) {
        let listener = local::bind(&path).map_err(failed)?;
        return Ok(Bound::Unix(listener, path.to_path_buf()));
    }
    TcpListener::bind(&config.listen)
        .await
        .map(Bound::Tcp)
        .map_err(failed)
}

/// The backends the config asks for: command jobs when there are any, SQL Server Agent
/// when `[sqlagent]` is present, SSIS catalog jobs when there are any.
pub async fn backends(config: &SidecarConfig) -> Result<Vec<Arc<dyn Backend>>, ServeError> {
    let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
    // One catalog poller per server, for catalog jobs and Agent SSIS steps alike.
    let followers: Arc<crate::backend::ssis::follower::Followers> = Arc::default();
    if !config.jobs.is_empty() {
        backends.push(Arc::new(crate::backend::command::CommandBackend::new(
            config.jobs.clone(),
            config.stop_grace,
        )));
    }
    if let Some(sql) = &config.sqlagent {
        let backend = crate::backend::sqlagent::SqlAgentBackend::connect_with(
            sql,
            &config.state_dir,
            followers.clone(),
        )
        .await
        .map_err(|source| ServeError::Backend {
            backend: "sqlagent",
            source,
        })?;
        backends.push(Arc::new(backend));
    }
    if !config.catalog_jobs.is_empty() {
        let conn = crate::backend::ssis::config::connection(
            config.ssis.as_ref(),
            config.sqlagent.as_ref(),
        )
        .ok_or_else(|| ServeError::Backend {
            backend: "ssis",
            source: crate::backend::BackendError::InvalidArgument(
                "catalog jobs need an [ssis] or [sqlagent] connection".into(),
            ),
        })?;
        let backend = crate::backend::ssis::CatalogBackend::new(
            config.catalog_jobs.clone(),
            conn,
            &config.state_dir,
            followers,
        )
        .map_err(|source| ServeError::Backend {
            backend: "ssis",
            source,
        })?;
        backends.push(Arc::new(backend));
    }
    Ok(backends)
}

/// `sidecar serve`: locks the state directory, binds, builds the backends and serves until
/// `shutdown`.
pub async fn run(config: SidecarConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    // First: nothing (the SQL Server Agent ledger included) touches a state_dir that
    // another sidecar holds.
    let state_lock = StateDirLock::acquire(&config.state_dir)?;
    if let Some(limit) = listener::raise_fd_limit() {
        tracing::debug!(limit, "open-file limit");
    }
    let listener = bind(&config).await?;
    let addr = listener.describe().map_err(|source| ServeError::Bind {
        addr: config.listen.clone(),
        source,
    })?;
    let backends = backends(&config).await?;
    // Announced once the port is bound: connections queue until `serve` accepts them.
    announce(&config.name, &addr);
    serve(&config, &state_lock, backends, listener, shutdown).await
}

/// The line the end-to-end harness (and people) read to learn the bound address.
fn announce(name: &str, addr: &str) {
    let line = serde_json::json!({"event": "listening", "name": name, "addr": addr});
    println!("{line}");
}

/// Serves on `listener` until `shutdown` is cancelled, then shuts down in order (see the
/// module docs). Prints one `{"event":"listening",...}` line on stdout once ready.
/// `state_lock` is the proof that this process alone uses `config.state_dir`.
pub async fn serve(
    config: &SidecarConfig,
    state_lock: &StateDirLock,
    backends: Vec<Arc<dyn Backend>>,
    listener: impl Into<Bound>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let listener = listener.into();
    debug_assert_eq!(state_lock.dir(), config.state_dir);
    // TLS or nothing on TCP; plaintext only on a Unix socket (the config loader says so
    // too: this holds for callers that build a config in code).
    let (acceptor, authorize) = match (&config.tls, config.insecure, &listener) {
        (Some(tls), false, Bound::Tcp(_)) => (
            Some(tls::acceptor(&tls.cert, &tls.key, &tls.client_ca)?),
            Authorize::mtls(&config.name, tls)?,
        ),
        #[cfg(unix)]
        (_, true, Bound::Unix(..)) => {
            tracing::warn!(listen = %config.listen, "insecure = true: plaintext gRPC on a Unix socket, for this user's processes only");
            (None, Authorize::insecure(&config.name))
        }
        _ => {
            return Err(ServeError::Stopped(format!(
                "`{}` with insecure = {}: plaintext is served on a Unix socket only, and TLS on TCP only",
                config.listen, config.insecure
            )));
        }
    };
    let settings = crate::executions::Settings {
        name: config.name.clone(),
        slots: config.slots,
        state_dir: config.state_dir.clone(),
        supervisor: config.supervisor.clone(),
    };
    let registry = Registry::open_with(settings, backends).await?;
    let audit = crate::audit::AuditLog::open(&config.state_dir);
    let authorize = authorize.with_audit(audit.clone());
    let telemetry = crate::telemetry::start(config, &registry, &shutdown).await?;
    let pruner_stop = CancellationToken::new();
    let pruner = registry.spawn_pruner(pruner_stop.clone());

    let sidecar_name = <SidecarServer<SidecarService> as NamedService>::NAME;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(sidecar_name, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let sidecar =
        SidecarServer::with_interceptor(SidecarService::new(registry.clone(), audit), authorize);
    let addr = listener.describe().map_err(|source| ServeError::Bind {
        addr: config.listen.clone(),
        source,
    })?;

    // A peer that vanished without closing is noticed by HTTP/2 pings (and TCP keepalive,
    // see `listener`); streams per connection are capped.
    // Every call is tagged with its method first, so that a refused one is audited by name.
    let router = Server::builder()
        .layer(tower::util::MapRequestLayer::new(auth::tag_method))
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(sidecar);
    let close = CancellationToken::new();
    let closed = close.clone().cancelled_owned();
    let limits = listener::Limits::default();
    let mut server = match (listener, acceptor) {
        (Bound::Tcp(listener), Some(acceptor)) => {
            tokio::spawn(router.serve_with_incoming_shutdown(
                listener::tls(listener, acceptor, limits, close.clone()),
                closed,
            ))
        }
        #[cfg(unix)]
        (Bound::Unix(listener, _), None) => tokio::spawn(router.serve_with_incoming_shutdown(
            local::incoming(listener, limits, close.clone()),
            closed,
        )),
        // Refused above.
        _ => {
            return Err(ServeError::Stopped(
                "no TLS on a Unix socket, no plaintext on TCP".into(),
            ));
        }
    };
    tracing::info!(name = %config.name, %addr, slots = config.slots, "sidecar listening");
    crate::service::notify::ready(&addr);

    let early = tokio::select! {
        () = shutdown.cancelled() => None,
        ended = &mut server => Some(ended),
    };
    if let Some(ended) = early {
        pruner_stop.cancel();
        let why = match ended {
            Ok(Ok(())) => "the server ended by itself".to_owned(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        registry.shutdown(config.stop_grace + FINISH_MARGIN).await;
        telemetry.shutdown().await;
        return Err(ServeError::Stopped(why));
    }

    tracing::info!("shutting down: reporting NOT_SERVING and stopping running executions");
    crate::service::notify::stopping();
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    health
        .set_service_status(sidecar_name, tonic_health::ServingStatus::NotServing)
        .await;
    pruner_stop.cancel();
    registry.shutdown(config.stop_grace + FINISH_MARGIN).await;
    close.cancel();
    match tokio::time::timeout(CLOSE_GRACE, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the gRPC server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "the gRPC server task failed"),
        Err(_) => {
            tracing::warn!("connections did not close in time; closing them now");
            server.abort();
        }
    }
    let _ = pruner.await;
    // Last, so the Finished events of stopped executions are exported too (bounded).
    telemetry.shutdown().await;
    tracing::info!("sidecar stopped");
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tls_fuzz_tests;
