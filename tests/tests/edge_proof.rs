//! Issue 25, "nothing unproven stored", against the real binaries (the split
//! deployment on Postgres, Redis and the sandbox): forged refund and cloud-pay
//! bodies are refused without a row; a genuine HMAC-SHA256 payment
//! notification pays an order placed with MD5 and the kept row says how it was
//! signed; a cloud-pay callback pays only when it is fresh and WeChat's
//! orderquery agrees, and once; a short callback secret stops the gateway at
//! start. The cloud-pay signatures here are computed with `hmac`/`sha2`
//! directly, not with the product's signer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::{Process, Stack, StackOptions, APP_ID, MCH_ID};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::{Connection, PgConnection};
use wxpay_proto::v1::{CreateOrderRequest, GetOrderRequest, Order, OrderStatus};

/// The gateway's shared secret with the forwarder: 32 bytes, the shortest allowed.
const SECRET: &str = "e2e-cloudpay-forwarder-secret-0123";

/// Each forged body is this big: under the gateway's 64 KiB cap, so it is
/// read and judged, not refused for its size.
const FORGED_BYTES: usize = 60 * 1024;
const FORGED_OF_EACH: usize = 600;

async fn stack() -> Stack {
    Stack::start(StackOptions {
        cloudpay_secret: Some(SECRET.to_owned()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts")
}

async fn db(stack: &Stack) -> PgConnection {
    PgConnection::connect(&stack.database_url)
        .await
        .expect("connect to the stack's database")
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The forwarder's signature: hex HMAC-SHA256 of `timestamp\nbody`.
fn forwarder_sign(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn create_order(stack: &Stack, key: &str) -> Order {
    stack
        .payments()
        .await
        .expect("connect to payment-service")
        .create_order(CreateOrderRequest {
            idempotency_key: key.to_owned(),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            description: "会员充值".to_owned(),
            total_fee: 990,
            client_ip: "127.0.0.1".to_owned(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .expect("CreateOrder")
        .into_inner()
        .order
        .expect("an order")
}

async fn get_order(stack: &Stack, out_trade_no: &str) -> Order {
    stack
        .payments()
        .await
        .expect("connect to payment-service")
        .get_order(GetOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
        })
        .await
        .expect("GetOrder")
        .into_inner()
}

/// The payer pays in the sandbox, whose notification is dropped: only the
/// cloud-pay callback (or orderquery) can tell the gateway. The transaction_id.
async fn paid_in_wechat_only(stack: &Stack, out_trade_no: &str) -> String {
    let paid = stack
        .sandbox_post(out_trade_no, "pay", serde_json::json!({"delivery": "drop"}))
        .await
        .expect("the payer pays");
    paid["transaction_id"]
        .as_str()
        .expect("transaction_id")
        .to_owned()
}

fn callback_body(out_trade_no: &str, transaction_id: &str, total_fee: i64) -> String {
    serde_json::json!({
        "returnCode": "SUCCESS",
        "resultCode": "SUCCESS",
        "appid": APP_ID,
        "subMchId": MCH_ID,
        "outTradeNo": out_trade_no,
        "transactionId": transaction_id,
        "totalFee": total_fee,
        "cashFee": total_fee,
        "feeType": "CNY",
        "timeEnd": "20240102150405",
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
    })
    .to_string()
}

/// Posts a callback with the given headers; the gateway's `{errcode, errmsg}`.
async fn post_callback(
    http: &reqwest::Client,
    stack: &Stack,
    body: String,
    timestamp: Option<&str>,
    signature: &str,
) -> serde_json::Value {
    let mut req = http
        .post(format!("{}/cloudpay/callback", stack.gateway_url))
        .header("content-type", "application/json")
        .header("x-cloudpay-signature", signature);
    if let Some(ts) = timestamp {
        req = req.header("x-cloudpay-timestamp", ts);
    }
    let res = req.body(body).send().await.expect("the gateway answers");
    assert_eq!(res.status(), 200);
    res.json().await.expect("a JSON reply")
}

/// Signed by the forwarder now.
async fn forward(http: &reqwest::Client, stack: &Stack, body: &str) -> serde_json::Value {
    let ts = unix_now().to_string();
    let sig = forwarder_sign(SECRET, &ts, body);
    post_callback(http, stack, body.to_owned(), Some(&ts), &sig).await
}

/// (rows, bytes of the table with its indexes and TOAST) of `notifications`,
/// and the whole database's size.
async fn sizes(conn: &mut PgConnection) -> (i64, i64, i64) {
    let (rows, table): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM notifications), pg_total_relation_size('notifications')",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("notifications size");
    let database: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut *conn)
        .await
        .expect("database size");
    (rows, table, database)
}

/// One forged refund notification of about [`FORGED_BYTES`]: its `req_info`
/// does not decrypt, or it names a merchant we do not serve, or has no
/// return_code, or another appid.
fn forged_refund(i: usize) -> String {
    let pad = |room: usize| "A".repeat(FORGED_BYTES - room);
    // Base64 of whole 16-byte blocks that are not under the merchant's key.
    let req_info = pad(256);
    let (return_code, mch_id, appid) = match i % 4 {
        0 => ("SUCCESS", MCH_ID, APP_ID),
        1 => ("SUCCESS", "1999999999", APP_ID),
        2 => ("", MCH_ID, APP_ID),
        _ => ("SUCCESS", MCH_ID, "wx0000000000000000"),
    };
    let return_code = if return_code.is_empty() {
        String::new()
    } else {
        format!("<return_code>{return_code}</return_code>")
    };
    format!(
        "<xml>{return_code}<appid>{appid}</appid><mch_id>{mch_id}</mch_id>\
         <nonce_str>forged{i}</nonce_str><req_info><![CDATA[{req_info}]]></req_info></xml>"
    )
}

/// One forged cloud-pay callback of about [`FORGED_BYTES`], with its headers:
/// a bad HMAC, a valid one over a stale timestamp (a replay), no timestamp,
/// or a valid signature over a body that is not JSON.
fn forged_callback(i: usize) -> (String, Option<String>, String) {
    let mut body = callback_body(&format!("FORGED{i}"), "4200000000000000000000000001", 990);
    body.insert_str(
        1,
        &format!(r#""pad":"{}","#, "x".repeat(FORGED_BYTES - body.len() - 16)),
    );
    let now = unix_now().to_string();
    match i % 4 {
        0 => {
            let sig = forwarder_sign("not-the-secret-but-32-bytes-long!!", &now, &body);
            (body, Some(now), sig)
        }
        1 => {
            let stale = (unix_now() - 3600).to_string();
            let sig = forwarder_sign(SECRET, &stale, &body);
            (body, Some(stale), sig)
        }
        2 => {
            let sig = forwarder_sign(SECRET, "", &body);
            (body, None, sig)
        }
        _ => {
            let not_json = format!("{{{}", "y".repeat(FORGED_BYTES));
            let sig = forwarder_sign(SECRET, &now, &not_json);
            (not_json, Some(now), sig)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_forged_refund_and_cloudpay_bodies_each_are_refused_without_a_row() {
    let stack = stack().await;
    let http = reqwest::Client::new();
    let mut conn = db(&stack).await;
    let before = sizes(&mut conn).await;
    let started = std::time::Instant::now();

    for i in 0..FORGED_OF_EACH {
        let body = forged_refund(i);
        assert!(body.len() > 59 * 1024 && body.len() < 64 * 1024);
        let reply = http
            .post(format!("{}/wechat/refund/notify", stack.gateway_url))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("the gateway answers")
            .text()
            .await
            .expect("a reply");
        assert!(
            reply.contains("<return_code><![CDATA[FAIL]]></return_code>")
                || reply.contains("<return_code>FAIL</return_code>"),
            "forged refund {i} was not refused: {reply}"
        );

        let (body, timestamp, signature) = forged_callback(i);
        assert!(body.len() > 59 * 1024 && body.len() < 64 * 1024);
        let reply = post_callback(&http, &stack, body, timestamp.as_deref(), &signature).await;
        assert_eq!(
            reply["errcode"], 1,
            "forged callback {i} was not refused: {reply}"
        );
    }

    let elapsed = started.elapsed();
    let after = sizes(&mut conn).await;
    eprintln!(
        "{} forged bodies ({} KiB each) in {elapsed:?}: notifications {} -> {} rows, \
         {} -> {} bytes; database {} -> {} bytes (+{} bytes)",
        2 * FORGED_OF_EACH,
        FORGED_BYTES / 1024,
        before.0,
        after.0,
        before.1,
        after.1,
        before.2,
        after.2,
        after.2 - before.2
    );
    assert_eq!(after.0, before.0, "a forged body was kept");
    assert!(
        after.2 - before.2 < 1024 * 1024,
        "the database grew by {} bytes",
        after.2 - before.2
    );
    let anomalies: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies")
        .fetch_one(&mut conn)
        .await
        .expect("count anomalies");
    assert_eq!(anomalies, 0, "a forged body was recorded as an anomaly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_hmac_sha256_notification_pays_an_order_placed_with_md5() {
    let stack = stack().await;
    let mut conn = db(&stack).await;
    let order = create_order(&stack, "e2e-md5-order").await;
    // Placed while the merchant signed with MD5 (the stack's merchant now uses
    // HMAC-SHA256, and so does the sandbox's notification for this order).
    sqlx::query("UPDATE orders SET sign_type = 'MD5' WHERE out_trade_no = $1")
        .bind(&order.out_trade_no)
        .execute(&mut conn)
        .await
        .expect("the order was placed with MD5");

    let paid = stack
        .sandbox_post(&order.out_trade_no, "pay", serde_json::json!({}))
        .await
        .expect("the payer pays");
    let transaction_id = paid["transaction_id"].as_str().expect("transaction_id");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut kept: Vec<(String, Option<String>)> = Vec::new();
    while tokio::time::Instant::now() < deadline {
        kept = sqlx::query_as(
            "SELECT verdict, sign_type FROM notifications WHERE out_trade_no = $1 ORDER BY id",
        )
        .bind(&order.out_trade_no)
        .fetch_all(&mut conn)
        .await
        .expect("read notifications");
        if !kept.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored = get_order(&stack, &order.out_trade_no).await;
    assert_eq!(
        stored.status(),
        OrderStatus::Success,
        "paid by the notification"
    );
    assert_eq!(stored.transaction_id, transaction_id);
    assert_eq!(
        kept.first(),
        Some(&("applied".to_owned(), Some("HMAC-SHA256".to_owned()))),
        "the kept notification says it was signed with HMAC-SHA256: {kept:?}"
    );
    let anomalies: i64 = sqlx::query_scalar("SELECT count(*) FROM anomalies")
        .fetch_one(&mut conn)
        .await
        .expect("count anomalies");
    assert_eq!(anomalies, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloudpay_callback_pays_only_when_fresh_and_confirmed_and_only_once() {
    let stack = stack().await;
    let http = reqwest::Client::new();
    let mut conn = db(&stack).await;

    // Authentic and fresh, but WeChat says NOTPAY: nothing paid.
    let unpaid = create_order(&stack, "e2e-cloudpay-unpaid").await;
    let claim = callback_body(&unpaid.out_trade_no, "4200000000000000000000000099", 990);
    let reply = forward(&http, &stack, &claim).await;
    assert_eq!(
        reply,
        serde_json::json!({"errcode": 1, "errmsg": "unconfirmed"})
    );
    let now = get_order(&stack, &unpaid.out_trade_no).await;
    assert_eq!((now.status(), now.version), (OrderStatus::Notpay, 1));

    // Paid in WeChat; the callback captured and replayed ten minutes later.
    let order = create_order(&stack, "e2e-cloudpay-paid").await;
    let transaction_id = paid_in_wechat_only(&stack, &order.out_trade_no).await;
    let body = callback_body(&order.out_trade_no, &transaction_id, 990);
    let rows_before: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    let old = (unix_now() - 600).to_string();
    let replayed = post_callback(
        &http,
        &stack,
        body.clone(),
        Some(&old),
        &forwarder_sign(SECRET, &old, &body),
    )
    .await;
    assert_eq!(
        replayed,
        serde_json::json!({"errcode": 1, "errmsg": "SIGNERROR"})
    );
    let rows_after: i64 = sqlx::query_scalar("SELECT count(*) FROM notifications")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(rows_after, rows_before, "the replay was kept");
    let now = get_order(&stack, &order.out_trade_no).await;
    assert_eq!((now.status(), now.version), (OrderStatus::Notpay, 1));

    // The genuine callback, fresh: paid; its copy changes nothing.
    let ok = serde_json::json!({"errcode": 0, "errmsg": "SUCCESS"});
    assert_eq!(forward(&http, &stack, &body).await, ok);
    assert_eq!(
        forward(&http, &stack, &body).await,
        ok,
        "a copy is acknowledged"
    );
    let paid = get_order(&stack, &order.out_trade_no).await;
    assert_eq!(
        (paid.status(), paid.version, paid.transaction_id.as_str()),
        (OrderStatus::Success, 2, transaction_id.as_str()),
        "paid once"
    );
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM order_events WHERE out_trade_no = $1 AND status = 'SUCCESS'",
    )
    .bind(&order.out_trade_no)
    .fetch_one(&mut conn)
    .await
    .expect("count events");
    assert_eq!(events, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_31_byte_callback_secret_stops_the_gateway_at_start() {
    let stack = Stack::start(StackOptions::default())
        .await
        .expect("the stack starts");
    let mut env = stack.env.gateway.clone();
    env.retain(|(k, _)| *k != "GATEWAY_ADDR");
    env.push(("GATEWAY_ADDR", "127.0.0.1:0".to_owned()));
    env.push(("CLOUDPAY_CALLBACK_SECRET", "x".repeat(31)));

    let mut gateway = Process::spawn("gateway", &env).expect("the gateway runs");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gateway.exited() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway started with a 31-byte secret:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert!(!status.success(), "{status}");
    let log = gateway.log_tail();
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CLOUDPAY_CALLBACK_SECRET"))
        .collect();
    assert_eq!(named.len(), 1, "one line names the variable:\n{log}");
    assert!(named[0].contains("32"), "{}", named[0]);
}
