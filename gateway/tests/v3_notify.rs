//! `POST /wechat/v3/pay/notify` end to end: a real gateway on port 0, a fresh
//! Postgres database, the shared Redis; WeChat's side signed and sealed with
//! core's v3 code under core's test keys.

mod common;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use common::{v3::*, *};
use wxpay_core::{
    domain::{OrderStatus, OutTradeNo},
    wechat::{v3::WechatKeys, SignType},
};
use wxpay_store::testing;

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a second copy of an event (direct publish plus the relay's
/// one-second sweep) to show up if there were one.
const QUIET: Duration = Duration::from_millis(1500);

async fn v3_app(merchants: Vec<wxpay_core::wechat::MerchantEntry>) -> TestApp {
    spawn_app_with(Setup {
        merchants,
        ..Setup::default()
    })
    .await
}

/// The kinds and verdicts kept for `no`, once `n` are there.
async fn kept(app: &TestApp, no: &OutTradeNo, n: usize) -> Vec<(String, String, Option<String>)> {
    app.notifications_eventually(no.as_str(), n).await;
    sqlx::query_as(
        "SELECT kind, verdict, sign_type FROM notifications WHERE out_trade_no = $1 ORDER BY id",
    )
    .bind(no.as_str())
    .fetch_all(app.store.pool())
    .await
    .expect("read notifications")
}

#[tokio::test]
async fn a_genuine_v3_notification_pays_the_order_once_with_one_event_and_answers_204() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let order = app.create_order_for(2468, SignType::Md5, V3_NAME).await;
    let mut sub = subscribe(&testing::redis_url(), &order.out_trade_no).await;
    let tx = transaction_id();
    let body = paid_body(&transaction(&order, &tx, &shop_v3()));

    let (status, reply) = app.notify_v3(&signed_now(&body), body).await;

    assert_eq!((status, reply.as_str()), (204, ""), "accepted: no body");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(paid.transaction_id.as_deref(), Some(tx.as_str()));
    assert_eq!(paid.cash_fee, Some(2468));
    assert_eq!(
        paid.paid_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-01-02T07:04:05+00:00")
    );
    let event = sub.next(WAIT).await.expect("an event is published");
    assert_eq!((event.status.as_str(), event.version), ("SUCCESS", 2));
    assert_eq!(event.transaction_id.as_deref(), Some(tx.as_str()));
    assert!(sub.drain(QUIET).await.is_empty(), "exactly one event");
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert_eq!(
        kept(&app, &order.out_trade_no, 1).await,
        [("pay_v3".to_owned(), "applied".to_owned(), None)],
        "kept as a v3 payment (the sign_type column holds only v2 algorithms)"
    );
    let (_, metrics) = app.metrics().await;
    let series = "wxpay_gateway_notifications_total{kind=\"pay_v3\",verdict=\"applied\",merchant=\"shop-v3\"}";
    assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn duplicates_and_concurrent_copies_of_a_v3_notification_apply_once_and_all_get_204() {
    let app = v3_app(vec![shop_v3()]).await;
    let order = app.create_order_for(500, SignType::Md5, V3_NAME).await;
    let mut sub = subscribe(&testing::redis_url(), &order.out_trade_no).await;
    let body = paid_body(&transaction(&order, &transaction_id(), &shop_v3()));
    let headers = signed_now(&body);

    // Two copies at once (WeChat sends from two servers), then a resend.
    let (a, b) = tokio::join!(
        app.notify_v3(&headers, body.clone()),
        app.notify_v3(&headers, body.clone())
    );
    let again = app.notify_v3(&headers, body.clone()).await;

    for (i, (status, reply)) in [a, b, again].iter().enumerate() {
        assert_eq!((*status, reply.as_str()), (204, ""), "copy {i}");
    }
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert!(sub.next(WAIT).await.is_some(), "the one event is published");
    assert!(sub.drain(QUIET).await.is_empty(), "only one event");
    let verdicts: Vec<String> = kept(&app, &order.out_trade_no, 3)
        .await
        .into_iter()
        .map(|(_, v, _)| v)
        .collect();
    assert_eq!(verdicts.len(), 3, "every copy is kept: {verdicts:?}");
    assert_eq!(verdicts.iter().filter(|v| *v == "applied").count(), 1);
    assert_eq!(verdicts.iter().filter(|v| *v == "duplicate").count(), 2);
    app.stop().await;
}

#[tokio::test]
async fn forged_stale_probe_tampered_or_foreign_v3_notifications_are_refused_unread_and_unstored() {
    let proxy = PgProxy::start(authority_of(&testing::admin_url())).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        merchants: vec![default_merchant(), shop_v3()],
        ..Setup::default()
    })
    .await;
    let order = app.create_order_for(300, SignType::Md5, V3_NAME).await;
    let good = transaction(&order, &transaction_id(), &shop_v3());
    let body = paid_body(&good);

    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    // The same JSON written again (pretty): what an SDK that parses first checks.
    let reserialized = serde_json::to_vec_pretty(
        &serde_json::from_slice::<serde_json::Value>(&body).expect("json"),
    )
    .expect("json");
    let foreign = envelope(
        "TRANSACTION.SUCCESS",
        &serde_json::to_vec(&good).expect("json"),
        &apiv3(OTHER_APIV3),
    );
    let mut other_mch = good.clone();
    other_mch.mchid = Some("1900000999".into());
    let other_mch = paid_body(&other_mch);
    let mut other_app = good.clone();
    other_app.appid = Some("wx0000000000000000".into());
    let other_app = paid_body(&other_app);
    let mut as_partner = good.clone();
    as_partner.sub_mchid = Some("1900000301".into());
    let as_partner = paid_body(&as_partner);
    let mut probe = signed_now(&body);
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", probe.signature);
    let mut unknown_serial = signed_now(&body);
    unknown_serial.serial = "PUB_KEY_ID_0000000000000000000000".into();
    let mut no_nonce_sig = signed_now(&body);
    no_nonce_sig.nonce = "another-nonce".into();

    let cases: Vec<(&str, V3Headers, Vec<u8>, u16, &str)> = vec![
        (
            "forged: signed by a key that is not WeChat's",
            {
                let mut h = sign_at(&body, &wechat_cert_signer(), now());
                h.serial = PUB_KEY_ID.into();
                h
            },
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "stale: signed 5 minutes ago",
            sign_at(&body, &wechat_pubkey_signer(), now() - 300),
            body.clone(),
            401,
            "stale_timestamp",
        ),
        (
            "from 5 minutes ahead (a second of slack for the request)",
            sign_at(&body, &wechat_pubkey_signer(), now() + 301),
            body.clone(),
            401,
            "stale_timestamp",
        ),
        ("WeChat's probe", probe, body.clone(), 401, "probe"),
        (
            "one byte of the body changed",
            signed_now(&body),
            tampered,
            401,
            "bad_signature",
        ),
        (
            "the body re-serialized",
            signed_now(&body),
            reserialized,
            401,
            "bad_signature",
        ),
        (
            "another nonce than was signed",
            no_nonce_sig,
            body.clone(),
            401,
            "bad_signature",
        ),
        (
            "a serial nobody holds",
            unknown_serial,
            body.clone(),
            401,
            "unknown_serial",
        ),
        (
            "resource sealed under another APIv3 key",
            signed_now(&foreign),
            foreign,
            401,
            "undecryptable",
        ),
        (
            "resource naming another mchid",
            signed_now(&other_mch),
            other_mch.clone(),
            403,
            "wrong_merchant",
        ),
        (
            "resource naming a sub_mchid the merchant does not have",
            signed_now(&as_partner),
            as_partner.clone(),
            403,
            "wrong_merchant",
        ),
        (
            "resource naming another appid",
            signed_now(&other_app),
            other_app.clone(),
            403,
            "wrong_app",
        ),
        (
            "signed, but not a notification",
            signed_now(b"{\"id\":1}"),
            b"{\"id\":1}".to_vec(),
            400,
            "malformed",
        ),
    ];
    let mut before = Vec::new();
    for (_, _, _, _, reason) in &cases {
        before.push(app.refused_v3(reason).await);
    }

    // With the database unreachable, any read would be answered 503.
    proxy.cut();
    for (name, headers, body, status, _) in &cases {
        let (got, reply) = app.notify_v3(headers, body.clone()).await;
        assert_eq!(
            (got, fail_code(&reply).as_str()),
            (*status, "FAIL"),
            "{name}: {reply}"
        );
    }
    // Headers missing altogether.
    let bare = app
        .http
        .post(format!("{}/wechat/v3/pay/notify", app.base))
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(bare.status().as_u16(), 401);
    proxy.restore();

    let unpaid = app.order(&order.out_trade_no).await;
    assert_eq!((unpaid.status, unpaid.version), (OrderStatus::NotPay, 1));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 0);
    assert_eq!(
        app.rows("notifications").await,
        0,
        "nothing unproven is kept"
    );
    assert_eq!(app.rows("anomalies").await, 0);
    for ((name, _, _, _, reason), before) in cases.iter().zip(before) {
        assert!(
            app.refused_v3(reason).await > before,
            "{name}: not counted under {reason}"
        );
    }

    // The genuine message itself, after all that: paid.
    let (status, _) = app.notify_v3(&signed_now(&body), body).await;
    assert_eq!(status, 204);
    assert_eq!(
        app.order(&order.out_trade_no).await.status,
        OrderStatus::Success
    );
    app.stop().await;
}

#[tokio::test]
async fn a_proven_v3_notification_that_does_not_fit_its_order_pays_nothing_as_in_v2() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let order = app.create_order_for(1000, SignType::Md5, V3_NAME).await;
    let v2_order = app.create_order(1000, SignType::Md5).await;

    let mut wrong_amount = transaction(&order, &transaction_id(), &shop_v3());
    if let Some(a) = wrong_amount.amount.as_mut() {
        a.total = 1;
    }
    let unknown = {
        let mut t = transaction(&order, &transaction_id(), &shop_v3());
        t.out_trade_no = OutTradeNo::generate().to_string();
        t
    };
    // Proven for shop-v3, about the v2 merchant's order.
    let others_order = transaction(&v2_order, &transaction_id(), &shop_v3());

    for (name, t, status, verdict, anomaly) in [
        (
            "another amount",
            &wrong_amount,
            409,
            "amount_mismatch",
            "amount_mismatch",
        ),
        (
            "an unknown order",
            &unknown,
            404,
            "unknown_order",
            "unknown_order",
        ),
        (
            "another merchant's order",
            &others_order,
            403,
            "wrong_merchant",
            "wrong_merchant",
        ),
    ] {
        let body = paid_body(t);
        let (got, reply) = app.notify_v3(&signed_now(&body), body).await;
        assert_eq!(
            (got, fail_code(&reply).as_str()),
            (status, "FAIL"),
            "{name}: {reply}"
        );
        let no = &t.out_trade_no;
        // Proven, so kept with its verdict and an anomaly, as v2 keeps them.
        assert_eq!(app.notifications(no).await, [verdict], "{name}");
        assert_eq!(app.anomaly_kinds(no).await, [anomaly], "{name}");
    }
    for o in [&order, &v2_order] {
        let now = app.order(&o.out_trade_no).await;
        assert_eq!((now.status, now.version), (OrderStatus::NotPay, 1));
        assert_eq!(app.event_rows(&o.out_trade_no).await, 0);
    }
    app.stop().await;
}

#[tokio::test]
async fn other_v3_events_are_acknowledged_and_kept_but_apply_nothing() {
    let app = v3_app(vec![shop_v3()]).await;
    let order = app.create_order_for(700, SignType::Md5, V3_NAME).await;
    let refund = serde_json::json!({
        "mchid": V3_MCH_ID, "out_trade_no": order.out_trade_no.as_str(),
        "transaction_id": transaction_id(), "out_refund_no": "R1", "refund_id": "5000R1",
        "refund_status": "SUCCESS", "amount": {"total": 700, "refund": 700}
    });
    let body = envelope(
        "REFUND.SUCCESS",
        &serde_json::to_vec(&refund).expect("json"),
        &apiv3(APIV3),
    );

    let (status, reply) = app.notify_v3(&signed_now(&body), body).await;

    assert_eq!((status, reply.as_str()), (204, ""));
    let now = app.order(&order.out_trade_no).await;
    assert_eq!((now.status, now.version), (OrderStatus::NotPay, 1));
    assert_eq!(app.rows("notifications").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn with_the_database_down_a_v3_notification_gets_503_fail_and_the_retry_pays() {
    let proxy = PgProxy::start(authority_of(&testing::admin_url())).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        merchants: vec![shop_v3()],
        ..Setup::default()
    })
    .await;
    let order = app.create_order_for(888, SignType::Md5, V3_NAME).await;
    let body = paid_body(&transaction(&order, &transaction_id(), &shop_v3()));

    proxy.cut();
    let (status, reply) = app.notify_v3(&signed_now(&body), body.clone()).await;
    assert_eq!(
        (status, fail_code(&reply).as_str()),
        (503, "FAIL"),
        "{reply}"
    );
    proxy.restore();
    let unpaid = app.order(&order.out_trade_no).await;
    assert_eq!(unpaid.status, OrderStatus::NotPay);

    // WeChat resends (freshly signed): paid once.
    let (status, _) = app.notify_v3(&signed_now(&body), body).await;
    assert_eq!(status, 204);
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_v2_notification_for_a_v2_merchant_still_pays_beside_v3_ones() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let v2 = app.create_order(100, SignType::Md5).await;
    let v3 = app.create_order_for(200, SignType::Md5, V3_NAME).await;
    let body = paid_body(&transaction(&v3, &transaction_id(), &shop_v3()));

    let (_, v2_reply) = app
        .notify(signed(
            pay_fields(&v2, &transaction_id()),
            &key(),
            SignType::Md5,
        ))
        .await;
    let (status, _) = app.notify_v3(&signed_now(&body), body).await;

    assert_eq!(return_code(&v2_reply), "SUCCESS", "{v2_reply}");
    assert_eq!(status, 204);
    for o in [&v2, &v3] {
        let paid = app.order(&o.out_trade_no).await;
        assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    }
    assert_eq!(
        kept(&app, &v2.out_trade_no, 1).await,
        [(
            "pay".to_owned(),
            "applied".to_owned(),
            Some("MD5".to_owned())
        )]
    );
    // A v2 message cannot pay the v3 merchant's order: it has no APIv2 key.
    let v3_other = app.create_order_for(300, SignType::Md5, V3_NAME).await;
    let fields = pay_fields_for(&v3_other, &transaction_id(), &shop_v3());
    let (_, reply) = app.notify(signed(fields, &key(), SignType::Md5)).await;
    assert_eq!(return_code(&reply), "FAIL", "{reply}");
    assert_eq!(
        app.order(&v3_other.out_trade_no).await.status,
        OrderStatus::NotPay
    );
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_platform_certificate_is_fetched_once_on_its_first_message_then_verifies() {
    let keys = Arc::new(TestKeySource::default());
    *keys.pending.lock().expect("lock") = Some(platform_cert());
    let app = spawn_app_with(Setup {
        merchants: vec![cert_v3()],
        wechat_keys: Some(keys.clone()),
        ..Setup::default()
    })
    .await;
    let order = app.create_order_for(150, SignType::Md5, CERT_NAME).await;
    let body = paid_body(&transaction(&order, &transaction_id(), &cert_v3()));

    // Signed under a certificate the gateway has not seen yet.
    let (status, reply) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body.clone())
        .await;

    assert_eq!((status, reply.as_str()), (204, ""), "{reply}");
    assert_eq!(keys.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(
        app.order(&order.out_trade_no).await.status,
        OrderStatus::Success
    );
    // Known now: a copy costs no refresh.
    let (status, _) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body)
        .await;
    assert_eq!(status, 204);
    assert_eq!(keys.refreshes.load(Ordering::SeqCst), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_serial_that_a_refresh_does_not_find_is_refused() {
    let keys = Arc::new(TestKeySource::default());
    keys.offline.store(true, Ordering::SeqCst);
    let app = spawn_app_with(Setup {
        merchants: vec![cert_v3()],
        wechat_keys: Some(keys.clone()),
        ..Setup::default()
    })
    .await;
    let order = app.create_order_for(150, SignType::Md5, CERT_NAME).await;
    let body = paid_body(&transaction(&order, &transaction_id(), &cert_v3()));
    let before = app.refused_v3("unknown_serial").await;

    let (status, reply) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body)
        .await;

    assert_eq!(
        (status, fail_code(&reply).as_str()),
        (401, "FAIL"),
        "{reply}"
    );
    assert_eq!(keys.refreshes.load(Ordering::SeqCst), 1);
    assert!(app.refused_v3("unknown_serial").await > before);
    assert_eq!(app.rows("notifications").await, 0);
    assert_eq!(
        app.order(&order.out_trade_no).await.status,
        OrderStatus::NotPay
    );
    // A key source that holds the certificate: the same message would verify.
    keys.offline.store(false, Ordering::SeqCst);
    *keys.keys.lock().expect("lock") = WechatKeys::new(vec![platform_cert()]);
    let body = paid_body(&transaction(&order, &transaction_id(), &cert_v3()));
    let (status, _) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body)
        .await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[tokio::test]
async fn a_providers_sub_merchants_share_its_apiv3_key_and_each_is_paid_only_its_own_orders() {
    let (a, b) = (
        sub_v3("sub-a", "1900000501", "wx6666666666666666"),
        sub_v3("sub-b", "1900000502", "wx7777777777777777"),
    );
    let app = v3_app(vec![a.clone(), b.clone()]).await;
    let for_a = app.create_order_for(120, SignType::Md5, "sub-a").await;
    let for_b = app.create_order_for(130, SignType::Md5, "sub-b").await;

    for (order, entry) in [(&for_a, &b), (&for_b, &b)] {
        let body = paid_body(&transaction(order, &transaction_id(), entry));
        let (status, reply) = app.notify_v3(&signed_now(&body), body).await;
        let expected = if order.out_trade_no == for_b.out_trade_no {
            204
        } else {
            403
        };
        assert_eq!(status, expected, "{reply}");
    }
    // sub-b's payment paid sub-b's order; sub-b's numbers on sub-a's order did not.
    assert_eq!(
        app.order(&for_b.out_trade_no).await.status,
        OrderStatus::Success
    );
    assert_eq!(
        app.order(&for_a.out_trade_no).await.status,
        OrderStatus::NotPay
    );
    assert_eq!(
        app.anomaly_kinds(for_a.out_trade_no.as_str()).await,
        ["wrong_merchant"]
    );
    // The right sub-merchant's message pays sub-a's order.
    let body = paid_body(&transaction(&for_a, &transaction_id(), &a));
    let (status, _) = app.notify_v3(&signed_now(&body), body).await;
    assert_eq!(status, 204);
    assert_eq!(
        app.order(&for_a.out_trade_no).await.status,
        OrderStatus::Success
    );
    app.stop().await;
}

#[tokio::test]
async fn a_certificate_mode_merchant_verifies_with_the_certificate_kept_in_the_database() {
    // No key source given: the gateway's own PlatformKeys, which loads what
    // another replica (or payment-service) downloaded.
    let app = spawn_app_with(Setup {
        merchants: vec![cert_v3(), shop_v3()],
        stored_certificates: vec![stored(CERT_MCH_ID, &platform_cert())],
        ..Setup::default()
    })
    .await;
    let order = app.create_order_for(160, SignType::Md5, CERT_NAME).await;
    let body = paid_body(&transaction(&order, &transaction_id(), &cert_v3()));

    let (status, reply) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body.clone())
        .await;

    assert_eq!((status, reply.as_str()), (204, ""), "{reply}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    // Certificates are kept per account: signed under cert-v3's certificate,
    // a payment to shop-v3 finds cert-v3 the only candidate, and the resource
    // names shop-v3's numbers, not cert-v3's. shop-v3's own key still
    // verifies shop-v3's messages.
    let other = app.create_order_for(170, SignType::Md5, V3_NAME).await;
    let body = paid_body(&transaction(&other, &transaction_id(), &shop_v3()));
    let (status, _) = app
        .notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body.clone())
        .await;
    assert_eq!(
        status, 403,
        "cert-v3's certificate does not speak for shop-v3"
    );
    assert_eq!(
        app.order(&other.out_trade_no).await.status,
        OrderStatus::NotPay
    );
    let (status, _) = app.notify_v3(&signed_now(&body), body).await;
    assert_eq!(status, 204);
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_forged_v3_notifications_stores_nothing_and_a_genuine_one_still_pays() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let order = app.create_order_for(300, SignType::Md5, V3_NAME).await;
    let good = paid_body(&transaction(&order, &transaction_id(), &shop_v3()));
    let refused_before = app.refused_v3("bad_signature").await;
    // 1,000 bodies of ~40 KiB claiming a payment, each different (padding in
    // `summary`), under headers that name WeChat's public key but were signed
    // by another key over another body: what a stranger can send.
    let forged_headers = {
        let mut h = sign_at(&good, &wechat_cert_signer(), now());
        h.serial = PUB_KEY_ID.into();
        h
    };
    const FORGED: usize = 1_000;
    let mut sent = tokio::task::JoinSet::new();
    let app = Arc::new(app);
    for i in 0..FORGED {
        let (app, headers) = (app.clone(), forged_headers.clone());
        let mut envelope: serde_json::Value = serde_json::from_slice(&good).expect("json");
        envelope["summary"] = serde_json::Value::String(format!("{i}{}", "x".repeat(40 * 1024)));
        let body = serde_json::to_vec(&envelope).expect("json");
        sent.spawn(async move { app.notify_v3(&headers, body).await.0 });
        // A bounded number in flight, as a sender's connection pool would be.
        if sent.len() >= 64 {
            assert_eq!(sent.join_next().await.expect("a task").expect("sent"), 401);
        }
    }
    while let Some(status) = sent.join_next().await {
        assert_eq!(status.expect("sent"), 401);
    }
    assert_eq!(app.rows("notifications").await, 0, "nothing unproven kept");
    assert_eq!(app.event_rows(&order.out_trade_no).await, 0);
    assert_eq!(
        app.refused_v3("bad_signature").await,
        refused_before + FORGED as u64,
        "each counted by its reason"
    );
    let (status, _) = app.notify_v3(&signed_now(&good), good.clone()).await;
    assert_eq!(status, 204, "the genuine one after the flood");
    assert_eq!(
        app.order(&order.out_trade_no).await.status,
        OrderStatus::Success
    );
}
