//! The one poller task per server: one `poll` batch per tick for all tracked executions,
//! events to each execution's sink, stop requests, and the bounds that keep an execution
//! from hanging (stop not confirmed, connection gone for too long).
//!
//! Exactly-once history across sidecar restarts: the journal is the only record of how far
//! an execution's msdb history was read. Each tick's events are sent to the sink as one
//! `SinkMsg::Group` (journaled in one append), and the events a history row yields carry
//! its `instance_id`; after a restart the backend resumes after the largest id in the
//! journal (`ExecutionContext::resume`), whatever the ledger says, and the journal writer
//! drops any row at or below it. A kill -9 therefore leaves each row either wholly in the
//! journal (not read again) or not at all (read again): never lost, never shown twice.
//! The ledger's `cursor`, still saved here once a tick's events are handed over, is only
//! a fallback for journals written before events carried the id.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto::{self, LogStream};
use tiberius::Uuid;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::connection::{Conn, Settings, SqlError};
use super::errors::{Agent22022, classify_22022};
use super::ledger::{self, Ledger};
use super::output_file::{OutputTail, resolve_name};
use super::poll::{next_interval, poll};
use super::queries;
use super::rows::ProcResult;
use super::tracker::{LiveView, Observation, Out, Tracker};
use crate::backend::ssis::agent_step::AgentSteps;
use crate::events::{EventSink, SinkMsg};

/// After a stop request, how long to wait for the Agent's outcome row.
pub const STOP_BOUND: Duration = Duration::from_secs(60);
/// A stop request is repeated this often until the job ends (a request sent before the
/// Agent began the job is refused with "not currently running").
const STOP_REPEAT: Duration = Duration::from_secs(15);
/// Without a successful poll for this long, tracked executions end as LOST.
pub const LOST_AFTER: Duration = Duration::from_secs(300);
/// After this many polls in a row fail with a server error (not a lock timeout), the poll
/// stops asking `xp_sqlagent_enum_jobs`: an error raised inside it (22022 while the Agent
/// is stopped) escapes the batch's TRY/CATCH and would otherwise fail every tick.
const ENUM_FAILURES_BEFORE_FALLBACK: u32 = 3;

/// An execution handed to the poller.
pub struct Follow {
    pub execution_id: String,
    pub tracker: Tracker,
    pub sink: EventSink,
    pub stop: CancellationToken,
    /// The job's SSIS steps, whose catalog executions are followed too.
    pub ssis: AgentSteps,
}

struct Followed {
    f: Follow,
    stop_sent: Option<Instant>,
    stop_first: Option<Instant>,
    tail: Option<(i32, OutputTail)>,
    ledger_cursor: i32,
    done: CancellationToken,
}

/// Jobs with an execution in progress on this sidecar (start refuses a second one).
pub type Busy = Arc<Mutex<HashSet<Uuid>>>;

pub struct Deps {
    pub settings: Settings,
    pub control: Arc<tokio::sync::Mutex<Conn>>,
    pub ledger: Ledger,
    pub base_interval: Duration,
    pub busy: Busy,
}

/// Spawns the poller; it ends when the returned sender is dropped.
pub fn spawn(deps: Deps) -> mpsc::UnboundedSender<Follow> {
    // Unbounded: one message per started execution (rare, bounded by slots).
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(deps, rx));
    tx
}

async fn run(deps: Deps, mut rx: mpsc::UnboundedReceiver<Follow>) {
    let wake = Arc::new(Notify::new());
    let mut conn = Conn::new(deps.settings.clone());
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut use_enum = true;
    let mut server_failures = 0u32;
    let mut last_ok = Instant::now();
    let mut last_change = Instant::now();
    loop {
        while let Ok(f) = rx.try_recv() {
            add(&mut followed, f, &wake);
            last_change = Instant::now();
        }
        if followed.is_empty() {
            match rx.recv().await {
                Some(f) => {
                    add(&mut followed, f, &wake);
                    last_ok = Instant::now();
                    last_change = Instant::now();
                    continue;
                }
                None => return,
            }
        }
        let jobs: Vec<(Uuid, i32)> = followed
            .values()
            .map(|x| (x.f.tracker.job.job_id, x.f.tracker.cursor))
            .collect();
        let mut delay = None;
        match poll(&mut conn, &jobs, use_enum).await {
            Ok(r) => {
                backoff.reset();
                server_failures = 0;
                last_ok = Instant::now();
                if r.heartbeat.agent_connected == Some(false) {
                    tracing::warn!(
                        "SQL Server Agent is not connected to the engine (service stopped?)"
                    );
                }
                if use_enum && !r.live_available {
                    tracing::info!(error = ?r.heartbeat.enum_jobs_error, "xp_sqlagent_enum_jobs unavailable; inferring the current step from the step flow");
                    use_enum = false;
                }
                let now_ms = agentfleet_common::now_ms();
                for x in followed.values_mut() {
                    let job_id = x.f.tracker.job.job_id;
                    let obs = Observation {
                        heartbeat: &r.heartbeat,
                        live: if r.live_available {
                            LiveView::Enum(r.live.get(&job_id))
                        } else {
                            LiveView::Infer
                        },
                        activity: r.activity.get(&job_id),
                        rows: r.rows.get(&job_id).map(Vec::as_slice).unwrap_or(&[]),
                        now_ms,
                    };
                    let mut outs = x.f.tracker.observe(&obs);
                    let f = &mut x.f;
                    f.ssis
                        .on_outs(&f.execution_id, &f.tracker.job, &f.sink, &mut outs);
                    if x.f.tracker.changed {
                        last_change = Instant::now();
                    }
                    deliver(x, outs).await;
                }
            }
            Err(SqlError::Server { number: 1222, .. }) => {} // the history row limiter holds its lock: next tick
            Err(e) => {
                tracing::warn!(error = %e, "SQL Server Agent poll failed");
                if matches!(e, SqlError::Server { .. }) {
                    server_failures += 1;
                    if use_enum && server_failures >= ENUM_FAILURES_BEFORE_FALLBACK {
                        tracing::warn!(error = %e, "the poll failed {server_failures} times in a row; polling without xp_sqlagent_enum_jobs (history and activity only) from now on");
                        use_enum = false;
                    }
                } else {
                    server_failures = 0;
                }
                delay = Some(backoff.next_delay());
                if last_ok.elapsed() > LOST_AFTER {
                    let msg = format!(
                        "no answer from SQL Server for {}s ({e}); the job's outcome is unknown",
                        LOST_AFTER.as_secs()
                    );
                    for x in followed.values_mut() {
                        let outs = x.f.tracker.finish(
                            proto::Outcome::Lost,
                            msg.clone(),
                            agentfleet_common::now_ms(),
                        );
                        deliver(x, outs).await;
                    }
                }
            }
        }
        for x in followed.values_mut() {
            handle_stop(x, &deps.control).await;
        }
        // A Finished held back for the SSIS steps' catalog logs, once they are in.
        for x in followed.values_mut() {
            if let Some(outs) = x.f.ssis.release() {
                deliver(x, outs).await;
            }
        }
        // Retire finished executions.
        let done: Vec<String> = followed
            .iter()
            .filter(|(_, x)| {
                (x.f.tracker.finished().is_some() && !x.f.ssis.holding()) || x.f.sink.is_closed()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in done {
            if let Some(x) = followed.remove(&id) {
                x.done.cancel();
                deps.busy
                    .lock()
                    .expect("busy lock")
                    .remove(&x.f.tracker.job.job_id);
                if let Some(outcome) = x.f.tracker.finished() {
                    finish_ledger(&deps.ledger, &id, x.f.tracker.cursor, outcome);
                }
            }
        }
        for x in followed.values_mut() {
            if x.f.tracker.cursor != x.ledger_cursor {
                if let Some(mut e) = deps.ledger.get(&x.f.execution_id) {
                    e.cursor = x.f.tracker.cursor;
                    e.state = ledger::State::Started;
                    let _ = deps.ledger.put(&e);
                }
                x.ledger_cursor = x.f.tracker.cursor;
            }
        }
        let urgent = followed
            .values()
            .any(|x| !x.f.tracker.is_started() || x.stop_first.is_some());
        let sleep = delay
            .unwrap_or_else(|| next_interval(deps.base_interval, last_change.elapsed(), urgent));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            f = rx.recv() => match f {
                Some(f) => { add(&mut followed, f, &wake); last_change = Instant::now(); }
                None if followed.is_empty() => return,
                None => {}
            }
        }
    }
}

fn add(followed: &mut HashMap<String, Followed>, mut f: Follow, wake: &Arc<Notify>) {
    // Resumed while an SSIS step ran: follow its catalog execution again.
    if let Some(step) = f.tracker.open_step() {
        f.ssis
            .resume_open_step(&f.execution_id, &f.tracker.job, step, &f.sink);
    }
    let done = CancellationToken::new();
    let (stop, d, w) = (f.stop.clone(), done.clone(), wake.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => w.notify_one(),
            _ = d.cancelled() => {}
        }
    });
    let cursor = f.tracker.cursor;
    followed.insert(
        f.execution_id.clone(),
        Followed {
            f,
            stop_sent: None,
            stop_first: None,
            tail: None,
            ledger_cursor: cursor,
            done,
        },
    );
}

/// Sends a tick's output to the execution's sink as one group (see the module docs), and
/// tails the open step's output file.
async fn deliver(x: &mut Followed, outs: Vec<Out>) {
    let sink = &x.f.sink;
    let mut group = Vec::with_capacity(outs.len());
    for o in outs {
        match o {
            Out::Event { ts_ms, kind } => {
                if let proto::event::Kind::StepFinished(sf) = &kind
                    && let Some((step, mut tail)) = x.tail.take()
                {
                    if step as u32 == sf.step_id {
                        for line in tail.read_new(true) {
                            group.push(SinkMsg::log_now(sf.step_id, LogStream::Stdout, line, 0));
                        }
                    } else {
                        x.tail = Some((step, tail));
                    }
                }
                group.push(SinkMsg::Event { ts_ms, kind });
            }
            Out::Log {
                step_id,
                line,
                sql_instance_id,
            } => group.push(SinkMsg::log_now(
                step_id,
                LogStream::Agent,
                line,
                sql_instance_id,
            )),
        }
    }
    sink.group(group).await;
    if let Some((step, attempt)) = x.f.tracker.open_step() {
        let _ = attempt;
        if x.tail.as_ref().is_none_or(|(s, _)| *s != step) {
            let job = &x.f.tracker.job;
            x.tail = job.step(step).and_then(|def| {
                let name = def.output_file_name.as_deref()?;
                Some((
                    step,
                    OutputTail::new(resolve_name(name, job.job_id, step)?, def.flags & 2 != 0),
                ))
            });
        }
        if let Some((step, tail)) = x.tail.as_mut() {
            for line in tail.read_new(false) {
                sink.log(*step as u32, LogStream::Stdout, line).await;
            }
        }
    }
}

/// Sends `sp_stop_job` once the execution's stop token is cancelled (repeated while the job
/// has not ended), and ends the execution as CANCELED if the Agent never confirms.
async fn handle_stop(x: &mut Followed, control: &tokio::sync::Mutex<Conn>) {
    if !x.f.stop.is_cancelled() || x.f.tracker.finished().is_some() {
        return;
    }
    let first = *x.stop_first.get_or_insert_with(Instant::now);
    if first.elapsed() > STOP_BOUND {
        let msg = format!(
            "stop requested; SQL Server Agent had not recorded the end of `{}` within {}s, so it may still be running on the server",
            x.f.tracker.job.name,
            STOP_BOUND.as_secs()
        );
        let outs =
            x.f.tracker
                .finish(proto::Outcome::Canceled, msg, agentfleet_common::now_ms());
        deliver(x, outs).await;
        return;
    }
    if x.stop_sent.is_some_and(|t| t.elapsed() < STOP_REPEAT) {
        return;
    }
    x.stop_sent = Some(Instant::now());
    let job_id = x.f.tracker.job.job_id;
    let result = control
        .lock()
        .await
        .query(queries::STOP_JOB, &[&job_id])
        .await;
    let note = match result {
        Ok(sets) => {
            let r = sets
                .first()
                .and_then(|s| s.first())
                .map(ProcResult::from_row)
                .unwrap_or_default();
            match (r.err_number, r.rc) {
                (None, Some(0) | None) => "stop requested from SQL Server Agent".to_string(),
                (Some(n), rc) => stop_refused(n, r.err_message.as_deref().unwrap_or(""), rc),
                (None, rc) => format!("stop request failed (sp_stop_job returned {rc:?})"),
            }
        }
        Err(SqlError::Connection(e)) => {
            // Nothing reached the Agent: send again on the next tick, on a fresh connection.
            x.stop_sent = None;
            format!("stop request not delivered ({e}); retrying")
        }
        // 22022 is raised inside xp_sqlagent_notify and escapes the batch's TRY/CATCH.
        Err(SqlError::Server {
            number, message, ..
        }) => stop_refused(number, &message, None),
        Err(e) => format!("stop request failed: {e}"),
    };
    x.f.sink.log(0, LogStream::Agent, note).await;
}

/// The log line for a refused `sp_stop_job`, whether the error was caught in the batch or
/// escaped it as a TDS error.
fn stop_refused(number: i32, message: &str, rc: Option<i32>) -> String {
    match (number, classify_22022(message)) {
        (22022, Agent22022::JobNotRunning) => "stop requested, but SQL Server Agent says the job is not running (it may be ending or not begun yet)".to_string(),
        (22022, Agent22022::AgentNotRunning) => format!("stop request failed: SQL Server Agent is not running ({message})"),
        _ => format!("stop request failed (error {number}, rc {rc:?}): {message}"),
    }
}

fn finish_ledger(ledger: &Ledger, id: &str, cursor: i32, outcome: proto::Outcome) {
    if let Some(mut e) = ledger.get(id) {
        e.state = ledger::State::Finished;
        e.cursor = cursor;
        e.outcome = Some(outcome as i32);
        let _ = ledger.put(&e);
    }
}
