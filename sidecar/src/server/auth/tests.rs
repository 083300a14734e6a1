//! The decisions of `Authorize` on certificate identities, and the CRL re-read.
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};

use super::*;

fn identity(cn: &str, roles: &[(Role, &str)], serial: &str) -> CertIdentity {
    CertIdentity {
        common_name: Some(cn.to_owned()),
        roles: roles.iter().map(|(r, n)| (*r, (*n).to_owned())).collect(),
        serial: serial.to_owned(),
        not_after: i64::MAX,
        server_auth: false,
        client_auth: true,
    }
}

/// A CA in `dir` (`ca.pem`) that can sign CRLs.
fn ca(dir: &Path) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
    Issuer::new(params, key)
}

/// Writes `dir/crl.pem` revoking `serials` (hex), replacing the file as `pki revoke` does.
fn write_crl(dir: &Path, issuer: &Issuer<'static, KeyPair>, number: u64, serials: &[&str]) {
    let now = rcgen::date_time_ymd(2026, 1, 1);
    let revoked_certs = serials
        .iter()
        .map(|hex| RevokedCertParams {
            serial_number: SerialNumber::from_slice(
                &u64::from_str_radix(hex, 16).unwrap().to_be_bytes(),
            ),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let crl = CertificateRevocationListParams {
        this_update: now,
        next_update: rcgen::date_time_ymd(2036, 1, 1),
        crl_number: SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap();
    let temp = dir.join("crl.pem.tmp");
    std::fs::write(&temp, crl.pem().unwrap()).unwrap();
    std::fs::rename(temp, dir.join("crl.pem")).unwrap();
}

fn tls(dir: &Path, crl: Option<PathBuf>, revoked: &[&str]) -> TlsConfig {
    TlsConfig {
        cert: dir.join("unused.pem"),
        key: dir.join("unused.key"),
        client_ca: dir.join("ca.pem"),
        allow_clients: vec!["coordinator".into()],
        crl,
        revoked: revoked.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn decide(auth: &Authorize, id: &CertIdentity) -> Result<String, Status> {
    auth.check_identity(auth.mtls.as_ref().unwrap(), id)
}

#[test]
fn only_the_coordinator_role_in_allow_clients_passes() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path());
    let auth = Authorize::mtls("s1", &tls(dir.path(), None, &[])).unwrap();

    let ok = identity("coordinator", &[(Role::Coordinator, "coordinator")], "0a");
    assert_eq!(decide(&auth, &ok).unwrap(), "coordinator");

    // The reviewer's case: a sidecar's certificate named like the coordinator.
    let sidecar = identity("coordinator", &[(Role::Sidecar, "coordinator")], "0b");
    let refused = decide(&auth, &sidecar).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("is not a coordinator's"),
        "{refused:?}"
    );

    // An older version's certificate: only a common name.
    let legacy = identity("coordinator", &[], "0c");
    let refused = decide(&auth, &legacy).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("re-issue it with `coordinator pki issue DIR coordinator --coordinator`"),
        "{refused:?}"
    );

    // Both roles at once is neither.
    let both = identity(
        "coordinator",
        &[
            (Role::Coordinator, "coordinator"),
            (Role::Sidecar, "coordinator"),
        ],
        "0d",
    );
    assert!(decide(&auth, &both).is_err());

    let other = identity("ops", &[(Role::Coordinator, "ops")], "0e");
    let refused = decide(&auth, &other).unwrap_err();
    assert_eq!(
        refused.message(),
        "client certificate `ops` is not in allow_clients of sidecar `s1`"
    );
}

#[test]
fn revoked_names_and_serials_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path());
    let auth =
        Authorize::mtls("s1", &tls(dir.path(), None, &["00:0A", "old-coordinator"])).unwrap();
    let by_serial = identity("coordinator", &[(Role::Coordinator, "coordinator")], "0a");
    let refused = decide(&auth, &by_serial).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        "certificate `coordinator` (serial 0a) is revoked"
    );
    let by_name = identity(
        "old-coordinator",
        &[(Role::Coordinator, "old-coordinator")],
        "0b",
    );
    assert!(
        decide(&auth, &by_name)
            .unwrap_err()
            .message()
            .contains("is revoked")
    );
    let fine = identity("coordinator", &[(Role::Coordinator, "coordinator")], "0c");
    decide(&auth, &fine).unwrap();
}

#[test]
fn the_crl_is_re_read_when_it_changes_and_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = ca(dir.path());
    write_crl(dir.path(), &issuer, 1, &["0b"]);
    let crl = dir.path().join("crl.pem");
    let mut auth = Authorize::mtls("s1", &tls(dir.path(), Some(crl.clone()), &[])).unwrap();
    // Look at the file on every call here; the real interval only bounds the cost.
    Arc::get_mut(auth.mtls.as_mut().unwrap())
        .unwrap()
        .revocations
        .recheck_every(std::time::Duration::ZERO);
    let a = identity("coordinator", &[(Role::Coordinator, "coordinator")], "0a");
    let b = identity("coordinator", &[(Role::Coordinator, "coordinator")], "0b");
    decide(&auth, &a).unwrap();
    assert!(
        decide(&auth, &b)
            .unwrap_err()
            .message()
            .contains("serial 0b")
    );

    // Revoked after start: refused without a restart.
    write_crl(dir.path(), &issuer, 2, &["0b", "0a"]);
    assert!(
        decide(&auth, &a)
            .unwrap_err()
            .message()
            .contains("is revoked")
    );

    // A broken CRL refuses everyone rather than un-revoking anything.
    std::fs::write(&crl, "garbage").unwrap();
    let refused = decide(&auth, &a).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    write_crl(dir.path(), &issuer, 3, &[]);
    decide(&auth, &a).unwrap();
}

#[test]
fn a_crl_from_another_ca_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    ca(dir.path());
    let foreign = ca(other.path());
    write_crl(dir.path(), &foreign, 1, &["0a"]);
    let err = Authorize::mtls(
        "s1",
        &tls(dir.path(), Some(dir.path().join("crl.pem")), &[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not signed by the CA"), "{err}");
    let err = Authorize::mtls(
        "s1",
        &tls(dir.path(), Some(dir.path().join("none.pem")), &[]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("[tls] crl"), "{err}");
}

#[test]
fn the_interceptor_names_the_caller_and_audits_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    ca(dir.path());
    let log = dir.path().join("audit.log");
    let mut auth = Authorize::mtls("s1", &tls(dir.path(), None, &[]))
        .unwrap()
        .with_audit(AuditLog::with_limit(log.clone(), 1 << 20));
    // No TLS session, so no certificate: refused, and recorded with the method asked for.
    let mut request = Request::new(());
    request.extensions_mut().insert(CalledMethod(
        "/agentfleet.sidecar.v1.Sidecar/StartJob".into(),
    ));
    let refused = auth.call(request).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["call"], "StartJob", "{line}");
    assert_eq!(line["caller"], "no client certificate", "{line}");
    assert_eq!(line["answer"]["result"], "refused", "{line}");
    assert_eq!(line["answer"]["code"], "UNAUTHENTICATED", "{line}");

    // Insecure mode: the caller is local (by uid when the socket says it).
    let mut insecure = Authorize::insecure("s1");
    let allowed = insecure.call(Request::new(())).unwrap();
    assert_eq!(caller_of(&allowed), Caller("local".into()));
}
