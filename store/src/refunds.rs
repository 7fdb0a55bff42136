//! Refunds in storage: the types the [`Store`](crate::Store) speaks for them,
//! and the one place their rules run. Each backend supplies a [`RefundTx`] (its
//! SQL inside one write transaction that holds the order's lock); [`place`] and
//! [`update`] decide, in that transaction, what a request or a message from
//! WeChat may change. So the rules that keep money right (never more given back
//! than was paid, a final refund never changes, a number is one refund) exist
//! once, for Postgres and SQLite alike.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::StoreError;
use wxpay_core::domain::{
    EventSource, Fee, NewRefund, Order, OrderEvent, OrderStatus, OutRefundNo, OutTradeNo, Refund,
    RefundReason, RefundStatus,
};

/// WeChat accepts at most 50 partial refunds per order; the 51st is refused here
/// before WeChat is asked.
pub const MAX_REFUNDS_PER_ORDER: i64 = 50;

/// What `insert_refund` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundPlacement {
    /// Stored as PROCESSING: WeChat may now be asked.
    Placed(Refund),
    /// A refund with this number already exists; here it is (the caller compares).
    Existing(Refund),
    OrderNotFound,
    /// The order is not paid (or not any more refundable): its status.
    NotPaid(OrderStatus),
    /// The refund would take more than is left; `available` fen are left.
    Exceeds {
        available: i64,
    },
    /// The order already has [`MAX_REFUNDS_PER_ORDER`] refunds.
    TooMany,
}

/// What WeChat says about a refund (its notification, refundquery, or the
/// reply to the refund request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundUpdate {
    pub out_refund_no: OutRefundNo,
    pub out_trade_no: OutTradeNo,
    pub refund_fee: Fee,
    pub refund_id: Option<String>,
    /// The payment's transaction_id as the message states it; checked against the order's.
    pub transaction_id: Option<String>,
    /// The order's total as the message states it; checked against the order's.
    pub total_fee: Option<Fee>,
    pub status: RefundStatus,
    pub succeeded_at: Option<DateTime<Utc>>,
    /// WeChat's err_code, for a refund it refused outright.
    pub failure: Option<String>,
}

impl RefundUpdate {
    /// The event source of the order change this update makes.
    pub fn source(&self) -> EventSource {
        match self.status {
            RefundStatus::Change => EventSource::RefundChange,
            RefundStatus::Closed => EventSource::RefundClosed,
            RefundStatus::Success | RefundStatus::Processing => EventSource::Refund,
        }
    }
}

/// What `update_refund` did.
// One value per refund change, matched and dropped at once: boxing the large
// variant would cost an allocation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundOutcome {
    /// The refund moved from `previous` (`None`: it was not known here, e.g. made in
    /// the merchant console, and is now recorded); the order changed with it and
    /// `event` is the outbox row written in the same transaction.
    Applied {
        refund: Refund,
        order: Order,
        event: OrderEvent,
        previous: Option<RefundStatus>,
    },
    /// Nothing to change: already in that status, or a final one (a repeat or
    /// late message). A refund_id learned for the first time is still kept.
    Unchanged {
        refund: Refund,
    },
    /// The message contradicts what is stored (another order, amount, refund_id
    /// or transaction_id): nothing changed.
    Mismatch {
        detail: String,
    },
    OrderNotFound,
    NotPaid(OrderStatus),
    /// An unknown refund that would take more than is left.
    Exceeds {
        available: i64,
    },
}

/// A PROCESSING refund the reconciler claimed, with its order (whose sign type
/// and total the questions to WeChat need) and how many times it was claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRefund {
    pub refund: Refund,
    pub order: Order,
    pub attempts: u32,
}

/// An order locked for a refund decision, and what its refunds hold.
#[derive(Debug, Clone)]
pub(crate) struct LockedOrder {
    pub order: Order,
    /// Fen held by refunds that are not CLOSED.
    pub held: i64,
    /// Refunds of any status.
    pub count: i64,
}

impl LockedOrder {
    fn available(&self) -> i64 {
        self.order.total_fee.fen() - self.held
    }

    fn refundable(&self) -> bool {
        matches!(
            self.order.status,
            OrderStatus::Success | OrderStatus::Refund
        )
    }
}

/// One backend's SQL for refunds, inside a write transaction. The order is
/// locked first (`lock_order`) and every later call runs under that lock.
#[async_trait]
pub(crate) trait RefundTx: Send {
    async fn lock_order(&mut self, no: &OutTradeNo) -> Result<Option<LockedOrder>, StoreError>;
    async fn refund(&mut self, no: &OutRefundNo) -> Result<Option<Refund>, StoreError>;
    /// Inserts a PROCESSING refund.
    async fn insert(&mut self, r: &NewRefund) -> Result<Refund, StoreError>;
    /// Records WeChat's refund_id on a refund that has none.
    async fn set_refund_id(&mut self, no: &OutRefundNo, id: &str) -> Result<Refund, StoreError>;
    /// Moves the refund to `u.status`; bumps the order's version (and on SUCCESS
    /// adds the fee to `refunded_fee` and moves it to REFUND); writes the outbox event.
    async fn change(
        &mut self,
        u: &RefundUpdate,
        fee: Fee,
    ) -> Result<(Refund, Order, OrderEvent), StoreError>;
    async fn commit(self) -> Result<(), StoreError>;
}

/// Stores `r` as PROCESSING if its order is paid and has room for it. Runs whole
/// under the order's lock, so two refunds of one order are decided one after the
/// other and can never together exceed its total.
pub(crate) async fn place<T: RefundTx>(
    mut tx: T,
    r: &NewRefund,
) -> Result<RefundPlacement, StoreError> {
    let locked = tx.lock_order(&r.out_trade_no).await?;
    // The number is the idempotency key: looked up before any other rule, so a
    // retry of a refund that filled the order still gets its refund back.
    if let Some(existing) = tx.refund(&r.out_refund_no).await? {
        return Ok(RefundPlacement::Existing(existing));
    }
    let Some(locked) = locked else {
        return Ok(RefundPlacement::OrderNotFound);
    };
    if !locked.refundable() {
        return Ok(RefundPlacement::NotPaid(locked.order.status));
    }
    if locked.count >= MAX_REFUNDS_PER_ORDER {
        return Ok(RefundPlacement::TooMany);
    }
    if r.refund_fee.fen() > locked.available() {
        return Ok(RefundPlacement::Exceeds {
            available: locked.available(),
        });
    }
    // A Conflict here is the same number taken meanwhile for another order (whose
    // lock this transaction does not hold); the backend answers with that refund.
    let refund = tx.insert(r).await?;
    tx.commit().await?;
    Ok(RefundPlacement::Placed(refund))
}

/// Applies what WeChat says about a refund, once. A refund this product did not
/// place (made in the merchant console) is recorded, within the same limits.
pub(crate) async fn update<T: RefundTx>(
    mut tx: T,
    u: &RefundUpdate,
) -> Result<RefundOutcome, StoreError> {
    let Some(locked) = tx.lock_order(&u.out_trade_no).await? else {
        return Ok(RefundOutcome::OrderNotFound);
    };
    if let (Some(theirs), Some(ours)) = (&u.transaction_id, &locked.order.transaction_id) {
        if theirs != ours {
            return Ok(RefundOutcome::Mismatch {
                detail: format!("transaction_id {theirs} is not the order's {ours}"),
            });
        }
    }
    if let Some(total) = u.total_fee {
        if total != locked.order.total_fee {
            return Ok(RefundOutcome::Mismatch {
                detail: format!(
                    "total_fee {total} is not the order's {}",
                    locked.order.total_fee
                ),
            });
        }
    }
    let existing = tx.refund(&u.out_refund_no).await?;
    let (fee, previous) = match &existing {
        Some(row) => {
            if let Some(detail) = contradiction(row, u) {
                return Ok(RefundOutcome::Mismatch { detail });
            }
            if !row.status.can_become(u.status) {
                let refund = match (&row.refund_id, &u.refund_id) {
                    (None, Some(id)) => {
                        let refund = tx.set_refund_id(&row.out_refund_no, id).await?;
                        tx.commit().await?;
                        refund
                    }
                    _ => row.clone(),
                };
                return Ok(RefundOutcome::Unchanged { refund });
            }
            (row.refund_fee, Some(row.status))
        }
        None => {
            if !locked.refundable() {
                return Ok(RefundOutcome::NotPaid(locked.order.status));
            }
            if u.status.holds_money() && u.refund_fee.fen() > locked.available() {
                return Ok(RefundOutcome::Exceeds {
                    available: locked.available(),
                });
            }
            let placed = tx
                .insert(&NewRefund {
                    out_refund_no: u.out_refund_no.clone(),
                    out_trade_no: u.out_trade_no.clone(),
                    refund_fee: u.refund_fee,
                    reason: RefundReason::empty(),
                })
                .await?;
            if u.status == RefundStatus::Processing {
                let refund = match &u.refund_id {
                    Some(id) => tx.set_refund_id(&placed.out_refund_no, id).await?,
                    None => placed,
                };
                tx.commit().await?;
                return Ok(RefundOutcome::Unchanged { refund });
            }
            (u.refund_fee, None)
        }
    };
    let (refund, order, event) = tx.change(u, fee).await?;
    tx.commit().await?;
    Ok(RefundOutcome::Applied {
        refund,
        order,
        event,
        previous,
    })
}

/// Why `u` cannot be about the stored refund `row`, if it cannot.
fn contradiction(row: &Refund, u: &RefundUpdate) -> Option<String> {
    if row.out_trade_no != u.out_trade_no {
        return Some(format!(
            "refund {} belongs to order {}, not {}",
            row.out_refund_no, row.out_trade_no, u.out_trade_no
        ));
    }
    if row.refund_fee != u.refund_fee {
        return Some(format!(
            "refund {} is {} fen, the message says {}",
            row.out_refund_no, row.refund_fee, u.refund_fee
        ));
    }
    match (&row.refund_id, &u.refund_id) {
        (Some(ours), Some(theirs)) if ours != theirs => Some(format!(
            "refund {} has refund_id {ours}, the message says {theirs}",
            row.out_refund_no
        )),
        _ => None,
    }
}
