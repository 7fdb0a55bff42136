//! The order lifecycle against the WeChat sandbox: CreateOrder under WeChat's
//! time_expire rules, refusals that say whether to retry, payments that arrive
//! after a failure, a close or a lost notification, the CreateOrder/CloseOrder
//! race, and the reconciler (on Postgres here; on SQLite in `reconciler_sqlite.rs`).

mod common;

use std::time::Duration;

use common::*;
use payment_service::reconciler::ReconcilerConfig;
use tonic::Code;
use wxpay_core::wechat::{ApiKey, Merchant};
use wxpay_proto::v1::{
    CloseOrderRequest, CreateOrderRequest, GetOrderRequest, OrderStatus, QueryOrderRequest,
};

fn with_expiry(key: &str, expire_seconds: i64) -> CreateOrderRequest {
    CreateOrderRequest {
        expire_seconds,
        ..request(key, 10)
    }
}

impl Harness {
    async fn create(&mut self, key: &str) -> wxpay_proto::v1::Order {
        self.client
            .create_order(request(key, 10))
            .await
            .expect("created")
            .into_inner()
            .order
            .expect("order")
    }

    async fn get(&mut self, out_trade_no: &str) -> wxpay_proto::v1::Order {
        self.client
            .get_order(GetOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .expect("get")
            .into_inner()
    }

    /// GetOrder every 100 ms until the order is `status` or `tries` reads
    /// have passed; the last read either way.
    async fn get_until(
        &mut self,
        out_trade_no: &str,
        status: OrderStatus,
        tries: u32,
    ) -> wxpay_proto::v1::Order {
        let mut order = self.get(out_trade_no).await;
        for _ in 0..tries {
            if order.status == status as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            order = self.get(out_trade_no).await;
        }
        order
    }

    async fn query(&mut self, out_trade_no: &str) -> wxpay_proto::v1::Order {
        self.client
            .query_order(QueryOrderRequest {
                out_trade_no: out_trade_no.into(),
            })
            .await
            .expect("query")
            .into_inner()
    }

    async fn sql(&self, statement: &str, out_trade_no: &str) {
        sqlx::query(statement)
            .bind(out_trade_no)
            .execute(self.store.pool())
            .await
            .expect("operator's SQL");
    }

    async fn anomalies(&self, out_trade_no: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM anomalies WHERE out_trade_no = $1")
            .bind(out_trade_no)
            .fetch_all(self.store.pool())
            .await
            .expect("anomalies")
    }

    async fn sandbox_pay(&self, out_trade_no: &str, body: serde_json::Value) {
        let paid = self
            .control(&format!("/sandbox/orders/{out_trade_no}/pay"), body)
            .await;
        assert!(paid.is_success(), "the sandbox took the payment: {paid}");
    }
}

#[tokio::test]
async fn expire_seconds_under_five_minutes_is_refused_naming_the_field() {
    let mut h = start(Options::default()).await;
    for seconds in [1, 60, 299, -5] {
        let err = h
            .client
            .create_order(with_expiry(&format!("k-short-{seconds}"), seconds))
            .await
            .expect_err("WeChat would refuse it");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("expire_seconds"),
            "{}",
            err.message()
        );
    }
    assert_eq!(
        h.order_count().await,
        0,
        "nothing stored for a refused request"
    );

    let created = h
        .client
        .create_order(with_expiry("k-default-expiry", 0))
        .await
        .expect("0 is the default")
        .into_inner()
        .order
        .expect("order");
    let window = created.expires_at - created.created_at;
    assert!(
        (window - 7_200_000).abs() < 3_000,
        "0 means WeChat's two hours, made explicit: {window} ms"
    );
    assert!(h
        .client
        .create_order(with_expiry("k-five-minutes", 300))
        .await
        .is_ok());
}

#[tokio::test]
async fn an_expired_order_never_gets_payment_parameters() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-expired").await;
    // Time passes: the whole order moves 31 minutes into the past (its 30 are over).
    h.sql(
        "UPDATE orders SET created_at = created_at - interval '31 minutes', \
         expires_at = expires_at - interval '31 minutes' WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    let err = h
        .client
        .create_order(request("k-expired", 10))
        .await
        .expect_err("expired");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("expired"), "{}", err.message());
}

#[tokio::test]
async fn a_new_prepay_id_is_not_requested_for_an_order_about_to_expire() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-nearly-expired").await;
    // The prepay_id ran out and the order has two minutes left: WeChat would
    // refuse the time_expire, so the order is refused as expired instead.
    h.sql(
        "UPDATE orders SET prepay_expires_at = now() - interval '1 second', \
         created_at = created_at - (expires_at - now() - interval '2 minutes'), \
         expires_at = now() + interval '2 minutes' WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    let err = h
        .client
        .create_order(request("k-nearly-expired", 10))
        .await
        .expect_err("too close to its expiry");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("5 minutes"), "{}", err.message());
}

#[tokio::test]
async fn a_payment_after_a_failed_one_is_recorded() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-retry-pay").await;
    let failed = h
        .control(
            &format!("/sandbox/orders/{}/fail", o.out_trade_no),
            serde_json::json!({"delivery": "drop"}),
        )
        .await;
    assert!(failed.is_success());
    assert_eq!(
        h.query(&o.out_trade_no).await.status,
        OrderStatus::Payerror as i32
    );

    // The payer tries again and pays; the notification is lost.
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    let paid = h.query(&o.out_trade_no).await;
    assert_eq!(
        paid.status,
        OrderStatus::Success as i32,
        "PAYERROR was final"
    );
    assert!(!paid.transaction_id.is_empty());
}

#[tokio::test]
async fn a_payment_for_an_order_closed_here_is_recorded_and_flagged() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-paid-after-close").await;
    // Closed here only (as when closeorder said ORDERNOTEXIST while unifiedorder
    // was still on its way), then paid at WeChat.
    h.sql(
        "UPDATE orders SET status = 'CLOSED', version = version + 1 WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    let paid = h.query(&o.out_trade_no).await;
    assert_eq!(
        paid.status,
        OrderStatus::Success as i32,
        "the payer's money must show"
    );
    assert_eq!(h.anomalies(&o.out_trade_no).await, vec!["paid_after_close"]);
}

#[tokio::test]
async fn unifiedorder_orderpaid_reconciles_instead_of_failing() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-orderpaid").await;
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    // The caller retries after the prepay_id ran out: WeChat answers ORDERPAID.
    h.sql(
        "UPDATE orders SET prepay_expires_at = now() - interval '1 second' WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    let again = h
        .client
        .create_order(request("k-orderpaid", 10))
        .await
        .expect("the retry returns the order")
        .into_inner();
    assert!(
        again.payment.is_none(),
        "a paid order got payment parameters"
    );
    assert_eq!(
        again.order.expect("order").status,
        OrderStatus::Success as i32
    );
}

#[tokio::test]
async fn orderpaid_that_orderquery_does_not_confirm_is_an_error_and_changes_nothing() {
    let mut h = start(Options::default()).await;
    let o = h.create("k-orderpaid-unpaid").await;
    // The caller retries after the prepay_id ran out; WeChat answers ORDERPAID
    // while its orderquery still says NOTPAY.
    h.sql(
        "UPDATE orders SET prepay_expires_at = now() - interval '1 second' WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    let armed = h
        .control("/sandbox/faults", serde_json::json!({"orderpaid": 1}))
        .await;
    assert!(armed.is_success(), "{armed}");
    let events = h.event_count(&o.out_trade_no).await;

    let err = h
        .client
        .create_order(request("k-orderpaid-unpaid", 10))
        .await
        .expect_err("an unpaid order with nothing to pay with is no success");

    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for said in ["ORDERPAID", "orderquery says NOTPAY"] {
        assert!(err.message().contains(said), "{}", err.message());
    }
    let after = h.get(&o.out_trade_no).await;
    assert_eq!(after.status, OrderStatus::Notpay as i32);
    assert_eq!(after.version, o.version, "the order was not touched");
    assert_eq!(h.event_count(&o.out_trade_no).await, events);
    // WeChat answers as usual again: the same request gets what to pay with.
    let again = h
        .client
        .create_order(request("k-orderpaid-unpaid", 10))
        .await
        .expect("placed")
        .into_inner();
    assert!(again.payment.is_some(), "{again:?}");
}

#[tokio::test]
async fn orderpaid_for_an_order_wechat_does_not_know_is_an_error() {
    let mut h = start(Options::default()).await;
    let armed = h
        .control("/sandbox/faults", serde_json::json!({"orderpaid": 1}))
        .await;
    assert!(armed.is_success(), "{armed}");

    let err = h
        .client
        .create_order(request("k-orderpaid-unknown", 10))
        .await
        .expect_err("an unpaid order with nothing to pay with is no success");

    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for said in ["ORDERPAID", "orderquery does not know the order"] {
        assert!(err.message().contains(said), "{}", err.message());
    }
    assert_eq!(h.order_count().await, 1);
    let no: String = sqlx::query_scalar("SELECT out_trade_no FROM orders")
        .fetch_one(h.store.pool())
        .await
        .expect("the order");
    let order = h.get(&no).await;
    assert_eq!(order.status, OrderStatus::Notpay as i32);
    assert!(order.prepay_id.is_empty(), "{order:?}");
}

#[tokio::test]
async fn a_misconfigured_merchant_is_failed_precondition_not_unavailable() {
    // The sandbox knows this merchant under another key: every signature is wrong.
    let mut h = start(Options {
        sandbox: wechat_sandbox::SandboxConfig {
            time_factor: 1000,
            ..wechat_sandbox::SandboxConfig::new(Merchant {
                api_key: ApiKey::parse("0123456789abcdef0123456789abcdef").expect("key"),
                ..merchant()
            })
        },
        ..Options::default()
    })
    .await;
    let err = h
        .client
        .create_order(request("k-bad-key", 10))
        .await
        .expect_err("WeChat refuses the signature");
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "retrying cannot fix a wrong key: {err:?}"
    );
}

#[tokio::test]
async fn close_while_unifiedorder_is_in_flight_leaves_no_payable_closed_order() {
    let mut h = start(Options::default()).await;
    // unifiedorder's first attempt hangs (the client gives up after 1.5 s and
    // resends); meanwhile the caller closes the order, which WeChat does not know yet.
    let fault = h
        .control("/sandbox/faults", serde_json::json!({"timeout": 1}))
        .await;
    assert!(fault.is_success());
    let mut creator = h.client.clone();
    let create = tokio::spawn(async move { creator.create_order(request("k-race", 10)).await });
    let no = loop {
        let n: Option<String> =
            sqlx::query_scalar("SELECT out_trade_no FROM orders WHERE idempotency_key = 'k-race'")
                .fetch_optional(h.store.pool())
                .await
                .expect("read");
        if let Some(n) = n {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let closed = h
        .client
        .close_order(CloseOrderRequest {
            out_trade_no: no.clone(),
        })
        .await
        .expect("closed: WeChat has no such order yet")
        .into_inner();
    assert_eq!(closed.status, OrderStatus::Closed as i32);

    let created = create
        .await
        .expect("task")
        .expect("CreateOrder answers")
        .into_inner();
    assert!(
        created.payment.is_none(),
        "a CLOSED order came back with payment parameters"
    );
    let stored = h.get(&no).await;
    assert_eq!(stored.status, OrderStatus::Closed as i32);
    assert!(stored.prepay_id.is_empty(), "the late prepay_id was kept");
}

fn eager() -> ReconcilerConfig {
    ReconcilerConfig {
        interval: Duration::from_millis(300),
        after: Duration::from_secs(1),
        ..ReconcilerConfig::default()
    }
}

/// A payer whose attempt failed pays again at once and that notification is
/// lost: the reconciler, which just found the order PAYERROR, asks again
/// within seconds, not on the minute-long schedule of an order nobody is paying.
#[tokio::test]
async fn the_reconciler_finds_a_payment_right_after_a_failed_attempt_within_seconds() {
    let mut h = start(Options {
        reconcile: eager(),
        ..Options::default()
    })
    .await;
    let o = h.create("k-reconcile-after-failure").await;
    let failed = h
        .control(
            &format!("/sandbox/orders/{}/fail", o.out_trade_no),
            serde_json::json!({"delivery": "drop"}),
        )
        .await;
    assert!(failed.is_success());
    // The reconciler asks (after 1 s) and finds the failure.
    let order = h
        .get_until(&o.out_trade_no, OrderStatus::Payerror, 50)
        .await;
    assert_eq!(
        order.status,
        OrderStatus::Payerror as i32,
        "the reconciler saw the failure"
    );
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    let order = h
        .get_until(&o.out_trade_no, OrderStatus::Success, 100)
        .await;
    assert_eq!(
        order.status,
        OrderStatus::Success as i32,
        "the payment after the failure was found within 10 s"
    );
}

#[tokio::test]
async fn the_reconciler_records_a_payment_whose_notification_was_lost() {
    let mut h = start(Options {
        reconcile: eager(),
        ..Options::default()
    })
    .await;
    let o = h.create("k-reconcile-pay").await;
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    let order = h.get_until(&o.out_trade_no, OrderStatus::Success, 50).await;
    assert_eq!(
        order.status,
        OrderStatus::Success as i32,
        "nobody watched, nobody queried"
    );
}

#[tokio::test]
async fn the_reconciler_closes_expired_orders_at_wechat_first() {
    let mut h = start(Options {
        reconcile: eager(),
        ..Options::default()
    })
    .await;
    let young = h.create("k-expired-young").await;
    let old = h.create("k-expired-old").await;
    for no in [&young.out_trade_no, &old.out_trade_no] {
        h.sql(
            "UPDATE orders SET expires_at = now() - interval '1 second' WHERE out_trade_no = $1",
            no,
        )
        .await;
    }
    // Only the old one is past WeChat's five minutes, here and at WeChat.
    h.sql(
        "UPDATE orders SET created_at = now() - interval '10 minutes' WHERE out_trade_no = $1",
        &old.out_trade_no,
    )
    .await;
    assert!(h
        .control(
            &format!("/sandbox/orders/{}/age", old.out_trade_no),
            serde_json::json!({"seconds": 600}),
        )
        .await
        .is_success());

    let mut closed = h.get(&old.out_trade_no).await;
    for _ in 0..50 {
        if closed.status == OrderStatus::Closed as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        closed = h.get(&old.out_trade_no).await;
    }
    assert_eq!(closed.status, OrderStatus::Closed as i32);
    assert_eq!(h.sandbox_status(&old.out_trade_no).await, "CLOSED");
    // The young one waits for WeChat's five minutes rather than be refused.
    assert_eq!(
        h.get(&young.out_trade_no).await.status,
        OrderStatus::Notpay as i32
    );
    assert_eq!(h.sandbox_status(&young.out_trade_no).await, "NOTPAY");
}

#[tokio::test]
async fn an_expired_order_paid_at_wechat_is_recorded_not_closed() {
    let mut h = start(Options {
        reconcile: eager(),
        ..Options::default()
    })
    .await;
    let o = h.create("k-expired-paid").await;
    h.sandbox_pay(&o.out_trade_no, serde_json::json!({"delivery": "drop"}))
        .await;
    h.sql(
        "UPDATE orders SET created_at = now() - interval '10 minutes', \
         expires_at = now() - interval '1 second' WHERE out_trade_no = $1",
        &o.out_trade_no,
    )
    .await;
    let mut order = h.get(&o.out_trade_no).await;
    for _ in 0..50 {
        if order.status != OrderStatus::Notpay as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        order = h.get(&o.out_trade_no).await;
    }
    assert_eq!(
        order.status,
        OrderStatus::Success as i32,
        "ORDERPAID means paid"
    );
}
