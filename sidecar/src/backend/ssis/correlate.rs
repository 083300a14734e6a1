//! Finding the catalog execution of a running Agent SSIS step (ssisdb.md §4.3). msdb has
//! no link to it: the candidates are executions of the step's package created since the
//! step began (minus a slack for clocks of 1-s resolution); exactly one is taken, two or
//! more are reported as ambiguous rather than guessed at. Once the step ends, its history
//! message may name the execution (`Execution ID: <n>,`), which settles it.
use std::collections::HashSet;

/// How far before the step's start a candidate may have been created (Agent times have
/// 1-s resolution and are converted from server-local time).
pub const SLACK_MS: i64 = 5_000;

/// One row of the correlation query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub execution_id: i64,
    pub status: i32,
    pub created_ms: i64,
    pub reference_id: Option<i64>,
    pub caller_info: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correlation {
    Found(i64),
    /// Nothing yet (the step has not created it, or the login cannot see it).
    NotYet,
    /// More than one candidate: the ids.
    Ambiguous(Vec<i64>),
}

/// Picks the step's execution among `candidates`. `claimed`: executions another followed
/// step already took. `caller_info`: the step's `/CALLERINFO` when it sets one.
pub fn correlate(
    candidates: &[Candidate],
    step_start_ms: i64,
    env_reference: Option<i64>,
    caller_info: Option<&str>,
    claimed: &HashSet<i64>,
) -> Correlation {
    let mut ids: Vec<i64> = candidates
        .iter()
        .filter(|c| c.created_ms >= step_start_ms - SLACK_MS)
        .filter(|c| env_reference.is_none() || c.reference_id == env_reference)
        .filter(|c| {
            caller_info.is_none_or(|ci| {
                c.caller_info
                    .as_deref()
                    .is_none_or(|x| x.eq_ignore_ascii_case(ci))
            })
        })
        .filter(|c| !claimed.contains(&c.execution_id))
        .map(|c| c.execution_id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.len() {
        0 => Correlation::NotYet,
        1 => Correlation::Found(ids[0]),
        _ => Correlation::Ambiguous(ids),
    }
}

/// The `Execution ID: <n>` an SSIS step's history message carries (failed steps at
/// least): `... failed. Execution ID: 12345, Execution Status:4. ...`.
pub fn execution_id_in_history(message: &str) -> Option<i64> {
    let at = message.find("Execution ID:")? + "Execution ID:".len();
    let digits: String = message[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i64, created_ms: i64) -> Candidate {
        Candidate {
            execution_id: id,
            status: 2,
            created_ms,
            reference_id: None,
            caller_info: Some("SQLAGENT".into()),
        }
    }

    #[test]
    fn one_candidate_after_the_step_start_is_taken() {
        let none = HashSet::new();
        let cands = [c(7, 100_000), c(9, 120_000)];
        assert_eq!(
            correlate(&cands, 118_000, None, None, &none),
            Correlation::Found(9)
        );
        // Within the slack before the start (1-s Agent clock, conversions).
        assert_eq!(
            correlate(&cands, 123_000, None, None, &none),
            Correlation::Found(9)
        );
        assert_eq!(
            correlate(&cands, 200_000, None, None, &none),
            Correlation::NotYet
        );
    }

    #[test]
    fn two_candidates_are_ambiguous_unless_one_is_claimed_or_filtered() {
        let cands = [c(7, 120_000), c(9, 121_000)];
        assert_eq!(
            correlate(&cands, 119_000, None, None, &HashSet::new()),
            Correlation::Ambiguous(vec![7, 9])
        );
        assert_eq!(
            correlate(&cands, 119_000, None, None, &HashSet::from([7])),
            Correlation::Found(9)
        );
        let mut other = c(7, 120_000);
        other.caller_info = Some("agentfleet:abc".into());
        assert_eq!(
            correlate(
                &[other, c(9, 121_000)],
                119_000,
                None,
                Some("SQLAGENT"),
                &HashSet::new()
            ),
            Correlation::Found(9)
        );
        let mut with_env = c(9, 121_000);
        with_env.reference_id = Some(3);
        assert_eq!(
            correlate(
                &[c(7, 120_000), with_env],
                119_000,
                Some(3),
                None,
                &HashSet::new()
            ),
            Correlation::Found(9)
        );
    }

    #[test]
    fn reads_the_execution_id_of_a_history_message() {
        let m = "Executed as user: CONTOSO\\svc_agent. Microsoft (R) SQL Server Execute Package Utility ... Package execution on IS Server failed. Execution ID: 12345, Execution Status:4. To view the details for the execution, right-click on the Integration Services Catalog, and open the [All Executions] report  Started:  10:00:00  Finished: 10:00:05  Elapsed:  4.9 seconds.  The package execution failed.  The step failed.";
        assert_eq!(execution_id_in_history(m), Some(12345));
        assert_eq!(execution_id_in_history("The step succeeded."), None);
        assert_eq!(execution_id_in_history("Execution ID: , x"), None);
    }
}
