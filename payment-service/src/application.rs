//! Builds and runs the payment-service gRPC server: PaymentService behind the
//! bearer-token check, grpc.health.v1, reflection (v1 and v1alpha), the outbox relay, the
//! reconciler, the refresh of WeChat's v3 keys, and a graceful shutdown (health
//! NOT_SERVING, drain, relay flush).

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use wxpay_proto::v1::payment_service_server::PaymentServiceServer;

use wxpay_core::watch_token::WatchSecret;
use wxpay_runtime::{
    auth::{ApiTokens, BearerAuth},
    config::{self, ConfigError},
    tls::ServerTls,
};

/// `API_TOKEN`, `API_READ_TOKEN` and `API_CALLERS_FILE` (whose merchants must
/// be configured ones), and the refusal to serve the network without a token,
/// or with one but without TLS (or `ALLOW_PLAINTEXT=1`).
fn tokens(
    addr: SocketAddr,
    wechat: &WechatConfig,
    tls: Option<&ServerTls>,
) -> Result<ApiTokens, ConfigError> {
    let full = config::api_token()?;
    let read = config::api_read_token(full.as_ref())?;
    let merchants: Vec<&str> = wechat
        .merchants
        .iter()
        .map(|m| m.entry.name.as_str())
        .collect();
    let callers = config::api_callers(Some(&merchants), full.as_ref(), read.as_ref())?;
    config::require_token_off_loopback("PAYMENT_ADDR", addr, full.as_ref())?;
    let tokens = ApiTokens {
        full,
        read,
        callers,
    };
    config::require_tls_off_loopback("PAYMENT_ADDR", addr, tokens.any(), tls.is_some())?;
    Ok(tokens)
}
use wxpay_store::{
    postgres::PgOptions, EventPublisher, Ledger, PgStore, RedisPublisher, Relay, Store,
};
use wxpay_wechat_v3::{KeysOptions, PlatformKeys};

use crate::{
    config::WechatConfig,
    grpc::PaymentGrpc,
    reconciler::{Reconciler, ReconcilerConfig},
    service::Payments,
    wechat::{ClientOptions, WechatApi},
};

/// Everything payment-service reads from the environment.
/// How often the daily bill reconciliation looks for a day to reconcile.
const BILL_CHECK_EVERY: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: String,
    /// `DATABASE_MAX_CONNECTIONS` and `DATABASE_CONNECT_TIMEOUT_SECONDS`.
    pub database_pool: config::DatabasePool,
    pub redis_url: String,
    pub wechat: WechatConfig,
    pub addr: SocketAddr,
    pub api_tokens: ApiTokens,
    pub reconcile: ReconcilerConfig,
    /// `TLS_CERT` + `TLS_KEY`: serve gRPC over TLS; `None` serves plaintext.
    pub tls: Option<ServerTls>,
    /// `WATCH_TOKEN_SECRET`: sign a watch token into every CreateOrder reply.
    pub watch_secret: Option<WatchSecret>,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = config::addr("PAYMENT_ADDR", "0.0.0.0:50051")?;
        let wechat = WechatConfig::from_env()?;
        let tls = ServerTls::from_env()?;
        Ok(Self {
            database_url: config::database_url()?,
            database_pool: config::database_pool()?,
            redis_url: config::redis_url()?,
            api_tokens: tokens(addr, &wechat, tls.as_ref())?,
            wechat,
            addr,
            reconcile: ReconcilerConfig::from_env()?,
            tls,
            watch_secret: config::watch_secret()?,
        })
    }
}

pub struct Application {
    listener: TcpListener,
    payments: Arc<Payments>,
    relay: Relay,
    api_tokens: ApiTokens,
    reconcile: ReconcilerConfig,
    tls: Option<ServerTls>,
    /// WeChat's keys for the v3 merchants, refreshed while the server runs.
    platform_keys: Option<Arc<PlatformKeys>>,
}

impl Application {
    /// Connects to Postgres (waiting for it at start, then running
    /// migrations) and binds the listener. Redis is connected lazily: the
    /// service starts while it is down and the relay publishes later.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings.database_pool;
        let store: Arc<dyn Store> = Arc::new(
            PgStore::connect(
                &settings.database_url,
                PgOptions::for_service(pool.max_connections, pool.connect_timeout),
            )
            .await?,
        );
        let publisher: Arc<dyn EventPublisher> =
            Arc::new(RedisPublisher::new(&settings.redis_url)?);
        let options = ClientOptions::default();
        let platform_keys = settings
            .wechat
            .platform_keys(store.clone(), &options, KeysOptions::default())
            .await?;
        let wechat = settings
            .wechat
            .clients_with_keys(options, platform_keys.as_ref())?;
        let listener = TcpListener::bind(settings.addr).await?;
        let tls = settings.tls.clone();
        let watch_secret = settings.watch_secret.clone();
        Ok(Self::from_parts(
            listener,
            store,
            publisher,
            wechat,
            settings.api_tokens,
            settings.reconcile,
        )
        .with_tls(tls)
        .with_watch_secret(watch_secret)
        .with_platform_keys(platform_keys))
    }

    /// WeChat's keys the v3 merchants' clients verify with (the ones
    /// [`WechatConfig::platform_keys`] started and
    /// [`WechatConfig::clients_with_keys`] built the clients over): the
    /// server refreshes them (every 12 h, and retries a failed first
    /// download every minute) until it stops.
    pub fn with_platform_keys(mut self, keys: Option<Arc<PlatformKeys>>) -> Self {
        self.platform_keys = keys;
        self
    }

    /// Signs a watch token into every CreateOrder reply. Called while building,
    /// before anything shares the service (after that it is a logged no-op).
    pub fn with_watch_secret(mut self, secret: Option<WatchSecret>) -> Self {
        match Arc::get_mut(&mut self.payments) {
            Some(payments) => payments.set_watch_secret(secret),
            None => tracing::error!(
                "the watch secret came after the service was shared; no watch tokens"
            ),
        }
        self
    }

    /// Serves gRPC over TLS with this certificate.
    pub fn with_tls(mut self, tls: Option<ServerTls>) -> Self {
        self.tls = tls;
        self
    }

    /// Assembles the server from ready parts (the embedded single-process mode
    /// uses this); `wechat` is one client per merchant, as
    /// [`WechatConfig::clients_with_keys`] builds them. With v3 merchants,
    /// also pass their keys to [`Self::with_platform_keys`].
    pub fn from_parts(
        listener: TcpListener,
        store: Arc<dyn Store>,
        publisher: Arc<dyn EventPublisher>,
        wechat: Vec<Arc<dyn WechatApi>>,
        api_tokens: impl Into<ApiTokens>,
        reconcile: ReconcilerConfig,
    ) -> Self {
        let relay = Relay::new(store.clone(), publisher.clone());
        let payments = Arc::new(Payments::new(Ledger::new(store, publisher), wechat));
        Self {
            listener,
            payments,
            relay,
            api_tokens: api_tokens.into(),
            reconcile,
            tls: None,
            platform_keys: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn payments(&self) -> Arc<Payments> {
        self.payments.clone()
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls (bounded) and flushes the relay.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<PaymentServiceServer<PaymentGrpc>>()
            .await;
        // Reflection in both versions: grpcurl speaks v1, while grpcio-reflection
        // (Python), Postman and older tools built on it still ask v1alpha and
        // would get UNIMPLEMENTED from a v1-only server.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wxpay_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wxpay_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let service = tonic::service::interceptor::InterceptedService::new(
            PaymentServiceServer::new(PaymentGrpc::new(self.payments.clone())),
            BearerAuth::new(self.api_tokens.clone()),
        );

        // The reconciler stops first at shutdown: a pass cut short leaves its
        // claims to run out, and the next replica takes them over.
        let stop_reconciler = tokio_util::sync::CancellationToken::new();
        let reconciler_task = tokio::spawn(
            Reconciler::new(self.payments.clone(), self.reconcile.clone())
                .run(stop_reconciler.clone()),
        );
        let keys_task = self
            .platform_keys
            .as_ref()
            .map(|keys| keys.spawn_refresh(stop_reconciler.clone()));
        let bill_task = tokio::spawn(crate::bill_run::run(
            self.payments.clone(),
            BILL_CHECK_EVERY,
            stop_reconciler.clone(),
        ));
        let (stop_relay_tx, stop_relay_rx) = tokio::sync::oneshot::channel::<()>();
        let relay_task = tokio::spawn(self.relay.clone().run(async {
            let _ = stop_relay_rx.await;
        }));

        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            // Tell load balancers first, then stop accepting.
            health_reporter
                .set_not_serving::<PaymentServiceServer<PaymentGrpc>>()
                .await;
            let _ = drained_tx.send(());
        };
        tracing::info!(port = self.port(), "payment-service listening");
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        let server = builder
            .layer(tower::util::MapRequestLayer::new(
                wxpay_runtime::auth::tag_method,
            ))
            .timeout(Duration::from_secs(30))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(
                // Nagle off: small gRPC replies must not wait for the peer's delayed ACK (~40 ms).
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                signal,
            );
        tokio::pin!(server);
        // In-flight calls get a bounded time to finish once shutdown starts.
        tokio::select! {
            res = &mut server => res?,
            _ = async {
                let _ = drained_rx.await;
                tokio::time::sleep(Duration::from_secs(15)).await;
            } => tracing::warn!("drain timed out; exiting with calls in flight"),
        }
        stop_reconciler.cancel();
        let _ = reconciler_task.await;
        let _ = bill_task.await;
        if let Some(task) = keys_task {
            let _ = task.await;
        }
        // Publishes started by calls that finished go out before the relay's last flush.
        self.payments.ledger().drain().await;
        let _ = stop_relay_tx.send(());
        let _ = relay_task.await;
        tracing::info!("payment-service stopped");
        Ok(())
    }
}
