//! Builds and runs the gateway: connects storage and the event bus, binds the
//! listener, serves [`crate::app`], runs the outbox relay beside it, and shuts
//! down gracefully (stop accepting, finish in-flight notifications and their
//! publishes, flush the relay).

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use wxpay_core::wechat::MerchantBook;
use wxpay_store::{EventPublisher, PgStore, RedisPublisher, Relay, Retention, Store};

use crate::{
    config::{CloudpaySecret, GatewayConfig},
    connections::{self, Limits},
    orderquery::OrderQuery,
    routes::app,
    state::AppState,
};

/// `RETENTION_DAYS`' default: 90 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// How long in-flight requests and tasks get once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Application {
    listener: TcpListener,
    state: AppState,
    relay: Relay,
    limits: Limits,
    retention: Retention,
}

impl Application {
    /// Connects to Postgres (running migrations), prepares Redis (lazily: the
    /// gateway starts and keeps answering while Redis is down) and binds.
    pub async fn build(config: GatewayConfig) -> anyhow::Result<Self> {
        let store: Arc<dyn Store> = Arc::new(
            PgStore::connect(&config.database_url, Default::default())
                .await
                .context("cannot use DATABASE_URL")?,
        );
        let publisher: Arc<dyn EventPublisher> =
            Arc::new(RedisPublisher::new(&config.redis_url).context("cannot use REDIS_URL")?);
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on GATEWAY_ADDR {}", config.addr))?;
        Self::from_parts(
            listener,
            store,
            publisher,
            config.merchants,
            config.cloudpay_secret,
        )
        .with_limits(config.limits)
        .with_retention(config.retention)
        .with_wechat_api(&config.wechat_api_base)
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
            state,
            relay,
            limits: Limits::default(),
            retention,
        }
    }

    /// Where a cloud-pay SUCCESS is confirmed (WeChat's orderquery) before it
    /// is applied.
    pub fn with_wechat_api(mut self, api_base: &str) -> anyhow::Result<Self> {
        self.state.orderquery =
            Some(OrderQuery::new(api_base).context("cannot build the orderquery client")?);
        Ok(self)
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
        let relay_task = tokio::spawn(self.relay.clone().run(async {
            let _ = stop_relay_rx.await;
        }));

        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        };
        tracing::info!(port = self.port(), limits = ?self.limits, "gateway listening");
        let router = connections::limited(app(self.state.clone()), &self.limits);
        let server = connections::serve(self.listener, router, self.limits.clone(), signal);
        tokio::pin!(server);
        // Accepting stops at once and open connections finish; a sender that
        // never finishes its request gets DRAIN_TIMEOUT, not forever.
        let served: anyhow::Result<()> = tokio::select! {
            () = &mut server => Ok(()),
            _ = async {
                let _ = stopping_rx.await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => {
                tracing::warn!("drain timed out; exiting with requests in flight");
                Ok(())
            }
        };

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
        let _ = stop_relay_tx.send(());
        let _ = relay_task.await;
        tracing::info!("gateway stopped");
        served
    }
}
