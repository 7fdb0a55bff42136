//! Builds and runs the gateway: connects storage and the event bus, loads the
//! v3 merchants' WeChat keys (platform certificates from the database, or
//! downloaded), binds the public listener and the metrics one, serves
//! [`crate::app`] through the shared accept loop, runs the outbox relay, the
//! certificate refresh and the readiness check beside it, and shuts down
//! gracefully (stop accepting, finish in-flight notifications
//! and their publishes, flush the relay).

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wxpay_core::wechat::MerchantBook;
use wxpay_runtime::http_edge::{self, ConnectionLimits};
use wxpay_store::{
    postgres::PgOptions, EventPublisher, PgStore, RedisPublisher, Relay, Retention, Store,
};
use wxpay_wechat_v3::{ClientOptions, KeysOptions, PlatformKeys, V3Http};

use crate::{
    config::{CloudpaySecret, GatewayConfig},
    connections::{self, Limits},
    metrics,
    orderquery::OrderQuery,
    readiness::Readiness,
    routes::app,
    state::AppState,
    wechat_keys::KeySource,
};

/// `RETENTION_DAYS`' default: 90 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// How long in-flight requests and tasks get once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Scrapers of the metrics listener at once, at most (it is internal).
const METRICS_MAX_CONNECTIONS: usize = 64;

pub struct Application {
    listener: TcpListener,
    /// `GATEWAY_METRICS_ADDR`; `None`: no metrics listener.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    relay: Relay,
    limits: Limits,
    retention: Retention,
    /// The v3 merchants' platform-certificate manager, refreshed while the
    /// gateway runs (`None`: no v3 merchant, or keys set by hand).
    platform_keys: Option<Arc<PlatformKeys>>,
}

impl Application {
    /// Connects to Postgres (running migrations), prepares Redis (lazily: the
    /// gateway starts and keeps answering while Redis is down) and binds.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        Self::build_with_database(config, PgOptions::default()).await
    }

    /// [`build`](Self::build) with the pool and start-up wait the binary read
    /// (`DATABASE_MAX_CONNECTIONS`, `DATABASE_CONNECT_TIMEOUT_SECONDS`).
    pub async fn build_with_database(
        config: GatewayConfig,
        database: PgOptions,
    ) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = Arc::new(
            PgStore::connect(&config.database_url, database)
                .await
                .context("cannot use DATABASE_URL")?,
        );
        let publisher: Arc<dyn EventPublisher> =
            Arc::new(RedisPublisher::new(&config.redis_url).context("cannot use REDIS_URL")?);
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on GATEWAY_ADDR {}", config.addr))?;
        let metrics_listener = TcpListener::bind(config.metrics_addr)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on GATEWAY_METRICS_ADDR {}",
                    config.metrics_addr
                )
            })?;
        let platform_keys = platform_keys(&config, store.clone()).await?;
        let app = Self::from_parts(
            listener,
            store,
            publisher,
            config.merchants,
            config.cloudpay_secret,
        )
        .with_limits(config.limits)
        .with_retention(config.retention)
        .with_wechat_api(&config.wechat_api_base)?
        .with_metrics_listener(metrics_listener);
        Ok(match platform_keys {
            Some(keys) => app.with_platform_keys(keys),
            None => app,
        })
    }

    /// Assembles the gateway from ready parts (the embedded mode passes SQLite
    /// and an in-process bus) and the merchants whose messages it accepts.
    pub fn from_parts(
        listener: TcpListener,
        store: Arc<dyn Store>,
        publisher: Arc<dyn EventPublisher>,
        merchants: MerchantBook,
        cloudpay_secret: Option<CloudpaySecret>,
    ) -> Self {
        let relay = Relay::new(store.clone(), publisher.clone());
        let retention = Retention::new(store.clone(), DEFAULT_RETENTION);
        let state = AppState::new(store, publisher, merchants, cloudpay_secret);
        Self {
            listener,
            metrics_listener: None,
            state,
            relay,
            limits: Limits::default(),
            retention,
            platform_keys: None,
        }
    }

    /// Where a cloud-pay SUCCESS is confirmed (WeChat's orderquery) before it
    /// is applied.
    pub fn with_wechat_api(mut self, api_base: &str) -> anyhow::Result<Self> {
        self.state.orderquery =
            Some(OrderQuery::new(api_base).context("cannot build the orderquery client")?);
        Ok(self)
    }

    /// Where the v3 notification's prover gets WeChat's keys (by default the
    /// v3 merchants' configured public keys).
    pub fn with_wechat_keys(mut self, keys: Arc<dyn KeySource>) -> Self {
        self.state.wechat_keys = keys;
        self
    }

    /// The platform-certificate manager as the v3 key source, refreshed
    /// (every 12 h, expired certificates dropped) while the gateway runs.
    pub fn with_platform_keys(mut self, keys: Arc<PlatformKeys>) -> Self {
        self.state.wechat_keys = keys.clone();
        self.platform_keys = Some(keys);
        self
    }

    /// How long published events, audit rows and anomalies are kept.
    pub fn with_retention(mut self, keep: Duration) -> Self {
        self.retention.keep = keep;
        self
    }

    /// What each sender is allowed (timeouts, connection and in-flight caps).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves Prometheus `GET /metrics` on `listener` (only there).
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// The metrics listener's port, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains (bounded) and flushes the relay.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_relay_tx, stop_relay_rx) = tokio::sync::oneshot::channel::<()>();
        // Retention runs here, on the service that writes the audit rows; a
        // lease keeps it to one replica at a time.
        let stop_retention = tokio_util::sync::CancellationToken::new();
        let retention_task = tokio::spawn(self.retention.clone().run(stop_retention.clone()));
        // The certificate refresh stops with retention, after the drain.
        let keys_task = self
            .platform_keys
            .as_ref()
            .map(|keys| keys.spawn_refresh(stop_retention.clone()));
        let relay_task = tokio::spawn(self.relay.clone().run(async {
            let _ = stop_relay_rx.await;
        }));

        let stopping = CancellationToken::new();
        let signal = {
            let stopping = stopping.clone();
            async move {
                shutdown.await;
                stopping.cancel();
            }
        };
        let readiness = Readiness::default();
        let readiness_task = tokio::spawn(readiness.clone().run(
            self.state.store.clone(),
            self.state.publisher.clone(),
            stopping.clone(),
        ));
        tracing::info!(port = self.port(), limits = ?self.limits, "gateway listening");
        let metrics_task = self.metrics_listener.map(|listener| {
            tracing::info!(addr = ?listener.local_addr().ok(), "gateway metrics listening");
            let router = metrics::router(self.state.metrics.clone(), self.state.store.clone());
            let limits = ConnectionLimits {
                max_connections: METRICS_MAX_CONNECTIONS,
                ..ConnectionLimits::default()
            };
            tokio::spawn(http_edge::serve(
                listener,
                router,
                limits,
                stopping.clone().cancelled_owned(),
            ))
        });
        let router = connections::limited(app(self.state.clone(), readiness), &self.limits);
        let server = http_edge::serve(self.listener, router, self.limits.connections(), signal);
        tokio::pin!(server);
        // Accepting stops at once and open connections finish; a sender that
        // never finishes its request gets DRAIN_TIMEOUT, not forever.
        let served: anyhow::Result<()> = tokio::select! {
            () = &mut server => Ok(()),
            _ = async {
                stopping.cancelled().await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => {
                tracing::warn!("drain timed out; exiting with requests in flight");
                Ok(())
            }
        };
        // The server can only end after the signal, so both have stopped too.
        let _ = readiness_task.await;
        if let Some(task) = metrics_task {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, task).await;
        }

        // Notifications whose sender hung up still run on the tracker; then the
        // publishes their transitions started.
        self.state.tasks.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight notification tasks did not finish in time");
        }
        if tokio::time::timeout(DRAIN_TIMEOUT, self.state.ledger.drain())
            .await
            .is_err()
        {
            tracing::warn!("in-flight publishes did not finish in time; the relay will send them");
        }
        // Batched audit rows of duplicates are written before the process goes.
        if tokio::time::timeout(DRAIN_TIMEOUT, self.state.audit.flush())
            .await
            .is_err()
        {
            tracing::warn!("audit rows could not be flushed in time");
        }
        stop_retention.cancel();
        let _ = retention_task.await;
        if let Some(task) = keys_task {
            let _ = task.await;
        }
        let _ = stop_relay_tx.send(());
        let _ = relay_task.await;
        tracing::info!("gateway stopped");
        served
    }
}

/// WeChat's keys for the v3 merchants, when there are any: their public keys
/// and the platform certificates kept in the database (those without either
/// download theirs from `WECHAT_API_BASE` now; a failed download is logged
/// and retried by the refresh, not fatal). A database that cannot be read, or
/// an extra root CA that cannot be used, stops start-up.
async fn platform_keys(
    config: &GatewayConfig,
    store: Arc<dyn Store>,
) -> anyhow::Result<Option<Arc<PlatformKeys>>> {
    let entries = config.merchants.entries();
    if entries.iter().all(|e| e.v3.is_none()) {
        return Ok(None);
    }
    let mut options = ClientOptions::default();
    if let Some(path) = &config.wechat_extra_root_ca {
        options = options
            .trust_root_file(std::path::Path::new(path))
            .context("cannot use WECHAT_EXTRA_ROOT_CA")?;
    }
    let http = V3Http::new(&config.wechat_api_base, options)
        .context("cannot build the WeChat v3 client for WECHAT_API_BASE")?;
    let keys = PlatformKeys::start(store, http, entries, KeysOptions::default())
        .await
        .context("cannot read the v3 merchants' platform certificates")?;
    Ok(Some(keys))
}
