//! One package run, as ISServerExec performs it: pending → running → the scripted tasks in
//! order → succeeded / failed / ended unexpectedly, or canceled after a stop. Messages,
//! executable statistics and data-flow rows are written as it goes, gated by the
//! execution's `LOGGING_LEVEL` (`ssisdb.md` §2.7).

use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Catalog;
use super::model::{DataStat, EventDetail, ExecStat, PackageDef, TaskDef, TaskResult, status};

/// Which message types a logging level writes (`ssisdb.md` §2.7, §8):
/// 0 none; 1 Basic all but 90/140/200; 2 Performance only 110/120; 3 Verbose all.
/// Assumptions: 4 (RuntimeLineage) and 100 (customized) log like Basic.
pub fn logs(level: i32, message_type: i16) -> bool {
    match level {
        0 => false,
        2 => matches!(message_type, 110 | 120),
        3 => true,
        _ => !matches!(message_type, 90 | 140 | 200),
    }
}

/// Executable statistics at every level but 0 (assumption: unconfirmed for 0).
fn logs_statistics(level: i32) -> bool {
    level != 0
}

/// Where an event happens: the executable's path, its name, and the logging thread.
struct Site<'a> {
    path: &'a str,
    source: &'a str,
    thread: i32,
}

struct Ctx {
    cat: Catalog,
    id: i64,
    level: i32,
    pkg: PackageDef,
}

impl Ctx {
    /// A package-level or task-level event message, if the logging level writes it.
    fn event(
        &self,
        message_type: i16,
        source_type: i16,
        event_name: &str,
        text: &str,
        at: &Site<'_>,
    ) {
        let Site {
            path,
            source,
            thread,
        } = *at;
        if !logs(self.level, message_type) {
            return;
        }
        let detail = EventDetail {
            package_name: self.pkg.config.name.clone(),
            event_name: event_name.to_string(),
            source_name: source.to_string(),
            subcomponent_name: (source_type == 60).then(|| "SSIS.Pipeline".to_string()),
            package_path: if path == self.pkg.path() {
                "\\Package".into()
            } else {
                format!("\\Package\\{source}")
            },
            execution_path: path.to_string(),
            thread_id: thread,
            message_code: (message_type == 120).then_some(-1_071_636_471),
        };
        self.cat
            .emit(self.id, message_type, source_type, text, Some(detail));
    }

    fn package_event(&self, message_type: i16, event_name: &str, text: &str) {
        let name = self.pkg.config.name.trim_end_matches(".dtsx").to_string();
        self.event(
            message_type,
            30,
            event_name,
            text,
            &Site {
                path: &self.pkg.path(),
                source: &name,
                thread: 1,
            },
        );
    }

    fn set_status(&self, to: i32) {
        let now = self.cat.clock.now_offset();
        {
            let mut s = self.cat.lock();
            if let Some(o) = s.operations.get_mut(&self.id) {
                o.status = to;
                if to == status::RUNNING {
                    o.process_id = Some(4000 + (self.id % 1000) as i32);
                }
                if status::is_terminal(to) {
                    o.end_time = Some(now);
                }
            }
        }
        self.cat.notify();
    }

    fn statistics(&self, task: &TaskDef, started: (super::model::Time, Instant), result: i16) {
        if !logs_statistics(self.level) {
            return;
        }
        let now = self.cat.clock.now_offset();
        let mut s = self.cat.lock();
        let (project, package) = match s.executions.get(&self.id) {
            Some(e) => (e.project.clone(), e.package.clone()),
            None => return, // deleted meanwhile
        };
        let executable_id = s.executable(&project, &package, &task.config.name, &task.path);
        let id = s.next_stat_id;
        s.next_stat_id += 1;
        s.stats.push(ExecStat {
            id,
            execution_id: self.id,
            executable_id,
            execution_path: task.path.clone(),
            start_time: started.0,
            end_time: now,
            duration_ms: started.1.elapsed().as_millis().min(i32::MAX as u128) as i32,
            result,
        });
    }

    /// Data-flow row counts: only at Verbose (3).
    fn data_rows(&self, task: &TaskDef) {
        if self.level != 3 {
            return;
        }
        let now = self.cat.clock.now_offset();
        let mut s = self.cat.lock();
        for (i, r) in task.config.rows.iter().enumerate() {
            let id = s.next_data_id;
            s.next_data_id += 1;
            s.data.push(DataStat {
                id,
                execution_id: self.id,
                package_name: self.pkg.config.name.clone(),
                task_name: task.config.name.clone(),
                path_id_string: format!("Paths[{}.Output {}]", r.source, i),
                path_name: r.path_name.clone(),
                source: r.source.clone(),
                destination: r.destination.clone(),
                rows_sent: r.rows,
                created_time: now,
                execution_path: task.path.clone(),
            });
        }
    }
}

/// How a task ended.
enum Ended {
    Done(TaskResult),
    Stopped,
}

async fn run_task(c: &Ctx, task: &TaskDef, thread: i32, stop: &CancellationToken) -> Ended {
    let source_type = if task.config.rows.is_empty() { 40 } else { 60 };
    let name = task.config.name.as_str();
    let at = Site {
        path: &task.path,
        source: name,
        thread,
    };
    c.event(
        30,
        source_type,
        "OnPreExecute",
        &format!("{name} started."),
        &at,
    );
    let started = (c.cat.clock.now_offset(), Instant::now());
    let stopped = tokio::select! {
        _ = stop.cancelled() => true,
        _ = async {
            match task.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        } => false,
    };
    if stopped {
        c.event(
            100,
            source_type,
            "OnQueryCancel",
            &format!("{name} was canceled."),
            &at,
        );
        c.statistics(task, started, 3);
        return Ended::Stopped;
    }
    if task.result == TaskResult::Crash {
        return Ended::Done(TaskResult::Crash);
    }
    for m in &task.config.messages {
        let event = match m.message_type {
            120 => "OnError",
            110 => "OnWarning",
            90 => "Diagnostic",
            _ => "OnInformation",
        };
        c.event(m.message_type, source_type, event, &m.text, &at);
    }
    c.event(
        90,
        20,
        "Diagnostic",
        &format!("{name}: diagnostic detail."),
        &at,
    );
    c.data_rows(task);
    let ok = task.result == TaskResult::Success;
    if !ok {
        if !task.config.messages.iter().any(|m| m.message_type == 120) {
            c.event(120, source_type, "OnError", &format!("{name} failed."), &at);
        }
        c.event(130, source_type, "OnTaskFailed", "", &at);
    }
    c.event(
        40,
        source_type,
        "OnPostExecute",
        &format!("{name} finished."),
        &at,
    );
    c.statistics(task, started, if ok { 0 } else { 1 });
    Ended::Done(task.result)
}

pub(super) async fn run(cat: Catalog, id: i64, stop: CancellationToken) {
    let (pkg, level, pending) = {
        let s = cat.lock();
        let Some(e) = s.executions.get(&id) else {
            return;
        };
        let pkg = s.packages[e.package_index].clone();
        let pending = pkg.config.pending_delay.unwrap_or(s.settings.pending_delay);
        (pkg, s.logging_level(id), pending)
    };
    let c = Ctx {
        cat,
        id,
        level,
        pkg,
    };
    // Pending: ISServerExec is starting. A stop now is refused (27124), so it cannot cancel.
    tokio::select! {
        _ = tokio::time::sleep(pending) => {}
        _ = c.cat.shutdown.cancelled() => return,
    }
    c.set_status(status::RUNNING);
    c.package_event(10, "OnPreValidate", "Validation has started.");
    c.package_event(20, "OnPostValidate", "Validation is complete.");
    c.package_event(30, "OnPreExecute", "Package started.");
    let mut outcome = status::SUCCEEDED;
    for (i, task) in c.pkg.tasks.iter().enumerate() {
        if stop.is_cancelled() {
            outcome = status::CANCELED;
            break;
        }
        match run_task(&c, task, 2 + (i as i32 % 3), &stop).await {
            Ended::Stopped => {
                outcome = status::CANCELED;
                break;
            }
            Ended::Done(TaskResult::Crash) => {
                outcome = status::ENDED_UNEXPECTEDLY;
                break;
            }
            Ended::Done(TaskResult::Failure) => {
                outcome = status::FAILED;
                break;
            }
            Ended::Done(TaskResult::Success) => {}
        }
    }
    if c.cat.shutdown.is_cancelled() {
        return;
    }
    if outcome == status::CANCELED {
        // The package unwinds before the catalog records the cancel.
        let latency = c.cat.lock().settings.stop_latency;
        tokio::time::sleep(latency).await;
    }
    let late = c.pkg.config.late_messages;
    let finished = |c: &Ctx| {
        if outcome != status::ENDED_UNEXPECTEDLY {
            c.package_event(40, "OnPostExecute", "Package finished.");
        }
    };
    if late == 0 {
        finished(&c);
    }
    c.set_status(outcome);
    if outcome == status::CANCELED {
        let mut s = c.cat.lock();
        let by = s.runs.get(&id).and_then(|(_, by)| *by);
        if let Some(o) = by.and_then(|by| s.operations.get_mut(&by)) {
            o.status = status::SUCCEEDED;
            o.end_time = Some(c.cat.clock.now_offset());
        }
    }
    c.cat.lock().runs.remove(&id);
    if late > 0 {
        // The last events commit after the status change (ssisdb.md §6.4).
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        finished(&c);
        for n in 1..late {
            c.package_event(70, "OnInformation", &format!("Late message {n}."));
        }
    }
    c.cat.notify();
}
