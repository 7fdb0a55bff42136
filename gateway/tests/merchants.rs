//! Several merchants in one gateway, end to end: `default` (direct, MD5) and
//! `tenant-b` (a sub merchant through a service provider, HMAC-SHA256, with
//! sub_mch_id and sub_app_id). Each message is verified with the key of the
//! merchant it names and applied only to that merchant's orders; one naming a
//! merchant nobody configured costs no database work at all.

mod common;

use common::*;
use gateway::{cloudpay, CloudpaySecret};
use wxpay_core::{
    domain::{MerchantName, Order, OrderStatus},
    wechat::{xml, ApiKey, SignType},
};
use wxpay_store::testing;

async fn two_merchant_app() -> TestApp {
    spawn_app_with(Setup {
        merchants: vec![default_merchant(), tenant_b()],
        ..Setup::default()
    })
    .await
}

fn return_msg(reply: &str) -> String {
    xml::decode(reply.as_bytes())
        .ok()
        .and_then(|f| f.get("return_msg").cloned())
        .unwrap_or_else(|| format!("<not a reply: {reply}>"))
}

/// A payment notification for `order` from `tenant-b`, signed with `key` under `sign_type`.
fn from_b(order: &Order, tx: &str, key: &ApiKey, t: SignType) -> String {
    signed(pay_fields_for(order, tx, &tenant_b()), key, t)
}

#[tokio::test]
async fn two_merchants_each_pay_their_own_orders_under_their_own_keys() {
    let app = two_merchant_app().await;
    let order_a = app.create_order(101, SignType::Md5).await;
    let order_b = app
        .create_order_for(202, SignType::HmacSha256, B_NAME)
        .await;
    let (tx_a, tx_b) = (transaction_id(), transaction_id());

    let (_, reply_a) = app
        .notify(signed(pay_fields(&order_a, &tx_a), &key(), SignType::Md5))
        .await;
    let (_, reply_b) = app
        .notify(from_b(&order_b, &tx_b, &b_key(), SignType::HmacSha256))
        .await;

    assert_eq!(return_code(&reply_a), "SUCCESS", "{reply_a}");
    assert_eq!(return_code(&reply_b), "SUCCESS", "{reply_b}");
    for (order, tx) in [(&order_a, &tx_a), (&order_b, &tx_b)] {
        let paid = app.order(&order.out_trade_no).await;
        assert_eq!(
            (paid.status, paid.version, paid.transaction_id.as_deref()),
            (OrderStatus::Success, 2, Some(tx.as_str()))
        );
        assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
        // An applied payment's audit copy is kept in the background batch.
        assert_eq!(
            app.notifications_eventually(order.out_trade_no.as_str(), 1)
                .await,
            vec!["applied"]
        );
        assert_eq!(app.anomalies(order.out_trade_no.as_str()).await, 0);
    }
    // Counted under the merchant each was for.
    let (_, metrics) = app.metrics().await;
    for series in [
        "wxpay_gateway_notifications_total{kind=\"pay\",verdict=\"applied\",merchant=\"default\"}",
        "wxpay_gateway_notifications_total{kind=\"pay\",verdict=\"applied\",merchant=\"tenant-b\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_message_signed_by_one_merchant_cannot_pass_for_another() {
    let app = two_merchant_app().await;
    let order_a = app.create_order(300, SignType::Md5).await;
    let order_b = app
        .create_order_for(300, SignType::HmacSha256, B_NAME)
        .await;
    let tx = transaction_id();

    // A's key, B's numbers (and B's order): only B's key can verify it.
    for sign_type in [SignType::Md5, SignType::HmacSha256] {
        let (status, reply) = app.notify(from_b(&order_b, &tx, &key(), sign_type)).await;
        assert_eq!(
            (
                status,
                return_code(&reply).as_str(),
                return_msg(&reply).as_str()
            ),
            (200, "FAIL", "SIGNERROR"),
            "{sign_type}: {reply}"
        );
    }
    let unpaid = app.order(&order_b.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    assert!(
        app.notifications(order_b.out_trade_no.as_str())
            .await
            .is_empty(),
        "a bad signature is not stored"
    );
    assert_eq!(app.anomalies(order_b.out_trade_no.as_str()).await, 0);

    // B's key and numbers, about A's order: genuine, but not B's to settle.
    let (_, reply) = app
        .notify(from_b(&order_a, &tx, &b_key(), SignType::HmacSha256))
        .await;
    assert_eq!(
        (return_code(&reply).as_str(), return_msg(&reply).as_str()),
        ("FAIL", "wrong_merchant"),
        "{reply}"
    );
    let unpaid = app.order(&order_a.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    assert_eq!(unpaid.transaction_id, None);
    assert_eq!(app.event_rows(&order_a.out_trade_no).await, 0);
    assert_eq!(
        app.anomaly_kinds(order_a.out_trade_no.as_str()).await,
        vec!["wrong_merchant"]
    );
    assert_eq!(
        app.notifications(order_a.out_trade_no.as_str()).await,
        vec!["wrong_merchant"]
    );

    // The same with A's order placed under B's sign type: nothing but the
    // order's merchant tells the two apart, and it is checked.
    let order_a_hmac = app.create_order(300, SignType::HmacSha256).await;
    let (_, reply) = app
        .notify(from_b(&order_a_hmac, &tx, &b_key(), SignType::HmacSha256))
        .await;
    assert_eq!(return_msg(&reply), "wrong_merchant", "{reply}");
    let unpaid = app.order(&order_a_hmac.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    assert_eq!(
        app.anomaly_kinds(order_a_hmac.out_trade_no.as_str()).await,
        vec!["wrong_merchant"]
    );

    // B's numbers with the provider's appid swapped for A's: WrongMerchant too.
    let mut wrong_app = pay_fields_for(&order_b, &tx, &tenant_b());
    wrong_app.insert("appid".into(), APP_ID.into());
    let (_, reply) = app
        .notify(signed(wrong_app, &b_key(), SignType::HmacSha256))
        .await;
    assert_eq!(return_msg(&reply), "wrong_merchant", "{reply}");
    let mut wrong_sub_app = pay_fields_for(&order_b, &tx, &tenant_b());
    wrong_sub_app.insert("sub_appid".into(), "wx0000000000000000".into());
    let (_, reply) = app
        .notify(signed(wrong_sub_app, &b_key(), SignType::HmacSha256))
        .await;
    assert_eq!(return_msg(&reply), "wrong_merchant", "{reply}");
    assert_eq!(
        app.order(&order_b.out_trade_no).await.status,
        OrderStatus::NotPay
    );

    // Each order's own merchant still pays it.
    let (_, reply) = app
        .notify(signed(pay_fields(&order_a, &tx), &key(), SignType::Md5))
        .await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let (_, reply) = app
        .notify(from_b(
            &order_b,
            &transaction_id(),
            &b_key(),
            SignType::HmacSha256,
        ))
        .await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    app.stop().await;
}

#[tokio::test]
async fn a_cached_payment_is_a_duplicate_only_for_its_own_merchant() {
    let app = two_merchant_app().await;
    let order = app.create_order(400, SignType::Md5).await;
    let tx = transaction_id();
    let genuine = signed(pay_fields(&order, &tx), &key(), SignType::Md5);
    let (_, reply) = app.notify(genuine.clone()).await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let (_, reply) = app.notify(genuine).await;
    assert_eq!(return_code(&reply), "SUCCESS", "a duplicate: {reply}");

    // Same order, transaction and amount, but signed by B: the cache entry is
    // A's, so this is judged from the database and refused.
    let (_, reply) = app
        .notify(from_b(&order, &tx, &b_key(), SignType::HmacSha256))
        .await;

    assert_eq!(return_msg(&reply), "wrong_merchant", "{reply}");
    let mut kept = app
        .notifications_eventually(order.out_trade_no.as_str(), 3)
        .await;
    // A duplicate answered from the cache is kept in a batch, so its row may
    // land after the refusal's: the rows, not their order, are the point.
    kept.sort();
    assert_eq!(kept, vec!["applied", "duplicate", "wrong_merchant"]);
    assert_eq!(
        app.anomaly_kinds(order.out_trade_no.as_str()).await,
        vec!["wrong_merchant"]
    );
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    app.stop().await;
}

#[tokio::test]
async fn a_notification_for_an_unconfigured_merchant_writes_nothing_and_reads_nothing() {
    let proxy = PgProxy::start(authority_of(&testing::admin_url())).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        merchants: vec![default_merchant(), tenant_b()],
        ..Setup::default()
    })
    .await;
    let order = app.create_order(500, SignType::Md5).await;
    let tx = transaction_id();
    let mut unknown_mch = pay_fields(&order, &tx);
    unknown_mch.insert("mch_id".into(), "1234567890".into());
    // B's provider number with a sub merchant it was not configured for.
    let mut unknown_sub = pay_fields_for(&order, &tx, &tenant_b());
    unknown_sub.insert("sub_mch_id".into(), "1900000999".into());
    // The provider's number alone is not a merchant here either (only its sub merchant is).
    let mut provider_alone = pay_fields_for(&order, &tx, &tenant_b());
    provider_alone.remove("sub_mch_id");
    let mut no_mch = pay_fields(&order, &tx);
    no_mch.remove("mch_id");
    let bodies = [
        ("unknown mch_id", signed(unknown_mch, &key(), SignType::Md5)),
        (
            "unknown sub_mch_id",
            signed(unknown_sub, &b_key(), SignType::HmacSha256),
        ),
        (
            "provider without sub_mch_id",
            signed(provider_alone, &b_key(), SignType::HmacSha256),
        ),
        ("no mch_id", signed(no_mch, &key(), SignType::Md5)),
    ];

    // With the database unreachable, any read would answer SYSTEMERROR.
    proxy.cut();
    for (name, body) in &bodies {
        let (status, reply) = app.notify(body.clone()).await;
        assert_eq!(
            (
                status,
                return_code(&reply).as_str(),
                return_msg(&reply).as_str()
            ),
            (200, "FAIL", "SIGNERROR"),
            "{name}: {reply}"
        );
    }
    proxy.restore();

    // Nothing stored about anything in this (fresh) database.
    assert_eq!(app.rows("notifications").await, 0);
    assert_eq!(app.rows("anomalies").await, 0);
    let unpaid = app.order(&order.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    let (_, metrics) = app.metrics().await;
    for series in [
        "wxpay_gateway_refused_total{kind=\"pay\",reason=\"unknown_merchant\"}",
        "wxpay_gateway_notifications_total{kind=\"pay\",verdict=\"bad_signature\",merchant=\"unknown\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    app.stop().await;
}

#[tokio::test]
async fn refund_notifications_decrypt_under_the_named_merchants_key_for_its_own_orders() {
    let app = two_merchant_app().await;
    let order_a = app
        .paid_order_for(600, SignType::Md5, MerchantName::DEFAULT)
        .await;
    let order_b = app.paid_order_for(700, SignType::HmacSha256, B_NAME).await;
    let txn_a = order_a.transaction_id.clone().expect("paid");
    let txn_b = order_b.transaction_id.clone().expect("paid");
    let refund = "/wechat/refund/notify";

    let refused = [
        (
            "A's key under B's mch_id",
            refund_notification(&order_b, "b-1", 700, &txn_b, &tenant_b(), &key()),
            "SIGNERROR",
            &order_b,
        ),
        (
            "B's key and numbers for A's order",
            refund_notification(&order_a, "a-1", 600, &txn_a, &tenant_b(), &b_key()),
            "wrong_merchant",
            &order_a,
        ),
        (
            "A's key and numbers for B's order",
            refund_notification(&order_b, "b-2", 700, &txn_b, &default_merchant(), &key()),
            "wrong_merchant",
            &order_b,
        ),
    ];
    for (name, body, msg, order) in refused {
        let (_, reply) = app.post(refund, body).await;
        assert_eq!(
            (return_code(&reply).as_str(), return_msg(&reply).as_str()),
            ("FAIL", msg),
            "{name}: {reply}"
        );
        app.assert_no_refund_applied(&order.out_trade_no, name)
            .await;
    }
    // The two genuine messages about another merchant's order are anomalies.
    for order in [&order_a, &order_b] {
        assert_eq!(
            app.anomaly_kinds(order.out_trade_no.as_str()).await,
            vec!["wrong_merchant"]
        );
    }

    // B's refund, under B's key and numbers, applies.
    let (_, reply) = app
        .post(
            refund,
            refund_notification(&order_b, "b-3", 700, &txn_b, &tenant_b(), &b_key()),
        )
        .await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let refunded = app.order(&order_b.out_trade_no).await;
    assert_eq!(
        (refunded.status, refunded.refunded_fee, refunded.version),
        (OrderStatus::Refund, 700, 3)
    );
    assert_eq!(
        app.notifications(order_b.out_trade_no.as_str())
            .await
            .last()
            .map(String::as_str),
        Some("applied")
    );
    app.stop().await;
}

fn cloudpay_body(order: &Order, sub_mch_id: &str, transaction_id: &str) -> String {
    serde_json::json!({
        "returnCode": "SUCCESS",
        "resultCode": "SUCCESS",
        "subMchId": sub_mch_id,
        "outTradeNo": order.out_trade_no.as_str(),
        "transactionId": transaction_id,
        "totalFee": order.total_fee.fen(),
        "cashFee": order.total_fee.fen(),
        "feeType": "CNY",
        "timeEnd": "20240102150405",
    })
    .to_string()
}

async fn post_cloudpay(app: &TestApp, body: String) -> serde_json::Value {
    let secret = CloudpaySecret::parse(CLOUDPAY_SECRET).expect("secret");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        .to_string();
    let res = app
        .http
        .post(format!("{}/cloudpay/callback", app.base))
        .header("content-type", "application/json")
        .header("x-cloudpay-timestamp", &now)
        .header(
            "x-cloudpay-signature",
            cloudpay::sign_body(&secret, &now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .expect("request sent");
    let text = res.text().await.expect("reply body");
    serde_json::from_str(&text).expect("a JSON reply")
}

#[tokio::test]
async fn cloudpay_callbacks_must_name_the_payee_of_the_orders_own_merchant() {
    let app = two_merchant_app().await;
    let order_a = app.create_order(800, SignType::Md5).await;
    let order_b = app
        .create_order_for(900, SignType::HmacSha256, B_NAME)
        .await;
    let gone = app.create_order_for(1000, SignType::Md5, "retired").await;
    let wrong = serde_json::json!({"errcode": 1, "errmsg": "wrong_merchant"});

    let cases = [
        (
            "A's order paid to B",
            cloudpay_body(&order_a, B_SUB_MCH_ID, &transaction_id()),
            &order_a,
        ),
        (
            "B's order paid to the provider itself",
            cloudpay_body(&order_b, B_MCH_ID, &transaction_id()),
            &order_b,
        ),
        (
            "B's order paid to A",
            cloudpay_body(&order_b, MCH_ID, &transaction_id()),
            &order_b,
        ),
        (
            "an order of a merchant no longer configured",
            cloudpay_body(&gone, MCH_ID, &transaction_id()),
            &gone,
        ),
    ];
    for (name, body, order) in cases {
        assert_eq!(post_cloudpay(&app, body).await, wrong, "{name}");
        let now = app.order(&order.out_trade_no).await;
        assert_eq!(
            (now.status, now.version),
            (OrderStatus::NotPay, 1),
            "{name}: order changed"
        );
    }
    assert_eq!(app.rows("anomalies").await, 4, "each is an anomaly");

    // Each paid to its own merchant's payee number: applied.
    let ok = serde_json::json!({"errcode": 0, "errmsg": "SUCCESS"});
    for (order, payee) in [(&order_a, MCH_ID), (&order_b, B_SUB_MCH_ID)] {
        let tx = transaction_id();
        // WeChat confirms each under its own merchant's key and sign type.
        app.wechat.says(
            &order.out_trade_no,
            Said::Paid {
                transaction_id: tx.clone(),
                total_fee: order.total_fee.fen(),
            },
        );
        let reply = post_cloudpay(&app, cloudpay_body(order, payee, &tx)).await;
        assert_eq!(reply, ok, "{payee}");
        assert_eq!(
            app.order(&order.out_trade_no).await.status,
            OrderStatus::Success
        );
    }
    app.stop().await;
}
