//! The v3 rules one by one, with core's openssl-made test keys (no key
//! generation: these run in milliseconds).

use super::*;
use crate::{
    accounts::{Account, SubMerchant, V3Account},
    keygen::KeyPair,
    wechat_keys::{KeyMode, WechatSideKeys},
};
use wxpay_core::wechat::{
    v3::{sign::authorization, verify::SignedHeaders, Apiv3Key, WechatKey, WechatKeys},
    ApiKey, Merchant,
};

const MERCHANT_KEY: &str = include_str!("../../../core/tests/testdata/v3/merchant_key.pem");
const WECHAT_KEY: &str = include_str!("../../../core/tests/testdata/v3/platform_key.pem");
const SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD00000001";
const DIRECT: &str = "1900000109";
const PROVIDER: &str = "1900000200";

fn merchant(mch_id: &str, app_id: &str) -> Merchant {
    Merchant {
        app_id: app_id.into(),
        mch_id: mch_id.into(),
        api_key: ApiKey::parse("sandboxtestkey0123456789abcdefgh").expect("key"),
    }
}

fn signer() -> MerchantSigner {
    MerchantSigner::from_pem(MERCHANT_KEY.as_bytes(), SERIAL).expect("test key")
}

fn v3(key: WechatKey) -> V3Account {
    V3Account::new(
        Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnop").expect("32 bytes"),
        KeyMode::PublicKey,
    )
    .with_merchant_key(key)
}

fn registry() -> Registry {
    let provider = Account::provider(
        merchant(PROVIDER, "wx1111111111111111"),
        vec![SubMerchant {
            sub_mch_id: "1900000201".into(),
            sub_app_id: Some("wx2222222222222222".into()),
        }],
    )
    // Another key than the direct merchant's: the mchid is not part of what is
    // signed, so only the key tells two merchants apart.
    .with_v3(v3(MerchantSigner::from_pem(WECHAT_KEY.as_bytes(), SERIAL)
        .expect("test key")
        .public_key()));
    let direct =
        Account::direct(merchant(DIRECT, "wx0123456789abcdef")).with_v3(v3(signer().public_key()));
    Registry::new(&merchant(DIRECT, "wx0123456789abcdef"), &[direct, provider]).expect("consistent")
}

fn ring() -> KeyRing {
    let wechat = KeyPair::from_private_pem(WECHAT_KEY).expect("test key");
    let side = WechatSideKeys {
        public_key: wechat.clone(),
        certificate_key: wechat,
    };
    KeyRing::new(&registry(), &side, Utc::now()).expect("ring")
}

fn signed(method: &str, uri: &str, body: &str, at: i64) -> String {
    authorization(&signer(), DIRECT, method, uri, at, "n0nce", body).expect("signs")
}

fn check(method: &str, uri: &str, auth: Option<&str>, body: &str) -> Result<String, V3Error> {
    let request = SignedRequest {
        method,
        uri,
        authorization: auth,
        body: body.as_bytes(),
    };
    authenticate(&request, &ring(), Utc::now())
}

#[test]
fn a_request_signed_with_the_merchants_key_speaks_for_it_and_nothing_else_does() {
    let now = Utc::now().timestamp();
    let uri = "/v3/pay/transactions/out-trade-no/T123456?mchid=1900000109";
    let good = signed("GET", uri, "", now);
    assert_eq!(check("GET", uri, Some(&good), ""), Ok(DIRECT.to_owned()));

    let refused = |method: &str, uri: &str, auth: Option<&str>, body: &str| {
        let e = check(method, uri, auth, body).expect_err("refused");
        assert_eq!((e.status, e.code), (StatusCode::UNAUTHORIZED, "SIGN_ERROR"));
        e.message
    };
    refused("GET", uri, None, "");
    refused(
        "GET",
        uri,
        Some(&good.replace(SCHEME, "WECHATPAY2-SHA256-RSA")),
        "",
    );
    // Another path, method or body than what was signed.
    refused(
        "GET",
        "/v3/pay/transactions/out-trade-no/T123457?mchid=1900000109",
        Some(&good),
        "",
    );
    refused("POST", uri, Some(&good), "");
    refused("GET", uri, Some(&good), "{}");
    // Five minutes away either way.
    refused("GET", uri, Some(&signed("GET", uri, "", now - 300)), "");
    // (301 ahead: `now` is read again inside, and a second may pass meanwhile.)
    refused("GET", uri, Some(&signed("GET", uri, "", now + 301)), "");
    assert_eq!(
        check("GET", uri, Some(&signed("GET", uri, "", now - 299)), ""),
        Ok(DIRECT.to_owned())
    );
    // Another serial, another merchant, a merchant WeChat has no v3 key of.
    let message = refused("GET", uri, Some(&good.replace(SERIAL, "5157F09E")), "");
    assert!(message.contains("5157F09E"), "{message}");
    refused("GET", uri, Some(&good.replace(DIRECT, PROVIDER)), "");
    refused("GET", uri, Some(&good.replace(DIRECT, "1900000999")), "");
}

#[test]
fn an_answer_verifies_with_the_key_it_names_unless_forged() {
    let ring = ring();
    let signer = ring
        .answer_signer(DIRECT, None)
        .expect("a public-key merchant");
    let (id, pem) = ring.public_key_of(DIRECT).expect("its public key");
    assert_eq!(signer.serial_no(), id);
    assert!(
        id.starts_with("PUB_KEY_ID_01") && id.contains(DIRECT),
        "{id}"
    );
    let keys = WechatKeys::new(vec![
        WechatKey::from_public_key_pem(id, pem.as_bytes()).expect("PEM")
    ]);
    let now = Utc::now();
    let body = br#"{"prepay_id":"wx1"}"#;
    for forged in [false, true] {
        let s = sign(&signer, body, now, forged).expect("signs");
        let headers = SignedHeaders {
            serial: Some(&s.serial),
            signature: Some(&s.signature),
            timestamp: Some(&s.timestamp),
            nonce: Some(&s.nonce),
            signature_type: Some(SCHEME),
        };
        let verdict = verify::verify(&headers, body, &keys, now);
        assert_eq!(verdict.is_ok(), !forged, "forged: {forged}");
    }
}

fn place_body(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut body = json!({
        "appid": "wx0123456789abcdef",
        "mchid": DIRECT,
        "description": "测试商品",
        "out_trade_no": "T20240101000001",
        "notify_url": "https://shop.example/notify",
        "amount": {"total": 100, "currency": "CNY"},
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    });
    for (k, v) in pairs {
        match v {
            Value::Null => {
                body.as_object_mut().map(|o| o.remove(*k));
            }
            v => body[*k] = v.clone(),
        }
    }
    serde_json::to_vec(&body).expect("json")
}

fn placed(kind: TradeKind, family: Family, body: &[u8], by: &str) -> Result<NewOrder, V3Error> {
    place(
        kind,
        family,
        body,
        by,
        &registry(),
        Utc::now(),
        TimeDelta::minutes(5),
    )
}

fn code(r: Result<NewOrder, V3Error>) -> &'static str {
    r.map_or_else(|e| e.code, |_| "OK")
}

#[test]
fn placing_checks_the_fields_wechat_checks() {
    let direct = |pairs: &[(&str, Value)], kind| {
        code(placed(kind, Family::Direct, &place_body(pairs), DIRECT))
    };
    let j = TradeKind::Jsapi;
    assert_eq!(direct(&[], j), "OK");
    assert_eq!(direct(&[("payer", Value::Null)], j), "PARAM_ERROR");
    assert_eq!(direct(&[("payer", Value::Null)], TradeKind::Native), "OK");
    assert_eq!(direct(&[("payer", Value::Null)], TradeKind::App), "OK");
    assert_eq!(
        direct(&[("payer", Value::Null)], TradeKind::H5),
        "PARAM_ERROR"
    );
    let scene = json!({"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Wap"}});
    assert_eq!(direct(&[("scene_info", scene)], TradeKind::H5), "OK");
    let car = json!({"payer_client_ip": "127.0.0.1", "h5_info": {"type": "Car"}});
    assert_eq!(direct(&[("scene_info", car)], TradeKind::H5), "PARAM_ERROR");
    assert_eq!(direct(&[("out_trade_no", json!("T1"))], j), "PARAM_ERROR");
    assert_eq!(
        direct(&[("out_trade_no", json!("has space"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(direct(&[("amount", json!({"total": 0}))], j), "PARAM_ERROR");
    assert_eq!(
        direct(&[("amount", json!({"total": 1, "currency": "USD"}))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        direct(&[("amount", json!({"total": 1.5}))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        direct(&[("notify_url", json!("https://shop.example/n?a=1"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        direct(&[("notify_url", json!("ftp://shop.example/n"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(direct(&[("description", json!(""))], j), "PARAM_ERROR");
    assert_eq!(
        direct(&[("appid", json!("wxffffffffffffffff"))], j),
        "APPID_MCHID_NOT_MATCH"
    );
    assert_eq!(direct(&[("appid", Value::Null)], j), "PARAM_ERROR");
    assert_eq!(direct(&[("mchid", json!(PROVIDER))], j), "SIGN_ERROR");
    assert_eq!(
        direct(&[("sub_mchid", json!("1900000201"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        direct(&[("time_expire", json!("2099-01-01T00:00:00+08:00"))], j),
        "OK"
    );
    assert_eq!(
        direct(&[("time_expire", json!("2020-01-01T00:00:00+08:00"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        direct(&[("time_expire", json!("20990101000000"))], j),
        "PARAM_ERROR"
    );
    assert_eq!(
        code(placed(j, Family::Direct, b"not json", DIRECT)),
        "PARAM_ERROR"
    );
    // A provider only trades for its sub merchants.
    let provider_direct = place_body(&[
        ("appid", json!("wx1111111111111111")),
        ("mchid", json!(PROVIDER)),
    ]);
    assert_eq!(
        code(placed(j, Family::Direct, &provider_direct, PROVIDER)),
        "INVALID_REQUEST"
    );
}

#[test]
fn time_expire_is_rfc3339_at_least_the_floor_ahead() {
    let now = china_time::parse("20240101120000").expect("valid");
    let floor = TimeDelta::minutes(5);
    let at = |t: &str| {
        let body = place_body(&[("time_expire", json!(t))]);
        place(
            TradeKind::Jsapi,
            Family::Direct,
            &body,
            DIRECT,
            &registry(),
            now,
            floor,
        )
        .map(|o| o.time_expire)
    };
    assert_eq!(
        at("2024-01-01T12:04:59+08:00").map_err(|e| e.code),
        Err("PARAM_ERROR")
    );
    let expire = at("2024-01-01T12:05:00+08:00").expect("five minutes ahead");
    assert_eq!(expire, china_time::parse("20240101120500"));
    // Another offset names the same instant.
    assert_eq!(at("2024-01-01T04:05:00Z").expect("UTC"), expire);
}

fn partner_body(pairs: &[(&str, Value)]) -> Vec<u8> {
    let mut body = json!({
        "sp_appid": "wx1111111111111111",
        "sp_mchid": PROVIDER,
        "sub_mchid": "1900000201",
        "sub_appid": "wx2222222222222222",
        "description": "测试商品",
        "out_trade_no": "P20240101000001",
        "notify_url": "https://shop.example/notify",
        "amount": {"total": 100},
        "payer": {"sub_openid": "oSub"},
    });
    for (k, v) in pairs {
        match v {
            Value::Null => {
                body.as_object_mut().map(|o| o.remove(*k));
            }
            v => body[*k] = v.clone(),
        }
    }
    serde_json::to_vec(&body).expect("json")
}

#[test]
fn partner_placing_names_a_bound_sub_merchant_and_its_payer() {
    let partner = |pairs: &[(&str, Value)]| {
        code(placed(
            TradeKind::Jsapi,
            Family::Partner,
            &partner_body(pairs),
            PROVIDER,
        ))
    };
    assert_eq!(partner(&[]), "OK");
    assert_eq!(
        partner(&[
            ("payer", json!({"sp_openid": "oSp"})),
            ("sub_appid", Value::Null)
        ]),
        "OK"
    );
    assert_eq!(
        partner(&[("payer", json!({"openid": "o1"}))]),
        "PARAM_ERROR"
    );
    assert_eq!(partner(&[("sub_appid", Value::Null)]), "PARAM_ERROR");
    assert_eq!(
        partner(&[("sub_mchid", json!("1900000999"))]),
        "INVALID_REQUEST"
    );
    assert_eq!(
        partner(&[("sub_appid", json!("wx3333333333333333"))]),
        "INVALID_REQUEST"
    );
    assert_eq!(partner(&[("sub_mchid", Value::Null)]), "PARAM_ERROR");
    assert_eq!(partner(&[("mchid", json!(PROVIDER))]), "PARAM_ERROR");
    let order = placed(
        TradeKind::Jsapi,
        Family::Partner,
        &partner_body(&[]),
        PROVIDER,
    )
    .expect("placed");
    assert_eq!(order.owner.mch_id, PROVIDER);
    assert_eq!(order.owner.sub_mch_id.as_deref(), Some("1900000201"));
    assert_eq!(order.app_id, "wx1111111111111111");
    assert_eq!(order.sub_openid, "oSub");
    assert_eq!(order.api_version, ApiVersion::V3);
    // A direct merchant has no sub merchants.
    let theirs = partner_body(&[
        ("sp_appid", json!("wx0123456789abcdef")),
        ("sp_mchid", json!(DIRECT)),
    ]);
    assert_eq!(
        code(placed(TradeKind::Jsapi, Family::Partner, &theirs, DIRECT)),
        "INVALID_REQUEST"
    );
}

#[test]
fn the_same_body_is_the_same_order_however_it_is_written() {
    let a = placed(TradeKind::Jsapi, Family::Direct, &place_body(&[]), DIRECT).expect("a");
    let spaced = String::from_utf8(place_body(&[]))
        .expect("utf-8")
        .replace(',', " ,\n ");
    let b = placed(TradeKind::Jsapi, Family::Direct, spaced.as_bytes(), DIRECT).expect("b");
    assert_eq!(a.business, b.business);
    let c = placed(
        TradeKind::Jsapi,
        Family::Direct,
        &place_body(&[("amount", json!({"total": 101}))]),
        DIRECT,
    )
    .expect("c");
    assert_ne!(a.business, c.business);
    let native =
        placed(TradeKind::Native, Family::Direct, &place_body(&[]), DIRECT).expect("native");
    assert_ne!(a.business, native.business);
}

#[test]
fn a_partner_payment_names_the_provider_and_both_payers() {
    let mut book = crate::orders::OrderBook::default();
    let now = Utc::now();
    let new = placed(
        TradeKind::Jsapi,
        Family::Partner,
        &partner_body(&[]),
        PROVIDER,
    )
    .expect("placed");
    book.place(new, now).expect("placed");
    let unpaid = transaction(book.get("P20240101000001").expect("order"));
    assert_eq!(unpaid["trade_state"], "NOTPAY");
    assert_eq!(unpaid.get("transaction_id"), None);
    assert_eq!(unpaid.get("payer"), None);
    assert_eq!(unpaid["amount"], json!({"total": 100, "currency": "CNY"}));
    let payer = crate::orders::Payer {
        openid: Some("oSp".into()),
        sub_openid: None,
    };
    let paid = book.pay("P20240101000001", None, payer, now).expect("paid");
    let t = transaction(&paid);
    assert_eq!(t["sp_mchid"], PROVIDER);
    assert_eq!(t["sub_mchid"], "1900000201");
    assert_eq!(t.get("mchid"), None);
    assert_eq!(
        t["payer"],
        json!({"sp_openid": "oSp", "sub_openid": "oSub"})
    );
    assert_eq!(t["trade_state"], "SUCCESS");
    assert_eq!(t["trade_type"], "JSAPI");
    assert_eq!(t["amount"]["payer_total"], 100);
    let success = t["success_time"].as_str().expect("a time");
    assert!(success.ends_with("+08:00"), "{success}");
    // It reads back as core's Transaction (what the product decodes).
    let back: Transaction = serde_json::from_value(t).expect("core's model");
    assert_eq!(back.merchant_mch_id(), Some(PROVIDER));
    assert_eq!(back.transaction_id, paid.transaction_id);
}
