//! The one catalog poller per server and login: one `ssis_poll` batch per tick for every followed
//! catalog execution on it (direct catalog jobs and Agent SSIS steps alike), events to
//! each execution's sink (one group per tick, journaled in one append), stop requests of
//! direct jobs, and the correlation of Agent steps with their executions.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use agentfleet_common::backoff::Backoff;
use agentfleet_common::proto::{self, LogStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command_line::IsServerCommand;
use super::correlate::{self, Correlation};
use super::poll::{self, PollResult};
use super::stop::StopState;
use super::tracker::{CatalogIdent, CatalogResume, CatalogTracker, Observation, Out};
use crate::backend::sqlagent::connection::{Conn, Settings, SqlError};
use crate::events::{EventSink, SinkMsg};

/// Without a successful poll for this long, followed executions are given up (LOST).
const LOST_AFTER: Duration = Duration::from_secs(300);
/// How long an ended Agent step's execution is looked for before giving up.
const CORRELATE_AFTER_END: Duration = Duration::from_secs(20);

/// What the follower is told.
pub enum Msg {
    Follow(Box<Follow>),
    /// An Agent step ended: its history message (which may name the execution).
    StepEnded {
        execution_id: String,
        step_id: u32,
        message: String,
    },
}

/// The execution to follow, or how to find it.
pub enum Target {
    Known(CatalogTracker),
    /// An Agent SSIS step: find its execution (§4.3) first.
    Correlate {
        step_id: u32,
        command: IsServerCommand,
        server: String,
        step_start_ms: i64,
        resume: Option<CatalogResume>,
    },
}

pub struct Follow {
    pub execution_id: String,
    pub target: Target,
    pub sink: EventSink,
    /// Direct catalog jobs: stop the execution when cancelled (`None`: an Agent step,
    /// which the Agent stops).
    pub stop: Option<CancellationToken>,
    /// Told when the follow ends: how the catalog execution ended (`None`: not followed
    /// to its end, e.g. never found).
    pub done: tokio::sync::oneshot::Sender<Option<Ended>>,
}

/// How a followed catalog execution ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub outcome: proto::Outcome,
    pub message: String,
    /// The catalog's start and end times (Unix ms), when known.
    pub span: (Option<i64>, Option<i64>),
}

impl Ended {
    pub fn new(outcome: proto::Outcome, message: String) -> Self {
        Self {
            outcome,
            message,
            span: (None, None),
        }
    }
}

struct Followed {
    f: Follow,
    step_ended: Option<(Instant, String)>,
    ambiguous_noted: bool,
    stop: StopState,
    outcome: Option<Option<Ended>>,
}

impl Followed {
    fn key(&self) -> (String, u32) {
        let step = match &self.f.target {
            Target::Known(t) => t.step_id,
            Target::Correlate { step_id, .. } => *step_id,
        };
        (self.f.execution_id.clone(), step)
    }
}

/// Spawns the poller for one server; it ends when the returned sender is dropped.
pub fn spawn(settings: Settings, interval: Duration) -> mpsc::UnboundedSender<Msg> {
    // Unbounded: one message per followed execution or step end (rare, bounded by slots).
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(settings, interval, rx));
    tx
}

async fn run(settings: Settings, interval: Duration, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let server = settings.address();
    let mut conn = Conn::new(settings);
    let mut followed: Vec<Followed> = Vec::new();
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut last_ok = Instant::now();
    loop {
        if followed.is_empty() {
            match rx.recv().await {
                Some(m) => receive(&mut followed, m),
                None => return,
            }
            last_ok = Instant::now();
        }
        while let Ok(m) = rx.try_recv() {
            receive(&mut followed, m);
        }
        let mut failed = None;
        correlate_pending(&mut conn, &mut followed).await;
        let tracked: Vec<(i64, (i64, i64, i64))> = followed
            .iter()
            .filter_map(|x| match &x.f.target {
                Target::Known(t) if !t.is_done() => Some((t.ident.execution_id, t.watermarks())),
                _ => None,
            })
            .collect();
        if !tracked.is_empty() {
            match poll::poll(&mut conn, &tracked).await {
                Ok(r) => {
                    backoff.reset();
                    last_ok = Instant::now();
                    for x in &mut followed {
                        observe(x, &r).await;
                    }
                }
                Err(SqlError::Server { number: 1222, .. }) => {} // catalog writers hold locks: next tick
                Err(e) => {
                    tracing::warn!(%server, error = %e, "SSIS catalog poll failed");
                    failed = Some(backoff.next_delay());
                    if last_ok.elapsed() > LOST_AFTER {
                        for x in &mut followed {
                            x.outcome = Some(Some(Ended::new(
                                proto::Outcome::Lost,
                                format!(
                                    "no answer from SSISDB on {server} for {}s ({e}); the package's outcome is unknown",
                                    LOST_AFTER.as_secs()
                                ),
                            )));
                        }
                    }
                }
            }
        }
        for x in &mut followed {
            if let (Some(token), Target::Known(t)) = (&x.f.stop, &x.f.target)
                && token.is_cancelled()
                && x.outcome.is_none()
                && !t.is_done()
                && let Some(ended) = x.stop.request(t, &x.f.sink, &mut conn).await
            {
                x.outcome = Some(Some(ended));
            }
        }
        // Retire what is done (its outcome goes to whoever waits for it).
        let mut i = 0;
        while i < followed.len() {
            let x = &mut followed[i];
            let done = x.outcome.is_some() || x.f.sink.is_closed();
            if done {
                let x = followed.swap_remove(i);
                let _ = x.f.done.send(x.outcome.flatten());
            } else {
                i += 1;
            }
        }
        let fast = followed
            .iter()
            .any(|x| x.stop.requested() || matches!(x.f.target, Target::Correlate { .. }));
        let sleep = failed.unwrap_or(if fast {
            interval.min(Duration::from_millis(250))
        } else {
            interval
        });
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            m = rx.recv() => match m {
                Some(m) => receive(&mut followed, m),
                None if followed.is_empty() => return,
                None => {}
            }
        }
    }
}

fn receive(followed: &mut Vec<Followed>, m: Msg) {
    match m {
        Msg::Follow(f) => followed.push(Followed {
            f: *f,
            step_ended: None,
            ambiguous_noted: false,
            stop: StopState::default(),
            outcome: None,
        }),
        Msg::StepEnded {
            execution_id,
            step_id,
            message,
        } => {
            for x in followed.iter_mut() {
                if x.key() != (execution_id.clone(), step_id) {
                    continue;
                }
                x.step_ended = Some((Instant::now(), message.clone()));
                // The history message names the execution: it overrules the correlation.
                if let (Target::Known(t), Some(named)) = (
                    &mut x.f.target,
                    correlate::execution_id_in_history(&message),
                ) && t.ident.execution_id != named
                {
                    tracing::warn!(%execution_id, step_id, followed = t.ident.execution_id, named, "the step's history names another catalog execution than the one correlated; following it");
                    let mut ident = t.ident.clone();
                    ident.execution_id = named;
                    *t = CatalogTracker::new(step_id, ident);
                }
            }
        }
    }
}

/// Finds the executions of Agent steps still being correlated (one query per step).
async fn correlate_pending(conn: &mut Conn, followed: &mut [Followed]) {
    let claimed: HashSet<i64> = followed
        .iter()
        .filter_map(|x| match &x.f.target {
            Target::Known(t) => Some(t.ident.execution_id),
            _ => None,
        })
        .collect();
    for x in followed.iter_mut() {
        let Target::Correlate {
            step_id,
            command,
            server,
            step_start_ms,
            resume,
        } = &x.f.target
        else {
            continue;
        };
        let from_history = x
            .step_ended
            .as_ref()
            .and_then(|(_, m)| correlate::execution_id_in_history(m));
        let found = match from_history {
            Some(id) => Correlation::Found(id),
            None => match poll::candidates(
                conn,
                &command.folder,
                &command.project,
                &command.package,
                step_start_ms - correlate::SLACK_MS,
                command.env_reference,
            )
            .await
            {
                Ok(c) => correlate::correlate(&c, *step_start_ms, None, None, &claimed),
                Err(e) => {
                    tracing::debug!(error = %e, "catalog correlation query failed");
                    Correlation::NotYet
                }
            },
        };
        let step_id = *step_id;
        let path = format!(
            "\\SSISDB\\{}\\{}\\{}",
            command.folder, command.project, command.package
        );
        match found {
            Correlation::Found(id) => {
                let ident = CatalogIdent {
                    execution_id: id,
                    server: server.clone(),
                    folder: command.folder.clone(),
                    project: command.project.clone(),
                    package: command.package.clone(),
                };
                let mut t = CatalogTracker::new(step_id, ident);
                if let Some(r) = resume.as_ref().filter(|r| r.ident.execution_id == id) {
                    t.restore(r);
                }
                x.f.target = Target::Known(t);
            }
            Correlation::Ambiguous(ids) if !x.ambiguous_noted => {
                x.ambiguous_noted = true;
                let line = format!(
                    "the SSIS catalog has {} executions of {path} that this step may have created ({}); not guessing which: the step's history message will tell once it ends",
                    ids.len(),
                    ids.iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                x.f.sink.log(step_id, LogStream::Catalog, line).await;
            }
            _ => {
                if x.step_ended
                    .as_ref()
                    .is_some_and(|(t, _)| t.elapsed() > CORRELATE_AFTER_END)
                {
                    let line = format!(
                        "the catalog execution of {path} was not found (the login sees only executions it created unless it is ssis_logreader, ssis_admin or sysadmin)"
                    );
                    x.f.sink.log(step_id, LogStream::Catalog, line).await;
                    x.outcome = Some(None);
                }
            }
        }
    }
}

async fn observe(x: &mut Followed, r: &PollResult) {
    let Target::Known(t) = &mut x.f.target else {
        return;
    };
    let id = t.ident.execution_id;
    let Some(status) = r.status.get(&id) else {
        return;
    };
    let empty_m = Vec::new();
    let empty_s = Vec::new();
    let empty_d = Vec::new();
    let outs = t.observe(&Observation {
        status: status.as_ref(),
        polled_at_ms: r.polled_at_ms,
        messages: r.messages.get(&id).unwrap_or(&empty_m),
        stats: r.stats.get(&id).unwrap_or(&empty_s),
        data: r.data.get(&id).unwrap_or(&empty_d),
    });
    deliver(&x.f.sink, outs).await;
    if t.is_done() {
        let span = t.span();
        x.outcome = Some(t.outcome().map(|(outcome, message)| Ended {
            outcome,
            message,
            span,
        }));
    } else if x.f.stop.is_none()
        && x.step_ended
            .as_ref()
            .is_some_and(|(t, _)| t.elapsed() > super::stop::STOP_BOUND)
    {
        // The Agent step ended long ago and the package still runs (no SYNCHRONIZED):
        // the job is over; stop following it.
        x.outcome = Some(None);
    }
}

pub async fn deliver(sink: &EventSink, outs: Vec<Out>) {
    let group = outs
        .into_iter()
        .map(|o| match o {
            Out::Event { ts_ms, kind } => SinkMsg::Event { ts_ms, kind },
            Out::Log { ts_ms, line } => SinkMsg::Log { ts_ms, line },
        })
        .collect();
    sink.group(group).await;
}

/// The catalog pollers of a process, one per server and login (created on first use); the
/// catalog backend and the SQL Server Agent backend's SSIS steps share one
/// (`server::backends`) only when they log in alike: a poller reads what its login sees
/// and stops executions as that login.
#[derive(Default)]
pub struct Followers {
    by_server: std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
}

impl Followers {
    pub fn send(&self, settings: &Settings, interval: Duration, msg: Msg) {
        let mut map = self.by_server.lock().expect("followers lock");
        let tx = map
            .entry(settings.login_key())
            .or_insert_with(|| spawn(settings.clone(), interval));
        if let Err(mpsc::error::SendError(msg)) = tx.send(msg) {
            let tx2 = spawn(settings.clone(), interval);
            let _ = tx2.send(msg);
            map.insert(settings.login_key(), tx2);
        }
    }

    /// Tells every server's follower (a step end goes to whichever follows the step).
    pub fn broadcast_step_end(&self, execution_id: &str, step_id: u32, message: &str) {
        for tx in self.by_server.lock().expect("followers lock").values() {
            let _ = tx.send(Msg::StepEnded {
                execution_id: execution_id.to_string(),
                step_id,
                message: message.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::sqlagent::SqlAgentConfig;

    fn settings(dir: &std::path::Path, auth: &str, user: &str) -> Settings {
        let pw = dir.join(format!("{auth}-pw"));
        std::fs::write(&pw, "pw\n").unwrap();
        let cfg: SqlAgentConfig = toml::from_str(&format!(
            "server = \"tcp:127.0.0.1,1\"\nauth = \"{auth}\"\nuser = '{user}'\npassword_file = {:?}\n",
            pw.display().to_string()
        ))
        .unwrap();
        Settings::from_config(&cfg).unwrap().with_database("SSISDB")
    }

    fn step_end() -> Msg {
        Msg::StepEnded {
            execution_id: "e".into(),
            step_id: 1,
            message: String::new(),
        }
    }

    /// Agent steps are followed with the `[sqlagent]` login (which must see the Agent's
    /// executions: ssis_logreader), catalog jobs with the `[ssis]` Windows login (which
    /// sees only its own executions, and must stop them: SSISDB refuses SQL logins). On one
    /// server they need a poller each: a shared one reads or stops with the wrong login.
    #[tokio::test]
    async fn each_login_on_a_server_gets_a_poller_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let sql = settings(dir.path(), "sql", "agentfleet");
        let windows = settings(dir.path(), "windows", "CONTOSO\\etl");
        let followers = Followers::default();
        let interval = Duration::from_secs(60);
        followers.send(&windows, interval, step_end());
        followers.send(&sql, interval, step_end());
        followers.send(&sql, interval, step_end());
        assert_eq!(followers.by_server.lock().unwrap().len(), 2);
    }
}
