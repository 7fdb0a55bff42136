//! What the operator console reads, and the two things it writes: its audit log
//! and anomaly resolutions (tables `console_audit` and `anomaly_resolutions`,
//! migration 0009, beside the others). Everything else the console changes goes
//! through the PaymentService API, never through this trait.
//!
//! Reads are built for a million orders: order lists are keyset-paginated on
//! `(created_at DESC, out_trade_no DESC)` (an index, so the first page costs the
//! same at any size), and every filter a person types has an index behind it.
//! Counts and totals are a separate call ([`ConsoleStore::order_totals`]), so a
//! page never waits for a sum over the whole table.
//!
//! A viewer confined to some merchants ([`Scope`]) sees only their orders, and
//! what hangs off them (refunds, anomalies); an anomaly about no order at all is
//! seen only by someone who sees every merchant.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use wxpay_core::domain::{BillReport, Order, OutTradeNo};

use crate::{OutboxBacklog, StoreError};

/// Which merchants' orders someone may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Only orders whose `merchant` is one of these names.
    Merchants(Vec<String>),
}

impl Scope {
    pub fn allows(&self, merchant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Merchants(names) => names.iter().any(|n| n == merchant),
        }
    }
}

/// The orders page's search. Every field narrows; `None` = no condition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// Exactly one order's out_trade_no, transaction_id, or the payer's openid
    /// (or sub_openid): matched exactly, never as a pattern.
    pub q: Option<String>,
    pub merchant: Option<String>,
    /// A status's short name (`NOTPAY`, `SUCCESS`, `REFUND`, …).
    pub status: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
    /// total_fee in fen, inclusive bounds.
    pub min_fee: Option<i64>,
    pub max_fee: Option<i64>,
}

/// Where the next page of orders starts: after this (created_at, out_trade_no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_at: DateTime<Utc>,
    pub out_trade_no: String,
}

/// One line of the orders list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    pub out_trade_no: String,
    pub merchant: String,
    pub status: String,
    pub trade_type: String,
    pub total_fee: i64,
    pub refunded_fee: i64,
    pub openid: String,
    pub transaction_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
}

/// A page of orders, newest first, and where the next one starts (`None`: this
/// was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub rows: Vec<OrderRow>,
    pub next: Option<OrderCursor>,
}

/// Counts and sums over every order a filter matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderTotals {
    pub orders: i64,
    /// Sum of total_fee over all matching orders.
    pub total_fee: i64,
    /// Orders that were paid (SUCCESS or REFUND) and the fen they brought in.
    pub paid_orders: i64,
    pub paid_fee: i64,
    /// Sum of refunded_fee (money given back and confirmed).
    pub refunded_fee: i64,
}

/// One status change of an order (its outbox row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub version: i64,
    pub status: String,
    /// What made the change: NOTIFY, QUERY, RECONCILE, CLOSE, REFUND, …
    pub source: String,
    pub transaction_id: Option<String>,
    pub refunded_fee: i64,
    pub occurred_at: DateTime<Utc>,
    /// When it was handed to the bus (`None`: still in the outbox).
    pub published_at: Option<DateTime<Utc>>,
}

/// One notification kept for an order, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: i64,
    pub kind: String,
    pub verdict: String,
    pub sign_type: Option<String>,
    pub body_bytes: i64,
    pub received_at: DateTime<Utc>,
}

/// One refund as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub merchant: String,
    pub refund_id: Option<String>,
    pub refund_fee: i64,
    pub status: String,
    pub reason: String,
    /// WeChat's err_code when it refused the refund outright.
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
}

/// Where the next page of refunds starts: after this (created_at, out_refund_no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundCursor {
    pub created_at: DateTime<Utc>,
    pub out_refund_no: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundPage {
    pub rows: Vec<RefundRow>,
    pub next: Option<RefundCursor>,
}

/// Who closed an anomaly, when, and what they wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub resolved_by: String,
    pub resolved_at: DateTime<Utc>,
    pub note: String,
}

/// One anomaly and, once someone resolved it, its resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyRow {
    pub id: i64,
    pub kind: String,
    pub out_trade_no: Option<String>,
    /// The order's merchant (`None`: no order, or an order this database does not have).
    pub merchant: Option<String>,
    pub detail: String,
    pub occurred_at: DateTime<Utc>,
    pub resolution: Option<Resolution>,
}

/// Which anomalies to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyState {
    Open,
    Resolved,
    All,
}

/// What resolving an anomaly did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveOutcome {
    Resolved(Resolution),
    /// Someone resolved it first: theirs stands, nothing was written.
    AlreadyResolved(Resolution),
    NotFound,
}

/// Everything an order's page shows, oldest first within each list.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderHistory {
    pub order: Order,
    /// The API caller that placed it.
    pub caller: String,
    pub events: Vec<EventRow>,
    pub notifications: Vec<NotificationRow>,
    pub refunds: Vec<RefundRow>,
    pub anomalies: Vec<AnomalyRow>,
}

/// One reconciled bill day, summed up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillSummary {
    pub bill_date: NaiveDate,
    pub wechat_rows: u64,
    pub matched: u64,
    pub repaired: u64,
    pub discrepancies: u64,
    pub reconciled_at: DateTime<Utc>,
}

/// One hour of payments (by paid_at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyPaid {
    /// The start of the hour, UTC.
    pub hour: DateTime<Utc>,
    pub orders: i64,
    pub fee: i64,
}

/// How many notifications of a kind got a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictCount {
    pub kind: String,
    pub verdict: String,
    pub count: i64,
}

/// One hour of the outbox: events committed in it, and how long the slowest
/// of them waited to be published (still unpublished ones count up to now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourlyOutbox {
    pub hour: DateTime<Utc>,
    pub events: i64,
    pub max_delay_ms: i64,
}

/// The dashboard's figures since a moment (the last 24 hours).
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// Hours with at least one payment, oldest first.
    pub paid_per_hour: Vec<HourlyPaid>,
    pub verdicts: Vec<VerdictCount>,
    pub outbox_per_hour: Vec<HourlyOutbox>,
    /// The outbox right now.
    pub outbox: OutboxBacklog,
    pub open_anomalies: i64,
    /// Refunds WeChat answered CHANGE (someone must handle them) and refunds
    /// still PROCESSING.
    pub refunds_change: i64,
    pub refunds_processing: i64,
}

/// An action as it is about to be performed (or refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub actor: String,
    pub role: String,
    /// `refund`, `query`, `close`, `resolve`, `reconcile`.
    pub action: String,
    /// What it acts on: an out_trade_no, an anomaly id, a bill date.
    pub target: String,
    /// The form's fields as JSON (no CSRF token).
    pub fields: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub fields: String,
    /// `None`: started and never finished (the console stopped in between,
    /// so whether it happened is for the order's own history to say).
    pub result: Option<String>,
    pub ok: Option<bool>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ConsoleStore: Send + Sync + 'static {
    /// Orders matching `filter` within `scope`, newest first, `limit` at most,
    /// after `after` when given.
    async fn search_orders(
        &self,
        scope: &Scope,
        filter: &OrderFilter,
        after: Option<&OrderCursor>,
        limit: u32,
    ) -> Result<OrderPage, StoreError>;

    async fn order_totals(
        &self,
        scope: &Scope,
        filter: &OrderFilter,
    ) -> Result<OrderTotals, StoreError>;

    /// The order and everything recorded about it; `None` when there is no such
    /// order or it is outside `scope` (the two look the same).
    async fn order_history(
        &self,
        scope: &Scope,
        out_trade_no: &OutTradeNo,
    ) -> Result<Option<OrderHistory>, StoreError>;

    /// Anomalies newest first (by id), `limit` at most, with ids below
    /// `before_id` when given.
    async fn anomalies(
        &self,
        scope: &Scope,
        state: AnomalyState,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AnomalyRow>, StoreError>;

    async fn anomaly(&self, scope: &Scope, id: i64) -> Result<Option<AnomalyRow>, StoreError>;

    /// Marks an anomaly resolved once: a second resolution (two people at once)
    /// changes nothing and returns the first.
    async fn resolve_anomaly(
        &self,
        scope: &Scope,
        id: i64,
        by: &str,
        note: &str,
    ) -> Result<ResolveOutcome, StoreError>;

    /// Refunds newest first, of one status when given.
    async fn refunds(
        &self,
        scope: &Scope,
        status: Option<&str>,
        after: Option<&RefundCursor>,
        limit: u32,
    ) -> Result<RefundPage, StoreError>;

    /// Reconciled days, newest first, before `before` when given.
    async fn bill_days(
        &self,
        before: Option<NaiveDate>,
        limit: u32,
    ) -> Result<Vec<BillSummary>, StoreError>;

    async fn bill_day(&self, day: NaiveDate) -> Result<Option<BillReport>, StoreError>;

    async fn dashboard(&self, scope: &Scope, since: DateTime<Utc>)
        -> Result<Dashboard, StoreError>;

    /// Writes the action before it is performed; [`finish_audit`] records how
    /// it ended. Returns the entry's id.
    async fn begin_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError>;

    async fn finish_audit(&self, id: i64, ok: bool, result: &str) -> Result<(), StoreError>;

    /// The audit log newest first, ids below `before_id` when given.
    async fn audit(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// The actions taken on one target (an order's page shows them in its
    /// history), oldest first, `limit` at most (the newest ones).
    async fn audit_of(&self, target: &str, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}
