//! Issue 25's callers, end to end over the real binaries: a split deployment
//! with two merchants (`default` and `shop`), `API_TOKEN`, `API_READ_TOKEN`
//! and an `API_CALLERS_FILE` with a caller confined to `shop` and a read-only
//! one. The confined caller sees every order and refund of `default` exactly
//! as one that does not exist, on every RPC and on WatchOrder, and nothing is
//! done to it; CreateOrder for another merchant is PERMISSION_DENIED; its own
//! merchant's orders work. The read-only callers read and query but cannot
//! create, close or refund, and the poller's fallback works with the read
//! token. Both gRPC binaries refuse to serve a token in plaintext off
//! loopback unless TLS or `ALLOW_PLAINTEXT=1`.

use std::{io::Write, process::Command, time::Duration};

use e2e_tests::{binary, build_binaries, Stack, StackOptions};
use tonic::{Code, Status};
use wxpay_core::domain::{Fee, NewRefund, OutRefundNo, OutTradeNo, RefundReason};
use wxpay_proto::v1::{
    CloseOrderRequest, CreateOrderRequest, GetOrderRequest, GetRefundRequest, Order, OrderStatus,
    QueryOrderRequest, ReconcileBillRequest, RefundOrderRequest, WatchOrderRequest,
};
use wxpay_store::{PgStore, RefundPlacement, Store};

const FULL: &str = "full-token-0123456789abcdef-0123456";
const READ: &str = "read-token-0123456789abcdef-0123456";
const SHOP: &str = "shop-token-0123456789abcdef-0123456";
const SHOP_VIEWER: &str = "shop-viewer-token-0123456789abcdef-01";

/// A number no order has.
const NOBODY: &str = "NOSUCHORDER0000000000000000001";

fn merchants_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    write!(
        file,
        r#"
[[merchant]]
name = "shop"
app_id = "wx2222222222222222"
mch_id = "1900000500"
api_key = "shopkey0123456789abcdefghijklmno"
sign_type = "MD5"
"#
    )
    .expect("write the merchants file");
    file
}

fn callers_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    write!(
        file,
        r#"
[[caller]]
name = "shop"
token_env = "SHOP_TOKEN"
merchants = ["shop"]

[[caller]]
name = "shop-viewer"
token_env = "SHOP_VIEWER_TOKEN"
merchants = ["shop"]
read_only = true
"#
    )
    .expect("write the callers file");
    file
}

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("a header value"),
    );
    req
}

fn create_request(key: &str, merchant: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.to_owned(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
        description: "会员充值".to_owned(),
        total_fee: 1,
        client_ip: "127.0.0.1".to_owned(),
        expire_seconds: 1800,
        merchant: merchant.to_owned(),
        ..Default::default()
    }
}

/// The code and message of `result`'s error.
fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("refused");
    (status.code(), status.message().to_owned())
}

async fn create(stack: &Stack, token: &str, key: &str, merchant: &str) -> Order {
    stack
        .payments()
        .await
        .expect("connect")
        .create_order(bearer(create_request(key, merchant), token))
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("an order")
}

async fn get(stack: &Stack, token: &str, no: &str) -> Result<Order, Status> {
    stack
        .payments()
        .await
        .expect("connect")
        .get_order(bearer(
            GetOrderRequest {
                out_trade_no: no.to_owned(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn wait_paid(stack: &Stack, no: &str) -> Order {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let order = get(stack, FULL, no).await.expect("GetOrder");
        if order.status() == OrderStatus::Success {
            return order;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never paid: {order:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What every PaymentService RPC about `no` (and GetRefund about `refund`)
/// answers `token`, and WatchOrder too, in one list.
async fn every_rpc(stack: &Stack, token: &str, no: &str, refund: &str) -> Vec<(Code, String)> {
    let mut payments = stack.payments().await.expect("connect");
    let out_trade_no = no.to_owned();
    let mut answers = vec![
        refusal(
            payments
                .get_order(bearer(
                    GetOrderRequest {
                        out_trade_no: out_trade_no.clone(),
                    },
                    token,
                ))
                .await,
        ),
        refusal(
            payments
                .query_order(bearer(
                    QueryOrderRequest {
                        out_trade_no: out_trade_no.clone(),
                    },
                    token,
                ))
                .await,
        ),
        refusal(
            payments
                .close_order(bearer(
                    CloseOrderRequest {
                        out_trade_no: out_trade_no.clone(),
                    },
                    token,
                ))
                .await,
        ),
        refusal(
            payments
                .refund_order(bearer(
                    RefundOrderRequest {
                        out_trade_no: out_trade_no.clone(),
                        out_refund_no: format!("R-probe-{no}"),
                        refund_fee: 1,
                        reason: String::new(),
                    },
                    token,
                ))
                .await,
        ),
        refusal(
            payments
                .get_refund(bearer(
                    GetRefundRequest {
                        out_refund_no: refund.to_owned(),
                    },
                    token,
                ))
                .await,
        ),
    ];
    let watched = stack
        .watcher()
        .await
        .expect("connect to the poller")
        .watch_order(bearer(
            WatchOrderRequest {
                out_trade_no,
                timeout_seconds: 5,
                include_refunds: false,
            },
            token,
        ))
        .await;
    answers.push(refusal(watched.map(|_| ())));
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confined_caller_sees_another_merchants_orders_as_not_found_on_every_rpc() {
    let merchants = merchants_file();
    let callers = callers_file();
    let stack = Stack::start(StackOptions {
        merchants_file: Some(merchants.path().to_owned()),
        api_token: Some(FULL.to_owned()),
        api_read_token: Some(READ.to_owned()),
        callers_file: Some(callers.path().to_owned()),
        caller_env: vec![
            ("SHOP_TOKEN", SHOP.to_owned()),
            ("SHOP_VIEWER_TOKEN", SHOP_VIEWER.to_owned()),
        ],
        // The fallback asks soon, so that its credential is put to work below.
        fallback_delay: Duration::from_millis(200),
        fallback_max_delay: Duration::from_millis(500),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts with callers");

    // `default`'s orders, placed by the full token: one paid (with a refund),
    // one unpaid.
    let paid = create(&stack, FULL, "callers-paid", "").await;
    stack
        .sandbox_post(&paid.out_trade_no, "pay", serde_json::json!({}))
        .await
        .expect("paid in the sandbox");
    let paid = wait_paid(&stack, &paid.out_trade_no).await;
    let store = PgStore::connect(&stack.database_url, Default::default())
        .await
        .expect("the stack's database");
    let placed = store
        .insert_refund(&NewRefund {
            out_refund_no: OutRefundNo::parse("R-default-1").expect("number"),
            out_trade_no: OutTradeNo::parse(&paid.out_trade_no).expect("number"),
            refund_fee: Fee::for_field("refund_fee", 1).expect("fee"),
            reason: RefundReason::empty(),
        })
        .await
        .expect("a refund of default's order");
    assert!(matches!(placed, RefundPlacement::Placed(_)), "{placed:?}");
    let paid = get(&stack, FULL, &paid.out_trade_no).await.expect("read");
    let unpaid = create(&stack, FULL, "callers-unpaid", "default").await;

    // What a number nobody has gets, for the confined caller: the baseline.
    let missing = every_rpc(&stack, SHOP, NOBODY, "R-nobody").await;
    assert!(
        missing.iter().all(|(code, _)| *code == Code::NotFound),
        "{missing:?}"
    );
    // Another merchant's orders and refund: the very same answers, word for word.
    for order in [&paid, &unpaid] {
        let foreign = every_rpc(&stack, SHOP, &order.out_trade_no, "R-default-1").await;
        assert_eq!(foreign, missing, "default's order {}", order.out_trade_no);
        let viewer = every_rpc(&stack, SHOP_VIEWER, &order.out_trade_no, "R-default-1").await;
        // The read-only caller: NOT_FOUND where it may read, PERMISSION_DENIED
        // (for every order alike) where it may not.
        let codes: Vec<Code> = viewer.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            [
                Code::NotFound,
                Code::NotFound,
                Code::PermissionDenied,
                Code::PermissionDenied,
                Code::NotFound,
                Code::NotFound
            ],
            "{viewer:?}"
        );
    }
    // Nothing was done to them: no state change, no refund, nothing at WeChat.
    let paid_now = get(&stack, FULL, &paid.out_trade_no).await.expect("read");
    assert_eq!(paid_now.version, paid.version);
    assert_eq!(paid_now.status(), OrderStatus::Success);
    let unpaid_now = get(&stack, FULL, &unpaid.out_trade_no).await.expect("read");
    assert_eq!(unpaid_now.status(), OrderStatus::Notpay);
    assert_eq!(unpaid_now.version, unpaid.version);
    let at_wechat = stack
        .sandbox_get(&format!("/sandbox/orders/{}", unpaid.out_trade_no))
        .await
        .expect("the sandbox's order");
    assert_eq!(at_wechat["status"], "NOTPAY", "{at_wechat}");
    for probe in [&paid.out_trade_no, &unpaid.out_trade_no] {
        let none = store
            .refund(&OutRefundNo::parse(&format!("R-probe-{probe}")).expect("number"))
            .await
            .expect("read");
        assert!(none.is_none(), "a refund was stored for {probe}");
    }

    // CreateOrder for another merchant, named or by default: refused, and
    // without saying which merchants exist.
    let mut payments = stack.payments().await.expect("connect");
    for (merchant, n) in [("", 1), ("default", 2), ("nobody", 3)] {
        let (code, message) = refusal(
            payments
                .create_order(bearer(
                    create_request(&format!("shop-x-{n}"), merchant),
                    SHOP,
                ))
                .await,
        );
        assert_eq!(code, Code::PermissionDenied, "{merchant:?}: {message}");
        assert!(!message.contains("configured"), "{message}");
    }
    // A day's bill covers every merchant: not for a confined caller.
    let (code, _) = refusal(
        payments
            .reconcile_bill(bearer(
                ReconcileBillRequest {
                    bill_date: "20260101".to_owned(),
                    again: false,
                },
                SHOP,
            ))
            .await,
    );
    assert_eq!(code, Code::PermissionDenied);

    // Its own merchant works on every RPC.
    let own = create(&stack, SHOP, "shop-own-1", "shop").await;
    assert_eq!(own.merchant, "shop");
    assert_eq!(
        get(&stack, SHOP, &own.out_trade_no)
            .await
            .expect("GetOrder")
            .merchant,
        "shop"
    );
    assert_eq!(
        get(&stack, SHOP_VIEWER, &own.out_trade_no)
            .await
            .expect("the viewer reads its merchant's order")
            .out_trade_no,
        own.out_trade_no
    );
    let queried = payments
        .query_order(bearer(
            QueryOrderRequest {
                out_trade_no: own.out_trade_no.clone(),
            },
            SHOP_VIEWER,
        ))
        .await
        .expect("the viewer may query")
        .into_inner();
    assert_eq!(queried.status(), OrderStatus::Notpay);
    let mut stream = stack
        .watcher()
        .await
        .expect("connect")
        .watch_order(bearer(
            WatchOrderRequest {
                out_trade_no: own.out_trade_no.clone(),
                timeout_seconds: 5,
                include_refunds: false,
            },
            SHOP,
        ))
        .await
        .expect("WatchOrder of its own order")
        .into_inner();
    let snapshot = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a snapshot in time")
        .expect("no stream error")
        .expect("a message");
    assert_eq!(snapshot.status(), OrderStatus::Notpay);
    drop(stream);
    for token in [SHOP_VIEWER, READ] {
        let (code, _) = refusal(
            payments
                .close_order(bearer(
                    CloseOrderRequest {
                        out_trade_no: own.out_trade_no.clone(),
                    },
                    token,
                ))
                .await,
        );
        assert_eq!(
            code,
            Code::PermissionDenied,
            "a read-only caller closes nothing"
        );
        let (code, _) = refusal(
            payments
                .create_order(bearer(create_request("read-create", "shop"), token))
                .await,
        );
        assert_eq!(code, Code::PermissionDenied);
    }
    // WeChat refuses closeorder in an order's first 5 minutes: age it first.
    stack
        .sandbox_post(
            &own.out_trade_no,
            "age",
            serde_json::json!({"seconds": 600}),
        )
        .await
        .expect("aged in the sandbox");
    let closed = payments
        .close_order(bearer(
            CloseOrderRequest {
                out_trade_no: own.out_trade_no.clone(),
            },
            SHOP,
        ))
        .await
        .expect("its own order closes")
        .into_inner();
    assert_eq!(closed.status(), OrderStatus::Closed);

    // The poller's fallback (which calls QueryOrder with API_READ_TOKEN) finds
    // a payment whose notification was dropped, for a watcher holding that token.
    let late = create(&stack, FULL, "callers-late", "").await;
    let mut stream = stack
        .watcher()
        .await
        .expect("connect")
        .watch_order(bearer(
            WatchOrderRequest {
                out_trade_no: late.out_trade_no.clone(),
                timeout_seconds: 30,
                include_refunds: false,
            },
            READ,
        ))
        .await
        .expect("the read token watches")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a snapshot in time")
        .expect("no stream error")
        .expect("a message");
    assert_eq!(first.status(), OrderStatus::Notpay);
    stack
        .sandbox_post(
            &late.out_trade_no,
            "pay",
            serde_json::json!({"delivery": "drop"}),
        )
        .await
        .expect("paid, notification dropped");
    let found = tokio::time::timeout(Duration::from_secs(15), stream.message())
        .await
        .expect("the fallback finds it in time")
        .expect("no stream error")
        .expect("a message");
    assert_eq!(found.status(), OrderStatus::Success);
    assert_eq!(found.source, "QUERY", "found by the fallback's QueryOrder");
}

/// Starts `bin` with `env` only and returns its exit code and stderr; one that
/// passes configuration fails later, on the unreachable database of this test.
fn start_up(bin: &str, env: &[(&str, &str)]) -> (i32, String) {
    build_binaries().expect("the binaries build");
    let out = Command::new(binary(bin))
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_token_is_never_served_in_plaintext_off_loopback_unless_allowed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("cert");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    )
    .expect("key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let common: &[(&str, &str)] = &[
        ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none"),
        // A database not there is waited for; give up after a second so a
        // configuration that passes exits (1) on it.
        ("DATABASE_CONNECT_TIMEOUT_SECONDS", "1"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("PAYMENT_SERVICE_URL", "http://127.0.0.1:1"),
        ("WECHAT_APP_ID", "wxd930ea5d5a258f4f"),
        ("WECHAT_MCH_ID", "10000100"),
        ("WECHAT_API_KEY", "192006250b4c09247ec02edce69f6a2d"),
        (
            "WECHAT_NOTIFY_URL",
            "http://127.0.0.1:8080/wechat/pay/notify",
        ),
        ("API_TOKEN", FULL),
        ("POLLER_METRICS_ADDR", "127.0.0.1:0"),
        ("POLLER_HTTP_ADDR", "127.0.0.1:0"),
    ];
    for (bin, var) in [
        ("payment-service", "PAYMENT_ADDR"),
        ("poller", "POLLER_ADDR"),
    ] {
        let with = |extra: &[(&'static str, &str)]| {
            let mut env: Vec<(&str, &str)> = common.to_vec();
            env.push((var, "0.0.0.0:0"));
            env.extend(extra.iter().copied());
            start_up(bin, &env)
        };
        let (code, stderr) = with(&[]);
        assert_eq!(code, 2, "{bin}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{bin}: {stderr}");
        for name in ["TLS_CERT", "TLS_KEY", "ALLOW_PLAINTEXT", var] {
            assert!(stderr.contains(name), "{bin} {name}: {stderr}");
        }
        assert!(!stderr.contains(FULL), "{bin} echoed the token: {stderr}");
        // Each way out passes configuration (exit 1: the database is unreachable).
        for extra in [
            vec![("ALLOW_PLAINTEXT", "1")],
            vec![("TLS_CERT", cert.as_str()), ("TLS_KEY", key.as_str())],
        ] {
            let (code, stderr) = with(&extra);
            assert_eq!(code, 1, "{bin} {extra:?}: {stderr}");
            assert!(!stderr.contains("configuration error"), "{bin}: {stderr}");
        }
    }
}
