//! `POST /wechat/v3/pay/notify`: WeChat's v3 payment result. Proven first
//! ([`crate::wechat_keys::prove`], shared with the v3 refund notification:
//! [`crate::proof::v3`] checks the headers and the RSA signature over the raw
//! body, then the resource opened under the APIv3 key of the merchant whose
//! numbers it names), then read by this module's parser into the same typed
//! [`PayNotice`] as v2's XML, then decided, applied and kept by
//! [`crate::pay_notice::conclude`]: the same checks, the same exactly-once
//! transition and event. Nothing is read or written for a message that is not
//! proven; the decrypted resource is never logged (it holds the payer's openid).
//!
//! Event types: `TRANSACTION.SUCCESS` is the only one WeChat sends to a
//! payment's `notify_url` (v3 does not notify failed payments), and it pays.
//! Any other proven event (a refund's, should a merchant point its refunds
//! here) is acknowledged and kept, with nothing applied: WeChat would resend
//! a refused one for a day with the same result, and refunds have their own
//! endpoint ([`crate::refund_v3`]) and query.

use axum::{body::Bytes, http::HeaderMap};
use wxpay_core::{
    domain::Fee,
    wechat::{
        china_time,
        v3::models::{Transaction, TRANSACTION_SUCCESS},
    },
};

use crate::{
    pay_notice::{self, PayNotice},
    payment::{PaymentReport, Wire},
    proof::{V3Endpoint, V3Event},
    state::AppState,
    verdict::Judged,
};

/// Processes one v3 payment notification: `headers` as received, `body` the
/// raw bytes (already bounded in size).
pub async fn process(state: &AppState, headers: &HeaderMap, body: Bytes) -> Judged {
    let proven = match state.prove_v3(V3Endpoint::Pay, headers, &body).await {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let (out_trade_no, notice) = read(proven.message());
    tracing::debug!(
        out_trade_no = out_trade_no.as_deref(),
        id = %proven.message().id,
        event_type = %proven.message().event_type,
        "v3 pay notification received"
    );
    let notice = proven.read(|_| notice);
    pay_notice::conclude(state, &notice, out_trade_no.as_deref()).await
}

/// Reads a proven event into what it says, and the order number as the
/// resource wrote it (for the audit row). The prover checked whose accounts
/// the resource names; a payment must also name its app.
pub fn read(event: &V3Event) -> (Option<String>, PayNotice) {
    if event.event_type != TRANSACTION_SUCCESS {
        return (None, PayNotice::NoResult);
    }
    let Ok(t) = serde_json::from_slice::<Transaction>(&event.resource) else {
        return (None, PayNotice::Unreadable);
    };
    let out_trade_no = Some(t.out_trade_no.clone());
    // TRANSACTION.SUCCESS says SUCCESS; anything else contradicts itself.
    if t.trade_state != "SUCCESS" || t.merchant_app_id().is_none() {
        return (out_trade_no, PayNotice::Unreadable);
    }
    let amount = t.amount.as_ref();
    let wire = Wire {
        out_trade_no: Some(&t.out_trade_no),
        result_code: Some("SUCCESS"),
        transaction_id: t.transaction_id.as_deref(),
        total_fee: amount.and_then(|a| Fee::new(a.total).ok()),
        // What the payer paid: 0 when coupons paid it all, so not a Fee.
        cash_fee: amount.and_then(|a| a.payer_total).filter(|fen| *fen >= 0),
        fee_type: amount.and_then(|a| a.currency.as_deref()),
        // Missing or unreadable: the store uses the commit time.
        paid_at: t
            .success_time
            .as_deref()
            .and_then(china_time::parse_rfc3339),
    };
    let notice = match PaymentReport::read(wire) {
        Some(report) => PayNotice::Report(report),
        None => PayNotice::Unreadable,
    };
    (out_trade_no, notice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::Reported;

    fn event(event_type: &str, resource: &str) -> V3Event {
        V3Event {
            id: "EV-1".into(),
            event_type: event_type.into(),
            resource: resource.as_bytes().to_vec(),
        }
    }

    const PAID: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"A1","transaction_id":"4200000001","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","success_time":"2018-06-08T10:34:56+08:00","payer":{"openid":"o1"},"amount":{"total":100,"payer_total":90,"currency":"CNY","payer_currency":"CNY"}}"#;

    #[test]
    fn a_successful_transaction_is_a_typed_payment_report() {
        let (no, notice) = read(&event(TRANSACTION_SUCCESS, PAID));
        assert_eq!(no.as_deref(), Some("A1"));
        let PayNotice::Report(r) = notice else {
            panic!("not a report: {notice:?}");
        };
        assert_eq!(r.out_trade_no.as_str(), "A1");
        assert_eq!(r.total_fee.map(Fee::fen), Some(100));
        assert!(r.is_cny());
        let Reported::Paid {
            transaction_id,
            cash_fee,
            paid_at,
        } = r.result
        else {
            panic!("not paid");
        };
        assert_eq!(transaction_id.as_str(), "4200000001");
        assert_eq!(cash_fee, Some(90));
        assert_eq!(paid_at.map(|t| t.timestamp()), Some(1528425296));
    }

    #[test]
    fn other_events_apply_nothing_and_contradictions_are_unreadable() {
        assert!(matches!(
            read(&event("REFUND.SUCCESS", PAID)).1,
            PayNotice::NoResult
        ));
        for bad in [
            PAID.replace(
                "\"trade_state\":\"SUCCESS\"",
                "\"trade_state\":\"PAYERROR\"",
            ),
            PAID.replace("\"appid\":\"wxd678efh567hg6787\",", ""),
            PAID.replace("\"transaction_id\":\"4200000001\",", ""),
            PAID.replace(
                "\"out_trade_no\":\"A1\"",
                "\"out_trade_no\":\"not an order no!\"",
            ),
            "{".to_owned(),
        ] {
            assert!(
                matches!(
                    read(&event(TRANSACTION_SUCCESS, &bad)).1,
                    PayNotice::Unreadable
                ),
                "{bad}"
            );
        }
        // A fractional or missing amount is not money: read, but with no
        // fee, which the order then refuses as another amount.
        let (_, notice) = read(&event(
            TRANSACTION_SUCCESS,
            &PAID.replace("\"total\":100", "\"total\":0"),
        ));
        assert!(matches!(
            notice,
            PayNotice::Report(PaymentReport {
                total_fee: None,
                ..
            })
        ));
    }
}
