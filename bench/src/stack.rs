//! The system under test, in this process: the product's own [`wxpay::Stack`]
//! (the WeChat sandbox, payment-service, the gateway and the poller, each on
//! 127.0.0.1 port 0 with real sockets) on a fresh Postgres database and Redis,
//! each service over its own [`CountingStore`] so database calls are attributed
//! per service. Also: seeding orders in bulk, Postgres' commit counter, and gRPC
//! channels.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use async_trait::async_trait;
use sqlx::{postgres::PgPoolOptions, Connection, PgConnection, PgPool};
use tonic::transport::Channel;
use wxpay_core::{
    domain::{OrderStatus, OutTradeNo},
    watch_token::WatchSecret,
    wechat::Merchant,
};
use wxpay_store::testing;

use crate::counting::{CountingStore, Tally};

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
    /// The poller's WebSocket / SSE side.
    pub poller_http_port: u16,
    /// The stack's watch-token secret: the benchmark issues the tokens its
    /// WebSocket clients present, as payment-service would in CreateOrder.
    pub watch_secret: WatchSecret,
    pub http: reqwest::Client,
    stack: wxpay::Stack,
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

impl Stack {
    /// The product's own single-process [`wxpay::Stack`] on a fresh Postgres
    /// database and Redis, every service on a port of 127.0.0.1, each service's
    /// store wrapped to count its calls.
    pub async fn start() -> anyhow::Result<Self> {
        let database_url = testing::fresh_database_url().await?;
        let database_name = database_url
            .rsplit('/')
            .next()
            .and_then(|s| s.split('?').next())
            .unwrap_or_default()
            .to_owned();
        let redis_url = testing::redis_url();
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect(&database_url)
            .await?;
        let counters = Counters {
            payment: Arc::default(),
            gateway: Arc::default(),
            poller: Arc::default(),
        };
        let tallies = counters.clone();
        let loopback = "127.0.0.1:0".parse()?;
        let watch_secret = WatchSecret::new(&format!("bench-{}-watch-secret", ulid::Ulid::new()))
            .context("the benchmark's watch secret")?;
        let settings = wxpay::Settings {
            storage: wxpay::Storage::Postgres(database_url.clone()),
            bus: wxpay::Bus::Redis(redis_url.clone()),
            payment_addr: loopback,
            gateway_addr: loopback,
            gateway_metrics_addr: loopback,
            poller_addr: loopback,
            poller_metrics_addr: loopback,
            sandbox_addr: loopback,
            poller_http_addr: loopback,
            watch_secret: Some(watch_secret.clone()),
            // Every order here is paid by a notification; keep the fallback out of the figures.
            fallback_delay: Duration::from_secs(3600),
            fallback_max_delay: Duration::from_secs(3600),
            // Nor the reconciler: create's thousands of unpaid orders came due 60 s
            // later under the delivery rows, whose "db calls while waiting" then
            // counted its checks as the watchers' (43.9 calls/s against 4.0).
            reconcile: payment_service::reconciler::ReconcilerConfig {
                after: Duration::from_secs(3600),
                ..Default::default()
            },
            ..wxpay::Settings::ephemeral(Default::default())
        };
        let merchant = settings.merchant.clone();
        let parts = wxpay::Parts {
            store_for: Some(Box::new(move |service, store| {
                let tally = match service {
                    wxpay::Service::Payment => tallies.payment.clone(),
                    wxpay::Service::Gateway => tallies.gateway.clone(),
                    wxpay::Service::Poller => tallies.poller.clone(),
                };
                Arc::new(CountingStore::with_tally(store, tally))
            })),
            querier: Some(Arc::new(NoQuerier)),
            // A v3 merchant beside the v2 one, for the v3 notification rows.
            v3_demo: Some(wxpay::stack::V3Demo::issue().await?),
            ..Default::default()
        };
        let stack = wxpay::Stack::start_with(settings, parts)
            .await
            .context("starting the stack")?;
        let addresses = *stack.addresses();
        Ok(Self {
            database_url,
            database_name,
            redis_url,
            pool,
            merchant,
            counters,
            payment_port: addresses.payment.port(),
            gateway_port: addresses.gateway.port(),
            poller_port: addresses.poller.port(),
            poller_http_port: addresses.poller_http.port(),
            watch_secret,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()?,
            stack,
        })
    }

    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/wechat/pay/notify", self.gateway_port)
    }

    /// The gateway's v3 payment notification path.
    pub fn notify_v3_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/wechat/v3/pay/notify",
            self.gateway_port
        )
    }

    /// The stack's v3 merchant (public-key mode) and WeChat's keys for it.
    pub fn v3(&self) -> Option<&wxpay::stack::V3Demo> {
        self.stack.v3_demo()
    }

    /// [`Self::seed`] for the v3 merchant: its orders, 1 fen each.
    pub async fn seed_v3(&self, prefix: &str, count: usize) -> anyhow::Result<Vec<String>> {
        sqlx::query(
            "INSERT INTO orders (out_trade_no, idempotency_key, status, openid, description, \
               total_fee, client_ip, sign_type, merchant) \
             SELECT $1 || lpad(g::text, 7, '0'), 'seed-' || $1 || g, 'NOTPAY', \
               'oUpF8uMuAJO_M2pxb1Q9zNjWeS6o', 'bench', 1, '127.0.0.1', 'MD5', $3 \
             FROM generate_series(0, $2 - 1) g",
        )
        .bind(prefix)
        .bind(count as i64)
        .bind(wxpay::stack::v3_demo::NAME)
        .execute(&self.pool)
        .await
        .context("seeding v3 orders")?;
        Ok((0..count).map(|i| format!("{prefix}{i:07}")).collect())
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

    pub async fn stop(self) {
        if let Err(e) = self.stack.stop().await {
            eprintln!("stopping the stack: {e:#}");
        }
        self.pool.close().await;
        // A run leaves no database behind: a million seeded orders are half a gigabyte.
        let dropped = async {
            let mut admin = PgConnection::connect(&testing::admin_url()).await?;
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database_name.replace('"', "")
            ))
            .execute(&mut admin)
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = dropped.await {
            eprintln!(
                "dropping the benchmark database {}: {e:#}",
                self.database_name
            );
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
