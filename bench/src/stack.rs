//! The system under test, in this process: a fresh Postgres database, the WeChat
//! sandbox, payment-service, the gateway and the poller, each on 127.0.0.1 port 0
//! with real sockets, each over its own [`CountingStore`] so database calls are
//! attributed per service. Also: seeding orders in bulk, Postgres' commit counter,
//! and gRPC channels.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use payment_service::{
    config::WechatConfig,
    wechat::{ClientOptions, WechatClient},
};
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use wxpay_core::{
    domain::{OrderStatus, OutTradeNo},
    wechat::{Merchant, SignType},
};
use wxpay_store::{testing, EventPublisher, PgStore, RedisPublisher, Store};

use crate::counting::Tally;

/// Database calls (and the time spent in them) counted per service.
#[derive(Clone)]
pub struct Counters {
    pub payment: Arc<Tally>,
    pub gateway: Arc<Tally>,
    pub poller: Arc<Tally>,
}

impl Counters {
    pub fn total(&self) -> u64 {
        [&self.payment, &self.gateway, &self.poller]
            .iter()
            .map(|c| c.read().0)
            .sum()
    }
}

pub struct Stack {
    pub database_url: String,
    pub database_name: String,
    pub redis_url: String,
    /// For seeding and for the raw-SQL ceilings.
    pub pool: PgPool,
    pub merchant: Merchant,
    pub counters: Counters,
    pub payment_port: u16,
    pub gateway_port: u16,
    pub poller_port: u16,
    pub http: reqwest::Client,
    sandbox: Option<wechat_sandbox::SandboxHandle>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The poller's fallback asks nobody here: the benchmark pays every order with a
/// notification, and the fallback's first query is pushed past the run anyway.
struct NoQuerier;

#[async_trait]
impl poller::OrderQuerier for NoQuerier {
    async fn query(&self, _: &OutTradeNo) -> Result<OrderStatus, poller::QueryError> {
        Err(poller::QueryError::Unavailable("benchmark".into()))
    }
}

async fn listener() -> anyhow::Result<TcpListener> {
    Ok(TcpListener::bind("127.0.0.1:0").await?)
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        let database_url = testing::fresh_database_url().await?;
        let database_name = database_url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .unwrap_or_default()
            .to_owned();
        let redis_url = testing::redis_url();
        let pg = PgStore::connect(&database_url, Default::default())
            .await
            .context("connecting to the benchmark database")?;
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect(&database_url)
            .await?;
        let store: Arc<dyn Store> = Arc::new(pg);
        let (payment_store, gateway_store, poller_store) = (
            crate::counting::CountingStore::new(store.clone()),
            crate::counting::CountingStore::new(store.clone()),
            crate::counting::CountingStore::new(store),
        );
        let counters = Counters {
            payment: payment_store.counter(),
            gateway: gateway_store.counter(),
            poller: poller_store.counter(),
        };
        let publisher: Arc<dyn EventPublisher> = Arc::new(RedisPublisher::new(&redis_url)?);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        let sandbox = wechat_sandbox::spawn(wechat_sandbox::SandboxConfig::for_tests()).await;
        let merchant = sandbox.merchant().clone();

        let gateway_listener = listener().await?;
        let gateway_port = gateway_listener.local_addr()?.port();
        let gateway = gateway::Application::from_parts(
            gateway_listener,
            Arc::new(gateway_store),
            publisher.clone(),
            merchant.clone(),
            None,
        );

        let payment_listener = listener().await?;
        let payment_port = payment_listener.local_addr()?.port();
        let wechat_config = WechatConfig {
            merchant: merchant.clone(),
            sign_type: SignType::Md5,
            api_base: sandbox.base_url().to_owned(),
            notify_url: format!("http://127.0.0.1:{gateway_port}/wechat/pay/notify"),
        };
        let wechat = WechatClient::new(
            sandbox.base_url(),
            merchant.clone(),
            ClientOptions::default(),
        )?;
        let payment = payment_service::application::Application::from_parts(
            payment_listener,
            Arc::new(payment_store),
            publisher,
            wechat,
            &wechat_config,
            None,
        );

        let poller_config = poller::Config {
            database_url: database_url.clone(),
            redis_url: redis_url.clone(),
            addr: "127.0.0.1:0".parse()?,
            metrics_addr: "127.0.0.1:0".parse()?,
            payment_service_url: format!("http://127.0.0.1:{payment_port}"),
            api_token: None,
            deadlines: poller::Deadlines {
                default: Duration::from_secs(600),
                max: Duration::from_secs(1800),
            },
            // Every order here is paid by a notification; keep the fallback out of the figures.
            fallback_delay: Duration::from_secs(3600),
            fallback_max_delay: Duration::from_secs(3600),
            redis_client_name: "wxpay-bench-poller".into(),
            keepalive_interval: Duration::from_secs(30),
        };
        let poller = poller::Application::build_with(
            poller_config,
            Arc::new(poller_store),
            Arc::new(NoQuerier),
        )
        .await?;
        let poller_port = poller.port();

        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = gateway.run_until_stopped(s.cancelled_owned()).await {
                eprintln!("gateway stopped: {e:#}");
            }
        }));
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = payment.run_until_stopped(s.cancelled_owned()).await {
                eprintln!("payment-service stopped: {e:#}");
            }
        }));
        let s = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = poller.run_until_stopped(s.cancelled_owned()).await {
                eprintln!("poller stopped: {e:#}");
            }
        }));

        Ok(Self {
            database_url,
            database_name,
            redis_url,
            pool,
            merchant,
            counters,
            payment_port,
            gateway_port,
            poller_port,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            sandbox: Some(sandbox),
            stop,
            tasks,
        })
    }

    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/wechat/pay/notify", self.gateway_port)
    }

    /// Inserts `count` NOTPAY orders `{prefix}{i:07}` (1 fen each) in one statement.
    pub async fn seed(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<String>> {
        sqlx::query(
            "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, \
               total_fee, client_ip, sign_type) \
             SELECT $1 || lpad(g::text, 7, '0'), 'seed-' || $1 || g, 'NOTPAY', \
               'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o', 'bench', 1, '127.0.0.1', 'MD5' \
             FROM generate_series(0, $2 - 1) g",
        )
        .bind(prefix)
        .bind(count as i64)
        .execute(&self.pool)
        .await
        .context("seeding orders")?;
        Ok((0..count).map(|i| format!("{prefix}{i:07}")).collect())
    }

    /// POSTs a paid notification for a seeded order; true when the gateway said SUCCESS.
    pub async fn notify_paid(&self, out_trade_no: &str) -> anyhow::Result<bool> {
        let body = crate::notification::paid_xml(&self.merchant, out_trade_no, 1)?;
        let reply = self
            .http
            .post(self.notify_url())
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await?
            .text()
            .await?;
        Ok(reply.contains("<return_code><![CDATA[SUCCESS]]>"))
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
        if let Some(sandbox) = self.sandbox.take() {
            let _ = sandbox.shutdown().await;
        }
    }
}

/// Postgres' committed-transaction counter for one database, read over a separate
/// connection to the admin database so that reading it does not count itself.
pub struct CommitCounter {
    conn: PgConnection,
    database: String,
}

impl CommitCounter {
    pub async fn connect(database: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: PgConnection::connect(&testing::admin_url()).await?,
            database: database.to_owned(),
        })
    }

    pub async fn read(&mut self) -> anyhow::Result<i64> {
        let n: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(&self.database)
                .fetch_one(&mut self.conn)
                .await?;
        Ok(n)
    }
}

/// `count` HTTP/2 connections to a local gRPC server; calls spread over them.
pub async fn channels(port: u16, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let ch = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        out.push(ch);
    }
    Ok(out)
}
