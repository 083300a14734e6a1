//! A test-only Backend: jobs that run until released or stopped.
use std::sync::atomic::{AtomicU32, Ordering};

use agentfleet_common::proto::{self, event::Kind};
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, BackendError, ExecutionContext};

/// Job name whose start always fails.
pub const BROKEN_JOB: &str = "broken";

pub struct FakeBackend {
    jobs: Vec<String>,
    /// Calls to `start` that started something.
    pub starts: AtomicU32,
    /// Cancel to let every running job succeed.
    pub release: CancellationToken,
    /// Claims `resumes_after_restart` (as SQL Server Agent does).
    pub resumable: bool,
    /// When set, listing jobs waits until it is cancelled (a slow SQL Server)...
    pub names_gate: Option<CancellationToken>,
    /// ...and this counts the callers waiting there.
    pub names_waiting: AtomicU32,
}

impl FakeBackend {
    pub fn new(jobs: &[&str]) -> Self {
        Self {
            jobs: jobs.iter().map(|j| (*j).to_owned()).collect(),
            starts: AtomicU32::new(0),
            release: CancellationToken::new(),
            resumable: false,
            names_gate: None,
            names_waiting: AtomicU32::new(0),
        }
    }

    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn job_names(&self) -> Result<Vec<String>, BackendError> {
        if let Some(gate) = &self.names_gate {
            self.names_waiting.fetch_add(1, Ordering::SeqCst);
            gate.cancelled().await;
        }
        Ok(self.jobs.clone())
    }

    async fn list_jobs(&self) -> Result<Vec<proto::Job>, BackendError> {
        Ok(self
            .jobs
            .iter()
            .map(|name| proto::Job {
                name: name.clone(),
                backend: "command".into(),
                enabled: true,
                ..Default::default()
            })
            .collect())
    }

    fn resumes_after_restart(&self) -> bool {
        self.resumable
    }

    async fn start(&self, ctx: ExecutionContext) -> Result<(), BackendError> {
        if ctx.job == BROKEN_JOB {
            return Err(BackendError::Internal("the program does not exist".into()));
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        // Give concurrent callers a chance to interleave.
        tokio::task::yield_now().await;
        let release = self.release.clone();
        tokio::spawn(async move {
            ctx.events
                .emit(Kind::Started(proto::Started { step_count: 1 }))
                .await;
            ctx.events
                .log(1, proto::LogStream::Stdout, format!("running {}", ctx.job))
                .await;
            let outcome = tokio::select! {
                () = ctx.stop.cancelled() => proto::Outcome::Canceled,
                () = release.cancelled() => proto::Outcome::Succeeded,
            };
            ctx.events
                .emit(Kind::Finished(proto::Finished {
                    outcome: outcome as i32,
                    message: String::new(),
                }))
                .await;
        });
        Ok(())
    }
}
