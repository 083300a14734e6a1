//! A real `sidecar serve` process on 127.0.0.1 with mTLS, started from a config this module
//! writes. Ready means: it printed its one `{"event":"listening",...}` line on stdout.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::binaries;
use crate::files::{toml_list, toml_path, toml_str};
use crate::pki::Pki;
use crate::process::{self, send_signal};
use crate::wine::{Wine, windows_path};

/// How long a sidecar may take to bind and say so.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a sidecar may take to shut down on SIGTERM before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of a test sidecar beyond its name and jobs.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub slots: u32,
    /// Client certificate names allowed to call (`[tls] allow_clients`).
    pub allow_clients: Vec<String>,
    /// `stop_grace`: kept short so that stop tests are quick.
    pub stop_grace: String,
    /// Extra top-level TOML settings, written before the `[tls]` table.
    pub extra_toml: String,
    /// Extra settings of the `[tls]` table (e.g. `crl = "..."`).
    pub tls_toml: String,
    /// Extra environment of the sidecar process.
    pub env: Vec<(String, String)>,
    /// Run the Windows `sidecar.exe` under Wine instead, with Windows paths in its config.
    pub wine: Option<Wine>,
}

impl Default for SidecarOptions {
    fn default() -> Self {
        Self {
            slots: 2,
            allow_clients: vec!["coordinator".into()],
            stop_grace: "2s".into(),
            extra_toml: String::new(),
            tls_toml: String::new(),
            env: Vec::new(),
            wine: None,
        }
    }
}

/// A running sidecar; killed (after a bounded graceful stop) when dropped. When the test
/// is failing, its stderr log is printed on drop.
pub struct Sidecar {
    name: String,
    dir: PathBuf,
    config: PathBuf,
    state_dir: PathBuf,
    stderr_log: PathBuf,
    stdout_log: PathBuf,
    pki: Pki,
    jobs_toml: String,
    options: SidecarOptions,
    child: Option<Child>,
    addr: SocketAddr,
}

impl Sidecar {
    /// Issues the sidecar's certificate from `pki` if it has none yet, writes its config
    /// under `test_dir/sidecars/NAME/`, spawns `sidecar serve` and waits until it listens.
    pub fn start(
        test_dir: &Path,
        pki: &Pki,
        name: &str,
        jobs_toml: &str,
        options: SidecarOptions,
    ) -> Self {
        if !pki.pair(name).cert.is_file() {
            pki.issue_sidecar(name);
        }
        let dir = test_dir.join("sidecars").join(name);
        let state_dir = dir.join("state");
        std::fs::create_dir_all(&state_dir).expect("create the sidecar's state dir");
        let mut sidecar = Self {
            name: name.to_owned(),
            config: dir.join("sidecar.toml"),
            stderr_log: dir.join("stderr.log"),
            stdout_log: dir.join("stdout.log"),
            dir,
            state_dir,
            pki: pki.clone(),
            jobs_toml: jobs_toml.to_owned(),
            options,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        sidecar.spawn("127.0.0.1:0");
        sidecar
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (`127.0.0.1:PORT`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`, as a fleet file names it.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// This sidecar's directory: config, state, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process at once (SIGKILL), as a crash would; its jobs are not stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM (killed if it takes longer than a few seconds).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        process::terminate(&mut child, SHUTDOWN_GRACE)
    }

    /// Replaces the extra environment of the process from its next (re)start on (e.g. to
    /// disarm a crash point before a restart).
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.options.env = env;
    }

    /// Starts it again (stopping it first if it runs) with the same config, state dir and
    /// port, and waits until it listens again.
    pub fn restart(&mut self) {
        self.stop();
        let listen = self.addr.to_string();
        let old = self.addr;
        self.spawn(&listen);
        assert_eq!(
            self.addr, old,
            "sidecar `{}` restarted on another address",
            self.name
        );
    }

    /// A path as the sidecar names it: Windows paths (`Z:\...`) under Wine.
    fn path_toml(&self, path: &Path) -> String {
        match &self.options.wine {
            Some(_) => toml_str(windows_path(path)),
            None => toml_path(path),
        }
    }

    fn config_text(&self, listen: &str) -> String {
        let tls = self.pki.pair(&self.name);
        format!(
            "name = {name}\nlisten = {listen}\nslots = {slots}\nstate_dir = {state}\nstop_grace = {grace}\n{extra}\n\
             [tls]\ncert = {cert}\nkey = {key}\nclient_ca = {ca}\nallow_clients = {allow}\n{tls_extra}\n\n{jobs}\n",
            name = toml_str(&self.name),
            listen = toml_str(listen),
            slots = self.options.slots,
            state = self.path_toml(&self.state_dir),
            grace = toml_str(&self.options.stop_grace),
            extra = self.options.extra_toml,
            cert = self.path_toml(&tls.cert),
            key = self.path_toml(&tls.key),
            ca = self.path_toml(&self.pki.ca()),
            allow = toml_list(&self.options.allow_clients),
            tls_extra = self.options.tls_toml,
            jobs = self.jobs_toml,
        )
    }

    fn spawn(&mut self, listen: &str) {
        std::fs::write(&self.config, self.config_text(listen)).expect("write the sidecar config");
        let stderr = append(&self.stderr_log);
        let (mut cmd, config) = match &self.options.wine {
            Some(wine) => (wine.command("sidecar"), windows_path(&self.config).into()),
            None => (
                Command::new(binaries::binary("sidecar")),
                self.config.clone().into_os_string(),
            ),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        clean_env(&mut cmd);
        cmd.env("NO_COLOR", "1");
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let ready = watch_stdout(stdout, append(&self.stdout_log));
        self.child = Some(child);

        let line = match ready.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => self.fail(&format!(
                "did not print its `listening` line within {READY_TIMEOUT:?}"
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = self.child.as_mut().and_then(|c| c.wait().ok());
                self.fail(&format!(
                    "closed stdout without printing its `listening` line (exit status: {status:?})"
                ))
            }
        };
        match parse_listening(&line, &self.name) {
            Ok(addr) => self.addr = addr,
            Err(why) => self.fail(&format!("printed `{line}` as its first stdout line: {why}")),
        }
    }

    /// Panics with the sidecar's stderr (the process is killed by `Drop`).
    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        panic!(
            "sidecar `{}` ({}) {what}\n--- its stderr ({}) ---\n{log}",
            self.name,
            self.config.display(),
            self.stderr_log.display()
        );
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A graceful stop (one SIGTERM: a second one means "exit at once") lets the
            // sidecar stop its jobs' process trees too.
            process::terminate(&mut child, SHUTDOWN_GRACE);
        }
        // Command executions run under supervisor processes that outlive the sidecar by
        // design (`sidecar supervise --execution-dir STATE_DIR/...`); a test must not leave
        // them, or their jobs, behind. The state dir is unique to this test.
        let state_dir = match &self.options.wine {
            Some(_) => Some(windows_path(&self.state_dir)),
            None => self.state_dir.to_str().map(str::to_owned),
        };
        if let Some(state_dir) = state_dir.as_deref() {
            let leftovers = process::with_descendants(&process::pids_with_arg(state_dir));
            for pid in leftovers {
                send_signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            eprintln!(
                "--- sidecar `{}` stderr ({}) ---\n{log}--- end of sidecar `{}` stderr ---",
                self.name,
                self.stderr_log.display(),
                self.name
            );
        }
    }
}

/// Removes inherited `AGENTFLEET_*` variables, so that the developer's environment cannot
/// override what a test configures.
pub(crate) fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AGENTFLEET_") {
            cmd.env_remove(key);
        }
    }
}

fn append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("failed to open {}: {e}", path.display()))
}

/// Copies the sidecar's stdout to `log` on a thread; sends its first line on the channel.
fn watch_stdout(
    stdout: impl std::io::Read + Send + 'static,
    mut log: File,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if let Some(tx) = tx.take() {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

/// Checks `{"event":"listening","name":NAME,"addr":"127.0.0.1:PORT"}` and returns the address.
fn parse_listening(line: &str, name: &str) -> Result<SocketAddr, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    if value["event"] != "listening" {
        return Err("`event` is not \"listening\"".into());
    }
    if value["name"] != name {
        return Err(format!("`name` is not {name:?}"));
    }
    let addr: SocketAddr = value["addr"]
        .as_str()
        .ok_or("`addr` is not a string")?
        .parse()
        .map_err(|e| format!("`addr` is not a socket address: {e}"))?;
    if !addr.ip().is_loopback() || addr.port() == 0 {
        return Err(format!("`addr` {addr} is not the bound loopback port"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::parse_listening;

    #[test]
    fn listening_line() {
        let line = r#"{"event":"listening","name":"s1","addr":"127.0.0.1:4321"}"#;
        assert_eq!(parse_listening(line, "s1").unwrap().port(), 4321);
        assert!(parse_listening(line, "s2").is_err());
        assert!(
            parse_listening(
                r#"{"event":"listening","name":"s1","addr":"127.0.0.1:0"}"#,
                "s1"
            )
            .is_err()
        );
        assert!(parse_listening("listening on 127.0.0.1:4321", "s1").is_err());
    }
}
