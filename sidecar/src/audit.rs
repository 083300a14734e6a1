//! The sidecar's audit log, `state_dir/audit.log`: one JSON line per StartJob and
//! StopJob (who asked, from where, for what, and what the answer was), and one per call
//! that authorization refused (with what the caller presented).
//!
//! - **Private**: created 0600 on Unix, in the 0700 state directory.
//! - **Append-only**: opened with O_APPEND, each line written whole in one `write`, so
//!   lines never interleave even if a second writer (a restarted sidecar) appends.
//! - **Bounded**: past `MAX_BYTES` it is renamed to `audit.log.1` (replacing the older
//!   one) and a new file is started, so at most about twice that is kept.
//! - **No secrets**: a parameter's value is written only when its job declares it and
//!   does not list it in `secret_params`; every other value is `<redacted>` (a call for an
//!   unknown job, or with an undeclared parameter, may carry anything).
//!
//! Writing is best effort: a line that cannot be written (a full disk) is reported on the
//! sidecar's log and the call goes on, since StopJob must keep working on a full disk.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// The audit log's file name in the state directory.
pub const FILE: &str = "audit.log";
/// The rotated file's name.
pub const ROTATED_FILE: &str = "audit.log.1";
/// Size past which the log is rotated.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// What a secret (or unknown) parameter's value is written as.
pub const REDACTED: &str = "<redacted>";

/// Who made a call, as authorization established it; put in the request's extensions by
/// the interceptor (`server::auth`), read by the handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

impl Caller {
    /// A caller on the local socket of insecure mode, by its uid when the socket told it.
    pub fn local(uid: Option<u32>) -> Self {
        Self(uid.map_or_else(|| "local".to_owned(), |uid| format!("local uid {uid}")))
    }
}

/// How a call was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    /// StartJob created the execution.
    Created,
    /// StartJob found it already there (a repeated call).
    Existing,
    /// StopJob: the stop is asked for (idempotent; a finished execution is left as it is).
    Stopping,
    /// Refused with this gRPC status.
    Refused { code: String, message: String },
}

impl Answer {
    pub fn refused(status: &tonic::Status) -> Self {
        Self::Refused {
            code: code_name(status.code()),
            message: status.message().to_owned(),
        }
    }
}

/// `PERMISSION_DENIED`, as gRPC writes status codes.
fn code_name(code: tonic::Code) -> String {
    let words = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in words.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// RFC 3339 UTC, milliseconds.
    pub ts: String,
    /// "StartJob", "StopJob", or the method a refused call asked for.
    pub call: String,
    /// The coordinator's name, `local uid N`, or (refused) what the caller presented.
    pub caller: String,
    /// The caller's address (`ip:port`, or `unix` on the local socket).
    pub peer: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub execution_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub job: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// StopJob's reason.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub answer: Answer,
}

impl Entry {
    /// An entry stamped now; fill in what applies.
    pub fn now(call: &str, caller: &str, peer: &str, answer: Answer) -> Self {
        Self {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            call: call.to_owned(),
            caller: caller.to_owned(),
            peer: peer.to_owned(),
            execution_id: String::new(),
            job: String::new(),
            params: BTreeMap::new(),
            reason: String::new(),
            answer,
        }
    }

    /// The line as written (JSON, with its newline).
    pub fn line(&self) -> String {
        // Serializing strings and maps cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// `params` with every value not named in `shown` replaced by `<redacted>`.
pub fn redact(
    params: &BTreeMap<String, String>,
    shown: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    params
        .iter()
        .map(|(name, value)| {
            let value = if shown.contains(name) {
                value.clone()
            } else {
                REDACTED.to_owned()
            };
            (name.clone(), value)
        })
        .collect()
}

/// The audit log of one state directory; cheap to clone (one shared file).
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
}

#[derive(Debug)]
struct Writer {
    path: PathBuf,
    max_bytes: u64,
    /// Open file and its length; `None` until the first write (or after a failure).
    file: Option<(File, u64)>,
}

impl AuditLog {
    /// The log at `state_dir/audit.log`, rotated past `MAX_BYTES`.
    pub fn open(state_dir: &Path) -> Self {
        Self::with_limit(state_dir.join(FILE), MAX_BYTES)
    }

    /// The log at `path`, rotated past `max_bytes` (tests use a small limit).
    pub fn with_limit(path: PathBuf, max_bytes: u64) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Writer {
                path,
                max_bytes,
                file: None,
            })),
        }
    }

    /// Appends `entry`. A failure is logged, never returned (see the module docs). Blocks
    /// for one small write; lines are short and never fsynced.
    pub fn record(&self, entry: &Entry) {
        let line = entry.line();
        let mut writer = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = writer.append(line.as_bytes()) {
            // Next time, reopen: the file may have been moved or the disk freed.
            writer.file = None;
            tracing::warn!(path = %writer.path.display(), error = %e, call = %entry.call, caller = %entry.caller, execution_id = %entry.execution_id, "could not write to the audit log");
        }
    }
}

impl Writer {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let full = self
            .file
            .as_ref()
            .is_some_and(|(_, len)| *len > 0 && len + line.len() as u64 > self.max_bytes);
        if full {
            self.file = None;
            let mut rotated = self.path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(&self.path, PathBuf::from(rotated))?;
        }
        if self.file.is_none() {
            self.file = Some(open_private_append(&self.path)?);
        }
        let (file, len) = self.file.as_mut().expect("opened above");
        file.write_all(line)?;
        *len += line.len() as u64;
        Ok(())
    }
}

/// Opens `path` for appending, creating it 0600 first; returns it with its length.
fn open_private_append(path: &Path) -> std::io::Result<(File, u64)> {
    agentfleet_common::private::create_file(path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    let len = file.metadata()?.len();
    Ok((file, len))
}

#[cfg(test)]
mod tests;
