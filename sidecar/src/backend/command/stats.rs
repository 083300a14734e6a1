//! Durations of this process's past successful runs, per job, for `ListJobs`.
//! In memory only and bounded: the most recent `KEEP` runs of each job.
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use agentfleet_common::proto::DurationStats;

/// Successful runs remembered per job.
const KEEP: usize = 100;

#[derive(Debug, Default)]
pub(crate) struct DurationHistory {
    runs: Mutex<HashMap<String, VecDeque<u64>>>,
}

impl DurationHistory {
    pub(crate) fn record(&self, job: &str, duration_ms: u64) {
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let durations = runs.entry(job.to_owned()).or_default();
        if durations.len() == KEEP {
            durations.pop_front();
        }
        durations.push_back(duration_ms);
    }

    /// Count, median and p90 (nearest rank) of the job's remembered runs.
    pub(crate) fn stats(&self, job: &str) -> DurationStats {
        let runs = self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut durations: Vec<u64> = runs
            .get(job)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default();
        drop(runs);
        durations.sort_unstable();
        DurationStats {
            count: u32::try_from(durations.len()).unwrap_or(u32::MAX),
            median_ms: percentile(&durations, 50),
            p90_ms: percentile(&durations, 90),
        }
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], pct: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_job_has_zero_stats() {
        let history = DurationHistory::default();
        assert_eq!(history.stats("x"), DurationStats::default());
    }

    #[test]
    fn median_and_p90() {
        let history = DurationHistory::default();
        for ms in (1..=10).rev() {
            history.record("x", ms * 100);
        }
        let stats = history.stats("x");
        assert_eq!(stats.count, 10);
        assert_eq!(stats.median_ms, 500);
        assert_eq!(stats.p90_ms, 900);
        history.record("y", 7);
        assert_eq!(history.stats("y").median_ms, 7);
        assert_eq!(history.stats("y").p90_ms, 7);
    }

    #[test]
    fn keeps_only_recent_runs() {
        let history = DurationHistory::default();
        for _ in 0..KEEP {
            history.record("x", 1_000);
        }
        for _ in 0..KEEP {
            history.record("x", 5);
        }
        let stats = history.stats("x");
        assert_eq!(stats.count as usize, KEEP);
        assert_eq!(stats.p90_ms, 5);
    }
}
