//! Refunds as a merchant's server sees them: the refund API (accepted is not
//! done), refundquery, the encrypted refund notification once the control API
//! settles a refund, and WeChat's rules on amounts and repeated refund numbers.

mod common;

use std::time::Duration;

use common::{call, client, field, new_out_trade_no, order, paid_order, sandbox, Receiver};
use wechat_sandbox::{Delivery, Faults, RefundStatus, SandboxHandle, SettleOptions};
use wxpay_core::{
    domain::OrderStatus,
    wechat::{refund_crypto, Fields, SignType},
};

const REFUND: &str = "/secapi/pay/refund";
const QUERY: &str = "/pay/refundquery";

/// A refund request for `refund_fee` of an order of `total_fee`.
async fn refund(
    sandbox: &SandboxHandle,
    out_trade_no: &str,
    out_refund_no: &str,
    total_fee: i64,
    refund_fee: i64,
    extra: &[(&str, &str)],
) -> Fields {
    let (total, fee) = (total_fee.to_string(), refund_fee.to_string());
    let mut pairs = vec![
        ("out_trade_no", out_trade_no),
        ("out_refund_no", out_refund_no),
        ("total_fee", total.as_str()),
        ("refund_fee", fee.as_str()),
    ];
    pairs.extend_from_slice(extra);
    call(sandbox, REFUND, &pairs, SignType::Md5).await
}

fn err_code(reply: &Fields) -> (&str, &str) {
    (field(reply, "err_code"), field(reply, "err_code_des"))
}

fn settle(status: RefundStatus) -> SettleOptions {
    SettleOptions {
        status,
        ..SettleOptions::default()
    }
}

#[tokio::test]
async fn a_refund_is_accepted_then_settled_and_the_merchant_gets_an_encrypted_notification() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = format!("R{no}");

    let accepted = call(
        &sandbox,
        REFUND,
        &[
            ("out_trade_no", &no),
            ("out_refund_no", &rno),
            ("total_fee", "1000"),
            ("refund_fee", "300"),
            ("refund_desc", "退货"),
            ("notify_url", &receiver.url),
        ],
        SignType::HmacSha256,
    )
    .await;
    let processing = call(&sandbox, QUERY, &[("out_refund_no", &rno)], SignType::Md5).await;
    let trade = client(&sandbox)
        .order_query(&no, SignType::Md5)
        .await
        .expect("query");
    let settled = sandbox
        .settle_refund(&rno, SettleOptions::default())
        .await
        .expect("settled");
    let received = receiver.wait_for(1).await;
    let done = call(&sandbox, QUERY, &[("out_refund_no", &rno)], SignType::Md5).await;

    assert_eq!(field(&accepted, "result_code"), "SUCCESS", "{accepted:?}");
    assert_eq!(field(&accepted, "sign_type"), "HMAC-SHA256");
    let refund_id = field(&accepted, "refund_id");
    assert_eq!(refund_id.len(), 29);
    for (k, v) in [
        ("out_trade_no", no.as_str()),
        ("out_refund_no", rno.as_str()),
        ("refund_fee", "300"),
        ("total_fee", "1000"),
        ("cash_fee", "1000"),
    ] {
        assert_eq!(field(&accepted, k), v, "{k}");
    }
    assert_eq!(field(&accepted, "transaction_id").len(), 28);
    assert_eq!(field(&processing, "refund_count"), "1");
    assert_eq!(field(&processing, "refund_status_0"), "PROCESSING");
    assert!(!processing.contains_key("refund_success_time_0"));
    assert_eq!(trade.trade_state, OrderStatus::Refund);
    assert_eq!(settled.status, "SUCCESS");

    assert_eq!(received.len(), 1);
    let n = &received[0];
    assert!(
        !n.contains_key("sign"),
        "refund notifications are not signed"
    );
    assert_eq!(field(n, "return_code"), "SUCCESS");
    assert_eq!(field(n, "appid"), sandbox.merchant().app_id);
    assert_eq!(field(n, "mch_id"), sandbox.merchant().mch_id);
    let info = refund_crypto::decrypt_req_info(field(n, "req_info"), &sandbox.merchant().api_key)
        .expect("req_info decrypts with the merchant's key");
    assert_eq!(field(&info, "refund_status"), "SUCCESS");
    assert_eq!(field(&info, "out_refund_no"), rno);
    assert_eq!(field(&info, "refund_id"), refund_id);
    assert_eq!(field(&info, "out_trade_no"), no);
    assert_eq!(field(&info, "refund_fee"), "300");
    assert_eq!(field(&info, "total_fee"), "1000");
    let success_time = field(&info, "success_time");
    assert_eq!(Some(success_time), settled.success_time.as_deref());
    assert!(
        chrono::NaiveDateTime::parse_from_str(success_time, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{success_time}"
    );
    assert_eq!(field(&done, "refund_status_0"), "SUCCESS");
    assert_eq!(field(&done, "refund_success_time_0"), success_time);
    let log = sandbox.refund_notifications(&rno).await.expect("log");
    assert!(log.iter().any(|a| a.acknowledged), "{log:?}");
}

#[tokio::test]
async fn the_same_refund_number_again_is_the_same_refund_and_other_amounts_are_refused() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 500).await;
    let rno = new_out_trade_no();

    let first = refund(&sandbox, &no, &rno, 500, 500, &[]).await;
    let again = refund(&sandbox, &no, &rno, 500, 500, &[]).await;
    let other_amount = refund(&sandbox, &no, &rno, 500, 400, &[]).await;
    let other_desc = refund(&sandbox, &no, &rno, 500, 500, &[("refund_desc", "x")]).await;
    let listed = call(&sandbox, QUERY, &[("out_trade_no", &no)], SignType::Md5).await;

    assert_eq!(field(&first, "result_code"), "SUCCESS");
    assert_eq!(field(&again, "result_code"), "SUCCESS", "{again:?}");
    assert_eq!(field(&again, "refund_id"), field(&first, "refund_id"));
    assert_eq!(
        err_code(&other_amount),
        (
            "REFUND_FEE_MISMATCH",
            "订单金额或退款金额与之前请求不一致，请核实后再试"
        )
    );
    assert_eq!(err_code(&other_desc).0, "INVALID_REQUEST");
    assert_eq!(field(&listed, "refund_count"), "1");
}

#[tokio::test]
async fn refunds_add_up_to_the_amount_paid_and_a_closed_refund_frees_its_amount() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;

    let sixty = refund(&sandbox, &no, "a1", 100, 60, &[]).await;
    let too_much = refund(&sandbox, &no, "a2", 100, 41, &[]).await;
    let forty = refund(&sandbox, &no, "a3", 100, 40, &[]).await;
    let full = refund(&sandbox, &no, "a4", 100, 1, &[]).await;
    sandbox
        .settle_refund("a3", settle(RefundStatus::RefundClose))
        .await
        .expect("closed");
    let forty_again = refund(&sandbox, &no, "a5", 100, 40, &[]).await;

    assert_eq!(field(&sixty, "result_code"), "SUCCESS");
    assert_eq!(
        err_code(&too_much),
        ("REFUND_FEE_INVALID", "累计退款金额大于支付金额")
    );
    assert_eq!(field(&forty, "result_code"), "SUCCESS");
    assert_eq!(err_code(&full), ("ERROR", "订单已全额退款"));
    assert_eq!(
        field(&forty_again, "result_code"),
        "SUCCESS",
        "{forty_again:?}"
    );
}

#[tokio::test]
async fn only_a_paid_order_for_its_own_amount_can_be_refunded() {
    let sandbox = sandbox().await;
    let unpaid = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&unpaid, 100, "http://127.0.0.1:9/n", SignType::Md5))
        .await
        .expect("placed");
    let paid = paid_order(&sandbox, 100).await;

    let not_paid = refund(&sandbox, &unpaid, "b1", 100, 10, &[]).await;
    let unknown = refund(&sandbox, &new_out_trade_no(), "b2", 100, 10, &[]).await;
    let wrong_total = refund(&sandbox, &paid, "b3", 99, 10, &[]).await;
    let bad_tid = call(
        &sandbox,
        REFUND,
        &[
            ("transaction_id", "4200000000000000000000000000"),
            ("out_refund_no", "b4"),
            ("total_fee", "100"),
            ("refund_fee", "10"),
        ],
        SignType::Md5,
    )
    .await;
    let bad_number = refund(&sandbox, &paid, "has space", 100, 10, &[]).await;

    assert_eq!(err_code(&not_paid), ("TRADE_STATE_ERROR", "订单状态错误"));
    assert_eq!(err_code(&unknown).0, "ORDERNOTEXIST");
    assert_eq!(err_code(&wrong_total).0, "INVALID_REQUEST");
    assert_eq!(err_code(&bad_tid).0, "INVALID_TRANSACTIONID");
    assert_eq!(err_code(&bad_number).0, "PARAM_ERROR");
    for rno in ["b1", "b2", "b3", "b4"] {
        assert_eq!(
            sandbox.refund(rno).await.expect_err("refused").status(),
            Some(404)
        );
    }
}

#[tokio::test]
async fn an_order_paid_over_a_year_ago_is_trade_overdue() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    sandbox
        .age(&no, Duration::from_secs(366 * 86_400))
        .await
        .expect("aged");

    let reply = refund(&sandbox, &no, "c1", 100, 10, &[]).await;

    assert_eq!(err_code(&reply).0, "TRADE_OVERDUE");
}

#[tokio::test]
async fn refundquery_finds_refunds_by_each_name_and_pages_through_an_order() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1200).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let reply = refund(&sandbox, &no, &format!("p{n:02}"), 1200, 100, &[]).await;
        ids.push(field(&reply, "refund_id").to_owned());
    }
    let tid = sandbox
        .order(&no)
        .await
        .expect("order")
        .transaction_id
        .expect("paid");

    let by_order = call(&sandbox, QUERY, &[("out_trade_no", &no)], SignType::Md5).await;
    let by_tid = call(&sandbox, QUERY, &[("transaction_id", &tid)], SignType::Md5).await;
    let page_two = call(
        &sandbox,
        QUERY,
        &[("out_trade_no", &no), ("offset", "10")],
        SignType::Md5,
    )
    .await;
    let by_id = call(&sandbox, QUERY, &[("refund_id", &ids[7])], SignType::Md5).await;
    let unknown = call(&sandbox, QUERY, &[("out_refund_no", "nope")], SignType::Md5).await;
    let never_refunded = paid_order(&sandbox, 1).await;
    let none = call(
        &sandbox,
        QUERY,
        &[("out_trade_no", &never_refunded)],
        SignType::Md5,
    )
    .await;

    assert_eq!(field(&by_order, "refund_count"), "10");
    assert!(!by_order.contains_key("total_refund_count"));
    assert_eq!(field(&by_order, "out_refund_no_0"), "p00");
    assert_eq!(field(&by_order, "refund_id_9"), ids[9]);
    assert!(!by_order.contains_key("out_refund_no_10"));
    assert_eq!(field(&by_tid, "refund_count"), "10");
    assert_eq!(field(&page_two, "refund_count"), "2");
    assert_eq!(field(&page_two, "total_refund_count"), "12");
    assert_eq!(field(&page_two, "out_refund_no_1"), "p11");
    assert_eq!(field(&by_id, "refund_count"), "1");
    assert_eq!(field(&by_id, "out_refund_no_0"), "p07");
    assert_eq!(field(&by_id, "out_trade_no"), no);
    assert_eq!(err_code(&unknown).0, "REFUNDNOTEXIST");
    assert_eq!(err_code(&none).0, "REFUNDNOTEXIST");
}

#[tokio::test]
async fn an_order_takes_fifty_refunds_and_no_more() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    for n in 0..wechat_sandbox::MAX_REFUNDS_PER_ORDER {
        let reply = refund(&sandbox, &no, &format!("m{n}"), 100, 1, &[]).await;
        assert_eq!(field(&reply, "result_code"), "SUCCESS", "{n}");
    }

    let fifty_first = refund(&sandbox, &no, "m50", 100, 1, &[]).await;

    assert_eq!(err_code(&fifty_first).0, "INVALID_REQUEST");
}

#[tokio::test]
async fn refund_notifications_are_retried_and_change_has_no_success_time() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(2).await;
    let no = paid_order(&sandbox, 100).await;
    refund(
        &sandbox,
        &no,
        "d1",
        100,
        100,
        &[("notify_url", &receiver.url)],
    )
    .await;

    sandbox
        .settle_refund("d1", settle(RefundStatus::Change))
        .await
        .expect("settled");
    let received = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(receiver.received().len(), 3);
    let info = refund_crypto::decrypt_req_info(
        field(&received[2], "req_info"),
        &sandbox.merchant().api_key,
    )
    .expect("decrypts");
    assert_eq!(field(&info, "refund_status"), "CHANGE");
    assert!(!info.contains_key("success_time"));
    let log = sandbox.refund_notifications("d1").await.expect("log");
    let acknowledged: Vec<bool> = log.iter().map(|a| a.acknowledged).collect();
    assert_eq!(acknowledged, [false, false, true]);
}

#[tokio::test]
async fn a_refund_without_a_notify_url_or_with_delivery_drop_is_never_notified() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let no = paid_order(&sandbox, 100).await;
    refund(&sandbox, &no, "e1", 100, 10, &[]).await;
    refund(
        &sandbox,
        &no,
        "e2",
        100,
        10,
        &[("notify_url", &receiver.url)],
    )
    .await;

    sandbox
        .settle_refund("e1", SettleOptions::default())
        .await
        .expect("settled");
    sandbox
        .settle_refund(
            "e2",
            SettleOptions {
                delivery: Delivery::Drop,
                ..SettleOptions::default()
            },
        )
        .await
        .expect("settled");
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(receiver.received().is_empty());
    for rno in ["e1", "e2"] {
        assert!(sandbox
            .refund_notifications(rno)
            .await
            .expect("log")
            .is_empty());
        assert_eq!(sandbox.refund(rno).await.expect("refund").status, "SUCCESS");
    }
}

#[tokio::test]
async fn a_refund_settles_once() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    refund(&sandbox, &no, "f1", 100, 10, &[]).await;
    let url = format!("{}/sandbox/refunds/f1/settle", sandbox.base_url());

    let processing = reqwest::Client::new()
        .post(&url)
        .body(r#"{"status":"PROCESSING"}"#)
        .send()
        .await
        .expect("sent")
        .status();
    let first = sandbox
        .settle_refund("f1", settle(RefundStatus::Success))
        .await;
    let second = sandbox
        .settle_refund("f1", settle(RefundStatus::RefundClose))
        .await;
    let unknown = sandbox.settle_refund("zz", SettleOptions::default()).await;

    assert_eq!(processing.as_u16(), 400);
    assert!(first.is_ok(), "{first:?}");
    assert_eq!(second.expect_err("settled").status(), Some(409));
    assert_eq!(unknown.expect_err("unknown").status(), Some(404));
    assert_eq!(
        sandbox.refund("f1").await.expect("refund").status,
        "SUCCESS"
    );
}

#[tokio::test]
async fn a_refund_whose_answer_is_lost_is_still_accepted_and_a_retry_gets_it_back() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    sandbox
        .set_faults(Faults {
            process_then_timeout: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    // The raw helper waits for an answer; this one gives up like a client would.
    let lost = tokio::time::timeout(
        Duration::from_millis(500),
        refund(&sandbox, &no, "g1", 100, 30, &[]),
    )
    .await;

    let accepted = sandbox.refund("g1").await.expect("accepted at WeChat");
    let retry = refund(&sandbox, &no, "g1", 100, 30, &[]).await;

    assert!(lost.is_err(), "the answer was lost");
    assert_eq!(accepted.status, "PROCESSING");
    assert_eq!(field(&retry, "refund_id"), accepted.refund_id);
}

#[tokio::test]
async fn a_systemerror_refund_is_not_accepted() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    sandbox
        .set_faults(Faults {
            systemerror: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let reply = refund(&sandbox, &no, "h1", 100, 30, &[]).await;

    assert_eq!(err_code(&reply).0, "SYSTEMERROR");
    assert_eq!(
        sandbox.refund("h1").await.expect_err("none").status(),
        Some(404)
    );
}

#[tokio::test]
async fn a_refund_can_be_aged_but_not_to_before_its_payment() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 100).await;
    sandbox
        .age(&no, Duration::from_secs(2 * 86_400))
        .await
        .expect("paid two days ago");
    refund(&sandbox, &no, "k1", 100, 10, &[]).await;

    let yesterday = sandbox.age_refund("k1", Duration::from_secs(86_400)).await;
    let too_far = sandbox
        .age_refund("k1", Duration::from_secs(2 * 86_400))
        .await;

    let view = yesterday.expect("a day");
    let created = chrono::DateTime::parse_from_rfc3339(&view.created_at).expect("RFC 3339");
    let age = chrono::Utc::now() - created.to_utc();
    assert!(
        age >= chrono::Duration::days(1) && age < chrono::Duration::days(2),
        "{age}"
    );
    assert_eq!(too_far.expect_err("before payment").status(), Some(409));
}
