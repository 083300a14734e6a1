//! Tailing a step's output file (`sysjobsteps.output_file_name`) from local disk: the
//! sidecar runs on the SQL Server's host. Best-effort: a file that is missing, unreadable
//! or named with unresolved Agent tokens is simply not tailed (history messages still are).
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::SystemTime;

use tiberius::Uuid;

/// At most this much is read per tick, so a chatty step cannot stall the poller.
const MAX_READ: u64 = 1 << 20;

/// Resolves the Agent tokens the sidecar knows (`JOBID`, `STEPID`, under any `ESCAPE_*`
/// macro); `None` if other tokens remain.
pub fn resolve_name(name: &str, job_id: Uuid, step_id: i32) -> Option<PathBuf> {
    let job_hex: String = format!("0x{}", hex_upper(&job_id.to_bytes_le()));
    let mut s = name.to_string();
    for esc in [
        "ESCAPE_SQUOTE",
        "ESCAPE_DQUOTE",
        "ESCAPE_RBRACKET",
        "ESCAPE_NONE",
    ] {
        s = s
            .replace(&format!("$({esc}(JOBID))"), &job_hex)
            .replace(&format!("$({esc}(STEPID))"), &step_id.to_string());
    }
    s = s
        .replace("$(JOBID)", &job_hex)
        .replace("$(STEPID)", &step_id.to_string());
    (!s.contains("$(")).then(|| PathBuf::from(s))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[derive(Debug)]
pub struct OutputTail {
    path: PathBuf,
    append: bool,
    initial: Option<(u64, Option<SystemTime>)>,
    offset: Option<u64>,
    partial: Vec<u8>,
}

impl OutputTail {
    /// Starts watching at step start. `append` = step flag 2 (else the Agent overwrites).
    pub fn new(path: PathBuf, append: bool) -> Self {
        let initial = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        Self {
            path,
            append,
            initial,
            offset: None,
            partial: Vec::new(),
        }
    }

    /// New complete lines since the last call; with `last`, also a trailing partial line.
    pub fn read_new(&mut self, last: bool) -> Vec<String> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        let now = (meta.len(), meta.modified().ok());
        let offset = match self.offset {
            Some(o) => o,
            // Nothing written yet by this step: the file still holds an earlier run's output.
            None if Some(now) == self.initial => return Vec::new(),
            None if self.append => self.initial.map_or(0, |(len, _)| len),
            None => 0,
        };
        let offset = if meta.len() < offset { 0 } else { offset };
        let mut lines = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut buf = Vec::new();
            let n = f.take(MAX_READ).read_to_end(&mut buf).unwrap_or(0) as u64;
            self.offset = Some(offset + n);
            self.partial.extend_from_slice(&buf);
        }
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        if last && !self.partial.is_empty() {
            lines.push(
                String::from_utf8_lossy(&std::mem::take(&mut self.partial))
                    .trim_end()
                    .to_string(),
            );
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn resolves_known_tokens_only() {
        let id = Uuid::nil();
        let p = resolve_name(
            "C:\\Log\\x_$(ESCAPE_SQUOTE(JOBID))_$(ESCAPE_SQUOTE(STEPID)).txt",
            id,
            2,
        )
        .unwrap();
        assert!(
            p.to_string_lossy()
                .contains("x_0x00000000000000000000000000000000_2.txt")
        );
        assert!(resolve_name("/x_$(ESCAPE_SQUOTE(STRTDT)).txt", id, 1).is_none());
    }

    #[test]
    fn tails_new_lines_of_an_appended_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        std::fs::write(&path, "old run\n").unwrap();
        let mut tail = OutputTail::new(path.clone(), true);
        assert!(tail.read_new(false).is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "line 1\nline 2\npart").unwrap();
        drop(f);
        assert_eq!(tail.read_new(false), vec!["line 1", "line 2"]);
        assert_eq!(tail.read_new(true), vec!["part"]);
    }
}
