//! The v3 protocol code against vectors made with independent tools
//! (openssl and Python's `cryptography`; see testdata/v3/README.md): every
//! signature ours makes must equal openssl's byte for byte (PKCS#1 v1.5 is
//! deterministic), every one openssl made must verify, and everything else
//! (a changed byte, a re-serialized body, a stale timestamp, a probe, an
//! unknown serial) must not.

use chrono::{DateTime, Duration, Utc};
use wxpay_core::{
    domain::Nonce,
    wechat::{
        china_time,
        v3::{
            self,
            models::{Certificates, EncryptedResource, Transaction},
            verify::{verify, SignedHeaders},
            Apiv3Key, KeyError, MerchantSigner, VerifyError, WechatKey, WechatKeys,
        },
    },
};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/v3/");

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}{name}")).expect("test vector")
}

fn signer() -> MerchantSigner {
    MerchantSigner::from_pem(
        read("merchant_key.pem").as_bytes(),
        "3775B6A45ACD588826D15E583A95F5DD********",
    )
    .expect("the openssl-made PKCS#8 key")
}

fn platform_cert() -> WechatKey {
    WechatKey::from_certificate_pem(&read("platform_cert.pem"))
        .expect("the openssl-made certificate")
}

#[test]
fn a_request_signature_is_openssls_byte_for_byte() {
    let body = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Image形象店-深圳腾大-QQ公仔","out_trade_no":"1217752501201407033233368018","notify_url":"https://www.weixin.qq.com/wxpay/pay.php","amount":{"total":100,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}"#;
    let message = v3::sign::request_message(
        "POST",
        "/v3/pay/transactions/jsapi",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body,
    );
    assert_eq!(message, read("request_message.txt"));
    let expected = read("request_signature.b64");
    assert_eq!(signer().sign(message.as_bytes()).expect("sign"), expected);
    let header = v3::sign::authorization(
        &signer(),
        "1230000109",
        "POST",
        "/v3/pay/transactions/jsapi",
        1554208460,
        "593BEC0C930BF1AFEB40B4A08C8FB242",
        body,
    )
    .expect("sign");
    let parsed = v3::sign::Authorization::parse(&header).expect("reads back");
    assert_eq!(parsed.signature, expected);
    assert_eq!(parsed.mch_id, "1230000109");
    assert_eq!(parsed.serial_no, signer().serial_no());
    // The merchant's public key verifies it (as WeChat, and the sandbox, do).
    let public = WechatKey::from_public_key_pem("merchant", read("merchant_pub.pem").as_bytes())
        .expect("the openssl-made public key");
    assert!(public.verifies(message.as_bytes(), &expected));
    assert!(!public.verifies(message.replace("100", "101").as_bytes(), &expected));
}

#[test]
fn a_jsapi_pay_sign_is_openssls() {
    let params = v3::pay_params::jsapi(
        &signer(),
        "wx8888888888888888",
        "wx201410272009395522657a690389285100",
        1414561699,
        &Nonce::parse("5K8264ILTKCH16CQ2502SI8ZNMTM67VS").expect("a nonce"),
    )
    .expect("sign");
    assert_eq!(
        params.package,
        "prepay_id=wx201410272009395522657a690389285100"
    );
    assert_eq!(params.pay_sign, read("jsapi_paysign.b64"));
    assert_eq!(
        v3::pay_params::jsapi_message(
            &params.app_id,
            &params.time_stamp,
            &params.nonce_str,
            &params.package
        ),
        read("jsapi_paysign_message.txt")
    );
}

/// The response vector: timestamp 1800000000, inside the certificate's dates.
fn at(seconds_after: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a time") + Duration::seconds(seconds_after)
}

fn response_body() -> Vec<u8> {
    br#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#.to_vec()
}

fn headers<'a>(serial: &'a str, signature: &'a str, timestamp: &'a str) -> SignedHeaders<'a> {
    SignedHeaders {
        serial: Some(serial),
        signature: Some(signature),
        timestamp: Some(timestamp),
        nonce: Some("c5ac7061fccab6bf3e254dcf98995b8c"),
        signature_type: Some("WECHATPAY2-SHA256-RSA2048"),
    }
}

#[test]
fn a_platform_certificate_verifies_what_openssl_signed_and_nothing_else() {
    let cert = platform_cert();
    assert_eq!(cert.id(), "5157F09EFDC096DE15EBE81A47057A7232F1B8E1");
    let keys = WechatKeys::new(vec![cert]);
    let sig = read("response_signature.b64");
    let serial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000000"),
            &response_body(),
            &keys,
            at(10)
        ),
        Ok(())
    );
    // Up to 5 minutes either way, not 5 minutes.
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000000"),
            &response_body(),
            &keys,
            at(-299)
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000000"),
            &response_body(),
            &keys,
            at(300)
        ),
        Err(VerifyError::Stale(300))
    );
    // A byte changed, or the same JSON re-serialized with a space: refused.
    let mut tampered = response_body();
    tampered[20] ^= 1;
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000000"),
            &tampered,
            &keys,
            at(0)
        ),
        Err(VerifyError::BadSignature)
    );
    let reserialized = br#"{"code_url": "weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#;
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000000"),
            reserialized,
            &keys,
            at(0)
        ),
        Err(VerifyError::BadSignature)
    );
    // Another timestamp is another message.
    assert_eq!(
        verify(
            &headers(serial, &sig, "1800000001"),
            &response_body(),
            &keys,
            at(0)
        ),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        verify(
            &headers("PUB_KEY_ID_0000", &sig, "1800000000"),
            &response_body(),
            &keys,
            at(0)
        ),
        Err(VerifyError::UnknownSerial("PUB_KEY_ID_0000".into()))
    );
    // WeChat's probe is refused before any key is looked up.
    assert_eq!(
        verify(
            &headers("ANY", "WECHATPAY/SIGNTEST/abc", "1800000000"),
            &response_body(),
            &keys,
            at(0)
        ),
        Err(VerifyError::Probe)
    );
    let mut missing = headers(serial, &sig, "1800000000");
    missing.nonce = None;
    assert_eq!(
        verify(&missing, &response_body(), &keys, at(0)),
        Err(VerifyError::Missing("Wechatpay-Nonce"))
    );
    let mut other_scheme = headers(serial, &sig, "1800000000");
    other_scheme.signature_type = Some("WECHATPAY2-SM2-WITH-SM3");
    assert_eq!(
        verify(&other_scheme, &response_body(), &keys, at(0)),
        Err(VerifyError::SignatureType)
    );
}

#[test]
fn a_certificate_verifies_only_between_its_dates() {
    let cert = platform_cert();
    let (from, until) = cert.validity().expect("a certificate has dates");
    assert!(cert.usable_at(from) && !cert.usable_at(from - Duration::seconds(1)));
    assert!(!cert.usable_at(until));
    let mut keys = WechatKeys::new(vec![cert]);
    assert!(keys
        .get("5157f09efdc096de15ebe81a47057a7232f1b8e1", from)
        .is_some());
    assert!(keys
        .get("5157F09EFDC096DE15EBE81A47057A7232F1B8E1", until)
        .is_none());
    keys.drop_expired(until);
    assert!(keys.is_empty());
}

#[test]
fn a_wechat_pay_public_key_verifies_by_its_id_beside_certificates() {
    let public = WechatKey::from_public_key_pem(
        "PUB_KEY_ID_0114232134912410000000000000",
        read("merchant_pub.pem").as_bytes(),
    )
    .expect("a public key");
    assert!(public.validity().is_none());
    // Both modes at once, as while a merchant switches: each by its own id.
    let keys = WechatKeys::new(vec![public, platform_cert()]);
    let by_public = read("response_signature_by_pubkey_mode.b64");
    let body = response_body();
    assert_eq!(
        verify(
            &headers(
                "PUB_KEY_ID_0114232134912410000000000000",
                &by_public,
                "1800000000"
            ),
            &body,
            &keys,
            at(0)
        ),
        Ok(())
    );
    assert_eq!(
        verify(
            &headers(
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                &by_public,
                "1800000000"
            ),
            &body,
            &keys,
            at(0)
        ),
        Err(VerifyError::BadSignature)
    );
    assert_eq!(
        verify(
            &headers(
                "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
                &read("response_signature.b64"),
                "1800000000"
            ),
            &body,
            &keys,
            at(0)
        ),
        Ok(())
    );
    assert_eq!(
        keys.preferred(at(0)).map(WechatKey::id),
        Some("PUB_KEY_ID_0114232134912410000000000000")
    );
}

#[test]
fn a_notification_resource_decrypts_as_python_sealed_it() {
    let v: serde_json::Value = serde_json::from_str(&read("resource_vector.json")).expect("json");
    let s = |k: &str| v[k].as_str().expect("a string").to_owned();
    let key = Apiv3Key::parse(&s("apiv3_key")).expect("32 bytes");
    let resource = EncryptedResource {
        algorithm: "AEAD_AES_256_GCM".into(),
        ciphertext: s("ciphertext"),
        associated_data: s("associated_data"),
        nonce: s("nonce"),
        original_type: Some("transaction".into()),
    };
    let plain = resource.decrypt(&key).expect("opens");
    assert_eq!(plain, read("resource_plain.json").into_bytes());
    let t: Transaction = serde_json::from_slice(&plain).expect("a payment");
    assert_eq!(t.trade_state, "SUCCESS");
    assert_eq!(t.amount.as_ref().map(|a| a.total), Some(100));
    assert_eq!(
        t.success_time
            .as_deref()
            .and_then(china_time::parse_rfc3339)
            .map(|t| t.timestamp()),
        Some(1528425296)
    );
    let mut other = resource.clone();
    other.algorithm = "AEAD_AES_128_GCM".into();
    assert!(other.decrypt(&key).is_err());
}

#[test]
fn a_downloaded_certificate_opens_and_must_be_the_one_it_names() {
    let reply: Certificates = serde_json::from_str(&read("certificates_reply.json")).expect("json");
    let key = Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnop").expect("32 bytes");
    let entry = &reply.data[0];
    let cert = WechatKey::from_certificate_entry(entry, &key).expect("opens");
    assert_eq!(cert, platform_cert());
    let mut renamed = entry.clone();
    renamed.serial_no = "00AA".into();
    assert_eq!(
        WechatKey::from_certificate_entry(&renamed, &key),
        Err(KeyError::SerialMismatch("00AA".into()))
    );
    let wrong = Apiv3Key::parse("0123456789abcdefABCDEFGHijklmnoq").expect("32 bytes");
    assert!(matches!(
        WechatKey::from_certificate_entry(entry, &wrong),
        Err(KeyError::Sealed { .. })
    ));
}

#[test]
fn a_signers_public_half_is_its_public_key_file_and_checks_its_signatures() {
    let signer = signer();
    let public = signer.public_key();
    let from_file =
        WechatKey::from_public_key_pem(signer.serial_no(), read("merchant_pub.pem").as_bytes())
            .expect("the openssl-made public key");
    assert_eq!(public, from_file);
    assert_eq!(public.id(), signer.serial_no());
    let message = b"GET\n/v3/certificates\n1554208460\nnonce\n\n";
    let signature = signer.sign(message).expect("sign");
    assert!(public.verifies(message, &signature));
    assert!(!public.verifies(b"GET\n/v3/certificates\n1554208461\nnonce\n\n", &signature));
    assert!(!platform_cert().verifies(message, &signature));
}
