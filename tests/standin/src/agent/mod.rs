//! SQL Server Agent simulation: the Agent service state, msdb tables and job runs.
//!
//! This simulates behaviour described for real SQL Server Agent (request latency, one running
//! instance per job, history rows written when steps and jobs finish, sessions per Agent start).
//! It is a test stand-in: the T-SQL check (`crate::tsql`) covers names, not semantics.

pub mod clock;
pub mod errors;
pub mod history_lock;
pub mod live;
pub mod msdb;
mod runner;
pub mod steps;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{AgentConfig, LoginConfig, Role, SsisRole};
pub use errors::AgentError;
use msdb::Msdb;
use steps::JobDef;

/// State of the Agent service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Stopped,
    /// Start-up phase: sp_start_job answers 14258.
    Starting,
    Running,
}

/// How the Agent goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Service crash / failover: running jobs just vanish; their activity rows stay open
    /// (`stop_execution_date` NULL forever) and no further history rows are written.
    Crash,
    /// Graceful stop: running jobs are canceled with "stopped prior to completion by Shutdown
    /// Sequence 0" outcome rows.
    Graceful,
}

/// A job's live state inside the Agent (what `xp_sqlagent_enum_jobs` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepted, not yet begun (a second start is refused as "pending request").
    Requested,
    /// Waiting for a worker thread (`queued_date` set).
    Queued,
    Executing,
    BetweenRetries,
}

impl Phase {
    /// `job_state` code of `xp_sqlagent_enum_jobs`.
    pub fn job_state(self) -> i32 {
        match self {
            Phase::Requested | Phase::Executing => 1,
            Phase::Queued => 2,
            Phase::BetweenRetries => 3,
        }
    }
}

/// One in-flight run.
#[derive(Debug, Clone)]
pub struct LiveRun {
    pub run_no: u64,
    pub session_id: i32,
    pub requested_by: String,
    pub phase: Phase,
    pub current_step: i32,
    pub current_retry_attempt: i32,
    pub step_started: Option<(NaiveDateTime, Instant)>,
    pub job_started: Option<(NaiveDateTime, Instant)>,
    /// Last step that ran (for the outcome message).
    pub last_step: Option<(i32, String)>,
    pub stop_requested_by: Option<String>,
    stop: CancellationToken,
}

/// Who is calling (from the login).
#[derive(Debug, Clone)]
pub struct Caller {
    pub login: String,
    pub role: Role,
    pub view_server_state: bool,
    pub read_sessions: bool,
    pub enum_jobs: bool,
    /// `ISNULL(NT_CLIENT(), SUSER_SNAME())`: who the Agent records as the requester.
    pub requester: String,
    /// Three-part names of objects the login may not read or execute (lower case).
    pub denied: Vec<String>,
    /// Authenticated as a Windows principal (NTLM); SQL logins get 27123 from the catalog.
    pub windows: bool,
    /// SSISDB `ssis_admin`: sees, stops and manages every catalog operation.
    pub ssis_admin: bool,
    /// SSISDB `ssis_logreader`: sees every catalog operation.
    pub ssis_logreader: bool,
}

impl Caller {
    pub fn from_login(l: &LoginConfig) -> Self {
        let sa = l.role == Role::Sysadmin;
        Self {
            login: l.user.clone(),
            role: l.role,
            view_server_state: l.view_server_state.unwrap_or(sa),
            read_sessions: l.read_sessions.unwrap_or(sa),
            enum_jobs: l.enum_jobs.unwrap_or(sa),
            requester: l.nt_client.clone().unwrap_or_else(|| l.user.clone()),
            denied: l.deny.iter().map(|d| d.to_lowercase()).collect(),
            windows: l.windows,
            ssis_admin: l.ssis_roles.contains(&SsisRole::SsisAdmin),
            ssis_logreader: l.ssis_roles.contains(&SsisRole::SsisLogreader),
        }
    }

    /// A Windows account acting inside the server (the Agent service running an SSIS step).
    pub fn windows_account(name: &str) -> Self {
        Self {
            login: name.to_string(),
            role: Role::User,
            view_server_state: false,
            read_sessions: false,
            enum_jobs: false,
            requester: name.to_string(),
            denied: Vec::new(),
            windows: true,
            ssis_admin: false,
            ssis_logreader: false,
        }
    }

    pub fn is_sysadmin(&self) -> bool {
        self.role == Role::Sysadmin
    }

    /// `HAS_PERMS_BY_NAME(object, 'OBJECT', …)` for the objects the catalogue names.
    pub fn may_use(&self, object: &str) -> bool {
        let o = object.to_lowercase();
        if self.denied.contains(&o) {
            return false;
        }
        match o.as_str() {
            "msdb.dbo.syssessions" => self.read_sessions,
            "master.dbo.xp_sqlagent_enum_jobs" => self.enum_jobs,
            _ => true,
        }
    }

    /// `sysjobs_view` filtering: SQLAgentUserRole members see only their own jobs.
    pub fn sees(&self, job: &JobDef) -> bool {
        self.role != Role::User || job.owner.eq_ignore_ascii_case(&self.login)
    }

    fn may_start(&self, job: &JobDef) -> bool {
        matches!(self.role, Role::Sysadmin | Role::Operator)
            || job.owner.eq_ignore_ascii_case(&self.login)
    }
}

/// How a caller names a job.
#[derive(Debug, Clone)]
pub enum JobRef {
    Id(Uuid),
    Name(String),
}

/// Everything behind the Agent's lock.
pub struct State {
    pub status: AgentStatus,
    pub msdb: Msdb,
    pub jobs: Vec<JobDef>,
    pub live: HashMap<Uuid, LiveRun>,
    /// Recent live states per job, for `xp_sqlagent_enum_jobs` with a `live_lag`.
    pub live_trail: HashMap<Uuid, VecDeque<(Instant, Option<live::EnumRow>)>>,
    pub settings: AgentConfig,
    /// Cancelled when the current Agent session ends; run tasks hang off it.
    session_token: CancellationToken,
    /// Bumped on every start/stop so a stale start-up timer does nothing.
    generation: u64,
    next_run_no: u64,
}

impl State {
    pub fn job(&self, id: Uuid) -> Option<&JobDef> {
        self.jobs.iter().find(|j| j.job_id == id)
    }

    /// The current session as a caller sees it: `MAX(session_id)` of syssessions when
    /// readable, else of sysjobactivity.
    pub fn session_for(&self, caller: &Caller) -> Option<i32> {
        if caller.read_sessions {
            self.msdb.current_session()
        } else {
            self.msdb.max_activity_session()
        }
    }

    /// Records the job's live state for the lagging view (after every change).
    pub fn note_live(&mut self, job_id: Uuid) {
        let lag = self.settings.live_lag;
        if lag.is_zero() {
            return;
        }
        let row = self.live.get(&job_id).map(live::EnumRow::of);
        let trail = self.live_trail.entry(job_id).or_default();
        trail.push_back((Instant::now(), row));
        // Keep the newest entry older than the lag (the state it shows) and everything after.
        while trail.len() > 1 && trail[1].0.elapsed() >= lag {
            trail.pop_front();
        }
    }

    /// What `xp_sqlagent_enum_jobs` reports for the job now: its live state `live_lag` ago.
    pub fn enum_view(&self, job_id: Uuid) -> Option<live::EnumRow> {
        let lag = self.settings.live_lag;
        if lag.is_zero() {
            return self.live.get(&job_id).map(live::EnumRow::of);
        }
        match self.live_trail.get(&job_id) {
            Some(trail) => trail
                .iter()
                .rev()
                .find(|(at, _)| at.elapsed() >= lag)
                .and_then(|(_, row)| row.clone()),
            None => self.live.get(&job_id).map(live::EnumRow::of),
        }
    }

    fn job_ids(&self) -> Vec<Uuid> {
        self.jobs.iter().map(|j| j.job_id).collect()
    }
}

/// The simulated Agent; cheap to clone.
#[derive(Clone)]
pub struct Agent {
    state: Arc<Mutex<State>>,
    /// The history row limiter's `TABLOCKX` on `sysjobhistory`, held on request by tests.
    pub history_lock: history_lock::HistoryLock,
    pub clock: clock::Clock,
    /// When the stand-in (the "engine") started: `tempdb.create_date`.
    pub server_started: NaiveDateTime,
    /// The SSIS catalog on the same instance (SSIS job steps create executions there).
    pub catalog: crate::ssisdb::Catalog,
}

impl Agent {
    pub fn new(
        settings: AgentConfig,
        jobs: Vec<JobDef>,
        ssis: &crate::ssisdb::SsisConfig,
    ) -> anyhow::Result<Self> {
        let clock = clock::Clock::new(clock::parse_offset(&settings.utc_offset)?);
        let catalog = crate::ssisdb::Catalog::new(ssis.clone(), clock);
        let running = settings.running;
        let agent = Self {
            state: Arc::new(Mutex::new(State {
                status: AgentStatus::Stopped,
                msdb: Msdb::default(),
                jobs,
                live: HashMap::new(),
                live_trail: HashMap::new(),
                settings,
                session_token: CancellationToken::new(),
                generation: 0,
                next_run_no: 0,
            })),
            history_lock: history_lock::HistoryLock::default(),
            clock,
            server_started: clock.now_local(),
            catalog,
        };
        if running {
            // At boot the Agent is simply up: no start-up phase.
            let mut s = agent.lock();
            agent.become_running(&mut s);
        }
        Ok(agent)
    }

    /// Locks the state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> AgentStatus {
        self.lock().status
    }

    fn become_running(&self, s: &mut State) {
        let ids = s.job_ids();
        s.msdb.begin_session(self.clock.now_local_seconds(), &ids);
        s.session_token = CancellationToken::new();
        s.status = AgentStatus::Running;
    }

    /// Starts the Agent service: a new `syssessions` row and fresh activity rows; while the
    /// configured start-up phase lasts, starts fail with 14258.
    pub fn start_service(&self) {
        let mut s = self.lock();
        if s.status != AgentStatus::Stopped {
            return;
        }
        s.generation += 1;
        let startup = s.settings.startup_time;
        if startup.is_zero() {
            self.become_running(&mut s);
            return;
        }
        s.status = AgentStatus::Starting;
        let generation = s.generation;
        drop(s);
        let agent = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(startup).await;
            let mut s = agent.lock();
            if s.generation == generation && s.status == AgentStatus::Starting {
                agent.become_running(&mut s);
            }
        });
    }

    /// Stops the Agent service.
    pub fn stop_service(&self, mode: StopMode) {
        let mut s = self.lock();
        s.generation += 1;
        s.session_token.cancel();
        if mode == StopMode::Graceful {
            let ids: Vec<Uuid> = s.live.keys().copied().collect();
            for id in ids {
                runner::finish_canceled(self, &mut s, id, "Shutdown Sequence 0");
            }
        }
        let ids: Vec<Uuid> = s.live.drain().map(|(id, _)| id).collect();
        for id in ids {
            s.note_live(id);
        }
        s.status = AgentStatus::Stopped;
    }

    /// Stop then start: a new session; with `Crash`, old activity rows stay open.
    pub fn restart_service(&self, mode: StopMode) {
        self.stop_service(mode);
        self.start_service();
    }

    fn find_visible(&self, s: &State, caller: &Caller, job: &JobRef) -> Result<JobDef, AgentError> {
        let found = match job {
            JobRef::Id(id) => s.jobs.iter().find(|j| j.job_id == *id),
            JobRef::Name(n) => s.jobs.iter().find(|j| j.name == n.trim()),
        };
        match found {
            Some(j) if caller.sees(j) => Ok(j.clone()),
            _ => Err(match job {
                JobRef::Id(id) => AgentError::unknown_job_id(*id),
                JobRef::Name(n) => AgentError::unknown_job_name(n),
            }),
        }
    }

    /// Checks shared by sp_start_job and sp_stop_job, in the procedures' order.
    fn precheck(
        &self,
        s: &State,
        caller: &Caller,
        job: &JobRef,
        stop: bool,
    ) -> Result<JobDef, AgentError> {
        let j = self.find_visible(s, caller, job)?;
        if !stop && s.status == AgentStatus::Starting {
            return Err(AgentError::agent_starting());
        }
        if !caller.may_start(&j) {
            return Err(AgentError::not_owner(if stop {
                "sp_stop_job"
            } else {
                "sp_start_job"
            }));
        }
        if !j.targeted {
            return Err(AgentError::no_job_server(&j.name, j.job_id, stop));
        }
        if s.settings.agent_xps == 0 {
            return Err(AgentError::agent_xps_off());
        }
        if s.settings.execute_denied {
            return Err(AgentError::execute_denied("xp_sqlagent_notify"));
        }
        if s.status != AgentStatus::Running {
            return Err(AgentError::agent_not_running());
        }
        Ok(j)
    }

    /// `sp_start_job`: on success returns the 14243 informational text. The run proceeds
    /// asynchronously, as with the real Agent.
    pub fn start_job(&self, caller: &Caller, job: &JobRef) -> Result<String, AgentError> {
        let mut s = self.lock();
        let j = self.precheck(&s, caller, job, false)?;
        if let Some(live) = s.live.get(&j.job_id) {
            return Err(AgentError::already_running(
                &j.name,
                &caller.requester,
                &live.requested_by,
                live.phase == Phase::Requested,
            ));
        }
        s.next_run_no += 1;
        let run_no = s.next_run_no;
        let session_id = s.msdb.current_session().unwrap_or(0);
        let stop = s.session_token.child_token();
        s.live.insert(
            j.job_id,
            LiveRun {
                run_no,
                session_id,
                requested_by: caller.requester.clone(),
                phase: Phase::Requested,
                current_step: 0,
                current_retry_attempt: 0,
                step_started: None,
                job_started: None,
                last_step: None,
                stop_requested_by: None,
                stop: stop.clone(),
            },
        );
        s.note_live(j.job_id);
        let request_latency = s.settings.request_latency;
        let session = s.session_token.clone();
        drop(s);
        let info = format!("Job '{}' started successfully.", j.name);
        tokio::spawn(runner::run(
            self.clone(),
            j,
            runner::RunTokens {
                run_no,
                session,
                stop,
                request_latency,
            },
        ));
        Ok(info)
    }

    /// `sp_stop_job`: asks the Agent to cancel; the job ends as canceled shortly after.
    pub fn stop_job(&self, caller: &Caller, job: &JobRef) -> Result<String, AgentError> {
        let mut s = self.lock();
        let j = self.precheck(&s, caller, job, true)?;
        match s.live.get_mut(&j.job_id) {
            Some(live) if live.stop_requested_by.is_none() => {
                live.stop_requested_by = Some(caller.requester.clone());
                live.stop.cancel();
            }
            Some(_) => {}
            None => return Err(AgentError::stop_not_running(&j.name, &caller.requester)),
        }
        Ok(format!("Job '{}' stopped successfully.", j.name))
    }

    /// Test helpers: snapshots of the simulated tables.
    pub fn history(&self, job_id: Uuid) -> Vec<msdb::HistoryRow> {
        let s = self.lock();
        s.msdb
            .history
            .iter()
            .filter(|h| h.job_id == job_id)
            .cloned()
            .collect()
    }

    pub fn current_session(&self) -> Option<i32> {
        self.lock().msdb.current_session()
    }

    pub fn activity(&self, job_id: Uuid) -> Option<msdb::Activity> {
        let s = self.lock();
        let sess = s.msdb.current_session()?;
        s.msdb.activity(sess, job_id).cloned()
    }

    pub fn live(&self, job_id: Uuid) -> Option<LiveRun> {
        self.lock().live.get(&job_id).cloned()
    }

    pub fn job_id(&self, name: &str) -> Option<Uuid> {
        self.lock()
            .jobs
            .iter()
            .find(|j| j.name == name)
            .map(|j| j.job_id)
    }

    pub fn set_execute_denied(&self, denied: bool) {
        self.lock().settings.execute_denied = denied;
    }

    pub fn set_errors_escape_catch(&self, escape: bool) {
        self.lock().settings.errors_escape_catch = escape;
    }

    pub fn set_live_lag(&self, d: Duration) {
        self.lock().settings.live_lag = d;
    }

    pub fn set_startup_time(&self, d: Duration) {
        self.lock().settings.startup_time = d;
    }
}
