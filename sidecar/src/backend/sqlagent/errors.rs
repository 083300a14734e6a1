//! SQL Server error numbers raised around `sp_start_job` / `sp_stop_job`, mapped to the
//! sidecar's `BackendError`. Numbers decide; message texts (produced inside the Agent
//! process and undocumented) only refine 22022, best-effort.
use crate::backend::BackendError;

/// What a 22022 from the Agent means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent22022 {
    /// "…refused because the job is already running from a request by User B."
    AlreadyRunning,
    /// "…refused because the job already has a pending request from User B."
    PendingRequest,
    /// "SQLServerAgent is not currently running so it cannot be notified of this action."
    AgentNotRunning,
    /// "Request to stop job X … refused because the job is not currently running."
    JobNotRunning,
    Other,
}

pub fn classify_22022(message: &str) -> Agent22022 {
    let m = message.to_ascii_lowercase();
    if m.contains("already running") {
        Agent22022::AlreadyRunning
    } else if m.contains("pending request") {
        Agent22022::PendingRequest
    } else if m.contains("sqlserveragent is not currently running")
        || m.contains("agent is not currently running")
        || m.contains("cannot be notified")
    {
        Agent22022::AgentNotRunning
    } else if m.contains("not currently running") {
        Agent22022::JobNotRunning
    } else {
        Agent22022::Other
    }
}

/// The requester named in a 22022 refusal ("from a request by User X" → "User X").
fn requester(message: &str) -> Option<&str> {
    let i = message
        .find("request by ")
        .or_else(|| message.find("request from "))?;
    let rest = &message[i..];
    let start = rest.find(' ')? + 1;
    let rest = &rest[start..];
    let start = rest.find(' ')? + 1;
    Some(rest[start..].trim_end_matches('.').trim())
}

/// Maps an error raised by the start batch. `offered` lists the jobs this sidecar offers,
/// used for "not found" (only computed by the caller when `number == 14262`).
pub fn map_start_error(number: i32, message: &str, job: &str, offered: &str) -> BackendError {
    match number {
        14262 => BackendError::NotFound {
            job: job.to_string(),
            offered: if offered.is_empty() {
                "(none)".into()
            } else {
                offered.to_string()
            },
        },
        22022 => match classify_22022(message) {
            Agent22022::AlreadyRunning | Agent22022::PendingRequest => {
                let by = requester(message)
                    .map(|r| format!(" (requested by {r})"))
                    .unwrap_or_default();
                BackendError::AlreadyRunning(format!("{job}{by}"))
            }
            Agent22022::AgentNotRunning => BackendError::Unavailable(format!(
                "SQL Server Agent is not running on this server (the service is stopped or \
                 disabled); start the SQL Server Agent service and retry: {message}"
            )),
            _ => BackendError::Unavailable(format!(
                "SQL Server Agent refused to start `{job}`: {message}"
            )),
        },
        14258 => BackendError::Unavailable(
            "SQL Server Agent is starting; retry in a few seconds".to_string(),
        ),
        15281 => BackendError::Unavailable(format!(
            "the `Agent XPs` server option is off: SQL Server Agent has never been started on this \
             server ({message})"
        )),
        14393 => BackendError::PermissionDenied(format!(
            "the sidecar's login may see `{job}` but not start it: make it a member of the msdb role \
             SQLAgentOperatorRole (or the job's owner, or sysadmin) ({message})"
        )),
        14397 => BackendError::PermissionDenied(format!(
            "`{job}` is a multi-server job; only sysadmin members may start it ({message})"
        )),
        229 | 230 | 297 | 300 => BackendError::PermissionDenied(format!(
            "the sidecar's login lacks a permission: it needs SQLAgentOperatorRole in msdb, SELECT on \
             the msdb job tables, and on Managed Instance EXECUTE in master on xp_sqlagent_notify, \
             xp_sqlagent_enum_jobs and xp_sqlagent_is_starting ({message})"
        )),
        14256 => BackendError::InvalidArgument(format!(
            "`{job}` has no target server (sp_add_jobserver was never run for it): {message}"
        )),
        14293 => BackendError::InvalidArgument(format!(
            "there are several jobs named `{job}`; rename them so names are unique: {message}"
        )),
        _ => BackendError::Internal(format!(
            "failed to start `{job}`: error {number}: {message}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_catalogue() {
        let e = map_start_error(
            14262,
            "The specified @job_id ('…') does not exist.",
            "J",
            "A, B",
        );
        assert!(matches!(e, BackendError::NotFound { ref offered, .. } if offered == "A, B"));
        let e = map_start_error(
            22022,
            "SQLServerAgent Error: Request to run job J (from User a) refused because the job is already running from a request by User b.",
            "J",
            "",
        );
        match e {
            BackendError::AlreadyRunning(m) => assert!(m.contains("User b"), "{m}"),
            other => panic!("{other:?}"),
        }
        let e = map_start_error(
            22022,
            "SQLServerAgent Error: Request to run job J (from User a) refused because the job already has a pending request from User a.",
            "J",
            "",
        );
        assert!(matches!(e, BackendError::AlreadyRunning(_)));
        let e = map_start_error(
            22022,
            "SQLServerAgent is not currently running so it cannot be notified of this action.",
            "J",
            "",
        );
        assert!(matches!(e, BackendError::Unavailable(ref m) if m.contains("service is stopped")));
        assert!(matches!(
            map_start_error(14258, "", "J", ""),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            map_start_error(14393, "", "J", ""),
            BackendError::PermissionDenied(ref m) if m.contains("SQLAgentOperatorRole")
        ));
        assert!(matches!(
            map_start_error(229, "", "J", ""),
            BackendError::PermissionDenied(_)
        ));
        assert!(matches!(
            map_start_error(50000, "", "J", ""),
            BackendError::Internal(_)
        ));
    }

    #[test]
    fn classifies_stop_refusal() {
        assert_eq!(
            classify_22022(
                "SQLServerAgent Error: Request to stop job J (from User a) refused because the job is not currently running."
            ),
            Agent22022::JobNotRunning
        );
        assert_eq!(classify_22022("something new"), Agent22022::Other);
    }
}
