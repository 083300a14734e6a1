//! A step's stdout or stderr, forwarded line by line to the execution's sink.
//!
//! Lines are never dropped: they are awaited into the sink (backpressure reaches the
//! program through its pipe). The lines of one read go as one message (up to
//! `MAX_GROUP_BYTES`), not one channel send per line: a chatty program's lines cost a
//! copy each, not a task wake-up each. Invalid UTF-8 is replaced, a trailing "\r" is removed, a line
//! longer than `MAX_LINE` is cut into pieces (at a character boundary), and a last line
//! without "\n" is kept.
//!
//! A pipe only ends when every process holding it has closed it: a background process the
//! step started may keep it open long after the step's program exited. So once the
//! program is gone the supervisor sets a drain deadline, and reading stops there.
use std::io;

use agentfleet_common::proto::LogStream;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::events::{EventSink, SinkMsg};

/// Longest line forwarded in one piece, in bytes.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// A message of lines is sent once it holds this many bytes (or the read ran dry). With
/// the sink's capacity of `SINK_CAPACITY` messages this bounds what waits for the journal.
const MAX_GROUP_BYTES: usize = 8 * 1024;

/// Lines read but not yet sent.
struct Pending<'a> {
    sink: &'a EventSink,
    step_id: u32,
    stream: LogStream,
    lines: Vec<SinkMsg>,
    bytes: usize,
}

impl<'a> Pending<'a> {
    fn new(sink: &'a EventSink, step_id: u32, stream: LogStream) -> Self {
        Self {
            sink,
            step_id,
            stream,
            lines: Vec::new(),
            bytes: 0,
        }
    }

    async fn push(&mut self, text: String) {
        self.bytes += text.len() + 16;
        self.lines
            .push(SinkMsg::log_now(self.step_id, self.stream, text, 0));
        if self.bytes >= MAX_GROUP_BYTES {
            self.send().await;
        }
    }

    async fn send(&mut self) {
        self.bytes = 0;
        self.sink.group(std::mem::take(&mut self.lines)).await;
    }
}

/// How the reading of one pipe ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// End of file: every writer closed the pipe.
    Eof,
    /// The drain deadline passed while the pipe was still open.
    GaveUp,
    /// Reading failed (rare: the pipe itself broke).
    Failed(io::Error),
}

/// When to stop reading: unset while the program runs, set once it has exited.
#[derive(Debug, Clone)]
pub(crate) struct DrainDeadline(watch::Receiver<Option<Instant>>);

impl DrainDeadline {
    /// A deadline and the handle that sets it.
    pub(crate) fn new() -> (watch::Sender<Option<Instant>>, Self) {
        let (tx, rx) = watch::channel(None);
        (tx, Self(rx))
    }

    async fn passed(&mut self) {
        let deadline = match self.0.wait_for(Option::is_some).await {
            Ok(deadline) => *deadline,
            // The supervisor went away without setting one: no deadline.
            Err(_) => None,
        };
        match deadline {
            Some(deadline) => sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }
}

/// Forwards every line of `pipe` to `sink` as step `step_id`'s `stream`.
pub(crate) async fn forward_lines<R: AsyncRead + Unpin>(
    pipe: R,
    step_id: u32,
    stream: LogStream,
    sink: &EventSink,
    mut drain: DrainDeadline,
) -> ReadEnd {
    let mut reader = BufReader::with_capacity(MAX_LINE, pipe);
    let mut line: Vec<u8> = Vec::new();
    let mut pending = Pending::new(sink, step_id, stream);
    loop {
        if reader.buffer().is_empty() {
            // The next read may wait: what was read goes now.
            pending.send().await;
        }
        let room = MAX_LINE - line.len();
        let (taken, complete) = {
            // Lines already buffered need no wait: only a read that may block also watches
            // the drain deadline (a select per line cost more than the line itself).
            let buf = if !reader.buffer().is_empty() {
                reader.buffer()
            } else {
                tokio::select! {
                biased;
                () = drain.passed() => {
                    flush(&mut line, &mut pending).await;
                    return ReadEnd::GaveUp;
                }
                read = reader.fill_buf() => match read {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        flush(&mut line, &mut pending).await;
                        return ReadEnd::Failed(e);
                    }
                },
                }
            };
            if buf.is_empty() {
                flush(&mut line, &mut pending).await;
                return ReadEnd::Eof;
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i <= room => {
                    line.extend_from_slice(&buf[..i]);
                    (i + 1, true)
                }
                // Full, and more of the same line follows: cut here (not earlier, so that
                // a line of exactly MAX_LINE bytes stays one line).
                _ if room == 0 => (0, false),
                _ => {
                    let n = buf.len().min(room);
                    line.extend_from_slice(&buf[..n]);
                    (n, false)
                }
            }
        };
        reader.consume(taken);
        if complete {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            pending.push(to_text(std::mem::take(&mut line))).await;
        } else if line.len() == MAX_LINE && taken == 0 {
            let cut = char_boundary(&line);
            let rest = line.split_off(cut);
            pending
                .push(to_text(std::mem::replace(&mut line, rest)))
                .await;
        }
    }
}

/// Sends what was read, with what is left of a last line without "\n".
async fn flush(line: &mut Vec<u8>, pending: &mut Pending<'_>) {
    if !line.is_empty() {
        pending.push(to_text(std::mem::take(line))).await;
    }
    pending.send().await;
}

fn to_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Where to cut `bytes` so that a multi-byte UTF-8 character at its end is not split:
/// before an incomplete trailing sequence, else at the end.
fn char_boundary(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // A character is at most 4 bytes: its lead byte is among the last 3 if it is incomplete.
    for back in 1..=3.min(len) {
        let b = bytes[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let needed = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needed > back { len - back } else { len };
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwards `input` as stdout of step 1 and returns the lines sent.
    async fn lines_of(input: &[u8]) -> Vec<String> {
        let (sink, mut rx) = EventSink::channel("e1");
        let (_tx, drain) = DrainDeadline::new();
        let input = input.to_vec();
        let reader = tokio::spawn(async move {
            forward_lines(&input[..], 1, LogStream::Stdout, &sink, drain).await
        });
        let mut lines = Vec::new();
        while let Some(msg) = rx.recv().await {
            let msgs = match msg {
                SinkMsg::Group(msgs) => msgs,
                other => vec![other],
            };
            for msg in msgs {
                if let SinkMsg::Log { line, .. } = msg {
                    assert_eq!(line.step_id, 1);
                    assert_eq!(line.stream, LogStream::Stdout as i32);
                    lines.push(line.line);
                }
            }
        }
        assert!(matches!(reader.await.unwrap(), ReadEnd::Eof));
        lines
    }

    #[tokio::test]
    async fn splits_lines_and_keeps_a_last_line_without_newline() {
        assert_eq!(lines_of(b"a\r\nb\n\nc").await, ["a", "b", "", "c"]);
        assert!(lines_of(b"").await.is_empty());
    }

    #[tokio::test]
    async fn replaces_invalid_utf8() {
        assert_eq!(lines_of(b"\xffabc\n").await, ["\u{fffd}abc"]);
    }

    #[tokio::test]
    async fn cuts_long_lines_at_64_kib() {
        let mut input = vec![b'a'; MAX_LINE * 2 + 10];
        input.push(b'\n');
        let lines = lines_of(&input).await;
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);

        // Exactly MAX_LINE bytes stays one line (no empty line after it).
        let mut input = vec![b'b'; MAX_LINE];
        input.extend_from_slice(b"\nnext\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
    }

    #[tokio::test]
    async fn does_not_cut_inside_a_character() {
        // "é" is 2 bytes; put it across the 64 KiB mark.
        let mut input = vec![b'a'; MAX_LINE - 1];
        input.extend_from_slice("é".as_bytes());
        input.extend_from_slice(b"z\n");
        let lines = lines_of(&input).await;
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "éz");
    }

    #[test]
    fn char_boundaries() {
        assert_eq!(char_boundary(b"abc"), 3);
        assert_eq!(char_boundary("aé".as_bytes()), 3);
        assert_eq!(char_boundary(&"aé".as_bytes()[..2]), 1);
        assert_eq!(char_boundary(&"a€".as_bytes()[..3]), 1);
        assert_eq!(char_boundary(&"a😀".as_bytes()[..4]), 1);
        assert_eq!(char_boundary("a😀".as_bytes()), 5);
    }
}
