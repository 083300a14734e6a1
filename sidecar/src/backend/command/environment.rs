//! What a step's environment holds: a clean start, never the sidecar's own environment.
//!
//! The sidecar runs as a service account and may hold secrets in its environment (the
//! `[sqlagent]` password through `password_env`, cloud credentials, proxy settings); a job
//! that inherited them could print them into the central log with one `env`. So a step
//! starts from nothing but the variables a program needs to run on this OS (`BASE`), plus
//! the names the job asks for with `inherit_env`, then the job's own `env`, the task's
//! params, and agentfleet's `AGENTFLEET_*` variables (see `flow::base_env`).
use std::ffi::OsString;

/// Variables passed through from the sidecar's environment to every step.
#[cfg(unix)]
pub const BASE: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_*", "TZ", "TMPDIR",
];

/// Variables passed through from the sidecar's environment to every step.
#[cfg(windows)]
pub const BASE: &[&str] = &[
    "PATH",
    "PATHEXT",
    "SystemRoot",
    "SystemDrive",
    "windir",
    "ComSpec",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "USERNAME",
    "USERDOMAIN",
    "COMPUTERNAME",
    "ProgramData",
    "ProgramFiles",
    "ProgramFiles(x86)",
    "ProgramW6432",
    "CommonProgramFiles",
    "CommonProgramFiles(x86)",
    "CommonProgramW6432",
    "APPDATA",
    "LOCALAPPDATA",
    "NUMBER_OF_PROCESSORS",
    "PROCESSOR_ARCHITECTURE",
    "OS",
];

/// Whether `name` matches `pattern`: the exact name, or a prefix ending in `*`. Windows
/// compares names without case, as it does for its environment.
pub fn matches(pattern: &str, name: &str) -> bool {
    let same = |a: &str, b: &str| {
        if cfg!(windows) {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => name
            .get(..prefix.len())
            .is_some_and(|head| same(head, prefix)),
        None => same(pattern, name),
    }
}

/// The variables of `from` that `BASE` or `inherit` names (never `AGENTFLEET_*`: those
/// are agentfleet's own, set per step). Names or values that are not Unicode are left
/// out (an environment to pass on is text).
pub fn inherited(
    from: impl IntoIterator<Item = (OsString, OsString)>,
    inherit: &[String],
) -> Vec<(String, String)> {
    from.into_iter()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, _)| {
            !name.starts_with("AGENTFLEET_")
                && BASE
                    .iter()
                    .copied()
                    .chain(inherit.iter().map(String::as_str))
                    .any(|p| matches(p, name))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn secrets_stay_behind_and_what_programs_need_comes_along() {
        let from = env(&[
            ("PATH", "/usr/bin"),
            ("AGENTFLEET_SQL_PASSWORD", "hunter2"),
            ("SQL_PASSWORD", "hunter2"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("ORACLE_HOME", "/opt/oracle"),
            ("ORACLE_SID", "ORCL"),
            ("TEMP", "/tmp"),
        ]);
        let names =
            |v: Vec<(String, String)>| -> Vec<String> { v.into_iter().map(|(k, _)| k).collect() };
        let plain = names(inherited(from.clone(), &[]));
        assert!(plain.contains(&"PATH".to_owned()), "{plain:?}");
        assert!(
            !plain
                .iter()
                .any(|n| n.contains("PASSWORD") || n.contains("SECRET")),
            "{plain:?}"
        );
        let widened = names(inherited(
            from,
            &["ORACLE_*".to_owned(), "AGENTFLEET_*".to_owned()],
        ));
        assert!(
            widened.contains(&"ORACLE_HOME".to_owned())
                && widened.contains(&"ORACLE_SID".to_owned())
        );
        assert!(
            !widened.contains(&"AGENTFLEET_SQL_PASSWORD".to_owned()),
            "{widened:?}"
        );
    }

    #[test]
    fn patterns_are_names_or_prefixes() {
        assert!(matches("LC_*", "LC_ALL"));
        assert!(matches("PATH", "PATH"));
        assert!(!matches("PATH", "PATHEXT_X"));
        assert!(!matches("LC_*", "L"));
    }
}
