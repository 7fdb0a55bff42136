//! v3 refunds against the sandbox, as a v3 client sees them: `POST
//! /v3/refund/domestic/refunds` signed without a client certificate, answers
//! verified with WeChat's key, the refund settling on its own or by the
//! control API, and its `REFUND.*` notification verified and opened with
//! core's `notification::open`; idempotency, the refund limits, refusals,
//! faults and the query.

mod common;

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use common::{new_out_trade_no, v3::*};
use serde_json::{json, Value};
use wechat_sandbox::{
    Delivery, Faults, KeyMode, NotifyOptions, PayOptions, RefundStatus, SandboxConfig,
    SettleOptions,
};
use wxpay_core::wechat::v3::{
    models::{Notification, RefundAnswer, RefundResource},
    notification::{open, Candidate},
    verify::SignedHeaders,
    WechatKeys,
};

const REFUNDS: &str = "/v3/refund/domestic/refunds";

/// A paid v3 order of the direct merchant (4321 fen; its payment notification
/// dropped): its out_trade_no and transaction_id.
async fn paid(v3: &V3) -> (String, String) {
    let no = new_out_trade_no();
    assert_eq!(v3.place_jsapi(&no, NOTIFY).await.status, StatusCode::OK);
    let order = v3
        .sandbox
        .pay(
            &no,
            PayOptions {
                notify: NotifyOptions {
                    delivery: Delivery::Drop,
                    ..NotifyOptions::default()
                },
                ..PayOptions::default()
            },
        )
        .await
        .expect("paid");
    (no, order.transaction_id.expect("a transaction id"))
}

fn refund_body(no: &str, out_refund_no: &str, refund: i64, notify_url: Option<&str>) -> Value {
    let mut body = json!({
        "out_trade_no": no,
        "out_refund_no": out_refund_no,
        "reason": "商品退货",
        "amount": {"refund": refund, "total": 4321, "currency": "CNY"},
    });
    if let Some(url) = notify_url {
        body["notify_url"] = json!(url);
    }
    body
}

async fn apply(v3: &V3, body: &Value) -> Reply {
    v3.direct("POST", REFUNDS, Some(body)).await
}

async fn query(v3: &V3, out_refund_no: &str) -> Reply {
    v3.direct("GET", &format!("{REFUNDS}/{out_refund_no}"), None)
        .await
}

fn answer(reply: &Reply) -> RefundAnswer {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    serde_json::from_slice(&reply.body).expect("a refund answer")
}

/// A received notification verified with `keys` and opened with the APIv3 key.
fn opened(headers: &HeaderMap, body: &[u8], keys: &WechatKeys) -> (Notification, RefundResource) {
    let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    let key = apiv3_key();
    let candidates = [Candidate {
        id: DIRECT,
        keys,
        apiv3_key: &key,
    }];
    let opened = open(&signed, body, Utc::now(), &candidates).expect("verifies and opens");
    let resource = serde_json::from_slice(&opened.plaintext).expect("a refund resource");
    (opened.notification, resource)
}

fn settle(status: RefundStatus) -> SettleOptions {
    SettleOptions {
        status,
        ..SettleOptions::default()
    }
}

#[tokio::test]
async fn a_refund_is_processing_then_settles_on_its_own_and_is_notified_signed_and_sealed() {
    let config = SandboxConfig {
        refund_settle_after: Some(Duration::from_millis(50)),
        ..SandboxConfig::for_tests()
    };
    let v3 = V3::start_with(KeyMode::PublicKey, config).await;
    let keys = v3.public_key(DIRECT).await;
    let receiver = JsonReceiver::start(1).await;
    let (no, transaction_id) = paid(&v3).await;

    let reply = apply(&v3, &refund_body(&no, "R-1", 1000, Some(&receiver.url))).await;
    assert_eq!(reply.verify(&keys), Ok(()));
    let accepted = answer(&reply);
    assert_eq!(accepted.status, "PROCESSING");
    assert_eq!(accepted.refund_id.len(), 29);
    assert_eq!(
        (
            accepted.out_trade_no.as_str(),
            accepted.transaction_id.as_str()
        ),
        (no.as_str(), transaction_id.as_str())
    );
    assert_eq!(accepted.channel.as_deref(), Some("ORIGINAL"));
    assert!(accepted.user_received_account.is_some());
    assert!(accepted
        .create_time
        .as_deref()
        .is_some_and(|t| t.ends_with("+08:00")));
    assert_eq!(accepted.success_time, None);
    let a = &accepted.amount;
    assert_eq!(
        (
            a.refund,
            a.total,
            a.payer_total,
            a.payer_refund,
            a.currency.as_deref()
        ),
        (1000, 4321, Some(4321), Some(1000), Some("CNY"))
    );

    // Settled after the delay: notified, refused once (500), then taken (204).
    let received = receiver.wait_for(2).await;
    assert_eq!(received.len(), 2, "a 500 is retried");
    for (headers, body) in &received {
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let (n, r) = opened(headers, body, &keys);
        assert_eq!(n.event_type, "REFUND.SUCCESS");
        assert_eq!(n.resource_type, "encrypt-resource");
        assert_eq!(n.resource.original_type.as_deref(), Some("refund"));
        assert_eq!(n.resource.associated_data, "refund");
        assert_eq!(r.refund_status, "SUCCESS");
        assert_eq!(r.mchid.as_deref(), Some(DIRECT));
        assert_eq!((r.sp_mchid, r.sub_mchid), (None, None));
        assert_eq!(
            (r.out_trade_no.as_str(), r.transaction_id.as_str()),
            (no.as_str(), transaction_id.as_str())
        );
        assert_eq!(
            (r.out_refund_no.as_str(), r.refund_id.as_str()),
            ("R-1", accepted.refund_id.as_str())
        );
        assert!(r.success_time.is_some_and(|t| t.ends_with("+08:00")));
        assert!(r.user_received_account.is_some());
        assert_eq!(
            (
                r.amount.total,
                r.amount.refund,
                r.amount.payer_total,
                r.amount.payer_refund
            ),
            (4321, 1000, Some(4321), Some(1000))
        );
        // A tampered copy is refused before anything is opened.
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
        let key = apiv3_key();
        let candidates = [Candidate {
            id: DIRECT,
            keys: &keys,
            apiv3_key: &key,
        }];
        assert!(open(&signed, &tampered, Utc::now(), &candidates).is_err());
    }
    let log = v3
        .sandbox
        .refund_notifications("R-1")
        .await
        .expect("the delivery log");
    let outcome: Vec<_> = log
        .iter()
        .map(|a| (a.http_status, a.acknowledged))
        .collect();
    assert_eq!(outcome, [(Some(500), false), (Some(204), true)]);

    // The query says so too, signed.
    let queried = query(&v3, "R-1").await;
    assert_eq!(queried.verify(&keys), Ok(()));
    let now = answer(&queried);
    assert_eq!(now.status, "SUCCESS");
    assert_eq!(now.refund_id, accepted.refund_id);
    assert!(now.success_time.is_some_and(|t| t.ends_with("+08:00")));
    let view = v3.sandbox.refund("R-1").await.expect("the refund");
    assert_eq!(
        (view.status.as_str(), view.api_version.as_str()),
        ("SUCCESS", "v3")
    );
}

#[tokio::test]
async fn the_same_request_again_is_the_same_refund_and_a_changed_one_is_refused() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let (no, _) = paid(&v3).await;
    let (other, _) = paid(&v3).await;
    let body = refund_body(&no, "R-same", 300, None);
    let first = answer(&apply(&v3, &body).await);
    let again = answer(&apply(&v3, &body).await);
    assert_eq!(again.refund_id, first.refund_id);
    assert_eq!(again.status, "PROCESSING");
    // Once settled, a repeat still answers that refund, as it now stands.
    v3.sandbox
        .settle_refund("R-same", settle(RefundStatus::Success))
        .await
        .expect("settled");
    let later = answer(&apply(&v3, &body).await);
    assert_eq!(
        (later.refund_id.as_str(), later.status.as_str()),
        (first.refund_id.as_str(), "SUCCESS")
    );

    for changed in [
        refund_body(&no, "R-same", 301, None),
        refund_body(&other, "R-same", 300, None),
    ] {
        let refused = apply(&v3, &changed).await;
        assert_eq!(
            (refused.status, refused.code()),
            (StatusCode::BAD_REQUEST, "INVALID_REQUEST".to_owned()),
            "{changed}"
        );
    }
    // Nothing of the other order was refunded, by either attempt.
    let order = v3.sandbox.order(&other).await.expect("the order");
    assert_eq!(order.status, "SUCCESS");
}

#[tokio::test]
async fn refunds_add_up_to_the_payment_and_a_closed_one_frees_its_amount() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let (no, transaction_id) = paid(&v3).await;
    answer(&apply(&v3, &refund_body(&no, "R-a", 4000, None)).await);
    // By transaction_id this time: the same order.
    let mut over = refund_body(&no, "R-b", 322, None);
    over.as_object_mut().map(|o| o.remove("out_trade_no"));
    over["transaction_id"] = json!(transaction_id);
    let refused = apply(&v3, &over).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST".to_owned())
    );
    let message = refused.json()["message"].as_str().unwrap_or("").to_owned();
    assert!(message.contains("可退金额"), "{message}");
    assert_eq!(
        v3.sandbox.refund("R-b").await.map_err(|e| e.status()),
        Err(Some(404)),
        "a refused refund is not recorded"
    );
    // What remains can be refunded.
    over["amount"]["refund"] = json!(321);
    assert_eq!(answer(&apply(&v3, &over).await).status, "PROCESSING");
    // A closed refund gives its amount back.
    v3.sandbox
        .settle_refund("R-a", settle(RefundStatus::RefundClose))
        .await
        .expect("closed");
    assert_eq!(
        answer(&apply(&v3, &refund_body(&no, "R-c", 4000, None)).await).status,
        "PROCESSING"
    );
}

#[tokio::test]
async fn refusals_say_why_with_wechats_codes_and_change_nothing() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;
    let (no, _) = paid(&v3).await;
    let unpaid = new_out_trade_no();
    v3.place_jsapi(&unpaid, NOTIFY).await;

    let unknown = apply(&v3, &refund_body(&new_out_trade_no(), "R-x1", 1, None)).await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS".to_owned())
    );
    assert_eq!(unknown.verify(&keys), Ok(()), "refusals are signed too");
    let not_paid = apply(&v3, &refund_body(&unpaid, "R-x2", 1, None)).await;
    assert_eq!(
        (not_paid.status, not_paid.code()),
        (StatusCode::BAD_REQUEST, "INVALID_REQUEST".to_owned())
    );
    let mut wrong_total = refund_body(&no, "R-x3", 1, None);
    wrong_total["amount"]["total"] = json!(4320);
    assert_eq!(apply(&v3, &wrong_total).await.code(), "INVALID_REQUEST");
    for refund in [0, -5] {
        let zero = apply(&v3, &refund_body(&no, "R-x4", refund, None)).await;
        assert_eq!(
            (zero.status, zero.code()),
            (StatusCode::BAD_REQUEST, "PARAM_ERROR".to_owned())
        );
    }
    // No signature, no refund.
    let unsigned = v3
        .send(
            "POST",
            REFUNDS,
            &refund_body(&no, "R-x5", 1, None).to_string(),
            None,
            &[],
        )
        .await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);

    // NOT_ENOUGH: refused, nothing recorded; the same request then goes through.
    v3.sandbox
        .set_faults(Faults {
            notenough: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    let body = refund_body(&no, "R-x6", 100, None);
    let poor = apply(&v3, &body).await;
    assert_eq!(
        (poor.status, poor.code()),
        (StatusCode::FORBIDDEN, "NOT_ENOUGH".to_owned())
    );
    assert_eq!(
        v3.sandbox.refund("R-x6").await.map_err(|e| e.status()),
        Err(Some(404))
    );
    // SYSTEM_ERROR: the same, as 500.
    v3.sandbox
        .set_faults(Faults {
            systemerror: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    let failed = apply(&v3, &body).await;
    assert_eq!(
        (failed.status, failed.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR".to_owned())
    );
    assert_eq!(answer(&apply(&v3, &body).await).status, "PROCESSING");
    for no in ["R-x1", "R-x2", "R-x3", "R-x4", "R-x5"] {
        assert_eq!(
            v3.sandbox.refund(no).await.map_err(|e| e.status()),
            Err(Some(404)),
            "{no}"
        );
    }
    assert_eq!(
        v3.sandbox.order(&unpaid).await.expect("order").status,
        "NOTPAY"
    );
}

#[tokio::test]
async fn abnormal_and_closed_outcomes_are_notified_and_queried_as_such() {
    let v3 = V3::start(KeyMode::Certificates).await;
    let certs = opened_certificates(&v3).await;
    let receiver = JsonReceiver::start(0).await;
    let (no, _) = paid(&v3).await;
    answer(&apply(&v3, &refund_body(&no, "R-ab", 100, Some(&receiver.url))).await);
    answer(&apply(&v3, &refund_body(&no, "R-cl", 200, Some(&receiver.url))).await);
    // v3's names are taken by the control API as well as v2's.
    for (out_refund_no, status) in [("R-ab", "ABNORMAL"), ("R-cl", "CLOSED")] {
        let settled = reqwest::Client::new()
            .post(format!(
                "{}/sandbox/refunds/{out_refund_no}/settle",
                v3.sandbox.base_url()
            ))
            .body(json!({ "status": status }).to_string())
            .send()
            .await
            .expect("sent");
        assert_eq!(settled.status(), StatusCode::OK);
    }
    let received = receiver.wait_for(2).await;
    let mut events: Vec<(String, String, String, Option<String>)> = received
        .iter()
        .map(|(headers, body)| {
            let (n, r) = opened(headers, body, &certs);
            (
                r.out_refund_no,
                n.event_type,
                r.refund_status,
                r.success_time,
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            (
                "R-ab".into(),
                "REFUND.ABNORMAL".into(),
                "ABNORMAL".into(),
                None
            ),
            ("R-cl".into(), "REFUND.CLOSED".into(), "CLOSED".into(), None),
        ]
    );
    assert_eq!(answer(&query(&v3, "R-ab").await).status, "ABNORMAL");
    let closed = query(&v3, "R-cl").await;
    assert_eq!(closed.verify(&certs), Ok(()));
    assert_eq!(answer(&closed).status, "CLOSED");
    // Only PROCESSING moves.
    let again = v3
        .sandbox
        .settle_refund("R-ab", settle(RefundStatus::Success))
        .await;
    assert_eq!(again.map_err(|e| e.status()).err(), Some(Some(409)));
}

#[tokio::test]
async fn a_refund_asked_without_a_notify_url_is_never_notified() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let (no, _) = paid(&v3).await;
    answer(&apply(&v3, &refund_body(&no, "R-quiet", 100, None)).await);
    v3.sandbox
        .settle_refund("R-quiet", settle(RefundStatus::Success))
        .await
        .expect("settled");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = v3
        .sandbox
        .refund_notifications("R-quiet")
        .await
        .expect("the delivery log");
    assert!(log.is_empty(), "{log:?}");
    assert_eq!(answer(&query(&v3, "R-quiet").await).status, "SUCCESS");
}

#[tokio::test]
async fn a_query_finds_only_the_callers_refunds() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let unknown = query(&v3, "R-none").await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS".to_owned())
    );
    let (no, _) = paid(&v3).await;
    answer(&apply(&v3, &refund_body(&no, "R-mine", 100, None)).await);
    // The provider's sub merchant does not see the direct merchant's refund.
    let foreign = v3
        .provider("GET", &format!("{REFUNDS}/R-mine?sub_mchid={SUB}"), None)
        .await;
    assert_eq!(foreign.code(), "RESOURCE_NOT_EXISTS");
}

#[tokio::test]
async fn a_provider_refunds_its_sub_merchants_order_and_is_notified_for_it() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(PROVIDER).await;
    let receiver = JsonReceiver::start(0).await;
    let no = new_out_trade_no();
    let place = json!({
        "sp_appid": PROVIDER_APP, "sp_mchid": PROVIDER,
        "sub_appid": SUB_APP, "sub_mchid": SUB,
        "description": "测试商品", "out_trade_no": no, "notify_url": NOTIFY,
        "amount": {"total": 4321},
        "payer": {"sub_openid": "oSubPayer"},
    });
    let placed = v3
        .provider("POST", "/v3/pay/partner/transactions/jsapi", Some(&place))
        .await;
    assert_eq!(placed.status, StatusCode::OK);
    v3.sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect("paid");

    let mut body = refund_body(&no, "R-sub", 4321, Some(&receiver.url));
    let without_sub = v3.provider("POST", REFUNDS, Some(&body)).await;
    assert_eq!(without_sub.code(), "PARAM_ERROR");
    body["sub_mchid"] = json!(SUB);
    let reply = v3.provider("POST", REFUNDS, Some(&body)).await;
    assert_eq!(reply.verify(&keys), Ok(()));
    assert_eq!(answer(&reply).status, "PROCESSING");
    let queried = v3
        .provider("GET", &format!("{REFUNDS}/R-sub?sub_mchid={SUB}"), None)
        .await;
    assert_eq!(answer(&queried).out_refund_no, "R-sub");

    v3.sandbox
        .settle_refund("R-sub", SettleOptions::default())
        .await
        .expect("settled");
    let received = receiver.wait_for(1).await;
    let (headers, raw) = &received[0];
    let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    let key = apiv3_key();
    let candidates = [Candidate {
        id: PROVIDER,
        keys: &keys,
        apiv3_key: &key,
    }];
    let opened = open(&signed, raw, Utc::now(), &candidates).expect("opens");
    let r: RefundResource = serde_json::from_slice(&opened.plaintext).expect("a resource");
    assert_eq!(
        (r.mchid, r.sp_mchid.as_deref(), r.sub_mchid.as_deref()),
        (None, Some(PROVIDER), Some(SUB))
    );
    assert_eq!(
        (r.refund_status.as_str(), r.amount.refund),
        ("SUCCESS", 4321)
    );
}

/// The platform certificates a merchant in certificate mode verifies with.
async fn opened_certificates(v3: &V3) -> WechatKeys {
    common::v3::opened(&v3.direct("GET", "/v3/certificates", None).await)
}
