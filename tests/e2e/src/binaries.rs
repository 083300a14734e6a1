//! Where the binaries under test live, and building them once per test process so they
//! are never stale: `cargo test -p agentfleet-e2e` does not build other packages' binaries.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The packages whose binaries the tests spawn.
const PACKAGES: [&str; 3] = [
    "agentfleet-sidecar",
    "agentfleet-coordinator",
    "sqlagent-standin",
];

/// `target/<profile>/` of the running test binary (`target/<profile>/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's own path");
    let mut dir = exe
        .parent()
        .expect("the test binary has a parent dir")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary (`coordinator`, `sidecar`, `sqlagent-standin`), built if needed.
pub fn binary(name: &str) -> PathBuf {
    ensure_built();
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary `{}` not found after building; is `{name}` a binary of {PACKAGES:?}?",
        path.display()
    );
    path
}

/// Runs `cargo build --bins` for the packages under test, once per process, with the
/// same profile and target dir as the running tests. Panics with cargo's output on failure.
pub fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = BUILT.get_or_init(build) {
        panic!("{e}");
    }
}

fn build() -> Result<(), String> {
    let profile = profile_dir();
    let target_dir = profile
        .parent()
        .ok_or_else(|| format!("`{}` has no parent (the target dir)", profile.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .arg("build")
        .arg("--bins")
        .arg("--target-dir")
        .arg(target_dir);
    for package in PACKAGES {
        cmd.arg("-p").arg(package);
    }
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let output = cmd
        .output()
        .map_err(|e| format!("failed to run {cmd:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "failed to build the binaries under test ({cmd:?} exited with {}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// The workspace root: this crate lives in `<root>/tests/e2e`.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("tests/e2e sits two levels below the workspace root")
}
