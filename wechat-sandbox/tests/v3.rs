//! WeChat Pay API v3 against the sandbox, as a v3 client sees it: requests
//! signed with core's v3 signer, every answer and notification verified with
//! core's verifier (public-key and platform-certificate modes), certificates
//! and notifications opened with the APIv3 key, rotation, faults, and the
//! binary preparing a merchants file's v3 key files.

mod common;

use std::{collections::BTreeMap, time::Duration};

use axum::http::StatusCode;
use chrono::Utc;
use common::{new_out_trade_no, v3::*};
use serde_json::json;
use wechat_sandbox::{Account, Faults, KeyMode, PayOptions, SandboxConfig, V3Account};
use wxpay_core::wechat::v3::{
    models::{Certificates, Notification, Prepay, Transaction},
    sign::authorization,
    verify::{verify, SignedHeaders},
    Apiv3Key, MerchantSigner, VerifyError, WechatKey, WechatKeys,
};

#[tokio::test]
async fn signed_requests_are_accepted_and_every_bad_one_gets_401_sign_error() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;
    let no = new_out_trade_no();

    let placed = v3.place_jsapi(&no, NOTIFY).await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.body);
    assert_eq!(placed.verify(&keys), Ok(()));
    let prepay: Prepay = serde_json::from_slice(&placed.body).expect("a prepay");
    assert!(prepay.prepay_id.is_some_and(|p| p.starts_with("wx")));

    let uri = format!("/v3/pay/transactions/out-trade-no/{no}?mchid={DIRECT}");
    // No Authorization, a foreign key, a tampered signature, another merchant's claim.
    let unsigned = v3.send("GET", &uri, "", None, &[]).await;
    let foreign = v3
        .call_as(&v3.provider, DIRECT, "GET", &uri, None, &[])
        .await;
    let good = authorization(
        &v3.direct,
        DIRECT,
        "GET",
        &uri,
        Utc::now().timestamp(),
        "n1",
        "",
    )
    .expect("signs");
    let tampered = good.replace("timestamp=\"", "timestamp=\"1");
    let tampered = v3.send("GET", &uri, "", Some(&tampered), &[]).await;
    let stale = authorization(
        &v3.direct,
        DIRECT,
        "GET",
        &uri,
        Utc::now().timestamp() - 600,
        "n1",
        "",
    )
    .expect("signs");
    let stale = v3.send("GET", &uri, "", Some(&stale), &[]).await;
    let other_uri = format!("/v3/pay/transactions/out-trade-no/{no}?mchid={PROVIDER}");
    let claims_other = v3.direct("GET", &other_uri, None).await;
    for reply in [&unsigned, &foreign, &tampered, &stale, &claims_other] {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.code(), "SIGN_ERROR");
        assert!(!reply.json()["message"].as_str().unwrap_or("").is_empty());
    }
    // Who could not prove who they are gets nothing signed.
    assert_eq!(unsigned.header("wechatpay-signature"), None);
    assert_eq!(foreign.header("wechatpay-signature"), None);
    // The good request itself was fine.
    assert_eq!(
        v3.send("GET", &uri, "", Some(&good), &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn jsapi_native_app_and_h5_each_answer_what_the_payer_needs() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;
    let mut seen = BTreeMap::new();
    for kind in ["jsapi", "native", "app", "h5"] {
        let no = new_out_trade_no();
        let mut body = direct_order(&no, NOTIFY);
        if kind != "jsapi" {
            body.as_object_mut().map(|o| o.remove("payer"));
        }
        if kind == "h5" {
            body["scene_info"] =
                json!({"payer_client_ip": "203.0.113.7", "h5_info": {"type": "Wap"}});
        }
        let reply = v3
            .direct("POST", &format!("/v3/pay/transactions/{kind}"), Some(&body))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{kind}: {:?}", reply.body);
        assert_eq!(reply.verify(&keys), Ok(()), "{kind}");
        let keys_in_answer: Vec<String> = reply
            .json()
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect();
        seen.insert(kind, keys_in_answer);
        let order = v3.sandbox.order(&no).await.expect("the order");
        assert_eq!(order.api_version, "v3");
        assert_eq!(order.total_fee, 4321);
    }
    assert_eq!(seen["jsapi"], ["prepay_id"]);
    assert_eq!(seen["native"], ["code_url"]);
    assert_eq!(seen["app"], ["prepay_id"]);
    assert_eq!(seen["h5"], ["h5_url"]);
    // A JSAPI order without a payer, an H5 one without its scene: refused.
    let mut no_payer = direct_order(&new_out_trade_no(), NOTIFY);
    no_payer.as_object_mut().map(|o| o.remove("payer"));
    let refused = v3
        .direct("POST", "/v3/pay/transactions/jsapi", Some(&no_payer))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "PARAM_ERROR".to_owned())
    );
    let refused = v3
        .direct("POST", "/v3/pay/transactions/h5", Some(&no_payer))
        .await;
    assert_eq!(refused.code(), "PARAM_ERROR");
    let unknown = v3
        .direct("POST", "/v3/pay/transactions/micropay", Some(&no_payer))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_repeated_order_gets_its_prepay_id_and_a_changed_one_is_refused() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let no = new_out_trade_no();
    let first = v3.place_jsapi(&no, NOTIFY).await.json();
    let again = v3.place_jsapi(&no, NOTIFY).await.json();
    assert_eq!(first, again);
    let mut changed = direct_order(&no, NOTIFY);
    changed["amount"]["total"] = json!(1);
    let refused = v3
        .direct("POST", "/v3/pay/transactions/jsapi", Some(&changed))
        .await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::FORBIDDEN, "OUT_TRADE_NO_USED".to_owned())
    );
}

#[tokio::test]
async fn a_provider_places_queries_and_closes_for_its_sub_merchant() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(PROVIDER).await;
    let no = new_out_trade_no();
    let body = json!({
        "sp_appid": PROVIDER_APP, "sp_mchid": PROVIDER,
        "sub_appid": SUB_APP, "sub_mchid": SUB,
        "description": "测试商品", "out_trade_no": no, "notify_url": NOTIFY,
        "amount": {"total": 100},
        "payer": {"sub_openid": "oSubPayer"},
    });
    let placed = v3
        .provider("POST", "/v3/pay/partner/transactions/jsapi", Some(&body))
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.body);
    assert_eq!(placed.verify(&keys), Ok(()));
    // The direct endpoint is not the provider's.
    let direct_body = json!({
        "appid": PROVIDER_APP, "mchid": PROVIDER, "description": "d",
        "out_trade_no": new_out_trade_no(), "notify_url": NOTIFY, "amount": {"total": 1},
    });
    let refused = v3
        .provider("POST", "/v3/pay/transactions/native", Some(&direct_body))
        .await;
    assert_eq!(refused.code(), "INVALID_REQUEST");

    let uri = format!(
        "/v3/pay/partner/transactions/out-trade-no/{no}?sp_mchid={PROVIDER}&sub_mchid={SUB}"
    );
    let queried = v3.provider("GET", &uri, None).await;
    assert_eq!(queried.verify(&keys), Ok(()));
    let t: Transaction = serde_json::from_slice(&queried.body).expect("a transaction");
    assert_eq!(
        (
            t.sp_mchid.as_deref(),
            t.sub_mchid.as_deref(),
            t.sub_appid.as_deref(),
            t.trade_state.as_str()
        ),
        (Some(PROVIDER), Some(SUB), Some(SUB_APP), "NOTPAY")
    );
    // Another sub merchant's number finds nothing of this one's.
    let wrong = format!(
        "/v3/pay/partner/transactions/out-trade-no/{no}?sp_mchid={PROVIDER}&sub_mchid=1900000499"
    );
    assert_eq!(
        v3.provider("GET", &wrong, None).await.code(),
        "INVALID_REQUEST"
    );

    let close_uri = format!("/v3/pay/partner/transactions/out-trade-no/{no}/close");
    let closed = v3
        .provider(
            "POST",
            &close_uri,
            Some(&json!({"sp_mchid": PROVIDER, "sub_mchid": SUB})),
        )
        .await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert_eq!(closed.verify(&keys), Ok(()));
    assert_eq!(
        v3.provider("GET", &uri, None).await.json()["trade_state"],
        "CLOSED"
    );
}

#[tokio::test]
async fn close_answers_204_and_a_closed_order_says_closed_and_cannot_be_paid() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;
    let no = new_out_trade_no();
    v3.place_jsapi(&no, NOTIFY).await;
    let before = v3.query(&no).await;
    assert_eq!(before.verify(&keys), Ok(()));
    let t: Transaction = serde_json::from_slice(&before.body).expect("a transaction");
    assert_eq!((t.trade_state.as_str(), t.transaction_id), ("NOTPAY", None));
    assert_eq!(t.amount.map(|a| a.total), Some(4321));

    // v3 has no five-minute floor for closing.
    let closed = v3.close(&no).await;
    assert_eq!(closed.status, StatusCode::NO_CONTENT);
    assert!(closed.body.is_empty());
    assert_eq!(closed.verify(&keys), Ok(()));
    assert_eq!(v3.query(&no).await.json()["trade_state"], "CLOSED");
    let again = v3.close(&no).await;
    assert_eq!(
        (again.status, again.code()),
        (StatusCode::BAD_REQUEST, "ORDER_CLOSED".to_owned())
    );
    let pay = v3.sandbox.pay(&no, PayOptions::default()).await;
    assert_eq!(pay.map_err(|e| e.status()), Err(Some(409)));
    let missing = v3.query(&new_out_trade_no()).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "ORDER_NOT_EXIST".to_owned())
    );
    assert_eq!(missing.verify(&keys), Ok(()));
}

#[tokio::test]
async fn a_paid_order_is_queried_as_paid_and_cannot_be_closed() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let no = new_out_trade_no();
    v3.place_jsapi(&no, "http://127.0.0.1:9/notify").await;
    let paid = v3
        .sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect("paid");

    let t: Transaction = serde_json::from_slice(&v3.query(&no).await.body).expect("a transaction");
    assert_eq!(t.trade_state, "SUCCESS");
    assert_eq!(t.transaction_id, paid.transaction_id);
    assert_eq!(
        t.payer.and_then(|p| p.openid).as_deref(),
        Some("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    );
    assert_eq!(t.amount.and_then(|a| a.payer_total), Some(4321));
    assert!(t.success_time.is_some_and(|s| s.ends_with("+08:00")));
    let by_id = v3
        .direct(
            "GET",
            &format!(
                "/v3/pay/transactions/id/{}?mchid={DIRECT}",
                paid.transaction_id.clone().unwrap_or_default()
            ),
            None,
        )
        .await;
    assert_eq!(by_id.json()["out_trade_no"], no.as_str());

    let refused = v3.close(&no).await;
    assert_eq!(
        (refused.status, refused.code()),
        (StatusCode::BAD_REQUEST, "ORDERPAID".to_owned())
    );
    assert_eq!(v3.query(&no).await.json()["trade_state"], "SUCCESS");
}

#[tokio::test]
async fn an_order_past_its_time_expire_cannot_be_paid() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let no = new_out_trade_no();
    let mut body = direct_order(&no, NOTIFY);
    let expire = Utc::now() + chrono::TimeDelta::minutes(10);
    body["time_expire"] = json!(wxpay_core::wechat::china_time::format_rfc3339(expire));
    let placed = v3
        .direct("POST", "/v3/pay/transactions/native", Some(&body))
        .await;
    assert_eq!(placed.status, StatusCode::OK, "{:?}", placed.body);
    v3.sandbox
        .age(&no, Duration::from_secs(11 * 60))
        .await
        .expect("aged");
    let pay = v3.sandbox.pay(&no, PayOptions::default()).await;
    assert_eq!(pay.map_err(|e| e.status()), Err(Some(409)));
    // Four minutes ahead is under WeChat's five-minute floor.
    body["out_trade_no"] = json!(new_out_trade_no());
    body["time_expire"] = json!(wxpay_core::wechat::china_time::format_rfc3339(
        Utc::now() + chrono::TimeDelta::minutes(4)
    ));
    let short = v3
        .direct("POST", "/v3/pay/transactions/native", Some(&body))
        .await;
    assert_eq!(short.code(), "PARAM_ERROR");
}

#[tokio::test]
async fn certificates_open_with_the_apiv3_key_and_verify_their_own_answer() {
    let v3 = V3::start(KeyMode::Certificates).await;
    let reply = v3.direct("GET", "/v3/certificates", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let keys = opened(&reply);
    assert_eq!(keys.len(), 1);
    assert_eq!(reply.verify(&keys), Ok(()));
    let cert = keys.iter().next().expect("one");
    assert_eq!(Some(cert.id()), reply.header("wechatpay-serial"));
    // Another APIv3 key opens nothing.
    let list: Certificates = serde_json::from_slice(&reply.body).expect("list");
    let other = Apiv3Key::parse("another0123456789abcdef012345678").expect("32 bytes");
    assert!(WechatKey::from_certificate_entry(&list.data[0], &other).is_err());
    // Answers are signed with the certificate, and a public key proves nothing.
    let placed = v3.place_jsapi(&new_out_trade_no(), NOTIFY).await;
    assert_eq!(placed.verify(&keys), Ok(()));
    assert!(placed.verify(&v3.public_key(DIRECT).await).is_err());
}

#[tokio::test]
async fn a_public_key_merchant_is_given_no_certificate() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let reply = v3.direct("GET", "/v3/certificates", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({"data": []}));
    let keys = v3.public_key(DIRECT).await;
    assert_eq!(reply.verify(&keys), Ok(()));
    assert!(reply
        .header("wechatpay-serial")
        .is_some_and(|s| s.starts_with("PUB_KEY_ID_")));
}

#[tokio::test]
async fn a_rotation_signs_with_the_new_certificate_and_keeps_the_old_one_listed() {
    let v3 = V3::start(KeyMode::Certificates).await;
    let old = opened(&v3.direct("GET", "/v3/certificates", None).await);
    let old_serial = old.iter().next().expect("one").id().to_owned();

    let rotated = v3.sandbox.rotate_certificate().await.expect("rotated");
    assert_ne!(rotated.serial_no, old_serial);

    // A client that knows only the old certificate meets an unknown serial…
    let placed = v3.place_jsapi(&new_out_trade_no(), NOTIFY).await;
    assert_eq!(
        placed.header("wechatpay-serial"),
        Some(rotated.serial_no.as_str())
    );
    assert_eq!(
        placed.verify(&old),
        Err(VerifyError::UnknownSerial(rotated.serial_no.clone()))
    );
    // …downloads again, finds both, and the answer verifies.
    let listing = v3.direct("GET", "/v3/certificates", None).await;
    let both = opened(&listing);
    assert_eq!(both.len(), 2);
    assert!(both.get(&old_serial, Utc::now()).is_some());
    assert_eq!(listing.verify(&both), Ok(()));
    assert_eq!(placed.verify(&both), Ok(()));
    let views = v3.sandbox.platform_certificates().await.expect("listed");
    let current: Vec<bool> = views.iter().map(|c| c.current).collect();
    assert_eq!(current, [false, true]);
}

#[tokio::test]
async fn a_rotated_public_key_has_a_new_id_and_signs_from_then_on() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let old = v3.public_key(DIRECT).await;
    let view = v3.sandbox.rotate_public_key(DIRECT).await.expect("rotated");
    let placed = v3.place_jsapi(&new_out_trade_no(), NOTIFY).await;
    assert_eq!(
        placed.header("wechatpay-serial"),
        Some(view.public_key_id.as_str())
    );
    assert!(matches!(
        placed.verify(&old),
        Err(VerifyError::UnknownSerial(_))
    ));
    assert_eq!(placed.verify(&v3.public_key(DIRECT).await), Ok(()));
}

#[tokio::test]
async fn a_switching_merchant_is_answered_with_the_key_its_request_names() {
    let v3 = V3::start(KeyMode::Both).await;
    let public = v3.public_key(DIRECT).await;
    let view = v3.sandbox.v3_merchant(DIRECT).await.expect("view");
    let certs = opened(&v3.direct("GET", "/v3/certificates", None).await);
    let body = direct_order(&new_out_trade_no(), NOTIFY);
    let named = v3
        .call_as(
            &v3.direct,
            DIRECT,
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&body),
            &[("Wechatpay-Serial", &view.public_key_id)],
        )
        .await;
    assert_eq!(named.verify(&public), Ok(()));
    let unnamed = v3
        .direct("POST", "/v3/pay/transactions/jsapi", Some(&body))
        .await;
    assert_eq!(unnamed.verify(&certs), Ok(()));
    // The mode can change while the sandbox runs.
    v3.sandbox
        .set_key_mode(DIRECT, KeyMode::PublicKey)
        .await
        .expect("set");
    let after = v3
        .direct("POST", "/v3/pay/transactions/jsapi", Some(&body))
        .await;
    assert_eq!(after.verify(&public), Ok(()));
}

#[tokio::test]
async fn faults_forge_the_signature_or_fail_before_anything_is_placed() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;

    v3.sandbox
        .set_faults(Faults {
            bad_signature: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    let forged = v3.place_jsapi(&new_out_trade_no(), NOTIFY).await;
    assert_eq!(forged.status, StatusCode::OK);
    assert_eq!(forged.verify(&keys), Err(VerifyError::BadSignature));

    let no = new_out_trade_no();
    v3.sandbox
        .set_faults(Faults {
            systemerror: 1,
            frequency_limited: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");
    let system = v3.place_jsapi(&no, NOTIFY).await;
    assert_eq!(
        (system.status, system.code()),
        (StatusCode::INTERNAL_SERVER_ERROR, "SYSTEM_ERROR".to_owned())
    );
    let limited = v3.place_jsapi(&no, NOTIFY).await;
    assert_eq!(
        (limited.status, limited.code()),
        (
            StatusCode::TOO_MANY_REQUESTS,
            "FREQUENCY_LIMITED".to_owned()
        )
    );
    assert_eq!(
        v3.sandbox.order(&no).await.map_err(|e| e.status()),
        Err(Some(404))
    );
    // The very same request then goes through.
    assert_eq!(v3.place_jsapi(&no, NOTIFY).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_paid_v3_order_is_notified_signed_and_sealed_until_acknowledged() {
    let v3 = V3::start(KeyMode::PublicKey).await;
    let keys = v3.public_key(DIRECT).await;
    let receiver = JsonReceiver::start(1).await;
    let no = new_out_trade_no();
    v3.place_jsapi(&no, &receiver.url).await;

    let paid = v3
        .sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect("paid");
    let received = receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        receiver.seen.lock().expect("lock").len(),
        2,
        "a 204 stops the retries"
    );
    let mut ids = Vec::new();
    for (headers, body) in &received {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        assert_eq!(header("content-type"), Some("application/json"));
        let signed = SignedHeaders::from_fn(header);
        assert_eq!(verify(&signed, body, &keys, Utc::now()), Ok(()));
        let n: Notification = serde_json::from_slice(body).expect("a notification");
        assert_eq!(n.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(n.resource_type, "encrypt-resource");
        assert_eq!(n.resource.algorithm, "AEAD_AES_256_GCM");
        assert_eq!(n.resource.associated_data, "transaction");
        assert_eq!(n.resource.original_type.as_deref(), Some("transaction"));
        assert_eq!(n.resource.nonce.len(), 12);
        assert!(n.create_time.ends_with("+08:00"), "{}", n.create_time);
        let plain = n
            .resource
            .decrypt(&apiv3_key())
            .expect("opens with the APIv3 key");
        let t: Transaction = serde_json::from_slice(&plain).expect("a transaction");
        assert_eq!(t.out_trade_no, no);
        assert_eq!(
            (t.mchid.as_deref(), t.appid.as_deref()),
            (Some(DIRECT), Some(DIRECT_APP))
        );
        assert_eq!(t.trade_state, "SUCCESS");
        assert_eq!(t.transaction_id, paid.transaction_id);
        assert_eq!(t.attach.as_deref(), Some("cart=42"));
        assert_eq!(
            t.amount.map(|a| (a.total, a.payer_total)),
            Some((4321, Some(4321)))
        );
        // A tampered copy does not verify.
        let mut tampered = body.to_vec();
        tampered.push(b' ');
        assert_eq!(
            verify(&signed, &tampered, &keys, Utc::now()),
            Err(VerifyError::BadSignature)
        );
        ids.push(n.id);
    }
    assert_eq!(ids[0], ids[1], "a retry is the same notification");
    let log = v3.sandbox.notifications(&no).await.expect("log");
    let outcome: Vec<(Option<u16>, bool)> = log
        .iter()
        .map(|a| (a.http_status, a.acknowledged))
        .collect();
    assert_eq!(outcome, [(Some(500), false), (Some(204), true)]);
}

#[tokio::test]
async fn a_failed_v3_payment_is_not_notified() {
    let v3 = V3::start(KeyMode::Certificates).await;
    let receiver = JsonReceiver::start(0).await;
    let no = new_out_trade_no();
    v3.place_jsapi(&no, &receiver.url).await;
    v3.sandbox
        .fail(&no, Default::default())
        .await
        .expect("failed");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.seen.lock().expect("lock").is_empty());
    assert_eq!(v3.query(&no).await.json()["trade_state"], "PAYERROR");
    // Paid on a retry: notified then, signed with the platform certificate.
    v3.sandbox
        .pay(&no, PayOptions::default())
        .await
        .expect("paid");
    let received = receiver.wait_for(1).await;
    let certs = opened(&v3.direct("GET", "/v3/certificates", None).await);
    let (headers, body) = &received[0];
    let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    assert_eq!(verify(&signed, body, &certs, Utc::now()), Ok(()));
}

#[tokio::test]
async fn the_binary_issues_a_v3_merchants_key_and_writes_its_wechat_public_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("shop/apiclient_key.pem");
    let pub_path = dir.path().join("shop/pub_key.pem");
    let file = dir.path().join("merchants.toml");
    std::fs::write(
        &file,
        format!(
            "[[merchant]]\nname = \"shop\"\napi_version = \"v3\"\napp_id = \"{DIRECT_APP}\"\nmch_id = \"{DIRECT}\"\n\
             apiv3_key_env = \"SHOP_APIV3_KEY\"\nserial_no = \"5157F09EFDC096DE15EBE81A47057A7232F1B8E1\"\n\
             private_key = \"{}\"\nwechatpay_public_key = \"{}\"\nwechatpay_public_key_id = \"PUB_KEY_ID_0119000003002025010100000001\"\n",
            key_path.display(),
            pub_path.display()
        ),
    )
    .expect("written");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wechat-sandbox"));
    cmd.current_dir(std::env::temp_dir())
        .env_remove("WECHAT_APP_ID")
        .env_remove("WECHAT_MCH_ID")
        .env_remove("WECHAT_API_KEY")
        .env("MERCHANTS_FILE", &file)
        .env("SHOP_APIV3_KEY", APIV3_KEY)
        .env("SANDBOX_ADDR", format!("127.0.0.1:{port}"))
        .env("SANDBOX_TLS_ADDR", "127.0.0.1:0")
        .env("SANDBOX_TLS_DIR", dir.path().join("tls"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _child = cmd.spawn().expect("starts");
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if reqwest::get(format!("{base}/sandbox/faults"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the sandbox never answered");

    // What the product reads from the same file now exists and is right.
    let entries = wxpay_core::wechat::parse_merchants_with_files(
        &std::fs::read_to_string(&file).expect("file"),
        |var| (var == "SHOP_APIV3_KEY").then(|| APIV3_KEY.to_owned()),
        |path| std::fs::read(path).map_err(|e| e.to_string()),
    )
    .expect("the product accepts the files the sandbox wrote");
    let v3 = entries[0].v3.clone().expect("a v3 merchant");
    let public_key = v3.public_key.expect("its WeChat Pay public key");
    assert_eq!(public_key.id(), "PUB_KEY_ID_0119000003002025010100000001");

    let uri = format!(
        "/v3/pay/transactions/out-trade-no/{}?mchid={DIRECT}",
        new_out_trade_no()
    );
    let auth = authorization(
        &v3.signer,
        DIRECT,
        "GET",
        &uri,
        Utc::now().timestamp(),
        "n1",
        "",
    )
    .expect("signs");
    let response = reqwest::Client::new()
        .get(format!("{base}{uri}"))
        .header("authorization", auth)
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    let keys = WechatKeys::new(vec![public_key]);
    assert_eq!(verify(&signed, &body, &keys, Utc::now()), Ok(()));
}

#[tokio::test]
async fn a_harness_wires_a_v3_merchant_before_the_sandbox_serves() {
    // As `cargo run` does: bind, issue the merchant's key, read WeChat's, then serve.
    let config = SandboxConfig {
        accounts: vec![Account::direct(merchant(DIRECT, DIRECT_APP))
            .with_v3(V3Account::new(apiv3_key(), KeyMode::PublicKey))],
        wechat_keys: Some(wechat_keys()),
        ..SandboxConfig::for_tests()
    };
    let sandbox = wechat_sandbox::Sandbox::build(config, "127.0.0.1:0")
        .await
        .expect("binds");
    let dir = tempfile::tempdir().expect("temp dir");
    let key_dir = dir.path().to_owned();
    let issued = tokio::task::spawn_blocking(move || wechat_sandbox::issue_merchant_key(&key_dir))
        .await
        .expect("joined")
        .expect("issued");
    assert_eq!(
        issued.private_key_path,
        dir.path().join("apiclient_key.pem")
    );
    assert_eq!(
        sandbox
            .v3_merchant(DIRECT)
            .and_then(|v| v.merchant_serial_no),
        None
    );
    sandbox
        .register_merchant_key(DIRECT, issued.public_key().expect("public half"))
        .expect("registered");
    assert!(sandbox
        .register_merchant_key("1900000109", issued.public_key().expect("public half"))
        .is_err());
    let view = sandbox.v3_merchant(DIRECT).expect("a v3 merchant");
    assert_eq!(
        view.merchant_serial_no.as_deref(),
        Some(issued.serial_no.as_str())
    );
    assert!(
        sandbox.v3_merchant("1900000109").is_none(),
        "the v2 default"
    );
    let keys = WechatKeys::new(vec![WechatKey::from_public_key_pem(
        &view.public_key_id,
        view.public_key_pem.as_bytes(),
    )
    .expect("PEM")]);

    let base = sandbox.base_url();
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(sandbox.run_until_stopped(async move { stopped.cancelled().await }));
    let signer = MerchantSigner::from_pem(
        &std::fs::read(&issued.private_key_path).expect("written"),
        &issued.serial_no,
    )
    .expect("PKCS#8");
    let uri = format!(
        "/v3/pay/transactions/out-trade-no/{}?mchid={DIRECT}",
        new_out_trade_no()
    );
    let auth = authorization(
        &signer,
        DIRECT,
        "GET",
        &uri,
        Utc::now().timestamp(),
        "n1",
        "",
    )
    .expect("signs");
    let response = reqwest::Client::new()
        .get(format!("{base}{uri}"))
        .header("authorization", auth)
        .send()
        .await
        .expect("sent");
    let headers = response.headers().clone();
    let status = response.status();
    let body = response.bytes().await.expect("body");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let signed = SignedHeaders::from_fn(|n| headers.get(n).and_then(|v| v.to_str().ok()));
    assert_eq!(verify(&signed, &body, &keys, Utc::now()), Ok(()));
    stop.cancel();
    task.await.expect("joined").expect("stopped cleanly");
}
