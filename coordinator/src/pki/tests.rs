use std::fs;
use std::net::SocketAddr;

use agentfleet_common::tls::{self, identity::identity_from_pem};
use tonic::transport::{Channel, Server};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::*;

fn hosts(list: &[&str]) -> IssueOptions {
    IssueOptions::hosts(list.iter().copied())
}

fn new_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), CA_VALIDITY_DAYS).unwrap();
    dir
}

fn parsed(path: &Path) -> x509_parser::pem::Pem {
    let pem = fs::read(path).unwrap();
    x509_parser::pem::parse_x509_pem(&pem).unwrap().1
}

#[test]
fn init_refuses_to_overwrite_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let paths = init(dir.path(), CA_VALIDITY_DAYS).unwrap();
    assert!(paths.cert.exists() && paths.key.exists());
    // With an empty CRL, for sidecars' `[tls] crl` before anything is revoked.
    let crl = fs::read(dir.path().join(CRL_FILE)).unwrap();
    let ca = fs::read(&paths.cert).unwrap();
    assert!(tls::crl::revoked_serials(&crl, &ca).unwrap().is_empty());
    let err = init(dir.path(), CA_VALIDITY_DAYS).unwrap_err();
    assert!(matches!(err, PkiError::CaExists { .. }));
    assert!(err.to_string().contains("refusing to overwrite"));
}

#[test]
fn issue_without_a_ca_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let err = issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap_err();
    assert!(err.to_string().contains("coordinator pki init"), "{err}");
}

#[test]
fn names_and_hosts_are_validated() {
    for bad in ["", "../x", "a/b", "a\\b", "ca", ".hidden", "-x", "sp ace"] {
        assert!(validate_name(bad).is_err(), "{bad:?} accepted");
    }
    for good in ["sql1", "coordinator", "sql1.example.com", "etl_runner-2"] {
        validate_name(good).unwrap();
    }
    let dir = new_pki();
    let err = issue(dir.path(), "sql1", Role::Sidecar, &hosts(&["bad host"])).unwrap_err();
    assert!(matches!(err, PkiError::InvalidHost { .. }));
}

#[test]
fn sidecar_certificate_names_and_usages() {
    let dir = new_pki();
    let issued = issue(
        dir.path(),
        "sql1",
        Role::Sidecar,
        &hosts(&["sql1.example.com", "10.0.0.7", "[fd00::7]", "localhost"]),
    )
    .unwrap();
    assert_eq!(
        issued.hosts,
        [
            "sql1",
            "sql1.example.com",
            "10.0.0.7",
            "fd00::7",
            "localhost"
        ]
    );
    assert!(issued.replaced.is_none());
    assert!(
        issued.describe().starts_with("issued "),
        "{}",
        issued.describe()
    );

    let pem = parsed(&issued.paths.cert);
    let cert = pem.parse_x509().unwrap();
    let id = tls::identity::identity(&pem.contents).unwrap();
    assert_eq!(id.common_name.as_deref(), Some("sql1"));
    assert_eq!(id.roles, [(Role::Sidecar, "sql1".to_owned())]);
    assert_eq!(id.serial, issued.serial);
    // A sidecar certificate cannot be used as a client.
    assert!(id.server_auth && !id.client_auth);
    let ca = parsed(&dir.path().join("ca.pem"));
    let ca = ca.parse_x509().unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert!(ca.is_ca());

    let coordinator = issue(
        dir.path(),
        "coordinator",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    assert_eq!(coordinator.hosts, ["coordinator"]);
    let id = identity_from_pem(&fs::read(&coordinator.paths.cert).unwrap()).unwrap();
    assert_eq!(id.roles, [(Role::Coordinator, "coordinator".to_owned())]);
    assert!(id.client_auth && !id.server_auth);

    // Re-issuing renews in place, and says how to retire the old one.
    let renewed = issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap();
    assert_eq!(renewed.replaced.as_ref().unwrap().serial, issued.serial);
    assert!(
        renewed
            .describe()
            .contains(&format!("coordinator pki revoke DIR {}", issued.serial))
    );
}

#[test]
fn loopback_names_only_when_asked() {
    let dir = new_pki();
    let issued = issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap();
    assert_eq!(
        issued.hosts,
        ["sql1"],
        "no localhost, 127.0.0.1 or ::1 unasked"
    );
    let issued = issue(dir.path(), "sql2", Role::Sidecar, &hosts(&["127.0.0.1"])).unwrap();
    assert_eq!(issued.hosts, ["sql2", "127.0.0.1"]);
}

/// The reviewer's case: `pki issue DIR coordinator --sidecar` next to the coordinator's
/// certificate, and the other way round.
#[test]
fn a_name_cannot_hold_both_roles() {
    let dir = new_pki();
    let coordinator = issue(
        dir.path(),
        "coordinator",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    let err = issue(
        dir.path(),
        "coordinator",
        Role::Sidecar,
        &IssueOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, PkiError::NameTaken { taken: Role::Coordinator, serial, .. } if *serial == coordinator.serial),
        "{err}"
    );
    assert!(err.to_string().contains("names must differ"), "{err}");
    issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap();
    assert!(
        issue(
            dir.path(),
            "sql1",
            Role::Coordinator,
            &IssueOptions::default()
        )
        .is_err()
    );

    // Once revoked, the name is free again.
    revoke(dir.path(), "sql1").unwrap();
    issue(
        dir.path(),
        "sql1",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
}

/// A PKI directory from before the index: the role of `NAME.pem` is read from the file.
#[test]
fn a_directory_without_index_is_checked_from_its_files() {
    let dir = new_pki();
    issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap();
    fs::remove_file(dir.path().join(INDEX_FILE)).unwrap();
    assert!(matches!(
        issue(
            dir.path(),
            "sql1",
            Role::Coordinator,
            &IssueOptions::default()
        ),
        Err(PkiError::NameTaken { .. })
    ));
}

#[test]
fn concurrent_issues_keep_every_index_entry() {
    let dir = new_pki();
    std::thread::scope(|scope| {
        for i in 0..6 {
            let dir = dir.path();
            scope.spawn(move || {
                issue(
                    dir,
                    &format!("s{i}"),
                    Role::Sidecar,
                    &IssueOptions::default(),
                )
                .unwrap()
            });
        }
    });
    let index = fs::read_to_string(dir.path().join(INDEX_FILE)).unwrap();
    for i in 0..6 {
        assert!(
            index.contains(&format!("name = \"s{i}\"")),
            "s{i} lost:\n{index}"
        );
    }
}

#[test]
fn validity_is_configurable_within_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(init(dir.path(), 0), Err(PkiError::BadDays { .. })));
    init(dir.path(), 30).unwrap();
    let ca = identity_from_pem(&fs::read(dir.path().join("ca.pem")).unwrap()).unwrap();
    let days = |not_after: i64| (not_after - chrono::Utc::now().timestamp()) / 86_400;
    assert!(
        (29..=30).contains(&days(ca.not_after)),
        "{}",
        days(ca.not_after)
    );

    let options = IssueOptions {
        days: 7,
        ..IssueOptions::default()
    };
    let issued = issue(dir.path(), "sql1", Role::Sidecar, &options).unwrap();
    let id = identity_from_pem(&fs::read(&issued.paths.cert).unwrap()).unwrap();
    assert!((6..=7).contains(&days(id.not_after)));
    // The default (2 years) would outlive this CA.
    let err = issue(dir.path(), "sql2", Role::Sidecar, &IssueOptions::default()).unwrap_err();
    assert!(matches!(err, PkiError::OutlivesCa { .. }), "{err}");
}

#[test]
fn revoke_by_name_or_serial_writes_a_signed_crl() {
    let dir = new_pki();
    let old = issue(
        dir.path(),
        "ops",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    let new = issue(
        dir.path(),
        "ops",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    let other = issue(dir.path(), "sql1", Role::Sidecar, &IssueOptions::default()).unwrap();
    let ca_pem = fs::read(dir.path().join("ca.pem")).unwrap();
    let crl_of = || {
        let crl = fs::read(dir.path().join(CRL_FILE)).unwrap();
        tls::crl::revoked_serials(&crl, &ca_pem).unwrap()
    };

    // Rotation: the old serial only.
    let done = revoke(dir.path(), &old.serial.to_uppercase()).unwrap();
    assert_eq!(done.revoked.len(), 1);
    assert_eq!(crl_of(), [old.serial.clone()].into());

    // By name: every certificate of that name; revoking again changes nothing.
    let done = revoke(dir.path(), "ops").unwrap();
    assert_eq!(done.revoked[0].serial, new.serial);
    assert_eq!(done.already[0].serial, old.serial);
    assert_eq!(crl_of(), [old.serial.clone(), new.serial.clone()].into());
    assert!(!crl_of().contains(&other.serial));
    let again = revoke(dir.path(), "ops").unwrap();
    assert!(again.revoked.is_empty() && again.already.len() == 2);

    let err = revoke(dir.path(), "nobody").unwrap_err();
    assert!(matches!(err, PkiError::UnknownTarget { .. }), "{err}");

    // A CRL signed by another CA is not believed.
    let foreign = new_pki();
    let crl = fs::read(dir.path().join(CRL_FILE)).unwrap();
    let foreign_ca = fs::read(foreign.path().join("ca.pem")).unwrap();
    assert!(matches!(
        tls::crl::revoked_serials(&crl, &foreign_ca),
        Err(tls::crl::CrlError::NotSignedByCa { .. })
    ));
}

#[cfg(unix)]
#[test]
fn private_keys_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = init(dir.path(), CA_VALIDITY_DAYS).unwrap();
    let issued = issue(
        dir.path(),
        "coordinator",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    for key in [ca.key, issued.paths.key] {
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", key.display());
    }
}

/// A health-only gRPC server presenting `dir/sql1.pem` and requiring client certificates
/// from `dir/ca.pem`.
async fn serve(dir: &Path) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let config = tls::server_config(
        &dir.join("sql1.pem"),
        &dir.join("sql1.key"),
        &dir.join("ca.pem"),
    )
    .unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(config)
        .unwrap()
        .add_service(health)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = stopped.await;
            },
        );
    tokio::spawn(server);
    (addr, stop)
}

/// One health check as a client trusting `ca` and presenting `name`'s certificate.
/// Refusals of a client certificate show on the first call, not on connect.
async fn call(addr: SocketAddr, ca: &Path, dir: &Path, name: &str) -> Result<(), String> {
    let config = tls::client_config(
        ca,
        &dir.join(format!("{name}.pem")),
        &dir.join(format!("{name}.key")),
        None,
    )
    .map_err(|e| e.to_string())?;
    let channel = Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(config)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| format!("call: {e:?}"))
}

#[tokio::test]
async fn mtls_accepts_own_ca_and_refuses_another() {
    tls::install_crypto_provider();
    let fleet = new_pki();
    let other = new_pki();
    let loopback = hosts(&["127.0.0.1"]);
    issue(fleet.path(), "sql1", Role::Sidecar, &loopback).unwrap();
    issue(fleet.path(), "sql2", Role::Sidecar, &loopback).unwrap();
    issue(
        fleet.path(),
        "coordinator",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();
    issue(
        other.path(),
        "coordinator",
        Role::Coordinator,
        &IssueOptions::default(),
    )
    .unwrap();

    let (addr, stop) = serve(fleet.path()).await;
    let ca = fleet.path().join("ca.pem");
    call(addr, &ca, fleet.path(), "coordinator")
        .await
        .expect("a certificate from the fleet CA is accepted");
    let refused = call(addr, &ca, other.path(), "coordinator").await;
    assert!(
        refused.is_err(),
        "a certificate from another CA was accepted"
    );
    // A sidecar's certificate has no clientAuth: the handshake refuses it as a client.
    let refused = call(addr, &ca, fleet.path(), "sql2").await;
    assert!(
        refused.is_err(),
        "a sidecar certificate was accepted as a client"
    );
    // And the client refuses a server whose certificate another CA signed.
    let refused = call(
        addr,
        &other.path().join("ca.pem"),
        fleet.path(),
        "coordinator",
    )
    .await;
    assert!(refused.is_err(), "a server from another CA was trusted");
    let _ = stop.send(());
}
