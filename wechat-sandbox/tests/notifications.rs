//! Payment notifications as a merchant's notify_url receives them: signed with
//! the order's sign type, retried on WeChat's (accelerated) schedule until
//! acknowledged, dropped or duplicated on request.

mod common;

use std::time::Duration;

use common::{client, new_out_trade_no, order, sandbox, Receiver};
use wechat_sandbox::{Delivery, FailOptions, NotifyOptions, PayOptions};
use wxpay_core::wechat::{sign, SignType};

fn options(delivery: Delivery, duplicates: u32, omit_sign_type: bool) -> PayOptions {
    PayOptions {
        notify: NotifyOptions {
            delivery,
            duplicates,
            omit_sign_type,
        },
        ..PayOptions::default()
    }
}

#[tokio::test]
async fn notifications_are_retried_until_the_merchant_answers_success() {
    let sandbox = sandbox().await; // time factor 1000: retries after 15 ms, 15 ms, 30 ms
    let receiver = Receiver::start(2).await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 4321, &receiver.url, SignType::Md5))
        .await
        .expect("placed");

    let paid = sandbox.pay(&no, PayOptions::default()).await.expect("paid");
    let received = receiver.wait_for(3).await;
    // The next retry would come 30 ms after the third attempt; wait well past it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(receiver.received().len(), 3);
    for n in &received {
        assert_eq!(
            sign::verify(n, &sandbox.merchant().api_key, SignType::Md5),
            Ok(())
        );
        assert_eq!(n.get("total_fee").map(String::as_str), Some("4321"));
        assert_eq!(n.get("cash_fee").map(String::as_str), Some("4321"));
        assert_eq!(n.get("result_code").map(String::as_str), Some("SUCCESS"));
        assert_eq!(n.get("out_trade_no"), Some(&no));
        assert_eq!(n.get("transaction_id"), paid.transaction_id.as_ref());
        assert_eq!(n.get("attach").map(String::as_str), Some("cart=42"));
        assert_eq!(n.get("fee_type").map(String::as_str), Some("CNY"));
    }
    let log = sandbox.notifications(&no).await.expect("log");
    let acknowledged: Vec<bool> = log.iter().map(|a| a.acknowledged).collect();
    assert_eq!(acknowledged, [false, false, true]);
    assert!(log.iter().all(|a| a.http_status == Some(200)));
}

#[tokio::test]
async fn an_unreachable_notify_url_is_retried_and_logged() {
    let sandbox = sandbox().await;
    // Port 9 (discard) is closed on a test machine: every attempt is refused.
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 1, "http://127.0.0.1:9/notify", SignType::Md5))
        .await
        .expect("placed");

    sandbox.pay(&no, PayOptions::default()).await.expect("paid");
    let log = sandbox
        .wait_for_notifications(&no, 3, Duration::from_secs(5))
        .await
        .expect("log");

    assert!(log.len() >= 3, "{log:?}");
    assert_eq!(
        log.iter().map(|a| a.attempt).take(3).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(log
        .iter()
        .all(|a| !a.acknowledged && a.http_status.is_none() && a.error.is_some()));
}

#[tokio::test]
async fn a_dropped_notification_is_never_delivered_but_the_order_is_paid() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let no = new_out_trade_no();
    let client = client(&sandbox);
    client
        .unified_order(&order(&no, 1, &receiver.url, SignType::Md5))
        .await
        .expect("placed");

    sandbox
        .pay(&no, options(Delivery::Drop, 0, false))
        .await
        .expect("paid");
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(receiver.received().is_empty());
    assert!(sandbox.notifications(&no).await.expect("log").is_empty());
    let query = client.order_query(&no, SignType::Md5).await.expect("query");
    assert_eq!(query.trade_state.as_str(), "SUCCESS");
}

#[tokio::test]
async fn a_duplicate_delivery_sends_n_identical_copies() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let no = new_out_trade_no();
    client(&sandbox)
        .unified_order(&order(&no, 77, &receiver.url, SignType::Md5))
        .await
        .expect("placed");

    sandbox
        .pay(&no, options(Delivery::Duplicate, 3, false))
        .await
        .expect("paid");
    let received = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(receiver.received().len(), 3);
    assert!(received.windows(2).all(|w| w[0] == w[1]), "copies differ");
    let mut copies: Vec<u32> = sandbox
        .notifications(&no)
        .await
        .expect("log")
        .iter()
        .map(|a| a.copy)
        .collect();
    copies.sort_unstable();
    assert_eq!(copies, [1, 2, 3]);
}

#[tokio::test]
async fn hmac_orders_notify_with_hmac_and_may_omit_sign_type() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let key = &sandbox.merchant().api_key;
    let client = client(&sandbox);
    let (with, without) = (new_out_trade_no(), new_out_trade_no());
    for no in [&with, &without] {
        client
            .unified_order(&order(no, 5, &receiver.url, SignType::HmacSha256))
            .await
            .expect("placed");
    }

    sandbox
        .pay(&with, PayOptions::default())
        .await
        .expect("paid");
    sandbox
        .pay(&without, options(Delivery::Normal, 0, true))
        .await
        .expect("paid");
    let received = receiver.wait_for(2).await;

    assert_eq!(received.len(), 2);
    for n in &received {
        assert_eq!(sign::verify(n, key, SignType::HmacSha256), Ok(()));
        assert!(sign::verify(n, key, SignType::Md5).is_err());
        let expected = if n.get("out_trade_no") == Some(&with) {
            Some("HMAC-SHA256")
        } else {
            None
        };
        assert_eq!(n.get("sign_type").map(String::as_str), expected);
    }
}

#[tokio::test]
async fn a_failed_payment_notifies_result_fail_without_a_transaction_id() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let no = new_out_trade_no();
    let client = client(&sandbox);
    client
        .unified_order(&order(&no, 3, &receiver.url, SignType::Md5))
        .await
        .expect("placed");

    sandbox.user_paying(&no).await.expect("paying");
    let paying = client.order_query(&no, SignType::Md5).await.expect("query");
    sandbox
        .fail(&no, FailOptions::default())
        .await
        .expect("failed");
    let received = receiver.wait_for(1).await;

    assert_eq!(paying.trade_state.as_str(), "USERPAYING");
    assert_eq!(received.len(), 1);
    let n = &received[0];
    assert_eq!(
        sign::verify(n, &sandbox.merchant().api_key, SignType::Md5),
        Ok(())
    );
    assert_eq!(n.get("result_code").map(String::as_str), Some("FAIL"));
    assert_eq!(n.get("err_code").map(String::as_str), Some("NOTENOUGH"));
    assert!(!n.contains_key("transaction_id"));
    let query = client.order_query(&no, SignType::Md5).await.expect("query");
    assert_eq!(query.trade_state.as_str(), "PAYERROR");
}
