//! The errors sp_start_job / sp_stop_job raise, with the numbers and texts the notes list.

use uuid::Uuid;

use crate::tds::tokens::ServerMessage;

/// An error raised by an msdb procedure (severity > 10) as SQL Server would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError(pub ServerMessage);

impl AgentError {
    fn new(number: u32, class: u8, procedure: &str, line: u32, text: String) -> Self {
        Self(ServerMessage::new(number, class, text).in_procedure(procedure, line))
    }

    pub fn number(&self) -> u32 {
        self.0.number
    }

    pub fn message(&self) -> &str {
        &self.0.text
    }

    /// Raised inside an extended procedure (`xp_sqlagent_notify`, `xp_sqlagent_enum_jobs`):
    /// the Agent's 22022. Such errors are field-reported to escape TRY/CATCH.
    pub fn from_extended_procedure(&self) -> bool {
        self.0.number == 22022
    }

    pub fn unknown_job_id(id: Uuid) -> Self {
        let id = id.to_string().to_uppercase();
        Self::new(
            14262,
            16,
            "sp_verify_job_identifiers",
            41,
            format!("The specified @job_id ('{id}') does not exist."),
        )
    }

    pub fn unknown_job_name(name: &str) -> Self {
        Self::new(
            14262,
            16,
            "sp_verify_job_identifiers",
            67,
            format!("The specified @job_name ('{name}') does not exist."),
        )
    }

    pub fn agent_starting() -> Self {
        Self::new(
            14258,
            16,
            "sp_is_sqlagent_starting",
            10,
            "Cannot perform this operation while SQLServerAgent is starting. Try again later."
                .into(),
        )
    }

    pub fn not_owner(procedure: &str) -> Self {
        Self::new(
            14393,
            16,
            procedure,
            62,
            "Only owner of a job or members of role sysadmin or SQLAgentOperatorRole can start and stop the job."
                .into(),
        )
    }

    pub fn no_job_server(name: &str, id: Uuid, stop: bool) -> Self {
        let id = id.to_string().to_uppercase();
        let (number, verb) = if stop {
            (14257, "stop")
        } else {
            (14256, "start")
        };
        Self::new(
            number,
            16,
            if stop { "sp_stop_job" } else { "sp_start_job" },
            97,
            format!(
                "Cannot {verb} the job \"{name}\" ({id}) because it does not have any job server or servers defined. Associate the job with a job server by calling sp_add_jobserver."
            ),
        )
    }

    pub fn agent_xps_off() -> Self {
        Self::new(
            15281,
            16,
            "xp_sqlagent_notify",
            1,
            "SQL Server blocked access to procedure 'sys.xp_sqlagent_notify' of component 'Agent XPs' because this component is turned off as part of the security configuration for this server. A system administrator can enable the use of 'Agent XPs' by using sp_configure. For more information about enabling 'Agent XPs', search for 'Agent XPs' in SQL Server Books Online."
                .into(),
        )
    }

    pub fn execute_denied(object: &str) -> Self {
        Self::new(
            229,
            14,
            "sp_sqlagent_notify",
            1,
            format!(
                "The EXECUTE permission was denied on the object '{object}', database 'mssqlsystemresource', schema 'sys'."
            ),
        )
    }

    pub fn agent_not_running() -> Self {
        Self::new(
            22022,
            16,
            "",
            0,
            "SQLServerAgent is not currently running so it cannot be notified of this action."
                .into(),
        )
    }

    pub fn already_running(job: &str, from: &str, owner: &str, pending: bool) -> Self {
        let why = if pending {
            format!("the job already has a pending request from User {owner}.")
        } else {
            format!("the job is already running from a request by User {owner}.")
        };
        Self::new(
            22022,
            16,
            "",
            0,
            format!(
                "SQLServerAgent Error: Request to run job {job} (from User {from}) refused because {why}"
            ),
        )
    }

    pub fn stop_not_running(job: &str, from: &str) -> Self {
        Self::new(
            22022,
            16,
            "",
            0,
            format!(
                "SQLServerAgent Error: Request to stop job {job} (from User {from}) refused because the job is not currently running."
            ),
        )
    }

    /// `sp_start_job`/`sp_stop_job` with neither or both identifiers.
    pub fn identify_job(stop: bool) -> Self {
        if stop {
            Self::new(
                14232,
                16,
                "sp_stop_job",
                20,
                "Specify either a job_name, job_id, or an originating_server.".into(),
            )
        } else {
            Self::new(
                14294,
                16,
                "sp_verify_job_identifiers",
                25,
                "Supply either @job_id or @job_name to identify the job.".into(),
            )
        }
    }
}
