//! Several merchants in one sandbox, from a merchants file: the default
//! merchant (MD5), a second direct merchant signing with HMAC-SHA256, and a
//! service provider with one sub merchant. Every request is signed here by
//! hand and every reply and notification verified with the key of the account
//! it must come from, independently of the sandbox's signer.

mod common;

use std::time::Duration;

use common::{field, new_out_trade_no, Receiver};
use payment_service::wechat::ClientTls;
use secrecy::ExposeSecret;
use wechat_sandbox::{PayOptions, SandboxConfig, SandboxHandle};
use wxpay_core::{
    domain::Nonce,
    wechat::{parse_merchants, sign, xml, ApiKey, Fields, Merchant, SignType},
};

const SHOP_KEY: &str = "shopkey0123456789abcdefghijklmno";
const PROVIDER_KEY: &str = "providerkey0123456789abcdefghijk";
const SUB_MCH_ID: &str = "1900000201";
const SUB_APP_ID: &str = "wx2222222222222222";

/// The product's own file format, parsed by the product's own parser.
fn merchants_file() -> String {
    format!(
        r#"
[[merchant]]
name = "shop"
app_id = "wx3333333333333333"
mch_id = "1900000300"
api_key = "{SHOP_KEY}"
sign_type = "HMAC-SHA256"

[[merchant]]
name = "tenant"
app_id = "wx1111111111111111"
mch_id = "1900000200"
api_key_env = "PROVIDER_KEY"
sub_mch_id = "{SUB_MCH_ID}"
sub_app_id = "{SUB_APP_ID}"
"#
    )
}

async fn sandbox() -> SandboxHandle {
    let entries = parse_merchants(&merchants_file(), |var| {
        (var == "PROVIDER_KEY").then(|| PROVIDER_KEY.to_owned())
    })
    .expect("a valid merchants file");
    wechat_sandbox::spawn(SandboxConfig::for_tests().with_merchants(&entries)).await
}

fn default_merchant(sandbox: &SandboxHandle) -> Merchant {
    sandbox.merchant().clone()
}

fn shop() -> Merchant {
    Merchant {
        app_id: "wx3333333333333333".into(),
        mch_id: "1900000300".into(),
        api_key: ApiKey::parse(SHOP_KEY).expect("key"),
    }
}

fn provider() -> Merchant {
    Merchant {
        app_id: "wx1111111111111111".into(),
        mch_id: "1900000200".into(),
        api_key: ApiKey::parse(PROVIDER_KEY).expect("key"),
    }
}

/// `pairs` plus `as_`'s appid and mch_id and a nonce, signed with `key`.
fn signed(as_: &Merchant, key: &ApiKey, sign_type: SignType, pairs: &[(&str, &str)]) -> String {
    let mut fields: Fields = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    fields.insert("appid".into(), as_.app_id.clone());
    fields.insert("mch_id".into(), as_.mch_id.clone());
    fields.insert("nonce_str".into(), Nonce::generate().as_str().into());
    sign::sign_fields(&mut fields, key, sign_type);
    xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodes")
}

async fn post(http: &reqwest::Client, url: String, body: String) -> Fields {
    let reply = http
        .post(url)
        .body(body)
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("reply");
    xml::decode(&reply).expect("XML")
}

/// A request as `m`, signed with its own key; the reply must be signed by it too.
async fn call(
    sandbox: &SandboxHandle,
    m: &Merchant,
    sign_type: SignType,
    path: &str,
    pairs: &[(&str, &str)],
) -> Fields {
    let url = format!("{}{path}", sandbox.base_url());
    let reply = post(
        &reqwest::Client::new(),
        url,
        signed(m, &m.api_key, sign_type, pairs),
    )
    .await;
    if reply.contains_key("sign") {
        assert_eq!(
            sign::verify(&reply, &m.api_key, sign_type),
            Ok(()),
            "{reply:?}"
        );
    }
    reply
}

fn jsapi<'a>(no: &'a str, notify_url: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("body", "测试商品"),
        ("out_trade_no", no),
        ("total_fee", "100"),
        ("spbill_create_ip", "127.0.0.1"),
        ("notify_url", notify_url),
        ("trade_type", "JSAPI"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
    ]
}

fn with<'a>(
    mut pairs: Vec<(&'a str, &'a str)>,
    changes: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    for (k, v) in changes {
        pairs.retain(|(key, _)| key != k);
        if !v.is_empty() {
            pairs.push((k, v));
        }
    }
    pairs
}

fn dropped() -> PayOptions {
    PayOptions {
        notify: wechat_sandbox::NotifyOptions {
            delivery: wechat_sandbox::Delivery::Drop,
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn each_account_signs_its_replies_and_notifications_with_its_own_key() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let default = default_merchant(&sandbox);
    let shop = shop();
    let (a, b) = (new_out_trade_no(), new_out_trade_no());

    let reply_a = call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/unifiedorder",
        &jsapi(&a, &receiver.url),
    )
    .await;
    let reply_b = call(
        &sandbox,
        &shop,
        SignType::HmacSha256,
        "/pay/unifiedorder",
        &jsapi(&b, &receiver.url),
    )
    .await;
    assert_eq!(field(&reply_a, "result_code"), "SUCCESS", "{reply_a:?}");
    assert_eq!(field(&reply_b, "result_code"), "SUCCESS", "{reply_b:?}");
    assert_eq!(field(&reply_b, "mch_id"), "1900000300");
    // Neither reply verifies with the other account's key.
    assert!(sign::verify(&reply_b, &default.api_key, SignType::HmacSha256).is_err());
    assert!(sign::verify(&reply_a, &shop.api_key, SignType::Md5).is_err());

    sandbox.pay(&a, PayOptions::default()).await.expect("paid");
    sandbox.pay(&b, PayOptions::default()).await.expect("paid");
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen.len(), 2);
    for (no, m, sign_type) in [
        (&a, &default, SignType::Md5),
        (&b, &shop, SignType::HmacSha256),
    ] {
        let n = seen
            .iter()
            .find(|n| field(n, "out_trade_no") == no.as_str())
            .expect("notified");
        assert_eq!(sign::verify(n, &m.api_key, sign_type), Ok(()), "{n:?}");
        assert_eq!(field(n, "appid"), m.app_id);
        assert_eq!(field(n, "mch_id"), m.mch_id);
        assert_eq!(field(n, "trade_type"), "JSAPI");
        assert!(!n.contains_key("sub_mch_id"), "{n:?}");
    }
    let view = sandbox.order(&b).await.expect("order");
    assert_eq!(
        (view.mch_id.as_str(), view.sub_mch_id.as_deref()),
        ("1900000300", None)
    );
}

#[tokio::test]
async fn a_request_signed_with_one_accounts_key_naming_another_is_refused() {
    let sandbox = sandbox().await;
    let default = default_merchant(&sandbox);
    let no = new_out_trade_no();
    let url = format!("{}/pay/unifiedorder", sandbox.base_url());
    let http = reqwest::Client::new();

    // The shop's mch_id and appid, signed with the default merchant's key.
    let forged = signed(
        &shop(),
        &default.api_key,
        SignType::Md5,
        &jsapi(&no, "http://127.0.0.1:9/n"),
    );
    let reply = post(&http, url.clone(), forged).await;
    assert_eq!(field(&reply, "return_code"), "FAIL", "{reply:?}");
    assert_eq!(field(&reply, "return_msg"), "SIGNERROR");
    assert!(sandbox.order(&no).await.is_err(), "nothing was placed");

    // A mch_id nobody hosts: refused, and unsigned (there is no key to sign with).
    let stranger = Merchant {
        mch_id: "1999999999".into(),
        ..default.clone()
    };
    let reply = post(
        &http,
        url,
        signed(
            &stranger,
            &default.api_key,
            SignType::Md5,
            &jsapi(&no, "http://127.0.0.1:9/n"),
        ),
    )
    .await;
    assert_eq!(field(&reply, "err_code"), "MCHID_NOT_EXIST", "{reply:?}");
    assert!(!reply.contains_key("sign"));
}

#[tokio::test]
async fn orders_are_not_found_by_another_account() {
    let sandbox = sandbox().await;
    let default = default_merchant(&sandbox);
    let shop = shop();
    let no = new_out_trade_no();
    let placed = call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/unifiedorder",
        &jsapi(&no, "http://127.0.0.1:9/n"),
    )
    .await;
    assert_eq!(field(&placed, "result_code"), "SUCCESS");
    sandbox
        .age(&no, Duration::from_secs(600))
        .await
        .expect("aged");

    for path in ["/pay/orderquery", "/pay/closeorder"] {
        let reply = call(
            &sandbox,
            &shop,
            SignType::HmacSha256,
            path,
            &[("out_trade_no", &no)],
        )
        .await;
        assert_eq!(
            field(&reply, "err_code"),
            "ORDERNOTEXIST",
            "{path}: {reply:?}"
        );
    }
    // The owner still finds it, open: the other account's closeorder changed nothing.
    let mine = call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/orderquery",
        &[("out_trade_no", &no)],
    )
    .await;
    assert_eq!(field(&mine, "trade_state"), "NOTPAY", "{mine:?}");
    // The sandbox keeps out_trade_no unique across accounts (a documented deviation).
    let reused = call(
        &sandbox,
        &shop,
        SignType::HmacSha256,
        "/pay/unifiedorder",
        &jsapi(&no, "http://127.0.0.1:9/n"),
    )
    .await;
    assert_eq!(
        field(&reused, "err_code"),
        "OUT_TRADE_NO_USED",
        "{reused:?}"
    );
}

#[tokio::test]
async fn service_provider_orders_carry_the_sub_merchant_in_replies_and_notifications() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let provider = provider();
    let no = new_out_trade_no();
    let order = with(
        jsapi(&no, &receiver.url),
        &[
            ("openid", ""),
            ("sub_mch_id", SUB_MCH_ID),
            ("sub_appid", SUB_APP_ID),
            ("sub_openid", "oSubOpenid0123456789abcdefgh"),
        ],
    );

    let reply = call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/unifiedorder",
        &order,
    )
    .await;
    assert_eq!(field(&reply, "result_code"), "SUCCESS", "{reply:?}");
    assert_eq!(field(&reply, "sub_mch_id"), SUB_MCH_ID);
    assert_eq!(field(&reply, "sub_appid"), SUB_APP_ID);

    // Without a sub merchant, or with one bound to no one, the provider is refused.
    let other = new_out_trade_no();
    let bare = with(jsapi(&other, &receiver.url), &[]);
    let reply = call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/unifiedorder",
        &bare,
    )
    .await;
    assert_eq!(
        (field(&reply, "return_code"), field(&reply, "return_msg")),
        ("FAIL", "受理机构必须传入sub_mch_id")
    );
    let unbound = with(
        jsapi(&other, &receiver.url),
        &[("sub_mch_id", "1900000999")],
    );
    let reply = call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/unifiedorder",
        &unbound,
    )
    .await;
    assert_eq!(field(&reply, "err_code"), "INVALID_REQUEST", "{reply:?}");
    // A direct merchant cannot name a sub merchant at all.
    let default = default_merchant(&sandbox);
    let reply = call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/unifiedorder",
        &unbound,
    )
    .await;
    assert_eq!(field(&reply, "return_msg"), "普通商户不允许传sub_mch_id");

    let view = sandbox.pay(&no, PayOptions::default()).await.expect("paid");
    assert_eq!(view.sub_mch_id.as_deref(), Some(SUB_MCH_ID));
    let seen = receiver.wait_for(1).await;
    let n = seen.first().expect("notified");
    assert_eq!(sign::verify(n, &provider.api_key, SignType::Md5), Ok(()));
    assert_eq!(field(n, "mch_id"), provider.mch_id);
    assert_eq!(field(n, "appid"), provider.app_id);
    assert_eq!(field(n, "sub_mch_id"), SUB_MCH_ID);
    assert_eq!(field(n, "sub_appid"), SUB_APP_ID);
    assert_eq!(field(n, "sub_openid"), "oSubOpenid0123456789abcdefgh");
    assert_eq!(field(n, "sub_is_subscribe"), "N");
    assert_eq!(field(n, "trade_type"), "JSAPI");
    // WeChat names the payer under the provider's appid too.
    assert_eq!(field(n, "openid").len(), 28, "{n:?}");

    // orderquery finds it only for the sub merchant it belongs to.
    let found = call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/orderquery",
        &[("out_trade_no", &no), ("sub_mch_id", SUB_MCH_ID)],
    )
    .await;
    assert_eq!(field(&found, "trade_state"), "SUCCESS", "{found:?}");
    assert_eq!(field(&found, "sub_openid"), "oSubOpenid0123456789abcdefgh");
}

#[tokio::test]
async fn each_trade_type_replies_with_its_payment_data() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let shop = shop();
    let place = |pairs: Vec<(&'static str, &'static str)>, no: String| {
        let sandbox = &sandbox;
        let shop = &shop;
        let url = receiver.url.clone();
        async move {
            let mut pairs: Vec<(&str, &str)> = pairs;
            let base = jsapi(&no, &url);
            let mut all = with(base, &[("openid", "")]);
            all.retain(|(k, _)| !pairs.iter().any(|(p, _)| p == k));
            all.append(&mut pairs);
            call(
                sandbox,
                shop,
                SignType::HmacSha256,
                "/pay/unifiedorder",
                &all,
            )
            .await
        }
    };

    let native_no = new_out_trade_no();
    let native = place(
        vec![("trade_type", "NATIVE"), ("product_id", "SKU42")],
        native_no.clone(),
    )
    .await;
    assert_eq!(field(&native, "result_code"), "SUCCESS", "{native:?}");
    assert_eq!(field(&native, "trade_type"), "NATIVE");
    let code_url = field(&native, "code_url");
    assert!(
        code_url.starts_with("weixin://wxpay/bizpayurl?pr=") && code_url.len() > 28,
        "{code_url}"
    );
    let again = place(
        vec![("trade_type", "NATIVE"), ("product_id", "SKU42")],
        native_no.clone(),
    )
    .await;
    assert_eq!(field(&again, "code_url"), code_url, "the same order again");
    let no_product = place(vec![("trade_type", "NATIVE")], new_out_trade_no()).await;
    assert_eq!(
        field(&no_product, "err_code"),
        "LACK_PARAMS",
        "{no_product:?}"
    );

    let app = place(vec![("trade_type", "APP")], new_out_trade_no()).await;
    assert_eq!(field(&app, "trade_type"), "APP");
    assert!(field(&app, "prepay_id").starts_with("wx"), "{app:?}");
    assert!(!app.contains_key("code_url") && !app.contains_key("mweb_url"));

    let scene = r#"{"h5_info":{"type":"Wap","wap_url":"https://shop.example","wap_name":"shop"}}"#;
    let h5 = place(
        vec![("trade_type", "MWEB"), ("scene_info", scene)],
        new_out_trade_no(),
    )
    .await;
    let mweb_url = field(&h5, "mweb_url");
    let prefix = format!(
        "https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={}&package=",
        field(&h5, "prepay_id")
    );
    assert!(mweb_url.starts_with(&prefix), "{h5:?}");
    let no_scene = place(vec![("trade_type", "MWEB")], new_out_trade_no()).await;
    assert_eq!(field(&no_scene, "err_code"), "LACK_PARAMS", "{no_scene:?}");
    let bad_scene = place(
        vec![("trade_type", "MWEB"), ("scene_info", "{}")],
        new_out_trade_no(),
    )
    .await;
    assert_eq!(
        field(&bad_scene, "err_code"),
        "PARAM_ERROR",
        "{bad_scene:?}"
    );

    // A scan pays the NATIVE order: the payer is whoever the control API says.
    let view = sandbox
        .pay(
            &native_no,
            PayOptions {
                openid: Some("oScanner0123456789abcdefghij".into()),
                ..Default::default()
            },
        )
        .await
        .expect("paid");
    assert_eq!(view.trade_type, "NATIVE");
    assert_eq!(view.code_url.as_deref(), Some(code_url));
    assert_eq!(view.product_id.as_deref(), Some("SKU42"));
    let seen = receiver.wait_for(1).await;
    let n = seen.first().expect("notified");
    assert_eq!(sign::verify(n, &shop.api_key, SignType::HmacSha256), Ok(()));
    assert_eq!(field(n, "openid"), "oScanner0123456789abcdefghij");
    assert_eq!(field(n, "trade_type"), "NATIVE");
}

#[tokio::test]
async fn a_jsapi_order_is_paid_only_by_its_own_payer() {
    let sandbox = sandbox().await;
    let default = default_merchant(&sandbox);
    let no = new_out_trade_no();
    call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/unifiedorder",
        &jsapi(&no, "http://127.0.0.1:9/n"),
    )
    .await;
    let other = PayOptions {
        openid: Some("oSomeoneElse".into()),
        ..dropped()
    };
    let refused = sandbox.pay(&no, other).await.expect_err("another payer");
    assert_eq!(refused.status(), Some(409));
    let own = PayOptions {
        openid: Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into()),
        ..dropped()
    };
    sandbox.pay(&no, own).await.expect("its own payer");
}

/// `/secapi/` as the account `m`: its request over TLS with `tls`.
async fn refund_as(
    sandbox: &SandboxHandle,
    tls: &ClientTls,
    m: &Merchant,
    sign_type: SignType,
    pairs: &[(&str, &str)],
) -> Fields {
    let http = common::http_client(tls);
    let url = format!("{}/secapi/pay/refund", sandbox.https_url());
    post(&http, url, signed(m, &m.api_key, sign_type, pairs)).await
}

fn tls_of(sandbox: &SandboxHandle, mch_id: &str) -> ClientTls {
    let files = sandbox.tls_files();
    let client = files.client_for(mch_id).expect("issued for every account");
    assert!(client.cert_path().exists() && client.p12_path().exists());
    assert_eq!(client.p12_password(), mch_id);
    ClientTls::from_pem(
        client.cert_pem().as_bytes(),
        client.key_pem().expose_secret().as_bytes(),
    )
    .expect("the issued certificate and key")
    .with_extra_root(files.ca_pem().as_bytes())
    .expect("the sandbox's CA")
}

#[tokio::test]
async fn refunds_need_the_client_certificate_of_the_account_they_name() {
    let sandbox = sandbox().await;
    let shop = shop();
    let default = default_merchant(&sandbox);
    let no = new_out_trade_no();
    call(
        &sandbox,
        &shop,
        SignType::HmacSha256,
        "/pay/unifiedorder",
        &jsapi(&no, "http://127.0.0.1:9/n"),
    )
    .await;
    sandbox.pay(&no, dropped()).await.expect("paid");
    let refund = [
        ("out_trade_no", no.as_str()),
        ("out_refund_no", "RF-shop-1"),
        ("total_fee", "100"),
        ("refund_fee", "30"),
    ];

    // The default merchant's certificate does not speak for the shop.
    let wrong = refund_as(
        &sandbox,
        &tls_of(&sandbox, &default.mch_id),
        &shop,
        SignType::HmacSha256,
        &refund,
    )
    .await;
    assert_eq!(
        field(&wrong, "return_msg"),
        "certificate not match",
        "{wrong:?}"
    );
    assert!(
        sandbox.refund("RF-shop-1").await.is_err(),
        "nothing refunded"
    );

    let shop_tls = tls_of(&sandbox, &shop.mch_id);
    let accepted = refund_as(&sandbox, &shop_tls, &shop, SignType::HmacSha256, &refund).await;
    assert_eq!(field(&accepted, "result_code"), "SUCCESS", "{accepted:?}");
    assert_eq!(
        sign::verify(&accepted, &shop.api_key, SignType::HmacSha256),
        Ok(())
    );
    // Another account's refundquery does not find the shop's refund.
    let query = call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/refundquery",
        &[("out_refund_no", "RF-shop-1")],
    )
    .await;
    assert_eq!(field(&query, "err_code"), "REFUNDNOTEXIST", "{query:?}");
    let own = call(
        &sandbox,
        &shop,
        SignType::HmacSha256,
        "/pay/refundquery",
        &[("out_refund_no", "RF-shop-1")],
    )
    .await;
    assert_eq!(field(&own, "refund_count"), "1", "{own:?}");
}

async fn bill(sandbox: &SandboxHandle, m: &Merchant, extra: &[(&str, &str)]) -> String {
    let date = wxpay_core::wechat::china_time::format(chrono::Utc::now());
    let mut pairs = vec![("bill_date", &date[..8])];
    pairs.extend_from_slice(extra);
    let response = reqwest::Client::new()
        .post(format!("{}/pay/downloadbill", sandbox.base_url()))
        .body(signed(m, &m.api_key, SignType::Md5, &pairs))
        .send()
        .await
        .expect("sent");
    response.text().await.expect("text")
}

#[tokio::test]
async fn each_account_downloads_a_bill_of_its_own_trades() {
    let sandbox = sandbox().await;
    let default = default_merchant(&sandbox);
    let provider = provider();
    let (mine, tenant) = (new_out_trade_no(), new_out_trade_no());
    call(
        &sandbox,
        &default,
        SignType::Md5,
        "/pay/unifiedorder",
        &jsapi(&mine, "http://127.0.0.1:9/n"),
    )
    .await;
    let sub = with(
        jsapi(&tenant, "http://127.0.0.1:9/n"),
        &[("sub_mch_id", SUB_MCH_ID)],
    );
    call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/unifiedorder",
        &sub,
    )
    .await;
    sandbox.pay(&mine, dropped()).await.expect("paid");
    sandbox.pay(&tenant, dropped()).await.expect("paid");

    let own = bill(&sandbox, &default, &[]).await;
    assert!(own.contains(&mine) && !own.contains(&tenant), "{own}");
    let providers = bill(&sandbox, &provider, &[]).await;
    assert!(
        providers.contains(&tenant) && !providers.contains(&mine),
        "{providers}"
    );
    let row = providers
        .lines()
        .find(|l| l.contains(&tenant))
        .expect("the sub merchant's row");
    assert!(
        row.contains(&format!("`{}", provider.mch_id)) && row.contains(&format!("`{SUB_MCH_ID}")),
        "{row}"
    );
    // The sub merchant's own bill is the same trade; the shop has none today.
    let subs = bill(&sandbox, &provider, &[("sub_mch_id", SUB_MCH_ID)]).await;
    assert!(subs.contains(&tenant), "{subs}");
    let none = bill(&sandbox, &shop(), &[]).await;
    assert!(none.contains("No Bill Exist"), "{none}");
}

#[tokio::test]
async fn a_service_providers_refund_is_notified_for_its_sub_merchant_under_its_key() {
    let sandbox = sandbox().await;
    let receiver = Receiver::start(0).await;
    let provider = provider();
    let no = new_out_trade_no();
    let order = with(
        jsapi(&no, "http://127.0.0.1:9/n"),
        &[("sub_mch_id", SUB_MCH_ID), ("sub_appid", SUB_APP_ID)],
    );
    call(
        &sandbox,
        &provider,
        SignType::Md5,
        "/pay/unifiedorder",
        &order,
    )
    .await;
    sandbox.pay(&no, dropped()).await.expect("paid");
    let refund = [
        ("out_trade_no", no.as_str()),
        ("sub_mch_id", SUB_MCH_ID),
        ("out_refund_no", "RF-tenant-1"),
        ("total_fee", "100"),
        ("refund_fee", "100"),
        ("notify_url", receiver.url.as_str()),
    ];
    let tls = tls_of(&sandbox, &provider.mch_id);
    let accepted = refund_as(&sandbox, &tls, &provider, SignType::Md5, &refund).await;
    assert_eq!(field(&accepted, "result_code"), "SUCCESS", "{accepted:?}");
    assert_eq!(field(&accepted, "sub_mch_id"), SUB_MCH_ID);
    // Without the sub merchant, the provider's refund names no order of its own.
    let bare: Vec<_> = refund
        .iter()
        .copied()
        .filter(|(k, _)| *k != "sub_mch_id")
        .collect();
    let refused = refund_as(&sandbox, &tls, &provider, SignType::Md5, &bare).await;
    assert_eq!(field(&refused, "return_code"), "FAIL", "{refused:?}");

    sandbox
        .settle_refund("RF-tenant-1", Default::default())
        .await
        .expect("settled");
    let seen = receiver.wait_for(1).await;
    let n = seen.first().expect("refund notified");
    assert_eq!(field(n, "mch_id"), provider.mch_id);
    assert_eq!(field(n, "appid"), provider.app_id);
    assert_eq!(field(n, "sub_mch_id"), SUB_MCH_ID);
    assert_eq!(field(n, "sub_appid"), SUB_APP_ID);
    let info = wxpay_core::wechat::refund_crypto::decrypt_req_info(
        field(n, "req_info"),
        &provider.api_key,
    )
    .expect("encrypted with the provider's key");
    assert_eq!(field(&info, "out_refund_no"), "RF-tenant-1");
    assert_eq!(field(&info, "refund_status"), "SUCCESS");
    let shop_key = shop().api_key;
    assert!(
        wxpay_core::wechat::refund_crypto::decrypt_req_info(field(n, "req_info"), &shop_key)
            .is_err()
    );
}
