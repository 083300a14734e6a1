//! A batch: the messages gathered from the channel while the previous batch is being
//! written, numbered and coalesced, written together with one write and one fdatasync.
use agentfleet_common::proto::{self, Event, event::Kind};

use super::{MAX_LINES_PER_EVENT, MAX_LOG_BYTES_PER_EVENT};
use crate::events::SinkMsg;

/// What the journal already holds (or a batch on its way there) that must not be
/// journaled twice.
pub(super) struct Seen {
    pub(super) started: bool,
    pub(super) history: i64,
}

/// Events gathered from the channel, ready to be written together.
pub(super) struct Batch<'a> {
    execution_id: &'a str,
    /// The seq the next event of this batch gets.
    pub(super) next_seq: u64,
    pub(super) events: Vec<Event>,
    lines: Vec<proto::LogLine>,
    lines_ts: i64,
    lines_bytes: usize,
    /// Roughly the bytes gathered (bounds the writer's memory).
    pub(super) bytes: usize,
    /// Holds the Finished event: nothing after it is journaled.
    pub(super) finished: bool,
}

impl<'a> Batch<'a> {
    pub(super) fn new(execution_id: &'a str, next_seq: u64) -> Self {
        Self {
            execution_id,
            next_seq,
            events: Vec::new(),
            lines: Vec::new(),
            lines_ts: 0,
            lines_bytes: 0,
            bytes: 0,
            finished: false,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty() && self.lines.is_empty()
    }

    /// Adds a non-log event.
    pub(super) fn push_event(&mut self, ts_ms: i64, kind: Kind) {
        self.flush_lines();
        self.bytes += 64;
        self.finished |= matches!(kind, Kind::Finished(_));
        self.events.push(Event {
            execution_id: self.execution_id.to_owned(),
            seq: self.next_seq,
            ts_ms,
            kind: Some(kind),
        });
        self.next_seq += 1;
    }

    /// Adds one message; a second Started event and events of history rows already
    /// journaled (see the writer's module docs) are dropped.
    pub(super) fn push(&mut self, msg: SinkMsg, seen: &mut Seen) {
        let floor = seen.history;
        self.push_above(msg, seen, floor);
    }

    /// `push`, dropping history-row events at or below `floor` (the position before the
    /// message: the lines of one row share its id).
    fn push_above(&mut self, msg: SinkMsg, seen: &mut Seen, floor: i64) {
        let tag = match &msg {
            SinkMsg::Event {
                kind: Kind::StepFinished(s),
                ..
            } => s.sql_instance_id,
            SinkMsg::Log { line, .. } => line.sql_instance_id,
            _ => 0,
        };
        if tag > 0 {
            if tag <= floor {
                return;
            }
            seen.history = seen.history.max(tag);
        }
        match msg {
            SinkMsg::Group(msgs) => {
                for m in msgs {
                    self.push_above(m, seen, floor);
                }
            }
            SinkMsg::Event {
                kind: Kind::Started(_),
                ..
            } if seen.started => {}
            SinkMsg::Log { ts_ms, line } => {
                if self.lines.is_empty() {
                    self.lines_ts = ts_ms;
                }
                self.lines_bytes += line.line.len();
                self.bytes += line.line.len() + 8;
                self.lines.push(line);
                if self.lines.len() >= MAX_LINES_PER_EVENT
                    || self.lines_bytes >= MAX_LOG_BYTES_PER_EVENT
                {
                    self.flush_lines();
                }
            }
            SinkMsg::Event { ts_ms, kind } => {
                seen.started |= matches!(kind, Kind::Started(_));
                self.push_event(ts_ms, kind);
            }
        }
    }

    /// Turns the lines gathered since the last event into one `Logs` event.
    pub(super) fn flush_lines(&mut self) {
        if self.lines.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        let ts = self.lines_ts;
        self.lines_bytes = 0;
        self.events.push(Event {
            execution_id: self.execution_id.to_owned(),
            seq: self.next_seq,
            ts_ms: ts,
            kind: Some(Kind::Logs(proto::Logs { lines })),
        });
        self.next_seq += 1;
    }
}
