//! `pki issue`: a certificate for one role and name, signed by the CA of the directory.
use std::net::IpAddr;
use std::path::Path;

use agentfleet_common::tls::identity::identity_from_pem;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType};

use super::index::{Index, IndexEntry, IndexLock};
use super::{
    LEAF_VALIDITY_DAYS, PkiError, PkiPaths, Role, check_days, crypto, distinguished_name, load_ca,
    set_validity, validate_name, write_file,
};

/// How to issue a certificate beyond its name and role.
#[derive(Debug, Clone)]
pub struct IssueOptions {
    /// Host names or IPs the certificate is valid for besides NAME. Nothing is added
    /// unasked: a sidecar reached on `localhost` or `127.0.0.1` needs them listed here.
    pub hosts: Vec<String>,
    /// Days of validity from today.
    pub days: u32,
}

impl Default for IssueOptions {
    fn default() -> Self {
        Self {
            hosts: Vec::new(),
            days: LEAF_VALIDITY_DAYS,
        }
    }
}

impl IssueOptions {
    /// The defaults plus `hosts`.
    pub fn hosts<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        Self {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }
}

/// What `issue` wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    pub paths: PkiPaths,
    /// The subject common name and the name in the role URI.
    pub name: String,
    pub role: Role,
    /// The subject alternative names: DNS names and IP addresses, in order (the role URI
    /// is not listed).
    pub hosts: Vec<String>,
    /// Lowercase hex, as `pki revoke` and the sidecar's messages show it.
    pub serial: String,
    /// Last day of validity (UTC), `YYYY-MM-DD`.
    pub not_after: String,
    /// The certificate this one replaced on disk, still valid until revoked or expired.
    pub replaced: Option<IndexEntry>,
}

impl Issued {
    /// What was written, for which names, until when; after a renewal, how to retire the
    /// old certificate.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "{} {} and {} for {} `{}` (serial {}; names: {}; valid until {})",
            if self.replaced.is_some() {
                "replaced"
            } else {
                "issued"
            },
            self.paths.cert.display(),
            self.paths.key.display(),
            self.role,
            self.name,
            self.serial,
            if self.hosts.is_empty() {
                "none".to_owned()
            } else {
                self.hosts.join(", ")
            },
            self.not_after
        );
        if let Some(old) = self.replaced.as_ref().filter(|old| !old.is_revoked()) {
            text.push_str(&format!(
                "\nthe previous certificate (serial {}) stays valid until {}: once the new one \
                 is deployed, revoke it with `coordinator pki revoke DIR {}`",
                old.serial,
                if old.not_after.is_empty() {
                    "it expires"
                } else {
                    &old.not_after
                },
                old.serial
            ));
        }
        text
    }
}

/// Issues `dir/NAME.pem` + `dir/NAME.key` for `role` from the CA in `dir` and records it in
/// the index. Re-issuing a name for the same role replaces its files (that is how a
/// certificate is renewed); a name live for the other role is refused.
pub fn issue(
    dir: &Path,
    name: &str,
    role: Role,
    options: &IssueOptions,
) -> Result<Issued, PkiError> {
    validate_name(name)?;
    check_days(options.days)?;
    let (issuer, ca_pem) = load_ca(dir)?;
    let _lock = IndexLock::acquire(dir)?;
    let mut index = Index::load(dir)?;
    if let Some(taken) = index.conflicting(dir, name, role) {
        return Err(PkiError::NameTaken {
            name: name.to_owned(),
            taken: role.other(),
            serial: taken.serial,
        });
    }
    let sans = subject_alt_names(name, &options.hosts)?;

    let key = KeyPair::generate().map_err(crypto("generate a key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // One usage per role: a sidecar's certificate cannot log in to another sidecar.
    params.extended_key_usages = match role {
        Role::Sidecar => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Role::Coordinator => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    let uri = role
        .uri(name)
        .try_into()
        .map_err(crypto("encode the role URI"))?;
    params.subject_alt_names = sans.iter().map(|(_, san)| san.clone()).collect();
    params.subject_alt_names.push(SanType::URI(uri));
    params.use_authority_key_identifier_extension = true;
    let (until, serial) = set_validity(&mut params, options.days);
    check_within_ca(&ca_pem, until)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(crypto("sign the certificate"))?;

    let paths = PkiPaths {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let replaced = paths
        .cert
        .exists()
        .then(|| Index::on_disk(dir, name))
        .flatten()
        .map(|old| {
            index
                .certificates
                .iter()
                .find(|e| e.serial == old.serial)
                .cloned()
                .unwrap_or(old)
        });
    let not_after = until.format("%Y-%m-%d").to_string();
    // Recorded before the files are written: a certificate on disk the index does not
    // know could not be revoked by name.
    index.certificates.push(IndexEntry {
        name: name.to_owned(),
        role: Some(role),
        serial: serial.clone(),
        not_after: not_after.clone(),
        revoked_at: None,
    });
    index.save(dir)?;
    super::revoke::ensure_crl(dir, &mut index, &issuer)?;
    write_file(&paths.key, &key.serialize_pem(), true, true)?;
    write_file(&paths.cert, &cert.pem(), false, true)?;
    Ok(Issued {
        paths,
        name: name.to_owned(),
        role,
        hosts: sans.into_iter().map(|(text, _)| text).collect(),
        serial,
        not_after,
        replaced,
    })
}

/// A certificate valid after its CA would be refused from that day on anyway: say so now.
fn check_within_ca(ca_pem: &str, until: chrono::NaiveDate) -> Result<(), PkiError> {
    let Some(ca) = identity_from_pem(ca_pem.as_bytes()) else {
        return Ok(()); // rcgen parsed it already; nothing better to say here
    };
    let Some(ca_until) = chrono::DateTime::from_timestamp(ca.not_after, 0) else {
        return Ok(());
    };
    let ca_until = ca_until.date_naive();
    if until > ca_until {
        let today = chrono::Utc::now().date_naive();
        return Err(PkiError::OutlivesCa {
            until: until.to_string(),
            ca_until: ca_until.to_string(),
            max: (ca_until - today).num_days(),
        });
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

/// The DNS and IP SANs of a certificate, deduplicated, in order: NAME (if a DNS name), then
/// each host given. Each entry keeps the text for display.
fn subject_alt_names(name: &str, hosts: &[String]) -> Result<Vec<(String, SanType)>, PkiError> {
    let mut out: Vec<(String, SanType)> = Vec::new();
    let mut push = |text: &str| -> Result<(), PkiError> {
        let invalid = || PkiError::InvalidHost {
            host: text.to_owned(),
        };
        let trimmed = text.trim().trim_start_matches('[').trim_end_matches(']');
        let (shown, san) = if let Ok(ip) = trimmed.parse::<IpAddr>() {
            (ip.to_string(), SanType::IpAddress(ip))
        } else if is_dns_name(trimmed) {
            let lower = trimmed.to_ascii_lowercase();
            let dns = lower.clone().try_into().map_err(|_| invalid())?;
            (lower, SanType::DnsName(dns))
        } else {
            return Err(invalid());
        };
        if !out.iter().any(|(_, s)| *s == san) {
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
    Ok(out)
}
