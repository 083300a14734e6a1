//! Headless Chromium for the run report: loads a page from a file, with no network and no
//! profile, and says what the page logged to its console (a report logs nothing, so any
//! line is an error) and what its DOM became. Debian's `chromium` package; `.ci/run`
//! installs it.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::run_with_deadline;

/// How long one headless load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(90);

/// A Chromium found on PATH.
pub struct Chromium {
    program: PathBuf,
}

/// What one headless load left behind.
pub struct Loaded {
    /// The DOM after the page's scripts ran (`--dump-dom`), or empty for a screenshot.
    pub dom: String,
    /// The page's console messages and uncaught errors.
    pub console: Vec<String>,
    /// Chromium's own stderr, for messages.
    pub stderr: String,
}

impl Chromium {
    /// `chromium` (or `chromium-browser`) on PATH, if installed.
    pub fn find() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|p| p.is_file())
            .map(|program| Self { program })
    }

    /// Loads `page` and returns its DOM once its scripts ran.
    pub fn dump_dom(&self, page: &Path) -> Loaded {
        self.load(page, &["--dump-dom".to_owned()])
    }

    /// Loads `page` in a `width`×`height` window and writes a PNG of it to `png`.
    pub fn screenshot(&self, page: &str, png: &Path, width: u32, height: u32) -> Loaded {
        self.load_url(
            page,
            &[
                format!("--window-size={width},{height}"),
                "--hide-scrollbars".to_owned(),
                format!("--screenshot={}", png.display()),
            ],
        )
    }

    fn load(&self, page: &Path, extra: &[String]) -> Loaded {
        self.load_url(&file_url(page), extra)
    }

    fn load_url(&self, url: &str, extra: &[String]) -> Loaded {
        let profile = tempfile::tempdir().expect("a profile directory for chromium");
        let mut cmd = Command::new(&self.program);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url);
        let out = run_with_deadline(cmd, LOAD_TIMEOUT).expect("run chromium");
        assert!(
            !out.timed_out,
            "chromium did not finish loading {url}:\n{}",
            out.stderr
        );
        assert!(
            out.status.success(),
            "chromium failed on {url}:\n{}",
            out.stderr
        );
        let console = out
            .stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
            .map(str::to_owned)
            .collect();
        Loaded {
            dom: out.stdout,
            console,
            stderr: out.stderr,
        }
    }
}

/// `file:///abs/path` for a local page.
pub fn file_url(page: &Path) -> String {
    let abs = std::path::absolute(page).expect("an absolute path");
    format!("file://{}", abs.display())
}
