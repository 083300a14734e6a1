//! Reads the SSIS packages of a run's steps (see `sub_steps.rs`) back from the `events`
//! table, where every catalog progress event is kept as its `--json` object: no table of
//! their own, so an older store needs no migration and a newer event field costs nothing.
use rusqlite::params;

use super::apply::{CATALOG_EXECUTION, DATA_FLOW_ROWS, SUB_STEP_FINISHED, SUB_STEP_STARTED};
use super::{Store, StoreError};
use crate::events::RunEventKind;
use crate::sub_steps::{Packages, StepPackage};

impl Store {
    /// The packages `run_id`'s steps ran, in the order first seen, each one's sub-steps by
    /// start. An event that no longer parses (written by another version) is skipped.
    pub fn packages(&self, run_id: &str) -> Result<Vec<StepPackage>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT type, json FROM events
             WHERE run_id = ?1 AND type IN (?2, ?3, ?4, ?5) ORDER BY id",
        )?;
        let rows = stmt.query_map(
            params![
                run_id,
                CATALOG_EXECUTION,
                SUB_STEP_STARTED,
                SUB_STEP_FINISHED,
                DATA_FLOW_ROWS
            ],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
        )?;
        let mut packages = Packages::default();
        for row in rows {
            let (kind, json) = row?;
            if let Some(kind) = parse(&kind, &json) {
                packages.apply(&kind);
            }
        }
        Ok(packages.into_vec())
    }
}

/// The run event kind of a stored catalog event.
fn parse(kind: &str, json: &str) -> Option<RunEventKind> {
    let parsed = match kind {
        CATALOG_EXECUTION => RunEventKind::CatalogExecution(serde_json::from_str(json).ok()?),
        SUB_STEP_STARTED => RunEventKind::SubStepStarted(serde_json::from_str(json).ok()?),
        SUB_STEP_FINISHED => RunEventKind::SubStepFinished(serde_json::from_str(json).ok()?),
        DATA_FLOW_ROWS => RunEventKind::DataFlowRows(serde_json::from_str(json).ok()?),
        _ => return None,
    };
    Some(parsed)
}
