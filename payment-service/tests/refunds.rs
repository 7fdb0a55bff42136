//! RefundOrder and GetRefund end to end: a real tonic server on Postgres and the
//! sandbox over mutual TLS (its client certificate), with WeChat's side played
//! through the sandbox's control API: refunds in parts, idempotent retries, the
//! total never exceeded, WeChat's refusals, outcomes lost to a timeout resolved
//! by refundquery (never by a second refund), and no certificate at all.

mod common;

use std::time::Duration;

use common::*;
use payment_service::reconciler::ReconcilerConfig;
use tonic::Code;
use wxpay_proto::v1::{
    GetOrderRequest, GetRefundRequest, OrderStatus, RefundOrderRequest, RefundStatus,
};

fn refund(out_trade_no: &str, out_refund_no: &str, fee: i64) -> RefundOrderRequest {
    RefundOrderRequest {
        out_trade_no: out_trade_no.into(),
        out_refund_no: out_refund_no.into(),
        refund_fee: fee,
        reason: "七天无理由退货".into(),
    }
}

async fn tls_harness() -> Harness {
    tls_harness_after(Duration::from_secs(1)).await
}

async fn tls_harness_after(after: Duration) -> Harness {
    start(Options {
        client_tls: true,
        // The service's own reconciler, eager: refunds are asked about 1 s
        // after they were placed.
        reconcile: ReconcilerConfig {
            interval: Duration::from_millis(300),
            after,
            max_qps: 1000,
            ..ReconcilerConfig::default()
        },
        ..Options::default()
    })
    .await
}

/// Waits (up to 10 s) for `check` on the order to hold.
async fn until_order(
    h: &mut Harness,
    no: &str,
    check: impl Fn(&wxpay_proto::v1::Order) -> bool,
) -> wxpay_proto::v1::Order {
    for _ in 0..100 {
        let order = h
            .client
            .get_order(GetOrderRequest {
                out_trade_no: no.into(),
            })
            .await
            .expect("get")
            .into_inner();
        if check(&order) {
            return order;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the order never got there");
}

/// A paid order of `fee` fen: created, paid in the sandbox, learnt by QueryOrder.
async fn paid(h: &mut Harness, key: &str, fee: i64) -> String {
    let order = h
        .client
        .create_order(request(key, fee))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order");
    h.pay_and_query(&order.out_trade_no).await;
    order.out_trade_no
}

async fn sandbox_refunds(h: &Harness, out_trade_no: &str) -> usize {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM refunds WHERE out_trade_no = $1")
        .bind(out_trade_no)
        .fetch_one(h.store.pool())
        .await
        .expect("count");
    usize::try_from(rows).unwrap_or(0)
}

/// What the sandbox holds for a refund number: its status, or None if unknown.
async fn at_wechat(h: &Harness, out_refund_no: &str) -> Option<String> {
    let r = h
        .http
        .get(format!("{}/sandbox/refunds/{out_refund_no}", h.sandbox))
        .send()
        .await
        .expect("sandbox");
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let v: serde_json::Value = r.json().await.expect("json");
    Some(v["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn an_order_is_refunded_in_parts_over_mutual_tls_never_beyond_its_total() {
    let mut h = tls_harness().await;
    let no = paid(&mut h, "k-parts", 1000).await;

    let first = h
        .client
        .refund_order(refund(&no, "R-parts-1", 300))
        .await
        .expect("first refund")
        .into_inner();
    assert_eq!(first.status, RefundStatus::Processing as i32);
    assert!(!first.refund_id.is_empty(), "WeChat accepted it: {first:?}");
    assert_eq!(
        at_wechat(&h, "R-parts-1").await.as_deref(),
        Some("PROCESSING")
    );

    // The same request again: the same refund, and WeChat is not asked twice.
    let again = h
        .client
        .refund_order(refund(&no, "R-parts-1", 300))
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(again, first);
    // The same number for another amount is another request under a taken key.
    let taken = h
        .client
        .refund_order(refund(&no, "R-parts-1", 301))
        .await
        .expect_err("key reused");
    assert_eq!(taken.code(), Code::AlreadyExists);

    let over = h
        .client
        .refund_order(refund(&no, "R-parts-2", 701))
        .await
        .expect_err("more than is left");
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert!(over.message().contains("700"), "{}", over.message());
    assert_eq!(
        at_wechat(&h, "R-parts-2").await,
        None,
        "WeChat was not asked"
    );

    h.client
        .refund_order(refund(&no, "R-parts-2", 700))
        .await
        .expect("the rest");
    for bad in [0, -5] {
        let err = h
            .client
            .refund_order(refund(&no, "R-parts-3", bad))
            .await
            .expect_err("not positive");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("refund_fee"), "{}", err.message());
    }
    assert_eq!(sandbox_refunds(&h, &no).await, 2);

    // WeChat moves the money; nobody listens at the refund notify_url here, so
    // the reconciler's refundquery brings both home.
    for rno in ["R-parts-1", "R-parts-2"] {
        let settled = h
            .control(
                &format!("/sandbox/refunds/{rno}/settle"),
                serde_json::json!({"status": "SUCCESS"}),
            )
            .await;
        assert!(settled.is_success(), "{settled}");
    }
    let order = until_order(&mut h, &no, |o| o.refunded_fee == 1000).await;
    assert_eq!(
        (order.status, order.refunded_fee),
        (OrderStatus::Refund as i32, 1000)
    );
    let read = h
        .client
        .get_refund(GetRefundRequest {
            out_refund_no: "R-parts-1".into(),
        })
        .await
        .expect("get refund")
        .into_inner();
    assert_eq!(read.status, RefundStatus::Success as i32);
    assert!(read.succeeded_at > 0);
    assert_eq!(read.reason, "七天无理由退货");
    let nothing_left = h
        .client
        .refund_order(refund(&no, "R-parts-3", 1))
        .await
        .expect_err("fully refunded");
    assert_eq!(nothing_left.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn concurrent_refunds_of_one_order_never_exceed_it() {
    let mut h = tls_harness().await;
    let no = paid(&mut h, "k-race", 100).await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut client = h.client.clone();
            let req = refund(&no, &format!("R-race-{i}"), 30);
            tokio::spawn(async move { client.refund_order(req).await })
        })
        .collect();
    let mut ok = 0;
    for c in calls {
        match c.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}"),
        }
    }
    assert_eq!(ok, 3, "3 × 30 fit in 100, a 4th does not");
    assert_eq!(sandbox_refunds(&h, &no).await, 3);
}

#[tokio::test]
async fn without_a_client_certificate_refunds_are_refused_naming_the_variables() {
    let mut h = start(Options::default()).await;
    let no = paid(&mut h, "k-nocert", 100).await;
    let err = h
        .client
        .refund_order(refund(&no, "R-nocert", 10))
        .await
        .expect_err("no certificate");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("WECHAT_CLIENT_CERT"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("WECHAT_CLIENT_P12"),
        "{}",
        err.message()
    );
    assert_eq!(sandbox_refunds(&h, &no).await, 0, "nothing stored");
}

#[tokio::test]
async fn a_refund_wechat_refuses_is_closed_and_its_money_is_free_again() {
    let mut h = tls_harness().await;
    let no = paid(&mut h, "k-notenough", 100).await;
    assert!(h
        .control("/sandbox/faults", serde_json::json!({"notenough": 1}))
        .await
        .is_success());
    let err = h
        .client
        .refund_order(refund(&no, "R-poor", 100))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("NOTENOUGH"), "{}", err.message());
    let closed = h
        .client
        .get_refund(GetRefundRequest {
            out_refund_no: "R-poor".into(),
        })
        .await
        .expect("stored")
        .into_inner();
    assert_eq!(closed.status, RefundStatus::Closed as i32);
    // Its 100 fen are free again for a new refund.
    h.client
        .refund_order(refund(&no, "R-poor-2", 100))
        .await
        .expect("the whole amount again");
}

#[tokio::test]
async fn a_lost_refund_reply_is_resolved_by_refundquery_never_by_a_second_refund() {
    // The reconciler waits 6 s before it asks about a refund, so its questions
    // never take the sandbox's armed faults meant for the RefundOrder calls.
    let mut h = tls_harness_after(Duration::from_secs(6)).await;
    let no = paid(&mut h, "k-lost", 100).await;

    // WeChat takes the refund, then the connection drops: outcome unknown.
    assert!(h
        .control(
            "/sandbox/faults",
            serde_json::json!({"process_then_timeout": 1})
        )
        .await
        .is_success());
    let unknown = h
        .client
        .refund_order(refund(&no, "R-lost", 40))
        .await
        .expect("stored, outcome unknown")
        .into_inner();
    assert_eq!(unknown.status, RefundStatus::Processing as i32);
    assert_eq!(at_wechat(&h, "R-lost").await.as_deref(), Some("PROCESSING"));
    // WeChat moves the money before anyone asks (nobody listens at the
    // refund notify_url here): refundquery is what tells.
    h.control(
        "/sandbox/refunds/R-lost/settle",
        serde_json::json!({"status": "SUCCESS"}),
    )
    .await;
    until_order(&mut h, &no, |o| o.refunded_fee == 40).await;

    // The request never reached WeChat (dropped before it was processed).
    assert!(h
        .control("/sandbox/faults", serde_json::json!({"timeout": 3}))
        .await
        .is_success());
    let never = h
        .client
        .refund_order(refund(&no, "R-never", 20))
        .await
        .expect("stored, outcome unknown")
        .into_inner();
    assert_eq!(never.status, RefundStatus::Processing as i32);
    // (The eager reconciler may already have re-sent it by now: the three
    // timed-out attempts took longer than its 1 s wait.)

    for _ in 0..100 {
        if at_wechat(&h, "R-never").await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // R-lost: refundquery says SUCCESS. R-never: WeChat has none, so it is
    // sent again under its own number.
    assert_eq!(
        at_wechat(&h, "R-never").await.as_deref(),
        Some("PROCESSING")
    );
    let lost = h
        .client
        .get_refund(GetRefundRequest {
            out_refund_no: "R-lost".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(lost.status, RefundStatus::Success as i32);
    assert!(!lost.refund_id.is_empty());
    let order = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: no.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(order.refunded_fee, 40);
    assert_eq!(
        sandbox_refunds(&h, &no).await,
        2,
        "no refund under a new number"
    );
}
