//! The v3 side of the test harness: a sandbox hosting a direct v3 merchant
//! and a v3 service provider (with one sub merchant), each issued its API key
//! pair; requests signed as a v3 client signs them, answers kept raw for
//! core's verifier; a JSON notify_url that keeps each notification's headers
//! and raw body.

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use chrono::Utc;
use serde_json::{json, Value};
use wechat_sandbox::{
    Account, KeyMode, SandboxConfig, SandboxHandle, SubMerchant, V3Account, WechatSideKeys,
};
use wxpay_core::{
    domain::Nonce,
    wechat::{
        v3::{
            models::Certificates,
            sign::authorization,
            verify::{verify, SignedHeaders},
            Apiv3Key, MerchantSigner, VerifyError, WechatKey, WechatKeys,
        },
        ApiKey, Merchant,
    },
};

pub const DIRECT: &str = "1900000300";
pub const DIRECT_APP: &str = "wx3333333333333333";
pub const PROVIDER: &str = "1900000400";
pub const PROVIDER_APP: &str = "wx4444444444444444";
pub const SUB: &str = "1900000401";
pub const SUB_APP: &str = "wx5555555555555555";
pub const APIV3_KEY: &str = "v3sandboxtestkey0123456789abcdef";
/// The hosted merchants' APIv2 key: a v3 merchant may still call v2 (its
/// bill then lists both dialects' trades).
pub const V2_KEY: &str = "v2keyofthev3merchants0123456789a";

pub fn merchant(mch_id: &str, app_id: &str) -> Merchant {
    Merchant {
        app_id: app_id.into(),
        mch_id: mch_id.into(),
        api_key: ApiKey::parse(V2_KEY).expect("32 letters and digits"),
    }
}

pub fn apiv3_key() -> Apiv3Key {
    Apiv3Key::parse(APIV3_KEY).expect("32 bytes")
}

/// WeChat's key pairs, made once for every sandbox of this test binary (RSA
/// generation takes a while); each sandbox still issues its own platform
/// certificate from them, with its own serial.
pub fn wechat_keys() -> WechatSideKeys {
    static KEYS: OnceLock<WechatSideKeys> = OnceLock::new();
    KEYS.get_or_init(|| WechatSideKeys::generate().expect("key pairs"))
        .clone()
}

/// A sandbox hosting a direct v3 merchant and a v3 service provider (with
/// one sub merchant), both in `mode`, each issued its API key pair.
pub struct V3 {
    pub sandbox: SandboxHandle,
    pub direct: MerchantSigner,
    pub provider: MerchantSigner,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// An answer as received: status, headers and the raw body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Core's verdict on the answer's signature with `keys`.
    pub fn verify(&self, keys: &WechatKeys) -> Result<(), VerifyError> {
        let headers = SignedHeaders::from_fn(|n| self.header(n));
        verify(&headers, &self.body, keys, Utc::now())
    }

    /// The `{code, message}` of an error answer.
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_owned()
    }
}

impl V3 {
    pub async fn start(mode: KeyMode) -> Self {
        Self::start_with(mode, SandboxConfig::for_tests()).await
    }

    /// [`Self::start`] with `config`'s other settings (its accounts and
    /// WeChat keys are replaced).
    pub async fn start_with(mode: KeyMode, config: SandboxConfig) -> Self {
        let config = SandboxConfig {
            wechat_keys: Some(wechat_keys()),
            ..config
        };
        let v3 = V3Account::new(apiv3_key(), mode);
        let config = SandboxConfig {
            accounts: vec![
                Account::direct(merchant(DIRECT, DIRECT_APP)).with_v3(v3.clone()),
                Account::provider(
                    merchant(PROVIDER, PROVIDER_APP),
                    vec![SubMerchant {
                        sub_mch_id: SUB.into(),
                        sub_app_id: Some(SUB_APP.into()),
                    }],
                )
                .with_v3(v3),
            ],
            ..config
        };
        let sandbox = wechat_sandbox::spawn(config).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut signers = Vec::new();
        for mch_id in [DIRECT, PROVIDER] {
            let issued = sandbox
                .issue_merchant_key(mch_id, &dir.path().join(mch_id))
                .await
                .expect("issued");
            // What the product does with the file: read it as apiclient_key.pem.
            let pem = std::fs::read(&issued.private_key_path).expect("written");
            signers.push(MerchantSigner::from_pem(&pem, &issued.serial_no).expect("PKCS#8"));
        }
        let provider = signers.pop().expect("two");
        let direct = signers.pop().expect("two");
        Self {
            sandbox,
            direct,
            provider,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The WeChat Pay public key a merchant is given, as it would configure it.
    pub async fn public_key(&self, mch_id: &str) -> WechatKeys {
        let view = self
            .sandbox
            .v3_merchant(mch_id)
            .await
            .expect("a v3 merchant");
        let key =
            WechatKey::from_public_key_pem(&view.public_key_id, view.public_key_pem.as_bytes())
                .expect("a PEM public key");
        WechatKeys::new(vec![key])
    }

    /// A request signed by `signer` for `mch_id`, as a v3 client sends it.
    pub async fn call_as(
        &self,
        signer: &MerchantSigner,
        mch_id: &str,
        method: &str,
        uri: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let body = body.map(Value::to_string).unwrap_or_default();
        let nonce = Nonce::generate();
        let auth = authorization(
            signer,
            mch_id,
            method,
            uri,
            Utc::now().timestamp(),
            nonce.as_str(),
            &body,
        )
        .expect("signs");
        self.send(method, uri, &body, Some(&auth), extra).await
    }

    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        body: &str,
        auth: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Reply {
        let url = format!("{}{uri}", self.sandbox.base_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, url)
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let response = request.send().await.expect("sent");
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes().await.expect("body"),
        }
    }

    pub async fn direct(&self, method: &str, uri: &str, body: Option<&Value>) -> Reply {
        self.call_as(&self.direct, DIRECT, method, uri, body, &[])
            .await
    }

    pub async fn provider(&self, method: &str, uri: &str, body: Option<&Value>) -> Reply {
        self.call_as(&self.provider, PROVIDER, method, uri, body, &[])
            .await
    }

    pub async fn place_jsapi(&self, no: &str, notify_url: &str) -> Reply {
        self.direct(
            "POST",
            "/v3/pay/transactions/jsapi",
            Some(&direct_order(no, notify_url)),
        )
        .await
    }

    pub async fn query(&self, no: &str) -> Reply {
        self.direct(
            "GET",
            &format!("/v3/pay/transactions/out-trade-no/{no}?mchid={DIRECT}"),
            None,
        )
        .await
    }

    pub async fn close(&self, no: &str) -> Reply {
        self.direct(
            "POST",
            &format!("/v3/pay/transactions/out-trade-no/{no}/close"),
            Some(&json!({ "mchid": DIRECT })),
        )
        .await
    }
}

pub fn direct_order(no: &str, notify_url: &str) -> Value {
    json!({
        "appid": DIRECT_APP,
        "mchid": DIRECT,
        "description": "测试商品",
        "out_trade_no": no,
        "notify_url": notify_url,
        "attach": "cart=42",
        "amount": {"total": 4321, "currency": "CNY"},
        "payer": {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
    })
}

pub const NOTIFY: &str = "https://shop.example/wechat/v3/pay/notify";

/// The platform certificates `/v3/certificates` lists, opened with the APIv3 key.
pub fn opened(reply: &Reply) -> WechatKeys {
    let list: Certificates = serde_json::from_slice(&reply.body).expect("a certificate list");
    WechatKeys::new(
        list.data
            .iter()
            .map(|e| {
                WechatKey::from_certificate_entry(e, &apiv3_key()).expect("opens and names itself")
            })
            .collect(),
    )
}

/// A v3 notify_url: answers 500 `{"code":"FAIL"}` to the first `fail_first`
/// notifications, then 204, keeping each one's headers and raw body.
#[derive(Clone)]
pub struct JsonReceiver {
    pub url: String,
    pub seen: Seen,
}

/// Each notification received: its headers and raw body.
pub type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

impl JsonReceiver {
    pub async fn start(fail_first: usize) -> Self {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route("/notify", post(receive_json))
            .with_state((seen.clone(), fail_first));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/notify", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    pub async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Bytes)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let seen = self.seen.lock().expect("lock").clone();
            if seen.len() >= count || tokio::time::Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub async fn receive_json(
    State((seen, fail_first)): State<(Seen, usize)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut seen = seen.lock().expect("lock");
    seen.push((headers, body));
    if seen.len() > fail_first {
        (StatusCode::NO_CONTENT, String::new())
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":"FAIL","message":"try again"}"#.to_owned(),
        )
    }
}
