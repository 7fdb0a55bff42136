//! The outbox relay: republishes committed events that were not published
//! (the bus was down, or the process died between commit and publish), so that
//! no status change is ever lost by the stream.

use std::{sync::Arc, time::Duration};

use crate::{EventPublisher, Store, StoreError};

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
