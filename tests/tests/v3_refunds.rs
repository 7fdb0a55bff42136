//! Issue 27's "done when", end to end over the real binaries: the money after
//! a v3 payment. A paid v3 order is refunded in two parts through
//! `POST /v3/refund/domestic/refunds`; each refund settles by a sealed v3
//! notification at `/wechat/v3/refund/notify`, and WatchOrder with
//! `include_refunds` shows both; an over-refund is refused before WeChat is
//! asked. The next day's ReconcileBill matches every v2 and v3 row in one
//! report, and a bill whose SHA1 does not match is refused with no report
//! stored. Concurrent refunds across two payment-service replicas never give
//! back more than the order's total, and a refund placed by one replica whose
//! reply was lost is settled through the other.

use std::{path::Path, time::Duration};

use e2e_tests::{eventually, Process, Stack, StackOptions};
use sqlx::{Connection, PgConnection, Row};
use tonic::Code;
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, CreateOrderRequest, GetRefundRequest,
    OrderStatus, OrderStatusEvent, ReconcileBillRequest, Refund, RefundOrderRequest, RefundStatus,
    TradeType, WatchOrderRequest,
};

/// The v3 merchant of these tests (public-key mode; the sandbox issues its
/// API key pair and WeChat's public key into the key directory at its start).
const SHOP: &str = "v3-shop";
const SHOP_MCH: &str = "1900000500";
const SHOP_APP: &str = "wx5000000000000500";
const SHOP_APIV3: &str = "v3rf-apiv3-key-0123456789abcdefg";

fn merchants_file(dir: &Path) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    let d = dir.display();
    write!(
        file,
        r#"
[[merchant]]
name = "{SHOP}"
api_version = "v3"
app_id = "{SHOP_APP}"
mch_id = "{SHOP_MCH}"
apiv3_key = "{SHOP_APIV3}"
private_key = "{d}/apiclient_key.pem"
serial_no = "6C2E7F4FAD9183C5BE2F40618CAD2E3F40516273"
wechatpay_public_key = "{d}/pub_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_0119000005002026120700000000"
"#
    )
    .expect("write the merchants file");
    file
}

async fn stack(file: &tempfile::NamedTempFile, options: StackOptions) -> Stack {
    Stack::start(StackOptions {
        merchants_file: Some(file.path().to_owned()),
        ..options
    })
    .await
    .expect("the stack starts with a v2 and a v3 merchant")
}

/// Places a JSAPI order of `fee` fen with `merchant` ("" = the v2 default),
/// pays it in the sandbox and returns its out_trade_no once WatchOrder (with
/// refunds) shows SUCCESS, with that open stream.
async fn paid_order(
    stack: &Stack,
    merchant: &str,
    fee: i64,
    tag: &str,
) -> (
    String,
    tonic::Streaming<OrderStatusEvent>,
    wxpay_proto::v1::Order,
) {
    let created = stack
        .payments()
        .await
        .expect("connect")
        .create_order(CreateOrderRequest {
            idempotency_key: format!("e2e-v3r-{}-{tag}", std::process::id()),
            description: "v3 退款测试".to_owned(),
            total_fee: fee,
            client_ip: "203.0.113.9".to_owned(),
            expire_seconds: 1800,
            merchant: merchant.to_owned(),
            trade_type: TradeType::Jsapi as i32,
            openid: format!("oPayer-{tag}"),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|s| panic!("CreateOrder {merchant:?}: {s:?}"))
        .into_inner();
    let order = created.order.expect("an order");
    let no = order.out_trade_no.clone();
    let mut stream = stack
        .watcher()
        .await
        .expect("connect to the poller")
        .watch_order(WatchOrderRequest {
            out_trade_no: no.clone(),
            timeout_seconds: 120,
            include_refunds: true,
        })
        .await
        .expect("WatchOrder")
        .into_inner();
    let snapshot = next(&mut stream).await;
    assert_eq!(snapshot.status, OrderStatus::Notpay as i32);
    stack
        .sandbox_post(&no, "pay", serde_json::json!({}))
        .await
        .expect("the sandbox pays");
    let paid = next(&mut stream).await;
    assert_eq!(paid.status, OrderStatus::Success as i32, "{no}");
    assert_eq!(paid.source, "NOTIFY", "{no}: paid by the notification");
    (no, stream, order)
}

async fn next(stream: &mut tonic::Streaming<OrderStatusEvent>) -> OrderStatusEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event within 30 s")
        .expect("the stream")
        .expect("an event")
}

fn refund_request(out_trade_no: &str, out_refund_no: &str, fee: i64) -> RefundOrderRequest {
    RefundOrderRequest {
        out_trade_no: out_trade_no.to_owned(),
        out_refund_no: out_refund_no.to_owned(),
        refund_fee: fee,
        reason: "e2e: 退一部分".to_owned(),
    }
}

async fn refund(
    payments: &mut PaymentServiceClient<tonic::transport::Channel>,
    out_trade_no: &str,
    out_refund_no: &str,
    fee: i64,
) -> Result<Refund, tonic::Status> {
    payments
        .refund_order(refund_request(out_trade_no, out_refund_no, fee))
        .await
        .map(tonic::Response::into_inner)
}

async fn get_refund(
    payments: &mut PaymentServiceClient<tonic::transport::Channel>,
    out_refund_no: &str,
) -> Refund {
    payments
        .get_refund(GetRefundRequest {
            out_refund_no: out_refund_no.to_owned(),
        })
        .await
        .expect("GetRefund")
        .into_inner()
}

/// Whether the sandbox (WeChat) ever heard of `out_refund_no`.
async fn wechat_knows_refund(stack: &Stack, out_refund_no: &str) -> bool {
    stack
        .sandbox_get(&format!("/sandbox/refunds/{out_refund_no}"))
        .await
        .is_ok()
}

/// The Beijing day whose bill WeChat has ready now (10:00 Beijing the next
/// day, which ReconcileBill enforces), as ReconcileBill spells it, and how
/// many days back it is: yesterday from 10:00, the day before until then,
/// so the test passes at any hour.
fn ready_bill_day() -> (String, i64) {
    use chrono::Timelike;
    let beijing = chrono::Utc::now() + chrono::Duration::hours(8);
    let days = if beijing.hour() >= 10 { 1 } else { 2 };
    let day = beijing.date_naive() - chrono::Duration::days(days);
    (day.format("%Y%m%d").to_string(), days)
}

/// `days` pass for `orders` (and their refunds) on both sides: WeChat's
/// (the sandbox ages them) and ours (the times stored with them move back as
/// many days, as they would have been had the payer paid then), so that
/// day's bill holds them and the local day's payments are them.
async fn days_pass(stack: &Stack, orders: &[&str], days: i64) {
    let mut db = PgConnection::connect(&stack.database_url)
        .await
        .expect("the stack's database");
    for no in orders {
        stack
            .sandbox_post(no, "age", serde_json::json!({ "seconds": 86_400 * days }))
            .await
            .expect("the sandbox ages the order");
        sqlx::query(
            "UPDATE orders SET created_at = created_at - make_interval(days => $2::int), \
             paid_at = paid_at - make_interval(days => $2::int) WHERE out_trade_no = $1",
        )
        .bind(no)
        .bind(days)
        .execute(&mut db)
        .await
        .expect("the order's day moves back");
        sqlx::query(
            "UPDATE refunds SET created_at = created_at - make_interval(days => $2::int), \
             succeeded_at = succeeded_at - make_interval(days => $2::int) WHERE out_trade_no = $1",
        )
        .bind(no)
        .bind(days)
        .execute(&mut db)
        .await
        .expect("its refunds' day moves back");
    }
}

async fn bill_reports(database_url: &str) -> i64 {
    let mut db = PgConnection::connect(database_url)
        .await
        .expect("the stack's database");
    sqlx::query("SELECT count(*) AS n FROM bill_reports")
        .fetch_one(&mut db)
        .await
        .expect("count the reports")
        .get("n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_order_refunded_in_two_parts_settles_by_v3_notifications_and_the_next_days_bill_matches_v2_and_v3(
) {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file, StackOptions::default()).await;
    let mut payments = stack.payments().await.expect("connect");

    let (no, mut stream, _) = paid_order(&stack, SHOP, 1000, "two-parts").await;
    let (r1, r2, r3) = (format!("{no}-R1"), format!("{no}-R2"), format!("{no}-R3"));

    // Two parts that together give back the whole order, both accepted by
    // WeChat over v3 (PROCESSING with WeChat's refund id).
    for (r, fee) in [(&r1, 300), (&r2, 700)] {
        let accepted = refund(&mut payments, &no, r, fee)
            .await
            .unwrap_or_else(|s| panic!("RefundOrder {r}: {s:?}"));
        assert_eq!(accepted.status, RefundStatus::Processing as i32, "{r}");
        assert!(!accepted.refund_id.is_empty(), "{r}: WeChat's refund id");
        let at_wechat = stack
            .sandbox_get(&format!("/sandbox/refunds/{r}"))
            .await
            .expect("WeChat has the refund");
        assert_eq!(at_wechat["refund_fee"], fee, "{r}: {at_wechat}");
    }
    // Asking again with the same number is the same refund, not a third.
    let again = refund(&mut payments, &no, &r1, 300)
        .await
        .expect("RefundOrder repeated");
    assert_eq!(again.status, RefundStatus::Processing as i32);
    // Nothing is left: one fen more is refused here, and WeChat never hears of it.
    let refused = refund(&mut payments, &no, &r3, 1)
        .await
        .expect_err("an over-refund is refused");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        !wechat_knows_refund(&stack, &r3).await,
        "the over-refund reached WeChat"
    );

    // WeChat settles each; its sealed REFUND.SUCCESS reaches the gateway's v3
    // path and the stream shows the refunded total grow.
    let mut seen = Vec::new();
    for r in [&r1, &r2] {
        stack
            .sandbox_control(
                &format!("/sandbox/refunds/{r}/settle"),
                serde_json::json!({ "status": "SUCCESS" }),
            )
            .await
            .expect("the sandbox settles the refund");
        let event = next(&mut stream).await;
        seen.push((event.status, event.refunded_fee));
        // Over v3, at the gateway's v3 refund path, acknowledged with 204.
        let at_wechat = stack
            .sandbox_get(&format!("/sandbox/refunds/{r}"))
            .await
            .expect("the refund at WeChat");
        assert_eq!(at_wechat["api_version"], "v3", "{at_wechat}");
        assert_eq!(
            at_wechat["notify_url"],
            format!("{}/wechat/v3/refund/notify", stack.gateway_url),
            "{at_wechat}"
        );
        // WeChat records a delivery when the gateway has answered it, which can
        // be a moment after the gateway published the change the stream showed.
        let path = format!("/sandbox/refunds/{r}/notifications");
        let (stack, path) = (&stack, &path);
        let delivered = || async move { stack.sandbox_get(path).await.unwrap_or_default() };
        eventually(
            &format!("{r}: WeChat recorded its delivery"),
            || async move { delivered().await.as_array().is_some_and(|a| !a.is_empty()) },
        )
        .await;
        let deliveries = delivered().await;
        assert_eq!(
            deliveries[0]["http_status"], 204,
            "{r}: the gateway took it: {deliveries}"
        );
    }
    assert_eq!(
        seen,
        vec![
            (OrderStatus::Refund as i32, 300),
            (OrderStatus::Refund as i32, 1000)
        ],
        "both refunds on WatchOrder, the refunded total growing to the whole order"
    );
    for (r, fee) in [(&r1, 300), (&r2, 700)] {
        let settled = get_refund(&mut payments, r).await;
        assert_eq!(settled.status, RefundStatus::Success as i32, "{r}");
        assert_eq!(settled.refund_fee, fee);
        assert!(settled.succeeded_at > 0, "{r}: the time WeChat gave");
    }

    // A v2 order of the same day, paid over v2, for the bill to hold beside them.
    let (v2_no, _, _) = paid_order(&stack, "", 250, "v2-beside").await;

    // The bill's day (yesterday, or the day before until 10:00 Beijing). First WeChat's bill comes with a hash that does not match
    // its file: the day is not reconciled, nothing is stored, and the error says so.
    let (bill_date, days) = ready_bill_day();
    days_pass(&stack, &[&no, &v2_no], days).await;
    stack
        .sandbox_faults(serde_json::json!({ "bill_wrong_hash": 1 }))
        .await
        .expect("arm the wrong hash");
    let refused = payments
        .reconcile_bill(ReconcileBillRequest {
            bill_date: bill_date.clone(),
            again: false,
        })
        .await
        .expect_err("a bill whose hash does not match is refused");
    assert!(
        refused.message().to_lowercase().contains("hash"),
        "the error says why: {refused:?}"
    );
    assert_ne!(refused.code(), Code::Ok);
    assert_eq!(bill_reports(&stack.database_url).await, 0, "no report kept");

    // Then the genuine bill: one report over both merchants, every row matched.
    let report = payments
        .reconcile_bill(ReconcileBillRequest {
            bill_date: bill_date.clone(),
            again: false,
        })
        .await
        .expect("ReconcileBill")
        .into_inner();
    assert!(
        report.discrepancies.is_empty(),
        "every row agrees: {:?}",
        report.discrepancies
    );
    // The v3 payment, its two refunds and the v2 payment.
    assert_eq!(report.wechat_rows, 4, "{report:?}");
    assert_eq!(report.matched, 4, "{report:?}");
    assert_eq!(bill_reports(&stack.database_url).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_refunds_across_two_replicas_never_exceed_the_total_and_a_lost_reply_settles_through_the_other(
) {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    // The first replica's reconciler runs often (its lease, twice the
    // interval, lapses soon after it dies) but asks about nothing younger
    // than ten minutes: only the second replica's can settle the lost refund.
    let mut options = StackOptions::default();
    options.reconcile.interval = Duration::from_secs(1);
    let mut stack = stack(&file, options).await;

    // A second payment-service replica on the same database and sandbox,
    // whose reconciler asks WeChat about a refund in flight after a second.
    let second_addr = format!("127.0.0.1:{}", e2e_tests::free_port().expect("a port"));
    let mut env = stack.env.payment.clone();
    env.retain(|(k, _)| {
        !matches!(
            *k,
            "PAYMENT_ADDR" | "RECONCILE_AFTER_SECONDS" | "RECONCILE_INTERVAL_SECONDS"
        )
    });
    env.push(("PAYMENT_ADDR", second_addr.clone()));
    env.push(("RECONCILE_AFTER_SECONDS", "1".to_owned()));
    env.push(("RECONCILE_INTERVAL_SECONDS", "1".to_owned()));
    let second = Process::spawn("payment-service", &env).expect("a second replica runs");
    let second_url = format!("http://{second_addr}");
    let mut replicas = Vec::new();
    for _ in 0..100 {
        if let Ok(client) = PaymentServiceClient::connect(second_url.clone()).await {
            replicas.push(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        replicas.len(),
        1,
        "the second replica serves:\n{}",
        second.log_tail()
    );
    replicas.insert(0, stack.payments().await.expect("the first replica"));

    // Twelve refunds of 300 fen at once against a 1000-fen order, half through
    // each replica: at most three fit, and WeChat is asked for no more.
    let (no, _stream, _) = paid_order(&stack, SHOP, 1000, "concurrent").await;
    let attempts = (0..12).map(|i| {
        let mut client = replicas[i % 2].clone();
        let no = no.clone();
        async move {
            let r = format!("{no}-C{i}");
            (r.clone(), refund(&mut client, &no, &r, 300).await)
        }
    });
    let results = futures::future::join_all(attempts).await;
    let mut accepted = Vec::new();
    for (r, result) in &results {
        match result {
            Ok(refund) => {
                assert_eq!(refund.status, RefundStatus::Processing as i32, "{r}");
                accepted.push(r.clone());
            }
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{r}: {s:?}");
                assert!(!wechat_knows_refund(&stack, r).await, "{r} reached WeChat");
            }
        }
    }
    assert_eq!(
        accepted.len(),
        3,
        "exactly what fits in 1000 fen: {results:?}"
    );
    let mut at_wechat = 0;
    for r in &accepted {
        let seen = stack
            .sandbox_get(&format!("/sandbox/refunds/{r}"))
            .await
            .expect("WeChat has each accepted refund");
        at_wechat += seen["refund_fee"].as_i64().expect("refund_fee");
    }
    assert_eq!(at_wechat, 900, "WeChat was asked for 900 fen in all");

    // WeChat settles those three (notified as usual), so no reconciler has
    // anything to ask WeChat about while the replies below are being lost.
    for r in &accepted {
        stack
            .sandbox_control(
                &format!("/sandbox/refunds/{r}/settle"),
                serde_json::json!({ "status": "SUCCESS" }),
            )
            .await
            .expect("the sandbox settles the refund");
    }
    for r in &accepted {
        let mut other = replicas[1].clone();
        eventually(&format!("{r} is SUCCESS"), || {
            let mut other = other.clone();
            let r = r.clone();
            async move { get_refund(&mut other, &r).await.status == RefundStatus::Success as i32 }
        })
        .await;
        assert_eq!(get_refund(&mut other, r).await.refund_fee, 300);
    }

    // The last 100 fen, asked through the first replica, every reply lost
    // after WeChat took the refund (the client's retries under the same
    // number included): RefundOrder answers the stored PROCESSING refund, its
    // outcome unknown here. The first replica goes away; the second's
    // reconciler asks WeChat (GET /v3/refund/domestic/refunds/{no}), never
    // refunds again, and the refund ends SUCCESS once WeChat settled it, with
    // no notification to tell.
    let lost = format!("{no}-LOST");
    stack
        .sandbox_faults(serde_json::json!({ "process_then_timeout": 3 }))
        .await
        .expect("arm the lost replies");
    match refund(&mut replicas[0], &no, &lost, 100).await {
        // The stored refund, its outcome unknown here…
        Ok(cut) => assert_eq!(cut.status, RefundStatus::Processing as i32, "{cut:?}"),
        // …or the call's own deadline passed first.
        Err(s) => assert!(
            matches!(
                s.code(),
                Code::Cancelled | Code::DeadlineExceeded | Code::Unavailable
            ),
            "{s:?}"
        ),
    }
    // Whatever the caller saw, the refund was stored before WeChat was asked,
    // and WeChat took it; no fault is left for the calls that follow.
    stack
        .sandbox_faults(serde_json::json!({}))
        .await
        .expect("disarm");
    assert_eq!(
        get_refund(&mut replicas[1], &lost).await.status,
        RefundStatus::Processing as i32
    );
    assert!(wechat_knows_refund(&stack, &lost).await, "WeChat took it");
    stack.payment.kill_9().expect("the first replica dies");
    // WeChat moves the money but its notification is lost too: only asking
    // WeChat can find out.
    stack
        .sandbox_control(
            &format!("/sandbox/refunds/{lost}/settle"),
            serde_json::json!({ "status": "SUCCESS", "delivery": "drop" }),
        )
        .await
        .expect("WeChat settles it");
    let mut other = replicas[1].clone();
    // The second replica may already have asked while the first was still
    // waiting for its lost replies and heard PROCESSING; a refund WeChat says
    // is still moving is asked about again a minute later, so allow two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while get_refund(&mut other, &lost).await.status != RefundStatus::Success as i32 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lost refund is not SUCCESS through the second replica within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let settled = get_refund(&mut other, &lost).await;
    assert_eq!(settled.refund_fee, 100);
    // WeChat holds exactly one refund under that number, for 100 fen.
    let at_wechat = stack
        .sandbox_get(&format!("/sandbox/refunds/{lost}"))
        .await
        .expect("the refund at WeChat");
    assert_eq!(at_wechat["refund_fee"], 100, "{at_wechat}");
    // Nothing more fits, through the replica that is left.
    let over = refund(&mut other, &no, &format!("{no}-OVER"), 1)
        .await
        .expect_err("the order is fully spoken for");
    assert_eq!(over.code(), Code::FailedPrecondition);
}

/// Waits until GetRefund says `status` (a v3 notification applied it).
async fn refund_becomes(stack: &Stack, out_refund_no: &str, status: RefundStatus) -> Refund {
    let payments = stack.payments().await.expect("connect");
    eventually(&format!("{out_refund_no} becomes {status:?}"), || {
        let mut payments = payments.clone();
        async move { get_refund(&mut payments, out_refund_no).await.status == status as i32 }
    })
    .await;
    get_refund(&mut payments.clone(), out_refund_no).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v3_refund_wechat_refuses_or_closes_frees_its_money_and_abnormal_is_change() {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file, StackOptions::default()).await;
    let mut payments = stack.payments().await.expect("connect");
    let (no, _stream, _) = paid_order(&stack, SHOP, 500, "refusals").await;

    // WeChat refuses outright (NOT_ENOUGH: the merchant's balance cannot cover
    // it): the refund is CLOSED at once and the caller told why.
    stack
        .sandbox_faults(serde_json::json!({ "notenough": 1 }))
        .await
        .expect("arm NOT_ENOUGH");
    let refused = refund(&mut payments, &no, &format!("{no}-NE"), 500)
        .await
        .expect_err("WeChat refused it");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("NOT_ENOUGH"), "{refused:?}");
    assert_eq!(
        get_refund(&mut payments, &format!("{no}-NE")).await.status,
        RefundStatus::Closed as i32
    );

    // Accepted, then closed by WeChat (REFUND.CLOSED): its money is free again.
    let closing = format!("{no}-CL");
    refund(&mut payments, &no, &closing, 200)
        .await
        .expect("accepted");
    stack
        .sandbox_control(
            &format!("/sandbox/refunds/{closing}/settle"),
            serde_json::json!({ "status": "CLOSED" }),
        )
        .await
        .expect("WeChat closes it");
    refund_becomes(&stack, &closing, RefundStatus::Closed).await;

    // So the whole 500 can still be asked for; WeChat cannot put it in the
    // payer's account (REFUND.ABNORMAL), which is our CHANGE: someone must
    // act in the merchant console, and the money stays spoken for.
    let abnormal = format!("{no}-AB");
    refund(&mut payments, &no, &abnormal, 500)
        .await
        .expect("the freed money is refundable");
    stack
        .sandbox_control(
            &format!("/sandbox/refunds/{abnormal}/settle"),
            serde_json::json!({ "status": "ABNORMAL" }),
        )
        .await
        .expect("WeChat cannot pay it out");
    let change = refund_becomes(&stack, &abnormal, RefundStatus::Change).await;
    assert_eq!(change.succeeded_at, 0, "no money came back yet");
    let over = refund(&mut payments, &no, &format!("{no}-MORE"), 1)
        .await
        .expect_err("a refund in CHANGE still holds its money");
    assert_eq!(over.code(), Code::FailedPrecondition);
}
