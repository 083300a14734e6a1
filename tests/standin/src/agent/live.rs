//! What `xp_sqlagent_enum_jobs` reports about one job (its live state inside the Agent).

use super::{LiveRun, Phase};

/// One row of `xp_sqlagent_enum_jobs` (the columns the `poll` batch keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnumRow {
    pub running: bool,
    pub current_step: i32,
    pub current_retry_attempt: i32,
    pub job_state: i32,
    pub request_source: i32,
    pub request_source_id: Option<String>,
}

impl EnumRow {
    pub fn of(l: &LiveRun) -> Self {
        match l.phase {
            // Waiting for a worker thread: not running yet.
            Phase::Queued => Self {
                running: false,
                current_step: 0,
                current_retry_attempt: 0,
                job_state: l.phase.job_state(),
                request_source: 4,
                request_source_id: Some(l.requested_by.clone()),
            },
            // A request not yet begun still reads as idle (the lag the notes call R1).
            Phase::Requested => Self {
                running: false,
                current_step: 0,
                current_retry_attempt: 0,
                job_state: 4,
                request_source: 4,
                request_source_id: Some(l.requested_by.clone()),
            },
            Phase::Executing | Phase::BetweenRetries => Self {
                running: true,
                current_step: l.current_step,
                current_retry_attempt: l.current_retry_attempt,
                job_state: l.phase.job_state(),
                request_source: 4,
                request_source_id: Some(l.requested_by.clone()),
            },
        }
    }

    /// An idle job (not in the Agent's run list).
    pub fn idle() -> Self {
        Self {
            running: false,
            current_step: 0,
            current_retry_attempt: 0,
            job_state: 4,
            request_source: 0,
            request_source_id: None,
        }
    }
}
