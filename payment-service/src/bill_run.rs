//! The daily bill reconciliation: once WeChat's bill of yesterday (Beijing
//! time) is ready, after 10:00, one replica (a lease) reconciles it and stores
//! the report; a day with a report is not reconciled again (ReconcileBill with
//! `again` does that on request). Checked every few minutes (the first time one
//! period after start), so a replica that was down at 10:00 catches up soon after.

use std::{sync::Arc, time::Duration};

use chrono::{Days, Utc};
use tokio_util::sync::CancellationToken;

use crate::service::{bill_ready_at, Payments};

const LEASE: &str = "bill-reconcile";

/// Runs until `stop` is cancelled, looking every `every`.
pub async fn run(payments: Arc<Payments>, every: Duration, stop: CancellationToken) {
    let holder = format!("bill-{}", ulid::Ulid::new());
    // The first look comes one period after start, not at once: a replica that
    // just started has nothing urgent to reconcile, and a process that lives
    // only briefly (a test, a one-off) never downloads a bill it was not asked for.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = once(&payments, &holder, every) => {}
                }
            }
        }
    }
}

/// Reconciles yesterday if its bill is ready, unreconciled, and the lease is ours.
async fn once(payments: &Payments, holder: &str, every: Duration) {
    let now = Utc::now();
    let today = (now + chrono::Duration::hours(8)).date_naive();
    let Some(yesterday) = today.checked_sub_days(Days::new(1)) else {
        return;
    };
    if now < bill_ready_at(yesterday) {
        return;
    }
    let store = payments.store();
    match store.bill_report(yesterday).await {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the bill reports; the next check retries");
            return;
        }
    }
    let lease = chrono::Duration::from_std(every * 2).unwrap_or(chrono::Duration::minutes(20));
    match store.try_lease(LEASE, holder, lease).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the bill lease; the next check retries");
            return;
        }
    }
    let date = yesterday.format("%Y%m%d").to_string();
    match payments.reconcile_bill(&date, false).await {
        // One gauge, not one per day: a label per date would grow without bound.
        Ok(report) => {
            metrics::gauge!("wxpay_bill_last_discrepancies").set(report.discrepancies.len() as f64)
        }
        Err(e) => {
            tracing::warn!(bill_date = %date, error = %e, "daily bill reconciliation failed; the next check retries")
        }
    }
}
