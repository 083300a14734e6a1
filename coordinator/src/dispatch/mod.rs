//! The run loop. One dispatcher owns the run's state: which tasks wait, which are ready,
//! where each attempt runs. It asks `schedule::place` where ready tasks go, spawns one
//! executor per execution, and turns executor messages into run events for reporters.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{At, RunEvent, RunEventKind, TaskOutcome, TaskSummary};
use crate::execution::{self, ExecMsg, ExecResult, ExecutionSpec};
use crate::fleet::{Sidecar, SidecarInfo};
use crate::plan::Plan;
use crate::schedule::{self, ReadyTask, SidecarState};

mod fleet_view;
mod outcomes;
mod resume;

use fleet_view::{expected_durations, sidecar_state};
use outcomes::Ended;
pub use resume::{PriorExecution, PriorTask};

/// How long a sidecar that refused a start (busy, unreachable) is passed over.
const REFUSAL_COOLDOWN: Duration = Duration::from_secs(2);
/// Capacity of the executor → dispatcher channel (backpressure on executors).
const EXEC_CHANNEL: usize = 1024;
/// Messages handled at most between two placement passes when many are queued (a bound
/// so that placement still runs often while a flood of log events is being forwarded).
const DRAIN_BATCH: usize = 256;

/// How often sidecars are asked what runs on them while tasks wait for a place (a job
/// started by someone else ends; a sidecar that was down comes back).
const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Durable record of a placement, written before the StartJob it announces, so that a
/// coordinator that dies right after starting a job leaves a trace for `attach`/`cancel`.
pub trait PlacementLog: Send + Sync {
    fn record(&self, placed: &RunEvent) -> Result<(), String>;
    /// The sidecar refused that start (busy): the execution never existed there.
    fn refused(&self, execution_id: &str);
}

#[derive(Clone)]
pub struct RunOptions {
    /// A sidecar unreachable this long has lost its executions.
    pub lost_after: Duration,
    /// Median past durations per job from the central store; used where the sidecars
    /// report no history of their own (e.g. command jobs after a sidecar restart).
    pub past_durations: BTreeMap<String, u64>,
    pub placement_log: Option<std::sync::Arc<dyn PlacementLog>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            lost_after: Duration::from_secs(120),
            past_durations: BTreeMap::new(),
            placement_log: None,
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub exit_code: i32,
    pub summary: Vec<TaskSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Ready,
    Running { sidecar: String },
    Done(TaskOutcome),
}

struct TaskRun {
    state: State,
    attempts: u32,
    remaining_deps: usize,
    avoid: Vec<String>,
    sidecar: Option<String>,
    /// The execution of the current (or last) attempt.
    execution_id: Option<String>,
    first_start: Option<Instant>,
    duration: Duration,
    message: String,
}

/// Why the run is stopping early, if it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stopping {
    No,
    Interrupted,
    /// `coordinator cancel RUN`.
    Canceled,
    FailFast,
    RunTimeout,
}

pub struct Dispatcher<'a> {
    plan: &'a Plan,
    run_id: String,
    sidecars: BTreeMap<String, Sidecar>,
    states: Vec<SidecarState>,
    cooldown: BTreeMap<String, Instant>,
    expected_ms: BTreeMap<String, u64>,
    /// (sidecar, job) → (backend, declared parameters), from ListJobs.
    declared: BTreeMap<(String, String), (String, Vec<String>)>,
    tasks: Vec<TaskRun>,
    events: mpsc::Sender<RunEvent>,
    stop_all: CancellationToken,
    stopping: Stopping,
    options: RunOptions,
    running: usize,
}

impl<'a> Dispatcher<'a> {
    pub fn new(
        plan: &'a Plan,
        run_id: String,
        sidecars: Vec<Sidecar>,
        infos: &BTreeMap<String, SidecarInfo>,
        events: mpsc::Sender<RunEvent>,
        options: RunOptions,
    ) -> Self {
        let states = sidecars
            .iter()
            .map(|s| sidecar_state(&s.name, infos.get(&s.name)))
            .collect();
        let tasks = plan
            .tasks
            .iter()
            .map(|t| TaskRun {
                state: if t.after.is_empty() {
                    State::Ready
                } else {
                    State::Waiting
                },
                attempts: 0,
                remaining_deps: t.after.len(),
                avoid: Vec::new(),
                sidecar: None,
                execution_id: None,
                first_start: None,
                duration: Duration::ZERO,
                message: String::new(),
            })
            .collect();
        Self {
            plan,
            run_id,
            sidecars: sidecars.into_iter().map(|s| (s.name.clone(), s)).collect(),
            states,
            cooldown: BTreeMap::new(),
            expected_ms: {
                let mut expected = options.past_durations.clone();
                expected.extend(expected_durations(infos));
                expected
            },
            declared: infos
                .iter()
                .flat_map(|(sidecar, info)| {
                    info.jobs.iter().map(move |j| {
                        (
                            (sidecar.clone(), j.name.clone()),
                            (j.backend.clone(), j.params.clone()),
                        )
                    })
                })
                .collect(),
            tasks,
            events,
            stop_all: CancellationToken::new(),
            stopping: Stopping::No,
            options,
            running: 0,
        }
    }

    /// Runs the plan to its end. `interrupt` is the user's Ctrl-C or SIGTERM (stop what we
    /// started, exit 130); `cancel` is `coordinator cancel RUN` (stop, exit 1). `prior` is
    /// what an earlier coordinator of this run already did (empty for a new run): finished
    /// tasks stay finished, running executions are watched again from their stored
    /// sequence number, nothing is started twice (a resumed execution is only followed: one
    /// its sidecar does not know is LOST, see `resume.rs`). Every stop is bounded by the
    /// executors' `STOP_CONFIRM_DEADLINE`, so this always returns.
    pub async fn run(
        mut self,
        interrupt: CancellationToken,
        cancel: CancellationToken,
        prior: BTreeMap<String, PriorTask>,
    ) -> RunResult {
        let started = Instant::now();
        self.emit(RunEventKind::RunStarted {
            plan: self.plan.name.clone(),
            tasks: self.plan.tasks.len(),
            sidecars: self.sidecars.keys().cloned().collect(),
            slots: fleet_view::slots(&self.states),
        })
        .await;
        let (tx, mut rx) = mpsc::channel(EXEC_CHANNEL);
        let refresher = tokio::spawn(fleet_view::refresh(
            self.sidecars.values().cloned().collect(),
            tx.clone(),
            REFRESH_EVERY,
        ));
        let run_deadline = self.plan.timeout.map(|t| tokio::time::Instant::now() + t);
        self.restore(prior, &tx).await;
        if cancel.is_cancelled() {
            // `coordinator cancel` of a run nobody drives: stop, start nothing.
            self.stop_run(Stopping::Canceled, "run canceled").await;
        }

        // Placement runs only when something it depends on changed: a task ended (its slot
        // is free, its dependants may be ready), a sidecar's view was refreshed, a refusal
        // cooldown ended. Events (log lines, steps) change none of that, so a chatty job
        // does not make every event cost a pass over all tasks.
        let mut placement_due = true;
        loop {
            let now = Instant::now();
            let cooling = self.cooldown.len();
            self.cooldown.retain(|_, until| *until > now);
            placement_due |= self.cooldown.len() != cooling;
            if self.stopping == Stopping::No && placement_due {
                placement_due = false;
                self.place_ready(&tx).await;
            }
            if self.running == 0 && (self.stopping != Stopping::No || self.all_done()) {
                break;
            }
            // Wake when the first refusal cooldown ends, to place again.
            let cooldown_end = self
                .cooldown
                .values()
                .min()
                .map(|t| tokio::time::Instant::from_std(*t));
            tokio::select! {
                Some(msg) = rx.recv() => {
                    placement_due |= msg.may_free_capacity();
                    self.on_message(msg).await;
                    // Take what else is queued before placing again: many executions
                    // ending together cost one placement pass, not one each.
                    for _ in 0..DRAIN_BATCH {
                        let Ok(msg) = rx.try_recv() else { break };
                        placement_due |= msg.may_free_capacity();
                        self.on_message(msg).await;
                    }
                }
                _ = interrupt.cancelled(), if self.stopping == Stopping::No => {
                    if self.running > 0 {
                        // Say why the exit may take a while, and how to cut it short.
                        tracing::warn!(
                            "interrupted: stopping {} running job(s); waiting up to {}s for their sidecars to confirm (interrupt again to exit at once)",
                            self.running,
                            execution::STOP_CONFIRM_DEADLINE.as_secs()
                        );
                    }
                    self.stop_run(Stopping::Interrupted, "run interrupted").await;
                }
                _ = cancel.cancelled(), if self.stopping == Stopping::No => {
                    self.stop_run(Stopping::Canceled, "run canceled").await;
                }
                _ = sleep_until(run_deadline), if self.stopping == Stopping::No && run_deadline.is_some() => {
                    self.stop_run(Stopping::RunTimeout, "the plan's timeout expired").await;
                }
                _ = sleep_until(cooldown_end), if cooldown_end.is_some() => {}
            }
        }
        refresher.abort();
        self.finish(started).await
    }

    fn all_done(&self) -> bool {
        self.tasks.iter().all(|t| matches!(t.state, State::Done(_)))
    }

    fn ready_task(&self, index: usize) -> ReadyTask {
        let task = &self.plan.tasks[index];
        ReadyTask {
            task: index,
            job: task.job.clone(),
            on: task.on.clone(),
            priority: task.priority,
            expected_ms: self.expected_ms.get(&task.job).copied(),
            avoid: self.tasks[index].avoid.clone(),
        }
    }

    async fn place_ready(&mut self, tx: &mpsc::Sender<ExecMsg>) {
        let ready: Vec<ReadyTask> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].state == State::Ready)
            .map(|i| self.ready_task(i))
            .collect();
        if ready.is_empty() {
            return;
        }
        // A task nothing can ever run fails now rather than waiting forever.
        for r in &ready {
            if let Some(why) = schedule::unplaceable_reason(r, &self.states) {
                self.complete(r.task, TaskOutcome::Failed, why).await;
            }
        }
        let max_parallel = self.plan.max_parallel.unwrap_or(usize::MAX);
        let free_parallel = max_parallel.saturating_sub(self.running);
        let states: Vec<SidecarState> = self
            .states
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.reachable &= !self.cooldown.contains_key(&s.name);
                s
            })
            .collect();
        let ready: Vec<ReadyTask> = ready
            .into_iter()
            .filter(|r| self.tasks[r.task].state == State::Ready)
            .collect();
        for placement in schedule::place(&ready, &states, free_parallel) {
            self.launch(placement.task, &placement.sidecar, tx).await;
        }
    }

    async fn launch(&mut self, index: usize, sidecar_name: &str, tx: &mpsc::Sender<ExecMsg>) {
        self.launch_execution(index, sidecar_name, None, tx).await;
    }

    /// Starts (or, with `existing`, re-attaches to) one execution of task `index`.
    async fn launch_execution(
        &mut self,
        index: usize,
        sidecar_name: &str,
        existing: Option<PriorExecution>,
        tx: &mpsc::Sender<ExecMsg>,
    ) {
        let task = &self.plan.tasks[index];
        let run = &mut self.tasks[index];
        run.attempts += 1;
        run.state = State::Running {
            sidecar: sidecar_name.to_owned(),
        };
        run.sidecar = Some(sidecar_name.to_owned());
        run.first_start.get_or_insert_with(Instant::now);
        self.running += 1;
        if let Some(state) = self.states.iter_mut().find(|s| s.name == sidecar_name) {
            state.started(&task.job);
        }
        let at = At {
            task: task.name.clone(),
            attempt: run.attempts,
            sidecar: sidecar_name.to_owned(),
            execution_id: existing
                .as_ref()
                .map(|e| e.execution_id.clone())
                .unwrap_or_else(agentfleet_common::ids::new_execution_id),
        };
        let placed = RunEventKind::TaskPlaced { at: at.clone() };
        if let Some(log) = &self.options.placement_log {
            let event = RunEvent::new(&self.run_id, agentfleet_common::now_ms(), placed.clone());
            if let Err(e) = log.record(&event) {
                // Starting a job the store cannot know about could later start it twice.
                let why = format!("not started: the run store could not record the placement: {e}");
                let done = ExecResult::Finished {
                    outcome: TaskOutcome::Failed,
                    message: why,
                    duration: Duration::ZERO,
                };
                let _ = tx
                    .send(ExecMsg::Done {
                        task_index: index,
                        result: done,
                    })
                    .await;
                return;
            }
        }
        // Test-only crash point (`agentfleet_common::fault`): the placement is durable,
        // the StartJob it announces has not been sent.
        agentfleet_common::fault::point("coordinator-before-start-job");
        self.tasks[index].execution_id = Some(at.execution_id.clone());
        self.emit(placed).await;
        let lost_after = if task.rerun_if_lost {
            self.options.lost_after
        } else {
            // Not rerunnable: wait for the sidecar to come back, up to the task timeout.
            self.options
                .lost_after
                .max(task.timeout.unwrap_or_default())
        };
        let spec = ExecutionSpec {
            run_id: self.run_id.clone(),
            task_index: index,
            at,
            job: task.job.clone(),
            params: self.params_for(index, sidecar_name),
            timeout: task.timeout,
            lost_after,
            resume_after_seq: existing.as_ref().map_or(0, |e| e.last_seq),
            resumed: existing.is_some(),
        };
        let sidecar = self.sidecars[sidecar_name].clone();
        tokio::spawn(execution::run(
            sidecar,
            spec,
            tx.clone(),
            self.stop_all.child_token(),
        ));
    }

    async fn on_message(&mut self, msg: ExecMsg) {
        match msg {
            ExecMsg::Event { kind, .. } => self.emit(kind).await,
            ExecMsg::Done { task_index, result } => self.on_done(task_index, result).await,
            ExecMsg::Refreshed {
                sidecar,
                info,
                running,
            } => self.on_refreshed(&sidecar, &info, running.as_deref()),
        }
    }

    async fn on_done(&mut self, index: usize, result: ExecResult) {
        let State::Running { sidecar } = self.tasks[index].state.clone() else {
            return;
        };
        let job = &self.plan.tasks[index].job;
        self.running -= 1;
        if let Some(state) = self.states.iter_mut().find(|s| s.name == sidecar) {
            state.ended(job);
        }
        match result {
            ExecResult::Refused { refusal, message } => {
                self.start_refused(index, sidecar, refusal, message).await;
            }
            ExecResult::Finished {
                outcome,
                message,
                duration,
            } => {
                let ended = Ended {
                    outcome,
                    message,
                    duration,
                    may_still_run: false,
                };
                self.execution_ended(index, sidecar, ended).await;
            }
            ExecResult::StopUnconfirmed {
                outcome,
                message,
                duration,
            } => {
                let ended = Ended {
                    outcome,
                    message,
                    duration,
                    may_still_run: true,
                };
                self.execution_ended(index, sidecar, ended).await;
            }
        }
    }

    async fn emit(&self, kind: RunEventKind) {
        let event = RunEvent::new(&self.run_id, agentfleet_common::now_ms(), kind);
        let _ = self.events.send(event).await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
