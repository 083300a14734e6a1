//! Running the `poll` batch and reading its four result sets.
use std::collections::HashMap;
use std::time::Duration;

use tiberius::Uuid;

use super::connection::{Conn, SqlError};
use super::queries;
use super::rows::{Activity, Heartbeat, History, Live};

/// Everything one `poll` returned, by job.
#[derive(Debug, Default)]
pub struct PollResult {
    pub heartbeat: Heartbeat,
    /// Whether result set 2 holds the Agent's live view (asked for and no error).
    pub live_available: bool,
    pub live: HashMap<Uuid, Live>,
    pub activity: HashMap<Uuid, Activity>,
    pub rows: HashMap<Uuid, Vec<History>>,
}

/// One `poll` for `jobs` = (job id, history cursor).
pub async fn poll(
    conn: &mut Conn,
    jobs: &[(Uuid, i32)],
    use_enum: bool,
) -> Result<PollResult, SqlError> {
    let list: Vec<serde_json::Value> = jobs
        .iter()
        .map(|(id, after)| serde_json::json!({ "job_id": id.to_string().to_uppercase(), "after_id": after }))
        .collect();
    let json = serde_json::Value::Array(list).to_string();
    let flag: i32 = i32::from(use_enum);
    let sets = conn.query(queries::POLL, &[&json.as_str(), &flag]).await?;
    parse(sets, use_enum).map_err(SqlError::Other)
}

pub fn parse(sets: Vec<Vec<tiberius::Row>>, use_enum: bool) -> Result<PollResult, String> {
    if sets.len() < 4 {
        return Err(format!(
            "the poll batch returned {} result sets instead of 4",
            sets.len()
        ));
    }
    let mut it = sets.into_iter();
    let (hb, live, act, hist) = (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    );
    let heartbeat = hb.first().map(Heartbeat::from_row).unwrap_or_default();
    let mut out = PollResult {
        live_available: use_enum && heartbeat.enum_jobs_error.is_none(),
        heartbeat,
        ..Default::default()
    };
    for l in live.iter().filter_map(Live::from_row) {
        out.live.insert(l.job_id, l);
    }
    for (id, a) in act.iter().filter_map(Activity::from_row) {
        out.activity.insert(id, a);
    }
    for h in hist.iter().filter_map(History::from_row) {
        out.rows.entry(h.job_id).or_default().push(h);
    }
    for rows in out.rows.values_mut() {
        rows.sort_by_key(|r| r.instance_id);
    }
    Ok(out)
}

/// The poll interval: fast right after a start, a change or a stop request; the configured
/// interval while steps progress; slower while one long step runs without change.
pub fn next_interval(base: Duration, since_change: Duration, urgent: bool) -> Duration {
    const FAST: Duration = Duration::from_millis(250);
    const SLOW_CAP: Duration = Duration::from_secs(5);
    if urgent || since_change < Duration::from_secs(5) {
        FAST.min(base)
    } else if since_change < Duration::from_secs(60) {
        base
    } else {
        (base * 5).min(SLOW_CAP).max(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_adapts() {
        let base = Duration::from_secs(1);
        assert_eq!(
            next_interval(base, Duration::ZERO, false),
            Duration::from_millis(250)
        );
        assert_eq!(
            next_interval(base, Duration::from_secs(30), true),
            Duration::from_millis(250)
        );
        assert_eq!(next_interval(base, Duration::from_secs(30), false), base);
        assert_eq!(
            next_interval(base, Duration::from_secs(600), false),
            Duration::from_secs(5)
        );
        // A configured interval above the cap is respected.
        let slow = Duration::from_secs(10);
        assert_eq!(next_interval(slow, Duration::from_secs(600), false), slow);
        assert_eq!(
            next_interval(Duration::from_millis(100), Duration::ZERO, false),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn rejects_short_batches() {
        assert!(parse(vec![vec![], vec![]], true).is_err());
        let r = parse(vec![vec![], vec![], vec![], vec![]], true).unwrap();
        assert!(r.live_available && r.rows.is_empty());
    }
}
