//! Refunds and bills of WeChat Pay API v3 merchants, end to end against the
//! sandbox speaking v3 (no client certificate: the signature is the
//! credential), with every v2 guarantee: a paid v3 order refunded in parts,
//! never beyond its total even under concurrent requests, an over-refund
//! refused before WeChat is asked, WeChat's refusal closing the refund and
//! freeing its money, a lost reply resolved by the refund query and never by
//! a second refund, the reconciler settling PROCESSING refunds (the partner
//! endpoints and ABNORMAL = CHANGE included), and the day's bill: one report
//! across v2 and v3 merchants, and a v3 bill whose hash does not match
//! refused with no report stored and nothing changed.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{v3::*, *};
use payment_service::reconciler::ReconcilerConfig;
use tonic::Code;
use wxpay_proto::v1::{
    CreateOrderRequest, GetRefundRequest, OrderStatus, ReconcileBillRequest, RefundOrderRequest,
    RefundStatus, TradeType,
};
use wxpay_store::Store;

fn refund(out_trade_no: &str, out_refund_no: &str, fee: i64) -> RefundOrderRequest {
    RefundOrderRequest {
        out_trade_no: out_trade_no.into(),
        out_refund_no: out_refund_no.into(),
        refund_fee: fee,
        reason: "七天无理由退货".into(),
    }
}

/// The v3 harness with the service's own reconciler eager: a PROCESSING
/// refund is asked about `after` it was placed, every 300 ms.
async fn eager(after: Duration) -> V3Harness {
    harness_with(Options {
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

/// A v3 order of `merchant` for `fee` fen, paid at WeChat and learnt by QueryOrder.
async fn paid(t: &mut V3Harness, merchant: &str, key: &str, fee: i64) -> String {
    let no = placed(t, merchant, key, fee).await;
    t.pay_at_wechat(&no).await;
    let now = t.query(&no).await.expect("query");
    assert_eq!(now.status, OrderStatus::Success as i32);
    no
}

/// A NATIVE v3 order of `merchant` for `fee` fen (a provider's is its sub
/// merchant's), placed at WeChat.
async fn placed(t: &mut V3Harness, merchant: &str, key: &str, fee: i64) -> String {
    t.create(CreateOrderRequest {
        total_fee: fee,
        ..order_of(merchant, key, TradeType::Native)
    })
    .await
    .order
    .expect("order")
    .out_trade_no
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

/// The refunds stored here for an order.
async fn local_refunds(h: &Harness, out_trade_no: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM refunds WHERE out_trade_no = $1")
        .bind(out_trade_no)
        .fetch_one(h.store.pool())
        .await
        .expect("count")
}

async fn get_refund(h: &mut Harness, out_refund_no: &str) -> wxpay_proto::v1::Refund {
    h.client
        .get_refund(GetRefundRequest {
            out_refund_no: out_refund_no.into(),
        })
        .await
        .expect("get refund")
        .into_inner()
}

/// Waits (up to 20 s) for refund `out_refund_no` to be `status` here.
async fn until_refund(
    h: &mut Harness,
    out_refund_no: &str,
    status: RefundStatus,
) -> wxpay_proto::v1::Refund {
    for _ in 0..100 {
        let r = get_refund(h, out_refund_no).await;
        if r.status == status as i32 {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("refund {out_refund_no} never became {status:?}");
}

async fn settle_at_wechat(h: &Harness, out_refund_no: &str, status: &str) {
    // Nobody listens at the refund notify_url here: only the query tells.
    let settled = h
        .control(
            &format!("/sandbox/refunds/{out_refund_no}/settle"),
            serde_json::json!({"status": status, "delivery": "drop"}),
        )
        .await;
    assert!(settled.is_success(), "{settled}");
}

async fn arm(h: &Harness, faults: serde_json::Value) {
    let armed = h.control("/sandbox/faults", faults).await;
    assert!(armed.is_success(), "{armed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_order_is_refunded_in_two_parts_never_beyond_its_total() {
    let mut t = eager(Duration::from_secs(1)).await;
    let no = paid(&mut t, "v3pub", "v3r-parts", 1000).await;

    let first =
        t.h.client
            .refund_order(refund(&no, "R-v3-parts-1", 300))
            .await
            .expect("first refund")
            .into_inner();
    assert_eq!(first.status, RefundStatus::Processing as i32);
    assert!(!first.refund_id.is_empty(), "WeChat accepted it: {first:?}");
    assert_eq!(
        at_wechat(&t.h, "R-v3-parts-1").await.as_deref(),
        Some("PROCESSING")
    );
    // WeChat is told to notify the gateway's v3 refund path, on the origin of
    // WECHAT_NOTIFY_URL (the harness's http://127.0.0.1:9/wechat/pay/notify).
    let seen: serde_json::Value =
        t.h.http
            .get(format!("{}/sandbox/refunds/R-v3-parts-1", t.h.sandbox))
            .send()
            .await
            .expect("sandbox")
            .json()
            .await
            .expect("json");
    assert_eq!(
        seen["notify_url"], "http://127.0.0.1:9/wechat/v3/refund/notify",
        "{seen}"
    );
    // The same request again: the same refund, WeChat not asked twice.
    let again =
        t.h.client
            .refund_order(refund(&no, "R-v3-parts-1", 300))
            .await
            .expect("retry")
            .into_inner();
    assert_eq!(again, first);

    // 701 of the 700 left: refused here, WeChat never hears of it.
    let over =
        t.h.client
            .refund_order(refund(&no, "R-v3-parts-2", 701))
            .await
            .expect_err("more than is left");
    assert_eq!(over.code(), Code::FailedPrecondition);
    assert!(over.message().contains("700"), "{}", over.message());
    assert_eq!(
        at_wechat(&t.h, "R-v3-parts-2").await,
        None,
        "WeChat was not asked"
    );
    t.h.client
        .refund_order(refund(&no, "R-v3-parts-2", 700))
        .await
        .expect("the rest");
    assert_eq!(local_refunds(&t.h, &no).await, 2);

    // WeChat moves the money; the reconciler's v3 query brings both home.
    for rno in ["R-v3-parts-1", "R-v3-parts-2"] {
        settle_at_wechat(&t.h, rno, "SUCCESS").await;
    }
    for rno in ["R-v3-parts-1", "R-v3-parts-2"] {
        let done = until_refund(&mut t.h, rno, RefundStatus::Success).await;
        assert!(done.succeeded_at > 0, "{done:?}");
        assert_eq!(done.reason, "七天无理由退货");
    }
    let order = t.status(&no).await;
    assert_eq!(
        (order.status, order.refunded_fee),
        (OrderStatus::Refund as i32, 1000)
    );
    let nothing_left =
        t.h.client
            .refund_order(refund(&no, "R-v3-parts-3", 1))
            .await
            .expect_err("fully refunded");
    assert_eq!(nothing_left.code(), Code::FailedPrecondition);
    assert_eq!(at_wechat(&t.h, "R-v3-parts-3").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_v3_refunds_of_one_order_never_exceed_it() {
    let mut t = harness().await;
    let no = paid(&mut t, "v3cert", "v3r-race", 100).await;
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let mut client = t.h.client.clone();
            let req = refund(&no, &format!("R-v3-race-{i}"), 30);
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
    assert_eq!(local_refunds(&t.h, &no).await, 3);
    let mut at_wechat_count = 0;
    for i in 0..10 {
        if at_wechat(&t.h, &format!("R-v3-race-{i}")).await.is_some() {
            at_wechat_count += 1;
        }
    }
    assert_eq!(at_wechat_count, 3, "WeChat was asked for the three only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_refund_wechat_refuses_is_closed_and_its_money_is_free_again() {
    let mut t = harness().await;
    let no = paid(&mut t, "v3pub", "v3r-notenough", 100).await;
    arm(&t.h, serde_json::json!({"notenough": 1})).await;
    let err =
        t.h.client
            .refund_order(refund(&no, "R-v3-poor", 100))
            .await
            .expect_err("refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("NOT_ENOUGH"), "{}", err.message());
    assert!(
        err.message().contains("the refund is closed"),
        "{}",
        err.message()
    );
    let closed = get_refund(&mut t.h, "R-v3-poor").await;
    assert_eq!(closed.status, RefundStatus::Closed as i32);
    assert_eq!(
        at_wechat(&t.h, "R-v3-poor").await,
        None,
        "nothing at WeChat"
    );
    // Its 100 fen are free again for a new refund.
    let whole =
        t.h.client
            .refund_order(refund(&no, "R-v3-poor-2", 100))
            .await
            .expect("the whole amount again")
            .into_inner();
    assert_eq!(whole.status, RefundStatus::Processing as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_v3_refund_reply_is_resolved_by_the_query_never_by_a_second_refund() {
    // The reconciler waits 8 s before it asks about a refund, so its questions
    // never take the sandbox's faults armed for the RefundOrder calls.
    let mut t = eager(Duration::from_secs(8)).await;
    let no = paid(&mut t, "v3pub", "v3r-lost", 100).await;

    // WeChat takes the refund and every answer (the client's retries of the
    // same number included) is lost: outcome unknown, the money held.
    arm(&t.h, serde_json::json!({"process_then_timeout": 3})).await;
    let unknown =
        t.h.client
            .refund_order(refund(&no, "R-v3-lost", 40))
            .await
            .expect("stored, outcome unknown")
            .into_inner();
    assert_eq!(unknown.status, RefundStatus::Processing as i32);
    assert!(
        unknown.refund_id.is_empty(),
        "no answer was read: {unknown:?}"
    );
    assert_eq!(
        at_wechat(&t.h, "R-v3-lost").await.as_deref(),
        Some("PROCESSING")
    );
    let held =
        t.h.client
            .refund_order(refund(&no, "R-v3-over", 61))
            .await
            .expect_err("the unknown refund's 40 fen are held");
    assert_eq!(held.code(), Code::FailedPrecondition);
    // WeChat moves the money before anyone asks: the query is what tells.
    settle_at_wechat(&t.h, "R-v3-lost", "SUCCESS").await;
    let lost = until_refund(&mut t.h, "R-v3-lost", RefundStatus::Success).await;
    assert!(!lost.refund_id.is_empty(), "the query gave its refund_id");

    // The request never reached WeChat: the query finds none, and the same
    // number is sent again.
    arm(&t.h, serde_json::json!({"timeout": 3})).await;
    let never =
        t.h.client
            .refund_order(refund(&no, "R-v3-never", 20))
            .await
            .expect("stored, outcome unknown")
            .into_inner();
    assert_eq!(never.status, RefundStatus::Processing as i32);
    assert_eq!(at_wechat(&t.h, "R-v3-never").await, None);
    let resent = until_refund(&mut t.h, "R-v3-never", RefundStatus::Processing).await;
    for _ in 0..100 {
        if at_wechat(&t.h, "R-v3-never").await.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        at_wechat(&t.h, "R-v3-never").await.as_deref(),
        Some("PROCESSING"),
        "re-sent under its own number: {resent:?}"
    );
    let order = t.status(&no).await;
    assert_eq!(order.refunded_fee, 40);
    assert_eq!(
        local_refunds(&t.h, &no).await,
        2,
        "no refund under a new number"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_settles_a_providers_v3_refund_abnormal_as_change() {
    let mut t = eager(Duration::from_secs(1)).await;
    let no = paid(&mut t, "v3sp", "v3r-sp", 200).await;
    let placed =
        t.h.client
            .refund_order(refund(&no, "R-v3-sp", 80))
            .await
            .expect("refunded over the partner fields")
            .into_inner();
    assert_eq!(placed.status, RefundStatus::Processing as i32);
    assert!(!placed.refund_id.is_empty());
    // The payer's account cannot take it back: ABNORMAL, our CHANGE, which
    // the reconciler learns from the partner query (`?sub_mchid=`).
    settle_at_wechat(&t.h, "R-v3-sp", "ABNORMAL").await;
    let change = until_refund(&mut t.h, "R-v3-sp", RefundStatus::Change).await;
    assert_eq!(change.refund_id, placed.refund_id);
}

/// Beijing time's today: the sandbox serves its bill at once.
fn today() -> chrono::NaiveDate {
    (Utc::now() + chrono::Duration::hours(8)).date_naive()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bill_report_covers_v2_and_v3_merchants() {
    let mut t = harness().await;
    // v2: paid and known here.
    let v2 = t
        .create(request("v3r-bill-v2", 100))
        .await
        .order
        .expect("order")
        .out_trade_no;
    t.h.pay_and_query(&v2).await;
    // v3 (public key): paid and known, then 30 fen refunded and settled at
    // WeChat without a word to us.
    let v3 = paid(&mut t, "v3pub", "v3r-bill-v3", 120).await;
    t.h.client
        .refund_order(refund(&v3, "R-v3-bill", 30))
        .await
        .expect("refund");
    settle_at_wechat(&t.h, "R-v3-bill", "SUCCESS").await;
    // v3 (certificates): paid at WeChat, its notification lost.
    let lost = placed(&mut t, "v3cert", "v3r-bill-lost", 150).await;
    t.pay_at_wechat(&lost).await;
    // v3 provider: paid and known.
    let sp = paid(&mut t, "v3sp", "v3r-bill-sp", 110).await;

    let report =
        t.h.payments
            .reconcile_downloaded(today())
            .await
            .expect("reconciled");
    assert_eq!(
        report.wechat_rows, 5,
        "four payments and a refund, from four merchants: {report:?}"
    );
    assert_eq!(
        (report.matched, report.repaired),
        (3, 2),
        "v2, v3pub and v3sp matched; the v3 refund and the lost v3 payment repaired: {report:?}"
    );
    assert!(report.discrepancies.is_empty(), "{report:?}");
    assert_eq!(
        t.status(&lost).await.status,
        OrderStatus::Success as i32,
        "the lost v3 payment ends SUCCESS"
    );
    let v3_now = t.status(&v3).await;
    assert_eq!(
        (v3_now.status, v3_now.refunded_fee),
        (OrderStatus::Refund as i32, 30)
    );
    assert_eq!(t.status(&sp).await.status, OrderStatus::Success as i32);
    assert_eq!(
        t.h.store.bill_report(today()).await.expect("read"),
        Some(report),
        "one report for the day"
    );

    // A day without trades at all: no bill for any merchant, an empty report,
    // through ReconcileBill itself.
    let quiet = (Utc::now() - chrono::Duration::days(3))
        .format("%Y%m%d")
        .to_string();
    let empty =
        t.h.client
            .reconcile_bill(ReconcileBillRequest {
                bill_date: quiet,
                again: true,
            })
            .await
            .expect("reconciled")
            .into_inner();
    assert_eq!(empty.wechat_rows, 0, "{empty:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_bill_whose_hash_does_not_match_is_refused_and_changes_nothing() {
    let mut t = harness().await;
    let lost = placed(&mut t, "v3pub", "v3r-hash-lost", 130).await;
    t.pay_at_wechat(&lost).await;
    let version = t.status(&lost).await.version;

    arm(&t.h, serde_json::json!({"bill_wrong_hash": 1})).await;
    let refused =
        t.h.payments
            .reconcile_downloaded(today())
            .await
            .expect_err("the hash does not match");
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("did not match the hash"),
        "{}",
        status.message()
    );
    assert_eq!(
        t.h.store.bill_report(today()).await.expect("read"),
        None,
        "no report stored"
    );
    let after = t.status(&lost).await;
    assert_eq!(
        (after.status, after.version),
        (OrderStatus::Notpay as i32, version),
        "nothing repaired from a bill not proven"
    );

    // The next download matches its hash: the day is reconciled.
    let report =
        t.h.payments
            .reconcile_downloaded(today())
            .await
            .expect("reconciled");
    assert_eq!(report.repaired, 1, "{report:?}");
    assert_eq!(t.status(&lost).await.status, OrderStatus::Success as i32);
}
