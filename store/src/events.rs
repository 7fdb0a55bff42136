//! The event bus seen from both ends: [`EventPublisher`] (where committed events
//! go) and [`EventFeed`] + [`EventSink`] (how a subscriber such as the poller's
//! hub receives them), the per-order channel naming, the Redis publisher (one
//! server with `PUBLISH`, or a Redis Cluster with sharded `SPUBLISH`), and
//! publish-after-commit.
//!
//! Delivery is at-least-once: the outbox relay may publish an event that was also
//! published directly. Consumers order and de-duplicate by `version`.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use wxpay_core::domain::OrderEvent;

use crate::Store;

/// The pub/sub channel of one order.
pub fn channel(out_trade_no: &str) -> String {
    format!("wxpay:order:{out_trade_no}")
}

/// The prefix of every order channel (for pattern tools such as `PSUBSCRIBE wxpay:order:*`).
pub const CHANNEL_PREFIX: &str = "wxpay:order:";

/// The scheme of a Redis Cluster's URL: `redis+cluster://host:port,host:port`
/// (what `REDIS_CLUSTER_URLS` becomes). Events then use sharded pub/sub: each
/// order's channel lives on the shard that owns its slot, so the channels, and
/// their traffic, spread over the cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The same over TLS: every node is reached as `rediss://`.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// The seed nodes of a cluster URL as single-node URLs; `None` for a single
/// server's URL. Credentials before the hosts
/// (`rediss+cluster://user:password@a:1,b:2`) go with every seed: a cluster's
/// nodes share one ACL, and the client authenticates to each node it meets
/// with the first seed's credentials anyway.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix(TLS_CLUSTER_SCHEME)?)
    };
    // The last `@` ends the credentials (a password's own `@` is percent-encoded
    // in a URL, and host lists have none).
    let (auth, seeds) = match rest.rsplit_once('@') {
        Some((auth, seeds)) => (format!("{auth}@"), seeds),
        None => (String::new(), rest),
    };
    Some(
        seeds
            .split(',')
            .map(|s| s.trim().trim_end_matches('/'))
            .filter(|s| !s.is_empty())
            .map(|s| format!("{scheme}://{auth}{s}"))
            .collect(),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event could not be encoded: {0}")]
    Encode(String),
}

/// Where committed events go. Redis in the split deployment; an in-process bus
/// in the embedded one.
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    async fn publish(&self, event: &OrderEvent) -> Result<(), PublishError>;

    /// Whether the bus is reachable (for readiness).
    async fn ping(&self) -> Result<(), PublishError>;
}

/// The source of order events for a subscriber (the poller's hub). The hub calls
/// it under its table lock, so neither method may block: `subscribe` only
/// enqueues and returns a future to await outside the lock.
pub trait EventFeed: Send + Sync + 'static {
    /// Starts delivering `out_trade_no`'s events to the [`EventSink`]. The future
    /// resolves once every event published from then on will be delivered, or once
    /// the feed has promised an [`EventSink::resync`] after it is (re)subscribed
    /// (it is disconnected). Either way a snapshot read after it cannot miss a change.
    fn subscribe(&self, out_trade_no: &str) -> BoxFuture<'static, ()>;

    /// Stops delivering `out_trade_no`'s events (its last watcher left).
    fn unsubscribe(&self, out_trade_no: &str);
}

/// Where a feed hands what it receives. Called from the feed's own task or,
/// for the in-process bus, from the publisher's: it must not block.
pub trait EventSink: Send + Sync + 'static {
    /// Hands an event to whoever watches its order (if anyone).
    fn deliver(&self, event: OrderEvent);

    /// The feed was disconnected and may have missed events: every watcher must
    /// re-read its snapshot. Called after resubscribing.
    fn resync(&self);
}

/// Publishes to Redis through a reconnecting multiplexed connection, or to a
/// Redis Cluster through a cluster connection that follows slot moves and
/// failovers. Timeouts are short so that a dead Redis costs a publish a second
/// at most; the relay catches up once it is back.
#[derive(Clone)]
pub struct RedisPublisher {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Single(ConnectionManager),
    /// Connected on first use (a process starts while the cluster is down); a
    /// failed connect leaves it empty for the next publish to try again.
    Cluster(std::sync::Arc<ClusterTarget>),
}

/// The cluster's client and its connection once made (boxed behind an `Arc`:
/// the client is large and the publisher is cloned into every task).
struct ClusterTarget {
    client: redis::cluster::ClusterClient,
    conn: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
}

impl RedisPublisher {
    /// Does not connect yet: the first publish does, so a process can start while Redis is down.
    pub fn new(url: &str) -> Result<Self, PublishError> {
        if let Some(nodes) = cluster_nodes(url) {
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(1))
                // A failover takes a few seconds: a publish gives up sooner and
                // leaves the event to the relay rather than hold the caller.
                .retries(2)
                .build()
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            return Ok(Self {
                target: Target::Cluster(std::sync::Arc::new(ClusterTarget {
                    client,
                    conn: tokio::sync::OnceCell::new(),
                })),
            });
        }
        let client =
            redis::Client::open(url).map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        Ok(Self {
            target: Target::Single(conn),
        })
    }

    /// Runs `cmd` on the server, or on the cluster node its first argument's
    /// slot says.
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, PublishError> {
        let unavailable = |e: redis::RedisError| PublishError::Unavailable(e.to_string());
        match &self.target {
            Target::Single(conn) => cmd
                .query_async(&mut conn.clone())
                .await
                .map_err(unavailable),
            Target::Cluster(cluster) => {
                let conn = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection())
                    .await
                    .map_err(unavailable)?;
                cmd.query_async(&mut conn.clone())
                    .await
                    .map_err(unavailable)
            }
        }
    }
}

#[async_trait]
impl EventPublisher for RedisPublisher {
    async fn publish(&self, event: &OrderEvent) -> Result<(), PublishError> {
        let payload =
            serde_json::to_string(event).map_err(|e| PublishError::Encode(e.to_string()))?;
        // On a cluster, a sharded message goes to the one shard that owns the
        // channel's slot, where the poller's SSUBSCRIBE is.
        let verb = match self.target {
            Target::Single(_) => "PUBLISH",
            Target::Cluster(_) => "SPUBLISH",
        };
        let mut cmd = redis::cmd(verb);
        cmd.arg(channel(event.out_trade_no.as_str())).arg(payload);
        let _receivers: i64 = self.query(cmd).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), PublishError> {
        let _: String = self.query(redis::cmd("PING")).await?;
        Ok(())
    }
}

/// Publishes a just-committed event and marks it published. Failure is logged,
/// not returned: the event is safe in the outbox and the relay will send it.
pub async fn publish_committed(
    store: &dyn Store,
    publisher: &dyn EventPublisher,
    event: &OrderEvent,
) {
    if publish_direct(publisher, event).await {
        if let Err(e) = store.mark_published(&[event.id]).await {
            // Harmless: the relay will publish it again and watchers drop the duplicate.
            tracing::warn!(out_trade_no = %event.out_trade_no, error = %e, "could not mark event published");
        }
    }
}

/// Publishes a committed event straight away; whether it went out (when it did
/// not, the outbox relay sends it).
pub(crate) async fn publish_direct(publisher: &dyn EventPublisher, event: &OrderEvent) -> bool {
    match publisher.publish(event).await {
        Ok(()) => {
            metrics::counter!("wxpay_events_published_total", "path" => "direct").increment(1);
            true
        }
        Err(e) => {
            metrics::counter!("wxpay_events_publish_failed_total").increment(1);
            tracing::warn!(out_trade_no = %event.out_trade_no, error = %e, "publish failed; the outbox relay will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seed_nodes() {
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,10.0.0.2:7001/"),
            Some(vec![
                "redis://127.0.0.1:7000".to_owned(),
                "redis://10.0.0.2:7001".to_owned()
            ])
        );
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379"), None);
        assert_eq!(cluster_nodes("rediss://127.0.0.1:6379"), None);
    }

    #[test]
    fn a_cluster_url_keeps_its_tls_and_credentials_for_every_seed() {
        assert_eq!(
            cluster_nodes("rediss+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001"),
            Some(vec![
                "rediss://app:p%40ss@10.0.0.1:7000".to_owned(),
                "rediss://app:p%40ss@10.0.0.2:7001".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("redis+cluster://:secret@h:1"),
            Some(vec!["redis://:secret@h:1".to_owned()])
        );
    }
}
