//! `DIR/issued.toml`: every certificate `pki issue` made from this CA (name, role, serial,
//! last day) and which ones `pki revoke` revoked. It is what keeps sidecar and coordinator
//! names apart and what the CRL is rebuilt from, so it is replaced atomically and never
//! silently reset: an unreadable index is an error, not an empty one.
use std::fs;
use std::path::{Path, PathBuf};

use agentfleet_common::tls::identity::identity_from_pem;
use serde::{Deserialize, Serialize};

use super::{PkiError, Role, io, replace_file};

/// The index's file name in the PKI directory.
pub const INDEX_FILE: &str = "issued.toml";

const HEADER: &str = "# Certificates issued from this CA by `coordinator pki issue`, and revocations by\n\
     # `coordinator pki revoke` (crl.pem is rebuilt from this file). Do not edit by hand.\n\n";

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub name: String,
    /// `None` for a certificate found on disk that carries no role (an older version's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Lowercase hex (`agentfleet_common::tls::identity::serial_hex`).
    pub serial: String,
    /// Last day of validity, `YYYY-MM-DD` (empty when unknown).
    #[serde(default)]
    pub not_after: String,
    /// When it was revoked (RFC 3339, UTC); absent while it is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl IndexEntry {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Not revoked and not past its last day.
    fn is_live(&self, today: &str) -> bool {
        !self.is_revoked() && (self.not_after.is_empty() || self.not_after.as_str() >= today)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    /// The number of the last CRL written (CRL numbers must only grow).
    #[serde(default)]
    pub crl_number: u64,
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<IndexEntry>,
}

pub(crate) fn index_path(dir: &Path) -> PathBuf {
    dir.join(INDEX_FILE)
}

/// Held while an index is read, changed and written back, so that two `pki issue` or
/// `pki revoke` at once in one directory cannot lose each other's entries. Released when
/// dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct IndexLock {
    _file: fs::File,
}

impl IndexLock {
    pub fn acquire(dir: &Path) -> Result<Self, PkiError> {
        // A file of its own: the index itself is replaced by renames, which a lock on it
        // would not survive.
        let path = dir.join(".issued.lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open the index lock", &path))?;
        file.lock().map_err(io("lock", &path))?;
        Ok(Self { _file: file })
    }
}

impl Index {
    /// The index of `dir`; empty when it has none yet (a new PKI, or one made before
    /// indexes existed: see [`Index::role_on_disk`]).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let path = index_path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(io("read the index", &path)(e)),
        };
        toml::from_str(&text).map_err(|e| PkiError::BadIndex {
            path,
            reason: e.message().to_owned(),
        })
    }

    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        let path = index_path(dir);
        let text = toml::to_string(self).map_err(|e| PkiError::BadIndex {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        replace_file(&path, &format!("{HEADER}{text}"))
    }

    /// A live certificate named `name` for another role than `role`, if any: from the
    /// index, or for a PKI directory older than the index, from `DIR/NAME.pem` itself.
    pub fn conflicting(&self, dir: &Path, name: &str, role: Role) -> Option<IndexEntry> {
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let listed: Vec<&IndexEntry> = self
            .certificates
            .iter()
            .filter(|e| e.name == name)
            .collect();
        if listed.is_empty() {
            return Self::on_disk(dir, name).filter(|e| e.role == Some(role.other()));
        }
        listed
            .into_iter()
            .find(|e| e.role == Some(role.other()) && e.is_live(&today))
            .cloned()
    }

    /// `DIR/NAME.pem` as an entry, for certificates issued before the index existed. Its
    /// role is the one its URI says, else guessed from its usages as older versions set
    /// them (sidecars had serverAuth, coordinators clientAuth only).
    pub fn on_disk(dir: &Path, name: &str) -> Option<IndexEntry> {
        let pem = fs::read(dir.join(format!("{name}.pem"))).ok()?;
        let id = identity_from_pem(&pem)?;
        let role = match id.roles.first() {
            Some((role, _)) => *role,
            None if id.server_auth => Role::Sidecar,
            None => Role::Coordinator,
        };
        let not_after = chrono::DateTime::from_timestamp(id.not_after, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        Some(IndexEntry {
            name: name.to_owned(),
            role: Some(role),
            serial: id.serial,
            not_after,
            revoked_at: None,
        })
    }
}
