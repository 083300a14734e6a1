//! `sidecar check`: validates the config and tests what can be tested without starting a
//! job: TLS files and the CRL, the state directory, the listen port, the command jobs' programs and,
//! with `[sqlagent]`, the SQL Server connection and Agent status.
use std::fmt;
use std::path::{Path, PathBuf};

use crate::backend::sqlagent;
use crate::config::{self, Flags, SidecarConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the checklist.
#[derive(Debug, Clone)]
pub struct Item {
    pub name: String,
    pub status: Status,
    pub detail: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "[{mark}] {}: {}", self.name, self.detail)
    }
}

fn item(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Item {
    Item {
        name: name.into(),
        status,
        detail: detail.into(),
    }
}

/// Runs every check; true when none failed. Prints each item as it is known.
pub async fn run(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn std::io::Write,
) -> bool {
    let items = checks(flags, env).await;
    for i in &items {
        let _ = writeln!(out, "{i}");
    }
    let failed = items.iter().filter(|i| i.status == Status::Fail).count();
    let _ = match failed {
        0 => writeln!(out, "all checks passed"),
        n => writeln!(out, "{n} check(s) failed"),
    };
    failed == 0
}

/// The checklist, without printing.
pub async fn checks(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Vec<Item> {
    let config = match config::load(flags, env) {
        Ok(c) => c,
        Err(e) => return vec![item("config", Status::Fail, e.to_string())],
    };
    let mut items = vec![item(
        "config",
        Status::Ok,
        format!(
            "{} is valid (sidecar `{}`)",
            config.source.display(),
            config.name
        ),
    )];
    items.push(check_tls(&config));
    if let Some(crl) = check_crl(&config) {
        items.push(crl);
    }
    items.push(check_state_dir(&config.state_dir));
    items.push(check_listen(&config).await);
    for job in &config.jobs {
        items.extend(check_job(job));
    }
    if let Some(sql) = &config.sqlagent {
        // The SQL Server Agent backend's own checks: connection, login, Agent status, jobs.
        items.extend(sqlagent::check(sql).await.into_iter().map(|c| Item {
            name: c.name,
            status: match c.status {
                sqlagent::CheckStatus::Ok => Status::Ok,
                sqlagent::CheckStatus::Warn => Status::Warn,
                sqlagent::CheckStatus::Fail => Status::Fail,
            },
            detail: c.detail,
        }));
    }
    // What the login sees in SSISDB: for Agent SSIS steps' progress and for catalog jobs.
    let catalog_jobs = !config.catalog_jobs.is_empty();
    let (conn, section) = match (&config.ssis, &config.sqlagent) {
        (Some(c), _) => (Some(c), "ssis"),
        (None, Some(c)) => (Some(c), "sqlagent"),
        (None, None) => (None, ""),
    };
    if let Some(conn) = conn {
        let found = crate::backend::ssis::check::check(conn, section, catalog_jobs).await;
        items.extend(found.into_iter().map(|c| Item {
            name: c.name,
            status: match c.status {
                sqlagent::CheckStatus::Ok => Status::Ok,
                sqlagent::CheckStatus::Warn => Status::Warn,
                sqlagent::CheckStatus::Fail => Status::Fail,
            },
            detail: c.detail,
        }));
    }
    items
}

fn check_tls(config: &SidecarConfig) -> Item {
    match (&config.tls, config.insecure) {
        (_, true) => item(
            "tls",
            Status::Warn,
            format!(
                "insecure = true: plaintext for this user's local processes on {}",
                config.listen
            ),
        ),
        (Some(tls), false) => {
            if let Err(e) =
                agentfleet_common::tls::server_config(&tls.cert, &tls.key, &tls.client_ca)
            {
                return item("tls", Status::Fail, e.to_string());
            }
            match std::fs::read_to_string(&tls.key) {
                Ok(key) if key.contains("PRIVATE KEY-----") => item(
                    "tls",
                    Status::Ok,
                    format!(
                        "certificate, key and client CA read; clients allowed: {}",
                        tls.allow_clients.join(", ")
                    ),
                ),
                Ok(_) => item(
                    "tls",
                    Status::Fail,
                    format!("`{}` holds no PEM private key", tls.key.display()),
                ),
                Err(e) => item(
                    "tls",
                    Status::Fail,
                    format!("failed to read `{}`: {e}", tls.key.display()),
                ),
            }
        }
        (None, false) => item("tls", Status::Fail, "no [tls] section"),
    }
}

/// `[tls] crl`, read and checked as `serve` will: a bad one would stop it from starting.
fn check_crl(config: &SidecarConfig) -> Option<Item> {
    let tls = config.tls.as_ref().filter(|_| !config.insecure)?;
    let path = tls.crl.as_ref()?;
    Some(match crate::server::Authorize::mtls(&config.name, tls) {
        Ok(_) => item(
            "crl",
            Status::Ok,
            format!(
                "{} read, signed by the client CA (re-read while running when it changes)",
                path.display()
            ),
        ),
        Err(e) => item("crl", Status::Fail, e.to_string()),
    })
}

fn check_state_dir(dir: &Path) -> Item {
    let probe = dir.join(".agentfleet-check");
    let result = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b"check"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => item(
            "state_dir",
            Status::Ok,
            format!("{} is writable", dir.display()),
        ),
        Err(e) => item(
            "state_dir",
            Status::Fail,
            format!(
                "{} is not writable ({e}); create it and give the service's user write access",
                dir.display()
            ),
        ),
    }
}

async fn check_listen(config: &SidecarConfig) -> Item {
    if let Some(path) = crate::config::unix_socket_path(&config.listen) {
        // Connecting, not binding: binding would replace a live sidecar's socket file.
        #[cfg(unix)]
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return item(
                "listen",
                Status::Warn,
                format!(
                    "{} is in use (is the sidecar already running?)",
                    config.listen
                ),
            );
        }
        return item("listen", Status::Ok, format!("{} is free", path.display()));
    }
    match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(_) => item("listen", Status::Ok, format!("{} is free", config.listen)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => item(
            "listen",
            Status::Warn,
            format!(
                "{} is in use (is the sidecar already running?)",
                config.listen
            ),
        ),
        Err(e) => item(
            "listen",
            Status::Fail,
            format!("cannot listen on {}: {e}", config.listen),
        ),
    }
}

fn check_job(job: &crate::backend::command::JobConfig) -> Vec<Item> {
    let name = format!("job \"{}\"", job.name);
    let mut items = Vec::new();
    if let Some(dir) = &job.working_dir
        && !dir.is_dir()
    {
        items.push(item(
            &name,
            Status::Fail,
            format!("working_dir {} does not exist", dir.display()),
        ));
    }
    let mut missing = Vec::new();
    for step in &job.steps {
        if let Some(program) = step.run.first()
            && find_program(program).is_none()
        {
            missing.push(format!("step \"{}\": `{program}` not found", step.name));
        }
    }
    if missing.is_empty() {
        items.push(item(
            &name,
            Status::Ok,
            format!("{} step(s), programs found", job.steps.len()),
        ));
    } else {
        items.push(item(
            &name,
            Status::Fail,
            format!(
                "{}; install it, put it on the service's PATH, or give its full path",
                missing.join("; ")
            ),
        ));
    }
    items
}

/// A program given as a path must exist; a bare name is looked up on PATH (with the
/// PATHEXT extensions on Windows).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = Path::new(program);
    if path.components().count() > 1 || path.is_absolute() {
        return path.is_file().then(|| path.to_owned());
    }
    let exts: Vec<String> = if cfg!(windows) {
        let pathext = std::env::var("PATHEXT").unwrap_or_else(|_| ".EXE;.CMD;.BAT;.COM".into());
        std::iter::once(String::new())
            .chain(pathext.split(';').map(str::to_owned))
            .collect()
    } else {
        vec![String::new()]
    };
    let dirs = std::env::var_os("PATH")?;
    std::env::split_paths(&dirs).find_map(|dir| {
        exts.iter()
            .map(|ext| dir.join(format!("{program}{ext}")))
            .find(|candidate| candidate.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path_and_by_path() {
        assert!(find_program("sh").is_some() || cfg!(windows));
        assert!(find_program("no-such-program-agentfleet").is_none());
        assert!(find_program("/definitely/not/here").is_none());
    }

    #[tokio::test]
    async fn checklist_reports_config_and_programs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sidecar.toml");
        std::fs::write(
            &file,
            "name = \"t\"\nlisten = \"unix:/tmp/agentfleet-check-test.sock\"\nstate_dir = \"state\"\ninsecure = true\n\
             [[job]]\nname = \"j\"\n[[job.step]]\nname = \"s\"\nrun = [\"no-such-program-agentfleet\"]\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(file),
            ..Flags::default()
        };
        let mut out = Vec::new();
        let ok = run(&flags, &|_| None, &mut out).await;
        let text = String::from_utf8(out).unwrap();
        assert!(!ok, "{text}");
        assert!(text.contains("[ok  ] config"), "{text}");
        assert!(text.contains("[warn] tls"), "{text}");
        assert!(text.contains("[ok  ] state_dir"), "{text}");
        assert!(
            text.contains("[FAIL] job \"j\": step \"s\": `no-such-program-agentfleet` not found"),
            "{text}"
        );

        let missing = Flags {
            config: Some(dir.path().join("nope.toml")),
            ..Flags::default()
        };
        assert!(!run(&missing, &|_| None, &mut Vec::new()).await);
    }
}
