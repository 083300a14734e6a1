//! Who asked an execution to stop, in its Finished message.
//!
//! StopJob cannot append to the journal itself: each execution has one writer (its
//! supervisor's for command jobs, a task of the sidecar's for in-process backends), and
//! the Finished event is the backend's. So the request ("REASON (asked by CALLER)") is
//! noted where the writer's side can see it (the `stop` file, which the supervisor reads,
//! or the execution's entry in the registry), and the backend's events reach the writer
//! through `forward`, which adds the note to the Finished message of a canceled
//! execution: "stopped: … (stop: task timeout (asked by coordinator))".
use std::sync::{Arc, OnceLock};

use agentfleet_common::proto::{self, event::Kind};
use tokio::sync::mpsc;

use crate::events::{EventSink, SINK_CAPACITY, SinkMsg};

/// The stop request as read from the `stop` file, set once.
pub type StopNote = Arc<OnceLock<String>>;

/// A sink for the backend, and the receiver its journal writer consumes: the two ends of
/// a `forward` (spawned on `tasks`) that notes the stop request.
pub fn sink(
    execution_id: &str,
    note: &StopNote,
    tasks: &tokio_util::task::TaskTracker,
) -> (EventSink, mpsc::Receiver<SinkMsg>) {
    let (sink, from_backend) = EventSink::channel(execution_id);
    let (to_writer, rx) = mpsc::channel(SINK_CAPACITY);
    tasks.spawn(forward(from_backend, to_writer, note.clone()));
    (sink, rx)
}

/// Passes `from` on to `to` in order until `from` closes (then `to` closes too, as if
/// the backend had dropped its sink), noting the stop request in a canceled Finished.
/// Ends as soon as the writer is gone, so that the backend's sink shows it closed
/// (`EventSink::is_closed`) just as without this hop.
pub async fn forward(mut from: mpsc::Receiver<SinkMsg>, to: mpsc::Sender<SinkMsg>, note: StopNote) {
    loop {
        let mut msg = tokio::select! {
            msg = from.recv() => match msg {
                Some(msg) => msg,
                None => return,
            },
            () = to.closed() => return,
        };
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

    #[tokio::test]
    async fn the_backend_sees_the_writer_gone() {
        let (sink, rx) = sink(
            "e1",
            &StopNote::default(),
            &tokio_util::task::TaskTracker::new(),
        );
        assert!(!sink.is_closed());
        drop(rx);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !sink.is_closed() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the sink closes once the writer is gone");
    }
}
