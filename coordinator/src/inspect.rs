//! `coordinator runs`, `show RUN` and `logs RUN`: reading the central store. What they
//! print is data, so it goes to stdout; errors go to stderr. They work on runs driven by
//! any coordinator process that shares the store, including ones still going.
use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

mod report;
mod show;
mod show_package;
#[cfg(test)]
mod tests;

use crate::cli::{LogsArgs, RunsArgs, ShowArgs};
use crate::error::{CliError, exit};
pub use report::{report, write_report};

use crate::store::{LogRow, RunRow, Store, StoreError, run_is_final};

/// How often `logs --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Log lines read per query, so a run with gigabytes of logs streams in constant memory.
const LOG_PAGE: usize = 5000;
/// Run ids are UUIDv7 in hex, whose first 12 digits are the start time: shown this short
/// unless a listed neighbour needs more to tell them apart.
const SHORT_ID: usize = 8;

fn store_error(e: StoreError) -> CliError {
    if e.is_bad_run() {
        CliError::bad_input(e.to_string())
    } else {
        CliError::failed(e.to_string())
    }
}

fn open(home: Option<&Path>) -> Result<Store, CliError> {
    let home = crate::store::home_dir(home).map_err(store_error)?;
    Store::open(&home).map_err(store_error)
}

/// Writes to stdout; a closed pipe (`| head`) ends the output quietly.
fn emit(text: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<i32, CliError> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match text(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(CliError::failed(format!("failed to write to stdout: {e}")))
        }
        _ => Ok(exit::OK),
    }
}

pub async fn runs(home: Option<&Path>, args: RunsArgs) -> Result<i32, CliError> {
    let store = open(home)?;
    let rows = store.list_runs(args.limit).map_err(store_error)?;
    let now = agentfleet_common::now_ms();
    emit(|out| {
        if args.json {
            for row in &rows {
                serde_json::to_writer(&mut *out, row)?;
                writeln!(out)?;
            }
            Ok(())
        } else if rows.is_empty() {
            writeln!(out, "no runs yet in {}", store.path().display())
        } else {
            out.write_all(render_runs(&rows, now).as_bytes())
        }
    })
}

pub async fn show(home: Option<&Path>, args: ShowArgs) -> Result<i32, CliError> {
    if args.timeline {
        return report::show_timeline(home, &args);
    }
    let store = open(home)?;
    let run = store.resolve_run(&args.run).map_err(store_error)?;
    let snapshot = store.run_snapshot(&run.run_id).map_err(store_error)?;
    let now = agentfleet_common::now_ms();
    emit(|out| {
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &snapshot)?;
            writeln!(out)
        } else {
            out.write_all(show::render(&snapshot, now).as_bytes())
        }
    })
}

pub async fn logs(home: Option<&Path>, args: LogsArgs) -> Result<i32, CliError> {
    let home = home.map(Path::to_owned);
    // Polling sleeps and SQLite reads block: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let store = open(home.as_deref())?;
        let run = store.resolve_run(&args.run).map_err(store_error)?;
        let stdout = io::stdout();
        let terminal = std::io::IsTerminal::is_terminal(&stdout);
        let mut out = BufWriter::new(stdout.lock());
        let poll = args.follow.then_some(FOLLOW_POLL);
        let task = args.task.as_deref();
        match write_logs(&store, &run.run_id, task, poll, terminal, &mut out) {
            Ok(()) => Ok(exit::OK),
            Err(LogsError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::OK),
            Err(LogsError::Io(e)) => {
                Err(CliError::failed(format!("failed to write to stdout: {e}")))
            }
            Err(LogsError::Store(e)) => Err(store_error(e)),
        }
    })
    .await
    .map_err(|e| CliError::failed(format!("logs: {e}")))?
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes `run_id`'s log lines in order, each as `task[#attempt]/step/stream | line`.
/// With `follow`, polls every that long for new lines until the run's status is final.
/// With `terminal`, control characters in the lines are escaped (they come from jobs and
/// must not drive the reader's terminal); otherwise lines are written as stored.
pub fn write_logs(
    store: &Store,
    run_id: &str,
    task: Option<&str>,
    follow: Option<Duration>,
    terminal: bool,
    out: &mut dyn Write,
) -> Result<(), LogsError> {
    let mut names = StepNames::default();
    let mut after = 0;
    loop {
        // The status first: lines committed before a final status are then all read below.
        let status = store.run_status(run_id)?;
        loop {
            let rows = store.logs_after(run_id, task, after, LOG_PAGE)?;
            if rows.iter().any(|r| !names.knows(r)) {
                names.load(store, run_id)?;
            }
            for row in &rows {
                let line = if terminal {
                    crate::report::terminal_safe(&row.line)
                } else {
                    std::borrow::Cow::Borrowed(row.line.as_str())
                };
                writeln!(out, "{} | {line}", names.prefix(row))?;
            }
            if let Some(last) = rows.last() {
                after = last.id;
            }
            if rows.len() < LOG_PAGE {
                break;
            }
        }
        let Some(poll) = follow else { break };
        if run_is_final(&status) {
            break;
        }
        if driver_gone(store, run_id)? {
            out.flush()?;
            eprintln!(
                "note: the coordinator driving run {run_id} is gone; `coordinator attach {run_id}` takes it over"
            );
            break;
        }
        out.flush()?;
        std::thread::sleep(poll);
    }
    out.flush()?;
    Ok(())
}

/// True when no coordinator drives the run any more: its lease was released or has
/// expired, or its driver process was on this host and no longer exists.
fn driver_gone(store: &Store, run_id: &str) -> Result<bool, StoreError> {
    let holder = store.lease_holder(run_id)?;
    Ok(!holder.is_live(agentfleet_common::now_ms()) || holder.is_known_dead())
}

/// Step names by (execution, step), for the log line prefix.
#[derive(Default)]
struct StepNames {
    names: HashMap<(String, u32), String>,
    /// Executions whose steps have been loaded (a step may never be named: then its number).
    loaded: std::collections::HashSet<String>,
}

impl StepNames {
    fn knows(&self, row: &LogRow) -> bool {
        self.loaded.contains(&row.execution_id)
    }

    fn load(&mut self, store: &Store, run_id: &str) -> Result<(), StoreError> {
        let snapshot = store.run_snapshot(run_id)?;
        for e in snapshot.executions {
            self.loaded.insert(e.execution_id);
        }
        for s in snapshot.steps {
            self.names.insert((s.execution_id, s.step), s.name);
        }
        Ok(())
    }

    fn prefix(&self, row: &LogRow) -> String {
        let attempt = if row.attempt > 1 {
            format!("#{}", row.attempt)
        } else {
            String::new()
        };
        let step = match self.names.get(&(row.execution_id.clone(), row.step)) {
            Some(name) if !name.is_empty() => name.clone(),
            // Step 0: the job as a whole (e.g. SQL Server Agent's job outcome message).
            _ if row.step == 0 => "job".to_owned(),
            _ => row.step.to_string(),
        };
        format!("{}{attempt}/{step}/{}", row.task, row.stream)
    }
}

/// The shortest prefix of each id (at least `SHORT_ID`) that no other listed id shares.
pub fn short_ids(ids: &[&str]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            let mut len = SHORT_ID.min(id.len());
            while len < id.len()
                && ids
                    .iter()
                    .any(|other| other != id && other.starts_with(&id[..len]))
            {
                len += 1;
            }
            id[..len].to_owned()
        })
        .collect()
}

/// A local date and time, e.g. "2026-11-25 18:14:04".
pub fn local_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
}

/// A run's duration so far (to `now_ms` while it goes on).
pub fn run_duration(run: &RunRow, now_ms: i64) -> String {
    let end = run.finished_ms.unwrap_or(now_ms);
    let d = Duration::from_millis(end.saturating_sub(run.started_ms).max(0) as u64);
    agentfleet_common::duration::short(d)
}

pub fn render_runs(rows: &[RunRow], now_ms: i64) -> String {
    let ids: Vec<&str> = rows.iter().map(|r| r.run_id.as_str()).collect();
    let short = short_ids(&ids);
    let id_width = short.iter().map(String::len).max().unwrap_or(3).max(3);
    let plan_width = rows
        .iter()
        .map(|r| r.plan_name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 32);
    let mut out = format!(
        "{:<id_width$}  {:<plan_width$}  {:<19}  {:>9}  {:<11}  TASKS\n",
        "RUN", "PLAN", "STARTED", "DURATION", "STATUS"
    );
    for (row, id) in rows.iter().zip(&short) {
        let mut tasks = format!("{} ok", row.tasks_succeeded);
        if row.tasks_failed > 0 {
            tasks.push_str(&format!(", {} failed", row.tasks_failed));
        }
        tasks.push_str(&format!(" / {}", row.tasks_total));
        let status = if row.cancel_requested && !run_is_final(&row.status) {
            "canceling"
        } else {
            row.status.as_str()
        };
        out.push_str(&format!(
            "{id:<id_width$}  {:<plan_width$}  {:<19}  {:>9}  {status:<11}  {tasks}\n",
            row.plan_name,
            local_time(row.started_ms),
            run_duration(row, now_ms),
        ));
    }
    out
}
