//! The Redis [`EventFeed`]: ONE pub/sub connection per process, shared by every
//! watcher, owned by one task that keeps its subscriptions equal to the set of
//! watched orders.
//!
//! The connection speaks RESP3, so pub/sub messages arrive as push frames on an
//! ordinary multiplexed connection: that lets the same connection be named with
//! `CLIENT SETNAME` (operators and tests find it in `CLIENT LIST`) and pinged in
//! subscribed mode. Messages are handed to the hub straight from the connection's
//! reader (a map lookup and a `watch` update), so nothing queues between Redis and
//! the watchers. When the connection is lost the task reconnects with backoff,
//! resubscribes every channel and asks the hub to make every watcher re-read its
//! snapshot, so a change published during the outage still reaches it.
//!
//! With a Redis Cluster (`redis+cluster://` URL, from `REDIS_CLUSTER_URLS`) the
//! feed uses sharded pub/sub instead, over one cluster connection: see `cluster`.
//!
//! This module is the handle and its settings: [`RedisFeedConfig`] and the
//! [`RedisFeed`] the hub holds, which only queues commands for the task. The
//! task itself (connecting, pinging, reconnecting, handing messages to the hub)
//! is `connection`'s (or `cluster`'s); which channels are wanted and which Redis
//! has is `subscriptions`'. Nothing here touches Redis except to build the client.

mod cluster;
mod connection;
mod subscriptions;

use std::time::Duration;

use futures::{future::BoxFuture, FutureExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wxpay_store::events;

use wxpay_store::EventFeed;

use crate::hub::FeedSink;

use connection::Connection;
use subscriptions::Command;

/// How the feed connects.
#[derive(Debug, Clone)]
pub struct RedisFeedConfig {
    pub url: String,
    /// Set with `CLIENT SETNAME` on the connection (no spaces).
    pub client_name: String,
    /// How often the idle connection is pinged, so a dead peer is noticed even
    /// when the TCP connection does not say so.
    pub ping_interval: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
}

impl RedisFeedConfig {
    pub fn new(url: impl Into<String>, client_name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client_name: client_name.into(),
            ping_interval: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("bad Redis URL: {0}")]
pub struct FeedConfigError(String);

/// The handle the hub holds; the connection lives in the task [`RedisFeed::start`] spawns.
pub struct RedisFeed {
    commands: mpsc::UnboundedSender<Command>,
}

/// What the feed connects to: one server, or a cluster's seed nodes.
pub enum FeedClient {
    /// Boxed: with TLS support the client is ten times the size of a seed list.
    Single(Box<redis::Client>),
    Cluster(Vec<String>),
}

impl RedisFeed {
    /// A RESP3 client for `config.url` (pub/sub messages arrive as push frames).
    pub fn client(config: &RedisFeedConfig) -> Result<FeedClient, FeedConfigError> {
        if let Some(nodes) = events::cluster_nodes(&config.url) {
            if nodes.is_empty() {
                return Err(FeedConfigError("a cluster URL without seed nodes".into()));
            }
            return Ok(FeedClient::Cluster(nodes));
        }
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| FeedConfigError(e.to_string()))?;
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        redis::Client::open(info.set_redis_settings(resp3))
            .map(|client| FeedClient::Single(Box::new(client)))
            .map_err(|e| FeedConfigError(e.to_string()))
    }

    /// Spawns the connection task (it connects in the background and keeps trying,
    /// so the poller starts while Redis is down). It stops when `shutdown` is cancelled.
    pub fn start(
        client: FeedClient,
        config: RedisFeedConfig,
        sink: FeedSink,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, rx) = mpsc::unbounded_channel();
        match client {
            FeedClient::Single(client) => {
                tokio::spawn(Connection::new(*client, config, sink).run(rx, shutdown));
            }
            FeedClient::Cluster(nodes) => {
                tokio::spawn(cluster::ClusterTask::new(nodes, config, sink).run(rx, shutdown));
            }
        }
        Self { commands }
    }
}

impl EventFeed for RedisFeed {
    fn subscribe(&self, out_trade_no: &str) -> BoxFuture<'static, ()> {
        let (tx, rx) = oneshot::channel();
        // A send error means the task stopped (shutdown): nothing will arrive, but
        // the watcher still gets its snapshot and then the shutdown status.
        let _ = self
            .commands
            .send(Command::Subscribe(events::channel(out_trade_no), tx));
        async move {
            let _ = rx.await;
        }
        .boxed()
    }

    fn unsubscribe(&self, out_trade_no: &str) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(events::channel(out_trade_no)));
    }
}
