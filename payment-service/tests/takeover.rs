//! Two reconciler replicas on one database: when the one mid-pass dies (its
//! task killed) or loses Postgres, the other takes over what it had claimed
//! within seconds (short leases and claims, renewed while a pass runs), and a
//! refund sent again is asked about again within seconds. WeChat is the
//! sandbox; its armed `timeout` faults hold the first replica inside a call so
//! that it is caught mid-pass. Deadlines bound waiting for an outcome only.

mod common;

use std::{sync::Arc, time::Duration};

use common::{proxy::PgProxy, *};
use payment_service::{
    reconciler::{Reconciler, ReconcilerConfig},
    service::Payments,
    wechat::WechatApi,
};
use tokio_util::sync::CancellationToken;
use wxpay_proto::v1::{
    GetOrderRequest, GetRefundRequest, OrderStatus, RefundOrderRequest, RefundStatus,
};
use wxpay_store::{testing, EventPublisher, Ledger, PgStore, RedisPublisher, Store};

/// A replica at the reconciler's shortest settings: a pass every 100 ms,
/// everything due at once, leases and claims of one second.
fn short() -> ReconcilerConfig {
    ReconcilerConfig {
        interval: Duration::from_millis(100),
        after: Duration::ZERO,
        max_qps: 1000,
        lease: Duration::from_secs(1),
        ..ReconcilerConfig::default()
    }
}

/// Waits up to `secs` seconds for `done`, polling every 100 ms.
async fn within<F, Fut>(secs: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within {secs} s: {what}");
}

async fn order_status(h: &Harness, no: &str) -> i32 {
    h.client
        .clone()
        .get_order(GetOrderRequest {
            out_trade_no: no.into(),
        })
        .await
        .expect("get")
        .into_inner()
        .status
}

async fn refund_status(h: &Harness, no: &str) -> i32 {
    h.client
        .clone()
        .get_refund(GetRefundRequest {
            out_refund_no: no.into(),
        })
        .await
        .expect("get")
        .into_inner()
        .status
}

/// How many times the reconciler has claimed `no` (an order or a refund).
async fn claims(h: &Harness, table: &str, key: &str, no: &str) -> i32 {
    sqlx::query_scalar(&format!(
        "SELECT check_attempts FROM {table} WHERE {key} = $1"
    ))
    .bind(no)
    .fetch_one(h.store.pool())
    .await
    .expect("row")
}

/// Every WeChat call hangs until the client gives up (or `0`: none does).
async fn hang_wechat(h: &Harness, calls: u32) {
    assert!(h
        .control("/sandbox/faults", serde_json::json!({"timeout": calls}))
        .await
        .is_success());
}

/// An order paid at WeChat whose notification was lost: only a reconciler
/// can find the payment.
async fn paid_silently(h: &mut Harness, key: &str) -> String {
    let no = h
        .client
        .create_order(request(key, 10))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order")
        .out_trade_no;
    let paid = h
        .control(
            &format!("/sandbox/orders/{no}/pay"),
            serde_json::json!({"delivery": "drop"}),
        )
        .await;
    assert!(paid.is_success(), "{paid}");
    no
}

#[tokio::test]
async fn a_killed_replicas_claimed_orders_are_taken_over_within_seconds() {
    let mut h = start(Options::default()).await;
    let first = paid_silently(&mut h, "k-takeover-1").await;
    let second = paid_silently(&mut h, "k-takeover-2").await;

    // Replica A claims both and hangs inside its first orderquery.
    hang_wechat(&h, 1000).await;
    let a =
        tokio::spawn(Reconciler::new(h.payments.clone(), short()).run(CancellationToken::new()));
    within(10, "replica A claims both orders", || async {
        claims(&h, "orders", "out_trade_no", &first).await >= 1
            && claims(&h, "orders", "out_trade_no", &second).await >= 1
    })
    .await;
    // Killed mid-pass: nothing it held is given back.
    a.abort();
    let _ = a.await;
    hang_wechat(&h, 0).await;
    assert_eq!(order_status(&h, &first).await, OrderStatus::Notpay as i32);

    let stop = CancellationToken::new();
    let b = tokio::spawn(Reconciler::new(h.payments.clone(), short()).run(stop.clone()));
    within(10, "replica B finds both payments", || async {
        order_status(&h, &first).await == OrderStatus::Success as i32
            && order_status(&h, &second).await == OrderStatus::Success as i32
    })
    .await;
    stop.cancel();
    b.await.expect("replica B stops");
}

/// The payments of a replica whose Postgres connections go through `proxy`.
async fn replica_behind(h: &Harness, proxy: &PgProxy) -> Arc<Payments> {
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&proxy.url_for(&h.database_url), Default::default())
            .await
            .expect("through the proxy"),
    );
    let publisher: Arc<dyn EventPublisher> =
        Arc::new(RedisPublisher::new(&testing::redis_url()).expect("redis url"));
    let wechat: Arc<dyn WechatApi> = Arc::new(h.wechat.clone());
    Arc::new(Payments::new(Ledger::new(store, publisher), vec![wechat]))
}

#[tokio::test]
async fn a_replica_cut_from_postgres_stops_and_its_claimed_refund_is_taken_over() {
    let mut h = start(Options {
        client_tls: true,
        ..Options::default()
    })
    .await;
    let no = h
        .client
        .create_order(request("k-takeover-refund", 100))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order")
        .out_trade_no;
    h.pay_and_query(&no).await;
    // The refund request never reaches WeChat (all three attempts time out).
    hang_wechat(&h, 3).await;
    let placed = h
        .client
        .refund_order(RefundOrderRequest {
            out_trade_no: no.clone(),
            out_refund_no: "R-takeover".into(),
            refund_fee: 30,
            reason: "七天无理由退货".into(),
        })
        .await
        .expect("stored, outcome unknown")
        .into_inner();
    assert_eq!(placed.status, RefundStatus::Processing as i32);

    // Replica A, over a proxy, claims the refund and hangs in refundquery.
    let proxy = PgProxy::start(
        h.database_url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(authority, _)| authority.to_owned())
            .expect("host:port in the URL"),
    )
    .await;
    let a = Reconciler::new(replica_behind(&h, &proxy).await, short());
    hang_wechat(&h, 1000).await;
    let pass_a = tokio::spawn(async move {
        loop {
            match a.run_once().await {
                Ok(pass) if !pass.ran => tokio::time::sleep(Duration::from_millis(50)).await,
                other => return other,
            }
        }
    });
    within(10, "replica A claims the refund", || async {
        claims(&h, "refunds", "out_refund_no", "R-takeover").await >= 1
    })
    .await;
    proxy.cut();
    // A cannot renew its lease: its pass ends (mid-call) instead of running on.
    let ended = tokio::time::timeout(Duration::from_secs(5), pass_a)
        .await
        .expect("replica A stops within its lease")
        .expect("task");
    let err = ended.expect_err("a pass that lost its lease is an error");
    assert!(err.to_string().contains("lease"), "{err}");
    hang_wechat(&h, 0).await;

    // Replica B finds WeChat never saw the refund, sends it again under its
    // own number, and asks again within seconds once WeChat has paid it.
    let stop = CancellationToken::new();
    let b = tokio::spawn(Reconciler::new(h.payments.clone(), short()).run(stop.clone()));
    let sandbox = format!("{}/sandbox/refunds/R-takeover", h.sandbox);
    within(10, "replica B sends the refund again", || async {
        h.http
            .get(&sandbox)
            .send()
            .await
            .expect("sandbox")
            .status()
            .is_success()
    })
    .await;
    assert!(h
        .control(
            "/sandbox/refunds/R-takeover/settle",
            serde_json::json!({"status": "SUCCESS"}),
        )
        .await
        .is_success());
    within(
        10,
        "replica B asks again and records the refund",
        || async { refund_status(&h, "R-takeover").await == RefundStatus::Success as i32 },
    )
    .await;
    stop.cancel();
    b.await.expect("replica B stops");
}
