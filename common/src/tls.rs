//! TLS for coordinator ↔ sidecar (mTLS by default), through rustls with aws-lc-rs,
//! the provider tiberius brings too, so the process has exactly one.
//!
//! `identity` reads who a certificate says it is (role URI, name, serial); `crl` reads the
//! serials a CA's revocation list revokes.
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

pub mod crl;
pub mod identity;

pub use identity::{CertIdentity, Role};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to read {what} `{path}`: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{path}` holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{what} `{path}` is not usable: {why}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
}

/// Why a PEM file does not parse, without quoting it: the PEM parser's errors for a bad
/// `-----BEGIN` line and a missing end quote text from the file, and in a key file whose
/// line ends are damaged that text runs on into the base64 of the key itself. For every
/// file, not only keys: a key may be given where a certificate belongs.
pub fn pem_error_without_contents(e: pem::Error) -> String {
    match e {
        pem::Error::IllegalSectionStart { .. } => {
            "a `-----BEGIN ...-----` line is malformed (not shown: it may hold key material)".into()
        }
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM block has no `-----END ...-----` line (not shown: it may hold key material)"
                .into()
        }
        other => other.to_string(),
    }
}

/// Installs aws-lc-rs as the process-wide rustls provider. Call first in every `main`
/// and test; calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, e: pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        why: pem_error_without_contents(e),
    }
}

/// The file's PEM, once every certificate in it parses: tonic reads it only when it
/// connects, and would then report a damaged file without its path.
fn read_cert(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// The key file's PEM, once it holds a private key that parses (see `read_cert`).
fn read_key(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Pem {
            what: "key",
            path: path.to_owned(),
            why: "holds no PEM private key".into(),
        },
        e => pem_error("key", path, e),
    })?;
    Ok(pem)
}

/// Server side: present `cert`/`key`, require a client certificate signed by `client_ca`
/// that is valid now and carries clientAuth (rustls checks both during the handshake).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read_cert("certificate", cert)?, read_key(key)?);
    let ca = Certificate::from_pem(read_cert("client CA", client_ca)?);
    Ok(ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca)
        .client_auth_optional(false))
}

/// Client side: trust `ca`, present `cert`/`key`. `domain` overrides the name checked in
/// the server certificate (default: the endpoint's host).
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    domain: Option<&str>,
) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read_cert("CA", ca)?))
        .identity(Identity::from_pem(
            read_cert("certificate", cert)?,
            read_key(key)?,
        ));
    if let Some(domain) = domain {
        config = config.domain_name(domain);
    }
    Ok(config)
}

/// True when `host` (a name or IP, optionally in brackets) is a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.3.2.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("localhost"));
        assert!(!is_loopback_host("10.0.0.1"));
        assert!(!is_loopback_host("sql1.example.com"));
        assert!(!is_loopback_host("0.0.0.0"));
    }
}
