//! The coordinator's `--json` output: one object per line, with lookups tests need.
use serde_json::Value;

/// Every event of one `coordinator run --json`, in output order.
#[derive(Debug, Clone, Default)]
pub struct RunEvents {
    events: Vec<Value>,
}

impl RunEvents {
    /// Parses stdout, one JSON object per non-empty line; a line that is not one is an error
    /// (stdout is for data only).
    pub fn parse(stdout: &str) -> Result<Self, String> {
        let mut events = Vec::new();
        for (i, line) in stdout.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .map_err(|e| format!("stdout line {} is not JSON ({e}): {line}", i + 1))?;
            if !value.is_object() {
                return Err(format!(
                    "stdout line {} is not a JSON object: {line}",
                    i + 1
                ));
            }
            events.push(value);
        }
        Ok(Self { events })
    }

    pub fn all(&self) -> &[Value] {
        &self.events
    }

    /// Events of one `type`, in order.
    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// Events of one `type` for one task, in order.
    pub fn of_task(&self, kind: &str, task: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && e["task"] == task)
            .collect()
    }

    /// Index (in output order) of the first event matching `pred`.
    pub fn position(&self, pred: impl Fn(&Value) -> bool) -> Option<usize> {
        self.events.iter().position(pred)
    }

    /// The one `run_finished` event; panics when there is none or several.
    pub fn run_finished(&self) -> &Value {
        let finished = self.of_type("run_finished");
        assert_eq!(
            finished.len(),
            1,
            "expected exactly one run_finished event, got {}",
            finished.len()
        );
        finished[0]
    }

    /// The `run_finished` summary row of `task`.
    pub fn summary(&self, task: &str) -> &Value {
        self.run_finished()["summary"]
            .as_array()
            .expect("run_finished.summary is an array")
            .iter()
            .find(|row| row["task"] == task)
            .unwrap_or_else(|| panic!("no summary row for task `{task}`"))
    }

    /// The last `task_finished` event of `task` (its final outcome).
    pub fn final_task_finished(&self, task: &str) -> &Value {
        self.of_task("task_finished", task)
            .pop()
            .unwrap_or_else(|| panic!("no task_finished event for task `{task}`"))
    }

    /// The distinct `sidecar` values of `task_placed` events (of one task, or all with None).
    pub fn placed_on(&self, task: Option<&str>) -> std::collections::BTreeSet<String> {
        self.of_type("task_placed")
            .into_iter()
            .filter(|e| task.is_none_or(|t| e["task"] == t))
            .filter_map(|e| e["sidecar"].as_str().map(str::to_owned))
            .collect()
    }
}
