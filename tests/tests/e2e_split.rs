//! The split deployment end to end: the four real binaries as separate
//! processes (wired as in docker-compose.yml) against Postgres, Redis and the
//! WeChat sandbox. A mini program's whole payment: CreateOrder, the
//! requestPayment parameters, WatchOrder, the payer paying in "WeChat", the
//! notification through the gateway, the pushed SUCCESS and the stored order;
//! the poller's fallback when the notification never comes; graceful shutdown.

use std::time::Duration;

use e2e_tests::{Stack, StackOptions, API_KEY, APP_ID};
use payment_service::reconciler::ReconcilerConfig;
use sqlx::Connection;
use tonic::Streaming;
use wxpay_core::wechat::{pay_params, ApiKey};
use wxpay_proto::v1::{
    CreateOrderRequest, GetOrderRequest, Order, OrderStatus, OrderStatusEvent, WatchOrderRequest,
};

/// Longest wait for one stream message: far more than a notification needs,
/// short enough that a lost one fails the test instead of hanging it.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(15);

async fn create_order(stack: &Stack, key: &str) -> (Order, wxpay_proto::v1::PaymentParams) {
    let reply = stack
        .payments()
        .await
        .expect("connect to payment-service")
        .create_order(CreateOrderRequest {
            idempotency_key: key.to_owned(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            description: "会员充值".to_owned(),
            total_fee: 1,
            attach: String::new(),
            client_ip: "127.0.0.1".to_owned(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner();
    let order = reply.order.expect("an order");
    let payment = reply
        .payment
        .expect("requestPayment parameters for an unpaid order");
    (order, payment)
}

async fn watch(stack: &Stack, out_trade_no: &str) -> Streaming<OrderStatusEvent> {
    stack
        .watcher()
        .await
        .expect("connect to the poller")
        .watch_order(WatchOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            timeout_seconds: 60,
            include_refunds: false,
        })
        .await
        .expect("WatchOrder")
        .into_inner()
}

async fn next(stream: &mut Streaming<OrderStatusEvent>) -> Option<OrderStatusEvent> {
    tokio::time::timeout(MESSAGE_TIMEOUT, stream.message())
        .await
        .expect("no stream message in time")
        .expect("stream error")
}

async fn get_order(stack: &Stack, out_trade_no: &str) -> Order {
    stack
        .payments()
        .await
        .expect("connect to payment-service")
        .get_order(GetOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
        })
        .await
        .expect("GetOrder")
        .into_inner()
}

/// What `wx.requestPayment` would check: the signature over exactly the fields
/// the mini program passes, with the merchant's key.
fn assert_request_payment_verifies(order: &Order, p: &wxpay_proto::v1::PaymentParams) {
    let params = pay_params::PaymentParams {
        app_id: p.app_id.clone(),
        time_stamp: p.time_stamp.clone(),
        nonce_str: p.nonce_str.clone(),
        package: p.package.clone(),
        sign_type: p.sign_type.parse().expect("MD5 or HMAC-SHA256"),
        pay_sign: p.pay_sign.clone(),
    };
    let key = ApiKey::parse(API_KEY).expect("the test key");
    assert!(
        pay_params::verify(&params, &key),
        "paySign does not verify: {p:?}"
    );
    assert_eq!(p.app_id, APP_ID);
    assert_eq!(p.sign_type, "HMAC-SHA256", "the configured sign type");
    assert_eq!(p.package, format!("prepay_id={}", order.prepay_id));
}

#[tokio::test]
async fn paid_order_is_pushed_to_the_watcher_through_the_gateway_and_stored() {
    // The fallback is far away: SUCCESS can only come through the notification.
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");

    let (order, payment) = create_order(&stack, "e2e-happy-path").await;
    assert_eq!(order.status(), OrderStatus::Notpay);
    assert!(!order.prepay_id.is_empty(), "unifiedorder gave a prepay_id");
    assert_request_payment_verifies(&order, &payment);

    let mut stream = watch(&stack, &order.out_trade_no).await;
    let snapshot = next(&mut stream).await.expect("the current status first");
    assert_eq!(snapshot.status(), OrderStatus::Notpay);
    assert_eq!(snapshot.source, "SNAPSHOT");
    assert!(!snapshot.terminal);

    let paid = stack
        .sandbox_post(&order.out_trade_no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    let transaction_id = paid["transaction_id"]
        .as_str()
        .expect("the sandbox assigns a transaction_id")
        .to_owned();

    let event = next(&mut stream).await.expect("the payment is pushed");
    assert_eq!(event.status(), OrderStatus::Success);
    assert_eq!(event.source, "NOTIFY", "delivered by the gateway");
    assert_eq!(event.transaction_id, transaction_id);
    assert_eq!(event.total_fee, 1);
    assert!(event.terminal, "SUCCESS ends the stream");
    assert!(
        next(&mut stream).await.is_none(),
        "nothing after a terminal status"
    );

    let stored = get_order(&stack, &order.out_trade_no).await;
    assert_eq!(stored.status(), OrderStatus::Success);
    assert_eq!(stored.transaction_id, transaction_id);
    assert!(stored.paid_at > 0, "paid_at recorded");
    assert_eq!(stored.version, event.version);
}

#[tokio::test]
async fn dropped_notification_still_reaches_the_watcher_through_the_fallback_query() {
    let stack = Stack::start(StackOptions {
        fallback_delay: Duration::from_millis(200),
        fallback_max_delay: Duration::from_millis(500),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");

    let (order, _) = create_order(&stack, "e2e-dropped-notification").await;
    let mut stream = watch(&stack, &order.out_trade_no).await;
    let snapshot = next(&mut stream).await.expect("the current status first");
    assert_eq!(snapshot.status(), OrderStatus::Notpay);

    let paid = stack
        .sandbox_post(
            &order.out_trade_no,
            "pay",
            serde_json::json!({"delivery": "drop"}),
        )
        .await
        .expect("the payer pays");
    let transaction_id = paid["transaction_id"].as_str().expect("transaction_id");

    let event = next(&mut stream).await.expect("the payment is found");
    assert_eq!(event.status(), OrderStatus::Success);
    assert_eq!(event.source, "QUERY", "found by orderquery, not notified");
    assert_eq!(event.transaction_id, transaction_id);
    assert!(event.terminal);

    let deliveries = stack
        .sandbox_get(&format!(
            "/sandbox/orders/{}/notifications",
            order.out_trade_no
        ))
        .await
        .expect("the sandbox's delivery log");
    assert_eq!(
        deliveries.as_array().map(Vec::len),
        Some(0),
        "the notification really was dropped: {deliveries}"
    );
    let stored = get_order(&stack, &order.out_trade_no).await;
    assert_eq!(stored.status(), OrderStatus::Success);
    assert_eq!(stored.transaction_id, transaction_id);
}

#[tokio::test]
async fn every_binary_exits_0_on_sigterm() {
    let mut stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    // Work in flight makes the shutdown more than an idle exit: an open stream
    // on the poller, and an order in the database.
    let (order, _) = create_order(&stack, "e2e-shutdown").await;
    let mut stream = watch(&stack, &order.out_trade_no).await;
    assert!(next(&mut stream).await.is_some(), "the snapshot");

    // Callers first, as an orchestrator stopping the deployment would. The
    // bound is above payment-service's 15 s drain limit.
    let within = Duration::from_secs(25);
    for process in [
        &mut stack.poller,
        &mut stack.gateway,
        &mut stack.payment,
        &mut stack.sandbox,
    ] {
        let status = process.terminate(within).await.expect("exits");
        assert_eq!(
            status.code(),
            Some(0),
            "{} exited with {status}; log:\n{}",
            process.name(),
            process.log_tail()
        );
    }

    // The open stream ended instead of hanging: the poller closed it on shutdown.
    let end = tokio::time::timeout(MESSAGE_TIMEOUT, stream.message())
        .await
        .expect("the stream ends");
    assert!(
        !matches!(end, Ok(Some(_))),
        "no status after shutdown: {end:?}"
    );
}

/// The reconciler asks soon and often: these tests wait for it, not for the
/// production schedule.
fn eager_reconciler() -> StackOptions {
    StackOptions {
        reconcile: ReconcilerConfig {
            interval: Duration::from_secs(1),
            after: Duration::from_secs(1),
            ..ReconcilerConfig::default()
        },
        ..StackOptions::default()
    }
}

/// Polls GetOrder until `want` or the deadline; returns what it saw last.
async fn wait_for_status(stack: &Stack, out_trade_no: &str, want: OrderStatus) -> Order {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let order = get_order(stack, out_trade_no).await;
        if order.status() == want || tokio::time::Instant::now() > deadline {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_payment_whose_notification_is_lost_is_found_with_nobody_watching() {
    let stack = Stack::start(eager_reconciler())
        .await
        .expect("the stack starts");
    let (order, _) = create_order(&stack, "e2e-reconciled-payment").await;
    let paid = stack
        .sandbox_post(
            &order.out_trade_no,
            "pay",
            serde_json::json!({"delivery": "drop"}),
        )
        .await
        .expect("the payer pays");
    let transaction_id = paid["transaction_id"].as_str().expect("transaction_id");

    // Nobody watches and nobody queries: only the reconciler can find it,
    // within RECONCILE_AFTER_SECONDS plus one interval (plus slack for a busy machine).
    let stored = wait_for_status(&stack, &order.out_trade_no, OrderStatus::Success).await;
    assert_eq!(
        stored.status(),
        OrderStatus::Success,
        "the payment was never recorded"
    );
    assert_eq!(stored.transaction_id, transaction_id);
}

#[tokio::test]
async fn an_expired_order_is_closed_at_wechat_and_here() {
    let stack = Stack::start(eager_reconciler())
        .await
        .expect("the stack starts");
    let (order, _) = create_order(&stack, "e2e-expired-order").await;
    // As an operator would: the order ran out ten minutes ago. WeChat keeps
    // its own clock, so the sandbox's copy is aged too (WeChat refuses to close
    // an order in its first five minutes).
    let mut db = sqlx::PgConnection::connect(&stack.database_url)
        .await
        .expect("the stack's database");
    sqlx::query(
        "UPDATE orders SET created_at = now() - interval '40 minutes', \
         expires_at = now() - interval '10 minutes' WHERE out_trade_no = $1",
    )
    .bind(&order.out_trade_no)
    .execute(&mut db)
    .await
    .expect("expire the order");
    stack
        .sandbox_post(
            &order.out_trade_no,
            "age",
            serde_json::json!({"seconds": 2400}),
        )
        .await
        .expect("age the sandbox's order");

    let stored = wait_for_status(&stack, &order.out_trade_no, OrderStatus::Closed).await;
    assert_eq!(
        stored.status(),
        OrderStatus::Closed,
        "the expired order was not closed"
    );
    let at_wechat = stack
        .sandbox_get(&format!("/sandbox/orders/{}", order.out_trade_no))
        .await
        .expect("the sandbox's order");
    assert_eq!(
        at_wechat["status"], "CLOSED",
        "closed here but not at WeChat: {at_wechat}"
    );
    let refused = stack
        .payments()
        .await
        .expect("connect")
        .create_order(CreateOrderRequest {
            idempotency_key: "e2e-expired-order".to_owned(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            description: "会员充值".to_owned(),
            total_fee: 1,
            attach: String::new(),
            client_ip: "127.0.0.1".to_owned(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("a retry of the key returns the order")
        .into_inner();
    assert!(
        refused.payment.is_none(),
        "a closed order got payment parameters"
    );
}

/// Redis on a shared network runs with a password and TLS: every binary
/// reaches it as `rediss://:password@host:port`, trusting its CA through
/// `SSL_CERT_FILE`, and the payment still reaches the watcher through it.
/// A client without the password is refused by that server, so the events
/// travelled the authenticated, encrypted way.
#[tokio::test]
async fn events_travel_through_a_redis_that_needs_tls_and_a_password() {
    let redis = e2e_tests::PrivateRedis::start_secured()
        .await
        .expect("a TLS-only redis-server with a password");
    let ca = redis.ca_file().expect("a secured server has a CA");
    let stack = Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        extra_env: vec![("SSL_CERT_FILE", ca.display().to_string())],
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts on the secured Redis");

    let (order, _) = create_order(&stack, "e2e-redis-tls").await;
    let mut stream = watch(&stack, &order.out_trade_no).await;
    assert_eq!(
        next(&mut stream).await.expect("snapshot").status(),
        OrderStatus::Notpay
    );
    stack
        .sandbox_post(&order.out_trade_no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    let event = next(&mut stream).await.expect("the payment is pushed");
    assert_eq!(
        (event.status(), event.source.as_str()),
        (OrderStatus::Success, "NOTIFY"),
        "pushed by the gateway through the secured Redis"
    );

    // The same server, over the same TLS, refuses a client without the password.
    let open = redis.url_without_password().expect("secured");
    let ca_pem = std::fs::read(&ca).expect("the CA file");
    let refused = async {
        let client = redis::Client::build_with_tls(
            open.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca_pem),
            },
        )?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    }
    .await;
    let err = refused.expect_err("a client without the password was served");
    assert!(
        err.to_string().contains("NOAUTH") || err.to_string().contains("uthentication"),
        "refused for another reason than the password: {err}"
    );
}

/// The poller binary believes no one who can merely publish on Redis: a
/// `SUCCESS` published by hand on an unpaid order's channel (as anyone on a
/// Redis network without AUTH could) reaches neither the gRPC watcher nor the
/// mini program's WebSocket, at a version the row never reached or at its
/// own; the real payment after it reaches both.
#[tokio::test]
async fn a_success_published_on_redis_by_hand_reaches_no_watcher() {
    use futures::StreamExt;
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let reply = stack
        .payments()
        .await
        .expect("connect to payment-service")
        .create_order(CreateOrderRequest {
            idempotency_key: "e2e-forged-event".to_owned(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            description: "forged".to_owned(),
            total_fee: 1,
            client_ip: "127.0.0.1".to_owned(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner();
    let order = reply.order.expect("an order");
    let no = order.out_trade_no.clone();
    let mut stream = watch(&stack, &no).await;
    assert_eq!(
        next(&mut stream).await.expect("snapshot").status(),
        OrderStatus::Notpay
    );
    let ws_url = format!(
        "{}/v1/orders/{no}/ws?token={}",
        stack.poller_ws_base(),
        reply.watch_token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("the WebSocket watch opens");
    let first = socket.next().await.expect("a message").expect("a frame");
    assert!(first.to_string().contains("\"NOTPAY\""), "{first}");

    let redis = redis::Client::open(wxpay_store::testing::redis_url()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    for version in [1, 2, 7] {
        let forged = serde_json::json!({
            "id": 1, "out_trade_no": no, "status": "SUCCESS", "version": version,
            "transaction_id": "4200000000000000000000000042", "total_fee": 1,
            "occurred_at": 0, "source": "NOTIFY", "refunded_fee": 0,
        });
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(wxpay_store::events::channel(&no))
            .arg(forged.to_string())
            .query_async(&mut conn)
            .await
            .expect("publish");
        assert!(receivers >= 1, "the poller is subscribed and receives it");
    }
    let grpc = tokio::time::timeout(Duration::from_secs(2), stream.message()).await;
    assert!(
        grpc.is_err(),
        "a forged status reached WatchOrder: {grpc:?}"
    );
    let ws = tokio::time::timeout(Duration::from_millis(500), socket.next()).await;
    assert!(ws.is_err(), "a forged status reached the WebSocket: {ws:?}");
    let stored = get_order(&stack, &no).await;
    assert_eq!(stored.status(), OrderStatus::Notpay, "nothing paid it");

    stack
        .sandbox_post(&no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    let paid = next(&mut stream).await.expect("the real payment");
    assert_eq!(
        (paid.status(), paid.source.as_str()),
        (OrderStatus::Success, "NOTIFY")
    );
    let pushed = tokio::time::timeout(MESSAGE_TIMEOUT, socket.next())
        .await
        .expect("the payment on the WebSocket in time")
        .expect("a message")
        .expect("a frame");
    assert!(pushed.to_string().contains("\"SUCCESS\""), "{pushed}");
}
