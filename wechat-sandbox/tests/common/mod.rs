//! Shared test helpers: a sandbox on port 0, the product's WeChat client pointed
//! at it, the merchant's TLS configuration for `/secapi/`, and a tiny
//! notification receiver that answers as a test tells it to.

#![allow(dead_code)] // each test binary uses a different subset

pub mod v3;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
// The product's own WeChat client, so the sandbox is checked against what will call it.
use payment_service::wechat::{ClientOptions, ClientTls, UnifiedOrder, V2Client};
use secrecy::ExposeSecret;
use wechat_sandbox::{SandboxConfig, SandboxHandle};
use wxpay_core::{
    domain::{Fee, Nonce, OutTradeNo},
    wechat::{sign, xml, Fields, MerchantEntry, SignType, TradeType},
};

pub async fn sandbox() -> SandboxHandle {
    wechat_sandbox::spawn(SandboxConfig::for_tests()).await
}

pub fn client(sandbox: &SandboxHandle) -> V2Client {
    client_with(
        sandbox,
        ClientOptions {
            backoff: Duration::from_millis(5),
            ..ClientOptions::default()
        },
    )
}

pub fn client_with(sandbox: &SandboxHandle, options: ClientOptions) -> V2Client {
    let entry = MerchantEntry::direct("default", sandbox.merchant().clone(), SignType::Md5);
    V2Client::new(sandbox.base_url(), entry, options).expect("client builds")
}

/// What a merchant configures for `/secapi/`: the client certificate the
/// sandbox issued (PEM pair) and its CA as an extra trusted root.
pub fn merchant_tls(sandbox: &SandboxHandle) -> ClientTls {
    let files = sandbox.tls_files();
    let client = files
        .client()
        .expect("the sandbox issued a client certificate");
    ClientTls::from_pem(
        client.cert_pem().as_bytes(),
        client.key_pem().expose_secret().as_bytes(),
    )
    .expect("the issued certificate and key")
    .with_extra_root(files.ca_pem().as_bytes())
    .expect("the sandbox's CA")
}

/// A plain reqwest client configured with `tls`.
pub fn http_client(tls: &ClientTls) -> reqwest::Client {
    tls.configure(reqwest::Client::builder())
        .build()
        .expect("client builds")
}

pub fn new_out_trade_no() -> String {
    OutTradeNo::generate().as_str().to_owned()
}

pub fn order<'a>(
    out_trade_no: &'a str,
    fee: i64,
    notify_url: &'a str,
    sign_type: SignType,
) -> UnifiedOrder<'a> {
    UnifiedOrder {
        out_trade_no,
        body: "测试商品",
        total_fee: Fee::new(fee).expect("positive"),
        attach: "cart=42",
        spbill_create_ip: "127.0.0.1",
        trade_type: TradeType::Jsapi,
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        sub_openid: "",
        product_id: "",
        scene_info: "",
        notify_url,
        time_expire: None,
        sign_type,
    }
}

/// What the receiver saw.
#[derive(Debug, Default)]
struct Seen {
    bodies: Vec<Fields>,
}

/// A merchant's notify_url that answers FAIL to the first `fail_first` requests,
/// then SUCCESS, and keeps every notification it got.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    seen: Arc<Mutex<Seen>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/notify", post(receive))
            .with_state((seen.clone(), fail_first));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/notify", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    pub fn received(&self) -> Vec<Fields> {
        self.seen.lock().expect("lock").bodies.clone()
    }

    /// Waits until `count` notifications arrived (or 5 s passed), then returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Fields> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.received().len() < count && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.received()
    }
}

async fn receive(
    State((seen, fail_first)): State<(Arc<Mutex<Seen>>, usize)>,
    body: Bytes,
) -> String {
    let fields = xml::decode(&body).expect("the sandbox sends valid XML");
    let mut seen = seen.lock().expect("lock");
    seen.bodies.push(fields);
    let ok = seen.bodies.len() > fail_first;
    xml::notify_reply(ok, if ok { "OK" } else { "try again" })
}

/// Signs `pairs` (plus the merchant's appid, mch_id and a nonce) with `sign_type`,
/// POSTs them to `path` as XML and returns the reply's content type and bytes.
/// `/secapi/` goes to the TLS listener with the merchant's certificate, as it
/// must; everything else over plain HTTP.
pub async fn call_raw(
    sandbox: &SandboxHandle,
    path: &str,
    pairs: &[(&str, &str)],
    sign_type: SignType,
) -> (String, Vec<u8>) {
    let (http, base) = if path.starts_with("/secapi/") {
        (http_client(&merchant_tls(sandbox)), sandbox.https_url())
    } else {
        (reqwest::Client::new(), sandbox.base_url())
    };
    let url = format!("{base}{path}");
    let response = http
        .post(url)
        .body(signed_body(sandbox, pairs, sign_type))
        .send()
        .await
        .expect("sent");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response.bytes().await.expect("reply").to_vec();
    (content_type, bytes)
}

/// The XML body of a request signed as the sandbox's merchant.
pub fn signed_body(sandbox: &SandboxHandle, pairs: &[(&str, &str)], sign_type: SignType) -> String {
    let merchant = sandbox.merchant();
    let mut fields: Fields = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    fields.insert("appid".into(), merchant.app_id.clone());
    fields.insert("mch_id".into(), merchant.mch_id.clone());
    fields.insert("nonce_str".into(), Nonce::generate().as_str().into());
    if sign_type == SignType::HmacSha256 {
        fields.insert("sign_type".into(), sign_type.as_str().into());
    }
    sign::sign_fields(&mut fields, &merchant.api_key, sign_type);
    xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodes")
}

/// [`call_raw`], for a reply in XML: checks its signature when it has one and
/// returns its fields. For endpoints the product's client lacks.
pub async fn call(
    sandbox: &SandboxHandle,
    path: &str,
    pairs: &[(&str, &str)],
    sign_type: SignType,
) -> Fields {
    let (_, reply) = call_raw(sandbox, path, pairs, sign_type).await;
    let reply = xml::decode(&reply).expect("the sandbox answers XML");
    if reply.contains_key("sign") {
        assert_eq!(
            sign::verify(&reply, &sandbox.merchant().api_key, sign_type),
            Ok(()),
            "{reply:?}"
        );
    }
    reply
}

/// A field of a reply, or "" when absent.
pub fn field<'a>(reply: &'a Fields, name: &str) -> &'a str {
    reply.get(name).map(String::as_str).unwrap_or("")
}

/// Places an order for `fee` fen and has the payer pay it (notification dropped).
pub async fn paid_order(sandbox: &SandboxHandle, fee: i64) -> String {
    let no = new_out_trade_no();
    client(sandbox)
        .unified_order(&order(&no, fee, "http://127.0.0.1:9/n", SignType::Md5))
        .await
        .expect("placed");
    sandbox
        .pay(
            &no,
            wechat_sandbox::PayOptions {
                notify: wechat_sandbox::NotifyOptions {
                    delivery: wechat_sandbox::Delivery::Drop,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("paid");
    no
}
