//! The three WeChat endpoints as the product's own client sees them, plus the
//! raw protocol checks a client would never trip on purpose.

mod common;

use std::time::Duration;

use common::{client, client_with, new_out_trade_no, order, sandbox};
use payment_service::wechat::{ClientOptions, CloseOutcome, V2Client, WechatError};
use wechat_sandbox::{Faults, PayOptions, SandboxConfig};
use wxpay_core::{
    domain::OrderStatus,
    wechat::{sign, xml, ApiKey, Fields, Merchant, MerchantEntry, SignType},
};

const NOTIFY: &str = "http://127.0.0.1:9/notify";

#[tokio::test]
async fn unifiedorder_returns_a_prepay_id_and_the_same_one_for_a_repeat() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();

    let first = client
        .unified_order(&order(&no, 101, NOTIFY, SignType::Md5))
        .await
        .expect("placed")
        .prepay_id;
    let again = client
        .unified_order(&order(&no, 101, NOTIFY, SignType::Md5))
        .await
        .expect("repeat")
        .prepay_id;

    assert!(first.starts_with("wx") && first.len() > 16, "{first}");
    assert_eq!(first, again);
    let view = sandbox.order(&no).await.expect("order exists");
    assert_eq!(
        (
            view.status.as_str(),
            view.total_fee,
            view.prepay_id.as_str()
        ),
        ("NOTPAY", 101, first.as_str())
    );
}

#[tokio::test]
async fn unifiedorder_with_other_parameters_for_the_same_number_is_invalid_request() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 101, NOTIFY, SignType::Md5))
        .await
        .expect("placed");

    let err = client
        .unified_order(&order(&no, 102, NOTIFY, SignType::Md5))
        .await
        .expect_err("different amount");

    assert_eq!(err.code(), Some("INVALID_REQUEST"), "{err:?}");
    assert!(err.to_string().contains("201 商户订单号重复"), "{err}");
}

#[tokio::test]
async fn orderquery_shows_notpay_then_success_after_payment() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 2500, NOTIFY, SignType::Md5))
        .await
        .expect("placed");

    let before = client.order_query(&no, SignType::Md5).await.expect("query");
    let paid = sandbox.pay(&no, PayOptions::default()).await.expect("paid");
    let after = client.order_query(&no, SignType::Md5).await.expect("query");

    assert_eq!(before.trade_state, OrderStatus::NotPay);
    assert_eq!(before.transaction_id, None);
    assert_eq!(after.trade_state, OrderStatus::Success);
    let tid = after
        .transaction_id
        .expect("paid orders have a transaction_id");
    assert_eq!(tid.as_str().len(), 28);
    assert_eq!(Some(tid.to_string()), paid.transaction_id);
    assert_eq!(after.total_fee.map(|f| f.fen()), Some(2500));
    assert_eq!(after.cash_fee, Some(2500));
    assert!(after.time_end.is_some());
    assert_eq!(
        after.fields.get("attach").map(String::as_str),
        Some("cart=42")
    );
}

#[tokio::test]
async fn a_closed_order_cannot_be_paid_or_closed_again() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");
    // WeChat refuses to close an order younger than 5 minutes.
    sandbox
        .age(&no, Duration::from_secs(300))
        .await
        .expect("aged");

    assert_eq!(
        client.close_order(&no, SignType::Md5).await,
        Ok(CloseOutcome::Closed)
    );
    let refused = sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect_err("closed");

    assert_eq!(refused.status(), Some(409));
    assert_eq!(
        client.close_order(&no, SignType::Md5).await,
        Ok(CloseOutcome::AlreadyClosed)
    );
    let query = client.order_query(&no, SignType::Md5).await.expect("query");
    assert_eq!(query.trade_state, OrderStatus::Closed);
    let reorder = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await;
    assert_eq!(reorder.expect_err("closed").code(), Some("ORDERCLOSED"));
}

#[tokio::test]
async fn a_paid_order_cannot_be_closed_or_paid_twice() {
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
    assert_eq!(
        sandbox
            .pay(&no, PayOptions::default())
            .await
            .expect_err("paid")
            .status(),
        Some(409)
    );
    let reorder = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await;
    assert_eq!(reorder.expect_err("paid").code(), Some("ORDERPAID"));
    assert_eq!(sandbox.order(&no).await.expect("order").status, "SUCCESS");
}

#[tokio::test]
async fn unknown_orders_do_not_exist() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();

    let query = client
        .order_query(&no, SignType::Md5)
        .await
        .expect_err("unknown");

    assert_eq!(query.code(), Some("ORDERNOTEXIST"));
    assert_eq!(
        client.close_order(&no, SignType::Md5).await,
        Ok(CloseOutcome::NotFound)
    );
    assert_eq!(
        sandbox
            .pay(&no, PayOptions::default())
            .await
            .expect_err("unknown")
            .status(),
        Some(404)
    );
    assert_eq!(
        sandbox.order(&no).await.expect_err("unknown").status(),
        Some(404)
    );
}

#[tokio::test]
async fn an_orderpaid_fault_answers_unifiedorder_and_changes_nothing() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let (placed, fresh) = (new_out_trade_no(), new_out_trade_no());
    client
        .unified_order(&order(&placed, 1, NOTIFY, SignType::Md5))
        .await
        .expect("placed");
    sandbox
        .set_faults(Faults {
            orderpaid: 2,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let again = client
        .unified_order(&order(&placed, 1, NOTIFY, SignType::Md5))
        .await;
    let first = client
        .unified_order(&order(&fresh, 1, NOTIFY, SignType::Md5))
        .await;

    assert_eq!(again.expect_err("fault").code(), Some("ORDERPAID"));
    assert_eq!(first.expect_err("fault").code(), Some("ORDERPAID"));
    // orderquery still tells the truth: one unpaid, one never placed.
    let query = client.order_query(&placed, SignType::Md5).await;
    assert_eq!(query.expect("placed").trade_state, OrderStatus::NotPay);
    let query = client.order_query(&fresh, SignType::Md5).await;
    assert_eq!(
        query.expect_err("never placed").code(),
        Some("ORDERNOTEXIST")
    );
    // Spent: the next unifiedorder is answered as usual.
    assert!(client
        .unified_order(&order(&fresh, 1, NOTIFY, SignType::Md5))
        .await
        .is_ok());
}

#[tokio::test]
async fn systemerror_is_retried_by_the_client_and_then_succeeds() {
    let sandbox = sandbox().await;
    let client = client(&sandbox); // max_attempts 3
    let no = new_out_trade_no();
    sandbox
        .set_faults(Faults {
            systemerror: 2,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let prepay_id = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await;

    assert!(prepay_id.is_ok(), "{prepay_id:?}");
    assert_eq!(
        sandbox.set_faults(Faults::default()).await.expect("read"),
        Faults::default()
    );
}

#[tokio::test]
async fn systemerror_on_every_attempt_reaches_the_caller() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    sandbox
        .set_faults(Faults {
            systemerror: 3,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let err = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect_err("3 faults");

    assert_eq!(err.code(), Some("SYSTEMERROR"));
    assert_eq!(
        sandbox.order(&no).await.expect_err("never placed").status(),
        Some(404)
    );
}

#[tokio::test]
async fn a_reply_with_a_forged_signature_is_rejected_by_the_client() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();
    sandbox
        .set_faults(Faults {
            bad_signature: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let err = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect_err("forged");

    assert!(matches!(err, WechatError::BadReply(_)), "{err:?}");
    // The fault is spent: the next reply verifies.
    assert!(client.order_query(&no, SignType::Md5).await.is_ok());
}

#[tokio::test]
async fn a_hanging_call_ends_in_a_client_timeout() {
    let sandbox = sandbox().await;
    let client = client_with(
        &sandbox,
        ClientOptions {
            request_timeout: Duration::from_millis(200),
            max_attempts: 1,
            ..ClientOptions::default()
        },
    );
    sandbox
        .set_faults(Faults {
            timeout: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let err = client
        .order_query(&new_out_trade_no(), SignType::Md5)
        .await
        .expect_err("hangs");

    assert_eq!(err, WechatError::Timeout);
}

#[tokio::test]
async fn hmac_sha256_orders_work_end_to_end() {
    let sandbox = sandbox().await;
    let client = client(&sandbox);
    let no = new_out_trade_no();

    let prepay_id = client
        .unified_order(&order(&no, 990, NOTIFY, SignType::HmacSha256))
        .await;
    assert!(prepay_id.is_ok(), "{prepay_id:?}");
    assert_eq!(
        sandbox.order(&no).await.expect("order").sign_type,
        "HMAC-SHA256"
    );
    sandbox.pay(&no, PayOptions::default()).await.expect("paid");
    let query = client
        .order_query(&no, SignType::HmacSha256)
        .await
        .expect("query");

    assert_eq!(query.trade_state, OrderStatus::Success);
    assert_eq!(
        query.fields.get("sign_type").map(String::as_str),
        Some("HMAC-SHA256")
    );
    assert_eq!(
        client.close_order(&no, SignType::HmacSha256).await,
        Ok(CloseOutcome::AlreadyPaid)
    );
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_a_signerror() {
    let sandbox = sandbox().await;
    let mut merchant = sandbox.merchant().clone();
    merchant.api_key = ApiKey::parse("wrongkeywrongkeywrongkeywrongkey").expect("valid shape");
    let entry = MerchantEntry::direct("default", merchant, SignType::Md5);
    let client =
        V2Client::new(sandbox.base_url(), entry, ClientOptions::default()).expect("client");
    let no = new_out_trade_no();

    let err = client
        .unified_order(&order(&no, 1, NOTIFY, SignType::Md5))
        .await
        .expect_err("bad sign");

    assert_eq!(err, WechatError::Return("SIGNERROR".into()));
    assert_eq!(
        sandbox.order(&no).await.expect_err("not placed").status(),
        Some(404)
    );
}

/// Posts raw XML and decodes the reply.
async fn post_raw(base: &str, path: &str, body: String) -> Fields {
    let reply = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .body(body)
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("reply");
    xml::decode(&reply).expect("the sandbox answers XML")
}

fn signed(merchant: &Merchant, pairs: &[(&str, &str)]) -> String {
    let mut f: Fields = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    sign::sign_fields(&mut f, &merchant.api_key, SignType::Md5);
    xml::encode(f.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodes")
}

#[tokio::test]
async fn malformed_xml_gets_an_unsigned_return_fail() {
    let sandbox = sandbox().await;

    let reply = post_raw(
        sandbox.base_url(),
        "/pay/unifiedorder",
        "<xml><appid>".into(),
    )
    .await;

    assert_eq!(reply.get("return_code").map(String::as_str), Some("FAIL"));
    assert_eq!(
        reply.get("return_msg").map(String::as_str),
        Some("XML_FORMAT_ERROR")
    );
    assert_eq!(reply.len(), 2, "{reply:?}");
}

#[tokio::test]
async fn requests_for_another_merchant_or_missing_fields_are_refused_with_signed_replies() {
    let sandbox = sandbox().await;
    let m = sandbox.merchant().clone();
    let no = new_out_trade_no();

    let other_app = signed(
        &m,
        &[
            ("appid", "wxffffffffffffffff"),
            ("mch_id", &m.mch_id),
            ("nonce_str", "n1"),
            ("out_trade_no", &no),
        ],
    );
    let reply = post_raw(sandbox.base_url(), "/pay/orderquery", other_app).await;
    assert_eq!(
        reply.get("err_code").map(String::as_str),
        Some("APPID_MCHID_NOT_MATCH")
    );
    assert_eq!(sign::verify(&reply, &m.api_key, SignType::Md5), Ok(()));

    let other_mch = signed(
        &m,
        &[
            ("appid", &m.app_id),
            ("mch_id", "1"),
            ("nonce_str", "n1"),
            ("out_trade_no", &no),
        ],
    );
    let reply = post_raw(sandbox.base_url(), "/pay/closeorder", other_mch).await;
    assert_eq!(
        reply.get("err_code").map(String::as_str),
        Some("MCHID_NOT_EXIST")
    );

    let no_notify_url = signed(
        &m,
        &[
            ("appid", &m.app_id),
            ("mch_id", &m.mch_id),
            ("nonce_str", "n1"),
            ("body", "b"),
            ("out_trade_no", &no),
            ("total_fee", "1"),
            ("spbill_create_ip", "127.0.0.1"),
            ("trade_type", "JSAPI"),
            ("openid", "o1"),
        ],
    );
    let reply = post_raw(sandbox.base_url(), "/pay/unifiedorder", no_notify_url).await;
    assert_eq!(
        reply.get("return_code").map(String::as_str),
        Some("SUCCESS")
    );
    assert_eq!(reply.get("result_code").map(String::as_str), Some("FAIL"));
    assert_eq!(
        reply.get("err_code").map(String::as_str),
        Some("LACK_PARAMS")
    );
    assert!(
        reply
            .get("err_code_des")
            .is_some_and(|d| d.contains("notify_url")),
        "{reply:?}"
    );
    assert_eq!(sign::verify(&reply, &m.api_key, SignType::Md5), Ok(()));
}

#[tokio::test]
async fn a_sandbox_built_on_a_given_address_serves_until_stopped() {
    let sandbox = wechat_sandbox::Sandbox::build(SandboxConfig::for_tests(), "127.0.0.1:0")
        .await
        .expect("binds");
    let base = sandbox.base_url();
    assert_eq!(base, format!("http://127.0.0.1:{}", sandbox.port()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sandbox.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let reply = post_raw(&base, "/pay/orderquery", String::new()).await;
    assert_eq!(
        reply.get("return_msg").map(String::as_str),
        Some("POST_DATA_EMPTY")
    );
    stop.send(()).expect("server is waiting");

    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}
