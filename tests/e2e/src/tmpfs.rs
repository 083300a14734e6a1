//! A small tmpfs mounted over a directory, to give the coordinator a disk that fills up.
//! Needs root (the tests run as root in CI); callers skip, saying so, when it cannot be
//! mounted. Unmounted when dropped, whatever the test did.
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at `dir` until dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=`, e.g. "2m") over `dir`, which must
    /// exist. The error says why it could not (not root, no `mount`).
    pub fn mount(dir: &Path, size: &str) -> Result<Self, String> {
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            dir,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Grows (or shrinks) the mounted tmpfs to `size`, keeping its files.
    pub fn resize(&self, size: &str) -> Result<(), String> {
        mount(&["-o", &format!("remount,size={size}"), "tmpfs"], &self.dir)
    }
}

fn mount(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mount {} {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a process that still has a file open there must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}
