//! Test support shared by the gateway's integration tests: a gateway on port 0
//! over a fresh Postgres database, its merchants (`default`, and a second one in
//! service-provider mode for the tests that need two), orders, signed payment
//! and encrypted refund notifications, a Redis
//! subscriber, a private redis-server child, and a cuttable TCP proxy in front of
//! Postgres. Not every test binary uses every helper.
#![allow(dead_code)]

pub mod v3;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::StreamExt;
use gateway::{Application, CloudpaySecret, GatewayConfig};
use tokio::{net::TcpListener, process::Child, sync::oneshot, task::JoinHandle};
use wxpay_core::{
    domain::{
        Attach, ClientIp, Description, EventSource, Fee, IdempotencyKey, MerchantName, NewOrder,
        OpenId, Order, OrderEvent, OrderStatus, OutTradeNo, Placement,
    },
    wechat::{
        refund_crypto, sign, xml, ApiKey, Fields, Merchant, MerchantBook, MerchantEntry, SignType,
    },
};
use wxpay_store::{
    testing, {InsertOutcome, PgStore, Store, Transition, TransitionOutcome},
};

pub const APP_ID: &str = "wxd930ea5d5a258f4f";
pub const MCH_ID: &str = "10000100";
pub const API_KEY: &str = "gatewaytestkey0123456789abcdefgh";
/// 32 bytes, the shortest the gateway accepts.
pub const CLOUDPAY_SECRET: &str = "cloudpay-test-secret-0123456789a";

pub fn key() -> ApiKey {
    ApiKey::parse(API_KEY).expect("test key is valid")
}

/// The second merchant, `tenant-b`: a sub merchant placed through a service
/// provider, whose own appid, mch_id and key sign (HMAC-SHA256) its messages.
pub const B_NAME: &str = "tenant-b";
pub const B_APP_ID: &str = "wx2421b1c4370ec43b";
pub const B_MCH_ID: &str = "1900000200";
pub const B_API_KEY: &str = "providerkey0123456789abcdefghijk";
pub const B_SUB_MCH_ID: &str = "1900000201";
pub const B_SUB_APP_ID: &str = "wx1111111111111111";

pub fn b_key() -> ApiKey {
    ApiKey::parse(B_API_KEY).expect("B's key is valid")
}

/// `default`: the direct MD5 merchant every single-merchant test uses.
pub fn default_merchant() -> MerchantEntry {
    MerchantEntry::direct(
        MerchantName::DEFAULT,
        Merchant {
            app_id: APP_ID.into(),
            mch_id: MCH_ID.into(),
            api_key: key(),
        },
        SignType::Md5,
    )
}

/// `tenant-b`, in service-provider mode with a sub_mch_id and sub_app_id.
pub fn tenant_b() -> MerchantEntry {
    MerchantEntry {
        sub_mch_id: Some(B_SUB_MCH_ID.into()),
        sub_app_id: Some(B_SUB_APP_ID.into()),
        ..MerchantEntry::direct(
            B_NAME,
            Merchant {
                app_id: B_APP_ID.into(),
                mch_id: B_MCH_ID.into(),
                api_key: b_key(),
            },
            SignType::HmacSha256,
        )
    }
}

/// How to start a gateway.
pub struct Setup {
    pub redis_url: String,
    /// Route the gateway's database connections through this proxy.
    pub db_proxy: Option<SocketAddr>,
    pub cloudpay: bool,
    pub limits: gateway::connections::Limits,
    /// The merchants the gateway serves (`default` alone unless a test says).
    pub merchants: Vec<MerchantEntry>,
    /// WeChat's v3 keys (the platform-certificate manager over the fresh
    /// database unless set).
    pub wechat_keys: Option<Arc<dyn gateway::wechat_keys::KeySource>>,
    /// Platform certificates already in the database when the gateway
    /// starts (as another replica would have downloaded them).
    pub stored_certificates: Vec<wxpay_store::PlatformCertificate>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            redis_url: testing::redis_url(),
            db_proxy: None,
            cloudpay: true,
            limits: Default::default(),
            merchants: vec![default_merchant()],
            wechat_keys: None,
            stored_certificates: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    /// The metrics listener (`GATEWAY_METRICS_ADDR`).
    pub metrics_base: String,
    /// WeChat's orderquery as this gateway sees it (`WECHAT_API_BASE`).
    pub wechat: MockWechat,
    /// A direct connection to the gateway's database, for arranging and asserting.
    pub store: PgStore,
    pub database_url: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Setup::default()).await
}

pub async fn spawn_app_with(setup: Setup) -> TestApp {
    let database_url = testing::fresh_database_url().await.expect("fresh database");
    let store = PgStore::connect(&database_url, Default::default())
        .await
        .expect("migrated store");
    for cert in &setup.stored_certificates {
        store
            .save_platform_certificates(
                &cert.mch_id,
                std::slice::from_ref(cert),
                chrono::Utc::now(),
            )
            .await
            .expect("certificate kept");
    }
    let gateway_db_url = match setup.db_proxy {
        Some(addr) => with_authority(&database_url, &addr.to_string()),
        None => database_url.clone(),
    };
    let wechat = MockWechat::start().await;
    let config = GatewayConfig {
        database_url: gateway_db_url,
        redis_url: setup.redis_url,
        merchants: MerchantBook::new(setup.merchants).expect("distinct merchants"),
        addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        cloudpay_secret: setup
            .cloudpay
            .then(|| CloudpaySecret::parse(CLOUDPAY_SECRET).expect("secret")),
        wechat_api_base: wechat.url.clone(),
        wechat_extra_root_ca: None,
        limits: setup.limits,
        retention: std::time::Duration::from_secs(90 * 86_400),
    };
    let mut app = Application::build(config).await.expect("gateway builds");
    if let Some(keys) = setup.wechat_keys {
        app = app.with_wechat_keys(keys);
    }
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_base = format!(
        "http://127.0.0.1:{}",
        app.metrics_port().expect("a metrics listener")
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    TestApp {
        base,
        metrics_base,
        wechat,
        store,
        database_url,
        http: reqwest::Client::new(),
        stop: Some(stop),
        server: Some(server),
    }
}

/// `scheme://user@host:port/db` with another `host:port`.
pub fn with_authority(url: &str, host_port: &str) -> String {
    let start = url.find("://").map(|i| i + 3).expect("url has a scheme");
    let rest = &url[start..];
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..end];
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    format!("{}{user}{host_port}{}", &url[..start], &rest[end..])
}

/// `host:port` of a URL.
pub fn authority_of(url: &str) -> String {
    let start = url.find("://").map(|i| i + 3).expect("url has a scheme");
    let rest = &url[start..];
    let end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..end];
    authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority)
        .to_owned()
}

impl TestApp {
    pub async fn create_order(&self, fen: i64, sign_type: SignType) -> Order {
        self.create_order_for(fen, sign_type, MerchantName::DEFAULT)
            .await
    }

    /// A NOTPAY order placed with the merchant named `merchant`.
    pub async fn create_order_for(&self, fen: i64, sign_type: SignType, merchant: &str) -> Order {
        let no = OutTradeNo::generate();
        let new = NewOrder {
            caller: wxpay_core::domain::Caller::default_caller(),
            idempotency_key: IdempotencyKey::parse(&format!("key-{no}")).expect("key"),
            out_trade_no: no,
            openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").expect("openid"),
            description: Description::parse("测试商品").expect("description"),
            total_fee: Fee::new(fen).expect("fee"),
            attach: Attach::parse("").expect("attach"),
            client_ip: ClientIp::parse("127.0.0.1").expect("ip"),
            sign_type,
            expires_at: None,
            placement: Placement {
                merchant: MerchantName::parse(merchant).expect("merchant name"),
                ..Placement::default()
            },
        };
        match self.store.insert_order(&new).await.expect("insert order") {
            InsertOutcome::Inserted(order) => order,
            InsertOutcome::KeyTaken(_) => panic!("fresh key taken"),
        }
    }

    /// An order of `merchant` already paid (as if by an earlier notification
    /// whose event went out long ago: only what follows is news).
    pub async fn paid_order_for(&self, fen: i64, sign_type: SignType, merchant: &str) -> Order {
        let order = self.create_order_for(fen, sign_type, merchant).await;
        let t = Transition {
            out_trade_no: order.out_trade_no.clone(),
            to: OrderStatus::Success,
            transaction_id: Some(transaction_id()),
            cash_fee: Some(fen),
            paid_at: None,
            source: EventSource::Notify,
            guard: None,
        };
        match self.store.transition(&t).await.expect("paid") {
            TransitionOutcome::Applied { order, event, .. } => {
                self.store
                    .mark_published(&[event.id])
                    .await
                    .expect("marked published");
                order
            }
            TransitionOutcome::Unchanged { .. } => panic!("order was not payable"),
        }
    }

    /// After a refused refund notification: the paid order (version 2, after its
    /// payment) is as it was and has no refund.
    pub async fn assert_no_refund_applied(&self, no: &OutTradeNo, name: &str) {
        let now = self.order(no).await;
        assert_eq!(
            (now.status, now.refunded_fee, now.version),
            (OrderStatus::Success, 0, 2),
            "{name}: order changed"
        );
        assert!(
            self.store.refunds_of(no).await.expect("list").is_empty(),
            "{name}: a refund was recorded"
        );
    }

    pub async fn order(&self, no: &OutTradeNo) -> Order {
        self.store
            .order(no)
            .await
            .expect("read order")
            .expect("order exists")
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.text().await.expect("reply body"))
    }

    pub async fn notify(&self, body: impl Into<reqwest::Body>) -> (u16, String) {
        self.post("/wechat/pay/notify", body).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.text().await.expect("reply body"))
    }

    /// `GET /metrics` on the metrics listener.
    pub async fn metrics(&self) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}/metrics", self.metrics_base))
            .send()
            .await
            .expect("request sent");
        let status = res.status().as_u16();
        (status, res.text().await.expect("reply body"))
    }

    /// `/readyz` once it says something other than `starting` and, within
    /// a few of its background refreshes, what `expected` is.
    pub async fn readyz_settled(&self, expected: u16) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(8);
        loop {
            let (status, body) = self.get("/readyz").await;
            if (status == expected && body != "starting") || tokio::time::Instant::now() > deadline
            {
                return (status, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    pub async fn event_rows(&self, no: &OutTradeNo) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM order_events WHERE out_trade_no = $1")
            .bind(no.as_str())
            .fetch_one(self.store.pool())
            .await
            .expect("count events")
    }

    pub async fn unpublished_rows(&self, no: &OutTradeNo) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM order_events WHERE out_trade_no = $1 AND published_at IS NULL",
        )
        .bind(no.as_str())
        .fetch_one(self.store.pool())
        .await
        .expect("count unpublished events")
    }

    pub async fn anomalies(&self, no: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM anomalies WHERE out_trade_no = $1")
            .bind(no)
            .fetch_one(self.store.pool())
            .await
            .expect("count anomalies")
    }

    /// Every row of `table` (`notifications`, `anomalies`, ...), whatever it is about.
    pub async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(self.store.pool())
            .await
            .expect("count rows")
    }

    /// The kinds of the anomalies recorded about `no`, oldest first.
    pub async fn anomaly_kinds(&self, no: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM anomalies WHERE out_trade_no = $1 ORDER BY id")
            .bind(no)
            .fetch_all(self.store.pool())
            .await
            .expect("read anomalies")
    }

    pub async fn notifications(&self, no: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT verdict FROM notifications WHERE out_trade_no = $1 ORDER BY id")
            .bind(no)
            .fetch_all(self.store.pool())
            .await
            .expect("read notifications")
    }

    /// The verdicts kept for `no`, once at least `n` are there (applied
    /// payments and their duplicates are kept in batches, a moment later).
    pub async fn notifications_eventually(&self, no: &str, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.notifications(no).await;
            if rows.len() >= n || tokio::time::Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Signals shutdown and checks the gateway stops cleanly.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let res = tokio::time::timeout(Duration::from_secs(20), server)
                .await
                .expect("gateway stops in time")
                .expect("gateway task joins");
            res.expect("gateway exits cleanly");
        }
    }
}

/// The fields of a genuine successful payment notification for `order`, from
/// the `default` merchant.
pub fn pay_fields(order: &Order, transaction_id: &str) -> Fields {
    pay_fields_for(order, transaction_id, &default_merchant())
}

/// The same, naming `merchant`'s numbers (and, in service-provider mode, its
/// sub_mch_id and sub_appid, as WeChat sends them).
pub fn pay_fields_for(order: &Order, transaction_id: &str, merchant: &MerchantEntry) -> Fields {
    let fee = order.total_fee.fen().to_string();
    let mut fields: Fields = [
        ("return_code", "SUCCESS"),
        ("result_code", "SUCCESS"),
        ("appid", merchant.merchant.app_id.as_str()),
        ("mch_id", merchant.merchant.mch_id.as_str()),
        ("nonce_str", "5K8264ILTKCH16CQ2502SI8ZNMTM67VS"),
        ("openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"),
        ("is_subscribe", "N"),
        ("trade_type", "JSAPI"),
        ("bank_type", "CMC"),
        ("total_fee", fee.as_str()),
        ("cash_fee", fee.as_str()),
        ("fee_type", "CNY"),
        ("transaction_id", transaction_id),
        ("out_trade_no", order.out_trade_no.as_str()),
        ("time_end", "20240102150405"),
        // A field WeChat may add that no typed struct here knows: it must be signed over too.
        ("rate_value", "1.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(sub) = &merchant.sub_mch_id {
        fields.insert("sub_mch_id".into(), sub.clone());
    }
    if let Some(sub) = &merchant.sub_app_id {
        fields.insert("sub_appid".into(), sub.clone());
    }
    fields
}

/// A refund notification for `order` as WeChat sends it for `merchant` (its
/// numbers outside), with `req_info` encrypted under `key`.
pub fn refund_notification(
    order: &Order,
    out_refund_no: &str,
    refund_fee: i64,
    transaction_id: &str,
    merchant: &MerchantEntry,
    key: &ApiKey,
) -> String {
    let inner: Fields = [
        ("out_trade_no", order.out_trade_no.to_string()),
        ("transaction_id", transaction_id.to_owned()),
        ("out_refund_no", out_refund_no.to_owned()),
        ("refund_id", format!("5000{out_refund_no}")),
        ("total_fee", order.total_fee.fen().to_string()),
        ("refund_fee", refund_fee.to_string()),
        ("settlement_refund_fee", refund_fee.to_string()),
        ("refund_status", "SUCCESS".to_owned()),
        ("success_time", "2024-01-02 15:04:05".to_owned()),
        ("refund_recv_accout", "支付用户零钱".to_owned()),
        ("refund_account", "REFUND_SOURCE_RECHARGE_FUNDS".to_owned()),
        ("refund_request_source", "API".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut outer: Fields = [
        ("return_code", "SUCCESS".to_owned()),
        ("appid", merchant.merchant.app_id.clone()),
        ("mch_id", merchant.merchant.mch_id.clone()),
        ("nonce_str", "TeqClE3i0mvn3DrK".to_owned()),
        (
            "req_info",
            refund_crypto::encrypt_req_info(&inner, key).expect("encrypts"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(sub) = &merchant.sub_mch_id {
        outer.insert("sub_mch_id".into(), sub.clone());
    }
    if let Some(sub) = &merchant.sub_app_id {
        outer.insert("sub_appid".into(), sub.clone());
    }
    encode(&outer)
}

/// Signs (adding sign_type for HMAC, as WeChat does) and encodes.
pub fn signed(mut fields: Fields, key: &ApiKey, sign_type: SignType) -> String {
    sign::sign_fields(&mut fields, key, sign_type);
    encode(&fields)
}

pub fn encode(fields: &Fields) -> String {
    xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).expect("encodable")
}

/// A unique WeChat-style transaction id.
pub fn transaction_id() -> String {
    format!("4200{}", ulid::Ulid::new().to_string().to_lowercase())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(28)
        .collect()
}

pub fn return_code(reply: &str) -> String {
    xml::decode(reply.as_bytes())
        .ok()
        .and_then(|f| f.get("return_code").cloned())
        .unwrap_or_else(|| format!("<not a reply: {reply}>"))
}

/// A subscriber to one order's channel.
pub struct Subscriber {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>>,
}

pub async fn subscribe(redis_url: &str, no: &OutTradeNo) -> Subscriber {
    let client = redis::Client::open(redis_url).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("redis pubsub");
    pubsub
        .subscribe(wxpay_store::events::channel(no.as_str()))
        .await
        .expect("subscribed");
    Subscriber {
        stream: Box::pin(pubsub.into_on_message()),
    }
}

impl Subscriber {
    pub async fn next(&mut self, within: Duration) -> Option<OrderEvent> {
        let msg = tokio::time::timeout(within, self.stream.next())
            .await
            .ok()??;
        let payload: String = msg.get_payload().expect("text payload");
        Some(serde_json::from_str(&payload).expect("an OrderEvent"))
    }

    /// Every event that arrives until `quiet` passes without one.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<OrderEvent> {
        let mut seen = Vec::new();
        while let Some(e) = self.next(quiet).await {
            seen.push(e);
        }
        seen
    }
}

/// A free local port (bound then released; tests then bind it themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A redis-server child on `port`, killed on drop. `password` makes it refuse
/// every client that does not authenticate.
pub async fn start_redis(port: u16, password: Option<&str>) -> Child {
    let mut cmd = tokio::process::Command::new("redis-server");
    cmd.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    if let Some(pw) = password {
        cmd.args(["--requirepass", pw]);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis-server did not listen on {port}");
}

/// A TCP proxy to Postgres that a test can cut (every connection dropped, new
/// ones closed at once) and restore.
pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl PgProxy {
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(true));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let up = up.clone();
            let live = live.clone();
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    live.lock().expect("lock").push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            up,
            live,
            accept,
        }
    }

    /// The database becomes unreachable: open connections die, new ones are closed.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.live.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// What [`MockWechat`] says about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// trade_state SUCCESS under this transaction and amount.
    Paid {
        transaction_id: String,
        total_fee: i64,
    },
    /// trade_state NOTPAY.
    NotPaid,
}

/// WeChat's `/pay/orderquery` for the test merchants (`default`, `tenant-b`):
/// answers what a test said about each order (NOTPAY for any other), signed
/// with the asking merchant's key and sign type, as WeChat signs its replies.
/// `down` makes it answer 503, as an unreachable WeChat would fail.
pub struct MockWechat {
    pub url: String,
    said: Arc<Mutex<std::collections::HashMap<String, Said>>>,
    pub queries: Arc<std::sync::atomic::AtomicUsize>,
    pub down: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl MockWechat {
    pub async fn start() -> Self {
        use axum::{extract::State, http::StatusCode, routing::post, Router};
        type Shared = (
            Arc<Mutex<std::collections::HashMap<String, Said>>>,
            Arc<std::sync::atomic::AtomicUsize>,
            Arc<AtomicBool>,
        );
        async fn orderquery(
            State((said, queries, down)): State<Shared>,
            body: axum::body::Bytes,
        ) -> Result<String, StatusCode> {
            queries.fetch_add(1, Ordering::SeqCst);
            if down.load(Ordering::SeqCst) {
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
            let req = xml::decode(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
            let mch_id = req.get("mch_id").cloned().unwrap_or_default();
            let merchant = [default_merchant(), tenant_b()]
                .into_iter()
                .find(|m| m.merchant.mch_id == mch_id)
                .ok_or(StatusCode::BAD_REQUEST)?;
            let sign_type = sign::verify_any(&req, &merchant.merchant.api_key)
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            let no = req.get("out_trade_no").cloned().unwrap_or_default();
            let answer = said.lock().expect("lock").get(&no).cloned();
            let mut reply: Fields = [
                ("return_code", "SUCCESS"),
                ("result_code", "SUCCESS"),
                ("appid", merchant.merchant.app_id.as_str()),
                ("mch_id", mch_id.as_str()),
                ("nonce_str", "replynonce0123"),
                ("out_trade_no", no.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
            match answer {
                Some(Said::Paid {
                    transaction_id,
                    total_fee,
                }) => {
                    reply.insert("trade_state".into(), "SUCCESS".into());
                    reply.insert("transaction_id".into(), transaction_id);
                    reply.insert("total_fee".into(), total_fee.to_string());
                }
                Some(Said::NotPaid) | None => {
                    reply.insert("trade_state".into(), "NOTPAY".into());
                }
            }
            Ok(signed(reply, &merchant.merchant.api_key, sign_type))
        }
        let said = Arc::default();
        let queries = Arc::default();
        let down = Arc::default();
        let shared: Shared = (Arc::clone(&said), Arc::clone(&queries), Arc::clone(&down));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .route("/pay/orderquery", post(orderquery))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            said,
            queries,
            down,
            task,
        }
    }

    /// From now on orderquery says this about `no`.
    pub fn says(&self, no: &OutTradeNo, said: Said) {
        self.said
            .lock()
            .expect("lock")
            .insert(no.as_str().to_owned(), said);
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for MockWechat {
    fn drop(&mut self) {
        self.task.abort();
    }
}
