//! Authorization of each call. TLS has already checked that the client certificate was
//! issued by `client_ca`, is valid today and allows clientAuth; this checks, in order:
//!
//! 1. it is not revoked (`[tls] revoked`, `[tls] crl`, re-read while running);
//! 2. it is a coordinator's: its URI SAN is `spiffe://agentfleet/coordinator/NAME`. The
//!    subject common name alone is not trusted, since before role URIs sidecar and
//!    coordinator certificates shared one namespace (a sidecar certificate named
//!    `coordinator` passed as the coordinator);
//! 3. NAME is one `allow_clients` lists.
use std::collections::HashSet;
use std::sync::Arc;

use agentfleet_common::tls::{CertIdentity, Role, identity};
use tonic::{Request, Status, service::Interceptor};

use crate::config::TlsConfig;

mod revocation;

pub use revocation::{CrlError, Revocations};

/// The interceptor in front of the Sidecar service.
#[derive(Debug, Clone)]
pub struct Authorize {
    sidecar: Arc<str>,
    /// `None`: insecure mode (loopback only), no client certificates to check.
    mtls: Option<Arc<Mtls>>,
}

#[derive(Debug)]
struct Mtls {
    allow: HashSet<String>,
    revocations: Revocations,
}

impl Authorize {
    /// mTLS: clients as `tls` allows them. Reads the CRL now, so a bad one is an error at
    /// start rather than a refusal of every call.
    pub fn mtls(sidecar: &str, tls: &TlsConfig) -> Result<Self, CrlError> {
        let revocations = Revocations::load(&tls.revoked, tls.crl.as_deref(), &tls.client_ca)?;
        Ok(Self {
            sidecar: sidecar.into(),
            mtls: Some(Arc::new(Mtls {
                allow: tls.allow_clients.iter().cloned().collect(),
                revocations,
            })),
        })
    }

    /// Plaintext on loopback: nobody to check.
    pub fn insecure(sidecar: &str) -> Self {
        Self {
            sidecar: sidecar.into(),
            mtls: None,
        }
    }

    /// The caller's coordinator name when it is allowed; the refusal otherwise.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let Some(mtls) = &self.mtls else {
            return Ok(None);
        };
        let certs = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(format!(
                "sidecar `{}` requires a client certificate (mTLS); configure the fleet's [fleet.tls] cert and key",
                self.sidecar
            ))
        })?;
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated("the TLS session carries no client certificate")
        })?;
        let id = identity::identity(leaf).ok_or_else(|| {
            Status::permission_denied("the client certificate cannot be read as X.509")
        })?;
        self.check_identity(mtls, &id).map(Some)
    }

    fn check_identity(&self, mtls: &Mtls, id: &CertIdentity) -> Result<String, Status> {
        let shown = id.display_name();
        match mtls.revocations.is_revoked(id) {
            Ok(false) => {}
            Ok(true) => {
                tracing::warn!(client = %shown, serial = %id.serial, "refused a revoked client certificate");
                return Err(Status::permission_denied(format!(
                    "certificate `{shown}` (serial {}) is revoked",
                    id.serial
                )));
            }
            Err(e) => {
                return Err(Status::unavailable(format!(
                    "sidecar `{}` {e}; its operator must fix or replace the file",
                    self.sidecar
                )));
            }
        }
        let Some(name) = id.name_as(Role::Coordinator) else {
            let why = if id.roles.is_empty() {
                format!(
                    "client certificate `{shown}` (serial {}) carries no agentfleet role (it was issued by an older version?); re-issue it with `coordinator pki issue DIR {shown} --coordinator`",
                    id.serial
                )
            } else {
                let roles: Vec<String> = id.roles.iter().map(|(r, n)| r.uri(n)).collect();
                format!(
                    "certificate `{shown}` (serial {}) is not a coordinator's ({}); a coordinator needs a certificate from `coordinator pki issue DIR NAME --coordinator`",
                    id.serial,
                    roles.join(", ")
                )
            };
            tracing::warn!(client = %shown, serial = %id.serial, "refused a client certificate without the coordinator role");
            return Err(Status::permission_denied(why));
        };
        if mtls.allow.contains(name) {
            Ok(name.to_owned())
        } else {
            tracing::warn!(client = %name, "refused a client not in allow_clients");
            Err(Status::permission_denied(format!(
                "client certificate `{name}` is not in allow_clients of sidecar `{}`",
                self.sidecar
            )))
        }
    }
}

impl Interceptor for Authorize {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests;
