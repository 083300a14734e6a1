//! One test's world: a temporary directory with a PKI, sidecars and coordinator runs. When
//! the test fails, the directory is kept and every coordinator output is printed.
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::TempDir;

use crate::coordinator::{self, CoordinatorOutput};
use crate::files;
use crate::pki::{CertPair, Pki};
use crate::sidecar::{Sidecar, SidecarOptions};

/// The client certificate name the test sidecars allow by default.
pub const COORDINATOR_CERT: &str = "coordinator";

pub struct TestEnv {
    dir: Option<TempDir>,
    path: PathBuf,
    pki: Pki,
    coordinator_cert: CertPair,
    /// Every coordinator run of this test, printed when the test fails.
    runs: Mutex<Vec<String>>,
}

impl TestEnv {
    /// Builds the binaries (once per process), makes a tempdir named after the test, a CA
    /// in `DIR/pki` and the `coordinator` client certificate.
    pub fn new(test: &str) -> Self {
        crate::binaries::ensure_built();
        agentfleet_common::tls::install_crypto_provider();
        let dir = tempfile::Builder::new()
            .prefix(&format!("agentfleet-e2e-{test}-"))
            .tempdir()
            .expect("create the test's tempdir");
        let path = dir.path().to_owned();
        let pki = Pki::init(&path.join("pki"));
        let coordinator_cert = pki.issue_coordinator(COORDINATOR_CERT);
        std::fs::create_dir_all(path.join("home")).expect("create the coordinator home");
        Self {
            dir: Some(dir),
            path,
            pki,
            coordinator_cert,
            runs: Mutex::new(Vec::new()),
        }
    }

    /// The test's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The `coordinator` client certificate (allowed by default).
    pub fn coordinator_cert(&self) -> &CertPair {
        &self.coordinator_cert
    }

    /// Starts sidecar `name` offering `jobs_toml` (`[[job]]` tables).
    pub fn start_sidecar(&self, name: &str, jobs_toml: &str, options: SidecarOptions) -> Sidecar {
        Sidecar::start(&self.path, &self.pki, name, jobs_toml, options)
    }

    /// Writes `text` to `DIR/name` and returns the path.
    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the file's directory");
        }
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("failed to write {}: {e}", path.display()));
        path
    }

    /// Writes `DIR/fleet.toml` with the `coordinator` certificate and these sidecars.
    pub fn write_fleet(&self, sidecars: &[&Sidecar]) -> PathBuf {
        self.write_fleet_as("fleet.toml", &self.coordinator_cert, sidecars)
    }

    /// Writes a fleet file that authenticates with `client`.
    pub fn write_fleet_as(&self, name: &str, client: &CertPair, sidecars: &[&Sidecar]) -> PathBuf {
        self.write_file(name, &files::fleet_toml(&self.pki.ca(), client, sidecars))
    }

    /// Runs `coordinator ARGS` in the test dir (with its own `AGENTFLEET_HOME`).
    pub fn coordinator<I, S>(&self, args: I) -> CoordinatorOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = coordinator::run(&self.path, &self.path.join("home"), args, &[]);
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(out.to_string());
        out
    }

    /// `coordinator run PLAN --fleet FLEET --json`.
    pub fn run_plan(&self, plan: &Path, fleet: &Path) -> CoordinatorOutput {
        self.coordinator([
            OsStr::new("run"),
            plan.as_os_str(),
            OsStr::new("--fleet"),
            fleet.as_os_str(),
            OsStr::new("--json"),
        ])
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        // Sidecars print their own logs when dropped; the coordinator's are kept here.
        for run in self.runs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            eprintln!("--- coordinator run ---\n{run}");
        }
        if let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!("--- test files kept in {} ---", kept.display());
        }
    }
}
