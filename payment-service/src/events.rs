//! Order events after they are committed: the Redis channel naming, the
//! publisher, publish-after-commit, and the outbox relay that republishes what
//! was not published (Redis down, or the process died between commit and
//! publish), so that no status change is ever lost by the stream.
//!
//! Delivery is at-least-once: a relay may publish an event that was also
//! published directly. Consumers order and de-duplicate by `version`.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{
    domain::OrderEvent,
    store::{Store, StoreError},
};

/// The pub/sub channel of one order.
pub fn channel(out_trade_no: &str) -> String {
    format!("wxpay:order:{out_trade_no}")
}

/// The prefix of every order channel (for pattern tools such as `PSUBSCRIBE wxpay:order:*`).
pub const CHANNEL_PREFIX: &str = "wxpay:order:";

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

/// Publishes to Redis through a reconnecting multiplexed connection. Timeouts
/// are short so that a dead Redis costs a publish a second at most; the relay
/// catches up once it is back.
#[derive(Clone)]
pub struct RedisPublisher {
    conn: ConnectionManager,
}

impl RedisPublisher {
    /// Does not connect yet: the first publish does, so a process can start while Redis is down.
    pub fn new(url: &str) -> Result<Self, PublishError> {
        let client =
            redis::Client::open(url).map_err(|e| PublishError::Unavailable(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        Ok(Self { conn })
    }
}

#[async_trait]
impl EventPublisher for RedisPublisher {
    async fn publish(&self, event: &OrderEvent) -> Result<(), PublishError> {
        let payload =
            serde_json::to_string(event).map_err(|e| PublishError::Encode(e.to_string()))?;
        let mut conn = self.conn.clone();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel(&event.out_trade_no))
            .arg(payload)
            .query_async(&mut conn)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), PublishError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| PublishError::Unavailable(e.to_string()))?;
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
    match publisher.publish(event).await {
        Ok(()) => {
            metrics::counter!("wxpay_events_published_total", "path" => "direct").increment(1);
            if let Err(e) = store.mark_published(&[event.id]).await {
                // Harmless: the relay will publish it again and watchers drop the duplicate.
                tracing::warn!(out_trade_no = %event.out_trade_no, error = %e, "could not mark event published");
            }
        }
        Err(e) => {
            metrics::counter!("wxpay_events_publish_failed_total").increment(1);
            tracing::warn!(out_trade_no = %event.out_trade_no, error = %e, "publish failed; the outbox relay will retry");
        }
    }
}

/// Republishes outbox rows that are still unpublished after `min_age`.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    publisher: Arc<dyn EventPublisher>,
    /// How often to look.
    pub interval: Duration,
    /// How old an unpublished event must be before the relay takes it, leaving
    /// the direct publish time to do its job.
    pub min_age: Duration,
    pub batch: i64,
}

impl Relay {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn EventPublisher>) -> Self {
        Self {
            store,
            publisher,
            interval: Duration::from_millis(500),
            min_age: Duration::from_secs(1),
            batch: 500,
        }
    }

    /// Publishes one batch; returns how many were published.
    pub async fn run_once(&self, min_age: Duration) -> Result<usize, StoreError> {
        let events = self.store.unpublished_events(min_age, self.batch).await?;
        let mut done = Vec::with_capacity(events.len());
        for event in &events {
            match self.publisher.publish(event).await {
                Ok(()) => done.push(event.id),
                Err(e) => {
                    tracing::debug!(error = %e, "relay: event bus still unavailable");
                    break;
                }
            }
        }
        self.store.mark_published(&done).await?;
        if !done.is_empty() {
            metrics::counter!("wxpay_events_published_total", "path" => "relay")
                .increment(done.len() as u64);
            tracing::info!(count = done.len(), "relay republished outbox events");
        }
        Ok(done.len())
    }

    /// Runs until `shutdown` resolves, then flushes whatever it can.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    if let Err(e) = self.run_once(self.min_age).await {
                        tracing::debug!(error = %e, "relay: database unavailable");
                    }
                }
            }
        }
        self.flush().await;
    }

    /// Publishes everything unpublished, however young (used at shutdown).
    pub async fn flush(&self) {
        for _ in 0..20 {
            match self.run_once(Duration::ZERO).await {
                Ok(n) if n as i64 == self.batch => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "relay flush stopped");
                    break;
                }
            }
        }
    }
}
