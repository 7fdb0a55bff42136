//! `POST /wechat/refund/notify`: WeChat's refund result. The outer XML carries
//! no signature; the proof that WeChat sent it is `req_info`, which only
//! decrypts under the API key of the merchant the outer `mch_id` (and
//! `sub_mch_id`) names ([`crate::proof::refund`]): until it does, nothing is
//! read or kept. The refund it describes is applied to its refund record
//! once, and only when its order is that merchant's (amount, order and
//! transaction checked against what is stored); the first successful refund
//! moves the order to REFUND, and each adds to its `refunded_fee`.

use axum::body::Bytes;
use wxpay_core::{
    domain::{Fee, OrderStatus, OutRefundNo, OutTradeNo, RefundStatus},
    wechat::{china_time, Fields},
};
use wxpay_store::{AnomalyKind, RefundOutcome, RefundUpdate};

use crate::{
    payment,
    proof::{self, Proven},
    state::AppState,
    verdict::{Judged, Verdict},
};

/// Processes one refund notification body (already bounded in size).
pub async fn process(state: &AppState, body: Bytes) -> Judged {
    // Unknown mch_id, return_code FAIL, another appid, no req_info, or a
    // req_info that does not decrypt: refused, nothing read or kept.
    let proven = match proof::refund(&state.merchants, &body) {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let raw_no = proven.message().get("out_trade_no").cloned();
    let update = proven.read(read_update);
    let verdict = apply(state, &update).await;
    let merchant = proven.merchant().map(|e| e.name.as_str());
    tracing::info!(out_trade_no = raw_no.as_deref(), merchant, %verdict, "refund notification");
    state.keep(&proven, raw_no.as_deref(), verdict, false).await;
    proven.judged(verdict)
}

async fn apply(state: &AppState, proven: &Proven<Option<RefundUpdate>>) -> Verdict {
    let (Some(update), Some(entry)) = (proven.message(), proven.merchant()) else {
        return Verdict::Invalid;
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
            // Decrypted under one merchant's key, about another one's order: that
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
    let outcome = match state.ledger.apply_refund(update).await {
        Ok(outcome) => outcome,
        Err(e) => return payment::store_failure(no, e),
    };
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

/// The refund the decrypted `req_info` describes; `None` when a field we act on
/// is missing or not in WeChat's format (the message is then refused unread).
fn read_update(inner: &Fields) -> Option<RefundUpdate> {
    let iget = |k: &str| inner.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let out_trade_no = OutTradeNo::parse(iget("out_trade_no")?).ok()?;
    let status = RefundStatus::from_wechat(iget("refund_status")?)?;
    let success_time = match iget("success_time") {
        Some(t) => Some(china_time::parse_readable(t)?),
        None => None,
    };
    Some(RefundUpdate {
        out_refund_no: OutRefundNo::parse(iget("out_refund_no")?).ok()?,
        out_trade_no,
        refund_fee: Fee::parse_wire("refund_fee", iget("refund_fee")?).ok()?,
        refund_id: iget("refund_id").map(str::to_owned),
        transaction_id: iget("transaction_id").map(str::to_owned),
        total_fee: match iget("total_fee") {
            Some(t) => Some(Fee::parse_wire("total_fee", t).ok()?),
            None => None,
        },
        status,
        succeeded_at: success_time,
        failure: None,
    })
}
