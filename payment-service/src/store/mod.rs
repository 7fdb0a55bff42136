//! Storage: the one small interface the rest of the code uses to keep orders,
//! their status changes (with the outbox event written in the same transaction),
//! received notifications and anomalies. Postgres implements it today; anything
//! else (SQLite for the embedded default) implements the same trait and passes the
//! same suite in `store::suite`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    EventSource, IdempotencyKey, NewOrder, Order, OrderEvent, OrderStatus, OutTradeNo,
};

mod columns;
pub mod postgres;
pub mod sqlite;
pub mod suite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; retrying later may work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken (for example a transaction_id already used by another order).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row in the database does not make sense (bad status text, etc.).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("order not found")]
    NotFound,
}

/// What `insert_order` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted(Order),
    /// Another order already holds this idempotency key; here it is.
    KeyTaken(Order),
}

/// A requested status change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub out_trade_no: OutTradeNo,
    pub to: OrderStatus,
    pub transaction_id: Option<String>,
    pub cash_fee: Option<i64>,
    /// When the payment happened (WeChat's time_end); used for paid_at on SUCCESS.
    pub paid_at: Option<DateTime<Utc>>,
    pub source: EventSource,
}

/// What `transition` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The status changed; `event` is the outbox row written with it.
    Applied { order: Order, event: OrderEvent },
    /// The move is not allowed from the current status: nothing changed.
    Unchanged { order: Order },
}

/// A received notification, kept for audit and replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRecord {
    /// `pay`, `refund` or `cloudpay`.
    pub kind: String,
    pub out_trade_no: Option<String>,
    pub verdict: String,
    pub raw_body: Vec<u8>,
}

/// A message we refused although it looked genuine (wrong amount, unknown order, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: String,
    pub out_trade_no: Option<String>,
    pub detail: String,
}

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    pub count: i64,
    pub oldest_age: Option<Duration>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a NOTPAY order at version 1, or returns the order that already holds its key.
    async fn insert_order(&self, order: &NewOrder) -> Result<InsertOutcome, StoreError>;

    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError>;

    async fn order_by_idempotency_key(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError>;

    /// Records the prepay_id WeChat gave for an unpaid order.
    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError>;

    /// Moves an order to `t.to` if the state machine allows it from its current status,
    /// bumping `version` and writing the outbox event in the same transaction.
    /// Concurrent calls for one order make at most one change.
    async fn transition(&self, t: &Transition) -> Result<TransitionOutcome, StoreError>;

    /// Outbox events not yet published that are at least `older_than` old, oldest first.
    async fn unpublished_events(
        &self,
        older_than: Duration,
        limit: i64,
    ) -> Result<Vec<OrderEvent>, StoreError>;

    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError>;

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError>;

    async fn record_notification(&self, n: &NotificationRecord) -> Result<(), StoreError>;

    /// Keeps many notifications at once (the gateway batches the audit rows of
    /// duplicates it answered without a database read). Backends with a cheaper
    /// bulk insert override this.
    async fn record_notifications(&self, rows: &[NotificationRecord]) -> Result<(), StoreError> {
        for n in rows {
            self.record_notification(n).await?;
        }
        Ok(())
    }

    async fn record_anomaly(&self, a: &Anomaly) -> Result<(), StoreError>;

    /// Cheap liveness check for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
