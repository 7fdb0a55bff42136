//! Issue 15's "done when", end to end: one split deployment (the four real
//! binaries, configured by the environment and a merchants file) pays JSAPI,
//! NATIVE, APP and MWEB orders for two merchants, one direct (HMAC-SHA256) and
//! one in service-provider mode (MD5, a sub merchant with its own appid),
//! against the sandbox. Every signature the product hands out is checked here
//! with this file's own MD5 / HMAC-SHA256, never the product's signer; every
//! notification is verified by the gateway with the key of the merchant it
//! names, and the order is SUCCESS only if that worked.

use std::{io::Write, time::Duration};

use e2e_tests::{Stack, StackOptions, API_KEY, APP_ID, MCH_ID};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use wxpay_proto::v1::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, Order, OrderStatus,
    QueryOrderRequest, TradeType,
};

const PROVIDER_APP_ID: &str = "wxfedcba9876543210";
const PROVIDER_MCH_ID: &str = "1900000300";
const PROVIDER_KEY: &str = "providerkey0123456789abcdefghijk";
const SUB_MCH_ID: &str = "1900000301";
const SUB_APP_ID: &str = "wx1111111111111111";
const SCENE: &str =
    r#"{"h5_info":{"type":"Wap","wap_url":"https://m.shop.example","wap_name":"shop"}}"#;

/// WeChat's v2 signature, written out here: the non-empty fields but `sign`,
/// sorted by name, `k=v` joined with `&`, then `&key=`; MD5 or HMAC-SHA256
/// (keyed with the API key), upper-case hex.
fn signature(fields: &[(&str, &str)], key: &str, sign_type: &str) -> String {
    let mut pairs: Vec<_> = fields
        .iter()
        .filter(|(k, v)| !v.is_empty() && *k != "sign")
        .collect();
    pairs.sort();
    let mut text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    text.push_str("&key=");
    text.push_str(key);
    match sign_type {
        "MD5" => hex::encode_upper(Md5::digest(text.as_bytes())),
        "HMAC-SHA256" => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key");
            mac.update(text.as_bytes());
            hex::encode_upper(mac.finalize().into_bytes())
        }
        other => panic!("unknown sign type {other}"),
    }
}

struct Merchant {
    name: &'static str,
    key: &'static str,
    sign_type: &'static str,
    /// The app a JSAPI payer by sub_openid, and an APP payment, belong to.
    pay_app_id: &'static str,
    /// The mch_id an APP payment names (the payee).
    payee: &'static str,
    /// JSAPI payers: openid under the merchant's appid, or sub_openid.
    sub_openid: bool,
}

const DIRECT: Merchant = Merchant {
    name: "",
    key: API_KEY,
    sign_type: "HMAC-SHA256",
    pay_app_id: APP_ID,
    payee: MCH_ID,
    sub_openid: false,
};

const PLATFORM: Merchant = Merchant {
    name: "platform",
    key: PROVIDER_KEY,
    sign_type: "MD5",
    pay_app_id: SUB_APP_ID,
    payee: SUB_MCH_ID,
    sub_openid: true,
};

fn merchants_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    write!(
        file,
        r#"
[[merchant]]
name = "platform"
app_id = "{PROVIDER_APP_ID}"
mch_id = "{PROVIDER_MCH_ID}"
api_key = "{PROVIDER_KEY}"
sign_type = "MD5"
sub_mch_id = "{SUB_MCH_ID}"
sub_app_id = "{SUB_APP_ID}"
"#
    )
    .expect("write the merchants file");
    file
}

fn request(m: &Merchant, trade_type: TradeType, n: u32) -> CreateOrderRequest {
    let payer = format!("oPayer-{n}");
    let mut r = CreateOrderRequest {
        idempotency_key: format!("e2e-merchants-{}-{n}", std::process::id()),
        description: "多商户-测试".to_owned(),
        total_fee: 100 + i64::from(n),
        client_ip: "203.0.113.5".to_owned(),
        expire_seconds: 1800,
        merchant: m.name.to_owned(),
        trade_type: trade_type as i32,
        ..Default::default()
    };
    match trade_type {
        TradeType::Jsapi if m.sub_openid => r.sub_openid = payer,
        TradeType::Jsapi => r.openid = payer,
        TradeType::Native => r.product_id = format!("sku-{n}"),
        TradeType::Mweb => r.scene_info = SCENE.to_owned(),
        _ => {}
    }
    r
}

/// Checks what CreateOrder handed out for `trade_type`, independently.
fn check_payment_data(m: &Merchant, trade_type: TradeType, reply: &CreateOrderResponse) {
    let present = [
        reply.payment.is_some(),
        reply.app_payment.is_some(),
        !reply.code_url.is_empty(),
        !reply.mweb_url.is_empty(),
    ];
    let expected = match trade_type {
        TradeType::Jsapi => [true, false, false, false],
        TradeType::App => [false, true, false, false],
        TradeType::Native => [false, false, true, false],
        TradeType::Mweb => [false, false, false, true],
        TradeType::Unspecified => unreachable!("the test asks for each type by name"),
    };
    assert_eq!(present, expected, "{trade_type:?} of {:?}", m.name);
    let order = reply.order.as_ref().expect("an order");
    if let Some(p) = &reply.payment {
        assert_eq!(p.app_id, m.pay_app_id, "the mini program that pays");
        assert_eq!(p.sign_type, m.sign_type);
        assert_eq!(p.package, format!("prepay_id={}", order.prepay_id));
        let expected = signature(
            &[
                ("appId", &p.app_id),
                ("timeStamp", &p.time_stamp),
                ("nonceStr", &p.nonce_str),
                ("package", &p.package),
                ("signType", &p.sign_type),
            ],
            m.key,
            m.sign_type,
        );
        assert_eq!(p.pay_sign, expected, "paySign of {:?}", m.name);
    }
    if let Some(a) = &reply.app_payment {
        assert_eq!(a.appid, m.pay_app_id);
        assert_eq!(a.partnerid, m.payee);
        assert_eq!(a.prepayid, order.prepay_id);
        assert_eq!(a.package, "Sign=WXPay");
        let expected = signature(
            &[
                ("appid", &a.appid),
                ("partnerid", &a.partnerid),
                ("prepayid", &a.prepayid),
                ("package", &a.package),
                ("noncestr", &a.noncestr),
                ("timestamp", &a.timestamp),
            ],
            m.key,
            m.sign_type,
        );
        assert_eq!(a.sign, expected, "APP sign of {:?}", m.name);
    }
    if !reply.code_url.is_empty() {
        assert!(
            reply.code_url.starts_with("weixin://"),
            "{}",
            reply.code_url
        );
    }
    if !reply.mweb_url.is_empty() {
        assert!(reply.mweb_url.starts_with("https://"), "{}", reply.mweb_url);
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_pays_every_trade_type_for_a_direct_and_a_service_provider_merchant() {
    let file = merchants_file();
    let stack = Stack::start(StackOptions {
        merchants_file: Some(file.path().to_owned()),
        ..StackOptions::default()
    })
    .await
    .expect("the stack starts with a merchants file");
    let mut payments = stack.payments().await.expect("connect");
    let kinds = [
        TradeType::Jsapi,
        TradeType::Native,
        TradeType::App,
        TradeType::Mweb,
    ];
    let mut placed = Vec::new();
    let mut n = 0;
    for m in [&DIRECT, &PLATFORM] {
        for trade_type in kinds {
            n += 1;
            let req = request(m, trade_type, n);
            let reply = payments
                .create_order(req.clone())
                .await
                .unwrap_or_else(|s| panic!("CreateOrder {trade_type:?} {:?}: {s:?}", m.name))
                .into_inner();
            check_payment_data(m, trade_type, &reply);
            let order = reply.order.clone().expect("an order");
            assert_eq!(order.trade_type, trade_type as i32);
            let expected_name = if m.name.is_empty() { "default" } else { m.name };
            assert_eq!(order.merchant, expected_name);
            // What the sandbox (WeChat) was asked: the sub merchant, the trade
            // type and, for NATIVE and MWEB, the URL we hand out is its own.
            let seen = stack
                .sandbox_get(&format!("/sandbox/orders/{}", order.out_trade_no))
                .await
                .expect("the sandbox has the order");
            assert_eq!(
                seen["trade_type"],
                trade_type.as_str_name().trim_start_matches("TRADE_TYPE_")
            );
            let sub = if m.sub_openid {
                serde_json::json!(SUB_MCH_ID)
            } else {
                serde_json::Value::Null
            };
            assert_eq!(seen["sub_mch_id"], sub, "{:?}", m.name);
            assert_eq!(seen["sign_type"], m.sign_type);
            if !reply.code_url.is_empty() {
                assert_eq!(seen["code_url"], reply.code_url.as_str());
            }
            if !reply.mweb_url.is_empty() {
                assert_eq!(seen["mweb_url"], reply.mweb_url.as_str());
            }
            // The same request again is the same order with the same payment data.
            let again = payments
                .create_order(req)
                .await
                .expect("an idempotent retry")
                .into_inner();
            assert_eq!(again.order.expect("order").out_trade_no, order.out_trade_no);
            assert_eq!(again.code_url, reply.code_url);
            assert_eq!(again.mweb_url, reply.mweb_url);
            placed.push((m, trade_type, order));
        }
    }

    // Each payer pays as WeChat's client would (a JSAPI payer is the order's
    // own; a scan, an app or a browser brings a fresh one). The sandbox signs
    // each notification with its merchant's key; only the gateway's check
    // with that merchant's key makes the order SUCCESS.
    for (_, _, o) in &placed {
        stack
            .sandbox_post(&o.out_trade_no, "pay", serde_json::json!({}))
            .await
            .expect("paid in the sandbox");
    }
    for (m, trade_type, o) in &placed {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = order(&stack, &o.out_trade_no).await;
            if now.status == OrderStatus::Success as i32 {
                assert!(!now.transaction_id.is_empty());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{trade_type:?} of {:?} never became SUCCESS: {now:?}",
                m.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // orderquery goes to the order's own merchant (the sandbox refuses a
    // provider's request that does not name the sub merchant).
    for (m, trade_type, o) in &placed {
        let queried = payments
            .query_order(QueryOrderRequest {
                out_trade_no: o.out_trade_no.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("QueryOrder {trade_type:?} {:?}: {s:?}", m.name))
            .into_inner();
        assert_eq!(queried.status, OrderStatus::Success as i32);
    }

    // A request the merchant or trade type cannot serve is refused, naming the field.
    for (bad, field) in [
        (
            CreateOrderRequest {
                merchant: "nobody".into(),
                ..request(&DIRECT, TradeType::Jsapi, 90)
            },
            "merchant",
        ),
        (
            CreateOrderRequest {
                product_id: String::new(),
                ..request(&DIRECT, TradeType::Native, 91)
            },
            "product_id",
        ),
        (
            CreateOrderRequest {
                scene_info: "{}".into(),
                ..request(&PLATFORM, TradeType::Mweb, 92)
            },
            "scene_info",
        ),
        (
            CreateOrderRequest {
                sub_openid: "oSomeone".into(),
                ..request(&DIRECT, TradeType::App, 93)
            },
            "sub_openid",
        ),
        (
            // sub_openid needs a merchant with a sub_app_id.
            CreateOrderRequest {
                openid: String::new(),
                sub_openid: "oSomeone".into(),
                ..request(&DIRECT, TradeType::Jsapi, 94)
            },
            "sub_openid",
        ),
    ] {
        let status = payments.create_order(bad).await.expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{field}: {}",
            status.message()
        );
    }
    // The same key with another merchant is another order's terms: refused.
    let status = payments
        .create_order(CreateOrderRequest {
            merchant: "platform".into(),
            ..request(&DIRECT, TradeType::Native, 2)
        })
        .await
        .expect_err("the key is taken by default's order");
    assert_eq!(status.code(), tonic::Code::AlreadyExists);
    assert!(
        status.message().contains("merchant"),
        "{}",
        status.message()
    );
}
