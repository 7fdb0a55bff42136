//! Issue 26's "done when", end to end over the real binaries: one split
//! deployment with a v3 merchant in public-key mode, a v3 merchant in
//! platform-certificate mode and the harness's v2 merchant. Each places JSAPI
//! and NATIVE orders, is paid by the sandbox's notification (v3: a sealed,
//! RSA-signed JSON body at `/wechat/v3/pay/notify`), seen on WatchOrder,
//! queried and closed. A platform certificate rotated in the middle of traffic
//! is picked up without a failed call, and forged, stale, probe and
//! unknown-key notifications change and store nothing. Every v3 `paySign` the
//! product hands out is checked with openssl against the merchant's public
//! key, never with the product's own code.

use std::{io::Write, path::Path, time::Duration};

use e2e_tests::{Stack, StackOptions};
use sqlx::{Connection, PgConnection};
use tonic::Code;
use wxpay_proto::v1::{
    CloseOrderRequest, CreateOrderRequest, CreateOrderResponse, GetOrderRequest, Order,
    OrderStatus, QueryOrderRequest, TradeType, WatchOrderRequest,
};

const PK_MCH: &str = "1900000400";
const CERT_MCH: &str = "1900000410";
const PK_APP: &str = "wx4000000000000400";
const CERT_APP: &str = "wx4000000000000410";
const APIV3_PK: &str = "v3pk-apiv3-key-0123456789abcdefg";
const APIV3_CERT: &str = "v3ct-apiv3-key-0123456789abcdefg";

/// A v3 merchant of the deployment.
struct V3 {
    name: &'static str,
    app_id: &'static str,
}

const PUBLIC_KEY_SHOP: V3 = V3 {
    name: "pk-shop",
    app_id: PK_APP,
};
const CERT_SHOP: V3 = V3 {
    name: "cert-shop",
    app_id: CERT_APP,
};

/// The merchants file: the two v3 merchants, their key files in `dir` (the
/// sandbox issues the API keys and writes WeChat's public key at its start,
/// as WeChat's merchant platform hands them out).
fn merchants_file(dir: &Path) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    let d = dir.display();
    write!(
        file,
        r#"
[[merchant]]
name = "pk-shop"
api_version = "v3"
app_id = "{PK_APP}"
mch_id = "{PK_MCH}"
apiv3_key = "{APIV3_PK}"
private_key = "{d}/pk_apiclient_key.pem"
serial_no = "4A0C5E2D8B7F61A39C0D2E4F6A8B0C1D2E3F4051"
wechatpay_public_key = "{d}/pk_pub_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_0119000004002026120700000000"

[[merchant]]
name = "cert-shop"
api_version = "v3"
app_id = "{CERT_APP}"
mch_id = "{CERT_MCH}"
apiv3_key = "{APIV3_CERT}"
private_key = "{d}/cert_apiclient_key.pem"
serial_no = "5B1D6F3E9C8072B4AD1E3F507B9C1D2E3F405162"
"#
    )
    .expect("write the merchants file");
    file
}

async fn stack(file: &tempfile::NamedTempFile) -> Stack {
    Stack::start(StackOptions {
        merchants_file: Some(file.path().to_owned()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts with v2 and v3 merchants")
}

fn request(merchant: &str, trade_type: TradeType, tag: &str) -> CreateOrderRequest {
    let mut r = CreateOrderRequest {
        idempotency_key: format!("e2e-v3-{}-{merchant}-{tag}", std::process::id()),
        description: "v3-测试".to_owned(),
        total_fee: 1234,
        client_ip: "203.0.113.9".to_owned(),
        expire_seconds: 1800,
        merchant: merchant.to_owned(),
        trade_type: trade_type as i32,
        ..Default::default()
    };
    match trade_type {
        TradeType::Native => r.product_id = format!("sku-{tag}"),
        _ => r.openid = format!("oPayer-{tag}"),
    }
    r
}

async fn create(stack: &Stack, req: CreateOrderRequest) -> CreateOrderResponse {
    stack
        .payments()
        .await
        .expect("connect")
        .create_order(req.clone())
        .await
        .unwrap_or_else(|s| panic!("CreateOrder {} {:?}: {s:?}", req.merchant, req.trade_type))
        .into_inner()
}

async fn order(stack: &Stack, out_trade_no: &str) -> Order {
    stack
        .payments()
        .await
        .expect("connect")
        .get_order(GetOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
        })
        .await
        .expect("GetOrder")
        .into_inner()
}

/// Verifies a v3 `paySign` the way a reviewer would, with openssl: the
/// merchant's public key (derived from its apiclient_key.pem) over
/// `appId\ntimeStamp\nnonceStr\npackage\n`.
fn openssl_verifies(private_key: &Path, message: &str, signature_b64: &str) -> bool {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let public = dir.path().join("pub.pem");
    let ok = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(private_key)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl runs")
        .success();
    assert!(ok, "openssl derives the public key");
    let sig = dir.path().join("sig.bin");
    let msg = dir.path().join("msg.txt");
    std::fs::write(
        &sig,
        base64::engine::general_purpose::STANDARD
            .decode(signature_b64)
            .expect("paySign is base64"),
    )
    .expect("write");
    std::fs::write(&msg, message).expect("write");
    std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .output()
        .expect("openssl runs")
        .status
        .success()
}

/// Pays `out_trade_no` in the sandbox (its notification goes to the gateway)
/// and returns the first WatchOrder event past NOTPAY.
async fn pay_and_watch(stack: &Stack, out_trade_no: &str) -> wxpay_proto::v1::OrderStatusEvent {
    let mut stream = stack
        .watcher()
        .await
        .expect("connect to the poller")
        .watch_order(WatchOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            timeout_seconds: 60,
            include_refunds: false,
        })
        .await
        .expect("WatchOrder")
        .into_inner();
    let first = stream.message().await.expect("stream").expect("a snapshot");
    assert_eq!(first.status, OrderStatus::Notpay as i32);
    stack
        .sandbox_post(out_trade_no, "pay", serde_json::json!({}))
        .await
        .expect("the sandbox pays");
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("an event within 20 s")
            .expect("stream")
            .expect("an event");
        if event.status != OrderStatus::Notpay as i32 {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_merchants_in_both_key_modes_place_pay_watch_query_and_close_beside_a_v2_one() {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file).await;
    let mut payments = stack.payments().await.expect("connect");
    for (m, key_file) in [
        (&PUBLIC_KEY_SHOP, "pk_apiclient_key.pem"),
        (&CERT_SHOP, "cert_apiclient_key.pem"),
    ] {
        // JSAPI: RSA parameters for wx.requestPayment, checked by openssl.
        let jsapi = create(&stack, request(m.name, TradeType::Jsapi, "j")).await;
        let p = jsapi.payment.clone().expect("JSAPI payment parameters");
        let placed = jsapi.order.clone().expect("an order");
        assert_eq!(placed.merchant, m.name);
        assert_eq!(p.sign_type, "RSA", "{}", m.name);
        assert_eq!(p.app_id, m.app_id);
        assert_eq!(p.package, format!("prepay_id={}", placed.prepay_id));
        let message = format!(
            "{}\n{}\n{}\n{}\n",
            p.app_id, p.time_stamp, p.nonce_str, p.package
        );
        assert!(
            openssl_verifies(&dir.path().join(key_file), &message, &p.pay_sign),
            "{}'s paySign verifies with its public key",
            m.name
        );
        assert!(
            !openssl_verifies(
                &dir.path().join(key_file),
                &message.replace("prepay_id", "prepay_ix"),
                &p.pay_sign
            ),
            "and only over that message"
        );
        let seen = stack
            .sandbox_get(&format!("/sandbox/orders/{}", placed.out_trade_no))
            .await
            .expect("the sandbox has the order");
        assert_eq!(seen["api_version"], "v3", "{} placed over v3", m.name);

        // Paid by a v3 notification, seen on WatchOrder, then QueryOrder agrees.
        let event = pay_and_watch(&stack, &placed.out_trade_no).await;
        assert_eq!(event.status, OrderStatus::Success as i32, "{}", m.name);
        assert_eq!(
            event.source, "NOTIFY",
            "{}: paid by the v3 notification",
            m.name
        );
        assert!(!event.transaction_id.is_empty());
        let queried = payments
            .query_order(QueryOrderRequest {
                out_trade_no: placed.out_trade_no.clone(),
            })
            .await
            .expect("QueryOrder over v3")
            .into_inner();
        assert_eq!(queried.status, OrderStatus::Success as i32);
        assert_eq!(queried.transaction_id, event.transaction_id);
        // A paid order cannot be closed.
        let refused = payments
            .close_order(CloseOrderRequest {
                out_trade_no: placed.out_trade_no.clone(),
            })
            .await
            .expect_err("a paid order is not closed");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

        // NATIVE: a code_url; then closed at WeChat and here.
        let native = create(&stack, request(m.name, TradeType::Native, "n")).await;
        assert!(
            native.code_url.starts_with("weixin://"),
            "{}",
            native.code_url
        );
        let n = native.order.expect("an order");
        let closed = payments
            .close_order(CloseOrderRequest {
                out_trade_no: n.out_trade_no.clone(),
            })
            .await
            .expect("CloseOrder over v3")
            .into_inner();
        assert_eq!(closed.status, OrderStatus::Closed as i32);
        let at_wechat = stack
            .sandbox_get(&format!("/sandbox/orders/{}", n.out_trade_no))
            .await
            .expect("the sandbox has it");
        assert_eq!(at_wechat["status"], "CLOSED");
    }
    // The v2 merchant beside them still pays over v2.
    let v2 = create(&stack, request("", TradeType::Jsapi, "v2")).await;
    let p = v2.payment.expect("JSAPI parameters");
    assert_eq!(p.sign_type, "HMAC-SHA256");
    let placed = v2.order.expect("an order");
    let event = pay_and_watch(&stack, &placed.out_trade_no).await;
    assert_eq!(event.status, OrderStatus::Success as i32);
    assert_eq!(event.source, "NOTIFY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_platform_certificate_is_picked_up_with_no_failed_call() {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file).await;
    let mut payments = stack.payments().await.expect("connect");
    for round in 0..4 {
        if round == 2 {
            // WeChat starts signing with a new certificate (the old stays
            // listed): the next answer and the next notification name a serial
            // neither service has seen, and both must be believed after one
            // download (WeChat itself lists a new certificate days ahead; the
            // sandbox switches at once, the harder case).
            stack
                .sandbox_control("/sandbox/v3/certificates/rotate", serde_json::json!({}))
                .await
                .expect("the sandbox rotates");
        }
        let created = create(
            &stack,
            request(CERT_SHOP.name, TradeType::Native, &format!("rot{round}")),
        )
        .await;
        let o = created.order.expect("an order");
        let event = pay_and_watch(&stack, &o.out_trade_no).await;
        assert_eq!(event.status, OrderStatus::Success as i32, "round {round}");
        assert_eq!(
            event.source, "NOTIFY",
            "round {round}: the notification was believed"
        );
        let queried = payments
            .query_order(QueryOrderRequest {
                out_trade_no: o.out_trade_no.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("round {round}: QueryOrder: {s:?}"))
            .into_inner();
        assert_eq!(queried.status, OrderStatus::Success as i32);
    }
    let mut db = PgConnection::connect(&stack.database_url)
        .await
        .expect("db");
    let kept: i64 =
        sqlx::query_scalar("SELECT count(*) FROM wechat_platform_certificates WHERE mch_id = $1")
            .bind(CERT_MCH)
            .fetch_one(&mut db)
            .await
            .expect("count certificates");
    assert_eq!(kept, 2, "the old certificate and the new, kept by serial");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_probe_and_unknown_key_v3_notifications_change_and_store_nothing() {
    use wxpay_core::wechat::v3::{verify, MerchantSigner};
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file).await;
    let created = create(
        &stack,
        request(PUBLIC_KEY_SHOP.name, TradeType::Jsapi, "forged"),
    )
    .await;
    let o = created.order.expect("an order");
    let mut db = PgConnection::connect(&stack.database_url)
        .await
        .expect("db");
    let count = |table: &'static str| format!("SELECT count(*) FROM {table}");
    let before: (i64, i64) = (
        sqlx::query_scalar(&count("notifications"))
            .fetch_one(&mut db)
            .await
            .expect("count"),
        sqlx::query_scalar(&count("order_events"))
            .fetch_one(&mut db)
            .await
            .expect("count"),
    );
    // A body that claims the order is paid, signed with a key that is not
    // WeChat's (the merchant's own API key, which an insider might hold).
    let own = MerchantSigner::from_pem(
        &std::fs::read(dir.path().join("pk_apiclient_key.pem")).expect("the issued key"),
        "own",
    )
    .expect("a PKCS#8 key");
    let body = serde_json::json!({
        "id": "EV-forged", "create_time": "2026-12-07T10:00:00+08:00",
        "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource", "summary": "支付成功",
        "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": "AAAA", "associated_data": "transaction",
                     "nonce": "0123456789ab", "original_type": "transaction"}
    })
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let sign = |ts: i64| {
        own.sign(&verify::message(
            &ts.to_string(),
            "nonce-1",
            body.as_bytes(),
        ))
        .expect("sign")
    };
    let public_key_id = "PUB_KEY_ID_0119000004002026120700000000";
    let cases = [
        ("forged", public_key_id.to_owned(), sign(now), now),
        (
            "stale",
            public_key_id.to_owned(),
            sign(now - 600),
            now - 600,
        ),
        (
            "probe",
            public_key_id.to_owned(),
            "WECHATPAY/SIGNTEST/abc".to_owned(),
            now,
        ),
        ("unknown key", "0123456789ABCDEF".to_owned(), sign(now), now),
    ];
    let http = reqwest::Client::new();
    for (what, serial, signature, ts) in cases {
        let res = http
            .post(format!("{}/wechat/v3/pay/notify", stack.gateway_url))
            .header("content-type", "application/json")
            .header("wechatpay-serial", serial)
            .header("wechatpay-signature", signature)
            .header("wechatpay-timestamp", ts.to_string())
            .header("wechatpay-nonce", "nonce-1")
            .header("wechatpay-signature-type", "WECHATPAY2-SHA256-RSA2048")
            .body(body.clone())
            .send()
            .await
            .expect("the gateway answers");
        assert!(res.status().is_client_error(), "{what}: {}", res.status());
        let reply: serde_json::Value = res.json().await.expect("a JSON body");
        assert_eq!(reply["code"], "FAIL", "{what}");
    }
    let after: (i64, i64) = (
        sqlx::query_scalar(&count("notifications"))
            .fetch_one(&mut db)
            .await
            .expect("count"),
        sqlx::query_scalar(&count("order_events"))
            .fetch_one(&mut db)
            .await
            .expect("count"),
    );
    assert_eq!(after, before, "nothing stored, no event");
    assert_eq!(
        order(&stack, &o.out_trade_no).await.status,
        OrderStatus::Notpay as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_a_bad_signature_is_not_believed_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("a key directory");
    let file = merchants_file(dir.path());
    let stack = stack(&file).await;
    let mut payments = stack.payments().await.expect("connect");
    let created = create(
        &stack,
        request(PUBLIC_KEY_SHOP.name, TradeType::Native, "badsig"),
    )
    .await;
    let o = created.order.expect("an order");
    // Paid at WeChat, its notification lost: only a query can tell.
    stack
        .sandbox_post(
            &o.out_trade_no,
            "pay",
            serde_json::json!({"delivery": "drop"}),
        )
        .await
        .expect("the sandbox pays");
    stack
        .sandbox_faults(serde_json::json!({"bad_signature": 3}))
        .await
        .expect("arm the fault");
    let refused = payments
        .query_order(QueryOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect_err("an answer that does not verify is not believed");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    let still = order(&stack, &o.out_trade_no).await;
    assert_eq!(
        still.status,
        OrderStatus::Notpay as i32,
        "nothing stored from it"
    );
    assert_eq!(still.version, o.version);
    stack
        .sandbox_faults(serde_json::json!({"bad_signature": 0}))
        .await
        .expect("disarm");
    let queried = payments
        .query_order(QueryOrderRequest {
            out_trade_no: o.out_trade_no.clone(),
        })
        .await
        .expect("a genuine answer")
        .into_inner();
    assert_eq!(queried.status, OrderStatus::Success as i32);
}
