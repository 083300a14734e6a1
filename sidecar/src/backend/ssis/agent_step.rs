//! The hook between a followed SQL Server Agent job and the catalog: when a step of
//! subsystem SSIS with an `/ISSERVER` command starts (or is found running after a restart),
//! its catalog execution is followed by the server's catalog poller (found by correlation,
//! `correlate`), into the same execution sink. When the step ends its history message is
//! passed on (it may name the execution). The job's Finished is held back until the
//! catalog follow has swept its late messages, for at most `FINISH_GRACE`, so the journal
//! holds the package's log before the execution closes.
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentfleet_common::proto::event::Kind;
use tokio::sync::oneshot;

use super::command_line;
use super::follower::{Follow, Followers, Msg, Target};
use super::tracker::{CatalogResume, CatalogTracker};
use crate::backend::sqlagent::connection::Settings;
use crate::backend::sqlagent::rows::JobDef;
use crate::backend::sqlagent::tracker::Out;
use crate::events::EventSink;

/// How long a job's Finished waits for its SSIS steps' catalog follows to end.
pub const FINISH_GRACE: Duration = Duration::from_secs(30);

type Done = oneshot::Receiver<Option<super::follower::Ended>>;

/// Where the catalog of a server is read: the `[sqlagent]` login, database SSISDB.
#[derive(Clone)]
pub struct CatalogAccess {
    pub followers: Arc<Followers>,
    /// The `[sqlagent]` settings, logging in to SSISDB.
    pub settings: Settings,
    pub interval: Duration,
}

/// One Agent execution's SSIS steps.
pub struct AgentSteps {
    access: CatalogAccess,
    resume: BTreeMap<u32, CatalogResume>,
    handed: HashSet<(u32, u32)>,
    active: Vec<Done>,
    held: Option<(Vec<Out>, Instant)>,
    /// When the job's start was requested (Unix ms): the earliest a step of it began.
    requested_ms: i64,
}

impl AgentSteps {
    pub fn new(
        access: CatalogAccess,
        resume: BTreeMap<u32, CatalogResume>,
        requested_ms: i64,
    ) -> Self {
        Self {
            requested_ms,
            access,
            resume,
            handed: HashSet::new(),
            active: Vec::new(),
            held: None,
        }
    }

    /// A resumed execution whose journal says `step` (attempt) is running. Its start time
    /// is not journaled: an execution not yet named in the journal is looked for from the
    /// job's start request on.
    pub fn resume_open_step(
        &mut self,
        execution_id: &str,
        job: &JobDef,
        step: (i32, u32),
        sink: &EventSink,
    ) {
        let since = self.requested_ms;
        self.hand_over(execution_id, job, step, since, sink);
    }

    /// Looks at a tick's output before it is delivered: hands SSIS steps over as they
    /// start, passes step ends on, and holds the Finished back while a follow runs.
    pub fn on_outs(
        &mut self,
        execution_id: &str,
        job: &JobDef,
        sink: &EventSink,
        outs: &mut Vec<Out>,
    ) {
        for o in outs.iter() {
            match o {
                Out::Event {
                    ts_ms,
                    kind: Kind::StepStarted(s),
                } => {
                    self.hand_over(
                        execution_id,
                        job,
                        (s.step_id as i32, s.attempt),
                        *ts_ms,
                        sink,
                    );
                }
                Out::Event {
                    kind: Kind::StepFinished(s),
                    ..
                } => {
                    // A step that ran between two polls is handed over at its end.
                    self.hand_over(
                        execution_id,
                        job,
                        (s.step_id as i32, s.attempt),
                        s.started_at_ms,
                        sink,
                    );
                    self.access
                        .followers
                        .broadcast_step_end(execution_id, s.step_id, &s.message);
                }
                _ => {}
            }
        }
        self.active
            .retain_mut(|d| matches!(d.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        if !self.active.is_empty()
            && let Some(i) = outs.iter().position(|o| {
                matches!(
                    o,
                    Out::Event {
                        kind: Kind::Finished(_),
                        ..
                    }
                )
            })
        {
            self.held = Some((outs.split_off(i), Instant::now()));
        }
    }

    /// True while a Finished is held back.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// The held-back Finished (and what followed it), once every follow ended or the grace
    /// passed.
    pub fn release(&mut self) -> Option<Vec<Out>> {
        self.active
            .retain_mut(|d| matches!(d.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        let ready = self.active.is_empty()
            || self
                .held
                .as_ref()
                .is_some_and(|(_, t)| t.elapsed() > FINISH_GRACE);
        if ready {
            self.held.take().map(|(o, _)| o)
        } else {
            None
        }
    }

    fn hand_over(
        &mut self,
        execution_id: &str,
        job: &JobDef,
        (step_id, attempt): (i32, u32),
        started_ms: i64,
        sink: &EventSink,
    ) {
        let Some(def) = job.step(step_id) else { return };
        if !def.subsystem.eq_ignore_ascii_case("SSIS")
            || !self.handed.insert((step_id as u32, attempt))
        {
            return;
        }
        let Some(command) = command_line::parse(&def.command) else {
            return;
        };
        let local = self.access.settings.clone();
        // A `/SERVER` without a port names an instance the sidecar cannot resolve on its
        // own (no SQL Browser): it is taken to be the `[sqlagent]` one, which it almost
        // always is (SSMS writes the job's own server). One with a port is reached there.
        let server = command.server.clone().unwrap_or_else(|| local.address());
        let explicit_port = server.contains(',') || server.starts_with("tcp:");
        let settings = if !explicit_port || local.is_server(&server) {
            local
        } else {
            match local.on_server(&server) {
                Ok(other) => other,
                Err(e) => {
                    tracing::warn!(step = step_id, %server, error = %e, "the SSIS step's /SERVER cannot be reached; its catalog execution is not followed");
                    return;
                }
            }
        };
        let step = step_id as u32;
        let resume = self.resume.remove(&step);
        let target = match resume.filter(|r| r.ident.execution_id != 0) {
            // After a restart the journal names the execution already.
            Some(r) => {
                let mut t = CatalogTracker::new(step, r.ident.clone());
                t.restore(&r);
                Target::Known(t)
            }
            None => Target::Correlate {
                step_id: step,
                command,
                server,
                step_start_ms: started_ms,
                resume: None,
            },
        };
        let (done, rx) = oneshot::channel();
        self.active.push(rx);
        self.access.followers.send(
            &settings,
            self.access.interval,
            Msg::Follow(Box::new(Follow {
                execution_id: execution_id.to_string(),
                target,
                sink: sink.clone(),
                stop: None,
                done,
            })),
        );
    }
}
