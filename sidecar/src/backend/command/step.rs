//! One attempt of one command-job step: spawn the program, forward its output, and end it
//! on timeout or stop (the whole process tree, grace then kill).
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agentfleet_common::proto::LogStream;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::StepConfig;
use super::output::{DrainDeadline, ReadEnd, forward_lines};
use crate::events::EventSink;
use crate::process;

/// How long to keep reading output after the step's program exited (see `output.rs`).
pub(crate) const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How one attempt ended; the message is what StepFinished carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    Succeeded(String),
    /// Exited unsuccessfully, was killed by a signal, or could not be started.
    Failed(String),
    TimedOut(String),
    /// `stop` was cancelled while the step ran.
    Canceled(String),
}

impl AttemptEnd {
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::Succeeded(m) | Self::Failed(m) | Self::TimedOut(m) | Self::Canceled(m) => m,
        }
    }
}

/// What one attempt needs.
pub(crate) struct Attempt<'a> {
    pub step_id: u32,
    pub step: &'a StepConfig,
    /// Complete environment additions (job env, params, AGENTFLEET_*), applied in order.
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a Path>,
    pub sink: &'a EventSink,
    pub stop: &'a CancellationToken,
    pub stop_grace: Duration,
}

impl Attempt<'_> {
    /// Runs the attempt to its end. `spawned` is told once the program was started (or
    /// could not be), so that `start` can return only when the job has really begun.
    pub(crate) async fn run(&self, spawned: &mut Option<oneshot::Sender<()>>) -> AttemptEnd {
        let mut cmd = self.command();
        let spawn_result = process::spawn(&mut cmd);
        if let Some(tx) = spawned.take() {
            let _ = tx.send(());
        }
        let mut tree = match spawn_result {
            Ok(tree) => tree,
            Err(e) => return AttemptEnd::Failed(self.spawn_error(&e).await),
        };
        let stdout = tree.child_mut().stdout.take();
        let stderr = tree.child_mut().stderr.take();
        let (drain_tx, drain) = DrainDeadline::new();

        let supervise = async {
            let end = self.supervise(&mut tree).await;
            // The program is gone: its output is in the pipes (or was read); what still
            // holds them open is a descendant, which gets a short drain only.
            drain_tx.send_replace(Some(Instant::now() + OUTPUT_DRAIN));
            end
        };
        let out_drain = drain.clone();
        let read_out = async {
            match stdout {
                Some(pipe) => {
                    forward_lines(pipe, self.step_id, LogStream::Stdout, self.sink, out_drain).await
                }
                None => ReadEnd::Eof,
            }
        };
        let read_err = async {
            match stderr {
                Some(pipe) => {
                    forward_lines(pipe, self.step_id, LogStream::Stderr, self.sink, drain).await
                }
                None => ReadEnd::Eof,
            }
        };
        let (end, out_end, err_end) = tokio::join!(supervise, read_out, read_err);
        self.report_read_end("stdout", out_end).await;
        self.report_read_end("stderr", err_end).await;
        end
    }

    fn command(&self) -> Command {
        let (program, args) = self
            .step
            .run
            .split_first()
            .map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
        let mut cmd = Command::new(program);
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Nothing of the sidecar's own environment (it may hold secrets): `self.env` is the
        // whole environment (see `environment.rs`).
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = self.working_dir {
            cmd.current_dir(dir);
        }
        cmd
    }

    async fn spawn_error(&self, e: &std::io::Error) -> String {
        let program = self.step.run.first().map_or("", String::as_str);
        match self.working_dir {
            // ENOENT for a missing working directory reads like a missing program: say which.
            Some(dir) if tokio::fs::metadata(dir).await.is_err() => format!(
                "could not start `{program}`: working directory `{}` is not accessible: {e}",
                dir.display()
            ),
            _ => format!("could not start `{program}`: {e}"),
        }
    }

    /// Waits for the program, the step's timeout, or stop; ends the tree in the latter two.
    async fn supervise(&self, tree: &mut process::ProcessTree) -> AttemptEnd {
        let timeout = self.step.timeout;
        let timer = async {
            match timeout {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        enum Why {
            Timeout,
            Stop,
        }
        let why = tokio::select! {
            biased;
            status = tree.wait() => return match status {
                Ok(status) if status.success() => AttemptEnd::Succeeded(process::describe_exit(status)),
                Ok(status) => AttemptEnd::Failed(process::describe_exit(status)),
                Err(e) => AttemptEnd::Failed(format!("failed to wait for the step's program: {e}")),
            },
            () = self.stop.cancelled() => Why::Stop,
            () = timer => Why::Timeout,
        };
        let ended = process::terminate_tree(tree, self.stop_grace).await;
        let how = match &ended {
            Ok(status) => process::describe_exit(*status),
            Err(e) => format!("could not be confirmed ended: {e}"),
        };
        match why {
            Why::Stop => AttemptEnd::Canceled(format!("stopped: {how}")),
            Why::Timeout => {
                let limit = timeout.unwrap_or_default();
                AttemptEnd::TimedOut(format!(
                    "timed out after {}",
                    humantime::format_duration(limit)
                ))
            }
        }
    }

    async fn report_read_end(&self, pipe: &str, end: ReadEnd) {
        let note = match end {
            ReadEnd::Eof => return,
            ReadEnd::GaveUp => format!(
                "the step's program exited, but a process it started still holds its {pipe} \
                 open; stopped reading {pipe} after {}",
                humantime::format_duration(OUTPUT_DRAIN)
            ),
            ReadEnd::Failed(e) => format!("failed to read the step's {pipe}: {e}"),
        };
        self.sink.log(self.step_id, LogStream::Agent, note).await;
    }
}
