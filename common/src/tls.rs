//! TLS for coordinator ↔ sidecar (mTLS by default), through rustls with aws-lc-rs,
//! the provider tiberius brings too, so the process has exactly one.
//!
//! `identity` reads who a certificate says it is (role URI, name, serial); `crl` reads the
//! serials a CA's revocation list revokes.
use std::path::{Path, PathBuf};
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

fn read_cert(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(what, path)?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// Server side: present `cert`/`key`, require a client certificate signed by `client_ca`
/// that is valid now and carries clientAuth (rustls checks both during the handshake).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<ServerTlsConfig, TlsError> {
    let identity = Identity::from_pem(read_cert("certificate", cert)?, read("key", key)?);
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
            read("key", key)?,
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
