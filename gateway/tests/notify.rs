//! `POST /wechat/pay/notify` end to end: a real gateway on port 0, a fresh
//! Postgres database, the shared Redis.

mod common;

use std::time::Duration;

use common::*;
use wxpay_core::{
    domain::{OrderStatus, OutTradeNo},
    wechat::{sign, ApiKey, SignType},
};

const WAIT: Duration = Duration::from_secs(5);
/// Long enough for a second copy of an event (direct publish plus the relay's
/// one-second sweep) to show up if there were one.
const QUIET: Duration = Duration::from_millis(1500);

async fn paid_once_with(sign_type: SignType) {
    let app = spawn_app().await;
    let order = app.create_order(101, sign_type).await;
    let mut sub = subscribe(&common_redis(), &order.out_trade_no).await;
    let tx = transaction_id();

    let (status, reply) = app
        .notify(signed(pay_fields(&order, &tx), &key(), sign_type))
        .await;

    assert_eq!(
        (status, return_code(&reply).as_str()),
        (200, "SUCCESS"),
        "{reply}"
    );
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!(paid.status, OrderStatus::Success);
    assert_eq!(paid.version, 2);
    assert_eq!(paid.transaction_id.as_deref(), Some(tx.as_str()));
    assert_eq!(paid.cash_fee, Some(101));
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
        app.notifications(order.out_trade_no.as_str()).await,
        vec!["applied"]
    );
    app.stop().await;
}

fn common_redis() -> String {
    wxpay_store::testing::redis_url()
}

#[tokio::test]
async fn a_valid_md5_notification_marks_the_order_paid_and_publishes_one_event() {
    paid_once_with(SignType::Md5).await;
}

#[tokio::test]
async fn a_valid_hmac_sha256_notification_marks_the_order_paid_and_publishes_one_event() {
    paid_once_with(SignType::HmacSha256).await;
}

/// The kept audit rows' algorithms for `no`, once `n` are there.
async fn kept_sign_types(app: &TestApp, no: &str, n: usize) -> Vec<Option<String>> {
    app.notifications_eventually(no, n).await;
    sqlx::query_scalar("SELECT sign_type FROM notifications WHERE out_trade_no = $1 ORDER BY id")
        .bind(no)
        .fetch_all(app.store.pool())
        .await
        .expect("read sign types")
}

#[tokio::test]
async fn a_genuine_hmac_sha256_notification_pays_an_md5_order_and_says_how_it_was_signed() {
    let app = spawn_app().await;
    let order = app.create_order(300, SignType::Md5).await;
    let tx = transaction_id();
    let hmac = signed(pay_fields(&order, &tx), &key(), SignType::HmacSha256);
    // The same payment again, signed the order's way and without sign_type.
    let mut md5 = pay_fields(&order, &tx);
    let s = sign::sign(md5.iter(), &key(), SignType::Md5);
    md5.insert("sign".into(), s);

    let (_, reply) = app.notify(hmac).await;
    let (_, again) = app.notify(encode(&md5)).await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    assert_eq!(return_code(&again), "SUCCESS", "{again}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!(
        (paid.status, paid.version, paid.sign_type),
        (OrderStatus::Success, 2, SignType::Md5)
    );
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert_eq!(
        app.notifications_eventually(order.out_trade_no.as_str(), 2)
            .await,
        ["applied", "duplicate"]
    );
    assert_eq!(
        kept_sign_types(&app, order.out_trade_no.as_str(), 2).await,
        [Some("HMAC-SHA256".to_owned()), Some("MD5".to_owned())],
        "each kept row says which algorithm proved it"
    );
    assert_eq!(app.rows("anomalies").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_notification_without_sign_type_is_verified_by_its_signatures_length() {
    let app = spawn_app().await;
    let order = app.create_order(300, SignType::HmacSha256).await;
    let mut fields = pay_fields(&order, &transaction_id());
    // WeChat signed with HMAC-SHA256 but did not say so.
    let s = sign::sign(fields.iter(), &key(), SignType::HmacSha256);
    fields.insert("sign".into(), s);

    let (_, reply) = app.notify(encode(&fields)).await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    assert_eq!(
        app.order(&order.out_trade_no).await.status,
        OrderStatus::Success
    );
}

#[tokio::test]
async fn a_hundred_sequential_copies_transition_once() {
    let app = spawn_app().await;
    let order = app.create_order(500, SignType::Md5).await;
    let mut sub = subscribe(&common_redis(), &order.out_trade_no).await;
    let body = signed(pay_fields(&order, &transaction_id()), &key(), SignType::Md5);

    for i in 0..100 {
        let (_, reply) = app.notify(body.clone()).await;
        assert_eq!(return_code(&reply), "SUCCESS", "copy {i}: {reply}");
    }

    assert_eq!(app.order(&order.out_trade_no).await.version, 2);
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert!(sub.next(WAIT).await.is_some(), "the one event is published");
    assert!(
        sub.drain(QUIET).await.is_empty(),
        "only one event is published"
    );
    let verdicts = app
        .notifications_eventually(order.out_trade_no.as_str(), 100)
        .await;
    assert_eq!(verdicts.len(), 100, "every copy is kept");
    assert_eq!(verdicts.iter().filter(|v| *v == "applied").count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_copies_transition_once() {
    let app = spawn_app().await;
    let order = app.create_order(500, SignType::HmacSha256).await;
    let mut sub = subscribe(&common_redis(), &order.out_trade_no).await;
    let body = signed(
        pay_fields(&order, &transaction_id()),
        &key(),
        SignType::HmacSha256,
    );

    let replies = futures::future::join_all((0..100).map(|_| app.notify(body.clone()))).await;

    for (i, (_, reply)) in replies.iter().enumerate() {
        assert_eq!(return_code(reply), "SUCCESS", "copy {i}: {reply}");
    }
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert!(sub.next(WAIT).await.is_some(), "the one event is published");
    assert!(
        sub.drain(QUIET).await.is_empty(),
        "only one event is published"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_failed_payment_marks_the_order_payerror() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    let mut fields = pay_fields(&order, "");
    fields.insert("result_code".into(), "FAIL".into());
    fields.insert("err_code".into(), "NOTENOUGH".into());

    let (_, reply) = app.notify(signed(fields, &key(), SignType::Md5)).await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let order = app.order(&order.out_trade_no).await;
    assert_eq!((order.status, order.version), (OrderStatus::PayError, 2));
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
}

#[tokio::test]
async fn a_payment_after_a_failed_one_marks_the_order_paid() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    let mut fields = pay_fields(&order, "");
    fields.insert("result_code".into(), "FAIL".into());
    fields.insert("err_code".into(), "NOTENOUGH".into());
    let (_, reply) = app.notify(signed(fields, &key(), SignType::Md5)).await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");

    // The payer tops up and pays the same order: WeChat's word wins.
    let tx = transaction_id();
    let (_, reply) = app
        .notify(signed(pay_fields(&order, &tx), &key(), SignType::Md5))
        .await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!((paid.status, paid.version), (OrderStatus::Success, 3));
    assert_eq!(paid.transaction_id.as_deref(), Some(tx.as_str()));
    assert_eq!(app.anomalies(order.out_trade_no.as_str()).await, 0);
}

#[tokio::test]
async fn a_payment_for_an_order_closed_here_is_recorded_and_flagged() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    sqlx::query("UPDATE orders SET status = 'CLOSED', version = 2 WHERE out_trade_no = $1")
        .bind(order.out_trade_no.as_str())
        .execute(app.store.pool())
        .await
        .expect("closed here");

    let tx = transaction_id();
    let (_, reply) = app
        .notify(signed(pay_fields(&order, &tx), &key(), SignType::Md5))
        .await;

    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!(
        paid.status,
        OrderStatus::Success,
        "the payer's money must show"
    );
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM anomalies WHERE out_trade_no = $1")
            .bind(order.out_trade_no.as_str())
            .fetch_all(app.store.pool())
            .await
            .expect("anomalies");
    assert_eq!(kinds, vec!["paid_after_close"]);
}

#[tokio::test]
async fn a_second_transaction_for_a_paid_order_is_an_anomaly_that_changes_nothing() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    let first = transaction_id();
    let (_, reply) = app
        .notify(signed(pay_fields(&order, &first), &key(), SignType::Md5))
        .await;
    assert_eq!(return_code(&reply), "SUCCESS");

    let (_, reply) = app
        .notify(signed(
            pay_fields(&order, &transaction_id()),
            &key(),
            SignType::Md5,
        ))
        .await;

    // Acknowledged: WeChat resending it for a day cannot change the answer.
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
    let paid = app.order(&order.out_trade_no).await;
    assert_eq!(
        (paid.version, paid.transaction_id.as_deref()),
        (2, Some(first.as_str()))
    );
    assert_eq!(app.event_rows(&order.out_trade_no).await, 1);
    assert_eq!(app.anomalies(order.out_trade_no.as_str()).await, 1);
}

/// What a refused notification is expected to get.
struct Refused {
    name: &'static str,
    body: Vec<u8>,
    status: u16,
    anomaly: bool,
}

#[tokio::test]
async fn refused_notifications_get_fail_and_change_nothing() {
    let app = spawn_app().await;
    let order = app.create_order(1000, SignType::Md5).await;
    let tx = transaction_id();
    let good = || pay_fields(&order, &tx);
    let md5 = |fields| signed(fields, &key(), SignType::Md5).into_bytes();
    let with = |k: &str, v: String| {
        let mut f = good();
        f.insert(k.to_owned(), v);
        f
    };
    let valid = String::from_utf8(md5(good())).expect("utf-8");
    let inner = valid
        .trim_start_matches("<xml>")
        .trim_end_matches("</xml>")
        .to_owned();
    let unknown = OutTradeNo::generate();

    let mut billion_laughs =
        String::from("<?xml version=\"1.0\"?><!DOCTYPE xml [<!ENTITY lol \"lol\">");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        billion_laughs.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">",
            format!("&{prev};").repeat(10)
        ));
    }
    billion_laughs.push_str(&format!("]><xml>{inner}<attach>&lol9;</attach></xml>"));

    let mut big = valid.clone().into_bytes();
    big.splice(
        5..5,
        format!("<pad>{}</pad>", "x".repeat(1024 * 1024)).into_bytes(),
    );

    let mut not_utf8 = valid.clone().into_bytes();
    let at = valid.find("JSAPI").expect("trade_type in body");
    not_utf8.splice(at..at, [0xff, 0xfe]);

    let cases = vec![
        Refused { name: "bad sign", body: {
            let mut f = good();
            sign::sign_fields(&mut f, &key(), SignType::Md5);
            f.insert("sign".into(), "0".repeat(32));
            encode(&f).into_bytes()
        }, status: 200, anomaly: false },
        Refused { name: "missing sign", body: encode(&good()).into_bytes(), status: 200, anomaly: false },
        Refused {
            name: "signed with the wrong key",
            body: signed(good(), &ApiKey::parse("qazwsxedcrfvtgbyhnujmikolp111111").expect("key"), SignType::Md5).into_bytes(),
            status: 200,
            anomaly: false,
        },
        Refused { name: "an HMAC-SHA256 signature named MD5", body: {
            let mut f = good();
            let s = sign::sign(f.iter(), &key(), SignType::HmacSha256);
            f.insert("sign".into(), s);
            f.insert("sign_type".into(), "MD5".into());
            encode(&f).into_bytes()
        }, status: 200, anomaly: false },
        Refused { name: "amount +1 fen", body: md5(with("total_fee", "1001".into())), status: 200, anomaly: true },
        Refused { name: "amount -1 fen", body: md5(with("total_fee", "999".into())), status: 200, anomaly: true },
        Refused { name: "fee_type USD", body: md5(with("fee_type", "USD".into())), status: 200, anomaly: true },
        Refused { name: "wrong appid", body: md5(with("appid", "wx0000000000000000".into())), status: 200, anomaly: true },
        // A merchant this deployment does not serve: refused before any database work.
        Refused { name: "wrong mch_id", body: md5(with("mch_id", "19999999".into())), status: 200, anomaly: false },
        Refused { name: "a sub_mch_id nobody configured", body: md5(with("sub_mch_id", "19999998".into())), status: 200, anomaly: false },
        Refused {
            name: "unknown out_trade_no",
            body: md5(with("out_trade_no", unknown.to_string())),
            status: 200,
            anomaly: false, // recorded under the unknown number, checked below
        },
        Refused {
            name: "external entity",
            body: format!(r#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml>{inner}<attach>&xxe;</attach></xml>"#).into_bytes(),
            status: 200,
            anomaly: false,
        },
        Refused {
            name: "parameter entity",
            body: format!(r#"<!DOCTYPE xml [<!ENTITY % remote SYSTEM "http://127.0.0.1:1/x.dtd"> %remote;]><xml>{inner}</xml>"#).into_bytes(),
            status: 200,
            anomaly: false,
        },
        Refused { name: "billion laughs", body: billion_laughs.into_bytes(), status: 200, anomaly: false },
        Refused { name: "1 MiB body", body: big, status: 413, anomaly: false },
        Refused { name: "truncated XML", body: valid.as_bytes()[..valid.len() / 2].to_vec(), status: 200, anomaly: false },
        Refused {
            name: "duplicate fields",
            body: valid.replace("</xml>", "<total_fee>1</total_fee></xml>").into_bytes(),
            status: 200,
            anomaly: false,
        },
        Refused { name: "invalid UTF-8", body: not_utf8, status: 200, anomaly: false },
    ];

    let mut anomalies = 0;
    for case in cases {
        let (status, reply) = app.notify(case.body).await;
        assert_eq!(status, case.status, "{}: status ({reply})", case.name);
        if status == 200 {
            assert_eq!(return_code(&reply), "FAIL", "{}: reply", case.name);
        }
        let now = app.order(&order.out_trade_no).await;
        assert_eq!(
            (now.status, now.version),
            (OrderStatus::NotPay, 1),
            "{}: order changed",
            case.name
        );
        assert_eq!(
            app.event_rows(&order.out_trade_no).await,
            0,
            "{}: event written",
            case.name
        );
        anomalies += i64::from(case.anomaly);
        assert_eq!(
            app.anomalies(order.out_trade_no.as_str()).await,
            anomalies,
            "{}: anomaly",
            case.name
        );
    }
    assert_eq!(
        app.anomalies(unknown.as_str()).await,
        1,
        "the unknown order is recorded"
    );

    // And the genuine message still works afterwards.
    let (_, reply) = app.notify(valid).await;
    assert_eq!(return_code(&reply), "SUCCESS", "{reply}");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let app = spawn_app().await;
    let order = app.create_order(100, SignType::Md5).await;
    app.notify(signed(
        pay_fields(&order, &transaction_id()),
        &key(),
        SignType::Md5,
    ))
    .await;

    assert_eq!(app.get("/healthz").await.0, 200);
    assert_eq!(app.readyz_settled(200).await, (200, "ready".to_owned()));
    // Metrics have their own listener; the public port does not serve them.
    assert_eq!(app.get("/metrics").await.0, 404);
    let (status, text) = app.metrics().await;
    assert_eq!(status, 200);
    for name in [
        // Counted under the merchant it was for (the one the WECHAT_* variables define).
        "wxpay_gateway_notifications_total{kind=\"pay\",verdict=\"applied\",merchant=\"default\"}",
        "wxpay_gateway_notification_duration_seconds_bucket",
        "wxpay_gateway_outbox_backlog",
        "wxpay_gateway_outbox_oldest_age_seconds",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    app.stop().await;
}

#[tokio::test]
async fn readiness_fails_when_redis_is_unreachable() {
    let app = spawn_app_with(Setup {
        redis_url: format!("redis://127.0.0.1:{}", free_port()),
        ..Setup::default()
    })
    .await;

    let (status, body) = app.readyz_settled(503).await;

    assert_eq!((status, body.as_str()), (503, "redis unavailable"));
}

#[tokio::test]
async fn the_router_answers_without_a_socket() {
    use std::sync::Arc;

    use axum::body::{to_bytes, Body};
    use tower::ServiceExt;
    use wxpay_core::wechat::MerchantBook;
    use wxpay_store::{events::RedisPublisher, testing::fresh_pg_store};

    let store = fresh_pg_store().await.expect("store");
    let publisher = RedisPublisher::new(&common_redis()).expect("publisher");
    let merchants = MerchantBook::new(vec![default_merchant()]).expect("one merchant");
    let state = gateway::AppState::new(Arc::new(store), Arc::new(publisher), merchants, None);
    let router = gateway::app(state, gateway::Readiness::default());

    let res = router
        .clone()
        .oneshot(
            http::Request::get("/healthz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 200);

    let res = router
        .oneshot(
            http::Request::post("/wechat/pay/notify")
                .body(Body::from(vec![b'x'; 64 * 1024 + 1]))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(res.status(), 413);
    let body = to_bytes(res.into_body(), 4096).await.expect("body");
    assert_eq!(return_code(&String::from_utf8_lossy(&body)), "FAIL");
}
