//! A [`Store`] decorator that counts the calls each service makes, so "database
//! queries per watcher per second" is exact per service instead of inferred from
//! Postgres' statistics (which backends flush at most once a second, and idle
//! ones up to 10 s late). Every call is one statement, except the rare fallbacks
//! inside `insert_order` (key taken) and `transition` (unchanged), which add one.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payment_service::{
    domain::{IdempotencyKey, NewOrder, Order, OrderEvent, OutTradeNo},
    store::{
        Anomaly, InsertOutcome, NotificationRecord, OutboxBacklog, Store, StoreError, Transition,
        TransitionOutcome,
    },
};

#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    calls: Arc<AtomicU64>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A shared handle on the counter, readable while the store is in use.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.calls.clone()
    }

    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn insert_order(&self, order: &NewOrder) -> Result<InsertOutcome, StoreError> {
        self.tick();
        self.inner.insert_order(order).await
    }
    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        self.tick();
        self.inner.order(out_trade_no).await
    }
    async fn order_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError> {
        self.tick();
        self.inner.order_by_idempotency_key(key).await
    }
    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        self.tick();
        self.inner
            .set_prepay(out_trade_no, prepay_id, prepay_expires_at)
            .await
    }
    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        self.tick();
        self.inner.transition(t).await
    }
    async fn unpublished_events(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        self.tick();
        self.inner.unpublished_events(older_than, limit).await
    }
    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        if !ids.is_empty() {
            self.tick();
        }
        self.inner.mark_published(ids).await
    }
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        self.tick();
        self.inner.outbox_backlog().await
    }
    async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError> {
        self.tick();
        self.inner.record_notification(n).await
    }
    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
        self.tick();
        self.inner.record_anomaly(a).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.tick();
        self.inner.ping().await
    }
}
