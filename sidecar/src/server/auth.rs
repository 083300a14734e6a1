//! Authorization: TLS already checked that the client certificate was issued by
//! `client_ca`; this checks that its name is one `allow_clients` lists.
use std::collections::HashSet;
use std::sync::Arc;

use tonic::{Request, Status, service::Interceptor};

/// The interceptor in front of the Sidecar service.
#[derive(Debug, Clone)]
pub struct Authorize {
    sidecar: Arc<str>,
    /// `None`: insecure mode (loopback only), no client certificates to check.
    allow: Option<Arc<HashSet<String>>>,
}

impl Authorize {
    pub fn new(sidecar: &str, allow: Option<Vec<String>>) -> Self {
        Self {
            sidecar: sidecar.into(),
            allow: allow.map(|a| Arc::new(a.into_iter().collect())),
        }
    }

    /// The caller's certificate name when it is allowed; the refusal otherwise.
    pub fn check<T>(&self, request: &Request<T>) -> Result<Option<String>, Status> {
        let Some(allow) = &self.allow else {
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
        let name = agentfleet_common::tls::common_name(leaf).ok_or_else(|| {
            Status::permission_denied(
                "the client certificate has no common name; issue one with `coordinator pki issue DIR NAME --coordinator`",
            )
        })?;
        if allow.contains(&name) {
            Ok(Some(name))
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
