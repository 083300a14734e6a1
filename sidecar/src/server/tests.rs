//! In-process gRPC tests on port 0 with real mTLS (certificates made with rcgen).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentfleet_common::proto::{self, Outcome, event::Kind, sidecar_client::SidecarClient};
use futures::StreamExt;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::*;
use crate::config::TlsConfig;
use crate::executions::fake_backend::FakeBackend;

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for localhost / 127.0.0.1, and coordinator client
    /// certificates.
    fn new(dir: &Path, clients: &[&str]) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(sans).unwrap();
            if usage == ExtendedKeyUsagePurpose::ClientAuth {
                // The role URI the sidecar authorizes clients by.
                let uri = agentfleet_common::tls::Role::Coordinator.uri(name);
                p.subject_alt_names
                    .push(rcgen::SanType::URI(uri.try_into().unwrap()));
            }
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf(
            "sidecar",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        for c in clients {
            leaf(
                c,
                vec![(*c).to_owned()],
                ExtendedKeyUsagePurpose::ClientAuth,
            );
        }
        Self {
            dir: dir.to_owned(),
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    async fn channel(&self, addr: SocketAddr, client: Option<&str>) -> Channel {
        let tls = match client {
            Some(name) => agentfleet_common::tls::client_config(
                &self.path("ca.pem"),
                &self.path(&format!("{name}.pem")),
                &self.path(&format!("{name}.key")),
                Some("localhost"),
            )
            .unwrap(),
            None => ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(
                    std::fs::read(self.path("ca.pem")).unwrap(),
                ))
                .domain_name("localhost"),
        };
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_lazy()
    }
}

fn config(dir: &Path, tls: Option<TlsConfig>) -> SidecarConfig {
    // Without TLS, the sidecar serves a Unix socket only (insecure mode).
    let listen = match &tls {
        Some(_) => "127.0.0.1:0".to_owned(),
        None => format!("unix:{}", dir.join("sidecar.sock").display()),
    };
    SidecarConfig {
        source: dir.join("sidecar.toml"),
        name: "test".into(),
        listen,
        slots: 2,
        state_dir: dir.join("state"),
        insecure: tls.is_none(),
        stop_grace: Duration::from_secs(1),
        tls,
        telemetry: Default::default(),
        sqlagent: None,
        ssis: None,
        catalog_jobs: Vec::new(),
        jobs: Vec::new(),
        log_format: Default::default(),
        supervisor: Default::default(),
    }
}

/// Starts the server on port 0; returns its address, the shutdown token and the task.
async fn spawn(
    config: SidecarConfig,
) -> (
    SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ServeError>>,
) {
    agentfleet_common::tls::install_crypto_provider();
    let listener = bind(&config).await.unwrap();
    let addr = match &listener {
        Bound::Tcp(l) => l.local_addr().unwrap(),
        Bound::Unix(..) => SocketAddr::from(([127, 0, 0, 1], 0)), // see `unix_channel`
    };
    let backend: Arc<dyn Backend> = Arc::new(FakeBackend::new(&["a", "b"]));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move {
        let lock = crate::state_lock::StateDirLock::acquire(&config.state_dir)?;
        serve(&config, &lock, vec![backend], listener, token).await
    });
    (addr, shutdown, task)
}

fn start(id: &str, job: &str) -> proto::StartJobRequest {
    proto::StartJobRequest {
        execution_id: id.into(),
        job: job.into(),
        run_id: "run".into(),
        task: "task".into(),
        attempt: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn mtls_allowed_client_works_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["coordinator", "intruder"]);
    let tls = TlsConfig {
        cert: pki.path("sidecar.pem"),
        key: pki.path("sidecar.key"),
        client_ca: pki.path("ca.pem"),
        allow_clients: vec!["coordinator".into()],
        crl: None,
        revoked: Vec::new(),
    };
    let (addr, shutdown, server) = spawn(config(dir.path(), Some(tls))).await;

    let channel = pki.channel(addr, Some("coordinator")).await;
    let mut health = HealthClient::new(channel.clone());
    let serving = health
        .check(HealthCheckRequest {
            service: "agentfleet.sidecar.v1.Sidecar".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        serving.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut client = SidecarClient::new(channel);
    let describe = client
        .describe(proto::DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(describe.name, "test");
    assert_eq!(describe.backends, vec!["command"]);
    assert_eq!(describe.slots, 2);

    let ex1 = agentfleet_common::ids::execution_id_from_label("ex1");
    let started = client
        .start_job(start(&ex1, "a"))
        .await
        .unwrap()
        .into_inner();
    assert!(started.created);
    let again = client
        .start_job(start(&ex1, "a"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let running = client
        .list_executions(proto::ListExecutionsRequest { running_only: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(running.executions.len(), 1);
    assert_eq!(running.executions[0].run_id, "run");

    let mut events = client
        .watch(proto::WatchRequest {
            execution_id: ex1.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let first = events.next().await.unwrap().unwrap();
    assert!(matches!(first.kind, Some(Kind::Accepted(_))));
    client
        .stop_job(proto::StopJobRequest {
            execution_id: ex1.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let rest: Vec<proto::Event> = events.map(|e| e.unwrap()).collect().await;
    let Some(Kind::Finished(f)) = &rest.last().unwrap().kind else {
        panic!("the stream ends with Finished")
    };
    assert_eq!(f.outcome, Outcome::Canceled as i32);
    let pruned = client
        .ack_executions(proto::AckExecutionsRequest {
            execution_ids: vec![ex1.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pruned.pruned, 1);
    let gone = client
        .watch(proto::WatchRequest {
            execution_id: ex1.clone(),
            after_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    // A certificate from the same CA whose name is not allowed.
    let mut intruder = SidecarClient::new(pki.channel(addr, Some("intruder")).await);
    let denied = intruder
        .describe(proto::DescribeRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        denied.message(),
        "client certificate `intruder` is not in allow_clients of sidecar `test`"
    );

    // No client certificate: the TLS handshake fails, seen on the first call.
    let mut anonymous = SidecarClient::new(pki.channel(addr, None).await);
    assert!(anonymous.describe(proto::DescribeRequest {}).await.is_err());

    // Shutdown stops a running execution and ends in time.
    let ex2 = agentfleet_common::ids::execution_id_from_label("ex2");
    client.start_job(start(&ex2, "b")).await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let registry = Registry::open("test", 1, &dir.path().join("state"), Vec::new())
        .await
        .unwrap();
    assert_eq!(
        registry.get(&ex2).unwrap().outcome,
        Outcome::Canceled as i32
    );
}

/// A plaintext channel to the sidecar's Unix socket (insecure mode).
fn unix_channel(path: PathBuf) -> Channel {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Endpoint::from_static("http://localhost").connect_with_connector_lazy(connector)
}

#[tokio::test]
async fn insecure_mode_serves_plaintext_with_reflection_on_a_unix_socket_only() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), None);
    let socket = dir.path().join("sidecar.sock");
    // TCP without TLS is never served, even if the config loader were bypassed.
    let mut tcp = config.clone();
    tcp.listen = "127.0.0.1:0".into();
    let (_, _stop, refused) = spawn(tcp).await;
    let err = refused.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("plaintext is served on a Unix socket only"),
        "{err}"
    );

    let (_, shutdown, server) = spawn(config).await;
    // The socket is this user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let channel = unix_channel(socket);
    let mut client = SidecarClient::new(channel.clone());
    assert_eq!(
        client
            .describe(proto::DescribeRequest {})
            .await
            .unwrap()
            .into_inner()
            .name,
        "test"
    );
    // No certificate here: the caller is named by the socket's peer credentials, in the
    // execution and in the audit log.
    let me = format!("local uid {}", nix::unistd::geteuid().as_raw());
    let started = client
        .start_job(start(&agentfleet_common::ids::new_execution_id(), "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.execution.unwrap().started_by, me);
    let audit = std::fs::read_to_string(dir.path().join("state").join(crate::audit::FILE)).unwrap();
    let line: serde_json::Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(line["caller"], me.as_str(), "{line}");
    assert_eq!(line["peer"], "unix", "{line}");
    assert_eq!(line["answer"]["result"], "created", "{line}");

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"agentfleet.sidecar.v1.Sidecar".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
