//! The outbox relay: republishes committed events that were not published
//! (the bus was down, or the process died between commit and publish), so that
//! no status change is ever lost by the stream.
//!
//! Every replica of payment-service and the gateway runs one, but one at a
//! time works: each turn starts by taking (or renewing) the `outbox-relay`
//! lease, so two relays never republish the same backlog side by side. When
//! the holder dies, its lease runs out after [`Relay::lease`] and another
//! replica's relay takes over. The shutdown flush publishes without the lease:
//! a duplicate there is harmless (watchers drop versions they have seen),
//! a lost event would not be.

use std::{sync::Arc, time::Duration};

use crate::{EventPublisher, Store, StoreError};

/// The lease the relays of every replica compete for.
pub const LEASE: &str = "outbox-relay";

/// Republishes outbox rows that are still unpublished after `min_age`.
#[derive(Clone)]
pub struct Relay {
    store: Arc<dyn Store>,
    publisher: Arc<dyn EventPublisher>,
    /// This relay's name in the lease table (unique per process).
    holder: String,
    /// How long a turn's lease lasts: how soon another replica takes over
    /// after the holder dies.
    pub lease: Duration,
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
            holder: format!("relay-{}", ulid::Ulid::new()),
            lease: Duration::from_secs(5),
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

    /// One turn of the periodic relay: when events are due, while this relay
    /// holds the lease, every batch of them. `None`: another replica's relay
    /// holds it.
    pub async fn turn(&self, min_age: Duration) -> Result<Option<usize>, StoreError> {
        // Nothing due: no lease is taken, so an idle relay costs one read a
        // tick (as before the lease), not a write.
        if self.store.unpublished_events(min_age, 1).await?.is_empty() {
            return Ok(Some(0));
        }
        let ttl = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(5));
        let mut total = 0;
        // The lease is renewed before each batch, so a long backlog never
        // outlives it while this relay is still at work.
        while self.store.try_lease(LEASE, &self.holder, ttl).await? {
            let n = self.run_once(min_age).await?;
            total += n;
            if (n as i64) < self.batch {
                return Ok(Some(total));
            }
        }
        Ok((total > 0).then_some(total))
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
                    if let Err(e) = self.turn(self.min_age).await {
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
