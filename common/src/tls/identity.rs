//! Who a certificate says it is. agentfleet certificates name their holder twice: the
//! subject common name (for people and older versions) and a URI subject alternative name
//! `spiffe://agentfleet/ROLE/NAME`, which is what authorization trusts. Putting the role in
//! the name keeps sidecar and coordinator names in separate namespaces: a sidecar's
//! certificate named `coordinator` is still a sidecar's.
use std::fmt;

use serde::{Deserialize, Serialize};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// The trust domain of every agentfleet role URI.
pub const TRUST_DOMAIN: &str = "agentfleet";

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves the wire API (serverAuth only).
    Sidecar,
    /// Calls sidecars (clientAuth only).
    Coordinator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sidecar => "sidecar",
            Role::Coordinator => "coordinator",
        }
    }

    /// The other role (sidecar ↔ coordinator).
    pub fn other(self) -> Role {
        match self {
            Role::Sidecar => Role::Coordinator,
            Role::Coordinator => Role::Sidecar,
        }
    }

    /// `spiffe://agentfleet/ROLE/NAME`.
    pub fn uri(self, name: &str) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}/{name}", self.as_str())
    }

    /// The role and name of an agentfleet role URI; `None` for any other URI.
    pub fn parse_uri(uri: &str) -> Option<(Role, String)> {
        let rest = uri.strip_prefix("spiffe://")?.strip_prefix(TRUST_DOMAIN)?;
        let (role, name) = rest.strip_prefix('/')?.split_once('/')?;
        let role = match role {
            "sidecar" => Role::Sidecar,
            "coordinator" => Role::Coordinator,
            _ => return None,
        };
        (!name.is_empty() && !name.contains('/')).then(|| (role, name.to_owned()))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertIdentity {
    /// The subject common name, if any.
    pub common_name: Option<String>,
    /// Every agentfleet role URI it carries (certificates issued by `coordinator pki issue`
    /// carry exactly one; older ones none).
    pub roles: Vec<(Role, String)>,
    /// The serial number as [`serial_hex`] writes it.
    pub serial: String,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// Extended key usages: may serve TLS (serverAuth), may be a TLS client (clientAuth).
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertIdentity {
    /// The name this certificate holds for `role`, when it carries that role and no other.
    pub fn name_as(&self, role: Role) -> Option<&str> {
        match self.roles.as_slice() {
            [(r, name)] if *r == role => Some(name),
            _ => None,
        }
    }

    /// The name to show people: the role URI's name, else the common name.
    pub fn display_name(&self) -> &str {
        self.roles
            .first()
            .map(|(_, n)| n.as_str())
            .or(self.common_name.as_deref())
            .unwrap_or("?")
    }
}

/// The identity in a DER certificate; `None` when it does not parse.
pub fn identity(der: &[u8]) -> Option<CertIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(identity_of(&cert))
}

/// The identity in the first certificate of a PEM file's contents.
pub fn identity_from_pem(pem: &[u8]) -> Option<CertIdentity> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    identity(&pem.contents)
}

fn identity_of(cert: &X509Certificate<'_>) -> CertIdentity {
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let roles = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Role::parse_uri(uri),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // No extendedKeyUsage extension means any usage (RFC 5280 4.2.1.12).
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        Ok(None) => (true, true),
        Err(_) => (false, false),
    };
    CertIdentity {
        common_name,
        roles,
        serial: serial_hex(cert.raw_serial()),
        not_after: cert.validity().not_after.timestamp(),
        server_auth,
        client_auth,
    }
}

/// A serial number as lowercase hex without separators or leading zero bytes: the one
/// form the index, the CRL check and messages use.
pub fn serial_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let hex: String = bytes[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() { "00".to_owned() } else { hex }
}

/// A serial as people write it (`3A:5F:...`, `0x3a5f...`, `3a5f...`) in [`serial_hex`] form;
/// `None` when it is not hex.
pub fn normalize_serial(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    let digits: String = text.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Option<Vec<u8>> = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).ok())
        .collect();
    Some(serial_hex(&bytes?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_uris_round_trip() {
        let uri = Role::Coordinator.uri("ops-1");
        assert_eq!(uri, "spiffe://agentfleet/coordinator/ops-1");
        assert_eq!(
            Role::parse_uri(&uri),
            Some((Role::Coordinator, "ops-1".into()))
        );
        assert_eq!(
            Role::parse_uri("spiffe://agentfleet/sidecar/sql1"),
            Some((Role::Sidecar, "sql1".into()))
        );
        for other in [
            "spiffe://other/coordinator/x",
            "spiffe://agentfleet/admin/x",
            "spiffe://agentfleet/coordinator/",
            "spiffe://agentfleet/coordinator/a/b",
            "https://agentfleet/coordinator/x",
            "spiffe://agentfleetx/coordinator/x",
        ] {
            assert_eq!(Role::parse_uri(other), None, "{other}");
        }
    }

    #[test]
    fn serials_have_one_form() {
        assert_eq!(serial_hex(&[0, 0, 0x3a, 0x05]), "3a05");
        assert_eq!(serial_hex(&[0]), "00");
        assert_eq!(normalize_serial("00:3A:05").as_deref(), Some("3a05"));
        assert_eq!(normalize_serial("0x3a05").as_deref(), Some("3a05"));
        assert_eq!(normalize_serial("a05").as_deref(), Some("0a05"));
        assert_eq!(normalize_serial("sql1"), None);
        assert_eq!(normalize_serial(""), None);
    }

    #[test]
    fn one_role_names_the_holder() {
        let id = CertIdentity {
            common_name: Some("coordinator".into()),
            roles: vec![(Role::Sidecar, "coordinator".into())],
            serial: "01".into(),
            not_after: 0,
            server_auth: true,
            client_auth: false,
        };
        assert_eq!(id.name_as(Role::Coordinator), None);
        assert_eq!(id.name_as(Role::Sidecar), Some("coordinator"));
        let both = CertIdentity {
            roles: vec![(Role::Sidecar, "x".into()), (Role::Coordinator, "x".into())],
            ..id
        };
        assert_eq!(both.name_as(Role::Coordinator), None);
    }
}
