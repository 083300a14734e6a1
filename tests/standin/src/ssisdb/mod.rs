//! The simulated SSIS catalog (SSISDB): operations and executions with one shared IDENTITY,
//! the status machine created → pending → running → succeeded / failed (stop: stopping →
//! canceled), the catalog procedures' checks and errors, row-level security, messages and
//! statistics written while a scripted package runs, and retention.
//!
//! Behaviour follows `ssisdb.md` (Microsoft's documentation and the catalog's T-SQL). Where
//! that reference marks a fact UNCONFIRMED the simulation picks the described behaviour and
//! says "assumption" next to it.

pub mod agent_step;
pub mod config;
pub mod errors;
pub mod model;
pub mod procedures;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::agent::clock::Clock;
pub use config::SsisConfig;
pub use errors::CatalogError;
use model::{
    DataStat, EventDetail, ExecStat, Executable, Execution, Message, Operation, PackageDef, Time,
    operation_type, status,
};

/// Everything behind the catalog's lock.
pub struct CatalogState {
    pub settings: SsisConfig,
    pub packages: Vec<PackageDef>,
    pub operations: BTreeMap<i64, Operation>,
    pub executions: BTreeMap<i64, Execution>,
    /// Ordered by id (ids are allocated in order; a held one is invisible until released).
    pub messages: Vec<Message>,
    pub stats: Vec<ExecStat>,
    pub executables: Vec<Executable>,
    pub data: Vec<DataStat>,
    next_operation_id: i64,
    next_message_id: i64,
    next_stat_id: i64,
    next_data_id: i64,
    next_param_id: i64,
    next_executable_id: i64,
    project_ids: HashMap<String, i64>,
    /// Knob: the next N `create_execution` calls time out on their app lock (27195).
    create_timeouts: u32,
    /// Knob: the next message gets its id but commits only on `release_held_messages`.
    hold_next_message: bool,
    /// Stop tokens of running packages, and the stop operation that asked.
    runs: HashMap<i64, (CancellationToken, Option<i64>)>,
}

impl CatalogState {
    fn new_operation(
        &mut self,
        kind: i16,
        object_name: &str,
        caller: &str,
        now: Time,
        status: i32,
    ) -> i64 {
        let id = self.next_operation_id;
        self.next_operation_id += 1;
        self.operations.insert(
            id,
            Operation {
                id,
                operation_type: kind,
                created_time: now,
                object_type: 20,
                object_id: 0,
                object_name: object_name.to_string(),
                status,
                start_time: None,
                end_time: None,
                caller_name: caller.to_string(),
                process_id: None,
                stopped_by_name: None,
                server_name: self.settings.server_name.clone(),
                machine_name: self.settings.machine_name.clone(),
            },
        );
        id
    }

    fn project_id(&self, folder: &str, project: &str) -> i64 {
        let key = format!("{folder}\\{project}").to_lowercase();
        self.project_ids.get(&key).copied().unwrap_or(0)
    }

    /// The executable a task path runs as (shared across executions of the project).
    fn executable(&mut self, project: &str, package: &str, name: &str, path: &str) -> i64 {
        if let Some(e) = self
            .executables
            .iter()
            .find(|e| e.project == project && e.package_name == package && e.package_path == path)
        {
            return e.id;
        }
        let id = self.next_executable_id;
        self.next_executable_id += 1;
        self.executables.push(Executable {
            id,
            project: project.to_string(),
            package_name: package.to_string(),
            name: name.to_string(),
            guid: format!("{{{}}}", uuid::Uuid::new_v4().to_string().to_uppercase()),
            package_path: path.to_string(),
        });
        id
    }

    /// The execution's `LOGGING_LEVEL` system parameter.
    pub fn logging_level(&self, id: i64) -> i32 {
        self.executions
            .get(&id)
            .and_then(|e| {
                e.params
                    .iter()
                    .find(|p| p.object_type == 50 && p.name == "LOGGING_LEVEL")
            })
            .and_then(|p| match &p.value {
                Some(v) => procedures::as_i64(v),
                None => None,
            })
            .map_or(self.settings.server_logging_level, |v| v as i32)
    }

    /// The execution's `CALLER_INFO` system parameter, as text.
    pub fn caller_info(&self, id: i64) -> Option<String> {
        let p = self
            .executions
            .get(&id)?
            .params
            .iter()
            .find(|p| p.object_type == 50 && p.name == "CALLER_INFO")?;
        match &p.value {
            Some(crate::tds::values::Value::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }
}

/// The simulated catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    state: Arc<Mutex<CatalogState>>,
    pub clock: Clock,
    /// Bumped on every status change (waiters re-check).
    changed: Arc<watch::Sender<u64>>,
    /// Cancelled when the stand-in stops: every package run ends.
    shutdown: CancellationToken,
}

impl Catalog {
    pub fn new(settings: SsisConfig, clock: Clock) -> Self {
        let packages: Vec<PackageDef> = settings
            .packages
            .iter()
            .map(PackageDef::from_config)
            .collect();
        let mut s = CatalogState {
            settings,
            packages,
            operations: BTreeMap::new(),
            executions: BTreeMap::new(),
            messages: Vec::new(),
            stats: Vec::new(),
            executables: Vec::new(),
            data: Vec::new(),
            next_operation_id: 1,
            next_message_id: 1,
            next_stat_id: 1,
            next_data_id: 1,
            next_param_id: 1,
            next_executable_id: 1,
            project_ids: HashMap::new(),
            create_timeouts: 0,
            hold_next_message: false,
            runs: HashMap::new(),
        };
        // The catalog's history before the first execution: its start-up and one deployment
        // per project, so execution ids start past them (ids are shared by every operation).
        let now = clock.now_offset();
        let startup = s.new_operation(
            operation_type::STARTUP,
            "SSISDB",
            "##MS_SSISServerCleanupJobLogin##",
            now,
            status::SUCCEEDED,
        );
        s.operations
            .get_mut(&startup)
            .expect("just inserted")
            .end_time = Some(now);
        let projects: Vec<(String, String)> = s
            .packages
            .iter()
            .map(|p| (p.config.folder.clone(), p.config.project.clone()))
            .collect();
        for (folder, project) in projects {
            let key = format!("{folder}\\{project}").to_lowercase();
            if s.project_ids.contains_key(&key) {
                continue;
            }
            let n = s.project_ids.len() as i64 + 1;
            s.project_ids.insert(key, n);
            let op = s.new_operation(
                operation_type::DEPLOY_PROJECT,
                &project,
                "CONTOSO\\deployer",
                now,
                status::SUCCEEDED,
            );
            let o = s.operations.get_mut(&op).expect("just inserted");
            o.object_id = n;
            o.end_time = Some(now);
        }
        Self {
            state: Arc::new(Mutex::new(s)),
            clock,
            changed: Arc::new(watch::channel(0).0),
            shutdown: CancellationToken::new(),
        }
    }

    /// Locks the state. Never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, CatalogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|g| *g += 1);
    }

    /// Ends every package run (the stand-in is going away).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Writes one message row; returns its id. A held message keeps its id and stays
    /// invisible until [`Catalog::release_held_messages`] (out-of-order commit).
    pub fn emit(
        &self,
        operation_id: i64,
        message_type: i16,
        source_type: i16,
        text: &str,
        event: Option<EventDetail>,
    ) -> i64 {
        let mut s = self.lock();
        let id = s.next_message_id;
        s.next_message_id += 1;
        let visible = !std::mem::take(&mut s.hold_next_message);
        s.messages.push(Message {
            id,
            operation_id,
            time: self.clock.now_offset(),
            message_type,
            source_type,
            text: text.to_string(),
            event,
            visible,
        });
        id
    }

    /// Knob: the next N `create_execution` calls fail with 27195 (app lock timed out).
    pub fn inject_create_timeouts(&self, n: u32) {
        self.lock().create_timeouts = n;
    }

    /// Knob: the next message written is committed late (its id visible after later ids).
    pub fn hold_next_message(&self) {
        self.lock().hold_next_message = true;
    }

    /// Commits every held message.
    pub fn release_held_messages(&self) {
        for m in &mut self.lock().messages {
            m.visible = true;
        }
    }

    /// The ids of messages that have an id but are not committed yet.
    pub fn held_messages(&self) -> Vec<i64> {
        self.lock()
            .messages
            .iter()
            .filter(|m| !m.visible)
            .map(|m| m.id)
            .collect()
    }

    /// Status of an operation (any type), ignoring row-level security.
    pub fn status(&self, id: i64) -> Option<i32> {
        self.lock().operations.get(&id).map(|o| o.status)
    }

    /// Waits until the operation's status satisfies `done` (or it vanishes: `None`).
    pub async fn wait_status(&self, id: i64, done: impl Fn(i32) -> bool) -> Option<i32> {
        let mut rx = self.changed.subscribe();
        loop {
            match self.status(id) {
                Some(st) if done(st) => return Some(st),
                None => return None,
                Some(_) => {}
            }
            if rx.changed().await.is_err() {
                return self.status(id);
            }
        }
    }

    /// Retention (the SSIS Server Maintenance Job's `cleanup_server_retention_window`):
    /// deletes operations that ended at or before `cutoff`, and never-started (created)
    /// executions created at or before it, cascading to executions, parameter values,
    /// messages and statistics. Running executions are never deleted. Returns how many
    /// operations went.
    pub fn cleanup(&self, cutoff: Time) -> usize {
        let now = self.clock.now_offset();
        let mut s = self.lock();
        let own = s.new_operation(
            operation_type::RETENTION_CLEANUP,
            "SSISDB",
            "##MS_SSISServerCleanupJobLogin##",
            now,
            status::RUNNING,
        );
        let doomed: Vec<i64> = s
            .operations
            .values()
            .filter(|o| o.id != own)
            .filter(|o| match o.end_time {
                Some(end) => end <= cutoff,
                None => o.status == status::CREATED && o.created_time <= cutoff,
            })
            .map(|o| o.id)
            .collect();
        for id in &doomed {
            s.operations.remove(id);
            s.executions.remove(id);
        }
        s.messages.retain(|m| !doomed.contains(&m.operation_id));
        s.stats.retain(|x| !doomed.contains(&x.execution_id));
        s.data.retain(|x| !doomed.contains(&x.execution_id));
        let o = s.operations.get_mut(&own).expect("just inserted");
        o.status = status::SUCCEEDED;
        o.end_time = Some(self.clock.now_offset());
        drop(s);
        self.notify();
        doomed.len()
    }
}
