//! Job and step definitions as the simulation uses them, built from the jobs file.

use std::time::Duration;

use uuid::Uuid;

use crate::config::{ActionConfig, JobConfig, StepConfig};

/// msdb action codes for `on_success_action` / `on_fail_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    QuitSuccess,
    QuitFailure,
    NextStep,
    GoTo(i32),
}

impl Action {
    pub fn code(self) -> i32 {
        match self {
            Action::QuitSuccess => 1,
            Action::QuitFailure => 2,
            Action::NextStep => 3,
            Action::GoTo(_) => 4,
        }
    }
    pub fn target(self) -> i32 {
        match self {
            Action::GoTo(id) => id,
            _ => 0,
        }
    }
}

/// Parses an action; the defaults are msdb's: quit with success on success, quit with failure
/// on failure. `goto` takes its target from `on_*_step` (merged by [`StepDef::from_config`]).
pub fn parse_action(a: Option<&ActionConfig>, on_success: bool) -> Result<Action, String> {
    let Some(a) = a else {
        return Ok(if on_success {
            Action::QuitSuccess
        } else {
            Action::QuitFailure
        });
    };
    match a {
        ActionConfig::Code(1) => Ok(Action::QuitSuccess),
        ActionConfig::Code(2) => Ok(Action::QuitFailure),
        ActionConfig::Code(3) => Ok(Action::NextStep),
        ActionConfig::Code(4) => Ok(Action::GoTo(0)),
        ActionConfig::Code(c) => Err(format!("action code {c} is not 1..=4")),
        ActionConfig::Word(w) => {
            let w = w.trim().to_ascii_lowercase();
            match w.as_str() {
                "quit_success" | "quit_with_success" | "success" => Ok(Action::QuitSuccess),
                "quit_failure" | "quit_with_failure" | "failure" => Ok(Action::QuitFailure),
                "next" | "next_step" => Ok(Action::NextStep),
                "goto" => Ok(Action::GoTo(0)),
                _ => match w.strip_prefix("goto") {
                    Some(n) => n
                        .trim_matches(|c: char| c == ':' || c == ' ')
                        .parse()
                        .map(Action::GoTo)
                        .map_err(|_| format!("bad goto target in {w:?}")),
                    None => Err(format!("unknown action {w:?}")),
                },
            }
        }
    }
}

/// `None` = runs until stopped.
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    if s.trim() == "until_stopped" {
        return Ok(None);
    }
    humantime::parse_duration(s)
        .map(Some)
        .map_err(|e| format!("duration {s:?}: {e}"))
}

#[derive(Debug, Clone)]
pub struct StepDef {
    pub id: i32,
    pub name: String,
    pub subsystem: String,
    pub command: String,
    pub database: String,
    pub on_success: Action,
    pub on_fail: Action,
    pub retries: i32,
    pub retry_interval: Duration,
    pub duration: Option<Duration>,
    pub outcomes: Vec<bool>,
    pub message: String,
    pub sql_message_id: i32,
    pub sql_severity: i32,
    pub output_file: Option<String>,
    pub flags: i32,
}

impl StepDef {
    fn from_config(pos: usize, s: &StepConfig) -> Self {
        let with_target = |a: Action, t: Option<i32>| match (a, t) {
            (Action::GoTo(0), Some(t)) => Action::GoTo(t),
            (a, _) => a,
        };
        Self {
            id: s.id.unwrap_or(pos as i32 + 1),
            name: s.name.clone(),
            subsystem: s.subsystem.clone(),
            command: s.command.clone(),
            database: s.database.clone(),
            on_success: with_target(
                parse_action(s.on_success.as_ref(), true).unwrap_or(Action::QuitSuccess),
                s.on_success_step,
            ),
            on_fail: with_target(
                parse_action(s.on_fail.as_ref(), false).unwrap_or(Action::QuitFailure),
                s.on_fail_step,
            ),
            retries: s.retries.max(0),
            retry_interval: s.retry_interval,
            duration: parse_duration(&s.duration).unwrap_or(Some(Duration::ZERO)),
            outcomes: s.outcomes.iter().map(|o| o == "succeed").collect(),
            message: s.message.clone(),
            sql_message_id: s.sql_message_id,
            sql_severity: s.sql_severity,
            output_file: s.output_file.clone(),
            flags: s.flags,
        }
    }

    /// Whether attempt `n` (0-based) succeeds; the last scripted outcome repeats.
    pub fn attempt_succeeds(&self, n: i32) -> bool {
        let i = (n.max(0) as usize).min(self.outcomes.len().saturating_sub(1));
        self.outcomes.get(i).copied().unwrap_or(true)
    }

    /// `sysjobsteps.retry_interval` is in minutes.
    pub fn retry_interval_minutes(&self) -> i32 {
        (self.retry_interval.as_secs() / 60) as i32
    }
}

#[derive(Debug, Clone)]
pub struct JobDef {
    pub job_id: Uuid,
    pub name: String,
    pub enabled: bool,
    pub category: String,
    pub description: Option<String>,
    pub owner: String,
    pub targeted: bool,
    pub start_step: i32,
    pub start_latency: Duration,
    pub queue_delay: Duration,
    pub steps: Vec<StepDef>,
}

impl JobDef {
    pub fn from_config(j: &JobConfig) -> Self {
        Self {
            job_id: j.job_id.unwrap_or_else(|| derived_job_id(&j.name)),
            name: j.name.clone(),
            enabled: j.enabled,
            category: j.category.clone(),
            description: j.description.clone(),
            owner: j.owner.clone(),
            targeted: j.targeted,
            start_step: j.start_step,
            start_latency: j.start_latency,
            queue_delay: j.queue_delay,
            steps: j
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| StepDef::from_config(i, s))
                .collect(),
        }
    }

    pub fn step(&self, id: i32) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The step after `id` in step_id order (action 3).
    pub fn next_step(&self, id: i32) -> Option<&StepDef> {
        self.steps.iter().filter(|s| s.id > id).min_by_key(|s| s.id)
    }
}

/// A stable job id from the name (FNV-1a, 128 bits, RFC 4122 variant bits set).
pub fn derived_job_id(name: &str) -> Uuid {
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in name.as_bytes() {
        h ^= u128::from(*b);
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    uuid::Builder::from_custom_bytes(h.to_be_bytes()).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_from_codes_and_words() {
        let w = |s: &str| ActionConfig::Word(s.into());
        assert_eq!(parse_action(None, true), Ok(Action::QuitSuccess));
        assert_eq!(parse_action(None, false), Ok(Action::QuitFailure));
        assert_eq!(
            parse_action(Some(&ActionConfig::Code(3)), true),
            Ok(Action::NextStep)
        );
        assert_eq!(parse_action(Some(&w("goto:3")), true), Ok(Action::GoTo(3)));
        assert_eq!(
            parse_action(Some(&w("quit_failure")), true),
            Ok(Action::QuitFailure)
        );
        assert!(parse_action(Some(&ActionConfig::Code(9)), true).is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derived_job_id("a"), derived_job_id("a"));
        assert_ne!(derived_job_id("a"), derived_job_id("b"));
    }
}
