//! `POST /wechat/refund/notify`: WeChat's refund result. The outer XML carries
//! no signature; the proof that WeChat sent it is `req_info`, which only
//! decrypts under our API key. The refund it describes is applied to its refund
//! record once (amount, order and transaction checked against what is stored);
//! the first successful refund moves the order to REFUND, and each adds to its
//! `refunded_fee`.

use wxpay_core::{
    domain::{Fee, OrderStatus, OutRefundNo, OutTradeNo, RefundStatus},
    wechat::{china_time, refund_crypto, xml, Fields},
};
use wxpay_store::{AnomalyKind, RefundOutcome, RefundUpdate};

use crate::{
    payment,
    state::AppState,
    verdict::{Kind, Verdict},
};

/// Processes one refund notification body (already bounded in size).
pub async fn process(state: &AppState, body: &[u8]) -> Verdict {
    let outer = match xml::decode(body) {
        Ok(fields) => fields,
        Err(e) => {
            tracing::warn!(error = %e, bytes = body.len(), "malformed refund notification refused");
            return Verdict::Malformed;
        }
    };
    let (verdict, out_trade_no) = judge(state, &outer).await;
    tracing::info!(out_trade_no = out_trade_no.as_deref(), %verdict, "refund notification");
    state
        .keep(Kind::Refund, out_trade_no.as_deref(), verdict, body, false)
        .await;
    verdict
}

/// The verdict, and the out_trade_no once it could be read from `req_info`.
async fn judge(state: &AppState, outer: &Fields) -> (Verdict, Option<String>) {
    let get = |k: &str| outer.get(k).map(String::as_str);
    if get("return_code") != Some("SUCCESS") {
        // Without req_info nothing in the message is authenticated, so it cannot be
        // told apart from a forgery: refuse it like any other unproven message.
        return (Verdict::Invalid, None);
    }
    if get("appid") != Some(state.merchant.app_id.as_str())
        || get("mch_id") != Some(state.merchant.mch_id.as_str())
    {
        return (Verdict::WrongMerchant, None);
    }
    let Some(req_info) = get("req_info") else {
        return (Verdict::Invalid, None);
    };
    let inner = match refund_crypto::decrypt_req_info(req_info, &state.merchant.api_key) {
        Ok(inner) => inner,
        Err(e) => {
            tracing::warn!(error = %e, "refund req_info refused");
            return (Verdict::BadSignature, None);
        }
    };
    let iget = |k: &str| inner.get(k).map(String::as_str);
    let raw_no = iget("out_trade_no").map(str::to_owned);
    let Some(out_trade_no) = iget("out_trade_no").and_then(|s| OutTradeNo::parse(s).ok()) else {
        return (Verdict::Invalid, raw_no);
    };
    let verdict = apply(state, &out_trade_no, &inner).await;
    (verdict, raw_no)
}

async fn apply(state: &AppState, out_trade_no: &OutTradeNo, inner: &Fields) -> Verdict {
    let no = out_trade_no.as_str();
    let Some(update) = read_update(out_trade_no, inner) else {
        return Verdict::Invalid;
    };
    let outcome = match state.ledger.apply_refund(&update).await {
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
fn read_update(out_trade_no: &OutTradeNo, inner: &Fields) -> Option<RefundUpdate> {
    let iget = |k: &str| inner.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let status = RefundStatus::from_wechat(iget("refund_status")?)?;
    let success_time = match iget("success_time") {
        Some(t) => Some(china_time::parse_readable(t)?),
        None => None,
    };
    Some(RefundUpdate {
        out_refund_no: OutRefundNo::parse(iget("out_refund_no")?).ok()?,
        out_trade_no: out_trade_no.clone(),
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
