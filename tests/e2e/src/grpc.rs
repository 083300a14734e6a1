//! A wire-level client of one sidecar, with mTLS from the test PKI.
use std::path::Path;
use std::time::Duration;

use agentfleet_common::proto::sidecar_client::SidecarClient;
use agentfleet_common::proto::{Event, WatchRequest, event};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pki::CertPair;
use crate::sidecar::Sidecar;

/// How long a gRPC call may take in a test.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of `sidecar` that trusts `ca` and presents `client`.
pub async fn client(sidecar: &Sidecar, ca: &Path, client: &CertPair) -> SidecarClient<Channel> {
    SidecarClient::new(channel(sidecar, ca, client))
}

/// A channel to `sidecar` with mTLS, for the other services it serves (health, reflection).
pub fn channel(sidecar: &Sidecar, ca: &Path, client: &CertPair) -> Channel {
    let tls = agentfleet_common::tls::client_config(ca, &client.cert, &client.key, None)
        .unwrap_or_else(|e| panic!("client TLS config: {e}"));
    lazy_channel(sidecar, tls)
}

/// A client of `sidecar` that trusts `ca` but presents no certificate at all.
pub async fn anonymous_client(sidecar: &Sidecar, ca: &Path) -> SidecarClient<Channel> {
    let pem = std::fs::read(ca).unwrap_or_else(|e| panic!("read {}: {e}", ca.display()));
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
    SidecarClient::new(lazy_channel(sidecar, tls))
}

/// Connects lazily: with mTLS a refused client certificate only shows on the first call,
/// so tests look at calls, not at connecting.
fn lazy_channel(sidecar: &Sidecar, tls: ClientTlsConfig) -> Channel {
    Endpoint::from_shared(sidecar.endpoint())
        .expect("a valid endpoint")
        .tls_config(tls)
        .expect("a valid TLS config")
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy()
}

/// Watches `execution_id` from the start until the stream ends (after `Finished`), within
/// `timeout`. Panics on an error or when the deadline passes.
pub async fn watch_to_end(
    client: &mut SidecarClient<Channel>,
    execution_id: &str,
    timeout: Duration,
) -> Vec<Event> {
    watch_after(client, execution_id, 0, timeout).await
}

/// Like [`watch_to_end`], for the events with `seq > after_seq`.
pub async fn watch_after(
    client: &mut SidecarClient<Channel>,
    execution_id: &str,
    after_seq: u64,
    timeout: Duration,
) -> Vec<Event> {
    let watch = async {
        let mut stream = client
            .watch(WatchRequest {
                execution_id: execution_id.to_owned(),
                after_seq,
            })
            .await
            .unwrap_or_else(|s| panic!("Watch({execution_id}) failed: {s:?}"))
            .into_inner();
        let mut events = Vec::new();
        while let Some(event) = stream.message().await.unwrap_or_else(|s| {
            panic!(
                "Watch({execution_id}) stream failed after {} events: {s:?}",
                events.len()
            )
        }) {
            events.push(event);
        }
        events
    };
    tokio::time::timeout(timeout, watch)
        .await
        .unwrap_or_else(|_| panic!("Watch({execution_id}) did not end within {timeout:?}"))
}

/// The `Finished` event among `events`, if any.
pub fn finished(events: &[Event]) -> Option<&agentfleet_common::proto::Finished> {
    events.iter().find_map(|e| match &e.kind {
        Some(event::Kind::Finished(f)) => Some(f),
        _ => None,
    })
}
