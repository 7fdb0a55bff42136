//! Wiring: the store, the hub with its Redis feed and fallback, the gRPC server
//! (WatchOrder behind the bearer-token check, health, reflection v1 and v1alpha, HTTP/2
//! keepalive), the WebSocket / SSE watch (on the shared accept loop of
//! `wxpay_runtime::http_edge`) and the metrics server, bound in `build` (port 0
//! works for tests) and run by `run_until_stopped`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use wxpay_proto::v1::order_status_service_server::{OrderStatusServiceServer, SERVICE_NAME};
use wxpay_runtime::auth::BearerAuth;
use wxpay_store::{postgres::PgOptions, EventFeed, PgStore, Store};

use crate::{
    config::Config,
    confirm::Confirmer,
    fallback::{Fallback, GrpcQuerier, OrderQuerier},
    http_watch::HttpWatch,
    hub::{FeedSink, Hub},
    metrics,
    redis_feed::{RedisFeed, RedisFeedConfig},
    service::WatchService,
    snapshots::Snapshots,
};

/// Whether the events a feed delivers are believed as they come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedTrust {
    /// Only this process publishes on it (the in-process bus): every event is
    /// a transition this process committed.
    Trusted,
    /// Others can publish on it (Redis): a watcher is told a status only once
    /// the database confirms it (see [`crate::confirm`]).
    Confirmed,
}

/// A watch with no listener and no fallback, over Redis: for a process that
/// only shows orders as they change (the operator console), with the poller's
/// guarantees (subscribe before the snapshot; an event on Redis is believed only
/// once the database confirms it). It never asks WeChat: nobody is waiting to
/// pay through it. The feed stops when `shutdown` is cancelled.
pub fn redis_watch(
    store: Arc<dyn Store>,
    redis_url: &str,
    client_name: &str,
    deadlines: crate::service::Deadlines,
    max_streams: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<WatchService> {
    let feed_config = RedisFeedConfig::new(redis_url, client_name);
    let client = RedisFeed::client(&feed_config).context("REDIS_URL")?;
    let snapshots = Snapshots::start(store);
    let confirm = Some(Confirmer::new(snapshots.clone()));
    let feed_shutdown = shutdown.clone();
    let hub = Hub::new(None, confirm, |sink| {
        RedisFeed::start(client, feed_config, sink, feed_shutdown)
    });
    Ok(WatchService::new(
        snapshots,
        hub,
        deadlines,
        max_streams,
        shutdown,
    ))
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    /// The WebSocket / SSE watch, when there is a watch secret to check tokens.
    http_listener: Option<TcpListener>,
    config: Config,
    service: WatchService,
    hub: Hub,
    shutdown: CancellationToken,
}

impl Application {
    /// Connects to Postgres, builds the gRPC QueryOrder client and binds both listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_database(config, PgOptions::default()).await
    }

    /// [`build`](Self::build) with the pool's options (the binary's: its
    /// `DATABASE_MAX_CONNECTIONS`, and waiting for a database not there yet).
    pub async fn build_with_database(config: Config, options: PgOptions) -> anyhow::Result<Self> {
        let store = PgStore::connect(&config.database_url, options)
            .await
            .context("cannot open the database")?;
        let querier = GrpcQuerier::with_ca(
            &config.payment_service_url,
            config.fallback_token(),
            config.payment_service_ca.as_deref(),
        )
        .context("PAYMENT_SERVICE_URL")?;
        Self::build_with(config, Arc::new(store), Arc::new(querier)).await
    }

    /// Like [`build`](Self::build) with the store and the fallback querier given
    /// (tests; the embedded single-process mode).
    pub async fn build_with(
        config: Config,
        store: Arc<dyn Store>,
        querier: Arc<dyn OrderQuerier>,
    ) -> anyhow::Result<Self> {
        let feed_config =
            RedisFeedConfig::new(config.redis_url.clone(), config.redis_client_name.clone());
        let client = RedisFeed::client(&feed_config).context("REDIS_URL")?;
        // Whoever reaches Redis can publish on it: its events are confirmed.
        Self::build_with_feed(
            config,
            store,
            querier,
            FeedTrust::Confirmed,
            |sink, shutdown| RedisFeed::start(client, feed_config, sink, shutdown),
        )
        .await
    }

    /// Like [`build_with`](Self::build_with) with the event feed given too: the
    /// embedded single-process mode passes `wxpay_store::LocalBus`'s feed
    /// instead of Redis, which only this process publishes on
    /// ([`FeedTrust::Trusted`]). `make_feed` gets the hub's sink and the token
    /// cancelled at shutdown (`config.redis_url` is not used).
    pub async fn build_with_feed<F: EventFeed>(
        config: Config,
        store: Arc<dyn Store>,
        querier: Arc<dyn OrderQuerier>,
        trust: FeedTrust,
        make_feed: impl FnOnce(FeedSink, CancellationToken) -> F,
    ) -> anyhow::Result<Self> {
        let listener = bind(config.addr).await?;
        let metrics_listener = bind(config.metrics_addr).await?;
        let http_listener = match &config.watch_secret {
            Some(_) => Some(bind(config.http_addr).await?),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let fallback = Fallback {
            querier,
            delay: config.fallback_delay,
            max_delay: config.fallback_max_delay,
        };
        // One batching reader for snapshots and confirmations alike.
        let snapshots = Snapshots::start(store);
        let confirm = match trust {
            FeedTrust::Trusted => None,
            FeedTrust::Confirmed => Some(Confirmer::new(snapshots.clone())),
        };
        let hub = Hub::new(Some(fallback), confirm, |sink| {
            make_feed(sink, shutdown.clone())
        });
        let service = WatchService::new(
            snapshots,
            hub.clone(),
            config.deadlines,
            config.max_streams,
            shutdown.clone(),
        );
        Ok(Self {
            listener,
            metrics_listener,
            http_listener,
            config,
            service,
            hub,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn metrics_port(&self) -> u16 {
        self.metrics_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// The HTTP watch's port, when it is served.
    pub fn http_port(&self) -> Option<u16> {
        self.http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The watch this poller serves: another part of the same process (the
    /// embedded operator console) shows orders live through it, sharing its
    /// hub and feed instead of subscribing a second time.
    pub fn watch_service(&self) -> WatchService {
        self.service.clone()
    }

    /// Serves until `shutdown` resolves. Then: health turns NOT_SERVING, open
    /// streams end with UNAVAILABLE (clients reconnect elsewhere), the Redis feed
    /// stops, and in-flight calls drain.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        // Reflection in both versions: grpcurl speaks v1, while grpcio-reflection,
        // Postman and older tools built on it still ask v1alpha and would get
        // UNIMPLEMENTED from a v1-only server.
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wxpay_proto::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("reflection")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(wxpay_proto::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("reflection (v1alpha)")?;
        let watch = OrderStatusServiceServer::with_interceptor(
            self.service.clone(),
            BearerAuth::new(self.config.api_tokens()),
        );

        let token = self.shutdown.clone();
        let signal = async move {
            shutdown.await;
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            reporter
                .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
                .await;
            token.cancel();
        };

        let metrics_server = axum::serve(self.metrics_listener, metrics::router(metrics::handle()))
            .with_graceful_shutdown(self.shutdown.clone().cancelled_owned());
        let metrics_task = tokio::spawn(async move {
            if let Err(e) = metrics_server.await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });

        let http_task = match (self.http_listener, self.config.watch_secret.clone()) {
            (Some(listener), Some(secret)) => {
                let origin = match &self.config.sse_allow_origin {
                    Some(o) => Some(
                        axum::http::HeaderValue::from_str(o)
                            .context("POLLER_SSE_ALLOW_ORIGIN is not a header value")?,
                    ),
                    None => None,
                };
                let router = HttpWatch::new(self.service.clone(), secret, origin).router();
                tracing::info!(addr = ?listener.local_addr().ok(), "WebSocket / SSE watch listening");
                // The gateway's accept loop: header timeout, connection cap
                // with the idlest closed to make room, idle close.
                Some(tokio::spawn(wxpay_runtime::http_edge::serve(
                    listener,
                    router,
                    self.config.http_limits.clone(),
                    self.shutdown.clone().cancelled_owned(),
                )))
            }
            _ => {
                tracing::info!("no WATCH_TOKEN_SECRET: the WebSocket / SSE watch is off");
                None
            }
        };

        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &self.config.tls {
            builder = builder.tls_config(tls.server_config())?;
        }
        let result = builder
            .layer(tower::util::MapRequestLayer::new(
                wxpay_runtime::auth::tag_method,
            ))
            // Idle streams carry no data for minutes; PINGs keep NATs and proxies
            // from dropping the connection and detect dead clients.
            .http2_keepalive_interval(Some(self.config.keepalive_interval))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(self.config.max_streams_per_connection))
            .add_service(health)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(watch)
            .serve_with_incoming_shutdown(
                // The builder's tcp_* settings apply only to tonic's own incoming, so
                // they are set here: Nagle off (events must not wait ~40 ms for a
                // delayed ACK) and TCP keepalive for idle streams behind proxies.
                tonic::transport::server::TcpIncoming::from(self.listener)
                    .with_nodelay(Some(true))
                    .with_keepalive(Some(Duration::from_secs(60))),
                signal,
            )
            .await;
        // If the server failed on its own, still stop the feed and the metrics server.
        self.shutdown.cancel();
        let _ = metrics_task.await;
        if let Some(task) = http_task {
            let _ = task.await;
        }
        result.context("gRPC server failed")
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}
