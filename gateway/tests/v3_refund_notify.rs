//! `POST /wechat/v3/refund/notify` end to end: a real gateway on port 0, a
//! fresh Postgres database, the shared Redis; WeChat's side signed and sealed
//! with core's v3 code under core's test keys. Refunds are placed in the store
//! first, as RefundOrder places them before WeChat is asked.

mod common;

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use common::{v3::*, *};
use wxpay_core::{
    domain::{
        EventSource, Fee, NewRefund, Order, OrderStatus, OutRefundNo, OutTradeNo, Refund,
        RefundReason, RefundStatus,
    },
    wechat::{
        v3::models::{RefundResource, REFUND_ABNORMAL, REFUND_CLOSED, REFUND_SUCCESS},
        MerchantEntry, SignType,
    },
};
use wxpay_store::{testing, RefundPlacement, Store};

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a second copy of an event (direct publish plus the relay's
/// one-second sweep) to show up if there were one.
const QUIET: Duration = Duration::from_millis(1500);

async fn v3_app(merchants: Vec<MerchantEntry>) -> TestApp {
    spawn_app_with(Setup {
        merchants,
        ..Setup::default()
    })
    .await
}

/// A paid order of shop-v3 (version 2, its payment event long published).
async fn paid(app: &TestApp, fen: i64) -> Order {
    app.paid_order_for(fen, SignType::Md5, V3_NAME).await
}

/// What the store answers when a refund of `fen` is placed on `order`.
async fn place(app: &TestApp, order: &Order, out_refund_no: &str, fen: i64) -> RefundPlacement {
    app.store
        .insert_refund(&NewRefund {
            out_refund_no: OutRefundNo::parse(out_refund_no).expect("valid"),
            out_trade_no: order.out_trade_no.clone(),
            refund_fee: Fee::new(fen).expect("positive"),
            reason: RefundReason::parse("不想要了").expect("valid"),
        })
        .await
        .expect("the store answers")
}

/// A refund of `fen` placed on `order` (PROCESSING), under a fresh number.
async fn placed(app: &TestApp, order: &Order, fen: i64) -> String {
    let no = format!("R{}", OutTradeNo::generate());
    let placement = place(app, order, &no, fen).await;
    assert!(
        matches!(placement, RefundPlacement::Placed(_)),
        "{placement:?}"
    );
    no
}

async fn refund(app: &TestApp, no: &str) -> Refund {
    app.store
        .refund(&OutRefundNo::parse(no).expect("valid"))
        .await
        .expect("read refund")
        .expect("refund exists")
}

/// Sends `r` as a `event_type` notification, signed now by WeChat.
async fn send(app: &TestApp, event_type: &str, r: &RefundResource) -> (u16, String) {
    let body = refund_body(event_type, r);
    app.refund_notify_v3(&signed_now(&body), body).await
}

/// The kinds and verdicts kept for `no`.
async fn kept(app: &TestApp, no: &OutTradeNo) -> Vec<(String, String)> {
    sqlx::query_as("SELECT kind, verdict FROM notifications WHERE out_trade_no = $1 ORDER BY id")
        .bind(no.as_str())
        .fetch_all(app.store.pool())
        .await
        .expect("read notifications")
}

#[tokio::test]
async fn a_refund_success_settles_its_refund_once_with_one_event_however_many_copies_come() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let order = paid(&app, 1000).await;
    let no = placed(&app, &order, 400).await;
    let mut sub = subscribe(&testing::redis_url(), &order.out_trade_no).await;
    let body = refund_body(
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 400, "SUCCESS", &shop_v3()),
    );
    let headers = signed_now(&body);

    // Two copies at once (WeChat sends from two servers), then a resend.
    let (a, b) = tokio::join!(
        app.refund_notify_v3(&headers, body.clone()),
        app.refund_notify_v3(&headers, body.clone())
    );
    let again = app.refund_notify_v3(&headers, body).await;

    for (i, (status, reply)) in [a, b, again].iter().enumerate() {
        assert_eq!((*status, reply.as_str()), (204, ""), "copy {i}");
    }
    let r = refund(&app, &no).await;
    assert_eq!(r.status, RefundStatus::Success);
    assert_eq!(r.refund_id.as_deref(), Some(format!("5030{no}").as_str()));
    assert_eq!(
        r.succeeded_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-01-03T02:00:00+00:00")
    );
    let now = app.order(&order.out_trade_no).await;
    assert_eq!(
        (now.status, now.refunded_fee, now.version),
        (OrderStatus::Refund, 400, 3)
    );
    assert_eq!(
        app.event_rows(&order.out_trade_no).await,
        2,
        "payment, refund"
    );
    // What WatchOrder with include_refunds relays.
    let event = sub
        .next(WAIT)
        .await
        .expect("the refund's event is published");
    assert_eq!(
        (
            event.status,
            event.source,
            event.refunded_fee,
            event.version
        ),
        (OrderStatus::Refund, EventSource::Refund, 400, 3)
    );
    assert!(sub.drain(QUIET).await.is_empty(), "exactly one event");
    let verdicts = kept(&app, &order.out_trade_no).await;
    assert_eq!(verdicts.len(), 3, "every copy is kept: {verdicts:?}");
    assert!(verdicts.iter().all(|(kind, _)| kind == "refund_v3"));
    let count = |v: &str| verdicts.iter().filter(|(_, x)| x == v).count();
    assert_eq!((count("applied"), count("duplicate")), (1, 2));
    let (_, metrics) = app.metrics().await;
    let series = "wxpay_gateway_notifications_total{kind=\"refund_v3\",verdict=\"applied\",merchant=\"shop-v3\"}";
    assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn abnormal_is_change_until_success_settles_it_and_late_messages_change_nothing() {
    let app = v3_app(vec![shop_v3()]).await;
    let order = paid(&app, 1000).await;
    let no = placed(&app, &order, 300).await;
    let mut sub = subscribe(&testing::redis_url(), &order.out_trade_no).await;
    let abnormal = refund_resource(&order, &no, 300, "ABNORMAL", &shop_v3());
    let success = refund_resource(&order, &no, 300, "SUCCESS", &shop_v3());

    let (status, reply) = send(&app, REFUND_ABNORMAL, &abnormal).await;
    assert_eq!((status, reply.as_str()), (204, ""));
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Change);
    let now = app.order(&order.out_trade_no).await;
    assert_eq!(
        (now.status, now.refunded_fee, now.version),
        (OrderStatus::Success, 0, 3),
        "the money has not reached the payer: nothing refunded yet"
    );
    let event = sub.next(WAIT).await.expect("the CHANGE is published");
    assert_eq!(
        (event.source, event.refunded_fee),
        (EventSource::RefundChange, 0)
    );

    let (status, _) = send(&app, REFUND_SUCCESS, &success).await;
    assert_eq!(status, 204);
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
    let now = app.order(&order.out_trade_no).await;
    assert_eq!(
        (now.status, now.refunded_fee, now.version),
        (OrderStatus::Refund, 300, 4)
    );
    let event = sub.next(WAIT).await.expect("the SUCCESS is published");
    assert_eq!(
        (event.source, event.refunded_fee),
        (EventSource::Refund, 300)
    );

    // A late ABNORMAL or CLOSED about a refund already final: acknowledged,
    // and nothing moves.
    let closed = refund_resource(&order, &no, 300, "CLOSED", &shop_v3());
    for (event_type, r) in [(REFUND_ABNORMAL, &abnormal), (REFUND_CLOSED, &closed)] {
        let (status, reply) = send(&app, event_type, r).await;
        assert_eq!((status, reply.as_str()), (204, ""), "{event_type}");
    }
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
    let now = app.order(&order.out_trade_no).await;
    assert_eq!((now.refunded_fee, now.version), (300, 4));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 3);
    assert!(sub.drain(QUIET).await.is_empty(), "no event for late news");
    app.stop().await;
}

#[tokio::test]
async fn a_closed_refund_frees_its_money_for_another_refund() {
    let app = v3_app(vec![shop_v3()]).await;
    let order = paid(&app, 1000).await;
    let no = placed(&app, &order, 700).await;
    let mut sub = subscribe(&testing::redis_url(), &order.out_trade_no).await;
    assert_eq!(
        place(&app, &order, "other-1", 1000).await,
        RefundPlacement::Exceeds { available: 300 },
        "the PROCESSING refund holds 700"
    );

    let closed = refund_resource(&order, &no, 700, "CLOSED", &shop_v3());
    let (status, reply) = send(&app, REFUND_CLOSED, &closed).await;

    assert_eq!((status, reply.as_str()), (204, ""));
    let r = refund(&app, &no).await;
    assert_eq!((r.status, r.succeeded_at), (RefundStatus::Closed, None));
    let now = app.order(&order.out_trade_no).await;
    assert_eq!(
        (now.status, now.refunded_fee, now.version),
        (OrderStatus::Success, 0, 3)
    );
    let event = sub.next(WAIT).await.expect("the CLOSED is published");
    assert_eq!(event.source, EventSource::RefundClosed);
    // All 1000 fen are refundable again.
    assert!(matches!(
        place(&app, &order, "other-2", 1000).await,
        RefundPlacement::Placed(_)
    ));
    app.stop().await;
}

#[tokio::test]
async fn a_proven_refund_that_does_not_fit_its_refund_or_order_applies_nothing_as_in_v2() {
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let v2_order = app
        .paid_order_for(
            1000,
            SignType::Md5,
            wxpay_core::domain::MerchantName::DEFAULT,
        )
        .await;
    let unpaid = app.create_order_for(1000, SignType::Md5, V3_NAME).await;

    struct Case {
        name: &'static str,
        event_type: &'static str,
        status: u16,
        verdict: &'static str,
        anomaly: Option<&'static str>,
    }
    let case = |name, status, verdict, anomaly| Case {
        name,
        event_type: REFUND_SUCCESS,
        status,
        verdict,
        anomaly,
    };
    let mismatch = |name| case(name, 409, "amount_mismatch", Some("refund_amount_mismatch"));
    let cases = [
        mismatch("another refund amount"),
        mismatch("another order total"),
        mismatch("another transaction_id"),
        mismatch("the refund of another order"),
        case(
            "another merchant's order",
            403,
            "wrong_merchant",
            Some("wrong_merchant"),
        ),
        case(
            "an unknown order",
            404,
            "unknown_order",
            Some("unknown_order"),
        ),
        case(
            "an order not paid yet",
            409,
            "wrong_state",
            Some("refund_before_payment"),
        ),
        Case {
            event_type: REFUND_CLOSED,
            ..case("REFUND.CLOSED saying SUCCESS", 400, "invalid", None)
        },
    ];
    for c in cases {
        // Each case its own paid order with a placed refund of 400.
        let order = paid(&app, 1000).await;
        let no = placed(&app, &order, 400).await;
        let mut r = refund_resource(&order, &no, 400, "SUCCESS", &shop_v3());
        match c.name {
            "another refund amount" => r.amount.refund = 401,
            "another order total" => r.amount.total = 999,
            "another transaction_id" => r.transaction_id = transaction_id(),
            "the refund of another order" => {
                let other = paid(&app, 1000).await;
                r = refund_resource(&other, &no, 400, "SUCCESS", &shop_v3());
            }
            "another merchant's order" => {
                r = refund_resource(&v2_order, "v2-refund", 400, "SUCCESS", &shop_v3());
            }
            "an unknown order" => r.out_trade_no = OutTradeNo::generate().to_string(),
            "an order not paid yet" => {
                r = refund_resource(&unpaid, "early", 400, "SUCCESS", &shop_v3());
                r.transaction_id = transaction_id();
            }
            _ => {}
        }

        let (status, reply) = send(&app, c.event_type, &r).await;

        assert_eq!(
            (status, fail_code(&reply).as_str()),
            (c.status, "FAIL"),
            "{}: {reply}",
            c.name
        );
        // Proven, so kept with its verdict (and an anomaly), as v2 keeps them.
        assert_eq!(
            app.notifications(&r.out_trade_no).await,
            [c.verdict],
            "{}",
            c.name
        );
        let anomalies = app.anomaly_kinds(&r.out_trade_no).await;
        assert_eq!(
            anomalies.last().map(String::as_str),
            c.anomaly,
            "{}",
            c.name
        );
        assert_eq!(
            refund(&app, &no).await.status,
            RefundStatus::Processing,
            "{}",
            c.name
        );
        let now = app.order(&order.out_trade_no).await;
        assert_eq!((now.refunded_fee, now.version), (0, 2), "{}", c.name);
    }
    let v2_now = app.order(&v2_order.out_trade_no).await;
    assert_eq!((v2_now.status, v2_now.version), (OrderStatus::Success, 2));
    assert!(app
        .store
        .refunds_of(&v2_order.out_trade_no)
        .await
        .expect("list")
        .is_empty());
    assert_eq!(app.order(&unpaid.out_trade_no).await.version, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_refund_this_service_did_not_place_is_recorded_as_v2_records_it() {
    // Made in the merchant console: the money moved all the same.
    let app = v3_app(vec![shop_v3()]).await;
    let order = paid(&app, 1000).await;

    let r = refund_resource(&order, "console-1", 250, "SUCCESS", &shop_v3());
    let (status, _) = send(&app, REFUND_SUCCESS, &r).await;
    let too_much = refund_resource(&order, "console-2", 751, "SUCCESS", &shop_v3());
    let (over, reply) = send(&app, REFUND_SUCCESS, &too_much).await;

    assert_eq!(status, 204);
    assert_eq!(
        refund(&app, "console-1").await.status,
        RefundStatus::Success
    );
    assert_eq!(
        (over, fail_code(&reply).as_str()),
        (409, "FAIL"),
        "more than is left: {reply}"
    );
    let now = app.order(&order.out_trade_no).await;
    assert_eq!((now.status, now.refunded_fee), (OrderStatus::Refund, 250));
    assert_eq!(
        app.store
            .refunds_of(&order.out_trade_no)
            .await
            .expect("list")
            .len(),
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn forged_stale_probe_tampered_or_foreign_refund_notifications_are_refused_unread_and_unstored(
) {
    let proxy = PgProxy::start(authority_of(&testing::admin_url())).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        merchants: vec![default_merchant(), shop_v3()],
        ..Setup::default()
    })
    .await;
    let order = paid(&app, 1000).await;
    let no = placed(&app, &order, 500).await;
    let good = refund_resource(&order, &no, 500, "SUCCESS", &shop_v3());
    let body = refund_body(REFUND_SUCCESS, &good);

    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let foreign = envelope_of(
        "refund",
        REFUND_SUCCESS,
        &serde_json::to_vec(&good).expect("json"),
        &apiv3(OTHER_APIV3),
    );
    let mut other_mch = good.clone();
    other_mch.mchid = Some("1900000999".into());
    let other_mch = refund_body(REFUND_SUCCESS, &other_mch);
    let mut as_partner = good.clone();
    as_partner.sub_mchid = Some("1900000301".into());
    let as_partner = refund_body(REFUND_SUCCESS, &as_partner);
    let mut probe = signed_now(&body);
    probe.signature = format!("WECHATPAY/SIGNTEST/{}", probe.signature);
    let mut unknown_serial = signed_now(&body);
    unknown_serial.serial = "PUB_KEY_ID_0000000000000000000000".into();
    let forged = {
        let mut h = sign_at(&body, &wechat_cert_signer(), now());
        h.serial = PUB_KEY_ID.into();
        h
    };

    let cases: Vec<(&str, V3Headers, Vec<u8>, u16, &str)> = vec![
        (
            "forged: signed by a key that is not WeChat's",
            forged,
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
        ("WeChat's probe", probe, body.clone(), 401, "probe"),
        (
            "one byte of the body changed",
            signed_now(&body),
            tampered,
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
            other_mch,
            403,
            "wrong_merchant",
        ),
        (
            "resource naming a sub_mchid the merchant does not have",
            signed_now(&as_partner),
            as_partner,
            403,
            "wrong_merchant",
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
        before.push(app.refused("refund_v3", reason).await);
    }

    // With the database unreachable, any read would be answered 503.
    proxy.cut();
    for (name, headers, body, status, _) in &cases {
        let (got, reply) = app.refund_notify_v3(headers, body.clone()).await;
        assert_eq!(
            (got, fail_code(&reply).as_str()),
            (*status, "FAIL"),
            "{name}: {reply}"
        );
    }
    proxy.restore();

    assert_eq!(refund(&app, &no).await.status, RefundStatus::Processing);
    let now = app.order(&order.out_trade_no).await;
    assert_eq!((now.refunded_fee, now.version), (0, 2));
    assert_eq!(
        app.rows("notifications").await,
        0,
        "nothing unproven is kept"
    );
    assert_eq!(app.rows("anomalies").await, 0);
    for ((name, _, _, _, reason), before) in cases.iter().zip(before) {
        assert!(
            app.refused("refund_v3", reason).await > before,
            "{name}: not counted under refund_v3/{reason}"
        );
    }

    // The genuine message itself, after all that: applied.
    let (status, _) = app.refund_notify_v3(&signed_now(&body), body).await;
    assert_eq!(status, 204);
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
    app.stop().await;
}

#[tokio::test]
async fn with_the_database_down_a_refund_notification_gets_503_fail_and_the_retry_applies_it() {
    let proxy = PgProxy::start(authority_of(&testing::admin_url())).await;
    let app = spawn_app_with(Setup {
        db_proxy: Some(proxy.addr),
        merchants: vec![shop_v3()],
        ..Setup::default()
    })
    .await;
    let order = paid(&app, 888).await;
    let no = placed(&app, &order, 88).await;
    let body = refund_body(
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 88, "SUCCESS", &shop_v3()),
    );

    proxy.cut();
    let (status, reply) = app.refund_notify_v3(&signed_now(&body), body.clone()).await;
    assert_eq!(
        (status, fail_code(&reply).as_str()),
        (503, "FAIL"),
        "{reply}"
    );
    proxy.restore();
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Processing);

    // WeChat resends (freshly signed) until it hears 2xx: applied once. A
    // pooled connection the outage killed fails its next statement (the
    // store pings only long-idle ones), so the first resends may still be
    // 503, as WeChat's own retries would be.
    let mut replies = Vec::new();
    for _ in 0..20 {
        let (status, _) = app.refund_notify_v3(&signed_now(&body), body.clone()).await;
        replies.push(status);
        if status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (last, before) = replies.split_last().expect("one reply at least");
    assert_eq!(*last, 204, "{replies:?}");
    assert!(before.iter().all(|s| *s == 503), "{replies:?}");
    let now = app.order(&order.out_trade_no).await;
    assert_eq!(
        (now.status, now.refunded_fee, now.version),
        (OrderStatus::Refund, 88, 3)
    );
    assert_eq!(app.event_rows(&order.out_trade_no).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_refund_signed_under_a_rotated_certificate_is_applied_after_one_refresh() {
    let keys = Arc::new(TestKeySource::default());
    *keys.pending.lock().expect("lock") = Some(platform_cert());
    let app = spawn_app_with(Setup {
        merchants: vec![cert_v3()],
        wechat_keys: Some(keys.clone()),
        ..Setup::default()
    })
    .await;
    let order = app.paid_order_for(150, SignType::Md5, CERT_NAME).await;
    let no = placed(&app, &order, 150).await;
    let body = refund_body(
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 150, "SUCCESS", &cert_v3()),
    );

    let (status, reply) = app
        .refund_notify_v3(&sign_at(&body, &wechat_cert_signer(), now()), body)
        .await;

    assert_eq!((status, reply.as_str()), (204, ""), "{reply}");
    assert_eq!(keys.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
    app.stop().await;
}

#[tokio::test]
async fn a_providers_sub_merchant_settles_only_its_own_refunds() {
    let (a, b) = (
        sub_v3("sub-a", "1900000501", "wx6666666666666666"),
        sub_v3("sub-b", "1900000502", "wx7777777777777777"),
    );
    let app = v3_app(vec![a.clone(), b.clone()]).await;
    let order = app.paid_order_for(120, SignType::Md5, "sub-a").await;
    let no = placed(&app, &order, 120).await;

    // sub-b's numbers (sp_mchid + sub_mchid) on sub-a's order.
    let (status, _) = send(
        &app,
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 120, "SUCCESS", &b),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        app.anomaly_kinds(order.out_trade_no.as_str()).await,
        ["wrong_merchant"]
    );
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Processing);

    let (status, _) = send(
        &app,
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 120, "SUCCESS", &a),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
    app.stop().await;
}

/// What a stranger can send the refund route: 1,000 different ~40 KiB bodies
/// claiming a refund succeeded, under headers naming WeChat's public key but
/// signed by another key over another body. None is stored or applied, each
/// is counted, and the genuine notification after them still settles.
#[tokio::test]
async fn a_flood_of_forged_v3_refund_notifications_stores_nothing_and_a_genuine_one_still_settles()
{
    let app = v3_app(vec![default_merchant(), shop_v3()]).await;
    let order = paid(&app, 1000).await;
    let no = placed(&app, &order, 400).await;
    let good = refund_body(
        REFUND_SUCCESS,
        &refund_resource(&order, &no, 400, "SUCCESS", &shop_v3()),
    );
    let refused_before = app.refused("refund_v3", "bad_signature").await;
    let forged_headers = {
        let mut h = sign_at(&good, &wechat_cert_signer(), now());
        h.serial = PUB_KEY_ID.into();
        h
    };
    const FORGED: usize = 1_000;
    let app = Arc::new(app);
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..FORGED {
        let (app, headers) = (app.clone(), forged_headers.clone());
        let mut envelope: serde_json::Value = serde_json::from_slice(&good).expect("json");
        envelope["summary"] = serde_json::Value::String(format!("{i}{}", "x".repeat(40 * 1024)));
        let body = serde_json::to_vec(&envelope).expect("json");
        sent.spawn(async move { app.refund_notify_v3(&headers, body).await.0 });
        // A bounded number in flight, as a sender's connection pool would be.
        if sent.len() >= 64 {
            assert_eq!(sent.join_next().await.expect("a task").expect("sent"), 401);
        }
    }
    while let Some(status) = sent.join_next().await {
        assert_eq!(status.expect("sent"), 401);
    }
    assert!(
        kept(&app, &order.out_trade_no).await.is_empty(),
        "nothing unproven kept"
    );
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Processing);
    assert_eq!(
        app.refused("refund_v3", "bad_signature").await,
        refused_before + FORGED as u64,
        "each counted by its reason"
    );
    let (status, _) = app.refund_notify_v3(&signed_now(&good), good.clone()).await;
    assert_eq!(status, 204, "the genuine one after the flood");
    assert_eq!(refund(&app, &no).await.status, RefundStatus::Success);
}
