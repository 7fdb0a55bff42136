//! Test harness: a poller on port 0 with a fresh Postgres database, the shared
//! (or a private) Redis, a counting fallback querier that does what QueryOrder
//! does, order helpers, and a private redis-server child for outage tests.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    net::TcpListener,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use poller::{Application, Config, Deadlines, Hub, OrderQuerier, QueryError};
use wxpay_core::{
    domain::{
        Attach, ClientIp, Description, EventSource, Fee, IdempotencyKey, NewOrder, OpenId,
        OrderStatus, OutTradeNo,
    },
    wechat::SignType,
};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient, OrderStatusEvent, WatchOrderRequest,
};
use wxpay_store::{
    events::{self, EventPublisher, RedisPublisher},
    {PgStore, Store, Transition, TransitionOutcome},
};

pub struct Options {
    pub redis_url: String,
    pub fallback_delay: Duration,
    pub default_timeout: Duration,
    pub api_token: Option<&'static str>,
    pub max_streams: usize,
    /// Serve gRPC over TLS with this certificate.
    pub tls: Option<wxpay_runtime::tls::ServerTls>,
    pub max_streams_per_connection: u32,
    /// Serve the WebSocket / SSE watch, checking tokens with this secret.
    pub watch_secret: Option<&'static str>,
    /// The WebSocket / SSE watch's connection limits.
    pub http_limits: wxpay_runtime::http_edge::ConnectionLimits,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: wxpay_store::testing::redis_url(),
            // Long enough that tests not about the fallback never see it.
            fallback_delay: Duration::from_secs(600),
            default_timeout: Duration::from_secs(30),
            api_token: None,
            max_streams: 200_000,
            tls: None,
            max_streams_per_connection: 1000,
            http_limits: wxpay_runtime::http_edge::ConnectionLimits::default(),
            watch_secret: None,
        }
    }
}

pub struct TestApp {
    pub url: String,
    pub metrics_url: String,
    /// `127.0.0.1:PORT` of the WebSocket / SSE watch, when served.
    pub http_url: Option<String>,
    pub store: Arc<PgStore>,
    pub publisher: RedisPublisher,
    pub hub: Hub,
    pub querier: Arc<WechatQuerier>,
    /// The unique `CLIENT SETNAME` of this poller's pub/sub connection.
    pub client_name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(options: Options) -> TestApp {
    let store = Arc::new(
        wxpay_store::testing::fresh_pg_store()
            .await
            .expect("test database"),
    );
    let client_name = format!("poller-test-{}", ulid::Ulid::new());
    let config = Config {
        database_url: String::new(),
        redis_url: options.redis_url.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        payment_service_url: "http://127.0.0.1:1".into(),
        api_token: options.api_token.map(|t| t.to_owned().into()),
        api_read_token: None,
        api_callers: Vec::new(),
        deadlines: Deadlines {
            default: options.default_timeout,
            max: Duration::from_secs(60),
        },
        fallback_delay: options.fallback_delay,
        fallback_max_delay: options.fallback_delay * 4,
        redis_client_name: client_name.clone(),
        keepalive_interval: Duration::from_secs(30),
        max_streams: options.max_streams,
        tls: options.tls.clone(),
        payment_service_ca: None,
        http_addr: "127.0.0.1:0".parse().expect("a socket address"),
        http_limits: options.http_limits.clone(),
        watch_secret: options
            .watch_secret
            .map(|s| wxpay_core::watch_token::WatchSecret::new(s).expect("a long secret")),
        sse_allow_origin: None,
        max_streams_per_connection: options.max_streams_per_connection,
    };
    let publisher = RedisPublisher::new(&options.redis_url).expect("publisher");
    let querier = Arc::new(WechatQuerier {
        store: store.clone(),
        publisher: publisher.clone(),
        paid_at_wechat: Mutex::new(HashSet::new()),
        calls: AtomicUsize::new(0),
    });
    let app = Application::build_with(config, store.clone(), querier.clone())
        .await
        .expect("build");
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://127.0.0.1:{}", app.port());
    let metrics_url = format!("http://127.0.0.1:{}/metrics", app.metrics_port());
    let http_url = app.http_port().map(|p| format!("127.0.0.1:{p}"));
    let hub = app.hub().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        url,
        metrics_url,
        http_url,
        store,
        publisher,
        hub,
        querier,
        client_name,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub async fn client(&self) -> OrderStatusServiceClient<tonic::transport::Channel> {
        OrderStatusServiceClient::connect(self.url.clone())
            .await
            .expect("connect")
    }

    /// Opens a WatchOrder stream.
    pub async fn watch(
        &self,
        out_trade_no: &str,
    ) -> Result<tonic::Streaming<OrderStatusEvent>, tonic::Status> {
        let mut client = self.client().await;
        watch_with(&mut client, out_trade_no, 0).await
    }

    pub async fn create_order(&self) -> OutTradeNo {
        create_order(self.store.as_ref()).await
    }

    /// A paid notification as the gateway handles it: transition, then publish.
    pub async fn pay(&self, out_trade_no: &OutTradeNo) {
        pay(self.store.as_ref(), &self.publisher, out_trade_no).await
    }

    /// Starts shutdown (health NOT_SERVING, streams end with UNAVAILABLE).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// How many connections named like this poller's pub/sub connection Redis has,
    /// and how many channels they are subscribed to (`sub=`).
    pub async fn hub_connections(&self, redis_url: &str) -> Vec<u64> {
        let client = redis::Client::open(redis_url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        list.lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f == format!("name={}", self.client_name))
            })
            .map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("sub="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// `CLIENT KILL`s this poller's pub/sub connection.
    pub async fn kill_hub_connection(&self, redis_url: &str) {
        let client = redis::Client::open(redis_url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        let ids: Vec<String> = list
            .lines()
            .filter(|l| {
                l.split(' ')
                    .any(|f| f == format!("name={}", self.client_name))
            })
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("id="))
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(ids.len(), 1, "one hub connection to kill");
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(&ids[0])
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop();
    }
}

pub async fn watch_with(
    client: &mut OrderStatusServiceClient<tonic::transport::Channel>,
    out_trade_no: &str,
    timeout_seconds: u32,
) -> Result<tonic::Streaming<OrderStatusEvent>, tonic::Status> {
    Ok(client
        .watch_order(WatchOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            timeout_seconds,
            include_refunds: false,
        })
        .await?
        .into_inner())
}

/// The next message, failing the test if none comes within 10 s.
pub async fn next(stream: &mut tonic::Streaming<OrderStatusEvent>) -> Option<OrderStatusEvent> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message or the end within 10 s")
        .expect("no error status")
}

pub async fn create_order(store: &dyn Store) -> OutTradeNo {
    create_order_of(store, 1).await
}

/// A NOTPAY order of `fen`.
pub async fn create_order_of(store: &dyn Store, fen: i64) -> OutTradeNo {
    let out_trade_no = OutTradeNo::generate();
    let order = NewOrder {
        out_trade_no: out_trade_no.clone(),
        caller: wxpay_core::domain::Caller::default_caller(),
        idempotency_key: IdempotencyKey::parse(&format!("key-{out_trade_no}")).unwrap(),
        openid: OpenId::parse("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o").unwrap(),
        description: Description::parse("test order").unwrap(),
        total_fee: Fee::new(fen).unwrap(),
        attach: Attach::parse("").unwrap(),
        client_ip: ClientIp::parse("127.0.0.1").unwrap(),
        sign_type: SignType::Md5,
        expires_at: None,
        placement: wxpay_core::domain::Placement::default(),
    };
    store.insert_order(&order).await.expect("insert order");
    out_trade_no
}

/// Moves the order to SUCCESS in the database only (its event stays in the outbox).
pub async fn pay_in_db(
    store: &dyn Store,
    out_trade_no: &OutTradeNo,
    source: EventSource,
) -> TransitionOutcome {
    store
        .transition(&Transition {
            out_trade_no: out_trade_no.clone(),
            to: OrderStatus::Success,
            transaction_id: Some(format!("4200{out_trade_no}")),
            cash_fee: Some(1),
            paid_at: Some(chrono::Utc::now()),
            source,
            guard: None,
        })
        .await
        .expect("transition")
}

pub async fn pay(store: &dyn Store, publisher: &dyn EventPublisher, out_trade_no: &OutTradeNo) {
    if let TransitionOutcome::Applied { event, .. } =
        pay_in_db(store, out_trade_no, EventSource::Notify).await
    {
        events::publish_committed(store, publisher, &event).await;
    }
}

/// Does what QueryOrder does, with "WeChat" being a set of orders paid there:
/// a paid one is transitioned and its event published like any other change.
pub struct WechatQuerier {
    store: Arc<PgStore>,
    publisher: RedisPublisher,
    pub paid_at_wechat: Mutex<HashSet<String>>,
    pub calls: AtomicUsize,
}

impl WechatQuerier {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn pay_at_wechat(&self, out_trade_no: &OutTradeNo) {
        self.paid_at_wechat
            .lock()
            .unwrap()
            .insert(out_trade_no.to_string());
    }
}

#[async_trait]
impl OrderQuerier for WechatQuerier {
    async fn query(&self, out_trade_no: &OutTradeNo) -> Result<OrderStatus, QueryError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let paid = self
            .paid_at_wechat
            .lock()
            .unwrap()
            .contains(out_trade_no.as_str());
        if paid {
            return Ok(
                match pay_in_db(self.store.as_ref(), out_trade_no, EventSource::Query).await {
                    TransitionOutcome::Applied { order, event, .. } => {
                        events::publish_committed(self.store.as_ref(), &self.publisher, &event)
                            .await;
                        order.status
                    }
                    TransitionOutcome::Unchanged { order } => order.status,
                },
            );
        }
        match self.store.order(out_trade_no).await {
            Ok(Some(order)) => Ok(order.status),
            Ok(None) => Err(QueryError::Refused("not found".into())),
            Err(e) => Err(QueryError::Unavailable(e.to_string())),
        }
    }
}

/// A private redis-server child on a free port, for outage tests (the shared
/// Redis is never stopped).
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self { port, child: None };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        for _ in 0..100 {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
