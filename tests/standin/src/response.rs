//! What a request produces (result sets, messages, pauses, faults) and how that becomes a token
//! stream for a SQL batch or an RPC.

use std::time::Duration;

use crate::tds::tokens::{self, Column, ServerMessage, done};
use crate::tds::values::{SqlType, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Value>>,
}

impl ResultSet {
    pub fn new(columns: Vec<Column>) -> Self {
        Self {
            columns,
            rows: Vec::new(),
        }
    }
    pub fn row(mut self, values: Vec<Value>) -> Self {
        self.rows.push(values);
        self
    }
}

/// One element of a reply, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    ResultSet(ResultSet),
    /// ERROR (class > 10) or INFO token; an error also ends its statement with DONE_ERROR.
    Message(ServerMessage),
    /// A statement that reports rows affected without a result set.
    RowCount(u64),
    /// Sends what is ready (without EOM) and waits; an ATTENTION during the wait ends the reply.
    Pause(Duration),
    /// Sends what is ready (without EOM) and waits for an ATTENTION.
    HoldUntilAttention,
    /// Sends what is ready (whole packets, no EOM) and closes the connection.
    Disconnect,
}

/// The whole answer to one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reply {
    pub items: Vec<Item>,
    /// `SET NOCOUNT ON`: DONE tokens carry no row count.
    pub nocount: bool,
    /// RETURNSTATUS of an RPC.
    pub return_status: i32,
    /// OUTPUT parameters of a named RPC: (ordinal, name, type, value).
    pub outputs: Vec<(u16, String, SqlType, Value)>,
}

impl Reply {
    pub fn error(m: ServerMessage) -> Self {
        Self {
            items: vec![Item::Message(m)],
            ..Self::default()
        }
    }
    pub fn with(items: Vec<Item>) -> Self {
        Self {
            items,
            ..Self::default()
        }
    }
}

/// Request shape decides the DONE flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// SQL batch: DONE per statement, the last without MORE.
    Batch,
    /// RPC: DONEINPROC per statement, then RETURNVALUEs, RETURNSTATUS and DONEPROC.
    Rpc,
}

/// Encoded reply pieces for the connection writer.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    Tokens(Vec<u8>),
    Pause(Duration),
    Hold,
    Disconnect,
}

struct Encoder {
    flavour: Flavour,
    nocount: bool,
    chunks: Vec<Chunk>,
    buf: Vec<u8>,
    /// Offset in `buf` of the status of the last batch DONE, while nothing follows it.
    last_done: Option<usize>,
    had_error: bool,
}

impl Encoder {
    fn statement_done(&mut self, status: u16, curcmd: u16, rows: u64) {
        let token = match self.flavour {
            Flavour::Batch => tokens::DONE,
            Flavour::Rpc => tokens::DONEINPROC,
        };
        let count = if self.nocount || status & done::ERROR != 0 {
            0
        } else {
            done::COUNT
        };
        let pos = self.buf.len() + 1;
        tokens::put_done(
            token,
            status | count | done::MORE,
            curcmd,
            rows,
            &mut self.buf,
        );
        self.last_done = Some(pos);
    }

    fn cut(&mut self, c: Chunk) {
        if !self.buf.is_empty() {
            self.chunks
                .push(Chunk::Tokens(std::mem::take(&mut self.buf)));
        }
        self.chunks.push(c);
        self.last_done = None;
    }
}

pub fn encode(reply: &Reply, flavour: Flavour) -> Vec<Chunk> {
    let mut e = Encoder {
        flavour,
        nocount: reply.nocount,
        chunks: Vec::new(),
        buf: Vec::new(),
        last_done: None,
        had_error: false,
    };
    for item in &reply.items {
        match item {
            Item::ResultSet(rs) => {
                let mut b = Vec::new();
                tokens::put_colmetadata(&rs.columns, &mut b);
                let mut failure = None;
                for r in &rs.rows {
                    if let Err(err) = tokens::put_row(&rs.columns, r, &mut b) {
                        failure = Some(err);
                        break;
                    }
                }
                if let Some(err) = failure {
                    // A bug in the stand-in: say so instead of sending a malformed row.
                    let m = ServerMessage::new(
                        50000,
                        16,
                        format!("sqlagent-standin: internal error: {err}"),
                    );
                    tokens::put_message(&m, &mut e.buf);
                    e.had_error = true;
                    e.statement_done(done::ERROR, 0, 0);
                    continue;
                }
                e.buf.extend(b);
                e.statement_done(0, tokens::CURCMD_SELECT, rs.rows.len() as u64);
            }
            Item::Message(m) => {
                tokens::put_message(m, &mut e.buf);
                if m.is_error() {
                    e.had_error = true;
                    e.statement_done(done::ERROR, 0, 0);
                } else {
                    e.last_done = None;
                }
            }
            Item::RowCount(n) => e.statement_done(0, 0, *n),
            Item::Pause(d) => e.cut(Chunk::Pause(*d)),
            Item::HoldUntilAttention => e.cut(Chunk::Hold),
            Item::Disconnect => {
                e.cut(Chunk::Disconnect);
                return e.chunks;
            }
        }
    }
    let final_status = if e.had_error {
        done::ERROR
    } else {
        done::FINAL
    };
    match flavour {
        Flavour::Batch => match e.last_done {
            // The last statement's DONE ends the batch: clear its MORE bit.
            Some(pos) if pos + 12 == e.buf.len() => e.buf[pos] &= !(done::MORE as u8),
            _ => tokens::put_done(tokens::DONE, final_status, 0, 0, &mut e.buf),
        },
        Flavour::Rpc => {
            for (ordinal, name, ty, v) in &reply.outputs {
                if let Err(err) = tokens::put_return_value(*ordinal, name, *ty, v, &mut e.buf) {
                    tracing::error!(%err, "bad OUTPUT parameter value");
                }
            }
            tokens::put_return_status(reply.return_status, &mut e.buf);
            tokens::put_done(tokens::DONEPROC, final_status, 0, 0, &mut e.buf);
        }
    }
    if !e.buf.is_empty() {
        e.chunks.push(Chunk::Tokens(e.buf));
    }
    e.chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_int(v: i32) -> Item {
        Item::ResultSet(
            ResultSet::new(vec![Column::new("x", SqlType::Int)]).row(vec![Value::Int(v)]),
        )
    }

    fn tokens_of(chunks: &[Chunk]) -> Vec<u8> {
        match chunks {
            [Chunk::Tokens(t)] => t.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batch_last_done_has_no_more_bit() {
        let t = tokens_of(&encode(
            &Reply::with(vec![one_int(1), Item::RowCount(2)]),
            Flavour::Batch,
        ));
        let n = t.len();
        assert_eq!(&t[n - 13..n - 8], &[0xFD, 0x10, 0x00, 0x00, 0x00]);
        assert_eq!(t[n - 5 - 8 - 13..][..3], [0xFD, 0x11, 0x00]);
    }

    #[test]
    fn rpc_ends_with_returnstatus_and_doneproc() {
        let mut r = Reply::with(vec![one_int(1)]);
        r.nocount = true;
        let t = tokens_of(&encode(&r, Flavour::Rpc));
        let n = t.len();
        assert_eq!(&t[n - 13..n - 10], &[0xFE, 0x00, 0x00]);
        assert_eq!(&t[n - 18..n - 13], &[0x79, 0, 0, 0, 0]);
        assert_eq!(&t[n - 31..n - 28], &[0xFF, 0x01, 0x00]); // DONEINPROC MORE, no COUNT
    }

    #[test]
    fn error_sets_done_error_and_pause_cuts() {
        let r = Reply::with(vec![
            one_int(1),
            Item::Pause(Duration::from_millis(1)),
            Item::Message(ServerMessage::new(1, 16, "x")),
        ]);
        let c = encode(&r, Flavour::Batch);
        assert_eq!(c.len(), 3);
        assert_eq!(c[1], Chunk::Pause(Duration::from_millis(1)));
        let Chunk::Tokens(t) = &c[2] else { panic!() };
        assert_eq!(t[0], 0xAA);
        assert_eq!(&t[t.len() - 13..t.len() - 10], &[0xFD, 0x02, 0x00]);
    }
}
