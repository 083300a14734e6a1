//! `pki revoke`: marks certificates revoked in the index and rewrites `DIR/crl.pem`, the
//! CA-signed list of every revoked serial that sidecars read through `[tls] crl`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentfleet_common::tls::identity::normalize_serial;
use rcgen::{
    CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams, SerialNumber,
};

use super::index::{Index, IndexEntry, IndexLock, index_path};
use super::{PkiError, crypto, load_ca, replace_file, validate_name};

/// The CRL's file name in the PKI directory.
pub const CRL_FILE: &str = "crl.pem";

/// How long the CRL says it is current. Sidecars read a local file and do not treat an
/// old CRL as stale; this is for other tools that look at the file.
const CRL_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 3600);

/// What `revoke` did.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Certificates revoked now.
    pub revoked: Vec<IndexEntry>,
    /// Certificates that matched but were revoked before.
    pub already: Vec<IndexEntry>,
    /// The CRL written (every revoked serial of this CA).
    pub crl: PathBuf,
}

impl Revocation {
    pub fn describe(&self) -> String {
        let list = |entries: &[IndexEntry]| {
            entries
                .iter()
                .map(|e| match e.role {
                    Some(role) => format!("{role} `{}` (serial {})", e.name, e.serial),
                    None => format!("`{}` (serial {})", e.name, e.serial),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = Vec::new();
        if !self.revoked.is_empty() {
            lines.push(format!("revoked {}", list(&self.revoked)));
        }
        if !self.already.is_empty() {
            lines.push(format!("already revoked: {}", list(&self.already)));
        }
        lines.push(format!(
            "wrote {}: copy it to every sidecar whose `[tls] crl` names it (they re-read it \
             within seconds, no restart needed)",
            self.crl.display()
        ));
        lines.join("\n")
    }
}

/// Revokes `target` in `dir`: every certificate issued under that name, or the one with
/// that serial. A serial the index does not know (a certificate made elsewhere with this
/// CA) is revoked too, and recorded.
pub fn revoke(dir: &Path, target: &str) -> Result<Revocation, PkiError> {
    let (issuer, _) = load_ca(dir)?;
    let _lock = IndexLock::acquire(dir)?;
    let mut index = Index::load(dir)?;
    let target = target.trim();
    let by_name = validate_name(target).is_ok()
        && (index.certificates.iter().any(|e| e.name == target)
            || Index::on_disk(dir, target).is_some());
    let serial = normalize_serial(target);
    let matches = |e: &IndexEntry| {
        if by_name {
            e.name == target
        } else {
            serial.as_deref() == Some(e.serial.as_str())
        }
    };
    if by_name
        && let Some(found) = Index::on_disk(dir, target)
        && !index.certificates.iter().any(|e| e.serial == found.serial)
    {
        // Issued before the index existed.
        index.certificates.push(found);
    }
    if !index.certificates.iter().any(matches) {
        match &serial {
            // 8 bytes at least: a name that happens to be hex (`cafe`) is not taken for one.
            Some(serial) if serial.len() >= 16 => index.certificates.push(IndexEntry {
                name: "?".into(),
                role: None,
                serial: serial.clone(),
                not_after: String::new(),
                revoked_at: None,
            }),
            _ => {
                return Err(PkiError::UnknownTarget {
                    target: target.to_owned(),
                    index: index_path(dir),
                });
            }
        }
    }

    let now = chrono::Utc::now();
    let (mut revoked, mut already) = (Vec::new(), Vec::new());
    for entry in index.certificates.iter_mut().filter(|e| matches(e)) {
        if entry.is_revoked() {
            already.push(entry.clone());
        } else {
            entry.revoked_at = Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            revoked.push(entry.clone());
        }
    }
    index.crl_number += 1;
    // The index first: it is what the CRL is made from, so running `revoke` again after a
    // failed CRL write repairs the CRL.
    index.save(dir)?;
    let crl = dir.join(CRL_FILE);
    write_crl(&crl, &index, &issuer, now.timestamp())?;
    Ok(Revocation {
        revoked,
        already,
        crl,
    })
}

/// Writes `DIR/crl.pem` when there is none yet (an empty list after `init`; for a PKI
/// directory from before revocation, at its next `issue`), so sidecars can name it in
/// `[tls] crl` before anything is revoked.
pub(crate) fn ensure_crl(
    dir: &Path,
    index: &mut Index,
    issuer: &Issuer<'static, KeyPair>,
) -> Result<(), PkiError> {
    let crl = dir.join(CRL_FILE);
    if crl.exists() {
        return Ok(());
    }
    index.crl_number += 1;
    index.save(dir)?;
    write_crl(&crl, index, issuer, chrono::Utc::now().timestamp())
}

/// Writes the CRL of every revoked entry of `index`, signed by `issuer`, numbered
/// `index.crl_number`.
fn write_crl(
    path: &Path,
    index: &Index,
    issuer: &Issuer<'static, KeyPair>,
    now: i64,
) -> Result<(), PkiError> {
    // rcgen takes `time` dates; this crate does not depend on `time`, so dates are built
    // from the epoch and a duration.
    let at = |secs: i64| {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    };
    let revoked_certs = index
        .certificates
        .iter()
        .filter_map(|e| {
            let when = chrono::DateTime::parse_from_rfc3339(e.revoked_at.as_deref()?).ok()?;
            Some(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex_bytes(&e.serial)?),
                revocation_time: at(when.timestamp()),
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: at(now),
        next_update: at(now) + CRL_VALIDITY,
        crl_number: SerialNumber::from(index.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(crypto("sign the revocation list"))?;
    let pem = crl.pem().map_err(crypto("encode the revocation list"))?;
    replace_file(path, &pem)
}

/// The bytes of a serial in `serial_hex` form.
fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}
