//! The PaymentService test harness: a real tonic server on port 0 over a fresh
//! Postgres database, the shared Redis, and the WeChat sandbox on port 0
//! (driven through its HTTP control API). Shared by the gRPC and lifecycle tests.
#![allow(dead_code)] // each test binary uses part of it

pub mod proxy;
pub mod v3;

use std::{sync::Arc, time::Duration};

use payment_service::{
    application::Application,
    config::{MerchantAccount, WechatConfig},
    reconciler::ReconcilerConfig,
    wechat::{ClientOptions, ClientTls, V2Client},
};
use secrecy::SecretString;
use tonic::transport::Channel;
use wxpay_core::wechat::{ApiKey, Merchant, MerchantEntry, SignType};
use wxpay_proto::v1::{payment_service_client::PaymentServiceClient, CreateOrderRequest};
use wxpay_runtime::auth::ApiTokens;
use wxpay_store::{testing, EventPublisher, PgStore, RedisPublisher, Store};

pub const KEY: &str = "192006250b4c09247ec02edce69f6a2d";

pub fn merchant() -> Merchant {
    Merchant {
        app_id: "wxd930ea5d5a258f4f".into(),
        mch_id: "10000100".into(),
        api_key: ApiKey::parse(KEY).expect("valid key"),
    }
}

pub struct Harness {
    pub client: PaymentServiceClient<Channel>,
    pub store: Arc<PgStore>,
    /// The test's own database.
    pub database_url: String,
    pub sandbox: String,
    pub http: reqwest::Client,
    pub payments: Arc<payment_service::service::Payments>,
    /// A v2 client of the `default` merchant like the service's (with its
    /// certificate when `client_tls`), for a test that plays another system
    /// of the merchant's.
    pub wechat: V2Client,
    /// WeChat's keys of the v3 merchants, as the service holds them.
    pub platform_keys: Option<Arc<wxpay_wechat_v3::PlatformKeys>>,
    pub _shutdown: tokio::sync::oneshot::Sender<()>,
    pub _sandbox: wechat_sandbox::SandboxHandle,
}

pub struct Options {
    /// The `default` merchant's sign type.
    pub sign_type: SignType,
    /// Merchants besides `default` (as a merchants file would list them); the
    /// sandbox hosts each, and issues each its own client certificate.
    pub merchants: Vec<MerchantEntry>,
    pub api_token: Option<&'static str>,
    pub read_token: Option<&'static str>,
    /// `API_CALLERS_FILE`'s callers, as parsed.
    pub callers: Vec<wxpay_runtime::callers_file::ScopedCaller>,
    pub reconcile: ReconcilerConfig,
    pub sandbox: wechat_sandbox::SandboxConfig,
    /// Reach the sandbox over its TLS listener with the client certificate it
    /// issued (what refunds need); off: plain HTTP, no certificate.
    pub client_tls: bool,
    /// Sign a watch token into every CreateOrder reply.
    pub watch_secret: Option<&'static str>,
}

/// A reconciler that stays out of a test's way (its first question is ten
/// minutes off), so status changes come only from what the test does.
pub fn quiet_reconciler() -> ReconcilerConfig {
    ReconcilerConfig {
        after: Duration::from_secs(600),
        ..ReconcilerConfig::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        let mut sandbox = wechat_sandbox::SandboxConfig::new(merchant());
        sandbox.time_factor = 1000;
        Self {
            sign_type: SignType::Md5,
            merchants: Vec::new(),
            api_token: None,
            read_token: None,
            callers: Vec::new(),
            reconcile: quiet_reconciler(),
            sandbox,
            client_tls: false,
            watch_secret: None,
        }
    }
}

pub async fn start(opts: Options) -> Harness {
    let sandbox = wechat_sandbox::spawn(opts.sandbox.clone().with_merchants(&opts.merchants)).await;
    start_on(opts, sandbox).await
}

/// [`start`] over a sandbox the test spawned and prepared itself (a v3
/// merchant's keys are issued by a running sandbox): `opts.sandbox` is not
/// used, and `opts.merchants` must be hosted by `sandbox` already.
pub async fn start_on(opts: Options, sandbox: wechat_sandbox::SandboxHandle) -> Harness {
    let sandbox_url = sandbox.base_url().to_string();
    let tls = opts.client_tls.then(|| sandbox_tls(&sandbox));
    let api_base = if opts.client_tls {
        sandbox.https_url().to_string()
    } else {
        sandbox_url.clone()
    };

    let database_url = testing::fresh_database_url().await.expect("fresh database");
    let store = Arc::new(
        PgStore::connect(&database_url, Default::default())
            .await
            .expect("migrated"),
    );
    let publisher: Arc<dyn EventPublisher> =
        Arc::new(RedisPublisher::new(&testing::redis_url()).expect("redis url"));
    let mut accounts = vec![MerchantAccount {
        entry: MerchantEntry::direct("default", merchant(), opts.sign_type),
        client_tls: tls,
    }];
    for entry in &opts.merchants {
        accounts.push(MerchantAccount {
            entry: entry.clone(),
            client_tls: opts
                .client_tls
                .then(|| sandbox_tls_for(&sandbox, &entry.merchant.mch_id)),
        });
    }
    let config = WechatConfig {
        merchants: accounts,
        api_base: api_base.clone(),
        // Nobody listens here; these tests check notifications are not needed for QueryOrder.
        notify_url: "http://127.0.0.1:9/wechat/pay/notify".into(),
        refund_notify_url: None,
        v3_notify_url: None,
        v3_refund_notify_url: None,
    };
    let options = ClientOptions {
        request_timeout: Duration::from_millis(1500),
        backoff: Duration::from_millis(10),
        ..ClientOptions::default()
    };
    let platform_keys = config
        .platform_keys(
            store.clone() as Arc<dyn Store>,
            &options,
            wxpay_wechat_v3::KeysOptions {
                // The sandbox rotates its certificate at once, where WeChat
                // overlaps for days: a test must not wait out the minute.
                min_refresh_interval: Duration::from_millis(200),
                ..wxpay_wechat_v3::KeysOptions::default()
            },
        )
        .await
        .expect("WeChat's v3 keys");
    let wechat = config
        .clients_with_keys(options.clone(), platform_keys.as_ref())
        .expect("clients");
    let default = &config.merchants[0];
    let wechat_copy = V2Client::new(
        &api_base,
        default.entry.clone(),
        ClientOptions {
            tls: default.client_tls.clone(),
            ..options
        },
    )
    .expect("client");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = Application::from_parts(
        listener,
        store.clone() as Arc<dyn Store>,
        publisher,
        wechat,
        ApiTokens {
            full: opts.api_token.map(|t| SecretString::from(t.to_owned())),
            read: opts.read_token.map(|t| SecretString::from(t.to_owned())),
            callers: opts.callers.clone(),
        },
        opts.reconcile.clone(),
    )
    .with_watch_secret(
        opts.watch_secret
            .map(|s| wxpay_core::watch_token::WatchSecret::new(s).expect("a long secret")),
    )
    .with_platform_keys(platform_keys.clone());
    let port = app.port();
    let payments = app.payments();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    Harness {
        client: PaymentServiceClient::new(channel),
        store,
        database_url,
        sandbox: sandbox_url,
        http: reqwest::Client::new(),
        payments,
        wechat: wechat_copy,
        platform_keys,
        _shutdown: tx,
        _sandbox: sandbox,
    }
}

/// The merchant's certificate the sandbox issued, its CA trusted.
pub fn sandbox_tls(sandbox: &wechat_sandbox::SandboxHandle) -> ClientTls {
    sandbox_tls_for(sandbox, &merchant().mch_id)
}

/// The certificate the sandbox issued to the account `mch_id`, its CA trusted.
pub fn sandbox_tls_for(sandbox: &wechat_sandbox::SandboxHandle, mch_id: &str) -> ClientTls {
    use secrecy::ExposeSecret;
    let files = sandbox.tls_files();
    let client = files
        .client_for(mch_id)
        .expect("the sandbox issued a client certificate");
    ClientTls::from_pem(
        client.cert_pem().as_bytes(),
        client.key_pem().expose_secret().as_bytes(),
    )
    .and_then(|t| t.with_extra_root(files.ca_pem().as_bytes()))
    .expect("the sandbox's TLS files")
}

pub fn request(key: &str, fee: i64) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
        description: "会员充值-月卡".into(),
        total_fee: fee,
        attach: "cart=7".into(),
        client_ip: "203.0.113.9".into(),
        expire_seconds: 1800,
        ..CreateOrderRequest::default()
    }
}

impl Harness {
    /// The sandbox, for what its HTTP control API is not called for here.
    pub fn sandbox_handle(&self) -> &wechat_sandbox::SandboxHandle {
        &self._sandbox
    }

    /// Pays `out_trade_no` in the sandbox (its notification dropped: nobody
    /// listens here) and has the service learn it through QueryOrder.
    pub async fn pay_and_query(&mut self, out_trade_no: &str) {
        let paid = self
            .control(
                &format!("/sandbox/orders/{out_trade_no}/pay"),
                serde_json::json!({"delivery": "drop"}),
            )
            .await;
        assert!(paid.is_success(), "{paid}");
        let now = self
            .client
            .query_order(wxpay_proto::v1::QueryOrderRequest {
                out_trade_no: out_trade_no.to_owned(),
            })
            .await
            .expect("query")
            .into_inner();
        assert_eq!(now.status, wxpay_proto::v1::OrderStatus::Success as i32);
    }

    pub async fn control(&self, path: &str, body: serde_json::Value) -> reqwest::StatusCode {
        self.http
            .post(format!("{}{path}", self.sandbox))
            .json(&body)
            .send()
            .await
            .expect("sandbox control call")
            .status()
    }

    pub async fn sandbox_status(&self, out_trade_no: &str) -> String {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/sandbox/orders/{out_trade_no}", self.sandbox))
            .send()
            .await
            .expect("sandbox order")
            .json()
            .await
            .expect("json");
        v["status"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn order_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM orders")
            .fetch_one(self.store.pool())
            .await
            .expect("count")
    }

    pub async fn event_count(&self, out_trade_no: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM order_events WHERE out_trade_no = $1")
            .bind(out_trade_no)
            .fetch_one(self.store.pool())
            .await
            .expect("count")
    }
}
