//! A [`Store`] decorator that counts the calls each service makes, so "database
//! queries per watcher per second" is exact per service instead of inferred from
//! Postgres' statistics (which backends flush at most once a second, and idle
//! ones up to 10 s late). Every call is one statement, except the rare fallbacks
//! inside `insert_order` (key taken) and `transition` (unchanged), which add one;
//! `record_notifications` (a batch of audit rows) is one call.
//! It also sums the wall-clock time spent inside store calls (pool wait included),
//! which splits a request's latency into "in the database" and "everything else".

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wxpay_core::domain::{
    Caller, IdempotencyKey, NewOrder, NewRefund, Order, OrderEvent, OutRefundNo, OutTradeNo, Refund,
};
use wxpay_store::{
    Anomaly, DueOrder, DueRefund, InsertOutcome, NotificationRecord, OutboxBacklog,
    PlatformCertificate, RefundOutcome, RefundPlacement, RefundUpdate, Store, StoreError,
    Transition, TransitionOutcome,
};

/// Calls made and nanoseconds spent inside them, shared and readable while in use.
#[derive(Default, Debug)]
pub struct Tally {
    pub calls: AtomicU64,
    pub nanos: AtomicU64,
}

impl Tally {
    /// (calls, time inside the calls) so far.
    pub fn read(&self) -> (u64, Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }
}

#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<dyn Store>,
    tally: Arc<Tally>,
}

/// Counts one call on creation and adds its duration on drop (also when the call's future is dropped).
struct Timed<'a> {
    tally: &'a Tally,
    start: Instant,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.tally.nanos.fetch_add(ns, Ordering::Relaxed);
    }
}

impl CountingStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self::with_tally(inner, Arc::new(Tally::default()))
    }

    /// Counts into `tally`, which the caller already holds.
    pub fn with_tally(inner: Arc<dyn Store>, tally: Arc<Tally>) -> Self {
        Self { inner, tally }
    }

    /// A shared handle on the counts, readable while the store is in use.
    pub fn counter(&self) -> Arc<Tally> {
        self.tally.clone()
    }

    fn tick(&self) -> Timed<'_> {
        self.tally.calls.fetch_add(1, Ordering::Relaxed);
        Timed {
            tally: &self.tally,
            start: Instant::now(),
        }
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn insert_order(&self, order: &NewOrder) -> Result<InsertOutcome, StoreError> {
        let _t = self.tick();
        self.inner.insert_order(order).await
    }
    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError> {
        let _t = self.tick();
        self.inner.order(out_trade_no).await
    }
    async fn orders(&self, out_trade_nos: &[OutTradeNo]) -> Result<Vec<Order>, StoreError> {
        let _t = self.tick();
        self.inner.orders(out_trade_nos).await
    }
    async fn order_by_idempotency_key(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError> {
        let _t = self.tick();
        self.inner.order_by_idempotency_key(caller, key).await
    }
    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        pay_url: Option<&str>,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError> {
        let _t = self.tick();
        self.inner
            .set_prepay(out_trade_no, prepay_id, pay_url, prepay_expires_at)
            .await
    }
    async fn insert_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError> {
        let _t = self.tick();
        self.inner.insert_refund(r).await
    }
    async fn refund(&self, no: &OutRefundNo) -> Result<Option<Refund>, StoreError> {
        let _t = self.tick();
        self.inner.refund(no).await
    }
    async fn refunds_of(&self, no: &OutTradeNo) -> Result<Vec<Refund>, StoreError> {
        let _t = self.tick();
        self.inner.refunds_of(no).await
    }
    async fn update_refund(&self, u: &RefundUpdate) -> Result<RefundOutcome, StoreError> {
        let _t = self.tick();
        self.inner.update_refund(u).await
    }
    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueRefund>, StoreError> {
        let _t = self.tick();
        self.inner
            .claim_due_refunds(now, created_before, limit, claim_until)
            .await
    }
    async fn schedule_refund_check(
        &self,
        no: &OutRefundNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.schedule_refund_check(no, at).await
    }
    async fn orders_paid_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Order>, StoreError> {
        let _t = self.tick();
        self.inner.orders_paid_between(from, to).await
    }
    async fn refunds_succeeded_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Refund>, StoreError> {
        let _t = self.tick();
        self.inner.refunds_succeeded_between(from, to).await
    }
    async fn bill_report(
        &self,
        day: chrono::NaiveDate,
    ) -> Result<Option<wxpay_core::domain::BillReport>, StoreError> {
        let _t = self.tick();
        self.inner.bill_report(day).await
    }
    async fn save_bill_report(
        &self,
        report: &wxpay_core::domain::BillReport,
    ) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.save_bill_report(report).await
    }
    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let _t = self.tick();
        self.inner.transition(t).await
    }
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueOrder>, StoreError> {
        let _t = self.tick();
        self.inner
            .claim_due(now, created_before, limit, claim_until)
            .await
    }
    async fn schedule_check(
        &self,
        out_trade_no: &OutTradeNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.schedule_check(out_trade_no, at).await
    }
    async fn purge_before(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError> {
        let _t = self.tick();
        self.inner.purge_before(before, limit).await
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError> {
        let _t = self.tick();
        self.inner.try_lease(name, holder, ttl).await
    }
    async fn unpublished_events(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<OrderEvent>, StoreError> {
        let _t = self.tick();
        self.inner.unpublished_events(older_than, limit).await
    }
    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
        let _t = (!ids.is_empty()).then(|| self.tick());
        self.inner.mark_published(ids).await
    }
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let _t = self.tick();
        self.inner.outbox_backlog().await
    }
    async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.record_notification(n).await
    }
    /// Forwarded whole (one bulk statement in PgStore), not through the trait's
    /// row-by-row default, so the benchmark measures the backend's own path.
    async fn record_notifications(&self, rows: &[NotificationRecord]) -> Result<(), StoreError> {
        let _t = (!rows.is_empty()).then(|| self.tick());
        self.inner.record_notifications(rows).await
    }
    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.record_anomaly(a).await
    }
    async fn platform_certificates(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlatformCertificate>, StoreError> {
        let _t = self.tick();
        self.inner.platform_certificates(mch_id, now).await
    }
    async fn save_platform_certificates(
        &self,
        mch_id: &str,
        certs: &[PlatformCertificate],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner
            .save_platform_certificates(mch_id, certs, now)
            .await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        let _t = self.tick();
        self.inner.ping().await
    }
}
