//! The job catalogue: the allow-list, duration statistics and the wire form of a job.
use agentfleet_common::proto;
use glob::{MatchOptions, Pattern};

use super::rows::{JobDef, StepDef};

/// `allow_jobs` globs. Matching ignores case, as SQL Server's default collations do for
/// job names. An empty list allows every job.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    patterns: Vec<Pattern>,
}

impl JobFilter {
    pub fn new(globs: &[String]) -> Result<Self, String> {
        let patterns = globs
            .iter()
            .map(|g| {
                Pattern::new(g)
                    .map_err(|e| format!("[sqlagent] allow_jobs: `{g}` is not a glob: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    pub fn allows(&self, name: &str) -> bool {
        let opts = MatchOptions {
            case_sensitive: false,
            ..MatchOptions::new()
        };
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches_with(name, opts))
    }
}

/// Count, median and p90 (linear interpolation, as T-SQL `PERCENTILE_CONT`) of durations in
/// seconds.
pub fn duration_stats(mut secs: Vec<u64>) -> proto::DurationStats {
    if secs.is_empty() {
        return proto::DurationStats::default();
    }
    secs.sort_unstable();
    let pct = |p: f64| -> u64 {
        let rank = p * (secs.len() - 1) as f64;
        let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
        let v = secs[lo] as f64 + (secs[hi] as f64 - secs[lo] as f64) * (rank - lo as f64);
        (v * 1000.0).round() as u64
    };
    proto::DurationStats {
        count: secs.len() as u32,
        median_ms: pct(0.5),
        p90_ms: pct(0.9),
    }
}

/// An Agent step action as the wire spells it: "next", "succeed", "fail", "goto:<step name>".
pub fn action_string(action: i32, target: i32, steps: &[StepDef]) -> String {
    match action {
        1 => "succeed".into(),
        2 => "fail".into(),
        3 => "next".into(),
        4 => match steps.iter().find(|s| s.step_id == target) {
            Some(s) => format!("goto:{}", s.name),
            None => format!("goto:{target}"),
        },
        other => format!("unknown:{other}"),
    }
}

pub fn to_proto(job: &JobDef, stats: proto::DurationStats) -> proto::Job {
    proto::Job {
        name: job.name.clone(),
        backend: "sqlagent".into(),
        enabled: job.enabled,
        category: job.category.clone(),
        description: job.description.clone(),
        steps: job
            .steps
            .iter()
            .map(|s| proto::JobStep {
                id: s.step_id.max(0) as u32,
                name: s.name.clone(),
                subsystem: s.subsystem.clone(),
                on_success: action_string(s.on_success_action, s.on_success_step_id, &job.steps),
                on_failure: action_string(s.on_fail_action, s.on_fail_step_id, &job.steps),
                retries: s.retry_attempts.max(0) as u32,
            })
            .collect(),
        stats: Some(stats),
        params: Vec::new(),
        // SQL Server Agent refuses to start a job that is already running.
        max_instances: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_filter_case_insensitively() {
        let f = JobFilter::new(&["ETL - *".into(), "Backup?".into()]).unwrap();
        assert!(f.allows("ETL - Stage Customers"));
        assert!(f.allows("etl - load"));
        assert!(f.allows("Backup1"));
        assert!(!f.allows("Backup12"));
        assert!(!f.allows("syspolicy_purge_history"));
        assert!(JobFilter::new(&[]).unwrap().allows("anything"));
        assert!(JobFilter::new(&["[".into()]).is_err());
    }

    #[test]
    fn stats_interpolate_like_percentile_cont() {
        let s = duration_stats(vec![10, 20, 30, 40]);
        assert_eq!(s.count, 4);
        assert_eq!(s.median_ms, 25_000);
        assert_eq!(s.p90_ms, 37_000);
        assert_eq!(duration_stats(vec![]).count, 0);
        assert_eq!(duration_stats(vec![7]).p90_ms, 7_000);
    }

    #[test]
    fn actions_read_like_command_jobs() {
        let steps = vec![StepDef {
            step_id: 3,
            name: "cleanup".into(),
            ..Default::default()
        }];
        assert_eq!(action_string(3, 0, &steps), "next");
        assert_eq!(action_string(1, 0, &steps), "succeed");
        assert_eq!(action_string(2, 0, &steps), "fail");
        assert_eq!(action_string(4, 3, &steps), "goto:cleanup");
    }
}
