//! Linux: `sidecar install` writes a systemd unit that runs `sidecar serve --config FILE`,
//! enables and starts it; `sidecar uninstall` stops, disables and removes it.
use std::path::Path;
use std::time::Duration;

use super::{ServiceError, io};

pub const UNIT_NAME: &str = "agentfleet-sidecar.service";
pub const UNIT_DIR: &str = "/etc/systemd/system";

/// The systemd unit that runs `exe serve --config config`, as root or as `user`, with
/// `state_dir` writable.
pub fn unit_text(
    exe: &Path,
    config: &Path,
    state_dir: &Path,
    stop_grace: Duration,
    user: Option<&str>,
) -> String {
    // KillMode=process: on stop, systemd signals only the sidecar itself and leaves the
    // rest of the unit's cgroup alone. The rest is the command jobs' supervisors (and their
    // steps): they must outlive a stop/restart/upgrade of the sidecar, which re-attaches to
    // them when it starts again (the default, control-group, would kill every job). The
    // sidecar's own shutdown stops what cannot be handed over; TimeoutStopSec bounds it.
    let stop_timeout = stop_grace.as_secs() + 20;
    let account = user
        .map(|user| format!("User={user}\n"))
        .unwrap_or_default();
    format!(
        "[Unit]\n\
         Description=agentfleet sidecar (starts SQL Server Agent jobs and command jobs for the coordinator)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=notify\n\
         {account}\
         ExecStart=\"{exe}\" serve --config \"{config}\"\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         KillMode=process\n\
         TimeoutStopSec={stop_timeout}\n\
         LimitNOFILE=65536\n\
         UMask=0077\n\
         {HARDENING}\
         ReadWritePaths=\"{state_dir}\"\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe = exe.display(),
        config = config.display(),
        state_dir = state_dir.display(),
    )
}

/// What the service (and so every command job) gives up, root or not: what no job of a
/// database server's scheduler should need. Jobs keep the network, /tmp (shared with the
/// host), write access everywhere but /usr, /boot, /etc and home directories, and read
/// access to those. README "Running as a service on Linux" says how to widen it for a job
/// that needs more. Left out on purpose:
/// - PrivateTmp: its directories are removed when the unit stops, but running command
///   jobs outlive a stop or restart of the sidecar (KillMode=process), and would lose
///   their temporary files mid-run.
/// - MemoryDenyWriteExecute (breaks JIT runtimes: .NET, Java, node), ProcSubset=pid (they
///   read /proc/meminfo and /proc/cpuinfo), PrivateUsers, PrivateNetwork, IPAddressDeny.
const HARDENING: &str = "\
    NoNewPrivileges=yes\n\
    ProtectSystem=full\n\
    ProtectHome=read-only\n\
    PrivateDevices=yes\n\
    ProtectKernelTunables=yes\n\
    ProtectKernelModules=yes\n\
    ProtectKernelLogs=yes\n\
    ProtectControlGroups=yes\n\
    ProtectClock=yes\n\
    ProtectHostname=yes\n\
    ProtectProc=invisible\n\
    RestrictSUIDSGID=yes\n\
    RestrictRealtime=yes\n\
    RestrictNamespaces=yes\n\
    LockPersonality=yes\n\
    RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n\
    SystemCallArchitectures=native\n\
    SystemCallFilter=@system-service\n\
    SystemCallErrorNumber=EPERM\n\
    CapabilityBoundingSet=~CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_SYS_MODULE CAP_SYS_RAWIO \
    CAP_SYS_BOOT CAP_SYS_TIME CAP_SYS_PACCT CAP_SYS_TTY_CONFIG CAP_SYSLOG CAP_MKNOD \
    CAP_NET_ADMIN CAP_NET_RAW CAP_AUDIT_CONTROL CAP_AUDIT_READ CAP_AUDIT_WRITE CAP_BPF \
    CAP_LINUX_IMMUTABLE CAP_MAC_ADMIN CAP_MAC_OVERRIDE CAP_WAKE_ALARM CAP_BLOCK_SUSPEND\n";

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
    // ReadWritePaths= takes absolute paths.
    let state_dir = std::path::absolute(state_dir).map_err(io("find", state_dir))?;
    let state_dir = state_dir.as_path();
    let account = user.map(find_user).transpose()?;
    let unit = unit_text(exe, &config, state_dir, stop_grace, user);
    if dry_run {
        return Ok(vec![unit]);
    }
    let mut done = Vec::new();
    // It must exist for ReadWritePaths= when the unit starts.
    agentfleet_common::private::create_dir(state_dir, true).map_err(io("create", state_dir))?;
    if let Some(account) = &account {
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

    fn sample_unit(user: Option<&str>) -> String {
        unit_text(
            Path::new("/usr/local/bin/sidecar"),
            Path::new("/etc/agentfleet/sidecar.toml"),
            Path::new("/var/lib/agentfleet"),
            Duration::from_secs(10),
            user,
        )
    }

    /// The whole unit, as `sidecar install --dry-run` prints it. On a deliberate change,
    /// update the snapshot file with the new text (the assertion shows both).
    #[test]
    fn unit_text_matches_its_snapshot() {
        assert_eq!(
            sample_unit(None),
            include_str!("snapshots/agentfleet-sidecar.service")
        );
    }

    #[test]
    fn a_dedicated_user_changes_only_the_account() {
        let root = sample_unit(None);
        let user = sample_unit(Some("agentfleet"));
        let added: Vec<&str> = user.lines().filter(|l| !root.contains(l)).collect();
        assert_eq!(added, ["User=agentfleet"]);
        assert_eq!(user.replace("User=agentfleet\n", ""), root);
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
