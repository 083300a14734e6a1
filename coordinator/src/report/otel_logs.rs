//! Job log lines as OpenTelemetry log records, part of the OTel reporter: every `log`
//! event becomes a record with the trace id of its run and the span id of its step
//! attempt (the span the sidecar exports for it), so Grafana goes from a step span in
//! Tempo to its lines in Loki and back. Step 0 (a job's own messages, e.g. SQL Server
//! Agent's outcome) belongs to the execution span.
//!
//! A log event says which step but not which attempt of it: the attempt is the one the
//! last `step_started` of that step announced (a retried step's lines follow its new
//! start, in journal order).
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use agentfleet_common::telemetry::{LogLine, export, ids};

use super::Reporter;
use crate::events::{RunEvent, RunEventKind};

/// Each task's job (from the plan), for the records' `job.name`.
static JOBS: Mutex<Option<BTreeMap<String, String>>> = Mutex::new(None);

/// Tells log export which job each task runs.
pub fn set_jobs(plan: &crate::plan::Plan) {
    let jobs = plan
        .tasks
        .iter()
        .map(|t| (t.name.clone(), t.job.clone()))
        .collect();
    *JOBS.lock().unwrap_or_else(|e| e.into_inner()) = Some(jobs);
}

/// Where records go: the export queue, or a test's collector.
pub type LogSink = Box<dyn for<'a> FnMut(LogLine<'a>) + Send>;

pub struct LogRecords {
    /// (execution id, step) → the step's current attempt and name.
    steps: HashMap<(String, u32), (u32, String)>,
    jobs: BTreeMap<String, String>,
    sink: LogSink,
}

impl LogRecords {
    /// Log export, when this process exports log records.
    pub fn when_enabled() -> Option<Self> {
        export::logs_enabled().then(|| Self::new(Box::new(export::export_log)))
    }

    pub fn new(sink: LogSink) -> Self {
        Self {
            steps: HashMap::new(),
            jobs: JOBS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default(),
            sink,
        }
    }
}

impl Reporter for LogRecords {
    fn event(&mut self, ev: &RunEvent) {
        match &ev.kind {
            RunEventKind::StepStarted {
                at,
                step,
                step_name,
                step_attempt,
            } => {
                let key = (at.execution_id.clone(), *step);
                self.steps.insert(key, (*step_attempt, step_name.clone()));
            }
            RunEventKind::Log { at, lines } => {
                let trace_id = ids::run_trace_id(&ev.run_id);
                let job = self.jobs.get(&at.task).map_or("", String::as_str);
                // A batch's lines are nearly always of one step: its attempt, name and
                // span are looked up once per change of step, not per line.
                let mut current = None;
                for l in lines {
                    let step = l.step;
                    let (step_attempt, step_name, span_id) = match current {
                        Some((s, a, n, id)) if s == step => (a, n, id),
                        _ => {
                            let (a, n) = self
                                .steps
                                .get(&(at.execution_id.clone(), step))
                                .map_or((1, ""), |(a, n)| (*a, n.as_str()));
                            let id = if step == 0 {
                                ids::execution_span_id(&at.execution_id)
                            } else {
                                ids::step_span_id(&at.execution_id, step, a)
                            };
                            current = Some((step, a, n, id));
                            (a, n, id)
                        }
                    };
                    (self.sink)(LogLine {
                        trace_id,
                        span_id,
                        ts_ms: ev.ts_ms,
                        stream: l.stream,
                        line: &l.line,
                        run_id: &ev.run_id,
                        task: &at.task,
                        attempt: at.attempt,
                        sidecar: &at.sidecar,
                        job,
                        execution_id: &at.execution_id,
                        step,
                        step_name,
                        step_attempt,
                    });
                }
            }
            RunEventKind::TaskFinished {
                execution_id: Some(execution_id),
                ..
            } => {
                // Its lines have all come (the journal orders them before the end).
                self.steps.retain(|(e, _), _| e != execution_id);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::events::At;
    use crate::report::Reporter;

    #[test]
    fn a_line_gets_the_span_of_its_step_attempt() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let mut logs = LogRecords::new(Box::new(move |l: LogLine<'_>| {
            sink.lock().unwrap().push((
                l.trace_id,
                l.span_id,
                l.step_attempt,
                l.step_name.to_owned(),
                l.stream.to_owned(),
                l.line.to_owned(),
            ))
        }));
        let at = At {
            task: "load-facts".into(),
            attempt: 1,
            sidecar: "sql2".into(),
            execution_id: "e1".into(),
        };
        let ev = |kind| RunEvent::new("r1", 0, kind);
        let log = |step, line: &str| ev(RunEventKind::log_line(at.clone(), step, "stderr", line));
        let started = |attempt| {
            ev(RunEventKind::StepStarted {
                at: at.clone(),
                step: 3,
                step_name: "load".into(),
                step_attempt: attempt,
            })
        };
        for e in [
            started(1),
            log(3, "deadlock victim"),
            started(2),
            log(3, "loaded"),
            log(0, "job done"),
        ] {
            logs.event(&e);
        }
        let got = got.lock().unwrap();
        let trace = ids::run_trace_id("r1");
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].0, got[0].1, got[0].2, got[0].3.as_str()),
            (trace, ids::step_span_id("e1", 3, 1), 1, "load")
        );
        assert_eq!(
            (got[1].1, got[1].2, got[1].5.as_str()),
            (ids::step_span_id("e1", 3, 2), 2, "loaded")
        );
        assert_eq!(got[2].1, ids::execution_span_id("e1"));
        assert_eq!(got[2].4, "stderr");
    }

    #[test]
    fn each_line_of_a_batch_gets_the_span_of_its_own_step() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let mut logs = LogRecords::new(Box::new(move |l: LogLine<'_>| {
            sink.lock()
                .unwrap()
                .push((l.span_id, l.step_name.to_owned()))
        }));
        let at = At {
            task: "t".into(),
            attempt: 1,
            sidecar: "s".into(),
            execution_id: "e1".into(),
        };
        for (step, name) in [(1, "extract"), (2, "load")] {
            logs.event(&RunEvent::new(
                "r1",
                0,
                RunEventKind::StepStarted {
                    at: at.clone(),
                    step,
                    step_name: name.into(),
                    step_attempt: 1,
                },
            ));
        }
        let line = |step: u32| crate::events::LogLine {
            step,
            stream: "stdout",
            line: String::new(),
        };
        let batch = vec![line(1), line(1), line(2), line(0), line(1)];
        logs.event(&RunEvent::new(
            "r1",
            0,
            RunEventKind::Log {
                at,
                lines: batch.into(),
            },
        ));
        let got = got.lock().unwrap();
        let spans: Vec<_> = got.iter().map(|(span, _)| *span).collect();
        let one = ids::step_span_id("e1", 1, 1);
        let two = ids::step_span_id("e1", 2, 1);
        assert_eq!(spans, [one, one, two, ids::execution_span_id("e1"), one]);
        assert_eq!(got[2].1, "load");
    }
}
