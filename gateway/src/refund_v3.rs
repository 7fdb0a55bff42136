//! `POST /wechat/v3/refund/notify`: WeChat's v3 refund result. Proven exactly
//! as the v3 payment result ([`crate::wechat_keys::prove`]: the headers and
//! the RSA signature over the raw body under WeChat's keys, one key refresh
//! for an unknown serial, then the resource opened under the APIv3 key of the
//! merchant whose `mchid` (or `sp_mchid` and `sub_mchid`) it names), then read
//! by this module's parser into the same typed
//! [`RefundNotice`] as v2's `req_info`, then decided, applied and kept by
//! [`crate::refund_notice::conclude`]: the same checks against the stored
//! refund and order, the same exactly-once transition and event. Nothing is
//! read or written for a message that is not proven; the decrypted resource
//! is never logged beyond its identifiers (it names the payer's account).
//!
//! Event types: `REFUND.SUCCESS`, `REFUND.ABNORMAL` (our CHANGE) and
//! `REFUND.CLOSED`, each announcing the state its resource's `refund_status`
//! must then hold. Any other proven event (a payment's, should a merchant
//! point its payments here) is acknowledged and kept with nothing applied,
//! as the payment endpoint does for refunds.

use axum::{body::Bytes, http::HeaderMap};
use wxpay_core::{
    domain::{Fee, OutRefundNo, OutTradeNo},
    wechat::{
        china_time,
        v3::models::{refund_event_status, refund_status, RefundResource},
    },
};
use wxpay_store::RefundUpdate;

use crate::{
    proof::{V3Endpoint, V3Event},
    refund_notice::{self, RefundNotice},
    state::AppState,
    verdict::Judged,
};

/// Processes one v3 refund notification: `headers` as received, `body` the
/// raw bytes (already bounded in size).
pub async fn process(state: &AppState, headers: &HeaderMap, body: Bytes) -> Judged {
    let proven = match state.prove_v3(V3Endpoint::Refund, headers, &body).await {
        Ok(proven) => proven,
        Err(refused) => return refused.judged(&body),
    };
    let (out_trade_no, notice) = read(proven.message());
    let notice = proven.read(|_| notice);
    refund_notice::conclude(state, &notice, out_trade_no.as_deref()).await
}

/// Reads a proven event into what it says, and the order number as the
/// resource wrote it (for the audit row). The prover checked whose account
/// the resource names; the store checks the rest against what it holds.
pub fn read(event: &V3Event) -> (Option<String>, RefundNotice) {
    let Some(announced) = refund_event_status(&event.event_type) else {
        return (None, RefundNotice::NoResult);
    };
    let Ok(r) = serde_json::from_slice::<RefundResource>(&event.resource) else {
        return (None, RefundNotice::Unreadable);
    };
    let out_trade_no = Some(r.out_trade_no.clone());
    // REFUND.SUCCESS about a refund whose refund_status is CLOSED contradicts
    // itself: neither half can be believed over the other.
    if refund_status(&r.refund_status) != Some(announced) {
        return (out_trade_no, RefundNotice::Unreadable);
    }
    (out_trade_no, update(&r, announced).into())
}

/// The refund `r` describes, in `status`; `None` when a field the store acts
/// on is missing or not in WeChat's format.
fn update(r: &RefundResource, status: wxpay_core::domain::RefundStatus) -> Option<RefundUpdate> {
    let present = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let succeeded_at = match r.success_time.as_deref().filter(|t| !t.is_empty()) {
        Some(t) => Some(china_time::parse_rfc3339(t)?),
        None => None,
    };
    Some(RefundUpdate {
        out_refund_no: OutRefundNo::parse(&r.out_refund_no).ok()?,
        out_trade_no: OutTradeNo::parse(&r.out_trade_no).ok()?,
        refund_fee: Fee::new(r.amount.refund).ok()?,
        refund_id: present(&r.refund_id),
        // Required: the store compares it with the order's payment, and a
        // refund naming no payment cannot be checked against one.
        transaction_id: Some(present(&r.transaction_id)?),
        total_fee: Some(Fee::new(r.amount.total).ok()?),
        status,
        succeeded_at,
        failure: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wxpay_core::{
        domain::RefundStatus,
        wechat::v3::models::{REFUND_ABNORMAL, REFUND_CLOSED, REFUND_SUCCESS},
    };

    fn event(event_type: &str, resource: &str) -> V3Event {
        V3Event {
            id: "EV-1".into(),
            event_type: event_type.into(),
            resource: resource.as_bytes().to_vec(),
        }
    }

    // WeChat's documented example, with our order numbers.
    const REFUNDED: &str = r#"{"mchid":"1900000100","transaction_id":"1008450740201411110005820873","out_trade_no":"A1","refund_id":"50200207182018070300011301001","out_refund_no":"R1","refund_status":"SUCCESS","success_time":"2018-06-08T10:34:56+08:00","user_received_account":"招商银行信用卡0403","amount":{"total":999,"refund":888,"payer_total":999,"payer_refund":888}}"#;

    fn update_of(notice: RefundNotice) -> RefundUpdate {
        match notice {
            RefundNotice::Update(u) => u,
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn a_refund_success_is_a_typed_update_with_the_amounts_the_store_checks() {
        let (no, notice) = read(&event(REFUND_SUCCESS, REFUNDED));
        assert_eq!(no.as_deref(), Some("A1"));
        let u = update_of(notice);
        assert_eq!(
            (u.out_trade_no.as_str(), u.out_refund_no.as_str()),
            ("A1", "R1")
        );
        assert_eq!(u.status, RefundStatus::Success);
        assert_eq!(u.refund_fee.fen(), 888);
        assert_eq!(u.total_fee.map(Fee::fen), Some(999));
        assert_eq!(
            u.transaction_id.as_deref(),
            Some("1008450740201411110005820873")
        );
        assert_eq!(
            u.refund_id.as_deref(),
            Some("50200207182018070300011301001")
        );
        assert_eq!(u.succeeded_at.map(|t| t.timestamp()), Some(1528425296));
    }

    #[test]
    fn abnormal_is_change_and_closed_is_closed_when_the_resource_agrees() {
        for (event_type, status, ours) in [
            (REFUND_ABNORMAL, "ABNORMAL", RefundStatus::Change),
            (REFUND_CLOSED, "CLOSED", RefundStatus::Closed),
        ] {
            let resource = REFUNDED
                .replace("\"SUCCESS\"", &format!("\"{status}\""))
                .replace("\"success_time\":\"2018-06-08T10:34:56+08:00\",", "");
            let u = update_of(read(&event(event_type, &resource)).1);
            assert_eq!((u.status, u.succeeded_at), (ours, None), "{event_type}");
        }
    }

    #[test]
    fn contradictions_and_unreadable_fields_are_unreadable_and_other_events_no_result() {
        assert!(matches!(
            read(&event("TRANSACTION.SUCCESS", REFUNDED)).1,
            RefundNotice::NoResult
        ));
        // `status` is the query answer's name: a resource using it has no
        // refund_status (wechatpay-java #213).
        let as_answer = REFUNDED.replace("refund_status", "status");
        for (event_type, bad) in [
            (REFUND_CLOSED, REFUNDED.to_owned()),
            (
                REFUND_ABNORMAL,
                REFUNDED.replace("\"SUCCESS\"", "\"PROCESSING\""),
            ),
            (REFUND_SUCCESS, as_answer),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"refund\":888", "\"refund\":0"),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"total\":999", "\"total\":-1"),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"refund\":888", "\"refund\":8.88"),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"1008450740201411110005820873\"", "\"\""),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"out_refund_no\":\"R1\"", "\"out_refund_no\":\"\""),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("\"out_trade_no\":\"A1\"", "\"out_trade_no\":\"not ours!\""),
            ),
            (
                REFUND_SUCCESS,
                REFUNDED.replace("2018-06-08T10:34:56+08:00", "2018-06-08 10:34:56"),
            ),
            (REFUND_SUCCESS, "{".to_owned()),
        ] {
            assert!(
                matches!(read(&event(event_type, &bad)).1, RefundNotice::Unreadable),
                "{event_type}: {bad}"
            );
        }
    }
}
