//! A tiny line-based admin socket for the binary (tests in-process use [`Standin`] directly).
//!
//! One command per line; each answer is one line starting with `ok` or `error`:
//!
//! ```text
//! agent status                     -> ok running|starting|stopped session=<id>
//! agent stop [crash|graceful]      (default crash: activity rows stay open)
//! agent start
//! agent restart [crash|graceful]
//! drop                             close every client connection
//! fail <n> [disconnect]            next n requests fail (error 1222, or a disconnect)
//! fail <n> error <number> <class> <message…>
//! execute_denied on|off            229 on sp_start_job / sp_stop_job
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::tds::tokens::ServerMessage;
use crate::{AgentStatus, FailMode, Standin, StopMode};

/// Binds the admin socket and serves it in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, standin: Arc<Standin>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let standin = standin.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut lines = BufReader::new(rd).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = command(&standin, &line);
                    if wr
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(bound)
}

fn stop_mode(word: Option<&str>) -> Result<StopMode, String> {
    match word {
        None | Some("crash") => Ok(StopMode::Crash),
        Some("graceful") => Ok(StopMode::Graceful),
        Some(w) => Err(format!("error unknown stop mode {w:?}")),
    }
}

fn fail_mode(rest: &[&str]) -> Result<FailMode, String> {
    match rest {
        [] => Ok(FailMode::lock_timeout()),
        ["disconnect"] => Ok(FailMode::Disconnect),
        ["error", number, class, msg @ ..] => match (number.parse(), class.parse()) {
            (Ok(number), Ok(class)) => Ok(FailMode::Error(ServerMessage::new(
                number,
                class,
                msg.join(" "),
            ))),
            _ => Err("error bad number or class".into()),
        },
        _ => Err("error usage: fail <n> [disconnect | error <number> <class> <message>]".into()),
    }
}

/// Executes one admin command and returns the answer line.
pub fn command(standin: &Standin, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        ["agent", "status"] => {
            let status = match standin.agent().status() {
                AgentStatus::Running => "running",
                AgentStatus::Starting => "starting",
                AgentStatus::Stopped => "stopped",
            };
            let session = standin.agent().current_session().unwrap_or(0);
            return format!("ok {status} session={session}");
        }
        ["agent", "stop", rest @ ..] => {
            stop_mode(rest.first().copied()).map(|m| standin.stop_agent(m))
        }
        ["agent", "start"] => {
            standin.start_agent();
            Ok(())
        }
        ["agent", "restart", rest @ ..] => {
            stop_mode(rest.first().copied()).map(|m| standin.restart_agent(m))
        }
        ["drop"] => {
            standin.drop_connections();
            Ok(())
        }
        ["fail", n, rest @ ..] => match (n.parse::<u32>(), fail_mode(rest)) {
            (Ok(n), Ok(mode)) => {
                standin.fail_next(n, mode);
                Ok(())
            }
            (Err(_), _) => Err(format!("error bad count {n:?}")),
            (_, Err(e)) => Err(e),
        },
        // How many requests of one kind (e.g. `start_job`) were received: tests prove
        // with it that something was never asked for.
        ["requests", marker] => {
            let n = standin
                .requests()
                .iter()
                .filter(|r| r.marker.as_deref() == Some(*marker))
                .count();
            return format!("ok {n}");
        }
        ["execute_denied", v @ ("on" | "off")] => {
            standin.agent().set_execute_denied(*v == "on");
            Ok(())
        }
        _ => Err(format!("error unknown command {line:?}")),
    };
    match result {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}
