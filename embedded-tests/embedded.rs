//! The embedded stack from the outside: each test starts payment-service,
//! gateway, poller and the sandbox in this process on free ports with its own
//! temporary SQLite file and the in-process bus (no Postgres, no Redis), and
//! talks to it only through the gRPC and HTTP contracts.

use std::{path::PathBuf, time::Duration};

use tokio_stream::StreamExt;
use wxpay::{
    demo,
    settings::{test_merchant, Bus, Storage},
    Settings, Stack,
};
use wxpay_core::wechat::{pay_params, SignType};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CreateOrderRequest, CreateOrderResponse,
    GetOrderRequest, GetRefundRequest, OrderStatus, OrderStatusEvent, RefundOrderRequest,
    RefundStatus, WatchOrderRequest,
};

/// A SQLite path of its own for each test, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("wxpay-embedded-test-{}.db", ulid::Ulid::new())))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }
}

async fn start(db: &TempDb) -> Stack {
    Stack::start(Settings::ephemeral(db.0.clone()))
        .await
        .expect("the embedded stack starts with no Postgres and no Redis")
}

async fn create_order(stack: &Stack, key: &str) -> CreateOrderResponse {
    let mut payments = PaymentServiceClient::connect(stack.addresses().payment_url())
        .await
        .expect("payment-service accepts connections");
    payments
        .create_order(CreateOrderRequest {
            idempotency_key: key.into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "embedded test".into(),
            total_fee: 88,
            attach: String::new(),
            client_ip: "127.0.0.1".into(),
            expire_seconds: 600,
            ..Default::default()
        })
        .await
        .expect("CreateOrder succeeds against the sandbox")
        .into_inner()
}

async fn next(stream: &mut tonic::Streaming<OrderStatusEvent>) -> OrderStatusEvent {
    match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(status))) => panic!("the stream failed: {status:?}"),
        Ok(None) => panic!("the stream ended early"),
        Err(_) => panic!("no stream message within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_in_the_sandbox_reaches_the_watcher_and_the_store() {
    let db = TempDb::new();
    let stack = start(&db).await;
    pay_one_order_and_watch_it(&stack).await;
    stack.stop().await.expect("a clean shutdown");
}

/// With DATABASE_URL and REDIS_URL the same stack runs on Postgres and Redis.
/// Needs both on 127.0.0.1, like the rest of the workspace's tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_stack_runs_on_postgres_and_redis() {
    let db = TempDb::new();
    let database_url = wxpay_store::testing::fresh_database_url()
        .await
        .expect("a fresh Postgres database (is Postgres running on 127.0.0.1?)");
    let settings = Settings {
        storage: Storage::Postgres(database_url),
        bus: Bus::Redis(wxpay_store::testing::redis_url()),
        ..Settings::ephemeral(db.0.clone())
    };
    let stack = Stack::start(settings)
        .await
        .expect("the stack starts on Postgres and Redis");
    pay_one_order_and_watch_it(&stack).await;
    stack.stop().await.expect("a clean shutdown");
    assert!(
        !db.0.exists(),
        "no SQLite file is created when DATABASE_URL is set"
    );
}

/// CreateOrder -> paySign verified -> WatchOrder NOTPAY snapshot -> the sandbox
/// pays and notifies the gateway -> SUCCESS on the stream -> GetOrder SUCCESS.
async fn pay_one_order_and_watch_it(stack: &Stack) {
    let a = *stack.addresses();

    // CreateOrder, and the mini program's parameters are signed with the merchant key.
    let created = create_order(stack, &format!("embedded-{}", ulid::Ulid::new())).await;
    let order = created.order.expect("the order");
    let payment = created
        .payment
        .expect("requestPayment parameters for a NOTPAY order");
    assert_eq!(order.status, OrderStatus::Notpay as i32);
    let params = pay_params::PaymentParams {
        app_id: payment.app_id.clone(),
        time_stamp: payment.time_stamp.clone(),
        nonce_str: payment.nonce_str.clone(),
        package: payment.package.clone(),
        sign_type: payment
            .sign_type
            .parse::<SignType>()
            .expect("a known signType")
            .into(),
        pay_sign: payment.pay_sign.clone(),
    };
    assert!(
        pay_params::verify(&params, &test_merchant().api_key),
        "paySign verifies"
    );
    assert_eq!(payment.package, format!("prepay_id={}", order.prepay_id));

    // WatchOrder starts with the snapshot.
    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .expect("the poller accepts connections");
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: order.out_trade_no.clone(),
            timeout_seconds: 30,
            include_refunds: false,
        })
        .await
        .expect("WatchOrder opens")
        .into_inner();
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.status, OrderStatus::Notpay as i32);
    assert!(!snapshot.terminal);

    // The payer pays; the sandbox notifies the gateway; the bus feeds the stream.
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/orders/{}/pay",
            a.sandbox_url(),
            order.out_trade_no
        ))
        .send()
        .await
        .expect("the sandbox's control API answers");
    assert!(reply.status().is_success(), "pay: HTTP {}", reply.status());
    let paid = next(&mut stream).await;
    assert_eq!(paid.status, OrderStatus::Success as i32);
    assert!(paid.terminal, "SUCCESS ends the stream");
    assert_eq!(
        paid.source, "NOTIFY",
        "it came from the gateway, not the fallback"
    );
    assert!(paid.version > snapshot.version);
    assert!(!paid.transaction_id.is_empty());

    // The store agrees.
    let mut payments = PaymentServiceClient::connect(a.payment_url())
        .await
        .expect("payment-service accepts connections");
    let stored = payments
        .get_order(GetOrderRequest {
            out_trade_no: order.out_trade_no.clone(),
        })
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(stored.status, OrderStatus::Success as i32);
    assert_eq!(stored.transaction_id, paid.transaction_id);
    assert!(stored.paid_at > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_survive_a_restart_on_the_same_sqlite_file() {
    let db = TempDb::new();
    let key = format!("restart-{}", ulid::Ulid::new());
    let first = start(&db).await;
    let created = create_order(&first, &key).await;
    let out_trade_no = created.order.expect("the order").out_trade_no;
    first.stop().await.expect("a clean shutdown");

    let second = start(&db).await;
    // The same idempotency key finds the stored order instead of placing a new one.
    let again = create_order(&second, &key).await;
    assert_eq!(again.order.expect("the order").out_trade_no, out_trade_no);
    second.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_reports_success_with_every_step() {
    let mut out = Vec::new();
    let outcome = demo::run(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => panic!("the demo failed: {e:#}\n{text}"),
    };
    assert_eq!(outcome.status, OrderStatus::Success);
    assert!(!outcome.transaction_id.is_empty());
    for n in 1..=10 {
        assert!(
            text.contains(&format!("[{n}] ")),
            "step {n} is shown:\n{text}"
        );
    }
    assert!(text.contains("paySign verifies"), "{text}");
    // The mini program's own watch, beside the backend's gRPC stream.
    assert!(
        text.contains("the mini program: wx.connectSocket ws://")
            && text.contains("the mini program's WebSocket → SUCCESS"),
        "{text}"
    );
    assert!(outcome.pay_to_websocket > Duration::ZERO);
    assert!(
        text.contains(&format!("OK: order {} is SUCCESS", outcome.out_trade_no)),
        "{text}"
    );
    let refunded = outcome.refunded.expect("the demo ends with a refund");
    assert_eq!(refunded.refunded_fee, 30, "{text}");
    assert!(
        text.contains("30 of 100 fen refunded and seen on the stream"),
        "{text}"
    );
    // A v3 order beside it: RSA paySign checked, paid by a v3 notification.
    let v3 = outcome.v3.expect("the demo pays a v3 order too");
    assert_ne!(v3.out_trade_no, outcome.out_trade_no);
    assert!(!v3.transaction_id.is_empty());
    assert!(
        text.contains("paySign verifies (RSA-SHA256)") && text.contains("source NOTIFY"),
        "{text}"
    );
    // Then all of it back in two v3 refunds, each settled by a v3 notification
    // and seen on the refund watch; one fen more refused before WeChat.
    assert_eq!(v3.refunded_fee, 100, "{text}");
    assert_eq!(v3.final_status, OrderStatus::Refund as i32, "{text}");
    assert_eq!(
        text.matches("POST /v3/refund/domestic/refunds accepted")
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("refused before WeChat is asked"), "{text}");
    assert!(
        text.contains(
            "REFUND.SUCCESS at /wechat/v3/refund/notify → stream REFUND (refunded_fee 100 fen)"
        ),
        "{text}"
    );
}

/// The reconciler on the single-process stack's SQLite: asking soon and often.
fn eager(db: &TempDb) -> Settings {
    Settings {
        reconcile: payment_service::reconciler::ReconcilerConfig {
            interval: Duration::from_millis(300),
            after: Duration::from_secs(1),
            ..Default::default()
        },
        ..Settings::ephemeral(db.0.clone())
    }
}

async fn sandbox_control(stack: &Stack, path: &str, body: serde_json::Value) {
    let res = reqwest::Client::new()
        .post(format!("{}{path}", stack.addresses().sandbox_url()))
        .json(&body)
        .send()
        .await
        .expect("the sandbox's control API");
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

async fn status_within(stack: &Stack, out_trade_no: &str, want: OrderStatus) -> OrderStatus {
    let mut payments = PaymentServiceClient::connect(stack.addresses().payment_url())
        .await
        .expect("connect");
    let mut seen = OrderStatus::Unspecified;
    for _ in 0..100 {
        seen = payments
            .get_order(GetOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .expect("GetOrder")
            .into_inner()
            .status();
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_reconciler_records_a_payment_whose_notification_was_lost() {
    let db = TempDb::new();
    let stack = Stack::start(eager(&db)).await.expect("the stack starts");
    let order = create_order(&stack, "embedded-lost-notification")
        .await
        .order
        .expect("order");
    sandbox_control(
        &stack,
        &format!("/sandbox/orders/{}/pay", order.out_trade_no),
        serde_json::json!({"delivery": "drop"}),
    )
    .await;
    assert_eq!(
        status_within(&stack, &order.out_trade_no, OrderStatus::Success).await,
        OrderStatus::Success,
        "nobody watched or queried: only the reconciler could find it"
    );
    stack.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_an_expired_order_is_closed_at_wechat_and_here() {
    let db = TempDb::new();
    let stack = Stack::start(eager(&db)).await.expect("the stack starts");
    let order = create_order(&stack, "embedded-expired")
        .await
        .order
        .expect("order");
    // As an operator would (times are unix milliseconds in the SQLite schema):
    // created twenty minutes ago, expired a minute ago; WeChat's copy aged to match.
    let now = chrono::Utc::now().timestamp_millis();
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.0.display()
    ))
    .await
    .expect("the stack's SQLite file");
    sqlx::query("UPDATE orders SET created_at = ?1, expires_at = ?2 WHERE out_trade_no = ?3")
        .bind(now - 20 * 60_000)
        .bind(now - 60_000)
        .bind(&order.out_trade_no)
        .execute(&mut conn)
        .await
        .expect("expire the order");
    sandbox_control(
        &stack,
        &format!("/sandbox/orders/{}/age", order.out_trade_no),
        serde_json::json!({"seconds": 1200}),
    )
    .await;
    assert_eq!(
        status_within(&stack, &order.out_trade_no, OrderStatus::Closed).await,
        OrderStatus::Closed
    );
    let at_wechat: serde_json::Value = reqwest::get(format!(
        "{}/sandbox/orders/{}",
        stack.addresses().sandbox_url(),
        order.out_trade_no
    ))
    .await
    .expect("sandbox order")
    .json()
    .await
    .expect("json");
    assert_eq!(at_wechat["status"], "CLOSED");
    stack.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_an_order_is_refunded_in_parts_over_mutual_tls_and_watched() {
    let db = TempDb::new();
    let stack = start(&db).await;
    refund_in_parts_and_watch(&stack).await;
    stack.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_order_is_refunded_in_parts_over_mutual_tls_and_watched() {
    let db = TempDb::new();
    let database_url = wxpay_store::testing::fresh_database_url()
        .await
        .expect("a fresh Postgres database");
    let settings = Settings {
        storage: Storage::Postgres(database_url),
        bus: Bus::Redis(wxpay_store::testing::redis_url()),
        ..Settings::ephemeral(db.0.clone())
    };
    let stack = Stack::start(settings).await.expect("the stack starts");
    refund_in_parts_and_watch(&stack).await;
    stack.stop().await.expect("a clean shutdown");
}

/// Pays an 88-fen order, then refunds 30 and 58 through gRPC (the sandbox's
/// /secapi/ over mutual TLS with the certificate it issued); WeChat's side
/// settles each and sends its encrypted notification to the gateway; a
/// WatchOrder with include_refunds sees each refund with the running total.
async fn refund_in_parts_and_watch(stack: &Stack) {
    let a = *stack.addresses();
    let order = create_order(stack, &format!("refund-{}", ulid::Ulid::new()))
        .await
        .order
        .expect("the order");
    let no = order.out_trade_no.clone();
    sandbox_control(
        stack,
        &format!("/sandbox/orders/{no}/pay"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        status_within(stack, &no, OrderStatus::Success).await,
        OrderStatus::Success
    );

    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .expect("the poller accepts connections");
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: no.clone(),
            timeout_seconds: 60,
            include_refunds: true,
        })
        .await
        .expect("WatchOrder")
        .into_inner();
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.status, OrderStatus::Success as i32);
    assert!(!snapshot.terminal, "a refund watch goes on past SUCCESS");

    let mut payments = PaymentServiceClient::connect(a.payment_url())
        .await
        .expect("connect");
    let mut seen = Vec::new();
    for (rno, fee) in [(format!("{no}-r1"), 30), (format!("{no}-r2"), 58)] {
        let refund = payments
            .refund_order(RefundOrderRequest {
                out_trade_no: no.clone(),
                out_refund_no: rno.clone(),
                refund_fee: fee,
                reason: "部分退款".into(),
            })
            .await
            .expect("RefundOrder over mutual TLS")
            .into_inner();
        assert_eq!(refund.status, RefundStatus::Processing as i32);
        sandbox_control(
            stack,
            &format!("/sandbox/refunds/{rno}/settle"),
            serde_json::json!({"status": "SUCCESS"}),
        )
        .await;
        let event = next(&mut stream).await;
        seen.push((event.status, event.refunded_fee, event.terminal));
    }
    assert_eq!(
        seen,
        vec![
            (OrderStatus::Refund as i32, 30, false),
            (OrderStatus::Refund as i32, 88, true),
        ]
    );
    let read = payments
        .get_refund(GetRefundRequest {
            out_refund_no: format!("{no}-r1"),
        })
        .await
        .expect("GetRefund")
        .into_inner();
    assert_eq!(
        (read.status, read.refund_fee),
        (RefundStatus::Success as i32, 30)
    );
    let over = payments
        .refund_order(RefundOrderRequest {
            out_trade_no: no.clone(),
            out_refund_no: format!("{no}-r3"),
            refund_fee: 1,
            reason: String::new(),
        })
        .await
        .expect_err("nothing is left");
    assert_eq!(over.code(), tonic::Code::FailedPrecondition);
}

/// The mini program's own watch: CreateOrder hands out a watch token, a
/// WebSocket to the poller with it gets NOTPAY, then SUCCESS when the payer pays,
/// with no timer and no API token; the same socket with another order's token is
/// refused before the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mini_program_watches_its_order_over_a_websocket_with_its_token() {
    use tokio_tungstenite::tungstenite::Message;

    let db = TempDb::new();
    let stack = start(&db).await;
    let a = *stack.addresses();
    let created = create_order(&stack, &format!("ws-{}", ulid::Ulid::new())).await;
    let order = created.order.expect("the order");
    assert!(
        !created.watch_token.is_empty(),
        "a watch token is handed out"
    );
    let (mut socket, _) =
        tokio_tungstenite::connect_async(a.watch_ws_url(&order.out_trade_no, &created.watch_token))
            .await
            .expect("the poller upgrades with the order's token");
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s");
        match message {
            Some(Ok(Message::Text(text))) => {
                let event: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                let status = event["status"].as_str().unwrap_or_default().to_owned();
                if status == "NOTPAY" {
                    sandbox_control(
                        &stack,
                        &format!("/sandbox/orders/{}/pay", order.out_trade_no),
                        serde_json::json!({}),
                    )
                    .await;
                }
                statuses.push(status);
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(statuses, ["NOTPAY", "SUCCESS"]);

    let other = create_order(&stack, &format!("ws-other-{}", ulid::Ulid::new())).await;
    let refused =
        tokio_tungstenite::connect_async(a.watch_ws_url(&order.out_trade_no, &other.watch_token))
            .await;
    assert!(refused.is_err(), "another order's token opened the watch");
    stack.stop().await.expect("a clean shutdown");
}

/// `cargo run` with a merchants file: its sandbox hosts the file's merchants
/// and issued each a client certificate, so a service-provider merchant's NATIVE
/// order is placed, paid (as a scan), notified through the gateway under that
/// merchant's key, and refunded over its own certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchants_file_merchant_pays_and_refunds_in_the_embedded_stack() {
    use wxpay_core::wechat::{ApiKey, Merchant, MerchantEntry};
    let db = TempDb::new();
    let tenant = MerchantEntry {
        sub_mch_id: Some("1900000501".into()),
        sub_app_id: Some("wx3333333333333333".into()),
        ..MerchantEntry::direct(
            "tenant",
            Merchant {
                app_id: "wxabcabcabcabcabca".into(),
                mch_id: "1900000500".into(),
                api_key: ApiKey::parse("tenantkey0123456789abcdefghijklm").expect("key"),
            },
            SignType::HmacSha256,
        )
    };
    let stack = Stack::start(Settings {
        merchants: vec![tenant],
        ..Settings::ephemeral(db.0.clone())
    })
    .await
    .expect("the stack starts with a second merchant");
    let a = *stack.addresses();
    let mut payments = PaymentServiceClient::connect(a.payment_url())
        .await
        .expect("connect");
    let reply = payments
        .create_order(CreateOrderRequest {
            idempotency_key: format!("tenant-{}", ulid::Ulid::new()),
            description: "扫码支付".into(),
            total_fee: 250,
            client_ip: "127.0.0.1".into(),
            merchant: "tenant".into(),
            trade_type: wxpay_proto::v1::TradeType::Native as i32,
            product_id: "sku-1".into(),
            ..Default::default()
        })
        .await
        .expect("a NATIVE order for the tenant")
        .into_inner();
    assert!(
        reply.code_url.starts_with("weixin://"),
        "{}",
        reply.code_url
    );
    let order = reply.order.expect("order");
    assert_eq!(order.merchant, "tenant");
    let no = order.out_trade_no.clone();
    sandbox_control(
        &stack,
        &format!("/sandbox/orders/{no}/pay"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        status_within(&stack, &no, OrderStatus::Success).await,
        OrderStatus::Success,
        "the notification verified under the tenant's key"
    );
    let refund = payments
        .refund_order(RefundOrderRequest {
            out_trade_no: no.clone(),
            out_refund_no: format!("{no}-r"),
            refund_fee: 100,
            reason: String::new(),
        })
        .await
        .expect("a refund over the tenant's own certificate")
        .into_inner();
    assert_eq!(refund.status, RefundStatus::Processing as i32);
    assert!(!refund.refund_id.is_empty());
}
