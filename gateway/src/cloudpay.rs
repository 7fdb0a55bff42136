//! `POST /cloudpay/callback`: the cloud-development (`cloud.cloudPay`) variant.
//! A cloud function forwards WeChat's camelCase JSON callback, signing
//! `X-Cloudpay-Timestamp` + "\n" + the raw body with HMAC-SHA256 under
//! `CLOUDPAY_CALLBACK_SECRET` ([`crate::proof::cloudpay`]; nothing is read or
//! kept before that proof, and a timestamp outside five minutes is a replay).
//! The HMAC proves the forwarder, not a merchant, so the merchant is the
//! order's: once the order is loaded its merchant must still be configured and
//! `subMchId` (when sent) must be that merchant's payee. A SUCCESS is then
//! applied only once WeChat's `orderquery` agrees ([`crate::orderquery`]):
//! paid, under the same transaction_id, for the same amount. The result goes
//! through the same [`crate::payment::settle`] as the XML notification.

use axum::body::Bytes;
use wxpay_core::{
    domain::{EventSource, Fee, Order, OrderStatus},
    wechat::{china_time, cloudpay as forwarder, order_query::Answer, MerchantEntry},
};
use wxpay_store::AnomalyKind;

use crate::{
    config::CloudpaySecret,
    payment::{self, PaymentReport, Reported, Wire},
    proof::{self, Amount, Callback, Proven},
    state::AppState,
    verdict::{Judged, Verdict},
};

/// The header carrying the forwarder's signature.
pub const SIGNATURE_HEADER: &str = "x-cloudpay-signature";
/// The header carrying the unix seconds the forwarder signed at.
pub const TIMESTAMP_HEADER: &str = "x-cloudpay-timestamp";

/// Lowercase hex HMAC-SHA256 of `timestamp` + "\n" + `body` (what the
/// forwarder sends; node's `digest('hex')`).
pub fn sign_body(secret: &CloudpaySecret, timestamp: &str, body: &[u8]) -> String {
    forwarder::sign(secret.expose(), timestamp, body)
}

impl Amount {
    fn fee(&self) -> Option<Fee> {
        match self {
            Amount::Fen(fen) => Fee::new(*fen).ok(),
            Amount::Text(s) => Fee::parse_wire("totalFee", s).ok(),
        }
    }

    fn fen(&self) -> Option<i64> {
        match self {
            Amount::Fen(fen) => Some(*fen),
            Amount::Text(s) => s.parse().ok(),
        }
        .filter(|fen| *fen >= 0)
    }
}

/// Processes one callback; `secret` is the configured one (the caller answers
/// 404 when there is none).
pub async fn process(
    state: &AppState,
    secret: &CloudpaySecret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: Bytes,
) -> Judged {
    let now = chrono::Utc::now().timestamp();
    let proven = match proof::cloudpay(secret, timestamp, signature, &body, now) {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let out_trade_no = proven.message().out_trade_no.clone();
    let (verdict, merchant) = decide(state, &proven).await;
    tracing::info!(out_trade_no = out_trade_no.as_deref(), merchant, %verdict, "cloud-pay callback");
    state
        .keep(&proven, out_trade_no.as_deref(), verdict, false)
        .await;
    Judged { verdict, merchant }
}

/// The callback's result fields as one typed report; `None` when unreadable.
fn read_report(c: &Callback) -> Option<PaymentReport> {
    PaymentReport::read(Wire {
        out_trade_no: c.out_trade_no.as_deref(),
        result_code: c.result_code.as_deref(),
        transaction_id: c.transaction_id.as_deref(),
        total_fee: c.total_fee.as_ref().and_then(Amount::fee),
        cash_fee: c.cash_fee.as_ref().and_then(Amount::fen),
        fee_type: c.fee_type.as_deref(),
        paid_at: c.time_end.as_deref().and_then(china_time::parse),
    })
}

/// The verdict, and the configured merchant of the callback's order once it is
/// known.
async fn decide(state: &AppState, proven: &Proven<Callback>) -> (Verdict, Option<String>) {
    let anonymous = |v: Verdict| (v, None);
    if proven.message().return_code.as_deref() != Some("SUCCESS") {
        // As for the XML notification: no business result to apply, and a retry
        // would bring the same nothing.
        return anonymous(Verdict::Ignored);
    }
    let Some(report) = proven.read(read_report).transpose() else {
        return anonymous(Verdict::Invalid);
    };
    // Proven, so the order may be read: the callback names no merchant we
    // could look up first (its subMchId is the payee's number, which the
    // forwarder sends for every merchant), so the order says whose it is.
    let order = match payment::order_of(state, &report).await {
        Ok(order) => order,
        Err(verdict) => return anonymous(verdict),
    };
    // An unknown order has no merchant to check and is left to `settle`,
    // which records it.
    let entry = match &order {
        None => None,
        Some(o) => match payee(state, &report, o, proven.message()).await {
            Ok(entry) => Some(entry),
            Err(judged) => return judged,
        },
    };
    if let (Some(order), Some(entry)) = (&order, entry) {
        if let Err(verdict) = confirm(state, entry, order, report.message()).await {
            return (verdict, Some(entry.name.clone()));
        }
    }
    (
        payment::settle(state, order, &report, EventSource::Cloudpay).await,
        entry.map(|e| e.name.clone()),
    )
}

/// The order's merchant, if this deployment still serves it and the callback
/// names it as the payee.
async fn payee<'s>(
    state: &'s AppState,
    report: &Proven<PaymentReport>,
    order: &Order,
    c: &Callback,
) -> Result<&'s MerchantEntry, (Verdict, Option<String>)> {
    let no = report.message().out_trade_no.as_str();
    let name = order.placement.merchant.as_str();
    let Some(entry) = state.merchants.get(name) else {
        // Placed under a merchant this deployment no longer serves:
        // nothing here can say the money reached that account.
        state
            .anomaly(
                AnomalyKind::WrongMerchant,
                no,
                format!(
                    "a cloud-pay callback for an order of merchant {name}, which is not configured"
                ),
            )
            .await;
        return Err((Verdict::WrongMerchant, None));
    };
    if let Some(sub) = c
        .sub_mch_id
        .as_deref()
        .filter(|m| *m != entry.payee_mch_id())
    {
        // Paid to another account than the order's merchant's.
        state
            .anomaly(
                AnomalyKind::WrongMerchant,
                no,
                format!(
                    "a cloud-pay callback names subMchId {sub}; the order's merchant {name} is paid as {}",
                    entry.payee_mch_id()
                ),
            )
            .await;
        return Err((Verdict::WrongMerchant, Some(entry.name.clone())));
    }
    Ok(entry)
}

/// Asks WeChat before a SUCCESS that `settle` would apply: the order is
/// unpaid here (or paid under another transaction, which `settle` reports
/// without asking) and the amount is the order's. What `settle` refuses on its
/// own (another amount, another currency) and a copy of the payment already
/// recorded cost no query.
async fn confirm(
    state: &AppState,
    entry: &MerchantEntry,
    order: &Order,
    report: &PaymentReport,
) -> Result<(), Verdict> {
    let Reported::Paid { transaction_id, .. } = &report.result else {
        return Ok(());
    };
    let settles = report.total_fee == Some(order.total_fee)
        && report.is_cny()
        && !matches!(order.status, OrderStatus::Success | OrderStatus::Refund);
    if !settles {
        return Ok(());
    }
    let Some(query) = &state.orderquery else {
        tracing::debug!(out_trade_no = %order.out_trade_no, "no WeChat API to ask: applied on the forwarder's proof");
        return Ok(());
    };
    let no = order.out_trade_no.as_str();
    match query.ask(entry, &order.out_trade_no, order.sign_type).await {
        Ok(Answer::Paid {
            transaction_id: Some(t),
            total_fee: Some(fee),
        }) if t == *transaction_id && fee == order.total_fee => Ok(()),
        Ok(answer) => {
            // WeChat holds no such payment: whoever signed this (a leaked
            // secret, a forwarder bug) does not get the order marked paid.
            // Not acknowledged, so a genuine callback is retried and a later
            // orderquery (the poller's, the reconciler's) settles the order.
            tracing::error!(out_trade_no = no, merchant = %entry.name, %transaction_id, ?answer,
                "WeChat's orderquery does not confirm the cloud-pay callback; nothing paid");
            Err(Verdict::Unconfirmed)
        }
        Err(e) => {
            tracing::warn!(out_trade_no = no, merchant = %entry.name, error = %e,
                "could not confirm the cloud-pay callback with orderquery; the forwarder will retry");
            Err(Verdict::Unavailable)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_amounts_are_not_money() {
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
        assert_eq!(
            serde_json::from_str::<Amount>("101")
                .ok()
                .and_then(|a| a.fee())
                .map(Fee::fen),
            Some(101)
        );
        assert_eq!(
            serde_json::from_str::<Amount>("\"101\"")
                .ok()
                .and_then(|a| a.fee())
                .map(Fee::fen),
            Some(101)
        );
    }
}
