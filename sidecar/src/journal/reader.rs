//! Reading `events.pb`: the start-up scan (which finds a torn tail), bounded chunked
//! reads, and the Watch stream (replay from disk, then follow the writer's `Progress`).
//!
//! A watcher never gets events from memory: it reads the file after the writer says
//! more is there. A slow watcher simply reads later; nothing overflows. The one exception
//! is a Finished event that a full disk keeps off the journal: it is published in memory
//! with the next sequence number and watchers get it from there (see `writer`).
use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use agentfleet_common::proto::{Event, event::Kind};
use futures::Stream;
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{JournalError, Progress};

/// Records bigger than this are corruption, not events.
const MAX_RECORD: u64 = 64 * 1024 * 1024;
/// The most a record's buffer reserves before its bytes are read (it grows beyond as they
/// arrive); most events are far smaller.
const BODY_RESERVE: u64 = 64 * 1024;
/// Bytes a watcher reads per step (events are yielded before reading further).
const READ_BUDGET: usize = 512 * 1024;

enum Next {
    Record(Event, u64),
    /// End of file, or a record not (yet) completely written.
    End,
    Corrupt(String),
}

fn next_record(r: &mut impl Read) -> std::io::Result<Next> {
    let mut len: u64 = 0;
    let mut header = 0u64;
    loop {
        let mut byte = [0u8; 1];
        match r.read(&mut byte)? {
            0 => return Ok(Next::End),
            _ => {
                len |= u64::from(byte[0] & 0x7f) << (7 * header);
                header += 1;
                if byte[0] & 0x80 == 0 {
                    break;
                }
                if header >= 10 {
                    return Ok(Next::Corrupt("bad length prefix".into()));
                }
            }
        }
    }
    if len > MAX_RECORD {
        return Ok(Next::Corrupt(format!("record length {len} is implausible")));
    }
    let buf = read_body(r, len)?;
    if (buf.len() as u64) < len {
        return Ok(Next::End);
    }
    match Event::decode(buf.as_slice()) {
        Ok(e) => Ok(Next::Record(e, header + len)),
        Err(e) => Ok(Next::Corrupt(e.to_string())),
    }
}

/// Up to `len` bytes of a record's body, in a buffer that grows with what is actually
/// read: a torn or corrupt length prefix may claim up to `MAX_RECORD` bytes the file does
/// not have, and a watcher re-reads such a tail on every poll, so reserving the claimed
/// length up front would cost that much memory (committed on Windows) each time.
fn read_body(r: &mut impl Read, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(BODY_RESERVE) as usize);
    r.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

/// What the start-up scan found.
#[derive(Debug)]
pub struct Scan {
    pub progress: Progress,
    /// Length of the well-formed prefix (everything after it is torn or corrupt).
    pub good_len: u64,
    pub file_len: u64,
}

/// Reads the whole file once, keeping only the progress (not the events).
pub fn scan(path: &Path) -> Result<Scan, JournalError> {
    let err = |source| JournalError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Ok(Scan {
                progress: Progress::default(),
                good_len: 0,
                file_len: 0,
            });
        }
        Err(e) => return Err(err(e)),
    };
    let file_len = file.metadata().map_err(err)?.len();
    let mut r = BufReader::new(file);
    let mut progress = Progress::default();
    let mut good_len = 0;
    loop {
        match next_record(&mut r).map_err(err)? {
            Next::Record(e, n) if e.seq == progress.last_seq + 1 && progress.finished.is_none() => {
                progress.observe(&e);
                good_len += n;
            }
            Next::Record(e, _) => {
                tracing::warn!(path = %path.display(), seq = e.seq, expected = progress.last_seq + 1, "journal record out of sequence; cutting the journal there");
                break;
            }
            Next::End => break,
            Next::Corrupt(why) => {
                tracing::warn!(path = %path.display(), offset = good_len, %why, "corrupt journal record; cutting the journal there");
                break;
            }
        }
    }
    Ok(Scan {
        progress,
        good_len,
        file_len,
    })
}

/// What a backend resuming the execution needs to know of its journal (blocking; the
/// whole file is read once, in bounded chunks).
pub fn resume_state(path: &Path) -> std::io::Result<crate::backend::ResumeState> {
    let mut state = crate::backend::ResumeState::default();
    let mut offset = 0;
    loop {
        let (events, next) = match read_from(path, offset, READ_BUDGET) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(state),
            other => other?,
        };
        if events.is_empty() {
            return Ok(state);
        }
        for e in &events {
            if let Some(kind) = &e.kind {
                state.observe(kind);
            }
        }
        offset = next;
    }
}

/// Reads whole records from `offset`, about `budget` bytes of them; returns them and the
/// offset after the last one. A record still being written is left for the next call.
pub fn read_from(path: &Path, offset: u64, budget: usize) -> std::io::Result<(Vec<Event>, u64)> {
    read_until(path, offset, budget, u64::MAX)
}

/// [`read_from`], stopping before the first record whose seq is above `max_seq` (the
/// offset returned is that record's, so the next call reads it again).
pub fn read_until(
    path: &Path,
    offset: u64,
    budget: usize,
    max_seq: u64,
) -> std::io::Result<(Vec<Event>, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::new(file);
    let (mut events, mut pos, mut read) = (Vec::new(), offset, 0usize);
    while read < budget {
        match next_record(&mut r)? {
            Next::Record(e, _) if e.seq > max_seq => break,
            Next::Record(e, n) => {
                events.push(e);
                pos += n;
                read += n as usize;
            }
            Next::End => break,
            Next::Corrupt(why) => {
                return Err(std::io::Error::new(ErrorKind::InvalidData, why));
            }
        }
    }
    Ok((events, pos))
}

/// The events after `after_seq`: first what is on disk, then each append as the writer
/// publishes it, ending after the Finished event (from memory when the journal could not
/// take it yet: `Progress::unwritten_finished`). Ends with UNAVAILABLE when `shutdown`
/// fires first (the coordinator watches again after the sidecar is back).
pub fn watch(
    path: PathBuf,
    after_seq: u64,
    mut progress: watch::Receiver<Progress>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Result<Event, tonic::Status>> + Send + 'static {
    async_stream::stream! {
        let mut offset = 0u64;
        let mut read_seq = 0u64;
        let mut writer_gone = false;
        loop {
            let (known, unwritten) = {
                let p = progress.borrow_and_update();
                (p.last_seq, p.unwritten_finished.clone())
            };
            if read_seq < known || writer_gone {
                let p = path.clone();
                // Only what the writer published (it publishes once fdatasynced): bytes
                // after that may still be cut back by a failed sync and their seq reused,
                // and the sidecar frees the slot only when it has taken the Finished event.
                let max_seq = if writer_gone { u64::MAX } else { known };
                let chunk = tokio::task::spawn_blocking(move || read_until(&p, offset, READ_BUDGET, max_seq)).await;
                let (events, next) = match chunk {
                    Ok(Ok(pair)) => pair,
                    Ok(Err(e)) => {
                        yield Err(tonic::Status::data_loss(format!("failed to read the execution's journal: {e}")));
                        return;
                    }
                    Err(e) => {
                        yield Err(tonic::Status::internal(format!("journal reader failed: {e}")));
                        return;
                    }
                };
                offset = next;
                let got_any = !events.is_empty();
                for e in events {
                    read_seq = e.seq;
                    let finished = matches!(e.kind, Some(Kind::Finished(_)));
                    if e.seq > after_seq {
                        yield Ok(e);
                    }
                    if finished {
                        return;
                    }
                }
                if got_any {
                    continue;
                }
                if writer_gone {
                    yield Err(tonic::Status::unavailable(
                        "the execution's journal closed before it finished; watch again",
                    ));
                    return;
                }
            }
            // Everything on disk is read, and the Finished event that the journal could
            // not take yet follows it: the same event the disk gets later.
            if let Some(finished) = unwritten.filter(|f| f.seq == read_seq + 1) {
                if finished.seq > after_seq {
                    yield Ok(finished);
                }
                return;
            }
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() {
                        // Last look at the file before giving up.
                        writer_gone = true;
                    }
                }
                () = shutdown.cancelled() => {
                    yield Err(tonic::Status::unavailable(
                        "the sidecar is shutting down; watch again (after_seq = the last seq you got) once it is back",
                    ));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
