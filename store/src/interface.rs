//! The storage interface: the one small trait the rest of the code uses to keep
//! orders, their status changes (with the outbox event written in the same
//! transaction), refunds, received notifications and anomalies, WeChat Pay v3
//! platform certificates, and the types it speaks (the refund ones are in
//! [`crate::refunds`]).
//! Postgres (the split deployment) and SQLite (the embedded default) implement
//! it and pass the same suite (`suite`, behind the `testing` feature).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use wxpay_core::{
    domain::{
        BillReport, Caller, EventSource, Fee, IdempotencyKey, MerchantName, NewOrder, NewRefund,
        Order, OrderEvent, OrderStatus, OutRefundNo, OutTradeNo, Refund,
    },
    wechat::SignType,
};

use crate::refunds::{DueRefund, RefundOutcome, RefundPlacement, RefundUpdate};

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
    /// What the message asking for this move says the order is. The move is
    /// made only if the row agrees, in the same statement, so a notification
    /// needs no read of its order before the transition; when the row does
    /// not agree the outcome is `Unchanged` with the order as it is, for the
    /// caller to say which part differed.
    pub guard: Option<Guard>,
}

/// The order's fixed facts a verified message states: whose it is and how
/// much it is for. Not how it was signed: a message that verifies under its
/// merchant's key is authentic whichever of the key's algorithms (MD5,
/// HMAC-SHA256) it names, whatever the order was placed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub merchant: MerchantName,
    pub total_fee: Fee,
}

impl Guard {
    /// Whether `order` is what the guard says (the statement's own check,
    /// for a caller explaining an `Unchanged`).
    pub fn admits(&self, order: &Order) -> bool {
        order.placement.merchant == self.merchant && order.total_fee == self.total_fee
    }
}

/// What `transition` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionOutcome {
    /// The status changed from `previous`; `event` is the outbox row written with it.
    Applied {
        order: Order,
        event: OrderEvent,
        previous: OrderStatus,
    },
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
    /// The algorithm its signature verified under (payment notifications;
    /// `None` for refunds, proven by decryption, and cloud-pay callbacks,
    /// proven by the forwarder's HMAC).
    pub sign_type: Option<SignType>,
}

/// What kind of anomaly: a closed list, so a dashboard can count each and a new
/// one must be named here before it can be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// A genuine message for an order we do not have.
    UnknownOrder,
    /// A genuine payment notification whose amount is not the order's.
    AmountMismatch,
    /// orderquery reports a payment whose amount is not the order's.
    QueryAmountMismatch,
    /// A second, different transaction_id for an order already paid.
    PaymentConflict,
    /// A transaction_id already recorded on another order.
    TransactionReused,
    /// A refund notification whose amount does not fit the order.
    RefundAmountMismatch,
    /// A refund for an order we never saw paid.
    RefundBeforePayment,
    /// A refund that contradicts the order's state.
    RefundConflict,
    /// A correctly signed message for another merchant (appid or mch_id).
    WrongMerchant,
    /// A verified payment for an order that was closed or revoked here: the
    /// payment is recorded (the money is real) and someone must refund or deliver.
    PaidAfterClose,
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 10] = [
        AnomalyKind::UnknownOrder,
        AnomalyKind::AmountMismatch,
        AnomalyKind::QueryAmountMismatch,
        AnomalyKind::PaymentConflict,
        AnomalyKind::TransactionReused,
        AnomalyKind::RefundAmountMismatch,
        AnomalyKind::RefundBeforePayment,
        AnomalyKind::RefundConflict,
        AnomalyKind::WrongMerchant,
        AnomalyKind::PaidAfterClose,
    ];

    /// The name stored in `anomalies.kind` and used as the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::UnknownOrder => "unknown_order",
            AnomalyKind::AmountMismatch => "amount_mismatch",
            AnomalyKind::QueryAmountMismatch => "query_amount_mismatch",
            AnomalyKind::PaymentConflict => "payment_conflict",
            AnomalyKind::TransactionReused => "transaction_reused",
            AnomalyKind::RefundAmountMismatch => "refund_amount_mismatch",
            AnomalyKind::RefundBeforePayment => "refund_before_payment",
            AnomalyKind::RefundConflict => "refund_conflict",
            AnomalyKind::WrongMerchant => "wrong_merchant",
            AnomalyKind::PaidAfterClose => "paid_after_close",
        }
    }
}

impl std::fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message we refused although it looked genuine (wrong amount, unknown order, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    pub kind: AnomalyKind,
    pub out_trade_no: Option<String>,
    pub detail: String,
}

/// One of WeChat Pay's v3 platform certificates for a merchant account, as
/// kept after its download was decrypted and verified. The store keeps it as
/// given; reading the PEM back into a key is the caller's (wechat-v3's) job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformCertificate {
    /// The account that downloaded it (the one that signs requests).
    pub mch_id: String,
    /// Uppercase hex, as `Wechatpay-Serial` names it.
    pub serial_no: String,
    pub certificate_pem: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// When WeChat last listed it.
    pub fetched_at: DateTime<Utc>,
}

/// An unsettled order the reconciler claimed, and how many times it has been
/// claimed (this time included), which sets how long until the next question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueOrder {
    pub order: Order,
    pub attempts: u32,
}

/// How far behind the relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxBacklog {
    pub count: i64,
    pub oldest_age: Option<Duration>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a NOTPAY order at version 1, or returns the order that already
    /// holds its key for the same caller.
    async fn insert_order(&self, order: &NewOrder) -> Result<InsertOutcome, StoreError>;

    async fn order(&self, out_trade_no: &OutTradeNo) -> Result<Option<Order>, StoreError>;

    /// Those of `out_trade_nos` that exist, each once, in no particular order:
    /// many point reads in one statement (the poller's snapshot reads while
    /// streams open by the thousand). The default reads them one by one.
    async fn orders(&self, out_trade_nos: &[OutTradeNo]) -> Result<Vec<Order>, StoreError> {
        let mut found: Vec<Order> = Vec::with_capacity(out_trade_nos.len());
        for no in out_trade_nos {
            if found.iter().any(|o| &o.out_trade_no == no) {
                continue;
            }
            if let Some(order) = self.order(no).await? {
                found.push(order);
            }
        }
        Ok(found)
    }

    /// The order `caller` placed under `key` (keys are unique per caller).
    async fn order_by_idempotency_key(
        &self,
        caller: &Caller,
        key: &IdempotencyKey,
    ) -> Result<Option<Order>, StoreError>;

    /// Records the prepay_id WeChat gave, if the order is still NOTPAY; returns
    /// the order as it stands either way (a caller seeing another status must
    /// not hand out payment parameters).
    async fn set_prepay(
        &self,
        out_trade_no: &OutTradeNo,
        prepay_id: &str,
        pay_url: Option<&str>,
        prepay_expires_at: DateTime<Utc>,
    ) -> Result<Order, StoreError>;

    /// Claims up to `limit` unsettled orders (NOTPAY, USERPAYING, PAYERROR)
    /// created at or before `created_before` whose next check is due at `now`,
    /// oldest due first: each one's next check moves to `claim_until` and its
    /// attempt count goes up, in the same statement, so no other claim takes it.
    async fn claim_due(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueOrder>, StoreError>;

    /// When the reconciler should next look at an order.
    async fn schedule_check(
        &self,
        out_trade_no: &OutTradeNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Takes or renews the lease `name` for `holder` for `ttl`; false while
    /// another holder's lease runs. One replica at a time runs a background job.
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: chrono::Duration,
    ) -> Result<bool, StoreError>;

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

    /// Stores a PROCESSING refund if its order is paid and has room for it (the
    /// order's refunds that are not CLOSED, this one included, at most its
    /// total), or returns the refund that already holds its number. Decided under
    /// the order's lock: concurrent refunds of one order never together exceed it.
    async fn insert_refund(&self, r: &NewRefund) -> Result<RefundPlacement, StoreError>;

    async fn refund(&self, out_refund_no: &OutRefundNo) -> Result<Option<Refund>, StoreError>;

    /// An order's refunds, oldest first.
    async fn refunds_of(&self, out_trade_no: &OutTradeNo) -> Result<Vec<Refund>, StoreError>;

    /// Applies what WeChat says about a refund, once, with the order's change
    /// (version, `refunded_fee`, REFUND) and its outbox event in the same transaction.
    async fn update_refund(&self, u: &RefundUpdate) -> Result<RefundOutcome, StoreError>;

    /// Claims up to `limit` PROCESSING refunds created at or before
    /// `created_before` whose next check is due at `now`, like `claim_due`.
    async fn claim_due_refunds(
        &self,
        now: DateTime<Utc>,
        created_before: DateTime<Utc>,
        limit: i64,
        claim_until: DateTime<Utc>,
    ) -> Result<Vec<DueRefund>, StoreError>;

    /// When the reconciler should next ask WeChat about a refund.
    async fn schedule_refund_check(
        &self,
        out_refund_no: &OutRefundNo,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Orders paid (SUCCESS or REFUND) with `paid_at` in `[from, to)`.
    async fn orders_paid_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Order>, StoreError>;

    /// SUCCESS refunds applied for (`created_at`) in `[from, to)`: the day
    /// WeChat's bill lists a refund on.
    async fn refunds_succeeded_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Refund>, StoreError>;

    /// The stored reconciliation of a bill day.
    async fn bill_report(&self, day: NaiveDate) -> Result<Option<BillReport>, StoreError>;

    /// Stores (or replaces) a bill day's reconciliation.
    async fn save_bill_report(&self, report: &BillReport) -> Result<(), StoreError>;

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

    /// Deletes up to `limit` rows of each kind the product keeps only for a
    /// while: outbox events published before `before`, notifications received
    /// before it, anomalies recorded before it. Returns how many rows went.
    async fn purge_before(&self, before: DateTime<Utc>, limit: i64) -> Result<u64, StoreError>;

    /// The platform certificates kept for `mch_id` that are unexpired at
    /// `now` (`not_after > now`), oldest end first.
    async fn platform_certificates(
        &self,
        mch_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<PlatformCertificate>, StoreError>;

    /// Keeps `certs` for `mch_id` (a certificate already kept under its
    /// serial is replaced: a new download refreshes its `fetched_at`) and
    /// deletes that merchant's certificates expired at `now`, in one
    /// transaction. Certificates of other merchants in `certs` are refused
    /// (`Conflict`) before anything is written.
    async fn save_platform_certificates(
        &self,
        mch_id: &str,
        certs: &[PlatformCertificate],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Cheap liveness check for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
