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
    wechat::{SignType, TradeType},
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

/// An order placed at WeChat by another system of the merchant's and paid
/// there: this service never heard of it.
async fn stranger_paid_at_wechat(h: &Harness, fee: i64) -> OutTradeNo {
    let stranger = OutTradeNo::generate();
    h.wechat
        .unified_order(&UnifiedOrder {
            out_trade_no: stranger.as_str(),
            body: "another till",
            total_fee: Fee::new(fee).expect("positive"),
            attach: "",
            spbill_create_ip: "127.0.0.1",
            trade_type: TradeType::Jsapi,
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
            sub_openid: "",
            product_id: "",
            scene_info: "",
            notify_url: "http://127.0.0.1:9/elsewhere",
            time_expire: None,
            sign_type: SignType::Md5,
        })
        .await
        .expect("placed at WeChat");
    pay_at_wechat(h, stranger.as_str()).await;
    stranger
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
    let stranger = stranger_paid_at_wechat(&h, 300).await;

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

/// An operator's (or a bug's) edit of the local state, which the bill exists to catch.
async fn edit(h: &Harness, sql: &str, no: &str) {
    sqlx::query(sql)
        .bind(no)
        .execute(h.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn paid_here(h: &mut Harness, key: &str, fee: i64) -> String {
    let no = create(h, key, fee).await;
    pay_at_wechat(h, &no).await;
    let now = h
        .client
        .query_order(QueryOrderRequest {
            out_trade_no: no.clone(),
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(now.status, OrderStatus::Success as i32);
    no
}

async fn refunded_at_wechat(h: &mut Harness, no: &str, rno: &str, fee: i64) {
    h.client
        .refund_order(RefundOrderRequest {
            out_trade_no: no.to_owned(),
            out_refund_no: rno.to_owned(),
            refund_fee: fee,
            reason: String::new(),
        })
        .await
        .expect("refund accepted");
    let settled = h
        .control(
            &format!("/sandbox/refunds/{rno}/settle"),
            serde_json::json!({"status": "SUCCESS", "delivery": "drop"}),
        )
        .await;
    assert!(settled.is_success(), "{settled}");
}

#[tokio::test]
async fn every_kind_of_discrepancy_is_found_reported_and_changes_nothing() {
    let mut h = start(Options {
        client_tls: true,
        ..Options::default()
    })
    .await;

    // amount_mismatch: paid 100 at WeChat; the order here was edited to 101.
    let amount = paid_here(&mut h, "k-d-amount", 100).await;
    edit(
        &h,
        "UPDATE orders SET total_fee = 101 WHERE out_trade_no = $1",
        &amount,
    )
    .await;
    // missing_at_wechat: marked paid here, never paid at WeChat.
    let phantom = create(&mut h, "k-d-phantom", 150).await;
    edit(
        &h,
        "UPDATE orders SET status = 'SUCCESS', transaction_id = '4200000000000000000000000001', \
         paid_at = now() WHERE out_trade_no = $1",
        &phantom,
    )
    .await;
    // status_mismatch: paid at WeChat, the notification lost, and orderquery fails.
    let unconfirmed = create(&mut h, "k-d-status", 170).await;
    pay_at_wechat(&h, &unconfirmed).await;
    // missing_locally and refund_missing_locally: another system's order, paid
    // and partly refunded at WeChat, unknown here.
    let stranger = stranger_paid_at_wechat(&h, 300).await;
    let stranger_refund = format!("{stranger}-r");
    h.wechat
        .refund(&payment_service::wechat::RefundRequest {
            out_trade_no: stranger.as_str(),
            out_refund_no: &stranger_refund,
            total_fee: Fee::new(300).expect("positive"),
            refund_fee: Fee::new(40).expect("positive"),
            reason: "",
            notify_url: "http://127.0.0.1:9/elsewhere",
            sign_type: SignType::Md5,
        })
        .await
        .expect("refunded by the other system");
    let settled = h
        .control(
            &format!("/sandbox/refunds/{stranger_refund}/settle"),
            serde_json::json!({"status": "SUCCESS", "delivery": "drop"}),
        )
        .await;
    assert!(settled.is_success(), "{settled}");
    // refund_missing_at_wechat: a refund recorded done here that WeChat never made.
    let no_refund = paid_here(&mut h, "k-d-norefund", 200).await;
    edit(
        &h,
        "INSERT INTO refunds (out_refund_no, out_trade_no, refund_fee, status, succeeded_at) \
         VALUES ($1 || '-r', $1, 10, 'SUCCESS', now())",
        &no_refund,
    )
    .await;
    // refund_amount_mismatch: 30 refunded at WeChat, edited to 31 here.
    let refund_amount = paid_here(&mut h, "k-d-ramount", 200).await;
    refunded_at_wechat(&mut h, &refund_amount, &format!("{refund_amount}-r"), 30).await;
    edit(
        &h,
        "UPDATE refunds SET refund_fee = 31 WHERE out_trade_no = $1",
        &refund_amount,
    )
    .await;
    // refund_status_mismatch: done at WeChat, CLOSED here.
    let refund_status = paid_here(&mut h, "k-d-rstatus", 200).await;
    refunded_at_wechat(&mut h, &refund_status, &format!("{refund_status}-r"), 20).await;
    edit(
        &h,
        "UPDATE refunds SET status = 'CLOSED' WHERE out_trade_no = $1",
        &refund_status,
    )
    .await;

    let today = (Utc::now() + chrono::Duration::hours(8)).date_naive();
    let mut bill = h
        .wechat
        .download_bill(today, SignType::Md5)
        .await
        .expect("downloaded")
        .expect("a bill for today");
    // summary_mismatch: the file's summary line does not add up (a damaged download).
    if let Some(summary) = bill.summary.as_mut() {
        summary.paid += 1;
    }
    // From here on WeChat answers SYSTEMERROR: the one order that needs an
    // orderquery cannot be confirmed.
    let faulted = h
        .control("/sandbox/faults", serde_json::json!({"systemerror": 50}))
        .await;
    assert!(faulted.is_success(), "{faulted}");
    let report = h
        .payments
        .reconcile_day(today, Some(bill).into())
        .await
        .expect("reconciled");

    let mut kinds: Vec<(&str, String, String)> = report
        .discrepancies
        .iter()
        .map(|d| {
            (
                d.kind.as_str(),
                d.out_trade_no.clone(),
                d.out_refund_no.clone(),
            )
        })
        .collect();
    kinds.sort();
    let mut want = vec![
        (
            DiscrepancyKind::SummaryMismatch.as_str(),
            String::new(),
            String::new(),
        ),
        (
            DiscrepancyKind::AmountMismatch.as_str(),
            amount.clone(),
            String::new(),
        ),
        (
            DiscrepancyKind::MissingAtWechat.as_str(),
            phantom.clone(),
            String::new(),
        ),
        (
            DiscrepancyKind::StatusMismatch.as_str(),
            unconfirmed.clone(),
            String::new(),
        ),
        (
            DiscrepancyKind::MissingLocally.as_str(),
            stranger.to_string(),
            String::new(),
        ),
        (
            DiscrepancyKind::RefundMissingLocally.as_str(),
            stranger.to_string(),
            stranger_refund.clone(),
        ),
        (
            DiscrepancyKind::RefundMissingAtWechat.as_str(),
            no_refund.clone(),
            format!("{no_refund}-r"),
        ),
        (
            DiscrepancyKind::RefundAmountMismatch.as_str(),
            refund_amount.clone(),
            format!("{refund_amount}-r"),
        ),
        (
            DiscrepancyKind::RefundStatusMismatch.as_str(),
            refund_status.clone(),
            format!("{refund_status}-r"),
        ),
    ];
    want.sort();
    assert_eq!(kinds, want, "exactly one of each: {report:?}");
    assert_eq!(report.repaired, 0, "{report:?}");

    // A bill row alone never changes money here: the unconfirmed payment stays
    // unpaid, the edited rows stay as they are.
    let order = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: unconfirmed.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(order.status, OrderStatus::Notpay as i32);
    assert_eq!(
        h.store
            .order(&OutTradeNo::parse(&amount).expect("no"))
            .await
            .expect("read")
            .map(|o| o.total_fee.fen()),
        Some(101)
    );
    assert_eq!(
        h.store.bill_report(today).await.expect("read"),
        Some(report),
        "the report is stored"
    );
}
