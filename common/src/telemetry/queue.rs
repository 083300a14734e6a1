//! The bounded export queue every exported signal goes through (spans, log records): the
//! producer never waits; what does not fit, or what the collector does not take, is
//! dropped and counted. The exporter task runs on the telemetry runtime.
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

/// Items waiting for export, per signal; beyond this they are dropped and counted.
pub const QUEUE: usize = 4096;
/// Most items in one export request.
const MAX_BATCH: usize = 512;

/// Sends a batch to the collector; true when it was taken.
pub(crate) trait BatchSink<T>: Send + Sync + 'static {
    fn export(&self, batch: Vec<T>) -> impl Future<Output = bool> + Send;
}

/// The bounded queue of one signal and its exporter task.
pub(crate) struct ExportQueue<T> {
    tx: mpsc::Sender<T>,
    /// Flush requests: rare control messages, so unbounded; each carries its reply.
    pub(crate) flush: mpsc::UnboundedSender<std::sync::mpsc::Sender<()>>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// What the first drop's warning calls the items ("spans", "log records").
    what: &'static str,
}

impl<T: Send + 'static> ExportQueue<T> {
    pub(crate) fn spawn<S: BatchSink<T>>(
        runtime: &tokio::runtime::Handle,
        sink: S,
        what: &'static str,
        timeout: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (flush, flush_rx) = mpsc::unbounded_channel();
        let dropped = Arc::new(AtomicU64::new(0));
        runtime.spawn(export_loop(sink, rx, flush_rx, dropped.clone(), timeout));
        Self {
            tx,
            flush,
            dropped,
            what,
        }
    }

    /// Queues `item`, or drops and counts it when the queue is full.
    pub(crate) fn push(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            let before = self.dropped.fetch_add(1, Ordering::Relaxed);
            if before == 0 {
                tracing::warn!(
                    "telemetry: {} queue full; dropping {} (counted)",
                    self.what,
                    self.what
                );
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Asks for everything queued so far to be exported; returns the reply channel.
    pub(crate) fn request_flush(&self) -> Option<std::sync::mpsc::Receiver<()>> {
        let (done, wait) = std::sync::mpsc::channel();
        self.flush.send(done).ok().map(|()| wait)
    }
}

/// Exports whatever is queued as soon as it is there (batches form while an export is in
/// flight); answers flush requests after exporting everything queued before them.
async fn export_loop<T, S: BatchSink<T>>(
    sink: S,
    mut rx: mpsc::Receiver<T>,
    mut flush: mpsc::UnboundedReceiver<std::sync::mpsc::Sender<()>>,
    dropped: Arc<AtomicU64>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        tokio::select! {
            biased;
            Some(done) = flush.recv() => {
                while let Ok(item) = rx.try_recv() {
                    batch.push(item);
                    if batch.len() >= MAX_BATCH {
                        export(&sink, &mut batch, &dropped, timeout).await;
                    }
                }
                export(&sink, &mut batch, &dropped, timeout).await;
                let _ = done.send(());
            }
            n = rx.recv_many(&mut batch, MAX_BATCH) => {
                if n == 0 {
                    return;
                }
                export(&sink, &mut batch, &dropped, timeout).await;
            }
        }
    }
}

async fn export<T, S: BatchSink<T>>(
    sink: &S,
    batch: &mut Vec<T>,
    dropped: &AtomicU64,
    timeout: Duration,
) {
    if batch.is_empty() {
        return;
    }
    let items = std::mem::take(batch);
    let count = items.len() as u64;
    let ok = matches!(
        tokio::time::timeout(timeout + Duration::from_secs(1), sink.export(items)).await,
        Ok(true)
    );
    if !ok {
        let before = dropped.fetch_add(count, Ordering::Relaxed);
        tracing::debug!(count, dropped_before = before, "telemetry: export failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u64>>>, bool);

    impl BatchSink<u64> for Collect {
        async fn export(&self, batch: Vec<u64>) -> bool {
            if self.1 {
                return false;
            }
            self.0.lock().unwrap().extend(batch);
            true
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    fn flush<T: Send + 'static>(queue: &ExportQueue<T>) {
        let wait = queue.request_flush().unwrap();
        wait.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn exports_and_flushes() {
        let rt = runtime();
        let sink = Collect::default();
        let queue = ExportQueue::spawn(rt.handle(), sink.clone(), "items", Duration::from_secs(5));
        (1..=1000).for_each(|n| queue.push(n));
        flush(&queue);
        assert_eq!(sink.0.lock().unwrap().len(), 1000);
        assert_eq!(queue.dropped(), 0);
    }

    #[test]
    fn a_failing_collector_drops_and_counts() {
        let rt = runtime();
        let sink = Collect(Default::default(), true);
        let queue = ExportQueue::spawn(rt.handle(), sink, "items", Duration::from_secs(5));
        (1..=10).for_each(|n| queue.push(n));
        flush(&queue);
        assert_eq!(queue.dropped(), 10);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let rt = runtime();
        // An exporter that never finishes: the queue fills behind it.
        struct Stuck;
        impl BatchSink<u64> for Stuck {
            async fn export(&self, _batch: Vec<u64>) -> bool {
                std::future::pending::<bool>().await
            }
        }
        let queue = ExportQueue::spawn(rt.handle(), Stuck, "items", Duration::from_secs(3600));
        let pushed = (QUEUE + MAX_BATCH + 100) as u64;
        (0..pushed).for_each(|n| queue.push(n));
        assert!(queue.dropped() >= 100, "dropped {}", queue.dropped());
    }
}
