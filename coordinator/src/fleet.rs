//! The fleet at run time: one gRPC channel per sidecar (mTLS unless the fleet is
//! explicitly insecure on loopback), and what each sidecar said about itself.
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use agentfleet_common::proto::{self, sidecar_client::SidecarClient};
use tonic::transport::{Channel, Endpoint};

use crate::fleet_config::FleetConfig;

/// How long to wait for a sidecar to answer Describe/ListJobs when taking stock.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("sidecar `{name}`: endpoint `{endpoint}` is not a valid URI: {reason}")]
    BadEndpoint {
        name: String,
        endpoint: String,
        reason: String,
    },
    #[error("fleet TLS: {0}")]
    Tls(#[from] agentfleet_common::tls::TlsError),
    #[error("sidecar `{name}`: TLS setup failed: {reason}")]
    TlsSetup { name: String, reason: String },
}

/// A connected (lazily: the channel reconnects by itself) sidecar.
#[derive(Clone)]
pub struct Sidecar {
    pub name: String,
    pub endpoint: String,
    pub client: SidecarClient<Channel>,
}

/// What a sidecar reported when the fleet was probed.
#[derive(Debug, Clone, Default)]
pub struct SidecarInfo {
    pub reachable: bool,
    /// Why it is unreachable, with a hint.
    pub error: Option<String>,
    pub describe: Option<proto::DescribeResponse>,
    pub jobs: Vec<proto::Job>,
}

impl SidecarInfo {
    pub fn offers(&self) -> HashSet<String> {
        self.jobs.iter().map(|j| j.name.clone()).collect()
    }
}

/// Builds one lazily connected client per sidecar of the fleet.
pub fn connect(config: &FleetConfig) -> Result<Vec<Sidecar>, FleetError> {
    let mut out = Vec::new();
    for (name, entry) in &config.sidecars {
        let bad = |reason: String| FleetError::BadEndpoint {
            name: name.clone(),
            endpoint: entry.endpoint.clone(),
            reason,
        };
        let channel = match crate::fleet_config::unix_endpoint(&entry.endpoint) {
            Some(path) => unix_channel(path),
            None => tcp_channel(config, name, &entry.endpoint, entry.tls_name.as_deref()).map_err(
                |e| match e {
                    FleetError::BadEndpoint { reason, .. } => bad(reason),
                    other => other,
                },
            )?,
        };
        out.push(Sidecar {
            name: name.clone(),
            endpoint: entry.endpoint.clone(),
            client: SidecarClient::new(channel)
                .max_decoding_message_size(64 * 1024 * 1024)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
        });
    }
    Ok(out)
}

/// The HTTP/2 settings of every connection to a sidecar.
fn endpoint_settings(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
}

/// A lazily connected channel to `https://host:port` with the fleet's mTLS.
fn tcp_channel(
    config: &FleetConfig,
    name: &str,
    text: &str,
    tls_name: Option<&str>,
) -> Result<Channel, FleetError> {
    let mut endpoint = endpoint_settings(Endpoint::from_shared(text.to_owned()).map_err(|e| {
        FleetError::BadEndpoint {
            name: name.to_owned(),
            endpoint: text.to_owned(),
            reason: e.to_string(),
        }
    })?);
    if let Some(tls) = &config.tls {
        let tls_config =
            agentfleet_common::tls::client_config(&tls.ca, &tls.cert, &tls.key, tls_name)?;
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|e| FleetError::TlsSetup {
                name: name.to_owned(),
                reason: e.to_string(),
            })?;
    }
    Ok(endpoint.connect_lazy())
}

/// A lazily connected plaintext channel to a local sidecar's Unix socket (insecure mode;
/// the sidecar checks that this process runs as its user).
fn unix_channel(path: PathBuf) -> Channel {
    // The URI is only a placeholder: the connector decides where to connect.
    let endpoint = endpoint_settings(Endpoint::from_static("http://localhost"));
    #[cfg(unix)]
    {
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        });
        endpoint.connect_with_connector_lazy(connector)
    }
    // The fleet loader refuses unix: endpoints elsewhere; this channel never connects.
    #[cfg(not(unix))]
    {
        let _ = path;
        endpoint.connect_lazy()
    }
}

/// Asks every sidecar (concurrently) who it is and which jobs it offers.
pub async fn probe(sidecars: &[Sidecar]) -> BTreeMap<String, SidecarInfo> {
    let probes = sidecars.iter().map(|s| async move {
        let mut client = s.client.clone();
        let result = tokio::time::timeout(PROBE_TIMEOUT, async {
            let describe = client.describe(proto::DescribeRequest {}).await?.into_inner();
            let jobs = client.list_jobs(proto::ListJobsRequest {}).await?.into_inner();
            Ok::<_, tonic::Status>((describe, jobs.jobs))
        })
        .await;
        let info = match result {
            Ok(Ok((describe, jobs))) => SidecarInfo {
                reachable: true,
                error: None,
                describe: Some(describe),
                jobs,
            },
            Ok(Err(status)) => SidecarInfo {
                error: Some(explain_status(&s.name, &s.endpoint, &status)),
                ..Default::default()
            },
            Err(_) => SidecarInfo {
                error: Some(format!(
                    "sidecar `{}` at {} did not answer within {}s: is it running and is the port open?",
                    s.name,
                    s.endpoint,
                    PROBE_TIMEOUT.as_secs()
                )),
                ..Default::default()
            },
        };
        (s.name.clone(), info)
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .collect()
}

/// A gRPC failure talking to a sidecar, in words that say what to check.
pub fn explain_status(name: &str, endpoint: &str, status: &tonic::Status) -> String {
    let detail = status_detail(status);
    let lower = detail.to_ascii_lowercase();
    let hint = match status.code() {
        // Only for that refusal: a revoked or role-less certificate says itself what to do.
        tonic::Code::PermissionDenied if detail.contains("allow_clients") => {
            "; add this coordinator's certificate name to the sidecar's `allow_clients`"
        }
        tonic::Code::PermissionDenied => "",
        _ if lower.contains("certificate")
            || lower.contains("handshake")
            || lower.contains("tls") =>
        {
            "; were both certificates issued by the same CA (see `coordinator pki issue`), and does the sidecar certificate name this host?"
        }
        tonic::Code::Unavailable => "; is the sidecar running, and is the endpoint right?",
        _ => "",
    };
    format!("sidecar `{name}` at {endpoint}: {detail}{hint}")
}

/// The innermost useful text of a status (transport errors nest their causes).
pub fn status_detail(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let s = err.to_string();
        if !text.contains(&s) {
            text = format!("{text}: {s}");
        }
        source = err.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}
