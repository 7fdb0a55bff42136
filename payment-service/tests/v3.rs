//! WeChat Pay API v3 merchants in one payment-service beside a v2 one, against
//! the sandbox speaking v3: a merchant in public-key mode, one in
//! platform-certificate mode and a service provider (partner endpoints) place
//! JSAPI and NATIVE orders (RSA `paySign`), are paid, queried and closed; an
//! answer with a bad signature is refused and changes nothing; a certificate
//! rotation in the middle of traffic fails no call. (Refunds and bills of v3
//! merchants: `v3_refunds.rs`.)

mod common;

use std::time::Duration;

use common::{v3::*, *};
use tonic::Code;
use wechat_sandbox::Faults;
use wxpay_core::wechat::v3::{models::CloseOrder, pay_params::jsapi_message, MerchantSigner};
use wxpay_proto::v1::{
    CreateOrderRequest, CreateOrderResponse, OrderStatus, QueryOrderRequest, TradeType,
};

/// The `wx.requestPayment` object is v3's: signType RSA, and paySign verifies
/// under the merchant's API key over `appId\ntimeStamp\nnonceStr\npackage\n`
/// (and not over anything else).
fn assert_rsa_pay_sign(reply: &CreateOrderResponse, signer: &MerchantSigner, app_id: &str) {
    let p = reply.payment.as_ref().expect("requestPayment parameters");
    assert_eq!(p.sign_type, "RSA");
    assert_eq!(p.app_id, app_id);
    let order = reply.order.as_ref().expect("order");
    assert_eq!(p.package, format!("prepay_id={}", order.prepay_id));
    assert!(!order.prepay_id.is_empty());
    let key = signer.public_key();
    let message = jsapi_message(&p.app_id, &p.time_stamp, &p.nonce_str, &p.package);
    assert!(
        key.verifies(message.as_bytes(), &p.pay_sign),
        "paySign verifies"
    );
    let other = jsapi_message(&p.app_id, &p.time_stamp, &p.nonce_str, "prepay_id=other");
    assert!(!key.verifies(other.as_bytes(), &p.pay_sign));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_merchants_in_both_key_modes_place_pay_query_and_close_beside_a_v2_one() {
    let mut t = harness().await;
    for (name, app_id) in [("v3pub", PUB_APP), ("v3cert", CERT_APP)] {
        let signer = if name == "v3pub" {
            t.pub_signer.clone()
        } else {
            t.cert_signer.clone()
        };
        // JSAPI: placed over v3, paid, learnt by QueryOrder.
        let jsapi = t
            .create(order_of(name, &format!("{name}-jsapi"), TradeType::Jsapi))
            .await;
        assert_rsa_pay_sign(&jsapi, &signer, app_id);
        let no = jsapi.order.expect("order").out_trade_no;
        let seen: serde_json::Value =
            t.h.http
                .get(format!("{}/sandbox/orders/{no}", t.h.sandbox))
                .send()
                .await
                .expect("sandbox order")
                .json()
                .await
                .expect("json");
        let mch_id = if name == "v3pub" { PUB_MCH } else { CERT_MCH };
        assert_eq!(seen["mch_id"], mch_id, "{seen}");
        assert_eq!(seen["api_version"], "v3", "{seen}");
        t.pay_at_wechat(&no).await;
        let paid = t.query(&no).await.expect("query");
        assert_eq!(paid.status, OrderStatus::Success as i32, "{name}");
        assert!(!paid.transaction_id.is_empty());
        assert!(paid.paid_at > 0);
        assert_eq!(
            t.close(&no).await.expect_err("paid").code(),
            Code::FailedPrecondition
        );

        // NATIVE: a code_url, then closed at WeChat and here.
        let native = t
            .create(order_of(name, &format!("{name}-native"), TradeType::Native))
            .await;
        assert!(
            native.code_url.starts_with("weixin://"),
            "{}",
            native.code_url
        );
        assert!(native.payment.is_none());
        let no = native.order.expect("order").out_trade_no;
        let closed = t.close(&no).await.expect("closed");
        assert_eq!(closed.status, OrderStatus::Closed as i32);
        assert_eq!(t.h.sandbox_status(&no).await, "CLOSED");

        // Paid at WeChat while NOTPAY here: the close learns the payment
        // (ORDERPAID) instead of closing.
        let native = t
            .create(order_of(
                name,
                &format!("{name}-paid-native"),
                TradeType::Native,
            ))
            .await;
        let no = native.order.expect("order").out_trade_no;
        t.pay_at_wechat(&no).await;
        let refused = t.close(&no).await.expect_err("already paid");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert!(refused.message().contains("paid"), "{}", refused.message());
        assert_eq!(t.status(&no).await.status, OrderStatus::Success as i32);
    }

    // The v2 merchant in the same service still speaks v2 (MD5 paySign).
    let v2 = t.create(request("v2-jsapi", 100)).await;
    let p = v2.payment.expect("v2 parameters");
    assert_eq!(p.sign_type, "MD5");
    let no = v2.order.expect("order").out_trade_no;
    t.h.pay_and_query(&no).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_closed_at_wechat_already_closes_here_too() {
    let mut t = harness().await;
    let native = t
        .create(order_of("v3pub", "closed-elsewhere", TradeType::Native))
        .await;
    let no = native.order.expect("order").out_trade_no;
    // Another system of the merchant's closes it at WeChat first.
    let keys = t.h.platform_keys.clone().expect("v3 keys");
    let other_system = keys.client(t.pub_entry.clone()).expect("a v3 client");
    other_system
        .post_no_content(
            &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
            &CloseOrder {
                mchid: Some(PUB_MCH.into()),
                ..CloseOrder::default()
            },
        )
        .await
        .expect("closed at WeChat");
    assert_eq!(t.status(&no).await.status, OrderStatus::Notpay as i32);
    // WeChat answers 400 ORDER_CLOSED to our close: closed here as well.
    let closed = t.close(&no).await.expect("closed");
    assert_eq!(closed.status, OrderStatus::Closed as i32);
    assert_eq!(t.h.sandbox_status(&no).await, "CLOSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_bad_signature_is_refused_and_changes_nothing() {
    let mut t = harness().await;
    for name in ["v3pub", "v3cert"] {
        // Placing: the forged answer gives no prepay_id; the order stays
        // NOTPAY without one, and a retry with the same key is served.
        t.h.sandbox_handle()
            .set_faults(Faults {
                bad_signature: 1,
                ..Faults::default()
            })
            .await
            .expect("armed");
        let key = format!("{name}-forged");
        let refused =
            t.h.client
                .create_order(order_of(name, &key, TradeType::Jsapi))
                .await
                .expect_err("untrusted");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let retried = t.create(order_of(name, &key, TradeType::Jsapi)).await;
        assert!(retried.payment.is_some());
        let no = retried.order.expect("order").out_trade_no;

        // Querying: WeChat has it paid, but its answer does not verify.
        t.pay_at_wechat(&no).await;
        let before = t.status(&no).await;
        let events = t.h.event_count(&no).await;
        t.h.sandbox_handle()
            .set_faults(Faults {
                bad_signature: 1,
                ..Faults::default()
            })
            .await
            .expect("armed");
        let refused = t.query(&no).await.expect_err("untrusted");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let after = t.status(&no).await;
        assert_eq!(after.status, OrderStatus::Notpay as i32, "{name}");
        assert_eq!(after.version, before.version);
        assert!(after.transaction_id.is_empty());
        assert_eq!(t.h.event_count(&no).await, events, "nothing stored");
        // The next, genuine answer is believed.
        let paid = t.query(&no).await.expect("query");
        assert_eq!(paid.status, OrderStatus::Success as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotation_in_the_middle_of_traffic_fails_no_call() {
    let t = harness().await;
    let keys = t.h.platform_keys.clone().expect("v3 keys");
    let before = keys.keys(CERT_MCH).expect("certificate merchant").len();
    assert!(before >= 1, "a certificate was downloaded at start");
    // Each worker keeps calling until it has made three calls after the
    // rotation finished, so calls run before, during and after it.
    let rotated = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = |worker: usize| {
        let mut client = t.h.client.clone();
        let rotated = rotated.clone();
        async move {
            let mut after = 0;
            for i in 0..200 {
                let done = rotated.load(std::sync::atomic::Ordering::SeqCst);
                let reply = client
                    .create_order(order_of(
                        "v3cert",
                        &format!("rotation-{worker}-{i}"),
                        TradeType::Native,
                    ))
                    .await
                    .map_err(|e| format!("create {worker}/{i}: {e:?}"))?
                    .into_inner();
                let no = reply.order.map(|o| o.out_trade_no).unwrap_or_default();
                client
                    .query_order(QueryOrderRequest { out_trade_no: no })
                    .await
                    .map_err(|e| format!("query {worker}/{i}: {e:?}"))?;
                if done {
                    after += 1;
                    if after == 3 {
                        return Ok(i);
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(format!("worker {worker} never saw the rotation"))
        }
    };
    let rotate = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let view =
            t.h.sandbox_handle()
                .rotate_certificate()
                .await
                .expect("rotated");
        rotated.store(true, std::sync::atomic::Ordering::SeqCst);
        view
    };
    let (a, b, c, rotated) = tokio::join!(traffic(0), traffic(1), traffic(2), rotate);
    for outcome in [a, b, c] {
        let calls = outcome.expect("every call succeeded");
        assert!(calls > 3, "calls before the rotation too");
    }
    // After the rotation WeChat signs with the new certificate, which the
    // service now holds beside the old one.
    let mut client = t.h.client.clone();
    let reply = client
        .create_order(order_of("v3cert", "after-rotation", TradeType::Native))
        .await
        .expect("placed after the rotation")
        .into_inner();
    assert!(!reply.code_url.is_empty());
    let held = keys.keys(CERT_MCH).expect("keys");
    assert!(
        held.iter().any(|k| k.id() == rotated.serial_no),
        "the new certificate {} is held",
        rotated.serial_no
    );
    assert!(held.len() > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_provider_places_for_its_sub_merchant() {
    let mut t = harness().await;
    // The payer under the sub merchant's mini program.
    let jsapi = t
        .create(CreateOrderRequest {
            openid: String::new(),
            sub_openid: "oSubPayer0123456789".into(),
            ..order_of("v3sp", "sp-jsapi", TradeType::Jsapi)
        })
        .await;
    assert_rsa_pay_sign(&jsapi, &t.sp_signer, SUB_APP);
    let no = jsapi.order.expect("order").out_trade_no;
    let seen: serde_json::Value =
        t.h.http
            .get(format!("{}/sandbox/orders/{no}", t.h.sandbox))
            .send()
            .await
            .expect("sandbox order")
            .json()
            .await
            .expect("json");
    assert_eq!(seen["sub_mch_id"], SUB_MCH, "{seen}");
    t.pay_at_wechat(&no).await;
    let paid = t.query(&no).await.expect("query over the partner endpoint");
    assert_eq!(paid.status, OrderStatus::Success as i32);

    let native = t
        .create(order_of("v3sp", "sp-native", TradeType::Native))
        .await;
    assert!(native.code_url.starts_with("weixin://"));
    let closed = t
        .close(&native.order.expect("order").out_trade_no)
        .await
        .expect("closed over the partner endpoint");
    assert_eq!(closed.status, OrderStatus::Closed as i32);

    // MWEB is v3's h5: the scene and the payer's IP go as scene_info.
    let h5 = t
        .create(CreateOrderRequest {
            scene_info:
                r#"{"h5_info":{"type":"Wap","wap_url":"https://m.shop.example","wap_name":"shop"}}"#
                    .into(),
            ..order_of("v3pub", "pub-h5", TradeType::Mweb)
        })
        .await;
    assert!(h5.mweb_url.starts_with("http"), "{}", h5.mweb_url);
}
