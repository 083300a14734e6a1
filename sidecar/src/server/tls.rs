//! The server's rustls configuration: present the sidecar's certificate and require a
//! client certificate that chains to `client_ca` (mTLS). Built here rather than through
//! tonic because the sidecar runs its own accept loop (see `listener`), with a handshake
//! timeout tonic's acceptor lacks. Which certificate may *call* is `auth.rs`'s business.
use std::path::Path;
use std::sync::Arc;

use agentfleet_common::tls::pem_error_without_contents;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
#[error("{what} `{}`: {why}", path.display())]
pub struct TlsSetupError {
    what: &'static str,
    path: std::path::PathBuf,
    why: String,
}

fn error(what: &'static str, path: &Path, why: impl ToString) -> TlsSetupError {
    TlsSetupError {
        what,
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(what, path, pem_error_without_contents(e)))?;
    if certs.is_empty() {
        return Err(error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The acceptor for `cert`/`key`, requiring client certificates issued by `client_ca`.
pub fn acceptor(cert: &Path, key: &Path, client_ca: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    let chain = certificates("certificate", cert)?;
    // The key's contents never appear in an error: only its path and the parser's reason.
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| error("key", key, pem_error_without_contents(e)))?;
    let mut roots = RootCertStore::empty();
    for ca in certificates("client CA", client_ca)? {
        roots
            .add(ca)
            .map_err(|e| error("client CA", client_ca, e))?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| error("client CA", client_ca, e))?;
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            let why = format!("{e} (with the key `{}`)", key.display());
            error("certificate and key", cert, why)
        })?;
    // gRPC is HTTP/2 only.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
