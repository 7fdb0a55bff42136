//! The order reads of the poller, batched: every stream that opens (and every
//! re-read after the feed reconnects, and every event the feed confirms, see
//! [`crate::confirm`]) needs its order's row, and thousands of
//! them a second as one-row SELECTs cost Postgres more than everything else the
//! poller does. Reads queue here and go out as one `orders` call per batch, a
//! few batches at a time; a lone read goes out at once, with no wait to fill a
//! batch.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};
use wxpay_core::domain::{Order, OutTradeNo};
use wxpay_store::{Store, StoreError};

/// Reads per statement, at most.
const BATCH: usize = 256;
/// Statements in flight at once; while they run, the next batch fills.
const IN_FLIGHT: usize = 4;

/// The handle watchers read through. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Snapshots {
    asks: mpsc::UnboundedSender<Ask>,
}

struct Ask {
    out_trade_no: OutTradeNo,
    reply: oneshot::Sender<Result<Option<Order>, StoreError>>,
}

impl Snapshots {
    /// Starts the batching task (inside the runtime).
    pub(crate) fn start(store: Arc<dyn Store>) -> Self {
        let (asks, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { asks }
    }

    /// The order's row now, as `Store::order` would read it.
    pub(crate) async fn order(
        &self,
        out_trade_no: &OutTradeNo,
    ) -> Result<Option<Order>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.asks
            .send(Ask {
                out_trade_no: out_trade_no.clone(),
                reply,
            })
            .map_err(|_| StoreError::Unavailable("the snapshot reader stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the snapshot reader stopped".into()))?
    }
}

async fn run(store: Arc<dyn Store>, mut asks: mpsc::UnboundedReceiver<Ask>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = asks.recv().await {
        // Wait for a free slot first: while every slot is busy the queue grows,
        // and the next statement takes more of it.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match asks.try_recv() {
                Ok(ask) => batch.push(ask),
                Err(_) => break,
            }
        }
        let store = store.clone();
        tokio::spawn(async move {
            answer(store.as_ref(), batch).await;
            drop(slot);
        });
    }
}

/// One statement for the batch; each ask gets its row or `None`. If the
/// statement fails, each order is read on its own, so that one bad row or a
/// passing error answers only the reads it concerns, each with its own error.
async fn answer(store: &dyn Store, batch: Vec<Ask>) {
    let mut nos: Vec<OutTradeNo> = batch.iter().map(|a| a.out_trade_no.clone()).collect();
    nos.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    nos.dedup();
    match store.orders(&nos).await {
        Ok(found) => {
            let by_no: HashMap<String, Order> = found
                .into_iter()
                .map(|o| (o.out_trade_no.to_string(), o))
                .collect();
            for ask in batch {
                let row = by_no.get(ask.out_trade_no.as_str()).cloned();
                let _ = ask.reply.send(Ok(row));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, reads = batch.len(), "batched snapshot read failed; reading one by one");
            for ask in batch {
                let _ = ask.reply.send(store.order(&ask.out_trade_no).await);
            }
        }
    }
}
