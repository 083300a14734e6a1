//! The unit `sidecar install` writes, checked by systemd's own tools where they are
//! installed (Debian's `systemd` package provides `systemd-analyze`; systemd need not be
//! running): `systemd-analyze verify` finds nothing to say, and `systemd-analyze security
//! --offline=true` rates its exposure 5.0 or lower (the unit before hardening: 9.6).
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agentfleet_sidecar::service::{UNIT_NAME, unit_text};

/// Highest exposure `systemd-analyze security` may give the unit.
const MAX_EXPOSURE: f64 = 5.0;
/// `--offline` came with systemd 252.
const MIN_SYSTEMD: u32 = 252;

/// systemd-analyze's major version, or why the test cannot use it.
fn systemd_analyze() -> Result<u32, String> {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .map_err(|e| format!("systemd-analyze is not installed ({e})"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "systemd 252 (252.38-1~deb12u1)"
    let version = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected `systemd-analyze --version`: {text}"))?;
    if version < MIN_SYSTEMD {
        return Err(format!(
            "systemd-analyze {version} has no --offline (needs {MIN_SYSTEMD}+)"
        ));
    }
    Ok(version)
}

/// Writes the unit (running this test binary, which exists, so `verify` can check it)
/// into a fresh directory; returns its path.
fn write_unit(dir: &Path, user: Option<&str>) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let config = dir.join("sidecar.toml");
    std::fs::write(&config, "").unwrap();
    let state_dir = dir.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let path = dir.join(UNIT_NAME);
    let text = unit_text(&exe, &config, &state_dir, Duration::from_secs(10), user);
    std::fs::write(&path, text).unwrap();
    path
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// "→ Overall exposure level for agentfleet-sidecar.service: 3.2 OK 🙂" → 3.2
fn exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    line.rsplit(": ")
        .next()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn systemd_verifies_the_unit_and_rates_it_hardened() {
    if let Err(why) = systemd_analyze() {
        eprintln!("SKIPPED: {why}; the unit is checked by its snapshot test only");
        return;
    }
    for user in [None, Some("agentfleet")] {
        let dir = tempfile::tempdir().unwrap();
        let unit = write_unit(dir.path(), user);
        let (ok, text) = analyze(&["verify"], &unit);
        assert!(ok && text.trim().is_empty(), "verify ({user:?}):\n{text}");
        let (ok, report) = analyze(&["security", "--offline=true"], &unit);
        assert!(ok, "security ({user:?}):\n{report}");
        let level = exposure(&report).unwrap_or_else(|| panic!("no exposure in:\n{report}"));
        assert!(
            level <= MAX_EXPOSURE,
            "exposure {level} > {MAX_EXPOSURE} ({user:?}):\n{report}"
        );
        eprintln!("systemd-analyze security ({user:?}): exposure {level}");
    }
}

#[test]
fn exposure_is_read_from_the_report() {
    let report = "✗ PrivateNetwork=  ...  0.5\n\n→ Overall exposure level for agentfleet-sidecar.service: 3.2 OK 🙂\n";
    assert_eq!(exposure(report), Some(3.2));
    assert_eq!(exposure("nothing"), None);
}
