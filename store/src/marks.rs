//! Batching of the outbox's `published_at` marks after a direct publish. A
//! mark only stops the relay from sending an event again (watchers drop a
//! duplicate by version), so it need not be written before anything else
//! happens: a background writer takes every mark waiting and writes them in
//! one statement. Under load that is one UPDATE for hundreds of events instead
//! of one each; when idle the first mark is written at once, so the relay
//! rarely sees an event that was already sent. A lost batch (the database away
//! for the writer's few retries, or a crash) costs a republish, never an event.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::Store;

/// Marks per statement: enough to keep up with thousands of events a second
/// in one round trip, small enough that one statement stays short.
const BATCH: usize = 512;
/// Marks waiting at most; beyond it a mark is written by its own publish task.
const QUEUE: usize = 8192;

enum Msg {
    Mark(i64),
    Flush(oneshot::Sender<()>),
}

/// A handle on the writer, started on first use (it needs a Tokio runtime,
/// which a [`crate::Ledger`] being built may not be inside yet). Cheap to clone.
#[derive(Clone)]
pub(crate) struct PublishedMarks {
    store: Arc<dyn Store>,
    writer: Arc<OnceCell<mpsc::Sender<Msg>>>,
}

impl PublishedMarks {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            writer: Arc::new(OnceCell::new()),
        }
    }

    async fn writer(&self) -> &mpsc::Sender<Msg> {
        self.writer
            .get_or_init(|| async {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write_marks(self.store.clone(), rx));
                tx
            })
            .await
    }

    /// Marks `id` published in the next batch (now, when the writer is far behind).
    pub(crate) async fn mark(&self, id: i64) {
        match self.writer().await.try_send(Msg::Mark(id)) {
            Ok(()) => {}
            Err(_) => mark_now(self.store.as_ref(), &[id]).await,
        }
    }

    /// Waits until every mark queued before this call is written or given up on.
    pub(crate) async fn flush(&self) {
        let Some(tx) = self.writer.get() else {
            return; // nothing was ever marked
        };
        let (done, wait) = oneshot::channel();
        if tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write_marks(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut ids = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Mark(id) => ids.push(id),
                Msg::Flush(w) => waiters.push(w),
            }
            if ids.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !ids.is_empty() {
            write_batch(store.as_ref(), &ids).await;
            ids.clear();
        }
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// A few quick retries, then the batch is let go: the relay sends those
/// events again, which is what an unmarked event means.
async fn write_batch(store: &dyn Store, ids: &[i64]) {
    for attempt in 0..3u32 {
        match store.mark_published(ids).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(events = ids.len(), attempt, error = %e, "could not mark events published; retrying");
                tokio::time::sleep(Duration::from_millis(100) * 2u32.pow(attempt)).await;
            }
        }
    }
    tracing::warn!(
        events = ids.len(),
        "left events unmarked; the relay will publish them again"
    );
}

async fn mark_now(store: &dyn Store, ids: &[i64]) {
    if let Err(e) = store.mark_published(ids).await {
        // Harmless: the relay will publish it again and watchers drop the duplicate.
        tracing::warn!(error = %e, "could not mark event published");
    }
}
