//! Linux: `sidecar install` writes a systemd unit that runs `sidecar serve --config FILE`,
//! enables and starts it; `sidecar uninstall` stops, disables and removes it.
use std::path::Path;
use std::time::Duration;

use super::{ServiceError, io};

pub const UNIT_NAME: &str = "agentfleet-sidecar.service";
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The systemd unit that runs `exe serve --config config`, as root or as `user`.
pub fn unit_text(exe: &Path, config: &Path, stop_grace: Duration, user: Option<&str>) -> String {
    // KillMode=process: on stop, systemd signals only the sidecar itself and leaves the
    // rest of the unit's cgroup alone. The rest is the command jobs' supervisors (and their
    // steps): they must outlive a stop/restart/upgrade of the sidecar, which re-attaches to
    // them when it starts again (the default, control-group, would kill every job). The
    // sidecar's own shutdown stops what cannot be handed over; TimeoutStopSec bounds it.
    let stop_timeout = stop_grace.as_secs() + 20;
    // As a dedicated user, the service also gives up what no job of a database server's
    // scheduler needs: new privileges (setuid), kernel and cgroup settings, a writable /usr,
    // /boot and /etc. Jobs keep the network, /tmp, /var and their working directories.
    // (As root these would break jobs that legitimately administer the machine.)
    let account = match user {
        Some(user) => format!(
            "User={user}\n\
             NoNewPrivileges=yes\n\
             ProtectSystem=full\n\
             ProtectKernelTunables=yes\n\
             ProtectKernelModules=yes\n\
             ProtectKernelLogs=yes\n\
             ProtectControlGroups=yes\n\
             RestrictSUIDSGID=yes\n\
             RestrictRealtime=yes\n\
             LockPersonality=yes\n"
        ),
        None => String::new(),
    };
    format!(
        "[Unit]\n\
         Description=agentfleet sidecar (starts SQL Server Agent jobs and command jobs for the coordinator)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         {account}\
         ExecStart=\"{exe}\" serve --config \"{config}\"\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         KillMode=process\n\
         TimeoutStopSec={stop_timeout}\n\
         LimitNOFILE=65536\n\
         UMask=0077\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = exe.display(),
        config = config.display(),
    )
}

/// Installs and starts the unit; returns what it did, one line per step. With `user`, the
/// service runs as that (existing) account, which is given `state_dir`. With `dry_run`,
/// returns the unit text and changes nothing.
pub fn install(
    exe: &Path,
    config: &Path,
    state_dir: &Path,
    stop_grace: Duration,
    user: Option<&str>,
    dry_run: bool,
) -> Result<Vec<String>, ServiceError> {
    let config = std::fs::canonicalize(config).map_err(io("find", config))?;
    let account = user.map(find_user).transpose()?;
    let unit = unit_text(exe, &config, stop_grace, user);
    if dry_run {
        return Ok(vec![unit]);
    }
    let mut done = Vec::new();
    if let Some(account) = &account {
        agentfleet_common::private::create_dir(state_dir, true).map_err(io("create", state_dir))?;
        give(state_dir, account).map_err(io("give to the service user", state_dir))?;
        done.push(format!(
            "gave {} to {} (mode 0700); the user must be able to read {}",
            state_dir.display(),
            account.name,
            config.display()
        ));
    }
    let path = Path::new(UNIT_DIR).join(UNIT_NAME);
    std::fs::write(&path, unit).map_err(io("write", &path))?;
    done.push(format!("wrote {}", path.display()));
    for args in [&["daemon-reload"][..], &["enable", "--now", UNIT_NAME]] {
        systemctl(args)?;
        done.push(format!("ran systemctl {}", args.join(" ")));
    }
    done.push(format!(
        "check it with: systemctl status {UNIT_NAME}; logs: journalctl -u {UNIT_NAME}"
    ));
    Ok(done)
}

/// The account a service runs as.
struct Account {
    name: String,
    #[cfg(unix)]
    uid: nix::unistd::Uid,
    #[cfg(unix)]
    gid: nix::unistd::Gid,
}

/// The account `name`, which must exist (create it with `useradd --system`).
#[cfg(unix)]
fn find_user(name: &str) -> Result<Account, ServiceError> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => Ok(Account {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        }),
        Ok(None) => Err(ServiceError::Command {
            command: format!("sidecar install --user {name}"),
            detail: format!(
                "there is no user `{name}`; create it first, e.g. `useradd --system --home-dir /var/lib/agentfleet --shell /usr/sbin/nologin {name}`"
            ),
        }),
        Err(e) => Err(ServiceError::Command {
            command: format!("sidecar install --user {name}"),
            detail: format!("cannot look the user up: {e}"),
        }),
    }
}

/// Systemd units (and so `--user`) exist on Linux only.
#[cfg(not(unix))]
fn find_user(_name: &str) -> Result<Account, ServiceError> {
    Err(ServiceError::UserOnLinuxOnly)
}

/// Makes `dir` the account's own.
#[cfg(unix)]
fn give(dir: &Path, account: &Account) -> std::io::Result<()> {
    nix::unistd::chown(dir, Some(account.uid), Some(account.gid)).map_err(std::io::Error::from)
}

#[cfg(not(unix))]
fn give(_dir: &Path, _account: &Account) -> std::io::Result<()> {
    Ok(())
}

/// Stops, disables and removes the unit; returns what it did.
pub fn uninstall(dry_run: bool) -> Result<Vec<String>, ServiceError> {
    let path = Path::new(UNIT_DIR).join(UNIT_NAME);
    if dry_run {
        return Ok(vec![
            format!("would run systemctl disable --now {UNIT_NAME}"),
            format!("would remove {}", path.display()),
        ]);
    }
    let mut done = Vec::new();
    if path.exists() {
        systemctl(&["disable", "--now", UNIT_NAME])?;
        done.push(format!("ran systemctl disable --now {UNIT_NAME}"));
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
        done.push(format!("removed {}", path.display()));
        systemctl(&["daemon-reload"])?;
        done.push("ran systemctl daemon-reload".to_owned());
    } else {
        done.push(format!(
            "{} is not installed; nothing to do",
            path.display()
        ));
    }
    Ok(done)
}

fn systemctl(args: &[&str]) -> Result<(), ServiceError> {
    let command = format!("systemctl {}", args.join(" "));
    let output = std::process::Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| ServiceError::Command {
            command: command.clone(),
            detail: format!("{e}; is this a systemd system?"),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ServiceError::Command {
            command,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_serve_with_the_config() {
        let unit = unit_text(
            Path::new("/usr/local/bin/sidecar"),
            Path::new("/etc/agentfleet/sidecar.toml"),
            Duration::from_secs(10),
            None,
        );
        assert!(unit.contains(
            "ExecStart=\"/usr/local/bin/sidecar\" serve --config \"/etc/agentfleet/sidecar.toml\"\n"
        ));
        assert!(unit.contains("TimeoutStopSec=30\n"));
        assert!(unit.contains("KillMode=process\n"));
        // Room for connections and journals; the sidecar caps its connections itself.
        assert!(unit.contains("LimitNOFILE=65536\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
        // Files the service creates are its own.
        assert!(unit.contains("UMask=0077\n"));
        assert!(!unit.contains("User="));
    }

    #[test]
    fn a_dedicated_user_gets_a_hardened_unit() {
        let unit = unit_text(
            Path::new("/usr/local/bin/sidecar"),
            Path::new("/etc/agentfleet/sidecar.toml"),
            Duration::from_secs(10),
            Some("agentfleet"),
        );
        for line in [
            "User=agentfleet\n",
            "NoNewPrivileges=yes\n",
            "ProtectSystem=full\n",
            "RestrictSUIDSGID=yes\n",
            "KillMode=process\n",
        ] {
            assert!(unit.contains(line), "{line} missing from:\n{unit}");
        }
        // Jobs still need /tmp shared with the programs they talk to, and the network.
        assert!(!unit.contains("PrivateTmp") && !unit.contains("PrivateNetwork"));
    }

    #[test]
    fn an_unknown_user_is_refused_with_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(&config, "").unwrap();
        let err = install(
            Path::new("/usr/local/bin/sidecar"),
            &config,
            &dir.path().join("state"),
            Duration::from_secs(10),
            Some("no-such-user-agentfleet"),
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("useradd --system"), "{err}");
    }
}
