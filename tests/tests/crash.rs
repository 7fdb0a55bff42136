//! Crashes between two steps of a payment, over the real binaries: what was
//! acknowledged to WeChat is never lost, and the test shows what brings it back.

use std::time::Duration;

use e2e_tests::{PrivateRedis, Stack, StackOptions};
use sqlx::{Connection, Row};
use wxpay_proto::v1::{CreateOrderRequest, OrderStatus, WatchOrderRequest};

/// Polls `check` every 100 ms for up to 30 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 30 s: {what}");
}

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
        .create_order(CreateOrderRequest {
            idempotency_key: "e2e-kill-9".into(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "会员充值".into(),
            total_fee: 1,
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
            ..Default::default()
        })
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
