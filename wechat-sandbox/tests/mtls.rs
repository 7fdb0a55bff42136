//! `/secapi/` over mutual TLS, as a merchant's server meets it: real TLS
//! between the product's own client configuration (`ClientTls`) and the
//! sandbox's listener. Without the merchant's certificate — no certificate,
//! plain HTTP, another CA's, another merchant's — a refund is refused and
//! nothing happens; with it (PEM or WeChat's p12) the refund is accepted.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{field, http_client, merchant_tls, new_out_trade_no, order, paid_order, signed_body};
use payment_service::wechat::{ClientOptions, ClientTls, V2Client, WechatError};
use secrecy::ExposeSecret;
use wechat_sandbox::{Faults, SandboxConfig, SandboxHandle, TestCa, TlsSettings, TlsSource};
use wxpay_core::wechat::{sign, xml, Fields, SignType};

const REFUND: &str = "/secapi/pay/refund";

async fn sandbox() -> SandboxHandle {
    common::sandbox().await
}

/// The sandbox's CA as the one extra root: what `WECHAT_EXTRA_ROOT_CA` gives.
fn trusting_sandbox(sandbox: &SandboxHandle) -> ClientTls {
    ClientTls::trusting(sandbox.tls_files().ca_pem().as_bytes()).expect("the sandbox's CA")
}

/// POSTs a signed refund of 100 of `no`'s 1000 fen to `base` with `http`.
async fn post_refund(
    http: &reqwest::Client,
    base: &str,
    sandbox: &SandboxHandle,
    no: &str,
    rno: &str,
) -> Result<Fields, reqwest::Error> {
    let body = signed_body(
        sandbox,
        &[
            ("out_trade_no", no),
            ("out_refund_no", rno),
            ("total_fee", "1000"),
            ("refund_fee", "100"),
        ],
        SignType::Md5,
    );
    let reply = http
        .post(format!("{base}{REFUND}"))
        .body(body)
        .send()
        .await?
        .bytes()
        .await?;
    Ok(xml::decode(&reply).expect("the sandbox answers XML"))
}

/// The order is still paid and has no refund `rno`.
async fn assert_nothing_refunded(sandbox: &SandboxHandle, no: &str, rno: &str) {
    let refund = sandbox.refund(rno).await;
    assert_eq!(refund.map_err(|e| e.status()), Err(Some(404)));
    let order = sandbox.order(no).await.expect("order");
    assert_eq!(order.status, "SUCCESS");
}

/// A refused refund in WeChat's shape: unsigned return_code FAIL.
fn assert_refused(reply: &Fields, return_msg: &str) {
    assert_eq!(field(reply, "return_code"), "FAIL", "{reply:?}");
    assert_eq!(field(reply, "return_msg"), return_msg, "{reply:?}");
    assert!(!reply.contains_key("sign"), "{reply:?}");
}

#[tokio::test]
async fn a_refund_over_tls_without_a_client_certificate_is_refused_and_changes_nothing() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = new_out_trade_no();
    // An armed fault must still be there afterwards: the refusal comes first.
    sandbox
        .set_faults(Faults {
            systemerror: 1,
            ..Faults::default()
        })
        .await
        .expect("armed");

    let http = http_client(&trusting_sandbox(&sandbox));
    let reply = post_refund(&http, sandbox.https_url(), &sandbox, &no, &rno)
        .await
        .expect("the handshake succeeds without a certificate");

    assert_refused(&reply, "No required SSL certificate was sent");
    assert_nothing_refunded(&sandbox, &no, &rno).await;
    // The next call with the certificate meets the fault the refused one left armed.
    let with_certificate = common::call(
        &sandbox,
        REFUND,
        &[
            ("out_trade_no", &no),
            ("out_refund_no", &rno),
            ("total_fee", "1000"),
            ("refund_fee", "100"),
        ],
        SignType::Md5,
    )
    .await;
    assert_eq!(
        field(&with_certificate, "err_code"),
        "SYSTEMERROR",
        "{with_certificate:?}"
    );
    assert_nothing_refunded(&sandbox, &no, &rno).await;
}

#[tokio::test]
async fn a_refund_over_plain_http_is_refused_even_with_a_certificate_configured() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = new_out_trade_no();

    // Over plain HTTP there is no handshake to send the certificate in.
    let http = http_client(&merchant_tls(&sandbox));
    let reply = post_refund(&http, sandbox.base_url(), &sandbox, &no, &rno)
        .await
        .expect("plain HTTP answers");

    assert_refused(&reply, "No required SSL certificate was sent");
    assert_nothing_refunded(&sandbox, &no, &rno).await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake_and_changes_nothing() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = new_out_trade_no();
    let stranger = TestCa::new("not WeChat's CA").expect("CA");
    let forged = stranger
        .issue_client(&sandbox.merchant().mch_id)
        .expect("a certificate with the right CN");
    let tls = ClientTls::from_pem(
        forged.cert_pem().as_bytes(),
        forged.key_pem().expose_secret().as_bytes(),
    )
    .expect("a valid pair")
    .with_extra_root(sandbox.tls_files().ca_pem().as_bytes())
    .expect("CA");

    let result = post_refund(&http_client(&tls), sandbox.https_url(), &sandbox, &no, &rno).await;

    assert!(
        result.is_err(),
        "the server refuses the handshake: {result:?}"
    );
    assert_nothing_refunded(&sandbox, &no, &rno).await;
}

#[tokio::test]
async fn the_merchants_pem_certificate_reaches_the_refund_api() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = new_out_trade_no();
    let files = sandbox.tls_files();
    let client = files.client().expect("issued");
    // As payment-service reads WECHAT_CLIENT_CERT, WECHAT_CLIENT_KEY and WECHAT_EXTRA_ROOT_CA.
    let tls = ClientTls::from_pem_files(client.cert_path(), client.key_path())
        .expect("the written PEM files")
        .with_extra_root_file(files.ca_path())
        .expect("the written CA");

    let reply = post_refund(&http_client(&tls), sandbox.https_url(), &sandbox, &no, &rno)
        .await
        .expect("answered");

    assert_eq!(field(&reply, "return_code"), "SUCCESS", "{reply:?}");
    assert_eq!(field(&reply, "result_code"), "SUCCESS", "{reply:?}");
    assert_eq!(
        sign::verify(&reply, &sandbox.merchant().api_key, SignType::Md5),
        Ok(())
    );
    let refund = sandbox.refund(&rno).await.expect("the refund exists");
    assert_eq!(refund.refund_fee, 100);
}

#[tokio::test]
async fn wechats_p12_with_the_default_password_reaches_the_refund_api() {
    let sandbox = sandbox().await;
    let no = paid_order(&sandbox, 1000).await;
    let rno = new_out_trade_no();
    let files = sandbox.tls_files();
    let client = files.client().expect("issued");
    assert_eq!(client.p12_password(), sandbox.merchant().mch_id);
    // WECHAT_CLIENT_P12 without WECHAT_CLIENT_P12_PASSWORD: the mch_id opens it.
    let tls = ClientTls::from_p12_file(client.p12_path(), &sandbox.merchant().mch_id)
        .expect("the legacy-encrypted p12 opens with the mch_id")
        .with_extra_root_file(files.ca_path())
        .expect("the written CA");

    let reply = post_refund(&http_client(&tls), sandbox.https_url(), &sandbox, &no, &rno)
        .await
        .expect("answered");

    assert_eq!(field(&reply, "result_code"), "SUCCESS", "{reply:?}");
    sandbox.refund(&rno).await.expect("the refund exists");
}

#[tokio::test]
async fn the_product_client_places_orders_over_https_trusting_the_sandbox_ca() {
    let sandbox = sandbox().await;
    let with = |tls: Option<ClientTls>| {
        V2Client::new(
            sandbox.https_url(),
            wxpay_core::wechat::MerchantEntry::direct(
                "default",
                sandbox.merchant().clone(),
                SignType::Md5,
            ),
            ClientOptions {
                tls,
                max_attempts: 1,
                ..ClientOptions::default()
            },
        )
        .expect("client builds")
    };
    let trusting = with(Some(trusting_sandbox(&sandbox)));
    let with_certificate = with(Some(merchant_tls(&sandbox)));
    let untrusting = with(None);
    let (a, b, c) = (new_out_trade_no(), new_out_trade_no(), new_out_trade_no());
    let notify = "http://127.0.0.1:9/n";

    let placed = trusting
        .unified_order(&order(&a, 100, notify, SignType::Md5))
        .await;
    let placed_with_certificate = with_certificate
        .unified_order(&order(&b, 100, notify, SignType::HmacSha256))
        .await;
    let queried = with_certificate.order_query(&b, SignType::Md5).await;
    let unknown_ca = untrusting
        .unified_order(&order(&c, 100, notify, SignType::Md5))
        .await;

    assert!(placed.is_ok(), "{placed:?}");
    assert!(!trusting.has_client_certificate());
    assert!(
        placed_with_certificate.is_ok(),
        "{placed_with_certificate:?}"
    );
    assert!(with_certificate.has_client_certificate());
    assert!(queried.is_ok(), "{queried:?}");
    assert!(
        matches!(unknown_ca, Err(WechatError::Transport(_))),
        "without the extra root the sandbox's certificate is not trusted: {unknown_ca:?}"
    );
}

/// A sandbox on given PEM files: its own CA, server certificate and key.
async fn sandbox_with_given_ca(ca: &TestCa, dir: &std::path::Path) -> SandboxHandle {
    let server = ca.issue_server(&["127.0.0.1"]).expect("server certificate");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("written");
        path
    };
    let source = TlsSource::Files {
        ca: write("ca.pem", &ca.cert_pem()),
        cert: write("server.pem", &server.cert_pem()),
        key: write("server.key", server.key_pem().expose_secret()),
    };
    wechat_sandbox::spawn(SandboxConfig {
        tls: TlsSettings {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        },
        ..SandboxConfig::for_tests()
    })
    .await
}

#[tokio::test]
async fn a_certificate_for_another_merchant_is_refused_as_certificate_not_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("given CA").expect("CA");
    let sandbox = sandbox_with_given_ca(&ca, dir.path()).await;
    assert!(
        sandbox.tls_files().client().is_none(),
        "nothing issued for given files"
    );
    let no = paid_order(&sandbox, 1000).await;
    let (rno, rno2) = (new_out_trade_no(), new_out_trade_no());
    let tls_for = |cn: &str| {
        let cert = ca.issue_client(cn).expect("client certificate");
        ClientTls::from_pem(
            cert.cert_pem().as_bytes(),
            cert.key_pem().expose_secret().as_bytes(),
        )
        .expect("pair")
        .with_extra_root(ca.cert_pem().as_bytes())
        .expect("CA")
    };

    let other_merchant = http_client(&tls_for("1230000109"));
    let refused = post_refund(&other_merchant, sandbox.https_url(), &sandbox, &no, &rno)
        .await
        .expect("answered");
    let refund = sandbox.refund(&rno).await;
    let ours = http_client(&tls_for(&sandbox.merchant().mch_id));
    let accepted = post_refund(&ours, sandbox.https_url(), &sandbox, &no, &rno2)
        .await
        .expect("answered");

    assert_refused(&refused, "certificate not match");
    assert_eq!(refund.map_err(|e| e.status()), Err(Some(404)));
    assert_eq!(field(&accepted, "result_code"), "SUCCESS", "{accepted:?}");
}

#[tokio::test]
async fn stopping_the_sandbox_removes_its_generated_files() {
    let sandbox = sandbox().await;
    let dir = sandbox
        .tls_files()
        .dir()
        .expect("generated into a directory")
        .to_path_buf();
    for name in [
        "ca.pem",
        "server.pem",
        "server.key",
        "client.pem",
        "client.key",
        "client.p12",
    ] {
        assert!(dir.join(name).is_file(), "{name}");
    }

    sandbox.shutdown().await.expect("stops");

    // The temporary directory goes with the listener (give the task a moment to drop it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dir.exists() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!dir.exists(), "{}", dir.display());
}
