//! The v3 client against a server playing WeChat: requests are signed so that
//! WeChat verifies them, every 2xx answer is verified before it is used,
//! error bodies become typed errors, and only what a retry can fix is retried.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use serde_json::json;
use wxpay_core::wechat::v3::{
    models::{CloseOrder, Transaction},
    VerifyError,
};
use wxpay_wechat_v3::{ClientOptions, Method, V3Client, V3Error, V3Http};

const QUERY: &str = "/v3/pay/transactions/out-trade-no/o-1?mchid=1900000109";

fn options() -> ClientOptions {
    ClientOptions {
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    }
}

fn client_with(server: &FakeWechat, signing: &[SigningKey], options: ClientOptions) -> V3Client {
    let http = V3Http::new(&server.base(), options).expect("http");
    V3Client::new(http, merchant(true), Arc::new(keys_of(signing))).expect("client")
}

fn client(server: &FakeWechat, signing: &[SigningKey]) -> V3Client {
    client_with(server, signing, options())
}

fn transaction() -> String {
    json!({
        "appid": "wx2222222222222222", "mchid": MCH_ID, "out_trade_no": "o-1",
        "transaction_id": "4200000001", "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "trade_state_desc": "支付成功", "success_time": "2026-12-07T10:00:00+08:00",
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 101, "payer_total": 101, "currency": "CNY", "payer_currency": "CNY"}
    })
    .to_string()
}

async fn public_key_server() -> FakeWechat {
    FakeWechat::start(SigningKey::public_key(), vec![]).await
}

#[tokio::test]
async fn a_signed_request_verifies_at_wechat_and_its_verified_answer_is_parsed() {
    let server = public_key_server().await;
    server.push(Scripted::ok(&transaction()));
    let client = client(&server, &[SigningKey::public_key()]);

    let t: Transaction = client.get(QUERY).await.expect("query");

    assert_eq!(t.out_trade_no, "o-1");
    assert_eq!(t.amount.map(|a| a.total), Some(101));
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].authorized,
        "WeChat's check of Authorization: {seen:?}"
    );
    assert_eq!(seen[0].uri, QUERY);
    assert_eq!(seen[0].accept.as_deref(), Some("application/json"));
    assert!(seen[0]
        .user_agent
        .as_deref()
        .is_some_and(|ua| ua.starts_with("wxpay-wechat-v3/")));
    assert_eq!(
        seen[0].wechatpay_serial.as_deref(),
        Some(PUB_KEY_ID),
        "public-key mode names the public key's id"
    );
}

#[tokio::test]
async fn a_post_body_is_signed_as_sent_and_a_204_is_verified_too() {
    let server = public_key_server().await;
    let mut no_content = Scripted::ok("");
    no_content.status = 204;
    server.push(no_content.clone());
    server.push(no_content.signed(Signing::Tampered));
    let client = client(&server, &[SigningKey::public_key()]);
    let close = CloseOrder {
        mchid: Some(MCH_ID.into()),
        ..CloseOrder::default()
    };

    client
        .post_no_content("/v3/pay/transactions/out-trade-no/o-1/close", &close)
        .await
        .expect("closed");
    let tampered = client
        .post_no_content("/v3/pay/transactions/out-trade-no/o-1/close", &close)
        .await;

    let seen = server.seen();
    assert!(seen[0].authorized && seen[1].authorized);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, r#"{"mchid":"1900000109"}"#);
    assert_eq!(tampered, Err(V3Error::Untrusted(VerifyError::BadSignature)));
}

#[tokio::test]
async fn a_2xx_that_fails_verification_is_untrusted_and_never_retried() {
    let server = public_key_server().await;
    let client = client(&server, &[SigningKey::public_key()]);
    for (signing, expected) in [
        (Signing::Tampered, VerifyError::BadSignature),
        (Signing::Unsigned, VerifyError::Missing("Wechatpay-Serial")),
        (Signing::Stale, VerifyError::Stale(600)),
    ] {
        server.push(Scripted::ok(&transaction()).signed(signing));
        let before = server.hits("/v3/pay/transactions/out-trade-no/o-1");

        let answer = client.get::<Transaction>(QUERY).await;

        match answer {
            Err(V3Error::Untrusted(e)) => match (&e, &expected) {
                // The skew is measured against our clock: a second may pass.
                (VerifyError::Stale(s), VerifyError::Stale(_)) => assert!((600..=602).contains(s)),
                _ => assert_eq!(e, expected),
            },
            other => panic!("{signing:?}: expected untrusted, got {other:?}"),
        }
        assert!(!V3Error::Untrusted(expected).is_retryable());
        assert_eq!(
            server.hits("/v3/pay/transactions/out-trade-no/o-1"),
            before + 1,
            "{signing:?} was not sent again"
        );
    }
}

#[tokio::test]
async fn an_answer_signed_by_a_key_we_do_not_hold_is_untrusted() {
    let server = FakeWechat::start(SigningKey::cert2(), vec![]).await;
    server.push(Scripted::ok(&transaction()));
    let client = client(&server, &[SigningKey::public_key()]);

    let answer = client.get::<Transaction>(QUERY).await;

    assert_eq!(
        answer,
        Err(V3Error::Untrusted(VerifyError::UnknownSerial(
            CERT2_SERIAL.into()
        )))
    );
}

#[tokio::test]
async fn error_bodies_are_typed_with_wechats_code_and_not_retried() {
    let server = public_key_server().await;
    let client = client(&server, &[SigningKey::public_key()]);
    for (status, code) in [
        (404, "ORDER_NOT_EXIST"),
        (400, "PARAM_ERROR"),
        (403, "NO_AUTH"),
    ] {
        server.push(Scripted::error(status, code));
        let before = server.seen().len();

        let e = client
            .get::<Transaction>(QUERY)
            .await
            .expect_err("an error");

        assert_eq!(e.code(), Some(code));
        assert_eq!(e.status(), Some(status));
        assert_eq!(
            e,
            V3Error::Api {
                status,
                code: code.into(),
                message: format!("scripted {code}")
            }
        );
        assert!(!e.is_retryable());
        assert_eq!(server.seen().len(), before + 1, "{code} was not retried");
    }
}

#[tokio::test]
async fn system_errors_and_rate_limits_are_retried_signed_afresh() {
    let server = public_key_server().await;
    server.push(Scripted::error(500, "SYSTEM_ERROR"));
    server.push(Scripted::error(429, "FREQUENCY_LIMITED"));
    server.push(Scripted::ok(&transaction()));
    let client = client(&server, &[SigningKey::public_key()]);

    let t: Transaction = client.get(QUERY).await.expect("third attempt");

    assert_eq!(t.out_trade_no, "o-1");
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.authorized && s.uri == QUERY));
    let nonces: std::collections::HashSet<_> = seen.iter().map(|s| s.nonce.clone()).collect();
    assert_eq!(nonces.len(), 3, "each attempt is signed with a fresh nonce");
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt() {
    let server = public_key_server().await;
    for _ in 0..4 {
        server.push(Scripted::error(500, "SYSTEM_ERROR"));
    }
    let client = client(&server, &[SigningKey::public_key()]);

    let e = client
        .get::<Transaction>(QUERY)
        .await
        .expect_err("always failing");

    assert_eq!(e.code(), Some("SYSTEM_ERROR"));
    assert_eq!(server.seen().len(), 3, "max_attempts is 3");
}

#[tokio::test]
async fn a_slow_answer_is_a_retried_timeout() {
    let server = public_key_server().await;
    for _ in 0..2 {
        server.push(Scripted::ok(&transaction()).after(Duration::from_millis(600)));
    }
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        max_attempts: 2,
        ..options()
    };
    let client = client_with(&server, &[SigningKey::public_key()], options);

    let e = client.get::<Transaction>(QUERY).await.expect_err("slow");

    assert_eq!(e, V3Error::Timeout);
    assert_eq!(server.seen().len(), 2, "a timeout is retried");
}

#[tokio::test]
async fn an_unreachable_api_is_a_retryable_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let http = V3Http::new(&base, options()).expect("http");
    let client = V3Client::new(
        http,
        merchant(true),
        Arc::new(keys_of(&[SigningKey::public_key()])),
    )
    .expect("client");

    let e = client.get::<Transaction>(QUERY).await.expect_err("refused");

    assert!(matches!(e, V3Error::Transport(_)), "{e:?}");
    assert!(e.is_retryable());
}

#[tokio::test]
async fn an_answer_over_the_cap_is_refused_unread() {
    let server = public_key_server().await;
    let big = format!(r#"{{"padding":"{}"}}"#, "x".repeat(4096));
    server.push(Scripted::ok(&big));
    let options = ClientOptions {
        max_response_bytes: 1024,
        ..options()
    };
    let client = client_with(&server, &[SigningKey::public_key()], options);

    let e = client
        .send(Method::GET, QUERY, None)
        .await
        .expect_err("too big");

    assert!(
        matches!(&e, V3Error::BadReply(m) if m.contains("1024")),
        "{e:?}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_verified_answer_that_is_not_the_model_is_a_bad_reply() {
    let server = public_key_server().await;
    server.push(Scripted::ok(r#"{"unexpected":true}"#));
    let client = client(&server, &[SigningKey::public_key()]);

    let e = client.get::<Transaction>(QUERY).await.expect_err("shape");

    assert!(matches!(e, V3Error::BadReply(_)), "{e:?}");
}

#[tokio::test]
async fn a_file_download_is_signed_unverified_and_kept_on_the_apis_origin() {
    let server = public_key_server().await;
    server.push(Scripted::ok("交易时间,公众账号ID\n").signed(Signing::Unsigned));
    let client = client(&server, &[SigningKey::public_key()]);

    let file = client
        .download(
            &format!("{}/v3/billdownload/file?token=abc", server.base()),
            1 << 20,
        )
        .await
        .expect("file");
    let elsewhere = client
        .download(
            "http://example.invalid/v3/billdownload/file?token=abc",
            1 << 20,
        )
        .await;

    assert_eq!(String::from_utf8_lossy(&file), "交易时间,公众账号ID\n");
    assert!(server.seen()[0].authorized);
    assert_eq!(server.seen()[0].uri, "/v3/billdownload/file?token=abc");
    assert!(matches!(elsewhere, Err(V3Error::BadReply(_))));
    assert_eq!(server.seen().len(), 1, "nothing was sent elsewhere");
}

#[tokio::test]
async fn a_v2_merchant_gets_no_v3_client() {
    let server = public_key_server().await;
    let mut v2 = merchant(true);
    v2.v3 = None;
    let http = V3Http::new(&server.base(), options()).expect("http");

    let e =
        V3Client::new(http, v2, Arc::new(keys_of(&[SigningKey::public_key()]))).expect_err("v2");

    assert_eq!(e, wxpay_wechat_v3::BuildError::NotV3("shop".into()));
}
