//! One job run, as the Agent performs it: request → start → steps (with retries and step
//! actions) → outcome row. History rows are written only when a step or the job finishes.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::msdb::{LastRun, NewHistory, run_status};
use super::steps::{Action, JobDef, StepDef};
use super::{Agent, Phase, State, clock};
use crate::ssisdb::agent_step::{self, StepEnd};

pub(super) struct RunTokens {
    pub run_no: u64,
    /// Cancelled when the Agent session ends (stop or crash).
    pub session: CancellationToken,
    /// Cancelled by sp_stop_job (a child of `session`).
    pub stop: CancellationToken,
    pub request_latency: Duration,
}

enum Waited {
    Elapsed,
    StopRequested,
    SessionEnded,
}

async fn wait(d: Option<Duration>, t: &RunTokens) -> Waited {
    tokio::select! {
        biased;
        _ = t.session.cancelled() => Waited::SessionEnded,
        _ = t.stop.cancelled() => Waited::StopRequested,
        _ = async {
            match d {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        } => Waited::Elapsed,
    }
}

/// Runs `f` if run `run_no` is still the job's live run (not ended by a stop or a crash).
fn with_run<R>(
    agent: &Agent,
    job_id: Uuid,
    run_no: u64,
    f: impl FnOnce(&mut State) -> R,
) -> Option<R> {
    let mut s = agent.lock();
    match s.live.get(&job_id) {
        Some(l) if l.run_no == run_no => {
            let r = f(&mut s);
            s.note_live(job_id);
            Some(r)
        }
        _ => None,
    }
}

/// Reacts to a stop request: after the configured stop latency the job ends as canceled.
async fn handle_stop(agent: &Agent, job_id: Uuid, t: &RunTokens) {
    let latency = agent.lock().settings.stop_latency;
    tokio::select! {
        biased;
        _ = t.session.cancelled() => return,
        _ = tokio::time::sleep(latency) => {}
    }
    with_run(agent, job_id, t.run_no, |s| {
        let by = s
            .live
            .get(&job_id)
            .and_then(|l| l.stop_requested_by.clone())
            .unwrap_or_default();
        finish_canceled(agent, s, job_id, &format!("User {by}"));
    });
}

pub(super) async fn run(agent: Agent, job: JobDef, t: RunTokens) {
    let id = job.job_id;
    let request_latency = t.request_latency.min(job.start_latency);
    macro_rules! pause {
        ($d:expr) => {
            match wait($d, &t).await {
                Waited::Elapsed => {}
                Waited::StopRequested => return handle_stop(&agent, id, &t).await,
                Waited::SessionEnded => return,
            }
        };
    }
    pause!(Some(request_latency));
    // The Agent records the request: run_requested_date set, every other column reset.
    let recorded = with_run(&agent, id, t.run_no, |s| {
        let now = agent.clock.now_local_seconds();
        let sess = s.live[&id].session_id;
        let a = s.msdb.activity_mut(sess, id);
        *a = super::msdb::Activity {
            session_id: sess,
            job_id: id,
            run_requested_date: Some(now),
            run_requested_source: Some("4".into()),
            ..Default::default()
        };
    });
    if recorded.is_none() {
        return;
    }
    if !job.queue_delay.is_zero() {
        with_run(&agent, id, t.run_no, |s| {
            let sess = s.live[&id].session_id;
            s.msdb.activity_mut(sess, id).queued_date = Some(agent.clock.now_local_seconds());
            if let Some(l) = s.live.get_mut(&id) {
                l.phase = Phase::Queued;
            }
        });
        pause!(Some(job.queue_delay));
    }
    pause!(Some(job.start_latency - request_latency));
    with_run(&agent, id, t.run_no, |s| {
        let now = agent.clock.now_local();
        let sess = s.live[&id].session_id;
        s.msdb.activity_mut(sess, id).start_execution_date = Some(clock::truncate_seconds(now));
        let live = s.live.get_mut(&id).expect("checked by with_run");
        live.phase = Phase::Executing;
        live.job_started = Some((now, Instant::now()));
    });

    let mut step = job
        .step(job.start_step)
        .or_else(|| job.steps.first())
        .cloned();
    let mut executed = 0;
    let mut job_ok = false;
    while let Some(st) = step.take() {
        executed += 1;
        if executed > 1000 {
            break; // a goto cycle; the real Agent would loop, a test should not
        }
        let mut attempt = 0;
        let ok = loop {
            with_run(&agent, id, t.run_no, |s| {
                let live = s.live.get_mut(&id).expect("checked by with_run");
                live.phase = Phase::Executing;
                live.current_step = st.id;
                live.current_retry_attempt = attempt;
                live.step_started = Some((agent.clock.now_local(), Instant::now()));
                live.last_step = Some((st.id, st.name.clone()));
            });
            let (ok, message) = if st.subsystem.eq_ignore_ascii_case("SSIS") {
                // The step's command creates and runs a catalog execution (ssisdb::agent_step).
                let account = agent.catalog.lock().settings.agent_account.clone();
                match agent_step::run_step(
                    &agent.catalog,
                    &account,
                    &st.command,
                    &t.stop,
                    &t.session,
                )
                .await
                {
                    StepEnd::Finished { ok, message } => (ok, Some(message)),
                    StepEnd::Stopped => return handle_stop(&agent, id, &t).await,
                    StepEnd::SessionEnded => return,
                }
            } else {
                pause!(st.duration);
                (st.attempt_succeeds(attempt), None)
            };
            let will_retry = !ok && attempt < st.retries;
            let written = with_run(&agent, id, t.run_no, |s| {
                write_step_row(s, &job, &st, attempt, ok, will_retry, message);
            });
            if written.is_none() {
                return;
            }
            if !will_retry {
                break ok;
            }
            with_run(&agent, id, t.run_no, |s| {
                if let Some(l) = s.live.get_mut(&id) {
                    l.phase = Phase::BetweenRetries;
                }
            });
            pause!(Some(st.retry_interval));
            attempt += 1;
        };
        let action = if ok { st.on_success } else { st.on_fail };
        match action {
            Action::QuitSuccess => job_ok = true,
            Action::QuitFailure => job_ok = false,
            Action::NextStep => match job.next_step(st.id) {
                Some(n) => step = Some(n.clone()),
                None => job_ok = ok, // last step: the job ends with that step's status
            },
            Action::GoTo(target) => match job.step(target) {
                Some(n) => step = Some(n.clone()),
                None => job_ok = false,
            },
        }
    }
    with_run(&agent, id, t.run_no, |s| {
        let status = if job_ok {
            run_status::SUCCEEDED
        } else {
            run_status::FAILED
        };
        let verdict = if job_ok {
            "The job succeeded."
        } else {
            "The job failed."
        };
        finish(&agent, s, id, status, verdict);
    });
}

fn step_message(st: &StepDef, ok: bool) -> String {
    let mut m = String::from("Executed as user: NT SERVICE\\SQLSERVERAGENT. ");
    if !st.message.is_empty() {
        m.push_str(&st.message);
        if !ok && st.sql_message_id != 0 {
            m.push_str(&format!(" [SQLSTATE 42000] (Error {})", st.sql_message_id));
        }
        m.push_str("  ");
    }
    m.push_str(if ok {
        "The step succeeded."
    } else {
        "The step failed."
    });
    m
}

fn write_step_row(
    s: &mut State,
    job: &JobDef,
    st: &StepDef,
    attempt: i32,
    ok: bool,
    will_retry: bool,
    message: Option<String>,
) {
    let live = &s.live[&job.job_id];
    let (started, at) = live.step_started.expect("step started");
    let session_id = live.session_id;
    let elapsed = at.elapsed().as_secs();
    let status = match (ok, will_retry) {
        (true, _) => run_status::SUCCEEDED,
        (false, true) => run_status::RETRY,
        (false, false) => run_status::FAILED,
    };
    let message = message.unwrap_or_else(|| step_message(st, ok));
    let server = s.settings.server_name.clone();
    s.msdb.insert_history(
        NewHistory {
            job_id: job.job_id,
            step_id: st.id,
            step_name: &st.name,
            run_status: status,
            started,
            elapsed_secs: elapsed,
            retries_attempted: attempt,
            sql_message_id: if ok { 0 } else { st.sql_message_id },
            sql_severity: if ok { 0 } else { st.sql_severity },
            message: message.clone(),
        },
        &server,
    );
    if let Some(path) = &st.output_file {
        write_output_file(path, job, st, started, &message);
    }
    if will_retry {
        return;
    }
    // Step completion state: activity and sysjobsteps.last_run_*.
    let a = s.msdb.activity_mut(session_id, job.job_id);
    a.last_executed_step_id = Some(st.id);
    a.last_executed_step_date = Some(clock::truncate_seconds(started));
    s.msdb.step_last_run.insert(
        (job.job_id, st.id),
        LastRun {
            outcome: status,
            duration: clock::run_duration(elapsed),
            retries: attempt,
            date: clock::run_date(started),
            time: clock::run_time(started),
        },
    );
}

/// Writes the step's output file at step end (overwrite, or append with flag 2).
fn write_output_file(
    path: &str,
    job: &JobDef,
    st: &StepDef,
    started: chrono::NaiveDateTime,
    message: &str,
) {
    use std::io::Write;
    let text = format!(
        "Job '{}' : Step {}, '{}' : Began Executing {}\n\n{}\n",
        job.name,
        st.id,
        st.name,
        started.format("%Y-%m-%d %H:%M:%S"),
        message
    );
    let append = st.flags & 2 != 0;
    let res = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(e) = res {
        tracing::warn!(path, error = %e, "failed to write step output file");
    }
}

/// Writes the outcome row (step_id 0), closes the activity row and runs the row limiter.
fn finish(agent: &Agent, s: &mut State, job_id: Uuid, status: i32, verdict: &str) {
    let Some(live) = s.live.remove(&job_id) else {
        return;
    };
    s.note_live(job_id);
    let now = agent.clock.now_local();
    let (started, elapsed) = match live.job_started {
        Some((t, at)) => (t, at.elapsed().as_secs()),
        None => (now, 0),
    };
    let last = live
        .last_step
        .as_ref()
        .map(|(id, name)| format!("  The last step to run was step {id} ({name})."))
        .unwrap_or_default();
    let message = format!(
        "{verdict}  The Job was invoked by User {}.{last}",
        live.requested_by
    );
    let server = s.settings.server_name.clone();
    let instance_id = s.msdb.insert_history(
        NewHistory {
            job_id,
            step_id: 0,
            step_name: "(Job outcome)",
            run_status: status,
            started,
            elapsed_secs: elapsed,
            retries_attempted: 0,
            sql_message_id: 0,
            sql_severity: 0,
            message,
        },
        &server,
    );
    let a = s.msdb.activity_mut(live.session_id, job_id);
    a.run_requested_date
        .get_or_insert(clock::truncate_seconds(now));
    a.stop_execution_date = Some(clock::truncate_seconds(now));
    a.job_history_id = Some(instance_id);
    s.msdb.job_last_run.insert(
        job_id,
        LastRun {
            outcome: status,
            duration: clock::run_duration(elapsed),
            retries: 0,
            date: clock::run_date(started),
            time: clock::run_time(started),
        },
    );
    let (per_job, total) = (
        s.settings.history_max_rows_per_job,
        s.settings.history_max_rows,
    );
    s.msdb.limit_history(job_id, per_job, total);
}

/// Ends a run as canceled: a canceled row for the step in progress, then the outcome row.
/// `by` is "User <login>" or "Shutdown Sequence 0".
pub(super) fn finish_canceled(agent: &Agent, s: &mut State, job_id: Uuid, by: &str) {
    let Some(live) = s.live.get(&job_id).cloned() else {
        return;
    };
    if let (Phase::Executing, Some((started, at))) = (live.phase, live.step_started) {
        let name = live.last_step.clone().map(|(_, n)| n).unwrap_or_default();
        let server = s.settings.server_name.clone();
        s.msdb.insert_history(
            NewHistory {
                job_id,
                step_id: live.current_step,
                step_name: &name,
                run_status: run_status::CANCELED,
                started,
                elapsed_secs: at.elapsed().as_secs(),
                retries_attempted: live.current_retry_attempt,
                sql_message_id: 0,
                sql_severity: 0,
                message: "The step was cancelled (stopped) as the result of a stop job request."
                    .into(),
            },
            &server,
        );
    }
    let verdict = format!("The job was stopped prior to completion by {by}.");
    finish(agent, s, job_id, run_status::CANCELED, &verdict);
}
