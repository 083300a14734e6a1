//! Which client certificates are revoked: `[tls] revoked` (names or serials, fixed for the
//! life of the process) and `[tls] crl` (a CRL file signed by `client_ca`).
//!
//! The CRL is re-read while the sidecar runs, so revoking a stolen certificate needs no
//! restart: each check looks at the file's modification time, size and inode at most every
//! [`RECHECK_EVERY`], and reads it again only when one of them changed. `coordinator pki
//! revoke` replaces the file by renaming a new one over it, so a reader never sees half a
//! file. A CRL that cannot be read or whose signature does not check out refuses every
//! client (fails closed) until it is fixed: an attacker who can corrupt the file must not
//! thereby un-revoke a certificate.
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use agentfleet_common::tls::CertIdentity;
use agentfleet_common::tls::identity::normalize_serial;

/// How often the CRL file's metadata is looked at (at most; only when clients call).
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
#[error("cannot use the CRL `{}` ([tls] crl): {reason}", path.display())]
pub struct CrlError {
    pub path: PathBuf,
    pub reason: String,
}

/// The revocation state a sidecar checks each client certificate against.
#[derive(Debug)]
pub struct Revocations {
    /// `[tls] revoked`, serials in `serial_hex` form; names as written.
    serials: HashSet<String>,
    names: HashSet<String>,
    crl: Option<CrlWatch>,
}

impl Revocations {
    /// Reads the CRL (if any) now, so that a bad one stops the sidecar from starting.
    pub fn load(
        revoked: &[String],
        crl: Option<&Path>,
        client_ca: &Path,
    ) -> Result<Self, CrlError> {
        let mut serials = HashSet::new();
        let mut names = HashSet::new();
        for entry in revoked.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            // An entry may be a name that happens to be hex; both readings are refused.
            if let Some(serial) = normalize_serial(entry) {
                serials.insert(serial);
            }
            names.insert(entry.to_owned());
        }
        let crl = crl
            .map(|path| CrlWatch::open(path, client_ca))
            .transpose()?;
        Ok(Self {
            serials,
            names,
            crl,
        })
    }

    /// `Ok(true)` when `id` is revoked; `Err` when the CRL cannot be used right now.
    pub fn is_revoked(&self, id: &CertIdentity) -> Result<bool, CrlError> {
        if self.serials.contains(&id.serial)
            || id.roles.iter().any(|(_, name)| self.names.contains(name))
            || id
                .common_name
                .as_ref()
                .is_some_and(|cn| self.names.contains(cn))
        {
            return Ok(true);
        }
        match &self.crl {
            Some(crl) => Ok(crl.current()?.contains(&id.serial)),
            None => Ok(false),
        }
    }

    /// Tests look at the file on every check instead of every [`RECHECK_EVERY`].
    #[cfg(test)]
    pub fn recheck_every(&mut self, interval: Duration) {
        if let Some(crl) = &mut self.crl {
            crl.recheck = interval;
        }
    }
}

/// What identifies one version of the CRL file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> std::io::Result<Self> {
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

#[derive(Debug)]
struct CrlWatch {
    path: PathBuf,
    /// `client_ca` as read at start: the TLS layer trusts that one until a restart too.
    ca_pem: Vec<u8>,
    recheck: Duration,
    state: Mutex<CrlState>,
}

#[derive(Debug)]
struct CrlState {
    looked_at: Instant,
    stamp: Option<FileStamp>,
    serials: Result<Arc<HashSet<String>>, String>,
}

impl CrlWatch {
    fn open(path: &Path, client_ca: &Path) -> Result<Self, CrlError> {
        let error = |reason: String| CrlError {
            path: path.to_owned(),
            reason,
        };
        let ca_pem = std::fs::read(client_ca).map_err(|e| {
            error(format!(
                "failed to read client_ca `{}`: {e}",
                client_ca.display()
            ))
        })?;
        let stamp = FileStamp::of(path).map_err(|e| error(e.to_string()))?;
        let serials = read_crl(path, &ca_pem).map_err(error)?;
        tracing::info!(crl = %path.display(), revoked = serials.len(), "read the CRL");
        Ok(Self {
            path: path.to_owned(),
            ca_pem,
            recheck: RECHECK_EVERY,
            state: Mutex::new(CrlState {
                looked_at: Instant::now(),
                stamp: Some(stamp),
                serials: Ok(Arc::new(serials)),
            }),
        })
    }

    /// The revoked serials of the CRL as it is now on disk (re-read when it changed).
    fn current(&self) -> Result<Arc<HashSet<String>>, CrlError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.looked_at.elapsed() >= self.recheck {
            state.looked_at = Instant::now();
            let stamp = FileStamp::of(&self.path).ok();
            if stamp != state.stamp {
                state.serials = match &stamp {
                    None => Err("the file is gone".to_owned()),
                    Some(_) => read_crl(&self.path, &self.ca_pem).map(Arc::new),
                };
                match &state.serials {
                    Ok(serials) => tracing::info!(
                        crl = %self.path.display(),
                        revoked = serials.len(),
                        "re-read the CRL"
                    ),
                    Err(reason) => tracing::error!(
                        crl = %self.path.display(),
                        %reason,
                        "the CRL cannot be used: refusing every client until it is fixed"
                    ),
                }
                state.stamp = stamp;
            }
        }
        state.serials.clone().map_err(|reason| CrlError {
            path: self.path.clone(),
            reason,
        })
    }
}

fn read_crl(path: &Path, ca_pem: &[u8]) -> Result<HashSet<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    agentfleet_common::tls::crl::revoked_serials(&bytes, ca_pem).map_err(|e| e.to_string())
}
