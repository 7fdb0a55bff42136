//! The lifecycle rules WeChat enforces and a reconciler has to live with: how far
//! ahead `time_expire` must be, how old an order must be before it can be
//! closed, PAYERROR not being final, an expired order staying NOTPAY, and calls
//! whose effect happened although their answer was lost.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{client, client_with, new_out_trade_no, order, sandbox, Receiver};
use payment_service::wechat::{ClientOptions, CloseOutcome, WechatError};
use wechat_sandbox::{Faults, PayOptions, SandboxConfig};
use wxpay_core::{domain::OrderStatus, wechat::SignType};

const NOTIFY: &str = "http://127.0.0.1:9/notify";
const TOO_SHORT: &str = "time_expire时间过短，刷卡至少1分钟，其他5分钟";
const TOO_YOUNG: &str = "订单生成后不能马上调用关单接口，最短调用时间间隔为5分钟";

#[tokio::test]
async fn time_expire_less_than_five_minutes_ahead_is_a_param_error() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let (short, past, fine) = (new_out_trade_no(), new_out_trade_no(), new_out_trade_no());
    let ahead = |secs: i64| Some(Utc::now() + chrono::Duration::seconds(secs));

    let mut too_short = order(&short, 1, NOTIFY, SignType::Md5);
    too_short.time_expire = ahead(4 * 60);
    let short_err = client.unified_order(&too_short).await.expect_err("4 min");
    let mut already_past = order(&past, 1, NOTIFY, SignType::Md5);
    already_past.time_expire = ahead(-60);
    let past_err = client.unified_order(&already_past).await.expect_err("past");
    let mut six = order(&fine, 1, NOTIFY, SignType::Md5);
    six.time_expire = ahead(6 * 60);
    let placed = client.unified_order(&six).await;

    assert_eq!(
        short_err,
        WechatError::Business {
            code: "PARAM_ERROR".into(),
            message: TOO_SHORT.into()
        }
    );
    assert_eq!(past_err.code(), Some("INVALID_REQUEST"), "{past_err:?}");
    assert!(placed.is_ok(), "{placed:?}");
    assert_eq!(
        sandbox
            .order(&short)
            .await
            .expect_err("never placed")
            .status(),
        Some(404)
    );
}

#[tokio::test]
async fn a_lowered_expiry_floor_accepts_a_near_time_expire() {
    let sandbox = wechat_sandbox::spawn(SandboxConfig {
        min_expire: Duration::from_secs(30),
        ..SandboxConfig::for_tests()
    })
    .await;
    let client = client(&sandbox);
    let (near, nearer) = (new_out_trade_no(), new_out_trade_no());

    let mut ok = order(&near, 1, NOTIFY, SignType::Md5);
    ok.time_expire = Some(Utc::now() + chrono::Duration::seconds(90));
    let mut refused = order(&nearer, 1, NOTIFY, SignType::Md5);
    refused.time_expire = Some(Utc::now() + chrono::Duration::seconds(10));

    assert!(client.unified_order(&ok).await.is_ok());
    assert_eq!(
        client
            .unified_order(&refused)
            .await
            .expect_err("10 s")
            .code(),
        Some("PARAM_ERROR")
    );
}

#[tokio::test]
async fn closeorder_right_after_creation_is_refused_until_the_order_is_five_minutes_old() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");

    let early = client.close_order(&no, SignType::Md5).await;
    let still_open = client.order_query(&no, SignType::Md5).await.expect("query");
    let aged = sandbox
        .age(&no, Duration::from_secs(300))
        .await
        .expect("aged");
    let closed = client.close_order(&no, SignType::Md5).await;

    assert_eq!(
        early,
        Err(WechatError::Business {
            code: "INVALID_REQUEST".into(),
            message: TOO_YOUNG.into()
        })
    );
    assert_eq!(still_open.trade_state, OrderStatus::NotPay);
    let created = chrono::DateTime::parse_from_rfc3339(&aged.created_at).expect("RFC 3339");
    assert!(Utc::now() - created.to_utc() >= chrono::Duration::seconds(300));
    assert_eq!(closed, Ok(CloseOutcome::Closed));
    assert_eq!(sandbox.order(&no).await.expect("order").status, "CLOSED");
}

#[tokio::test]
async fn a_paid_order_answers_orderpaid_even_when_young() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");
    sandbox.pay(&no, PayOptions::default()).await.expect("paid");

    assert_eq!(
        client.close_order(&no, SignType::Md5).await,
        Ok(CloseOutcome::AlreadyPaid)
    );
}

#[tokio::test]
async fn a_zero_minimum_age_closes_at_once() {
    let sandbox = wechat_sandbox::spawn(SandboxConfig {
        close_min_age: Duration::ZERO,
        ..SandboxConfig::for_tests()
    })
    .await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");

    assert_eq!(
        client.close_order(&no, SignType::Md5).await,
        Ok(CloseOutcome::Closed)
    );
}

#[tokio::test]
async fn an_expired_order_stays_notpay_cannot_be_paid_and_can_be_closed() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    let mut expiring = order(&no, 1, NOTIFY, SignType::Md5);
    expiring.time_expire = Some(Utc::now() + chrono::Duration::minutes(10));
    client.unified_order(&expiring).await.expect("placed");

    sandbox
        .age(&no, Duration::from_secs(11 * 60))
        .await
        .expect("aged");
    let query = client.order_query(&no, SignType::Md5).await.expect("query");
    let pay = sandbox.pay(&no, PayOptions::default()).await;
    let paying = sandbox.user_paying(&no).await;
    let close = client.close_order(&no, SignType::Md5).await;

    assert_eq!(query.trade_state, OrderStatus::NotPay);
    let refused = pay.expect_err("expired");
    assert_eq!(refused.status(), Some(409));
    assert!(refused.to_string().contains("expired"), "{refused}");
    assert_eq!(paying.expect_err("expired").status(), Some(409));
    assert_eq!(close, Ok(CloseOutcome::Closed));
}

#[tokio::test]
async fn a_payer_who_retries_after_payerror_pays_and_the_merchant_is_told_success() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 300, &receiver.url, SignType::Md5))
        .await
        .expect("placed");

    sandbox
        .fail(&no, wechat_sandbox::FailOptions::default())
        .await
        .expect("failed");
    // The failure's notification first, so the two arrive in a known order.
    receiver.wait_for(1).await;
    let failed = client.order_query(&no, SignType::Md5).await.expect("query");
    let paid = sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect("a retry after PAYERROR pays");
    let received = receiver.wait_for(2).await;
    let after = client.order_query(&no, SignType::Md5).await.expect("query");

    assert_eq!(failed.trade_state, OrderStatus::PayError);
    assert_eq!(paid.status, "SUCCESS");
    assert_eq!(after.trade_state, OrderStatus::Success);
    assert_eq!(
        after.transaction_id.map(|t| t.to_string()),
        paid.transaction_id
    );
    let results: Vec<_> = received
        .iter()
        .map(|n| n.get("result_code").map(String::as_str))
        .collect();
    assert_eq!(results, [Some("FAIL"), Some("SUCCESS")]);
    let success = &received[1];
    assert_eq!(success.get("transaction_id"), paid.transaction_id.as_ref());
    assert!(!success.contains_key("err_code"), "{success:?}");
    assert_eq!(
        sandbox
            .pay(&no, PayOptions::default())
            .await
            .expect_err("paid once")
            .status(),
        Some(409)
    );
}

/// A client that gives up quickly and does not retry, to see one lost answer.
fn impatient(sandbox: &wechat_sandbox::SandboxHandle) -> payment_service::wechat::V2Client {
    client_with(
        sandbox,
        ClientOptions {
            request_timeout: Duration::from_millis(300),
            max_attempts: 1,
            ..ClientOptions::default()
        },
    )
}

#[tokio::test]
async fn process_then_timeout_places_the_order_though_the_client_hears_nothing() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    sandbox
        .set_faults(Faults {
            process_then_timeout: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let lost = impatient(&sandbox)
        .unified_order(&order(&no, 42, NOTIFY, SignType::Md5))
        .await;
    let placed = sandbox
        .order(&no)
        .await
        .expect("the order exists at WeChat");
    let retry = client(&sandbox)
        .unified_order(&order(&no, 42, NOTIFY, SignType::Md5))
        .await
        .expect("a retry with the same parameters")
        .prepay_id;

    assert_eq!(lost, Err(WechatError::Timeout));
    assert_eq!((placed.status.as_str(), placed.total_fee), ("NOTPAY", 42));
    assert_eq!(retry, placed.prepay_id);
    assert_eq!(
        sandbox.set_faults(Faults::default()).await,
        Ok(Faults::default())
    );
}

#[tokio::test]
async fn process_then_timeout_closes_the_order_though_the_client_hears_nothing() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");
    sandbox
        .age(&no, Duration::from_secs(600))
        .await
        .expect("aged");
    sandbox
        .set_faults(Faults {
            process_then_timeout: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let lost = impatient(&sandbox).close_order(&no, SignType::Md5).await;
    let query = client(&sandbox)
        .order_query(&no, SignType::Md5)
        .await
        .expect("query");

    assert_eq!(lost, Err(WechatError::Timeout));
    assert_eq!(query.trade_state, OrderStatus::Closed);
    assert_eq!(
        sandbox
            .pay(&no, PayOptions::default())
            .await
            .expect_err("closed")
            .status(),
        Some(409)
    );
}

#[tokio::test]
async fn aging_needs_a_known_order_and_a_sensible_number_of_seconds() {
    let sandbox = sandbox().await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");
    let url = format!("{}/sandbox/orders/{no}/age", sandbox.base_url());
    let http = reqwest::Client::new();

    for body in [
        "",
        "{}",
        r#"{"seconds":0}"#,
        r#"{"seconds":-5}"#,
        r#"{"seconds":999999999999}"#,
        r#"{"seconds":60,"extra":1}"#,
    ] {
        let status = http
            .post(&url)
            .body(body)
            .send()
            .await
            .expect("sent")
            .status();
        assert_eq!(status.as_u16(), 400, "{body}");
    }
    let unknown = sandbox
        .age(&new_out_trade_no(), Duration::from_secs(60))
        .await;
    assert_eq!(unknown.expect_err("unknown").status(), Some(404));
    let view = sandbox.order(&no).await.expect("order");
    let created = chrono::DateTime::parse_from_rfc3339(&view.created_at).expect("RFC 3339");
    assert!(Utc::now() - created.to_utc() < chrono::Duration::seconds(60));
}
