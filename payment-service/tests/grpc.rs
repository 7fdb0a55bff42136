//! PaymentService over gRPC, end to end inside one test process: a real tonic
//! server on port 0, a fresh Postgres database, the shared Redis, and the WeChat
//! sandbox on port 0 (driven through its HTTP control API).

mod common;

use std::{sync::Arc, time::Duration};

use payment_service::{
    application::Application,
    config::{MerchantAccount, WechatConfig},
    wechat::ClientOptions,
};
use tonic::Code;
use wxpay_core::wechat::{
    pay_params::{self, PaymentParams},
    MerchantEntry, SignType,
};
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, CloseOrderRequest, CreateOrderRequest,
    GetOrderRequest, OrderStatus, QueryOrderRequest,
};
use wxpay_store::{testing, EventPublisher, PgStore, RedisPublisher};

use common::*;

fn to_params(p: &wxpay_proto::v1::PaymentParams) -> PaymentParams {
    PaymentParams {
        app_id: p.app_id.clone(),
        time_stamp: p.time_stamp.clone(),
        nonce_str: p.nonce_str.clone(),
        package: p.package.clone(),
        sign_type: p.sign_type.parse().expect("known sign type"),
        pay_sign: p.pay_sign.clone(),
    }
}

async fn create_order_returns_verifiable_payment_params(sign_type: SignType) {
    let mut h = start(Options {
        sign_type,
        ..Default::default()
    })
    .await;
    let r = h
        .client
        .create_order(request("k-verify", 2599))
        .await
        .expect("created")
        .into_inner();
    let order = r.order.expect("order");
    let payment = r.payment.expect("payment params");
    assert_eq!(order.status, OrderStatus::Notpay as i32);
    assert_eq!(order.total_fee, 2599);
    assert_eq!(order.version, 1);
    assert!(order.out_trade_no.len() <= 32);
    assert!(!order.prepay_id.is_empty());
    assert_eq!(payment.package, format!("prepay_id={}", order.prepay_id));
    assert_eq!(payment.app_id, "wxd930ea5d5a258f4f");
    assert_eq!(payment.sign_type, sign_type.as_str());
    let ts: i64 = payment.time_stamp.parse().expect("seconds");
    assert!(
        (ts - chrono::Utc::now().timestamp()).abs() < 60,
        "timeStamp is in seconds"
    );
    assert!(pay_params::verify(
        &to_params(&payment),
        &merchant().api_key
    ));
    assert_eq!(h.sandbox_status(&order.out_trade_no).await, "NOTPAY");
}

#[tokio::test]
async fn create_order_md5_returns_params_wx_request_payment_accepts() {
    create_order_returns_verifiable_payment_params(SignType::Md5).await;
}

#[tokio::test]
async fn create_order_hmac_sha256_returns_params_wx_request_payment_accepts() {
    create_order_returns_verifiable_payment_params(SignType::HmacSha256).await;
}

#[tokio::test]
async fn same_key_and_parameters_return_the_same_order_with_a_fresh_signature() {
    let mut h = start(Options::default()).await;
    let first = h
        .client
        .create_order(request("k-idem", 100))
        .await
        .expect("first")
        .into_inner();
    let second = h
        .client
        .create_order(request("k-idem", 100))
        .await
        .expect("second")
        .into_inner();
    let (o1, o2) = (first.order.expect("order"), second.order.expect("order"));
    assert_eq!(o1.out_trade_no, o2.out_trade_no);
    assert_eq!(o1.prepay_id, o2.prepay_id);
    let (p1, p2) = (
        first.payment.expect("payment"),
        second.payment.expect("payment"),
    );
    assert_ne!(p1.nonce_str, p2.nonce_str);
    assert_ne!(p1.pay_sign, p2.pay_sign);
    assert!(pay_params::verify(&to_params(&p2), &merchant().api_key));
    assert_eq!(h.order_count().await, 1);
}

#[tokio::test]
async fn same_key_with_other_parameters_is_refused_and_says_why() {
    let mut h = start(Options::default()).await;
    h.client
        .create_order(request("k-conflict", 100))
        .await
        .expect("first");
    let err = h
        .client
        .create_order(request("k-conflict", 101))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains("total_fee"), "{}", err.message());
    assert_eq!(h.order_count().await, 1);
}

#[tokio::test]
async fn concurrent_creates_with_one_key_make_one_order() {
    let h = start(Options::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            c.create_order(request("k-race", 100)).await
        }));
    }
    let mut numbers = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.expect("join").expect("created").into_inner();
        numbers.insert(r.order.expect("order").out_trade_no);
    }
    assert_eq!(numbers.len(), 1);
    assert_eq!(h.order_count().await, 1);
}

#[tokio::test]
async fn invalid_input_names_the_field_and_stores_nothing() {
    let mut h = start(Options::default()).await;
    let cases: Vec<(&str, CreateOrderRequest)> = vec![
        (
            "total_fee",
            CreateOrderRequest {
                total_fee: 0,
                ..request("k1", 1)
            },
        ),
        (
            "total_fee",
            CreateOrderRequest {
                total_fee: -100,
                ..request("k1", 1)
            },
        ),
        (
            "description",
            CreateOrderRequest {
                description: "长".repeat(43),
                ..request("k1", 1)
            },
        ),
        (
            "description",
            CreateOrderRequest {
                description: String::new(),
                ..request("k1", 1)
            },
        ),
        (
            "attach",
            CreateOrderRequest {
                attach: "a".repeat(128),
                ..request("k1", 1)
            },
        ),
        (
            "openid",
            CreateOrderRequest {
                openid: String::new(),
                ..request("k1", 1)
            },
        ),
        (
            "client_ip",
            CreateOrderRequest {
                client_ip: "not-an-ip".into(),
                ..request("k1", 1)
            },
        ),
        (
            "idempotency_key",
            CreateOrderRequest {
                idempotency_key: String::new(),
                ..request("k1", 1)
            },
        ),
        (
            "expire_seconds",
            CreateOrderRequest {
                expire_seconds: 5,
                ..request("k1", 1)
            },
        ),
    ];
    for (field, req) in cases {
        let err = h.client.create_order(req).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    assert_eq!(h.order_count().await, 0);
    for bad in ["", "has space", &"9".repeat(33)] {
        let err = h
            .client
            .get_order(GetOrderRequest {
                out_trade_no: bad.into(),
            })
            .await
            .expect_err("bad no");
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn unknown_orders_are_not_found() {
    let mut h = start(Options::default()).await;
    let no = "01JAAAAAAAAAAAAAAAAAAAAAAA".to_owned();
    assert_eq!(
        h.client
            .get_order(GetOrderRequest {
                out_trade_no: no.clone()
            })
            .await
            .expect_err("x")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        h.client
            .query_order(QueryOrderRequest {
                out_trade_no: no.clone()
            })
            .await
            .expect_err("x")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        h.client
            .close_order(CloseOrderRequest { out_trade_no: no })
            .await
            .expect_err("x")
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn wechat_system_errors_are_unavailable_and_the_same_key_retries() {
    let mut h = start(Options::default()).await;
    // More SYSTEMERRORs than the client's 3 attempts.
    assert!(h
        .control("/sandbox/faults", serde_json::json!({ "systemerror": 3 }))
        .await
        .is_success());
    let err = h
        .client
        .create_order(request("k-retry", 300))
        .await
        .expect_err("unavailable");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(!err.message().contains(KEY));
    // The order exists, unplaced, and the retry places it under the same number.
    assert_eq!(h.order_count().await, 1);
    let r = h
        .client
        .create_order(request("k-retry", 300))
        .await
        .expect("retry works")
        .into_inner();
    assert!(!r.order.expect("order").prepay_id.is_empty());
    assert_eq!(h.order_count().await, 1);
}

#[tokio::test]
async fn a_forged_wechat_reply_is_rejected() {
    let mut h = start(Options::default()).await;
    assert!(h
        .control("/sandbox/faults", serde_json::json!({ "bad_signature": 1 }))
        .await
        .is_success());
    let err = h
        .client
        .create_order(request("k-forged", 300))
        .await
        .expect_err("forged reply");
    assert_eq!(err.code(), Code::Unavailable);
    let stored: Option<String> = sqlx::query_scalar("SELECT prepay_id FROM orders")
        .fetch_one(h.store.pool())
        .await
        .expect("row");
    assert_eq!(stored, None, "nothing from a forged reply is kept");
}

#[tokio::test]
async fn query_order_finds_a_payment_whose_notification_was_lost() {
    let mut h = start(Options::default()).await;
    let o = h
        .client
        .create_order(request("k-query", 888))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order");
    let mut redis = redis::Client::open(testing::redis_url())
        .expect("redis")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    redis
        .subscribe(wxpay_store::events::channel(&o.out_trade_no))
        .await
        .expect("subscribe");
    assert!(h
        .control(
            &format!("/sandbox/orders/{}/pay", o.out_trade_no),
            serde_json::json!({ "delivery": "drop" })
        )
        .await
        .is_success());
    // Still unpaid locally: nothing told us.
    let before = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(before.status, OrderStatus::Notpay as i32);

    let after = h
        .client
        .query_order(QueryOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(after.status, OrderStatus::Success as i32);
    assert!(!after.transaction_id.is_empty());
    assert_eq!(after.version, 2);
    assert!(after.paid_at > 0);
    assert_eq!(h.event_count(&o.out_trade_no).await, 1);
    let msg = tokio::time::timeout(
        Duration::from_secs(5),
        futures::StreamExt::next(&mut redis.on_message()),
    )
    .await
    .expect("event published")
    .expect("message");
    let event: wxpay_core::domain::OrderEvent =
        serde_json::from_str(&msg.get_payload::<String>().expect("payload")).expect("event json");
    assert_eq!((event.status.as_str(), event.version), ("SUCCESS", 2));

    // Asking again changes nothing.
    let again = h
        .client
        .query_order(QueryOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(again.version, 2);
    assert_eq!(h.event_count(&o.out_trade_no).await, 1);
}

#[tokio::test]
async fn close_order_closes_an_unpaid_order_at_wechat_first() {
    let mut h = start(Options::default()).await;
    let o = h
        .client
        .create_order(request("k-close", 50))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order");
    // WeChat refuses to close an order in its first five minutes, and says so.
    let refused = h
        .client
        .close_order(CloseOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect_err("too young to close");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("INVALID_REQUEST"),
        "{}",
        refused.message()
    );
    assert_eq!(h.sandbox_status(&o.out_trade_no).await, "NOTPAY");
    let age = h
        .control(
            &format!("/sandbox/orders/{}/age", o.out_trade_no),
            serde_json::json!({"seconds": 300}),
        )
        .await;
    assert!(age.is_success());
    let closed = h
        .client
        .close_order(CloseOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("closed")
        .into_inner();
    assert_eq!(closed.status, OrderStatus::Closed as i32);
    assert_eq!(h.sandbox_status(&o.out_trade_no).await, "CLOSED");
    // WeChat will not take payment for it any more.
    let paid = h
        .control(
            &format!("/sandbox/orders/{}/pay", o.out_trade_no),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(paid, reqwest::StatusCode::CONFLICT);
    // Creating with the same key returns the closed order and nothing to pay.
    let again = h
        .client
        .create_order(request("k-close", 50))
        .await
        .expect("same key")
        .into_inner();
    assert_eq!(
        again.order.expect("order").status,
        OrderStatus::Closed as i32
    );
    assert!(again.payment.is_none());
}

#[tokio::test]
async fn close_order_on_a_paid_order_refuses_and_records_the_payment() {
    let mut h = start(Options::default()).await;
    let o = h
        .client
        .create_order(request("k-paid", 50))
        .await
        .expect("created")
        .into_inner()
        .order
        .expect("order");
    assert!(h
        .control(
            &format!("/sandbox/orders/{}/pay", o.out_trade_no),
            serde_json::json!({ "delivery": "drop" })
        )
        .await
        .is_success());
    let err = h
        .client
        .close_order(CloseOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect_err("paid");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let now = h
        .client
        .get_order(GetOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        now.status,
        OrderStatus::Success as i32,
        "reconciled from WeChat"
    );
    assert!(!now.transaction_id.is_empty());
    assert_eq!(h.sandbox_status(&o.out_trade_no).await, "SUCCESS");
}

#[tokio::test]
async fn database_down_is_unavailable() {
    let url = testing::fresh_database_url().await.expect("db");
    let store = PgStore::connect(
        &url,
        wxpay_store::postgres::PgOptions {
            max_connections: 2,
            acquire_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    let publisher: Arc<dyn EventPublisher> =
        Arc::new(RedisPublisher::new(&testing::redis_url()).expect("redis"));
    let config = WechatConfig {
        merchants: vec![MerchantAccount {
            entry: MerchantEntry::direct("default", merchant(), SignType::Md5),
            client_tls: None,
        }],
        api_base: "http://127.0.0.1:9".into(),
        notify_url: "http://127.0.0.1:9/n".into(),
        refund_notify_url: None,
        v3_notify_url: None,
        v3_refund_notify_url: None,
    };
    let wechat = config.clients(ClientOptions::default()).expect("client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::from_parts(
        listener,
        Arc::new(store.clone()),
        publisher,
        wechat,
        None,
        quiet_reconciler(),
    );
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    // Take the database away under the running service.
    let name = url.rsplit('/').next().expect("db name").to_owned();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&testing::admin_url())
        .await
        .expect("admin");
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("drop");
    let mut client = PaymentServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let err = client
        .create_order(request("k-down", 1))
        .await
        .expect_err("db down");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        !err.message().contains(&name),
        "internal detail leaked: {}",
        err.message()
    );
}

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    req
}

#[tokio::test]
async fn the_read_token_reads_but_cannot_create_or_close() {
    let h = start(Options {
        api_token: Some("full-token-0123456789abcdef-0123456"),
        read_token: Some("read-token-0123456789abcdef-0123456"),
        ..Default::default()
    })
    .await;
    let read = "read-token-0123456789abcdef-0123456";
    let mut client = h.client.clone();
    let err = client
        .create_order(with_bearer(request("k-read-only", 10), read))
        .await
        .expect_err("a watcher cannot create orders");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = client
        .close_order(with_bearer(
            CloseOrderRequest {
                out_trade_no: "X1".into(),
            },
            read,
        ))
        .await
        .expect_err("nor close them");
    assert_eq!(err.code(), Code::PermissionDenied);
    let created = client
        .create_order(with_bearer(
            request("k-read-only", 10),
            "full-token-0123456789abcdef-0123456",
        ))
        .await
        .expect("the full token creates")
        .into_inner()
        .order
        .expect("order");
    let got = client
        .get_order(with_bearer(
            GetOrderRequest {
                out_trade_no: created.out_trade_no.clone(),
            },
            read,
        ))
        .await
        .expect("the read token reads")
        .into_inner();
    assert_eq!(got.out_trade_no, created.out_trade_no);
    assert_eq!(
        h.order_count().await,
        1,
        "the refused create stored nothing"
    );
}

const SHOP: &str = "shop-token-0123456789abcdef-0123456";
const BILLING: &str = "billing-token-0123456789abcdef-01234";

#[tokio::test]
async fn idempotency_keys_belong_to_the_caller_whose_token_placed_the_order() {
    let tokens: &'static str = Box::leak(format!("shop:{SHOP},billing:{BILLING}").into_boxed_str());
    let h = start(Options {
        api_token: Some(tokens),
        ..Default::default()
    })
    .await;
    let mut client = h.client.clone();
    let create = |token: &'static str, fee: i64| {
        let mut client = client.clone();
        async move {
            client
                .create_order(with_bearer(request("cart-42", fee), token))
                .await
                .map(|r| r.into_inner().order.expect("order"))
        }
    };
    let shops = create(SHOP, 10).await.expect("the shop creates");
    // The billing service happens to use the same key: its own order, its own
    // amount, and nothing of the shop's order comes back to it.
    let billings = create(BILLING, 99).await.expect("billing creates its own");
    assert_ne!(billings.out_trade_no, shops.out_trade_no);
    assert_eq!(billings.total_fee, 99);
    // Within a caller the key still holds: a retry is the same order, and other
    // terms under it are refused.
    let retry = create(SHOP, 10).await.expect("the shop retries");
    assert_eq!(retry.out_trade_no, shops.out_trade_no);
    let err = create(BILLING, 10)
        .await
        .expect_err("other terms, same caller");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains(&billings.out_trade_no),
        "names the caller's own order: {err:?}"
    );
    assert!(!err.message().contains(&shops.out_trade_no), "{err:?}");
    assert_eq!(h.order_count().await, 2);
    // Both tokens open every method.
    let got = client
        .get_order(with_bearer(
            GetOrderRequest {
                out_trade_no: shops.out_trade_no.clone(),
            },
            BILLING,
        ))
        .await
        .expect("read with the other caller's token");
    assert_eq!(got.into_inner().total_fee, 10);
}

#[tokio::test]
async fn api_token_is_required_when_set() {
    let h = start(Options {
        api_token: Some("s3cret-token-0123456789abcdef-01234"),
        ..Default::default()
    })
    .await;
    let mut anonymous = h.client.clone();
    let err = anonymous
        .get_order(GetOrderRequest {
            out_trade_no: "X1".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(GetOrderRequest {
        out_trade_no: "X1".into(),
    });
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().expect("header"));
    assert_eq!(
        anonymous
            .get_order(req)
            .await
            .expect_err("wrong token")
            .code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(GetOrderRequest {
        out_trade_no: "X1".into(),
    });
    req.metadata_mut().insert(
        "authorization",
        "Bearer s3cret-token-0123456789abcdef-01234"
            .parse()
            .expect("header"),
    );
    assert_eq!(
        anonymous
            .get_order(req)
            .await
            .expect_err("authorized, unknown")
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn with_a_watch_secret_create_order_hands_out_a_token_for_that_order_only() {
    const SECRET: &str = "payment-test-watch-secret-0123456789";
    let mut h = start(Options {
        watch_secret: Some(SECRET),
        ..Options::default()
    })
    .await;
    let created = h
        .client
        .create_order(request("k-watch-token", 10))
        .await
        .expect("created")
        .into_inner();
    let no = created.order.expect("order").out_trade_no;
    let secret = wxpay_core::watch_token::WatchSecret::new(SECRET).expect("long");
    let now = chrono::Utc::now();
    assert_eq!(secret.verify(&no, &created.watch_token, now), Ok(()));
    assert!(secret
        .verify("ANOTHER1", &created.watch_token, now)
        .is_err());
    // Valid past the order's 30-minute expiry by the grace period, not for ever.
    assert!(secret
        .verify(
            &no,
            &created.watch_token,
            now + chrono::Duration::minutes(40)
        )
        .is_ok());
    assert!(secret
        .verify(
            &no,
            &created.watch_token,
            now + chrono::Duration::minutes(50)
        )
        .is_err());

    let mut plain = start(Options::default()).await;
    let without = plain
        .client
        .create_order(request("k-no-token", 10))
        .await
        .expect("created")
        .into_inner();
    assert!(without.watch_token.is_empty(), "no secret, no token");
}
