//! The daily bill reconciliation against the sandbox's bill of today (the
//! sandbox serves a day's bill at once; WeChat only after 10:00 the next day):
//! a payment whose notification was dropped is repaired after orderquery
//! confirms it, a refund settled at WeChat without a word to us is repaired
//! after refundquery, a payment this service never placed is reported, and the
//! report is stored for the day.

mod common;

use chrono::Utc;
use common::*;
use payment_service::wechat::UnifiedOrder;
use wxpay_core::{
    domain::{DiscrepancyKind, Fee, OutTradeNo},
    wechat::SignType,
};
use wxpay_proto::v1::{GetOrderRequest, OrderStatus, QueryOrderRequest, RefundOrderRequest};
use wxpay_store::Store;

async fn create(h: &mut Harness, key: &str, fee: i64) -> String {
    h.client
        .create_order(request(key, fee))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order")
        .out_trade_no
}

async fn pay_at_wechat(h: &Harness, no: &str) {
    // Nobody listens at the harness's notify_url: every notification is lost.
    let paid = h
        .control(
            &format!("/sandbox/orders/{no}/pay"),
            serde_json::json!({"delivery": "drop"}),
        )
        .await;
    assert!(paid.is_success(), "{paid}");
}

#[tokio::test]
async fn a_day_with_a_lost_notification_a_silent_refund_and_a_stranger_reconciles() {
    let mut h = start(Options {
        client_tls: true,
        ..Options::default()
    })
    .await;

    // A: paid at WeChat, its notification lost: NOTPAY here.
    let lost = create(&mut h, "k-bill-lost", 120).await;
    pay_at_wechat(&h, &lost).await;

    // B: paid and known here, then 50 fen refunded; WeChat settles the refund
    // and its notification never arrives: PROCESSING here.
    let known = create(&mut h, "k-bill-known", 200).await;
    pay_at_wechat(&h, &known).await;
    h.client
        .query_order(QueryOrderRequest {
            out_trade_no: known.clone(),
        })
        .await
        .expect("query");
    let rno = format!("{known}-r");
    h.client
        .refund_order(RefundOrderRequest {
            out_trade_no: known.clone(),
            out_refund_no: rno.clone(),
            refund_fee: 50,
            reason: String::new(),
        })
        .await
        .expect("refund");
    let settled = h
        .control(
            &format!("/sandbox/refunds/{rno}/settle"),
            serde_json::json!({"status": "SUCCESS", "delivery": "drop"}),
        )
        .await;
    assert!(settled.is_success(), "{settled}");

    // C: placed at WeChat by another system of the merchant's and paid; never here.
    let stranger = OutTradeNo::generate();
    h.wechat
        .unified_order(&UnifiedOrder {
            out_trade_no: stranger.as_str(),
            body: "another till",
            total_fee: Fee::new(300).expect("positive"),
            attach: "",
            spbill_create_ip: "127.0.0.1",
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            notify_url: "http://127.0.0.1:9/elsewhere",
            time_expire: None,
            sign_type: SignType::Md5,
        })
        .await
        .expect("placed at WeChat");
    pay_at_wechat(&h, stranger.as_str()).await;

    let today = (Utc::now() + chrono::Duration::hours(8)).date_naive();
    let report = h
        .payments
        .reconcile_downloaded(today)
        .await
        .expect("reconciled");

    assert_eq!(
        report.wechat_rows, 4,
        "three payments and a refund: {report:?}"
    );
    assert_eq!(report.matched, 1, "B's payment: {report:?}");
    assert_eq!(report.repaired, 2, "A's payment and B's refund: {report:?}");
    let kinds: Vec<_> = report
        .discrepancies
        .iter()
        .map(|d| (d.kind, d.out_trade_no.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![(DiscrepancyKind::MissingLocally, stranger.as_str())],
        "exactly the stranger"
    );

    let a = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: lost.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        a.status,
        OrderStatus::Success as i32,
        "the lost payment ends SUCCESS"
    );
    let b = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: known.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!((b.status, b.refunded_fee), (OrderStatus::Refund as i32, 50));
    assert_eq!(
        h.store.bill_report(today).await.expect("read"),
        Some(report.clone()),
        "the day's report is stored"
    );

    // Reconciled again: everything now agrees but the stranger.
    let again = h.payments.reconcile_downloaded(today).await.expect("again");
    assert_eq!((again.matched, again.repaired), (3, 0), "{again:?}");
    assert_eq!(again.discrepancies.len(), 1);
}

#[tokio::test]
async fn a_bill_date_is_checked_and_a_day_not_ready_is_refused() {
    let mut h = start(Options::default()).await;
    for bad in ["2026-11-23", "20261131", ""] {
        let err = h
            .client
            .reconcile_bill(wxpay_proto::v1::ReconcileBillRequest {
                bill_date: bad.into(),
                again: false,
            })
            .await
            .expect_err("bad date");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(err.message().contains("bill_date"), "{}", err.message());
    }
    let today = (Utc::now() + chrono::Duration::hours(8))
        .date_naive()
        .format("%Y%m%d")
        .to_string();
    let err = h
        .client
        .reconcile_bill(wxpay_proto::v1::ReconcileBillRequest {
            bill_date: today,
            again: false,
        })
        .await
        .expect_err("today's bill is not ready");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}
