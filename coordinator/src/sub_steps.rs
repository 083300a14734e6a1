//! What a step's SSIS package did, folded from its catalog run events: the catalog
//! execution and its status, the package's tasks and containers (*sub-steps*) with their
//! status and duration, and the rows of each data-flow path. One model for every reader:
//! the live view folds the events as they come, `show` and `report` fold the ones the
//! store kept (`Store::packages`), and the traces end the sub-steps it still has open.
use std::collections::HashMap;

use serde::Serialize;

use crate::events::{At, CatalogExecution, DataFlowRows, RunEventKind};

/// Status of a sub-step that started and has not finished (yet).
pub const SUB_STEP_RUNNING: &str = "running";

/// The catalog execution that runs a step's package, as last reported.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CatalogInfo {
    pub catalog_execution_id: i64,
    pub server: String,
    pub folder: String,
    pub project: String,
    pub package: String,
    pub status: String,
}

/// Rows one data-flow path of a task moved (the latest running total).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FlowRows {
    pub data_flow_path: String,
    pub source_component: String,
    pub destination_component: String,
    pub rows: u64,
}

/// One task or container of a package (one loop iteration: its own path).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SubStep {
    pub path: String,
    pub name: String,
    /// "running" until it finished, then succeeded | failed | canceled | timed_out.
    pub status: String,
    /// Unix ms UTC; None when only data-flow rows were seen.
    pub started_at_ms: Option<i64>,
    pub duration_ms: Option<u64>,
    pub message: String,
    pub rows: Vec<FlowRows>,
}

impl SubStep {
    pub fn is_running(&self) -> bool {
        self.status == SUB_STEP_RUNNING
    }

    /// The busiest data-flow path's rows: a progress figure that does not count a row once
    /// per path it went through.
    pub fn rows_max(&self) -> Option<u64> {
        self.rows.iter().map(|r| r.rows).max()
    }
}

/// The package of one step attempt of one execution.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepPackage {
    pub execution_id: String,
    pub task: String,
    pub attempt: u32,
    pub step: u32,
    pub step_attempt: u32,
    pub catalog: Option<CatalogInfo>,
    /// In the order first seen (`Packages::into_vec` orders them by start).
    pub sub_steps: Vec<SubStep>,
    /// Position of each path in `sub_steps`.
    #[serde(skip)]
    index: HashMap<String, usize>,
}

impl StepPackage {
    fn new(at: &At, step: u32, step_attempt: u32) -> Self {
        Self {
            execution_id: at.execution_id.clone(),
            task: at.task.clone(),
            attempt: at.attempt,
            step,
            step_attempt,
            catalog: None,
            sub_steps: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// The sub-step at `path`, added (running, not yet started) when first seen.
    fn sub_step(&mut self, path: &str, name: &str) -> &mut SubStep {
        let i = *self.index.entry(path.to_owned()).or_insert_with(|| {
            self.sub_steps.push(SubStep {
                path: path.to_owned(),
                name: name.to_owned(),
                status: SUB_STEP_RUNNING.to_owned(),
                started_at_ms: None,
                duration_ms: None,
                message: String::new(),
                rows: Vec::new(),
            });
            self.sub_steps.len() - 1
        });
        &mut self.sub_steps[i]
    }

    pub fn running(&self) -> impl Iterator<Item = &SubStep> {
        self.sub_steps.iter().filter(|s| s.is_running())
    }

    /// Finished sub-steps, and how many of them did not succeed.
    pub fn finished_counts(&self) -> (usize, usize) {
        let finished = self.sub_steps.iter().filter(|s| !s.is_running());
        let (mut all, mut bad) = (0, 0);
        for s in finished {
            all += 1;
            bad += usize::from(s.status != "succeeded");
        }
        (all, bad)
    }

    fn apply(&mut self, kind: &RunEventKind) {
        match kind {
            RunEventKind::CatalogExecution(c) => self.catalog = Some(catalog_info(c)),
            RunEventKind::SubStepStarted(started) => {
                let s = self.sub_step(&started.path, &started.name);
                s.started_at_ms.get_or_insert(started.started_at_ms);
            }
            RunEventKind::SubStepFinished(f) => {
                let s = self.sub_step(&f.path, &f.name);
                s.status = f.status.clone();
                s.started_at_ms = Some(f.started_at_ms);
                s.duration_ms = Some(f.duration_ms);
                s.message = f.message.clone();
            }
            RunEventKind::DataFlowRows(d) => {
                let name = last_segment(&d.path);
                let s = self.sub_step(&d.path, name);
                set_rows(&mut s.rows, d);
            }
            _ => {}
        }
    }
}

fn catalog_info(c: &CatalogExecution) -> CatalogInfo {
    CatalogInfo {
        catalog_execution_id: c.catalog_execution_id,
        server: c.server.clone(),
        folder: c.folder.clone(),
        project: c.project.clone(),
        package: c.package.clone(),
        status: c.status.clone(),
    }
}

/// A running total replaces the earlier one of its data-flow path.
fn set_rows(rows: &mut Vec<FlowRows>, d: &DataFlowRows) {
    match rows
        .iter_mut()
        .find(|r| r.data_flow_path == d.data_flow_path)
    {
        Some(r) => r.rows = d.rows,
        None => rows.push(FlowRows {
            data_flow_path: d.data_flow_path.clone(),
            source_component: d.source_component.clone(),
            destination_component: d.destination_component.clone(),
            rows: d.rows,
        }),
    }
}

/// `Copy rows` of `\Load Sales\Copy rows`: the name of a task only seen by its rows.
fn last_segment(path: &str) -> &str {
    path.rsplit('\\').next().unwrap_or(path)
}

/// Which package a step attempt of an execution ran.
type Key = (String, u32, u32);

/// The packages of a run (or of what a reporter has seen of it), by step attempt.
#[derive(Debug, Default)]
pub struct Packages {
    list: Vec<StepPackage>,
    index: HashMap<Key, usize>,
}

impl Packages {
    /// Folds one event in; the package it changed (None for any other kind of event).
    pub fn apply(&mut self, kind: &RunEventKind) -> Option<&StepPackage> {
        let (at, step, step_attempt) = match kind {
            RunEventKind::CatalogExecution(e) => (&e.at, e.step, e.step_attempt),
            RunEventKind::SubStepStarted(e) => (&e.at, e.step, e.step_attempt),
            RunEventKind::SubStepFinished(e) => (&e.at, e.step, e.step_attempt),
            RunEventKind::DataFlowRows(e) => (&e.at, e.step, e.step_attempt),
            _ => return None,
        };
        let key = (at.execution_id.clone(), step, step_attempt);
        let i = *self.index.entry(key).or_insert_with(|| {
            self.list.push(StepPackage::new(at, step, step_attempt));
            self.list.len() - 1
        });
        let package = &mut self.list[i];
        package.apply(kind);
        Some(package)
    }

    pub fn get(&self, execution_id: &str, step: u32, step_attempt: u32) -> Option<&StepPackage> {
        let i = self
            .index
            .get(&(execution_id.to_owned(), step, step_attempt))?;
        Some(&self.list[*i])
    }

    /// Forgets the package of one step attempt (it ended).
    pub fn remove(
        &mut self,
        execution_id: &str,
        step: u32,
        step_attempt: u32,
    ) -> Option<StepPackage> {
        self.get(execution_id, step, step_attempt)?;
        let mut gone = self.remove_where(|p| {
            p.execution_id == execution_id && p.step == step && p.step_attempt == step_attempt
        });
        gone.pop()
    }

    /// Forgets the packages of an execution (it finished).
    pub fn remove_execution(&mut self, execution_id: &str) -> Vec<StepPackage> {
        self.remove_where(|p| p.execution_id == execution_id)
    }

    fn remove_where(&mut self, gone: impl Fn(&StepPackage) -> bool) -> Vec<StepPackage> {
        let (gone, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.list).into_iter().partition(gone);
        self.index = kept
            .iter()
            .enumerate()
            .map(|(i, p)| ((p.execution_id.clone(), p.step, p.step_attempt), i))
            .collect();
        self.list = kept;
        gone
    }

    /// Every package, in the order first seen; each one's sub-steps by start time (those
    /// never seen started last, in the order seen).
    pub fn into_vec(self) -> Vec<StepPackage> {
        let mut list = self.list;
        for p in &mut list {
            p.sub_steps
                .sort_by_key(|s| s.started_at_ms.unwrap_or(i64::MAX));
            p.index.clear(); // positions changed; nothing is folded in any more
        }
        list
    }
}

#[cfg(test)]
#[path = "sub_steps_tests.rs"]
mod tests;
