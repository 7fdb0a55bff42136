//! Where the gateway keeps every notification it receives. Refused messages
//! are kept synchronously, before the reply. Payments applied (or found
//! already applied) are durable in their order row and event before the
//! reply, so their audit copies are kept in batches by a background writer,
//! and neither a payment nor WeChat's resends cost a round trip for them; the
//! batch is flushed at shutdown, and when the writer falls behind a row is
//! written synchronously instead. A crash loses at most the batch in memory:
//! copies of messages whose effect is already committed.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};
use wxpay_store::{NotificationRecord, Store};

enum Msg {
    Row(NotificationRecord),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    tx: mpsc::Sender<Msg>,
}

const QUEUE: usize = 8192;
const BATCH: usize = 512;

impl AuditLog {
    /// Starts the background writer (needs a Tokio runtime).
    pub fn spawn(store: Arc<dyn Store>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(store.clone(), rx));
        Self { store, tx }
    }

    /// Keeps `row` now, before the caller replies.
    pub async fn keep(&self, row: NotificationRecord) {
        if let Err(e) = self.store.record_notification(&row).await {
            tracing::warn!(out_trade_no = row.out_trade_no.as_deref(), verdict = %row.verdict, error = %e, "could not keep the notification");
        }
    }

    /// Keeps `row` in the next batch; synchronously if the queue is full.
    pub async fn keep_batched(&self, row: NotificationRecord) {
        match self.tx.try_send(Msg::Row(row)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Msg::Row(row)))
            | Err(mpsc::error::TrySendError::Closed(Msg::Row(row))) => self.keep(row).await,
            Err(_) => {}
        }
    }

    /// Waits until everything queued before this call is written (or given up on).
    pub async fn flush(&self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Msg>) {
    let mut rows = Vec::with_capacity(BATCH);
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Row(r) => rows.push(r),
                Msg::Flush(w) => waiters.push(w),
            }
            if rows.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        write(store.as_ref(), &mut rows).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

/// Writes a batch, retrying a few times while the database is away; the rows
/// only copy payments already stored, so after that they are logged and let
/// go rather than holding memory forever.
async fn write(store: &dyn Store, rows: &mut Vec<NotificationRecord>) {
    if rows.is_empty() {
        return;
    }
    for attempt in 0..5u32 {
        match store.record_notifications(rows).await {
            Ok(()) => {
                rows.clear();
                return;
            }
            Err(e) => {
                tracing::warn!(rows = rows.len(), attempt, error = %e, "could not keep duplicate notifications; retrying");
                tokio::time::sleep(Duration::from_millis(200) * 2u32.pow(attempt)).await;
            }
        }
    }
    tracing::error!(rows = rows.len(), "gave up keeping duplicate notifications");
    rows.clear();
}
