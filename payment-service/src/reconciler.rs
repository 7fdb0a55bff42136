//! The reconciler: payment-service's background task that settles what no
//! notification settled. Every interval it claims the unsettled orders that are
//! due (NOTPAY, USERPAYING or PAYERROR, created at least `after` ago, next check
//! reached) and, for each, asks WeChat:
//!
//! - an order still within its time asks `orderquery`, and the answer goes
//!   through the state machine like a notification (a payment whose
//!   notification was lost becomes SUCCESS and is published); the next question
//!   backs off (1, 2, 5, 10, 30 minutes, then every 30) until the order expires;
//! - an expired order is closed at WeChat first (`closeorder`), and CLOSED
//!   locally only once WeChat agrees; if WeChat says it was paid, the payment is
//!   recorded instead. WeChat refuses to close an order within 5 minutes of its
//!   creation, so such an order waits until then.
//!
//! Refunds still PROCESSING get the same treatment: once `after` has passed,
//! `refundquery` tells their fate (applied like a refund notification); one WeChat
//! never saw (the request was lost) is sent again under its own number; one still
//! moving is asked again on the same backoff.
//!
//! One replica at a time runs a pass (a lease in the store), claims are per
//! order (so even two passes never ask about one order twice), and WeChat calls
//! are paced to `max_qps`: WeChat throttles orderquery per merchant.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::{Order, OrderStatus};
use wxpay_store::{DueOrder, DueRefund, StoreError};

use crate::{
    error::ApiError,
    service::{Payments, RefundCheck},
};

/// The lease every replica competes for; its holder runs the passes.
const LEASE: &str = "reconciler";
/// WeChat refuses closeorder within this long of an order's creation.
pub const CLOSE_MIN_AGE: ChronoDuration = ChronoDuration::minutes(5);
/// How long a claimed order is left alone if the replica that claimed it dies
/// before it says when to look next.
const CLAIM: ChronoDuration = ChronoDuration::minutes(2);
/// The pauses between two questions about one order.
const SCHEDULE: [i64; 5] = [60, 120, 300, 600, 1800];

/// How the reconciler runs (`RECONCILE_*` variables).
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// How often a pass runs (`RECONCILE_INTERVAL_SECONDS`, 30).
    pub interval: Duration,
    /// How long an order waits for its notification before WeChat is asked
    /// (`RECONCILE_AFTER_SECONDS`, 60).
    pub after: Duration,
    /// WeChat calls per second at most (`RECONCILE_MAX_QPS`, 20).
    pub max_qps: u32,
    /// Orders claimed per pass.
    pub batch: i64,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            after: Duration::from_secs(60),
            max_qps: 20,
            batch: 500,
        }
    }
}

/// What one pass did, for tests and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// False when another replica holds the lease.
    pub ran: bool,
    pub queried: u32,
    pub repaired: u32,
    pub closed: u32,
    /// Refunds asked about with refundquery.
    pub refunds_checked: u32,
    /// Refunds that reached a new status (or were sent again).
    pub refunds_settled: u32,
    pub errors: u32,
}

pub struct Reconciler {
    payments: Arc<Payments>,
    config: ReconcilerConfig,
    /// This replica's name in the lease.
    holder: String,
}

impl Reconciler {
    pub fn new(payments: Arc<Payments>, config: ReconcilerConfig) -> Self {
        Self {
            payments,
            config,
            holder: format!("payment-service-{}", ulid::Ulid::new()),
        }
    }

    /// Runs a pass every interval until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        pass = self.run_once() => match pass {
                            Ok(p) if p.queried + p.closed + p.refunds_checked + p.errors > 0 => tracing::info!(
                                queried = p.queried, repaired = p.repaired, closed = p.closed,
                                refunds_checked = p.refunds_checked,
                                refunds_settled = p.refunds_settled,
                                errors = p.errors, "reconciler pass"
                            ),
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; next interval retries"),
                        },
                    }
                }
            }
        }
    }

    /// One pass: take the lease, claim what is due, settle each at WeChat's pace.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let store = self.payments.store();
        let lease = ChronoDuration::from_std(self.config.interval * 2)
            .unwrap_or(ChronoDuration::minutes(1));
        if !store.try_lease(LEASE, &self.holder, lease).await? {
            return Ok(Pass::default());
        }
        let now = Utc::now();
        let after = ChronoDuration::from_std(self.config.after).unwrap_or(ChronoDuration::zero());
        let due = store
            .claim_due(now, now - after, self.config.batch, now + CLAIM)
            .await?;
        let mut pass = Pass {
            ran: true,
            ..Pass::default()
        };
        let spacing = Duration::from_secs_f64(1.0 / f64::from(self.config.max_qps.max(1)));
        let mut pace = tokio::time::interval(spacing);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for order in due {
            pace.tick().await;
            self.settle(order, &mut pass).await;
        }
        let refunds = store
            .claim_due_refunds(now, now - after, self.config.batch, now + CLAIM)
            .await?;
        for refund in refunds {
            pace.tick().await;
            self.check_refund(refund, &mut pass).await;
        }
        Ok(pass)
    }

    async fn check_refund(&self, due: DueRefund, pass: &mut Pass) {
        pass.refunds_checked += 1;
        metrics::counter!("wxpay_reconciler_refunds_checked_total").increment(1);
        let no = &due.refund.out_refund_no;
        match self.payments.check_refund(&due).await {
            Ok(RefundCheck::Settled(status)) => {
                pass.refunds_settled += 1;
                tracing::info!(out_refund_no = %no, %status, "reconciler settled a refund");
                // A settled refund is no longer claimed (it is not PROCESSING).
                return;
            }
            Ok(RefundCheck::Resent) => {
                pass.refunds_settled += 1;
                tracing::info!(out_refund_no = %no, "reconciler re-sent a refund WeChat never saw");
            }
            Ok(RefundCheck::StillProcessing) => {}
            Err(e) => {
                pass.errors += 1;
                metrics::counter!("wxpay_reconciler_errors_total").increment(1);
                tracing::warn!(out_refund_no = %no, error = %e, "reconciler could not settle a refund; it will ask again");
            }
        }
        let next = Utc::now() + schedule(due.attempts);
        if let Err(e) = self.payments.store().schedule_refund_check(no, next).await {
            tracing::warn!(out_refund_no = %no, error = %e, "could not schedule the refund's next check");
        }
    }

    async fn settle(&self, due: DueOrder, pass: &mut Pass) {
        let DueOrder { order, attempts } = due;
        let now = Utc::now();
        let expires_at = expiry(&order);
        let next = if expires_at <= now {
            let closable_at = order.created_at + CLOSE_MIN_AGE;
            if closable_at > now {
                closable_at
            } else {
                self.expire(&order, pass).await;
                now + schedule(attempts)
            }
        } else {
            self.query(&order, pass).await;
            // Never past the expiry: that is when the order is closed.
            (now + schedule(attempts)).min(expires_at)
        };
        if let Err(e) = self
            .payments
            .store()
            .schedule_check(&order.out_trade_no, next)
            .await
        {
            // The claim runs out on its own and the order is looked at again then.
            tracing::warn!(out_trade_no = %order.out_trade_no, error = %e, "could not schedule the next check");
        }
    }

    async fn query(&self, order: &Order, pass: &mut Pass) {
        pass.queried += 1;
        metrics::counter!("wxpay_reconciler_queried_total").increment(1);
        match self.payments.query_order(&order.out_trade_no).await {
            Ok(now) if now.status != order.status => {
                pass.repaired += 1;
                metrics::counter!("wxpay_reconciler_repaired_total").increment(1);
                tracing::info!(
                    out_trade_no = %order.out_trade_no, from = %order.status, to = %now.status,
                    "reconciler repaired an order WeChat knows better"
                );
            }
            Ok(_) => {}
            Err(e) => self.failed(order, "orderquery", &e, pass),
        }
    }

    async fn expire(&self, order: &Order, pass: &mut Pass) {
        match self.payments.expire_order(&order.out_trade_no).await {
            Ok(now) if now.status == OrderStatus::Closed => {
                pass.closed += 1;
                metrics::counter!("wxpay_reconciler_closed_total").increment(1);
                tracing::info!(out_trade_no = %order.out_trade_no, "reconciler closed an expired order");
            }
            Ok(now) if now.status != order.status => {
                // WeChat had it paid: recorded instead of closed.
                pass.repaired += 1;
                metrics::counter!("wxpay_reconciler_repaired_total").increment(1);
                tracing::info!(
                    out_trade_no = %order.out_trade_no, from = %order.status, to = %now.status,
                    "reconciler found an expired order paid"
                );
            }
            Ok(_) => {}
            Err(e) => self.failed(order, "closeorder", &e, pass),
        }
    }

    fn failed(&self, order: &Order, call: &str, e: &ApiError, pass: &mut Pass) {
        pass.errors += 1;
        metrics::counter!("wxpay_reconciler_errors_total").increment(1);
        tracing::warn!(out_trade_no = %order.out_trade_no, call, error = %e, "reconciler could not settle an order; it will ask again");
    }
}

/// When WeChat stops accepting payment for `order`: its own expiry, or for an
/// order stored without one, WeChat's default of two hours.
pub fn expiry(order: &Order) -> DateTime<Utc> {
    order
        .expires_at
        .unwrap_or(order.created_at + ChronoDuration::hours(2))
}

/// The pause after the `attempts`-th question (counted from 1).
fn schedule(attempts: u32) -> ChronoDuration {
    let i = (attempts.max(1) - 1) as usize;
    ChronoDuration::seconds(SCHEDULE[i.min(SCHEDULE.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_back_off_then_settle_at_half_an_hour() {
        let got: Vec<i64> = (1..=7).map(|a| schedule(a).num_seconds()).collect();
        assert_eq!(got, vec![60, 120, 300, 600, 1800, 1800, 1800]);
    }
}
