//! A proven refund notification, whatever its dialect: what it says
//! ([`RefundNotice`], read from the message by the dialect's parser: v2's
//! decrypted `req_info` XML in [`crate::refund`], v3's decrypted JSON in
//! [`crate::refund_v3`]), the one decision about it, the one write path (the
//! ledger's `apply_refund`: the refund's exactly-once transition under its
//! order's lock, and its event), and keeping it. Both dialects end in
//! [`conclude`], so a refund result is applied, refused, counted and audited
//! the same way whichever protocol WeChat spoke; nothing here looks at a wire
//! format, and the store checks the message against the stored refund and
//! order (order, amounts, transaction, refund_id) in the transaction that
//! applies it.

use wxpay_core::domain::OrderStatus;
use wxpay_store::{AnomalyKind, RefundOutcome, RefundUpdate};

use crate::{
    payment,
    proof::Proven,
    state::AppState,
    verdict::{Judged, Verdict},
};

/// What a proven refund notification says.
#[derive(Debug)]
pub enum RefundNotice {
    /// A refund result, typed.
    Update(RefundUpdate),
    /// Genuine, but not a refund result: a v3 event other than `REFUND.*`
    /// (a payment's, should a merchant point its payments here).
    NoResult,
    /// A field the result needs is missing, unreadable, or contradicts
    /// another (v3's `event_type` and `refund_status`).
    Unreadable,
}

impl From<Option<RefundUpdate>> for RefundNotice {
    fn from(update: Option<RefundUpdate>) -> Self {
        update.map_or(RefundNotice::Unreadable, RefundNotice::Update)
    }
}

/// Decides about a proven notice, applies it, keeps the message with its
/// verdict (before the reply: refunds are few, and the row is what someone
/// reconciling them looks for), and says what to answer. `out_trade_no` is
/// the order number as the message wrote it (kept even when it does not
/// parse).
pub async fn conclude(
    state: &AppState,
    notice: &Proven<RefundNotice>,
    out_trade_no: Option<&str>,
) -> Judged {
    let verdict = decide(state, notice).await;
    let update = match notice.message() {
        RefundNotice::Update(u) => Some(u),
        RefundNotice::NoResult | RefundNotice::Unreadable => None,
    };
    // Identifiers and the verdict only: what the message says beyond them
    // (the payer's account) stays in its audit row.
    tracing::info!(
        kind = notice.kind().as_str(),
        out_trade_no,
        out_refund_no = update.map(|u| u.out_refund_no.as_str()),
        status = update.map(|u| u.status.as_str()),
        merchant = notice.merchant().map(|e| e.name.as_str()),
        proof = notice.proof_name(),
        %verdict,
        "refund notification"
    );
    state.keep(notice, out_trade_no, verdict, false).await;
    notice.judged(verdict)
}

async fn decide(state: &AppState, notice: &Proven<RefundNotice>) -> Verdict {
    let Some(entry) = notice.merchant() else {
        return Verdict::BadSignature;
    };
    let update = match notice.message() {
        RefundNotice::Update(update) => update,
        RefundNotice::NoResult => {
            // Nothing to apply, and a FAIL would only have WeChat resend it
            // for a day; the refund's own result comes here or by query.
            tracing::warn!(merchant = %entry.name, kind = notice.kind().as_str(),
                "genuine notification without a refund result; acknowledged");
            return Verdict::Ignored;
        }
        RefundNotice::Unreadable => return Verdict::Invalid,
    };
    let out_trade_no = &update.out_trade_no;
    let no = out_trade_no.as_str();
    // The ledger applies a refund without returning its order first, so the
    // order's merchant is read here, once, before anything changes. It is fixed
    // at the order's creation, so nothing can change it between this read and
    // the refund's transaction. A missing order is left to the ledger, which
    // reports it (and its anomaly) as for any merchant.
    match state.store.order(out_trade_no).await {
        Ok(Some(order)) if order.placement.merchant.as_str() != entry.name => {
            // Proven under one merchant's key, about another one's order: that
            // merchant's refund cannot give back this order's money.
            state
                .anomaly(
                    AnomalyKind::WrongMerchant,
                    no,
                    format!(
                        "a refund notification under merchant {}'s key is about an order of merchant {}",
                        entry.name, order.placement.merchant
                    ),
                )
                .await;
            return Verdict::WrongMerchant;
        }
        Ok(_) => {}
        Err(e) => return payment::store_failure(no, e),
    }
    match state.ledger.apply_refund(update).await {
        Ok(outcome) => settle(state, update, outcome).await,
        Err(e) => payment::store_failure(no, e),
    }
}

/// What the ledger did, as a verdict (and an anomaly where a person must look).
async fn settle(state: &AppState, update: &RefundUpdate, outcome: RefundOutcome) -> Verdict {
    let no = update.out_trade_no.as_str();
    match outcome {
        RefundOutcome::Applied {
            refund,
            order,
            previous,
            ..
        } => {
            tracing::info!(
                out_trade_no = no, out_refund_no = %refund.out_refund_no, status = %refund.status,
                previous = previous.map(|p| p.as_str()).unwrap_or("unknown here"),
                refunded_fee = order.refunded_fee, version = order.version, "refund applied"
            );
            if previous.is_none() {
                // Not placed through RefundOrder (the merchant console, another
                // system): the money moved all the same, so it is recorded.
                tracing::warn!(out_trade_no = no, out_refund_no = %refund.out_refund_no,
                    "a refund this service did not place was recorded from its notification");
            }
            Verdict::Applied
        }
        // Already in that status, or past it (a final one): a copy or a late
        // message, acknowledged.
        RefundOutcome::Unchanged { .. } => Verdict::Duplicate,
        RefundOutcome::Mismatch { detail } => {
            state
                .anomaly(AnomalyKind::RefundAmountMismatch, no, detail)
                .await;
            Verdict::AmountMismatch
        }
        RefundOutcome::Exceeds { available } => {
            state
                .anomaly(
                    AnomalyKind::RefundAmountMismatch,
                    no,
                    format!(
                        "refund {} of {} fen with only {available} fen left on the order",
                        update.out_refund_no, update.refund_fee
                    ),
                )
                .await;
            Verdict::AmountMismatch
        }
        RefundOutcome::OrderNotFound => {
            state
                .anomaly(
                    AnomalyKind::UnknownOrder,
                    no,
                    "a refund notification for an unknown out_trade_no".into(),
                )
                .await;
            Verdict::UnknownOrder
        }
        // The payment notification may simply not have arrived yet: FAIL so WeChat
        // retries once the order is paid (by notification or orderquery).
        RefundOutcome::NotPaid(status @ (OrderStatus::NotPay | OrderStatus::UserPaying)) => {
            state
                .anomaly(
                    AnomalyKind::RefundBeforePayment,
                    no,
                    format!("a refund notification for an order that is {status}"),
                )
                .await;
            Verdict::WrongState
        }
        // Closed or failed orders were never paid; no retry will change that.
        RefundOutcome::NotPaid(status) => {
            state
                .anomaly(
                    AnomalyKind::RefundConflict,
                    no,
                    format!("a refund notification for an order {status}"),
                )
                .await;
            Verdict::Conflict
        }
    }
}
