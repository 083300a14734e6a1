//! `coordinator pki`: a private CA and the certificates of a fleet, so mTLS works without
//! openssl.
//!
//! - `init` creates `DIR/ca.pem` + `DIR/ca.key`, and an empty `DIR/crl.pem`.
//! - `issue` writes `DIR/NAME.pem` + `DIR/NAME.key`, signed by that CA, for one role: a
//!   sidecar certificate carries serverAuth only, a coordinator certificate clientAuth only,
//!   and each carries the URI `spiffe://agentfleet/ROLE/NAME` (what a sidecar's
//!   `allow_clients` is matched against) besides the subject common name NAME. Every
//!   certificate is recorded in `DIR/issued.toml`, so a name cannot be issued for both roles.
//! - `revoke` marks a certificate (by name or serial) revoked in the index and rewrites
//!   `DIR/crl.pem`, signed by the CA, which sidecars read through `[tls] crl`.
//!
//! Keys are ECDSA P-256. Private keys are written with mode 0600 on Unix and never printed.
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

mod command;
mod index;
mod issue;
mod revoke;

pub use agentfleet_common::tls::Role;
pub use command::run_command;
pub use index::{INDEX_FILE, IndexEntry};
pub use issue::{IssueOptions, Issued, issue};
pub use revoke::{CRL_FILE, Revocation, revoke};

/// How long the CA is valid by default, in days (10 years).
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// How long an issued certificate is valid by default, in days (2 years).
pub const LEAF_VALIDITY_DAYS: u32 = 730;
/// The longest validity `--days` accepts (100 years).
pub const MAX_VALIDITY_DAYS: u32 = 36_500;
/// For the CLI help of `pki init` / `pki issue`.
pub const VALIDITY_HELP: &str = "By default the CA is valid for 10 years, issued certificates \
     for 2 years (--days changes it). To renew or rotate a certificate: issue it again, deploy \
     it, then `coordinator pki revoke DIR SERIAL` the old one; the CA stays the same.";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

/// A certificate and its private key on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
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
    #[error(
        "`{name}` is already issued as a {taken} certificate in this PKI directory (serial \
         {serial}); sidecar and coordinator names must differ. Choose another name, or revoke \
         it first with `coordinator pki revoke DIR {name}`"
    )]
    NameTaken {
        name: String,
        taken: Role,
        serial: String,
    },
    #[error("--days {days} is not a validity: use 1 to {MAX_VALIDITY_DAYS} days")]
    BadDays { days: u32 },
    #[error(
        "the certificate would be valid until {until}, after the CA itself ({ca_until}); \
         use --days {max} or less"
    )]
    OutlivesCa {
        until: String,
        ca_until: String,
        max: i64,
    },
    #[error(
        "`{target}` is neither a name nor a serial issued from this PKI directory (see `{}`)",
        index.display()
    )]
    UnknownTarget { target: String, index: PathBuf },
    #[error("`{}` is not a valid index: {reason}; restore it from a backup", path.display())]
    BadIndex { path: PathBuf, reason: String },
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

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.to_owned();
    move |source| PkiError::Io { what, path, source }
}

pub(crate) fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Crypto { what, source }
}

/// Creates a private CA in `dir` (created if missing), valid for `days`. Refuses to replace
/// an existing CA.
pub fn init(dir: &Path, days: u32) -> Result<PkiPaths, PkiError> {
    check_days(days)?;
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
    set_validity(&mut params, days);
    let cert = params
        .self_signed(&key)
        .map_err(crypto("sign the CA certificate"))?;

    // `create_new` so two concurrent `init`s cannot both win.
    write_file(&paths.key, &key.serialize_pem(), true, false)?;
    write_file(&paths.cert, &cert.pem(), false, false)?;
    let issuer = Issuer::new(params, key);
    revoke::ensure_crl(dir, &mut index::Index::load(dir)?, &issuer)?;
    Ok(paths)
}

/// The CA files of `dir`.
pub fn ca_paths(dir: &Path) -> PkiPaths {
    PkiPaths {
        cert: dir.join(CA_CERT),
        key: dir.join(CA_KEY),
    }
}

/// The CA of `dir` as a signer, and its certificate's PEM.
pub(crate) fn load_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
    let ca = ca_paths(dir);
    if !ca.cert.exists() || !ca.key.exists() {
        return Err(PkiError::NoCa {
            dir: dir.to_owned(),
        });
    }
    let key_pem = fs::read_to_string(&ca.key).map_err(io("read the CA key", &ca.key))?;
    let cert_pem = fs::read_to_string(&ca.cert).map_err(io("read the CA certificate", &ca.cert))?;
    let key = KeyPair::from_pem(&key_pem).map_err(crypto("parse the CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(crypto("parse the CA certificate"))?;
    Ok((issuer, cert_pem))
}

/// NAME becomes a file name, the subject CN and part of the role URI: letters, digits, `-`,
/// `_`, `.`, no path separators, not `ca` (the CA's own files).
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

pub(crate) fn check_days(days: u32) -> Result<(), PkiError> {
    if days == 0 || days > MAX_VALIDITY_DAYS {
        return Err(PkiError::BadDays { days });
    }
    Ok(())
}

pub(crate) fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "agentfleet");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from yesterday (tolerates clock skew between machines) for `days`; returns the
/// last day. A random serial keeps re-issued certificates distinct; returns it too, in the
/// form the index and the sidecar use.
pub(crate) fn set_validity(
    params: &mut CertificateParams,
    days: u32,
) -> (chrono::NaiveDate, String) {
    use chrono::Datelike;
    let ymd = |d: chrono::NaiveDate| rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Days::new(1);
    let until = today + chrono::Days::new(u64::from(days));
    params.not_before = ymd(from);
    params.not_after = ymd(until);
    let mut serial = *uuid::Uuid::new_v4().as_bytes();
    // A positive INTEGER whose first byte is not zero, so its DER form is these 16 bytes
    // exactly and reads back as the same hex.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    (until, agentfleet_common::tls::identity::serial_hex(&serial))
}

fn short_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Writes `contents`; private keys get mode 0600 on Unix (set at creation, so the key is
/// never readable by others, even briefly). Without `overwrite` an existing file is an error.
pub(crate) fn write_file(
    path: &Path,
    contents: &str,
    private: bool,
    overwrite: bool,
) -> Result<(), PkiError> {
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

/// Replaces `path` at once (a temporary file renamed over it), so a reader (a sidecar
/// re-reading the CRL) sees the old or the new file, never half of one.
pub(crate) fn replace_file(path: &Path, contents: &str) -> Result<(), PkiError> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    write_file(&temp, contents, false, true)?;
    fs::rename(&temp, path).map_err(io("replace", path))
}

#[cfg(test)]
mod tests;
