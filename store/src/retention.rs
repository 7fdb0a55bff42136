//! Retention: published outbox events, audit rows of received notifications and
//! anomalies older than `RETENTION_DAYS` are deleted, in small batches (so no
//! delete holds locks or the single SQLite writer for long), by one replica at a
//! time (a lease). Orders are never deleted: they are the merchant's records.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::{Store, StoreError};

const LEASE: &str = "retention";
/// Rows per delete statement.
const BATCH: i64 = 1000;
/// Pause between two batches, leaving the database to the requests.
const PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct Retention {
    store: Arc<dyn Store>,
    /// How long rows are kept.
    pub keep: Duration,
    /// How often to look.
    pub interval: Duration,
    holder: String,
}

impl Retention {
    pub fn new(store: Arc<dyn Store>, keep: Duration) -> Self {
        Self {
            store,
            keep,
            interval: Duration::from_secs(3600),
            holder: format!("retention-{}", ulid::Ulid::new()),
        }
    }

    /// Deletes everything past retention, batch by batch; returns how many rows.
    pub async fn run_once(&self) -> Result<u64, StoreError> {
        let lease = chrono::Duration::from_std(self.interval).unwrap_or(chrono::Duration::hours(1));
        if !self.store.try_lease(LEASE, &self.holder, lease).await? {
            return Ok(0);
        }
        let keep = chrono::Duration::from_std(self.keep).unwrap_or(chrono::Duration::days(90));
        let before = Utc::now() - keep;
        let mut total = 0;
        loop {
            let n = self.store.purge_before(before, BATCH).await?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if total > 0 {
            metrics::counter!("wxpay_retention_deleted_total").increment(total);
            tracing::info!(rows = total, %before, "retention deleted old events, audit rows and anomalies");
        }
        Ok(total)
    }

    /// Runs a pass every interval until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = self.run_once().await {
                        tracing::warn!(error = %e, "retention pass failed; next interval retries");
                    }
                }
            }
        }
    }
}
