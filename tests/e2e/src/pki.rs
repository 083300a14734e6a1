//! Test certificates, made by the real `coordinator pki` commands (so those are tested too).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::binaries;
use crate::process::run_with_deadline;

/// How long a `coordinator pki` command may take.
const PKI_TIMEOUT: Duration = Duration::from_secs(30);

/// A private CA in a directory: `ca.pem`, `ca.key`, and `NAME.pem` / `NAME.key` per issue.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

/// A certificate and its key.
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// `coordinator pki init DIR`.
    pub fn init(dir: &Path) -> Self {
        pki_command(&["init".as_ref(), dir.as_os_str()]);
        let pki = Self {
            dir: dir.to_owned(),
        };
        for file in [pki.ca(), pki.dir.join("ca.key")] {
            assert!(
                file.is_file(),
                "`coordinator pki init` did not create {}",
                file.display()
            );
        }
        pki
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (`DIR/ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The files `issue` writes for `name` (whether or not they exist yet).
    pub fn pair(&self, name: &str) -> CertPair {
        CertPair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// `coordinator pki issue DIR NAME --sidecar` (valid for localhost and loopback IPs).
    pub fn issue_sidecar(&self, name: &str) -> CertPair {
        self.issue(name, "--sidecar")
    }

    /// `coordinator pki issue DIR NAME --coordinator` (a client certificate named NAME).
    pub fn issue_coordinator(&self, name: &str) -> CertPair {
        self.issue(name, "--coordinator")
    }

    fn issue(&self, name: &str, role: &str) -> CertPair {
        pki_command(&[
            "issue".as_ref(),
            self.dir.as_os_str(),
            name.as_ref(),
            role.as_ref(),
        ]);
        let pair = self.pair(name);
        for file in [&pair.cert, &pair.key] {
            assert!(
                file.is_file(),
                "`coordinator pki issue {name} {role}` did not create {}",
                file.display()
            );
        }
        pair
    }
}

fn pki_command(args: &[&std::ffi::OsStr]) {
    let mut cmd = Command::new(binaries::binary("coordinator"));
    cmd.arg("pki").args(args);
    let shown = format!("{cmd:?}");
    let out = run_with_deadline(cmd, PKI_TIMEOUT)
        .unwrap_or_else(|e| panic!("failed to run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}
