//! Crashes between two steps of a payment, over the real binaries: what was
//! acknowledged to WeChat is never lost, and the test shows what brings it back.

use std::time::Duration;

use e2e_tests::{eventually, PrivateRedis, Stack, StackOptions};
use sqlx::{Connection, Row};
use wxpay_proto::v1::{CreateOrderRequest, OrderStatus, WatchOrderRequest};

/// The order's outbox rows: (status, published).
async fn outbox(database_url: &str, out_trade_no: &str) -> Vec<(String, bool)> {
    let mut db = sqlx::PgConnection::connect(database_url)
        .await
        .expect("the stack's database");
    sqlx::query(
        "SELECT status, published_at IS NOT NULL AS published FROM order_events \
         WHERE out_trade_no = $1 ORDER BY version",
    )
    .bind(out_trade_no)
    .fetch_all(&mut db)
    .await
    .expect("outbox rows")
    .iter()
    .map(|r| (r.get("status"), r.get("published")))
    .collect()
}

#[tokio::test]
async fn a_payment_committed_but_not_published_survives_kill_9_of_the_gateway() {
    let mut redis = PrivateRedis::start().await.expect("a private redis-server");
    let mut stack = Stack::start(StackOptions {
        redis_url: Some(redis.url()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let order = stack
        .payments()
        .await
        .expect("payment-service")
        .create_order(order_request("e2e-kill-9"))
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("an order");
    let no = order.out_trade_no.clone();
    let mut stream = stack
        .watcher()
        .await
        .expect("poller")
        .watch_order(WatchOrderRequest {
            out_trade_no: no.clone(),
            timeout_seconds: 120,
            include_refunds: false,
        })
        .await
        .expect("WatchOrder")
        .into_inner();
    let first = stream.message().await.expect("stream").expect("snapshot");
    assert_eq!(first.status(), OrderStatus::Notpay);

    let started = std::time::Instant::now();
    // Redis dies: the gateway can commit the payment but not publish it.
    redis.kill();
    stack
        .sandbox_post(&no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    let path = format!("/sandbox/orders/{no}/notifications");
    let sandbox = &stack;
    eventually("WeChat's notification acknowledged", || {
        let path = path.clone();
        async move {
            let attempts = sandbox.sandbox_get(&path).await.unwrap_or_default();
            attempts
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d["acknowledged"] == true))
        }
    })
    .await;
    eprintln!(
        "kill -9 test: acknowledged {:?} after the payment",
        started.elapsed()
    );
    // Acknowledged means committed, with its event still in the outbox.
    let rows = outbox(&stack.database_url, &no).await;
    assert_eq!(
        rows.last(),
        Some(&("SUCCESS".to_owned(), false)),
        "the committed change waits unpublished: {rows:?}"
    );

    // The gateway dies between that commit and any publish: no drain, no flush.
    stack.gateway.kill_9().expect("kill -9 the gateway");
    let crashed = std::time::Instant::now();
    redis.restart().await.expect("redis comes back");

    // What brings it back: the outbox relay (payment-service runs one too)
    // publishes the row, and the watcher gets the payment.
    let paid = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the payment reaches the watcher")
        .expect("stream")
        .expect("an event");
    assert_eq!(paid.status(), OrderStatus::Success);
    assert!(paid.terminal);
    let database_url = stack.database_url.clone();
    let no_for_check = no.clone();
    eventually("the outbox row published by a surviving relay", move || {
        let (url, no) = (database_url.clone(), no_for_check.clone());
        async move {
            outbox(&url, &no)
                .await
                .iter()
                .all(|(_, published)| *published)
        }
    })
    .await;
    let stored = stack
        .payments()
        .await
        .expect("payment-service")
        .get_order(wxpay_proto::v1::GetOrderRequest {
            out_trade_no: no.clone(),
        })
        .await
        .expect("GetOrder")
        .into_inner();
    assert_eq!(stored.status(), OrderStatus::Success);
    assert_eq!(
        outbox(&stack.database_url, &no).await,
        vec![("SUCCESS".to_owned(), true)],
        "one change, once"
    );
    eprintln!(
        "kill -9 test: {:?} from the crash to the watcher's SUCCESS",
        crashed.elapsed()
    );
}

fn order_request(key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        description: "会员充值".into(),
        total_fee: 1,
        client_ip: "127.0.0.1".into(),
        expire_seconds: 1800,
        ..Default::default()
    }
}

/// Whether WeChat (the sandbox) has had SUCCESS back for the order's notification.
async fn acknowledged(stack: &Stack, no: &str) -> bool {
    let path = format!("/sandbox/orders/{no}/notifications");
    stack
        .sandbox_get(&path)
        .await
        .unwrap_or_default()
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d["acknowledged"] == true))
}

/// The order's status and its SUCCESS events, read straight from the database.
async fn paid_in_database(database_url: &str, no: &str) -> (String, i64) {
    let mut db = sqlx::PgConnection::connect(database_url)
        .await
        .expect("the restarted database");
    let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE out_trade_no = $1")
        .bind(no)
        .fetch_one(&mut db)
        .await
        .expect("the order survived");
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_events WHERE out_trade_no = $1 AND status = 'SUCCESS'",
    )
    .bind(no)
    .fetch_one(&mut db)
    .await
    .expect("its events");
    (status, events)
}

/// The one durable commit per operation (bench/ANALYSIS.md): a payment is
/// acknowledged to WeChat only after its transition and outbox row are
/// durable, while the prepay_id, the `published_at` marks and the audit copies
/// commit asynchronously. Postgres itself is killed (every process, SIGKILL)
/// twice: the moment the last notification is acknowledged, and right after a
/// burst of CreateOrders. Every acknowledged payment is still SUCCESS after
/// crash recovery with its one event, and every order a caller was answered
/// for still exists; a retried CreateOrder returns the same order and the same
/// prepay_id (re-obtained from WeChat where its asynchronous write was lost).
#[tokio::test]
async fn acknowledged_payments_and_placed_orders_survive_kill_9_of_postgres() {
    let mut pg = e2e_tests::PrivatePostgres::start()
        .await
        .expect("a private postgres");
    let stack = Stack::start(StackOptions {
        database_url: Some(pg.url()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts");
    let mut payments = stack.payments().await.expect("payment-service");

    // 1. Payments: nothing durable is written after the last acknowledgement
    // (a later durable commit would flush the WAL before it), so the crash
    // finds exactly what the notifications left.
    let mut paid = Vec::new();
    for i in 0..30 {
        let reply = payments
            .create_order(order_request(&format!("pg-crash-paid-{i}")))
            .await
            .expect("CreateOrder")
            .into_inner();
        paid.push(reply.order.expect("an order").out_trade_no);
    }
    for no in &paid {
        stack
            .sandbox_post(no, "pay", serde_json::json!({}))
            .await
            .expect("the payer pays");
    }
    // Killed as soon as the last acknowledgement is seen (only the orders
    // still waiting are asked, about a millisecond each), well inside the WAL writer's 200 ms: an asynchronously committed
    // transition would be lost here.
    let mut waiting = paid.clone();
    for _ in 0..3000 {
        let mut still = Vec::new();
        for no in waiting {
            if !acknowledged(&stack, &no).await {
                still.push(no);
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        waiting.is_empty(),
        "not acknowledged within 15 s: {waiting:?}"
    );
    pg.kill_9();
    pg.restart().await.expect("postgres recovers");
    for no in &paid {
        assert_eq!(
            paid_in_database(&stack.database_url, no).await,
            ("SUCCESS".to_owned(), 1),
            "acknowledged payment {no} after the crash"
        );
    }

    // 2. Orders answered just before the crash: each NOTPAY row was durable
    // before WeChat was called; the prepay_ids were written asynchronously.
    let mut placed = Vec::new();
    for i in 0..30 {
        let key = format!("pg-crash-placed-{i}");
        let reply = retried_create(&mut payments, &key).await;
        let package = reply.payment.expect("payment params").package;
        placed.push((key, reply.order.expect("an order").out_trade_no, package));
    }
    pg.kill_9();
    pg.restart().await.expect("postgres recovers");
    let mut db = sqlx::PgConnection::connect(&stack.database_url)
        .await
        .expect("the restarted database");
    let lost: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE idempotency_key LIKE 'pg-crash-placed-%' AND prepay_id IS NULL",
    )
    .fetch_one(&mut db)
    .await
    .expect("count");
    eprintln!("kill -9 of postgres: {lost} of 30 prepay_ids lost with the crash");
    for (key, no, package) in &placed {
        let again = retried_create(&mut payments, key).await;
        assert_eq!(
            again.order.as_ref().map(|o| o.out_trade_no.as_str()),
            Some(no.as_str()),
            "the retried key names the same order"
        );
        assert_eq!(
            again.payment.map(|p| p.package).as_deref(),
            Some(package.as_str()),
            "the same prepay_id for {no}"
        );
    }
    // And the acknowledged payments read back through the service as paid.
    for no in &paid {
        let order = payments
            .get_order(wxpay_proto::v1::GetOrderRequest {
                out_trade_no: no.clone(),
            })
            .await
            .expect("GetOrder")
            .into_inner();
        assert_eq!(order.status(), OrderStatus::Success, "{no}");
        assert!(!order.transaction_id.is_empty());
    }
}

/// CreateOrder, retried while the service's pool replaces the connections the
/// crash broke (each first use of a dead one fails once).
async fn retried_create(
    payments: &mut wxpay_proto::v1::payment_service_client::PaymentServiceClient<
        tonic::transport::Channel,
    >,
    key: &str,
) -> wxpay_proto::v1::CreateOrderResponse {
    for _ in 0..100 {
        match payments.create_order(order_request(key)).await {
            Ok(reply) => return reply.into_inner(),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("CreateOrder {key} kept failing after the crash")
}

/// kill -9 of payment-service between its two steps of CreateOrder: the
/// NOTPAY row is committed and WeChat has placed the order, but the reply
/// (and with it the prepay_id) never arrived. What brings it back is the
/// caller's retry with the same idempotency key on a restarted service: the
/// same out_trade_no, WeChat's same prepay_id, one order at WeChat, and the
/// order pays normally.
#[tokio::test]
async fn a_create_order_cut_by_kill_9_after_wechat_placed_it_completes_on_retry() {
    let mut stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    stack
        .sandbox_faults(serde_json::json!({ "process_then_timeout": 1 }))
        .await
        .expect("faults");
    let mut caller = stack.payments().await.expect("payment-service");
    let cut = tokio::spawn(async move {
        caller
            .create_order(order_request("kill-9-mid-create"))
            .await
    });
    // The row is there before WeChat is called; wait for WeChat to have it too.
    let mut db = sqlx::PgConnection::connect(&stack.database_url)
        .await
        .expect("the stack's database");
    let mut no = None;
    for _ in 0..300 {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT out_trade_no, prepay_id FROM orders WHERE idempotency_key = 'kill-9-mid-create'",
        )
        .fetch_optional(&mut db)
        .await
        .expect("read");
        if let Some((found, prepay)) = row {
            assert_eq!(prepay, None, "no reply from WeChat yet");
            if stack
                .sandbox_get(&format!("/sandbox/orders/{found}"))
                .await
                .is_ok()
            {
                no = Some(found);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let no = no.expect("the order reached WeChat");
    stack.payment.kill_9().expect("kill -9 payment-service");
    assert!(
        cut.await.expect("the caller's task").is_err(),
        "the cut call was answered"
    );
    let at_wechat = stack
        .sandbox_get(&format!("/sandbox/orders/{no}"))
        .await
        .expect("WeChat's order");

    stack
        .restart_payment()
        .await
        .expect("payment-service restarts");
    let mut payments = stack.payments().await.expect("payment-service");
    let again = payments
        .create_order(order_request("kill-9-mid-create"))
        .await
        .expect("the retried CreateOrder")
        .into_inner();
    assert_eq!(
        again.order.as_ref().map(|o| o.out_trade_no.as_str()),
        Some(no.as_str())
    );
    let package = again.payment.expect("payment params").package;
    assert_eq!(
        Some(package.as_str()),
        at_wechat["prepay_id"]
            .as_str()
            .map(|p| format!("prepay_id={p}"))
            .as_deref(),
        "WeChat's prepay_id, not a second order"
    );
    stack
        .sandbox_post(&no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    eventually("the payment recorded", || {
        let mut payments = payments.clone();
        let no = no.clone();
        async move {
            payments
                .get_order(wxpay_proto::v1::GetOrderRequest { out_trade_no: no })
                .await
                .is_ok_and(|o| o.into_inner().status() == OrderStatus::Success)
        }
    })
    .await;
}
