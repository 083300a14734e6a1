//! Who asked a supervised execution to stop, in its Finished message.
//!
//! The sidecar cannot journal a StopJob itself: the supervisor is the execution's one
//! writer. It writes the request into the `stop` file instead ("REASON (asked by
//! CALLER)"), and the supervisor, which reads that file, passes the backend's events on
//! to its journal writer through `forward`, adding the request to the Finished message of
//! a canceled execution: "stopped: … (stop: task timeout (asked by coordinator))".
use std::sync::{Arc, OnceLock};

use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;

use crate::events::SinkMsg;

/// The stop request as read from the `stop` file, set once.
pub type StopNote = Arc<OnceLock<String>>;

/// Passes `from` on to `to` in order until `from` closes (then `to` closes too, as if
/// the backend had dropped its sink), noting the stop request in a canceled Finished.
pub async fn forward(mut from: mpsc::Receiver<SinkMsg>, to: mpsc::Sender<SinkMsg>, note: StopNote) {
    while let Some(mut msg) = from.recv().await {
        if let Some(note) = note.get() {
            add_note(&mut msg, note);
        }
        if to.send(msg).await.is_err() {
            return; // the writer is gone; nothing more can be journaled
        }
    }
}

fn add_note(msg: &mut SinkMsg, note: &str) {
    match msg {
        SinkMsg::Event {
            kind: Kind::Finished(finished),
            ..
        } if finished.outcome == proto::Outcome::Canceled as i32 && !note.is_empty() => {
            finished.message = format!("{} (stop: {note})", finished.message);
        }
        SinkMsg::Group(msgs) => msgs.iter_mut().for_each(|m| add_note(m, note)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(outcome: proto::Outcome) -> SinkMsg {
        SinkMsg::Event {
            ts_ms: 1,
            kind: Kind::Finished(proto::Finished {
                outcome: outcome as i32,
                message: "stopped: stop requested while step `wait` was running".into(),
            }),
        }
    }

    fn message(msg: &SinkMsg) -> &str {
        match msg {
            SinkMsg::Event {
                kind: Kind::Finished(f),
                ..
            } => &f.message,
            other => panic!("not Finished: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_canceled_finish_says_who_asked_to_stop() {
        let (tx, from) = mpsc::channel(8);
        let (to, mut rx) = mpsc::channel(8);
        let note = StopNote::default();
        let forwarder = tokio::spawn(forward(from, to, note.clone()));
        tx.send(finished(proto::Outcome::Succeeded)).await.unwrap();
        let _ = note.set("task timeout (asked by coordinator)".into());
        tx.send(finished(proto::Outcome::Succeeded)).await.unwrap();
        tx.send(finished(proto::Outcome::Canceled)).await.unwrap();
        drop(tx);
        forwarder.await.unwrap();
        let first = rx.recv().await.unwrap();
        assert!(!message(&first).contains("stop:"), "{first:?}");
        let second = rx.recv().await.unwrap();
        assert!(
            !message(&second).contains("stop:"),
            "only a canceled end: {second:?}"
        );
        let third = rx.recv().await.unwrap();
        assert_eq!(
            message(&third),
            "stopped: stop requested while step `wait` was running (stop: task timeout (asked by coordinator))"
        );
        // `from` closed: so is `to`, as when a backend drops its sink.
        assert!(rx.recv().await.is_none());
    }
}
