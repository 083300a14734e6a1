//! The Windows binaries (`x86_64-pc-windows-gnu`) under Wine, for the Windows suite
//! (`tests/windows.rs`, run by `.ci/windows-e2e`, which builds them and prepares the Wine
//! prefix). Windows programs see the Unix file system as drive `Z:`.
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the Windows binaries are (`target/x86_64-pc-windows-gnu/<profile>`).
pub const BIN_DIR_VAR: &str = "AGENTFLEET_WINDOWS_BIN_DIR";
/// The Wine loader; default `/usr/lib/wine/wine64` (Debian's, run directly: there may be
/// no 32-bit Wine for the `wine` wrapper).
pub const LOADER_VAR: &str = "AGENTFLEET_WINE";
const DEFAULT_LOADER: &str = "/usr/lib/wine/wine64";

#[derive(Debug, Clone)]
pub struct Wine {
    loader: PathBuf,
    bin_dir: PathBuf,
}

impl Wine {
    /// Wine and the Windows binaries, when `AGENTFLEET_WINDOWS_BIN_DIR` names them.
    pub fn from_env() -> Option<Self> {
        let bin_dir = PathBuf::from(std::env::var_os(BIN_DIR_VAR)?);
        let loader = std::env::var_os(LOADER_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_LOADER.into());
        Some(Self { loader, bin_dir })
    }

    /// `NAME.exe` among the Windows binaries (Unix path).
    pub fn exe(&self, name: &str) -> PathBuf {
        let path = self.bin_dir.join(format!("{name}.exe"));
        assert!(path.is_file(), "{} is not built", path.display());
        path
    }

    /// A command that runs `NAME.exe` under Wine; Wine's own environment (`WINEPREFIX`,
    /// `WINEDEBUG`) is inherited.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(&self.loader);
        cmd.arg(self.exe(name));
        cmd
    }
}

/// `path` (absolute, Unix) as a Windows program under Wine names it: `Z:\tmp\...`.
pub fn windows_path(path: &Path) -> String {
    let unix = path.to_str().expect("test paths are UTF-8");
    assert!(unix.starts_with('/'), "{unix} is not absolute");
    format!("Z:{}", unix.replace('/', "\\"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_are_on_drive_z() {
        assert_eq!(
            windows_path(Path::new("/tmp/e2e/pki/ca.pem")),
            "Z:\\tmp\\e2e\\pki\\ca.pem"
        );
    }
}
