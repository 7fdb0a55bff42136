//! `POST /wechat/refund/notify`: WeChat's refund result. The outer XML carries
//! no signature; the proof that WeChat sent it is `req_info`, which only
//! decrypts under our API key. A successful refund moves a paid order to REFUND.

use wxpay_core::{
    domain::{EventSource, Fee, OrderStatus, OutTradeNo},
    wechat::{refund_crypto, xml, Fields},
};
use wxpay_store::{AnomalyKind, Transition, TransitionOutcome};

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
    let iget = |k: &str| inner.get(k).map(String::as_str);
    if iget("refund_status") != Some("SUCCESS") {
        // CHANGE (refund failed) or REFUNDCLOSE: the order keeps its status.
        tracing::warn!(
            out_trade_no = no,
            refund_status = iget("refund_status"),
            "refund did not succeed"
        );
        return Verdict::Ignored;
    }
    let Some(refund_fee) = iget("refund_fee").and_then(|s| Fee::parse_wire("refund_fee", s).ok())
    else {
        return Verdict::Invalid;
    };
    let order = match state.store.order(out_trade_no).await {
        Ok(Some(order)) => order,
        Ok(None) => {
            state
                .anomaly(
                    AnomalyKind::UnknownOrder,
                    no,
                    "a refund notification for an unknown out_trade_no".into(),
                )
                .await;
            return Verdict::UnknownOrder;
        }
        Err(e) => return payment::store_failure(no, e),
    };
    let total_fee_matches = iget("total_fee")
        .map(|s| Fee::parse_wire("total_fee", s).ok() == Some(order.total_fee))
        .unwrap_or(true);
    if refund_fee > order.total_fee || !total_fee_matches {
        state
            .anomaly(
                AnomalyKind::RefundAmountMismatch,
                no,
                format!(
                    "refund of {refund_fee} (total_fee {:?}) for an order of {}",
                    iget("total_fee"),
                    order.total_fee
                ),
            )
            .await;
        return Verdict::AmountMismatch;
    }
    let t = Transition {
        out_trade_no: out_trade_no.clone(),
        to: OrderStatus::Refund,
        transaction_id: None,
        cash_fee: None,
        paid_at: None,
        source: EventSource::Refund,
    };
    match state.ledger.apply(&t).await {
        Ok(TransitionOutcome::Applied { order, .. }) => {
            tracing::info!(out_trade_no = no, version = order.version, %refund_fee, "order refunded");
            Verdict::Applied
        }
        Ok(TransitionOutcome::Unchanged { order }) => match order.status {
            OrderStatus::Refund => Verdict::Duplicate,
            // The payment notification may simply not have arrived yet: FAIL so WeChat
            // retries once the order is paid (by notification or orderquery).
            OrderStatus::NotPay | OrderStatus::UserPaying => {
                state
                    .anomaly(
                        AnomalyKind::RefundBeforePayment,
                        no,
                        "a refund notification for an unpaid order".into(),
                    )
                    .await;
                Verdict::WrongState
            }
            // Closed or failed orders were never paid; no retry will change that.
            OrderStatus::Closed | OrderStatus::Revoked | OrderStatus::PayError => {
                state
                    .anomaly(
                        AnomalyKind::RefundConflict,
                        no,
                        format!("a refund notification for an order {}", order.status),
                    )
                    .await;
                Verdict::Conflict
            }
            // SUCCESS → REFUND is allowed, so the order moved in between; retry.
            OrderStatus::Success => Verdict::Unavailable,
        },
        Err(e) => payment::store_failure(no, e),
    }
}
