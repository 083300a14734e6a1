//! Test certificates, made by the real `coordinator pki` commands (so those are tested too),
//! plus crafted ones `pki issue` refuses to make (expired, an older version's, a sidecar's
//! with clientAuth), signed with the same CA through rcgen.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use agentfleet_common::tls::Role;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

use crate::binaries;
use crate::process::{Finished, run_with_deadline};

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

/// A certificate `pki issue` would not make.
#[derive(Debug, Clone)]
pub struct CraftedCert {
    pub common_name: String,
    /// The role URI SAN, if any.
    pub role: Option<(Role, String)>,
    pub client_auth: bool,
    pub server_auth: bool,
    /// Valid during 2020 only.
    pub expired: bool,
}

impl CraftedCert {
    /// A coordinator certificate as versions before role URIs issued it: CN and clientAuth.
    pub fn legacy_coordinator(name: &str) -> Self {
        Self {
            common_name: name.to_owned(),
            role: None,
            client_auth: true,
            server_auth: false,
            expired: false,
        }
    }

    /// A proper coordinator certificate whose validity ended in 2020.
    pub fn expired_coordinator(name: &str) -> Self {
        Self {
            role: Some((Role::Coordinator, name.to_owned())),
            expired: true,
            ..Self::legacy_coordinator(name)
        }
    }

    /// A sidecar's certificate that also allows clientAuth (as sidecar certificates used
    /// to), so that the TLS handshake lets it through and only its role URI is left to
    /// refuse it.
    pub fn sidecar_with_client_auth(name: &str) -> Self {
        Self {
            common_name: name.to_owned(),
            role: Some((Role::Sidecar, name.to_owned())),
            client_auth: true,
            server_auth: true,
            expired: false,
        }
    }
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

    /// A directory that already holds a CA (`ca.pem`, `ca.key`).
    pub fn open(dir: &Path) -> Self {
        assert!(
            dir.join("ca.pem").is_file() && dir.join("ca.key").is_file(),
            "no CA in {}",
            dir.display()
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (`DIR/ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA's revocation list (`DIR/crl.pem`, written by `revoke`).
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// The files `issue` writes for `name` (whether or not they exist yet).
    pub fn pair(&self, name: &str) -> CertPair {
        CertPair {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    /// `coordinator pki issue DIR NAME --sidecar --host 127.0.0.1` (test sidecars are
    /// reached on 127.0.0.1; loopback names are no longer added unasked).
    pub fn issue_sidecar(&self, name: &str) -> CertPair {
        self.issue(name, &["--sidecar", "--host", "127.0.0.1"])
    }

    /// `coordinator pki issue DIR NAME --coordinator` (a client certificate named NAME).
    pub fn issue_coordinator(&self, name: &str) -> CertPair {
        self.issue(name, &["--coordinator"])
    }

    /// `coordinator pki issue DIR NAME ARGS...`, whatever its outcome.
    pub fn try_issue(&self, name: &str, args: &[&str]) -> Finished {
        let mut cmd = pki_cmd(&["issue".as_ref(), self.dir.as_os_str(), name.as_ref()]);
        cmd.args(args);
        let shown = format!("{cmd:?}");
        run_with_deadline(cmd, PKI_TIMEOUT).unwrap_or_else(|e| panic!("failed to run {shown}: {e}"))
    }

    fn issue(&self, name: &str, args: &[&str]) -> CertPair {
        let out = self.try_issue(name, args);
        assert!(
            out.status.success(),
            "`coordinator pki issue {name} {args:?}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        let pair = self.pair(name);
        for file in [&pair.cert, &pair.key] {
            assert!(
                file.is_file(),
                "`coordinator pki issue {name} {args:?}` did not create {}",
                file.display()
            );
        }
        pair
    }

    /// `coordinator pki revoke DIR TARGET` (a name or a serial).
    pub fn revoke(&self, target: &str) {
        pki_command(&["revoke".as_ref(), self.dir.as_os_str(), target.as_ref()]);
        assert!(self.crl().is_file(), "`pki revoke` wrote no crl.pem");
    }

    /// The serial number of a certificate file, as the sidecar and `pki` show it.
    pub fn serial(&self, cert: &Path) -> String {
        let pem = std::fs::read(cert).unwrap_or_else(|e| panic!("read {}: {e}", cert.display()));
        agentfleet_common::tls::identity::identity_from_pem(&pem)
            .unwrap_or_else(|| panic!("{} is not a certificate", cert.display()))
            .serial
    }

    /// Signs `spec` with this CA into `DIR/crafted/FILE.pem` + `.key`, outside the index.
    pub fn craft(&self, file: &str, spec: &CraftedCert) -> CertPair {
        let read = |name: &str| {
            let path = self.dir.join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        };
        let ca_key = KeyPair::from_pem(&read("ca.key")).expect("the CA key parses");
        let issuer = Issuer::from_ca_cert_pem(&read("ca.pem"), ca_key).expect("the CA parses");

        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "agentfleet");
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.client_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if spec.server_auth {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
        }
        if let Some((role, name)) = &spec.role {
            let uri = role.uri(name).try_into().expect("a role URI is IA5");
            params.subject_alt_names.push(SanType::URI(uri));
        }
        if spec.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &issuer)
            .expect("sign the crafted certificate");

        let dir = self.dir.join("crafted");
        std::fs::create_dir_all(&dir).expect("create the crafted dir");
        let pair = CertPair {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write the crafted certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write the crafted key");
        pair
    }
}

fn pki_cmd(args: &[&std::ffi::OsStr]) -> Command {
    let mut cmd = Command::new(binaries::binary("coordinator"));
    cmd.arg("pki").args(args);
    cmd
}

fn pki_command(args: &[&std::ffi::OsStr]) {
    let cmd = pki_cmd(args);
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
