//! A small HTTP server that plays WeChat Pay API v3 for these tests: it checks
//! every request's `Authorization` with the merchant's public key (as WeChat
//! does), serves `GET /v3/certificates` with its listed certificates sealed
//! under the merchant's APIv3 key, answers other paths from a script, and
//! signs its answers with whichever key it "signs with now" (a platform
//! certificate or a WeChat Pay public key) — or signs them wrongly on request.
//! Every request is recorded so tests can count and inspect them.
#![allow(dead_code)] // each test binary uses part of it

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::{to_bytes, Body},
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use wxpay_core::{
    domain::Nonce,
    wechat::{
        v3::{
            models::{CertificateEntry, Certificates, EncryptedResource},
            sign::{request_message, Authorization},
            verify, Apiv3Key, MerchantSigner, WechatKey, WechatKeys,
        },
        ApiKey, Merchant, MerchantEntry, SignType, V3Merchant,
    },
};

pub const MCH_ID: &str = "1900000109";
pub const APIV3_KEY: &str = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb";
pub const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD00000001";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0119000001092026120700000000000001";
pub const CERT1_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const CERT2_SERIAL: &str = "2C7E5A3B4D6F8091A2B3C4D5E6F708192A3B4C5D";
pub const EXPIRED_SERIAL: &str = "11E0A1B2C3D4E5F60718293A4B5C6D7E8F901234";

const CORE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/testdata/v3/");
const OURS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/");

pub fn core_file(name: &str) -> String {
    std::fs::read_to_string(format!("{CORE}{name}")).expect("core test file")
}

pub fn our_file(name: &str) -> String {
    std::fs::read_to_string(format!("{OURS}{name}")).expect("wechat-v3 test file")
}

/// A key WeChat signs answers with, and the id `Wechatpay-Serial` names it by.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    signer: MerchantSigner,
}

impl SigningKey {
    pub fn cert1() -> Self {
        Self::new(CERT1_SERIAL, &core_file("platform_key.pem"))
    }
    pub fn cert2() -> Self {
        Self::new(CERT2_SERIAL, &our_file("platform2_key.pem"))
    }
    pub fn expired() -> Self {
        Self::new(EXPIRED_SERIAL, &our_file("platform2_key.pem"))
    }
    pub fn public_key() -> Self {
        Self::new(PUB_KEY_ID, &our_file("wechatpay_pub_key_private.pem"))
    }
    fn new(id: &str, private_pem: &str) -> Self {
        Self {
            id: id.to_owned(),
            signer: MerchantSigner::from_pem(private_pem.as_bytes(), id).expect("test key"),
        }
    }

    /// `Wechatpay-*` headers signing `body` at `timestamp`.
    pub fn headers(&self, body: &[u8], timestamp: i64) -> Vec<(&'static str, String)> {
        let nonce = Nonce::generate().as_str().to_owned();
        let ts = timestamp.to_string();
        let signature = self
            .signer
            .sign(&verify::message(&ts, &nonce, body))
            .expect("sign");
        vec![
            ("wechatpay-serial", self.id.clone()),
            ("wechatpay-signature", signature),
            ("wechatpay-timestamp", ts),
            ("wechatpay-nonce", nonce),
            (
                "wechatpay-signature-type",
                "WECHATPAY2-SHA256-RSA2048".into(),
            ),
        ]
    }
}

/// The certificates a test server can list: (serial, PEM).
pub fn cert1_pem() -> String {
    core_file("platform_cert.pem")
}
pub fn cert2_pem() -> String {
    our_file("platform2_cert.pem")
}
pub fn expired_pem() -> String {
    our_file("expired_cert.pem")
}

/// The WeChat Pay public key, as a merchant in public-key mode configures it.
pub fn wechatpay_public_key() -> WechatKey {
    WechatKey::from_public_key_pem(PUB_KEY_ID, our_file("wechatpay_pub_key.pem").as_bytes())
        .expect("public key")
}

/// The v3 merchant of these tests, with or without a WeChat Pay public key.
pub fn merchant(public_key: bool) -> MerchantEntry {
    merchant_with(MCH_ID, public_key)
}

pub fn merchant_with(mch_id: &str, public_key: bool) -> MerchantEntry {
    let mut entry = MerchantEntry::direct(
        "shop",
        Merchant {
            app_id: "wx2222222222222222".into(),
            mch_id: mch_id.into(),
            api_key: ApiKey::parse("0123456789abcdef0123456789abcdef").expect("v2 key"),
        },
        SignType::HmacSha256,
    );
    entry.v3 = Some(V3Merchant {
        apiv3_key: Apiv3Key::parse(APIV3_KEY).expect("apiv3 key"),
        signer: MerchantSigner::from_pem(core_file("merchant_key.pem").as_bytes(), MERCHANT_SERIAL)
            .expect("merchant key"),
        public_key: public_key.then(wechatpay_public_key),
        private_key_path: format!("{CORE}merchant_key.pem"),
        public_key_path: public_key.then(|| format!("{OURS}wechatpay_pub_key.pem")),
    });
    entry
}

/// Keys that verify what the fake signs with `signing`.
pub fn keys_of(signing: &[SigningKey]) -> WechatKeys {
    WechatKeys::new(
        signing
            .iter()
            .map(|s| match s.id.as_str() {
                PUB_KEY_ID => wechatpay_public_key(),
                CERT1_SERIAL => WechatKey::from_certificate_pem(&cert1_pem()).expect("cert1"),
                CERT2_SERIAL => WechatKey::from_certificate_pem(&cert2_pem()).expect("cert2"),
                other => panic!("no certificate for {other}"),
            })
            .collect(),
    )
}

/// How a scripted answer is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// By the key the server signs with now.
    Good,
    /// A valid signature over other bytes than the body sent.
    Tampered,
    /// No `Wechatpay-*` headers at all (WeChat's error answers).
    Unsigned,
    /// Signed, 10 minutes ago.
    Stale,
}

#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: String,
    pub signing: Signing,
    pub delay: Duration,
}

impl Scripted {
    pub fn ok(body: &str) -> Self {
        Self {
            status: 200,
            body: body.into(),
            signing: Signing::Good,
            delay: Duration::ZERO,
        }
    }
    pub fn error(status: u16, code: &str) -> Self {
        Self {
            status,
            body: format!(r#"{{"code":"{code}","message":"scripted {code}"}}"#),
            signing: Signing::Unsigned,
            delay: Duration::ZERO,
        }
    }
    pub fn signed(mut self, signing: Signing) -> Self {
        self.signing = signing;
        self
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub body: String,
    /// Whether `Authorization` verified with the merchant's public key over
    /// this exact method, URI and body.
    pub authorized: bool,
    pub nonce: Option<String>,
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    pub wechatpay_serial: Option<String>,
}

struct Script {
    /// What `GET /v3/certificates` lists: (serial, PEM).
    listed: Vec<(String, String)>,
    signing: SigningKey,
    answers: VecDeque<Scripted>,
    seen: Vec<Seen>,
    certificate_delay: Duration,
    /// Sign the certificate list wrongly.
    tamper_certificates: bool,
}

pub struct Fake {
    merchant_key: WechatKey,
    apiv3: Apiv3Key,
    script: Mutex<Script>,
}

impl Fake {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("script lock")
    }
}

/// The running server; stops when dropped.
pub struct FakeWechat {
    pub addr: SocketAddr,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeWechat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeWechat {
    /// A server signing with `signing` and listing `listed` certificates.
    pub async fn start(signing: SigningKey, listed: Vec<(&str, String)>) -> Self {
        let fake = Arc::new(Fake {
            merchant_key: WechatKey::from_public_key_pem(
                "merchant",
                core_file("merchant_pub.pem").as_bytes(),
            )
            .expect("merchant public key"),
            apiv3: Apiv3Key::parse(APIV3_KEY).expect("apiv3 key"),
            script: Mutex::new(Script {
                listed: listed
                    .into_iter()
                    .map(|(s, pem)| (s.to_owned(), pem))
                    .collect(),
                signing,
                answers: VecDeque::new(),
                seen: Vec::new(),
                certificate_delay: Duration::ZERO,
                tamper_certificates: false,
            }),
        });
        let app = Router::new()
            .route("/v3/certificates", get(certificates))
            .fallback(scripted)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, fake, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, answer: Scripted) {
        self.fake.script().answers.push_back(answer);
    }

    pub fn sign_with(&self, key: SigningKey) {
        self.fake.script().signing = key;
    }

    pub fn list(&self, listed: Vec<(&str, String)>) {
        self.fake.script().listed = listed
            .into_iter()
            .map(|(s, pem)| (s.to_owned(), pem))
            .collect();
    }

    pub fn delay_certificates(&self, delay: Duration) {
        self.fake.script().certificate_delay = delay;
    }

    pub fn tamper_certificates(&self, tamper: bool) {
        self.fake.script().tamper_certificates = tamper;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.fake.script().seen.clone()
    }

    /// How many requests reached `path` (without the query).
    pub fn hits(&self, path: &str) -> usize {
        self.fake
            .script()
            .seen
            .iter()
            .filter(|s| s.uri.split('?').next() == Some(path))
            .count()
    }

    pub fn certificate_downloads(&self) -> usize {
        self.hits("/v3/certificates")
    }

    /// `Wechatpay-*` headers as the server would sign `body` now.
    pub fn sign_now(&self, body: &[u8]) -> Vec<(&'static str, String)> {
        let key = self.fake.script().signing.clone();
        key.headers(body, chrono::Utc::now().timestamp())
    }
}

/// Reads the request, checks and records it.
async fn record(fake: &Fake, req: Request) -> Seen {
    let method = req.method().as_str().to_owned();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let header =
        |h: &HeaderMap, name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let headers = req.headers().clone();
    let body = to_bytes(req.into_body(), 1 << 20)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let auth = header(&headers, "authorization")
        .as_deref()
        .and_then(Authorization::parse);
    let authorized = auth.as_ref().is_some_and(|a| {
        a.mch_id == MCH_ID
            && a.serial_no == MERCHANT_SERIAL
            && fake.merchant_key.verifies(
                request_message(&method, &uri, a.timestamp, &a.nonce, &body).as_bytes(),
                &a.signature,
            )
    });
    let seen = Seen {
        method,
        uri,
        body,
        authorized,
        nonce: auth.map(|a| a.nonce),
        accept: header(&headers, "accept"),
        user_agent: header(&headers, "user-agent"),
        wechatpay_serial: header(&headers, "wechatpay-serial"),
    };
    fake.script().seen.push(seen.clone());
    seen
}

fn respond(status: u16, body: String, signing: Option<(&SigningKey, Signing)>) -> Response {
    let mut response = Response::new(Body::from(body.clone()));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    if let Some((key, how)) = signing {
        let now = chrono::Utc::now().timestamp();
        let signed = match how {
            Signing::Unsigned => return response,
            Signing::Good => key.headers(body.as_bytes(), now),
            Signing::Tampered => key.headers(format!("{body} ").as_bytes(), now),
            Signing::Stale => key.headers(body.as_bytes(), now - 600),
        };
        for (name, value) in signed {
            headers.insert(name, HeaderValue::from_str(&value).expect("header"));
        }
    }
    response
}

fn unauthorized() -> Response {
    respond(
        401,
        r#"{"code":"SIGN_ERROR","message":"the Authorization signature does not verify"}"#.into(),
        None,
    )
}

async fn certificates(State(fake): State<Arc<Fake>>, req: Request) -> Response {
    let seen = record(&fake, req).await;
    if !seen.authorized {
        return unauthorized();
    }
    let (listed, key, delay, tamper) = {
        let s = fake.script();
        (
            s.listed.clone(),
            s.signing.clone(),
            s.certificate_delay,
            s.tamper_certificates,
        )
    };
    tokio::time::sleep(delay).await;
    let data = listed
        .iter()
        .map(|(serial, pem)| {
            let nonce: String = Nonce::generate().as_str()[..12].to_owned();
            CertificateEntry {
                serial_no: serial.clone(),
                effective_time: "2026-12-01T08:00:00+08:00".into(),
                expire_time: "2031-12-01T08:00:00+08:00".into(),
                encrypt_certificate: EncryptedResource::seal(
                    &fake.apiv3,
                    &nonce,
                    "certificate",
                    "certificate",
                    pem.as_bytes(),
                )
                .expect("seal"),
            }
        })
        .collect();
    let body = serde_json::to_string(&Certificates { data }).expect("json");
    let how = if tamper {
        Signing::Tampered
    } else {
        Signing::Good
    };
    respond(200, body, Some((&key, how)))
}

async fn scripted(State(fake): State<Arc<Fake>>, req: Request) -> impl IntoResponse {
    let seen = record(&fake, req).await;
    if !seen.authorized {
        return unauthorized();
    }
    let (answer, key) = {
        let mut s = fake.script();
        (s.answers.pop_front(), s.signing.clone())
    };
    let Some(answer) = answer else {
        return respond(
            500,
            r#"{"code":"TEST_UNSCRIPTED","message":"no scripted answer left"}"#.into(),
            None,
        );
    };
    tokio::time::sleep(answer.delay).await;
    respond(answer.status, answer.body, Some((&key, answer.signing)))
}
