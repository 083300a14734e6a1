//! `coordinator pki`: a private CA and the certificates of a fleet, so mTLS works without
//! openssl. `init` creates `DIR/ca.pem` + `DIR/ca.key`; `issue` writes `DIR/NAME.pem` +
//! `DIR/NAME.key`, signed by that CA. The certificate's subject common name is NAME: what a
//! sidecar's `allow_clients` matches.
//!
//! Keys are ECDSA P-256. Private keys are written with mode 0600 on Unix.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// How long the CA is valid, in days (10 years).
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long an issued certificate is valid, in days (2 years).
pub const LEAF_VALIDITY_DAYS: i64 = 730;
/// For the CLI help of `pki init` / `pki issue`.
pub const VALIDITY_HELP: &str = "The CA is valid for 10 years, issued certificates for 2 years \
     (re-run `coordinator pki issue` to renew one; the CA stays the same).";
/// Names every sidecar certificate is valid for unless told otherwise, so a sidecar can be
/// reached on the machine it runs on.
pub const DEFAULT_SIDECAR_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves the wire API (serverAuth); also allowed as a client (clientAuth), which is harmless.
    Sidecar,
    /// Calls sidecars (clientAuth).
    Coordinator,
}

/// A certificate and its private key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What `issue` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    pub paths: PkiPaths,
    /// The subject common name (what `allow_clients` matches).
    pub name: String,
    /// The subject alternative names: DNS names and IP addresses, in order.
    pub hosts: Vec<String>,
    /// Last day of validity (UTC), `YYYY-MM-DD`.
    pub not_after: String,
    /// True when an older certificate of the same name was replaced.
    pub replaced: bool,
}

impl Issued {
    /// One line for people: what was written, for which names, until when.
    pub fn describe(&self) -> String {
        format!(
            "{} {} and {} for `{}` (names: {}; valid until {})",
            if self.replaced { "replaced" } else { "issued" },
            self.paths.cert.display(),
            self.paths.key.display(),
            self.name,
            if self.hosts.is_empty() {
                "none".to_owned()
            } else {
                self.hosts.join(", ")
            },
            self.not_after
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "a CA already exists in `{}`; refusing to overwrite it, since every certificate it \
         issued would stop being trusted. Issue certificates from it with `coordinator pki issue`, \
         or choose another directory (delete ca.pem and ca.key only to start over)",
        dir.display()
    )]
    CaExists { dir: PathBuf },
    #[error(
        "no CA in `{}` (expected ca.pem and ca.key): create one with `coordinator pki init {}`",
        dir.display(),
        dir.display()
    )]
    NoCa { dir: PathBuf },
    #[error("`{name}` is not a usable certificate name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("`{host}` is neither a DNS name nor an IP address")]
    InvalidHost { host: String },
    #[error("failed to {what} `{}`: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to {what}: {source}")]
    Crypto {
        what: &'static str,
        source: rcgen::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_owned();
    move |source| PkiError::Io { what, path, source }
}

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Crypto { what, source }
}

/// Creates a private CA in `dir` (created if missing). Refuses to replace an existing CA.
pub fn init(dir: &Path) -> Result<PkiPaths, PkiError> {
    let paths = ca_paths(dir);
    if paths.cert.exists() || paths.key.exists() {
        return Err(PkiError::CaExists {
            dir: dir.to_owned(),
        });
    }
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;

    let key = KeyPair::generate().map_err(crypto("generate the CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&format!("agentfleet CA {}", short_id()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params
        .self_signed(&key)
        .map_err(crypto("sign the CA certificate"))?;

    // `create_new` so two concurrent `init`s cannot both win.
    write_file(&paths.key, &key.serialize_pem(), true, false)?;
    write_file(&paths.cert, &cert.pem(), false, false)?;
    Ok(paths)
}

/// Issues `dir/NAME.pem` + `dir/NAME.key` from the CA in `dir`. Re-issuing a name replaces
/// its files (that is how a certificate is renewed).
pub fn issue(dir: &Path, name: &str, role: Role, hosts: &[String]) -> Result<Issued, PkiError> {
    validate_name(name)?;
    let ca = ca_paths(dir);
    if !ca.cert.exists() || !ca.key.exists() {
        return Err(PkiError::NoCa {
            dir: dir.to_owned(),
        });
    }
    let sans = subject_alt_names(name, role, hosts)?;

    let ca_key_pem = fs::read_to_string(&ca.key).map_err(io("read the CA key", &ca.key))?;
    let ca_cert_pem =
        fs::read_to_string(&ca.cert).map_err(io("read the CA certificate", &ca.cert))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(crypto("parse the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .map_err(crypto("parse the CA certificate"))?;

    let key = KeyPair::generate().map_err(crypto("generate a key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match role {
        Role::Sidecar => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Coordinator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.subject_alt_names = sans.iter().map(|(_, san)| san.clone()).collect();
    params.use_authority_key_identifier_extension = true;
    let not_after = set_validity(&mut params, LEAF_VALIDITY_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(crypto("sign the certificate"))?;

    let paths = PkiPaths {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let replaced = paths.cert.exists() || paths.key.exists();
    write_file(&paths.key, &key.serialize_pem(), true, true)?;
    write_file(&paths.cert, &cert.pem(), false, true)?;
    Ok(Issued {
        paths,
        name: name.to_owned(),
        hosts: sans.into_iter().map(|(text, _)| text).collect(),
        not_after,
        replaced,
    })
}

/// The CA files of `dir`.
pub fn ca_paths(dir: &Path) -> PkiPaths {
    PkiPaths {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    }
}

/// NAME becomes a file name and the subject CN: letters, digits, `-`, `_`, `.`, no path
/// separators, not `ca` (the CA's own files).
pub fn validate_name(name: &str) -> Result<(), PkiError> {
    let invalid = |reason| PkiError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    if name.contains(['/', '\\']) {
        return Err(invalid(
            "it contains a path separator; give the directory as DIR",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid("use only letters, digits, `-`, `_` and `.`"));
    }
    if name.starts_with(['.', '-']) {
        return Err(invalid("it must start with a letter, digit or `_`"));
    }
    if name.eq_ignore_ascii_case("ca") {
        return Err(invalid("`ca` is the CA's own file name"));
    }
    Ok(())
}

/// A DNS name as certificates accept it: dot-separated labels of letters, digits and `-`,
/// optionally starting with a `*.` wildcard.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The SANs of a certificate, deduplicated, in order: NAME (if a DNS name), each host given,
/// then for sidecars the loopback defaults. Each entry keeps the text for display.
fn subject_alt_names(
    name: &str,
    role: Role,
    hosts: &[String],
) -> Result<Vec<(String, SanType)>, PkiError> {
    let mut out: Vec<(String, SanType)> = Vec::new();
    let mut push =
        |text: &str| -> Result<(), PkiError> {
            let trimmed = text.trim().trim_start_matches('[').trim_end_matches(']');
            let san =
                if let Ok(ip) = trimmed.parse::<IpAddr>() {
                    SanType::IpAddress(ip)
                } else if is_dns_name(trimmed) {
                    let lower = trimmed.to_ascii_lowercase();
                    SanType::DnsName(lower.clone().try_into().map_err(|_| {
                        PkiError::InvalidHost {
                            host: text.to_owned(),
                        }
                    })?)
                } else {
                    return Err(PkiError::InvalidHost {
                        host: text.to_owned(),
                    });
                };
            if !out.iter().any(|(_, s)| *s == san) {
                let shown = match &san {
                    SanType::IpAddress(ip) => ip.to_string(),
                    _ => trimmed.to_ascii_lowercase(),
                };
                out.push((shown, san));
            }
            Ok(())
        };
    if is_dns_name(name) {
        push(name)?;
    }
    for host in hosts {
        push(host)?;
    }
    if role == Role::Sidecar {
        for host in DEFAULT_SIDECAR_HOSTS {
            push(host)?;
        }
    }
    Ok(out)
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "agentfleet");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from yesterday (tolerates clock skew between machines) for `days`; returns the
/// last day as `YYYY-MM-DD`. A random serial keeps re-issued certificates distinct.
fn set_validity(params: &mut CertificateParams, days: i64) -> String {
    use chrono::Datelike;
    let ymd = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(1);
    let until = today + chrono::Days::new(days as u64);
    params.not_before = ymd(from);
    params.not_after = ymd(until);
    let mut serial = *uuid::Uuid::new_v4().as_bytes();
    serial[0] &= 0x7f; // positive INTEGER
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    until.format("%Y-%m-%d").to_string()
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Writes `contents`; private keys get mode 0600 on Unix (set at creation, so the key is
/// never readable by others, even briefly). Without `overwrite` an existing file is an error.
fn write_file(path: &Path, contents: &str, private: bool, overwrite: bool) -> Result<(), PkiError> {
    let mut options = OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io("create", path))?;
    // An existing key file keeps its old mode on truncation: tighten it.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("set permissions of", path))?;
    }
    #[cfg(not(unix))]
    let _ = private;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentfleet_common::tls;
    use std::net::SocketAddr;
    use tonic::transport::{Channel, Server};
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn init_refuses_to_overwrite_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let paths = init(dir.path()).unwrap();
        assert!(paths.cert.exists() && paths.key.exists());
        let err = init(dir.path()).unwrap_err();
        assert!(matches!(err, PkiError::CaExists { .. }));
        assert!(err.to_string().contains("refusing to overwrite"));
    }

    #[test]
    fn issue_without_a_ca_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), "sql1", Role::Sidecar, &[]).unwrap_err();
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
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let err = issue(dir.path(), "sql1", Role::Sidecar, &strings(&["bad host"])).unwrap_err();
        assert!(matches!(err, PkiError::InvalidHost { .. }));
    }

    #[test]
    fn sidecar_certificate_names_and_usages() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path()).unwrap();
        let hosts = strings(&["sql1.example.com", "10.0.0.7", "[fd00::7]", "localhost"]);
        let issued = issue(dir.path(), "sql1", Role::Sidecar, &hosts).unwrap();
        assert_eq!(
            issued.hosts,
            [
                "sql1",
                "sql1.example.com",
                "10.0.0.7",
                "fd00::7",
                "localhost",
                "127.0.0.1",
                "::1"
            ]
        );
        assert!(!issued.replaced);
        assert!(
            issued.describe().starts_with("issued "),
            "{}",
            issued.describe()
        );

        let pem = fs::read(&issued.paths.cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(tls::common_name(&pem.contents).as_deref(), Some("sql1"));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        let ca_pem = fs::read(dir.path().join("ca.pem")).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca_pem).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        assert!(ca.is_ca());

        let coordinator = issue(dir.path(), "coordinator", Role::Coordinator, &[]).unwrap();
        assert_eq!(coordinator.hosts, ["coordinator"]);
        let pem = fs::read(&coordinator.paths.cert).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let cert = pem.parse_x509().unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);

        // Re-issuing renews in place.
        assert!(
            issue(dir.path(), "sql1", Role::Sidecar, &[])
                .unwrap()
                .replaced
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path()).unwrap();
        let issued = issue(dir.path(), "coordinator", Role::Coordinator, &[]).unwrap();
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
        let fleet = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        init(fleet.path()).unwrap();
        init(other.path()).unwrap();
        issue(fleet.path(), "sql1", Role::Sidecar, &[]).unwrap();
        issue(fleet.path(), "coordinator", Role::Coordinator, &[]).unwrap();
        issue(other.path(), "coordinator", Role::Coordinator, &[]).unwrap();

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
}
