//! The supervisor's side: take the lock, check the journal, run the command job with the
//! journal writer in this process, watch for a stop request, exit after Finished. When
//! the journal cannot be written, the writer stops the job (through the same stop token
//! as a stop request: the step's process tree is ended here) and the supervisor exits
//! with `EXIT_JOURNAL_UNWRITABLE` if even its Finished event cannot be written.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::lock::ExecutionLock;
use super::spawn::{JOB_FILE, STOP_FILE};
use crate::backend::command::CommandBackend;
use crate::backend::{Backend, ExecutionContext, SupervisedJob};
use crate::journal::{Journal, JournalError, writer};
use crate::stop_note::{self, StopNote};

/// How often the supervisor looks for `DIR/stop` when the sidecar cannot tell it (its
/// stdin is not the sidecar's pipe, or the sidecar is gone: a restarted sidecar only writes
/// the file).
const STOP_POLL: Duration = Duration::from_millis(100);
/// The same while the sidecar's pipe is open: the sidecar writes a byte on it after the
/// stop file, so looking is only a safety net (a thousand idle supervisors polling every
/// 100 ms would cost a core).
const STOP_POLL_PIPED: Duration = Duration::from_secs(5);
/// When the journal cannot be written (a full disk), the writer stops the job and tries
/// to write its Finished{FAILED} event for this long; then the supervisor exits with
/// `EXIT_JOURNAL_UNWRITABLE` and the sidecar, which lives on, takes over: it publishes
/// the end of the execution and keeps trying to write it (see `executions::supervised`).
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// How a supervisor's work ended (all are exit code 0).
#[derive(Debug, PartialEq, Eq)]
pub enum Done {
    /// The execution ran here to its Finished event.
    Ran,
    /// Another supervisor holds the lock: it owns the execution.
    AlreadySupervised,
    /// The journal already holds Started or Finished: never run a job twice.
    AlreadyRan,
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("`{}` is not an execution directory (state_dir/executions/<id>)", .0.display())]
    NotAnExecutionDir(PathBuf),
    #[error("failed to lock `{}`: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read the job description `{}`: {detail}", path.display())]
    Job { path: PathBuf, detail: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "the journal could not be written (see the errors above): the job was stopped, and its Finished event is left to the sidecar"
    )]
    JournalUnwritable,
}

/// Runs the execution in `dir` (see the module docs of `supervisor`).
pub async fn supervise(dir: &Path) -> Result<Done, SuperviseError> {
    let not_exec = || SuperviseError::NotAnExecutionDir(dir.to_owned());
    let id = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(not_exec)?
        .to_owned();
    let root = dir.parent().ok_or_else(not_exec)?.to_owned();
    let Some(lock) = ExecutionLock::try_acquire(dir).map_err(|source| SuperviseError::Lock {
        path: dir.to_owned(),
        source,
    })?
    else {
        return Ok(Done::AlreadySupervised);
    };

    let journal = Journal::at(root)?;
    let record = journal.record(&id)?;
    // Under the lock nobody else writes the journal: reopen it (cutting a torn tail).
    let (file, progress) = journal.reopen(&id)?;
    if progress.started || progress.finished.is_some() {
        tracing::warn!(execution_id = %id, "the journal shows this execution already started or ended; not running it");
        return Ok(Done::AlreadyRan);
    }
    let job = read_job(&dir.join(JOB_FILE))?;

    // The backend's events reach the writer through `stop_note::forward`, which adds who
    // asked to stop to the Finished message.
    let note = StopNote::default();
    // (Not tracked: it ends with the writer or the backend, and the process with both.)
    let (sink, rx) = stop_note::sink(&id, &note, &tokio_util::task::TaskTracker::new());
    let (progress_tx, _) = watch::channel(progress);
    let notifier = tokio::spawn(notify_progress(progress_tx.subscribe()));
    let stop = CancellationToken::new();
    let policy = writer::RetryPolicy {
        finish_for: Some(FINISH_WAIT),
        ..Default::default()
    };
    let writer = tokio::spawn(
        writer::Writer::new(file, rx, progress_tx, id.clone())
            .stop_on_failure(stop.clone())
            .with_policy(policy)
            .run(),
    );
    let watcher = tokio::spawn(watch_for_stop(dir.to_owned(), stop.clone(), note));

    tracing::info!(execution_id = %id, job = %record.job, "supervisor starting job");
    let backend = Arc::new(CommandBackend::new(vec![job.job], job.stop_grace));
    let ctx = ExecutionContext {
        execution_id: id.clone(),
        job: record.job.clone(),
        params: record.params.clone(),
        events: sink.clone(),
        stop,
        resume: None,
    };
    if let Err(e) = backend.start(ctx).await {
        tracing::warn!(execution_id = %id, error = %e, "job failed to start");
        sink.emit(Kind::Finished(proto::Finished {
            outcome: proto::Outcome::Failed as i32,
            message: format!("failed to start: {e}"),
        }))
        .await;
    }
    drop(sink);
    // The writer ends once Finished is on disk (or, should every sender go without one,
    // after journaling LOST itself).
    let ended = writer.await;
    watcher.abort();
    // The last change (Finished) is announced before the supervisor exits.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), notifier).await;
    drop(lock);
    match ended {
        Ok(writer::Ended::FinishUnwritten) => Err(SuperviseError::JournalUnwritable),
        Ok(_) => Ok(Done::Ran),
        Err(e) => {
            tracing::error!(execution_id = %id, error = %e, "the journal writer failed");
            Ok(Done::Ran)
        }
    }
}

/// Tells the sidecar that the journal grew: one byte on stdout (a pipe the sidecar reads)
/// per published change, so it reads the journal at once instead of at its next poll. The
/// journal stays the only record; this only wakes the reader. The watch coalesces changes,
/// so a sidecar slow to read never slows the job; once the sidecar is gone (a broken pipe)
/// this stops and a restarted sidecar polls.
async fn notify_progress(mut changes: watch::Receiver<crate::journal::Progress>) {
    use tokio::io::AsyncWriteExt;
    let mut out = tokio::io::stdout();
    while changes.changed().await.is_ok() {
        if out.write_all(b"\n").await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

fn read_job(path: &Path) -> Result<SupervisedJob, SuperviseError> {
    let detail = |e: &dyn std::fmt::Display| SuperviseError::Job {
        path: path.to_owned(),
        detail: e.to_string(),
    };
    let bytes = std::fs::read(path).map_err(|e| detail(&e))?;
    serde_json::from_slice(&bytes).map_err(|e| detail(&e))
}

/// Cancels `stop` when `DIR/stop` appears (its content, the reason and who asked, goes
/// into `note`) or the supervisor is asked to terminate.
async fn watch_for_stop(dir: PathBuf, stop: CancellationToken, note: StopNote) {
    let path = dir.join(STOP_FILE);
    let mut signals = Signals::install();
    let mut pipe = StopPipe::open();
    let every = if pipe.is_some() {
        STOP_POLL_PIPED
    } else {
        STOP_POLL
    };
    let mut tick = tokio::time::interval(every);
    loop {
        let look = tokio::select! {
            _ = tick.tick() => true,
            open = StopPipe::next(&mut pipe) => {
                if !open {
                    // The sidecar is gone (or restarted): nobody will tell us; poll.
                    pipe = None;
                    tick = tokio::time::interval(STOP_POLL);
                }
                true
            }
            why = signals.terminate() => {
                tracing::info!(signal = why, "asked to terminate: stopping the job");
                break;
            }
        };
        // An empty file is a stop request too: on a full disk the sidecar can create it
        // but not write the reason into it.
        if look && let Ok(reason) = tokio::fs::read_to_string(&path).await {
            tracing::info!(reason = %reason.trim(), "stop requested");
            let _ = note.set(reason.trim().to_owned());
            break;
        }
    }
    stop.cancel();
}

/// The sidecar's pipe on the supervisor's stdin: a byte means "the stop file is there";
/// EOF means the sidecar is gone. None when stdin is not a pipe (e.g. started by hand).
struct StopPipe {
    #[cfg(unix)]
    rx: tokio::net::unix::pipe::Receiver,
    #[cfg(not(unix))]
    rx: tokio::io::Stdin,
}

impl StopPipe {
    #[cfg(unix)]
    fn open() -> Option<Self> {
        use std::os::fd::AsFd;
        // A duplicate of stdin, read without a thread (epoll); refused unless a pipe.
        let fd = std::io::stdin().as_fd().try_clone_to_owned().ok()?;
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
        Some(Self { rx })
    }

    /// Windows: read on tokio's blocking thread (the runtime is shut down in the
    /// background at exit, so a pending read does not hold the process).
    #[cfg(not(unix))]
    fn open() -> Option<Self> {
        Some(Self {
            rx: tokio::io::stdin(),
        })
    }

    /// Waits for the next word from the sidecar: true for a byte, false at EOF or an
    /// error. Pending forever without a pipe.
    async fn next(pipe: &mut Option<Self>) -> bool {
        use tokio::io::AsyncReadExt;
        let Some(p) = pipe else {
            return std::future::pending().await;
        };
        let mut buf = [0u8; 16];
        matches!(p.rx.read(&mut buf).await, Ok(n) if n > 0)
    }
}

/// SIGTERM / SIGINT stop the job; SIGHUP (a closing terminal) is caught and ignored.
/// Windows: Ctrl-C, Ctrl-Break, closing its console and system shutdown stop the job; a
/// user logging off is caught and ignored (left alone, it would end the process).
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
    #[cfg(windows)]
    windows: windows_signals::Listeners,
}

impl Signals {
    #[cfg(unix)]
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    #[cfg(windows)]
    fn install() -> Self {
        Self {
            windows: windows_signals::Listeners::install(),
        }
    }

    #[cfg(not(any(unix, windows)))]
    fn install() -> Self {
        Self {}
    }

    /// Waits for a signal that means "stop"; returns its name.
    #[cfg(unix)]
    async fn terminate(&mut self) -> &'static str {
        loop {
            let term = async {
                match &mut self.term {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let hup = async {
                match &mut self.hup {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = term => return "SIGTERM",
                _ = tokio::signal::ctrl_c() => return "SIGINT",
                _ = hup => tracing::info!("ignoring SIGHUP"),
            }
        }
    }

    /// Waits for a console event that means "stop"; returns its name.
    #[cfg(windows)]
    async fn terminate(&mut self) -> &'static str {
        self.windows.terminate().await
    }

    #[cfg(not(any(unix, windows)))]
    async fn terminate(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(windows)]
mod windows_signals {
    use tokio::signal::windows::{
        CtrlBreak, CtrlC, CtrlClose, CtrlLogoff, CtrlShutdown, ctrl_break, ctrl_c, ctrl_close,
        ctrl_logoff, ctrl_shutdown,
    };

    /// The console events the supervisor listens to; one that cannot be listened to
    /// (no console) is `None` and never fires.
    pub(super) struct Listeners {
        c: Option<CtrlC>,
        brk: Option<CtrlBreak>,
        close: Option<CtrlClose>,
        shutdown: Option<CtrlShutdown>,
        logoff: Option<CtrlLogoff>,
    }

    /// Waits for one event of a listener that may be missing.
    macro_rules! event {
        ($listener:expr) => {
            async {
                match $listener {
                    Some(listener) => {
                        listener.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
        };
    }

    impl Listeners {
        pub(super) fn install() -> Self {
            Self {
                c: ctrl_c().ok(),
                brk: ctrl_break().ok(),
                close: ctrl_close().ok(),
                shutdown: ctrl_shutdown().ok(),
                logoff: ctrl_logoff().ok(),
            }
        }

        pub(super) async fn terminate(&mut self) -> &'static str {
            loop {
                tokio::select! {
                    () = event!(&mut self.c) => return "Ctrl-C",
                    () = event!(&mut self.brk) => return "Ctrl-Break",
                    () = event!(&mut self.close) => return "console closed",
                    () = event!(&mut self.shutdown) => return "system shutdown",
                    () = event!(&mut self.logoff) => tracing::info!("ignoring a user logoff"),
                }
            }
        }
    }
}
