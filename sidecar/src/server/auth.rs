//! Authorization of each call. TLS has already checked that the client certificate was
//! issued by `client_ca`, is valid today and allows clientAuth; this checks, in order:
//!
//! 1. it is not revoked (`[tls] revoked`, `[tls] crl`, re-read while running);
//! 2. it is a coordinator's: its URI SAN is `spiffe://agentfleet/coordinator/NAME`. The
//!    subject common name alone is not trusted, since before role URIs sidecar and
//!    coordinator certificates shared one namespace (a sidecar certificate named
//!    `coordinator` passed as the coordinator);
//! 3. NAME is one `allow_clients` lists.
//!
//! An allowed call carries its `Caller` (the coordinator's name, or `local uid N` in
//! insecure mode) in its extensions for the handlers to audit; a refused one is written
//! to the audit log here, with what the caller presented (see `crate::audit`).
use std::collections::HashSet;
use std::sync::Arc;

use agentfleet_common::tls::{CertIdentity, Role, identity};
use tonic::{Request, Status, service::Interceptor};

use crate::audit::{self, AuditLog, Caller};
use crate::config::TlsConfig;

mod revocation;

pub use revocation::{CrlError, Revocations};

/// The interceptor in front of the Sidecar service.
#[derive(Debug, Clone)]
pub struct Authorize {
    sidecar: Arc<str>,
    /// `None`: insecure mode (loopback only), no client certificates to check.
    mtls: Option<Arc<Mtls>>,
    /// Where refused calls are recorded (none in unit tests of the checks alone).
    audit: Option<AuditLog>,
}

/// The gRPC method a call asked for (`/agentfleet.sidecar.v1.Sidecar/StartJob`), put in
/// its extensions by `tag_method` before the interceptor runs (tonic's interceptors do
/// not see the URI), so a refusal can say what was refused.
#[derive(Debug, Clone)]
pub struct CalledMethod(pub String);

/// The layer function in front of every service: see `CalledMethod`.
pub fn tag_method(
    mut request: tonic::codegen::http::Request<tonic::body::Body>,
) -> tonic::codegen::http::Request<tonic::body::Body> {
    let path = request.uri().path().to_owned();
    request.extensions_mut().insert(CalledMethod(path));
    request
}

/// The method's short name (`StartJob`), or the path as given.
pub fn method_name<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<CalledMethod>()
        .map(|m| m.0.rsplit('/').next().unwrap_or(&m.0).to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The caller's address: `ip:port` over TCP, `unix` on the local socket.
pub fn peer_of<T>(request: &Request<T>) -> String {
    if let Some(addr) = request.remote_addr() {
        return addr.to_string();
    }
    #[cfg(unix)]
    if request
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .is_some()
    {
        return "unix".to_owned();
    }
    "unknown".to_owned()
}

/// Who the caller is, as the interceptor found it (`unknown` if it never ran: tests).
pub fn caller_of<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller("unknown".to_owned()))
}

/// A refusal and what the caller presented, for the audit log.
struct Refusal {
    status: Status,
    presented: String,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self {
            status,
            presented: "no client certificate".to_owned(),
        }
    }
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
            audit: None,
        })
    }

    /// Records refused calls in `audit`.
    pub fn with_audit(mut self, audit: AuditLog) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Plaintext on loopback: nobody to check.
    pub fn insecure(sidecar: &str) -> Self {
        Self {
            sidecar: sidecar.into(),
            mtls: None,
            audit: None,
        }
    }

    /// The caller's coordinator name when it is allowed (`None` in insecure mode); the
    /// refusal otherwise.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        self.check_presented(request).map_err(|r| r.status)
    }

    fn check_presented<T>(&self, request: &Request<T>) -> Result<Option<String>, Refusal> {
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
        let id = identity::identity(leaf).ok_or_else(|| Refusal {
            status: Status::permission_denied("the client certificate cannot be read as X.509"),
            presented: "a certificate that is not X.509".to_owned(),
        })?;
        self.check_identity(mtls, &id)
            .map(Some)
            .map_err(|status| Refusal {
                status,
                presented: format!("certificate `{}` (serial {})", id.display_name(), id.serial),
            })
    }

    /// The caller's identity for the audit log: its name, or `local uid N` in insecure
    /// mode (from the Unix socket's peer credentials).
    fn caller<T>(request: &Request<T>, name: Option<String>) -> Caller {
        if let Some(name) = name {
            return Caller(name);
        }
        #[cfg(unix)]
        {
            let uid = request
                .extensions()
                .get::<tonic::transport::server::UdsConnectInfo>()
                .and_then(|info| info.peer_cred)
                .map(|cred| cred.uid());
            Caller::local(uid)
        }
        #[cfg(not(unix))]
        {
            let _ = request;
            Caller::local(None)
        }
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
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        match self.check_presented(&request) {
            Ok(name) => {
                let caller = Self::caller(&request, name);
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(refusal) => {
                if let Some(audit) = &self.audit {
                    audit.record(&audit::Entry::now(
                        &method_name(&request),
                        &refusal.presented,
                        &peer_of(&request),
                        audit::Answer::refused(&refusal.status),
                    ));
                }
                Err(refusal.status)
            }
        }
    }
}

#[cfg(test)]
mod tests;
