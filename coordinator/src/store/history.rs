//! Past durations from the store, for placement: the longest expected task goes first (LPT).
use std::collections::BTreeMap;

use super::{Store, StoreError};

/// How many recent successful executions per job count.
const RECENT_PER_JOB: usize = 20;

impl Store {
    /// Median duration (ms) of each job's recent successful executions in this store.
    pub fn job_durations(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT t.job, e.finished_ms - e.started_ms
               FROM executions e JOIN tasks t ON t.run_id = e.run_id AND t.task = e.task
              WHERE e.status = 'succeeded' AND e.finished_ms IS NOT NULL
              ORDER BY e.started_ms DESC
              LIMIT 20000",
        )?;
        let mut samples: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (job, ms) = row?;
            let v = samples.entry(job).or_default();
            if v.len() < RECENT_PER_JOB {
                v.push(ms.max(0) as u64);
            }
        }
        Ok(samples
            .into_iter()
            .map(|(job, mut v)| {
                v.sort_unstable();
                (job, v[v.len() / 2])
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_store_has_no_durations() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.job_durations().unwrap().is_empty());
    }
}
