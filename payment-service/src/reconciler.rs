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
//!
//! Leases and claims are short (`lease`, 10 s) so that a replica killed or cut
//! off from Postgres mid-pass holds nothing for long: while a pass runs, it
//! renews its lease every third of `lease`, and it stops at once (mid-call) when
//! a renewal fails or the lease went to another holder, so it never acts past
//! its lease. It claims in chunks it can settle well within a lease at
//! `max_qps`, so what it claimed and did not reach is due again within `lease`;
//! a pass that ends gives its lease back, and the next pass may run anywhere.
//! A question that told nothing (WeChat failed or timed out) and a refund sent
//! again are asked about again within seconds (2, 4, 8, 16, then every 30),
//! not on the slow schedule of an order or refund WeChat says is still open.

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
/// The pauses between two questions about one order.
const SCHEDULE: [i64; 5] = [60, 120, 300, 600, 1800];
/// The pauses after a question that told nothing, or after a refund was sent
/// again: what WeChat says next decides the money, so it is asked soon.
const SOON: [i64; 5] = [2, 4, 8, 16, 30];
/// The pauses between questions about an order whose last attempt failed
/// (PAYERROR): its payer is usually paying again right now, and if that
/// payment's notification is lost only this question finds it, so it starts
/// soon and backs off to the usual schedule. (The chaos soak found a payment
/// after a failed attempt, its notification dropped, seen 60 s late.)
const AFTER_FAILURE: [i64; 10] = [2, 4, 8, 16, 30, 60, 120, 300, 600, 1800];

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
    /// How long the lease and each claim last unless renewed
    /// (`RECONCILE_LEASE_SECONDS`, 10): a replica that dies mid-pass has its
    /// work taken over this long after its last renewal.
    pub lease: Duration,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            after: Duration::from_secs(60),
            max_qps: 20,
            batch: 500,
            lease: Duration::from_secs(10),
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

    /// One pass: take the lease, claim what is due, settle each at WeChat's
    /// pace while the lease is renewed beside it. A pass that loses its lease
    /// (or cannot renew it) stops where it is and says so as an error.
    pub async fn run_once(&self) -> Result<Pass, StoreError> {
        let store = self.payments.store();
        if !store.try_lease(LEASE, &self.holder, self.lease()).await? {
            return Ok(Pass::default());
        }
        let mut pass = Pass {
            ran: true,
            ..Pass::default()
        };
        let outcome = {
            let work = self.settle_due(&mut pass);
            tokio::pin!(work);
            tokio::select! {
                done = &mut work => done,
                lost = self.keep_lease() => Err(lost),
            }
        };
        match outcome {
            Ok(()) => {
                // Given back (a lease that ends now): the next pass may run on
                // any replica without waiting for this one's to run out.
                if let Err(e) = store
                    .try_lease(LEASE, &self.holder, ChronoDuration::zero())
                    .await
                {
                    tracing::debug!(error = %e, "could not give the reconciler lease back; it runs out");
                }
                Ok(pass)
            }
            Err(e) => Err(e),
        }
    }

    fn lease(&self) -> ChronoDuration {
        ChronoDuration::from_std(self.config.lease).unwrap_or(ChronoDuration::seconds(10))
    }

    /// Renews the lease every third of its length for as long as it is
    /// polled; returns only when the lease is lost or cannot be renewed in
    /// time, which ends the pass before the lease could run out.
    async fn keep_lease(&self) -> StoreError {
        let every = (self.config.lease / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            let renewed = tokio::time::timeout(
                every,
                self.payments
                    .store()
                    .try_lease(LEASE, &self.holder, self.lease()),
            )
            .await;
            let why = match renewed {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => "another replica holds the reconciler lease".to_owned(),
                Ok(Err(e)) => format!("the reconciler lease could not be renewed: {e}"),
                Err(_) => "renewing the reconciler lease timed out".to_owned(),
            };
            metrics::counter!("wxpay_reconciler_lease_lost_total").increment(1);
            return StoreError::Unavailable(format!("{why}; the pass stopped"));
        }
    }

    /// Claims what is due chunk by chunk and settles it, orders first.
    async fn settle_due(&self, pass: &mut Pass) -> Result<(), StoreError> {
        let store = self.payments.store();
        let after = ChronoDuration::from_std(self.config.after).unwrap_or(ChronoDuration::zero());
        let spacing = Duration::from_secs_f64(1.0 / f64::from(self.config.max_qps.max(1)));
        let mut pace = tokio::time::interval(spacing);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let chunk = self.chunk();
        // A chunk slower than its claims (WeChat slow to answer) may claim
        // again what this pass already asked about: asked once per pass.
        let mut seen = std::collections::HashSet::new();
        let mut claimed = 0;
        while claimed < self.config.batch {
            let now = Utc::now();
            let due = store
                .claim_due(now, now - after, chunk, now + self.lease())
                .await?;
            if due.is_empty() {
                break;
            }
            claimed += due.len() as i64;
            for order in due {
                if seen.insert(order.order.out_trade_no.clone()) {
                    pace.tick().await;
                    self.settle(order, pass).await;
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        let mut claimed = 0;
        while claimed < self.config.batch {
            let now = Utc::now();
            let refunds = store
                .claim_due_refunds(now, now - after, chunk, now + self.lease())
                .await?;
            if refunds.is_empty() {
                break;
            }
            claimed += refunds.len() as i64;
            for refund in refunds {
                if seen.insert(refund.refund.out_refund_no.clone()) {
                    pace.tick().await;
                    self.check_refund(refund, pass).await;
                }
            }
        }
        Ok(())
    }

    /// How many items one claim takes: what `max_qps` settles in half a
    /// lease, so a chunk is done long before its claims run out.
    fn chunk(&self) -> i64 {
        let per_lease = self.config.lease.as_secs_f64() * f64::from(self.config.max_qps.max(1));
        ((per_lease / 2.0) as i64).clamp(1, self.config.batch.max(1))
    }

    async fn check_refund(&self, due: DueRefund, pass: &mut Pass) {
        pass.refunds_checked += 1;
        metrics::counter!("wxpay_reconciler_refunds_checked_total").increment(1);
        let no = &due.refund.out_refund_no;
        let pause = match self.payments.check_refund(&due).await {
            Ok(RefundCheck::Settled(status)) => {
                pass.refunds_settled += 1;
                tracing::info!(out_refund_no = %no, %status, "reconciler settled a refund");
                // A settled refund is no longer claimed (it is not PROCESSING).
                return;
            }
            Ok(RefundCheck::Resent) => {
                pass.refunds_settled += 1;
                tracing::info!(out_refund_no = %no, "reconciler re-sent a refund WeChat never saw");
                soon(due.attempts)
            }
            Ok(RefundCheck::StillProcessing) => schedule(due.attempts),
            Err(e) => {
                pass.errors += 1;
                metrics::counter!("wxpay_reconciler_errors_total").increment(1);
                tracing::warn!(out_refund_no = %no, error = %e, "reconciler could not settle a refund; it will ask again");
                soon(due.attempts)
            }
        };
        let next = Utc::now() + pause;
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
            } else if self.expire(&order, pass).await {
                now + schedule(attempts)
            } else {
                now + soon(attempts)
            }
        } else {
            let pause = match self.query(&order, pass).await {
                None => soon(attempts),
                Some(OrderStatus::PayError) => after_failure(attempts),
                Some(_) => schedule(attempts),
            };
            // Never past the expiry: that is when the order is closed.
            (now + pause).min(expires_at)
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

    /// Asks orderquery and applies the answer: the order's status after it,
    /// `None` when WeChat told nothing.
    async fn query(&self, order: &Order, pass: &mut Pass) -> Option<OrderStatus> {
        pass.queried += 1;
        metrics::counter!("wxpay_reconciler_queried_total").increment(1);
        match self.payments.query_order(&order.out_trade_no).await {
            Ok(now) => {
                if now.status != order.status {
                    pass.repaired += 1;
                    metrics::counter!("wxpay_reconciler_repaired_total").increment(1);
                    tracing::info!(
                        out_trade_no = %order.out_trade_no, from = %order.status, to = %now.status,
                        "reconciler repaired an order WeChat knows better"
                    );
                }
                Some(now.status)
            }
            Err(e) => {
                self.failed(order, "orderquery", &e, pass);
                None
            }
        }
    }

    /// Closes an expired order at WeChat, then here; false when WeChat told nothing.
    async fn expire(&self, order: &Order, pass: &mut Pass) -> bool {
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
            Err(e) => {
                self.failed(order, "closeorder", &e, pass);
                return false;
            }
        }
        true
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
    step(&SCHEDULE, attempts)
}

/// The pause after the `attempts`-th question when it told nothing or a
/// refund was sent again.
fn soon(attempts: u32) -> ChronoDuration {
    step(&SOON, attempts)
}

/// The pause after the `attempts`-th question about an order whose payment
/// failed.
fn after_failure(attempts: u32) -> ChronoDuration {
    step(&AFTER_FAILURE, attempts)
}

fn step(pauses: &[i64], attempts: u32) -> ChronoDuration {
    let i = (attempts.max(1) - 1) as usize;
    ChronoDuration::seconds(pauses[i.min(pauses.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_back_off_then_settle_at_half_an_hour() {
        let got: Vec<i64> = (1..=7).map(|a| schedule(a).num_seconds()).collect();
        assert_eq!(got, vec![60, 120, 300, 600, 1800, 1800, 1800]);
    }

    #[test]
    fn a_failed_payment_is_asked_about_soon_then_as_usual() {
        let got: Vec<i64> = (1..=11).map(|a| after_failure(a).num_seconds()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 30, 60, 120, 300, 600, 1800, 1800]);
    }

    #[test]
    fn questions_that_told_nothing_are_asked_again_within_seconds() {
        let got: Vec<i64> = (1..=7).map(|a| soon(a).num_seconds()).collect();
        assert_eq!(got, vec![2, 4, 8, 16, 30, 30, 30]);
    }
}
