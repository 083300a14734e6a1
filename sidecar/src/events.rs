//! The one event type a backend emits, and the sink it emits into.
//!
//! A backend never assigns sequence numbers or writes files: it sends `SinkMsg`s in
//! order over a bounded channel to the execution's journal writer, which coalesces
//! consecutive log lines into `Logs` events, numbers events, journals them durably,
//! and only then shows them to watchers.
//!
//! Overload policy: backpressure. When the writer is behind, `emit`/`log` wait; for a
//! command job that means its pipe fills and the child waits on write, rather than a
//! line being dropped. The writer only does sequential appends, so this is rare.
use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;

/// What a backend sends for one execution, in order.
#[derive(Debug)]
pub enum SinkMsg {
    /// A non-log event; `ts_ms` is when it happened (Unix ms UTC).
    Event { ts_ms: i64, kind: Kind },
    /// One log line (coalesced with its neighbours into a `Logs` event).
    Log { ts_ms: i64, line: proto::LogLine },
    /// Messages the writer journals together, in one append (never split by a crash of
    /// the sidecar between them): SQL Server Agent sends each poll's events derived from
    /// history rows as one group, so the journal holds a history row whole or not at all.
    Group(Vec<SinkMsg>),
}

impl SinkMsg {
    /// A log line that happened now (for a `Group`).
    pub fn log_now(
        step_id: u32,
        stream: proto::LogStream,
        line: String,
        sql_instance_id: i64,
    ) -> Self {
        SinkMsg::Log {
            ts_ms: agentfleet_common::now_ms(),
            line: proto::LogLine {
                step_id,
                stream: stream as i32,
                line,
                sql_instance_id,
                ..Default::default()
            },
        }
    }
}

/// Capacity of an execution's sink channel (messages, not bytes).
pub const SINK_CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
pub struct EventSink {
    execution_id: std::sync::Arc<str>,
    tx: mpsc::Sender<SinkMsg>,
}

impl EventSink {
    /// A sink and the receiving end its journal writer consumes.
    pub fn channel(execution_id: &str) -> (Self, mpsc::Receiver<SinkMsg>) {
        let (tx, rx) = mpsc::channel(SINK_CAPACITY);
        (
            Self {
                execution_id: execution_id.into(),
                tx,
            },
            rx,
        )
    }

    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// Emits an event that happened now.
    pub async fn emit(&self, kind: Kind) {
        self.emit_at(agentfleet_common::now_ms(), kind).await;
    }

    /// Emits an event that happened at `ts_ms` (e.g. learned later from SQL Agent history).
    pub async fn emit_at(&self, ts_ms: i64, kind: Kind) {
        // The writer only goes away when the sidecar is shutting down; the journal then
        // holds everything up to here, and recovery takes over after restart.
        let _ = self.tx.send(SinkMsg::Event { ts_ms, kind }).await;
    }

    /// Emits one log line.
    pub async fn log(&self, step_id: u32, stream: proto::LogStream, line: String) {
        let _ = self
            .tx
            .send(SinkMsg::log_now(step_id, stream, line, 0))
            .await;
    }

    /// Sends messages that the writer journals in one append (see `SinkMsg::Group`).
    pub async fn group(&self, msgs: Vec<SinkMsg>) {
        if !msgs.is_empty() {
            let _ = self.tx.send(SinkMsg::Group(msgs)).await;
        }
    }

    /// True once the journal writer has gone (the sidecar is shutting down).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}
