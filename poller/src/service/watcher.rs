//! One `WatchOrder` stream's progress, the [`Watcher`] state machine the
//! transport polls: snapshot first, then every newer version from the hub, a
//! snapshot re-read after the feed reconnects, and the end at a terminal status
//! (with `include_refunds`, once nothing more can be refunded), the deadline or
//! shutdown. It never registers with the hub or reads the request:
//! `WatchService::open` hands it a ready watch whose cell holds the snapshot.

use std::time::Duration;

use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::{OrderEvent, OrderStatus};
use wxpay_proto::v1::OrderStatusEvent;

use wxpay_core::convert;

use crate::snapshots::Snapshots;
use crate::{hub::Watch, metrics as m};

/// Where a stream ends: its deadline, and whether it goes on past SUCCESS.
pub(super) struct Ends {
    pub deadline: Instant,
    pub include_refunds: bool,
}

/// One stream's progress. Every idle stream holds one, so it is kept to a few
/// words: the order's number and state live in the hub's cell, not here.
pub(super) struct Watcher {
    snapshots: Snapshots,
    watch: Watch,
    /// The version of the last message sent; 0 until the first (the snapshot).
    sent: i64,
    /// The hub epoch this watcher last synced with.
    epoch: u64,
    /// A snapshot re-read is owed (the feed reconnected), retried until it works.
    resync_at: Option<Instant>,
    deadline: Instant,
    /// `include_refunds`: the stream goes on past SUCCESS with each refund change.
    include_refunds: bool,
    started: bool,
    done: bool,
    shutdown: CancellationToken,
    _active: ActiveStream,
    /// The stream's place under `POLLER_MAX_STREAMS`, given back when it ends.
    _slot: OwnedSemaphorePermit,
}

/// Keeps the active-streams gauge right however the stream ends.
struct ActiveStream;

impl ActiveStream {
    fn new() -> Self {
        metrics::gauge!(m::ACTIVE_STREAMS).increment(1.0);
        Self
    }
}

impl Drop for ActiveStream {
    fn drop(&mut self) {
        metrics::gauge!(m::ACTIVE_STREAMS).decrement(1.0);
    }
}

impl Watcher {
    /// `watch`'s cell already holds the snapshot (or something newer), which the
    /// first message sends.
    pub(super) fn new(
        snapshots: Snapshots,
        mut watch: Watch,
        ends: Ends,
        shutdown: CancellationToken,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        let Ends {
            deadline,
            include_refunds,
        } = ends;
        // The snapshot was read after this epoch began, so it already covers it.
        let epoch = watch.read(|s| s.epoch());
        Self {
            snapshots,
            watch,
            sent: 0,
            epoch,
            resync_at: None,
            deadline,
            include_refunds,
            started: false,
            done: false,
            shutdown,
            _active: ActiveStream::new(),
            _slot: slot,
        }
    }

    /// The next message, `None` at the end of the stream.
    pub(super) async fn next(&mut self) -> Option<Result<OrderStatusEvent, tonic::Status>> {
        if self.done {
            return None;
        }
        if !self.started {
            self.started = true;
            // The newest known: the snapshot just offered, or a change that beat it.
            if let Some(first) = self.watch.read(|s| s.latest().cloned()) {
                return Some(Ok(self.emit(&first)));
            }
        }
        let cell = self.watch.cell().clone();
        loop {
            // Registered before the read, so a change in between still wakes it.
            let wake = cell.notified();
            let newer = {
                let (epoch, newer) = self
                    .watch
                    .read(|s| (s.epoch(), s.next_after(self.sent).cloned()));
                if epoch != self.epoch {
                    self.epoch = epoch;
                    // Spread over RESYNC_SPREAD: after a reconnect every order
                    // re-reads at once otherwise, against a small pool.
                    self.resync_at = Some(Instant::now() + jitter());
                }
                newer
            };
            if let Some(event) = newer {
                return Some(Ok(self.emit(&event)));
            }
            if self.resync_at.is_some_and(|at| at <= Instant::now()) {
                self.resync().await;
                continue;
            }
            // One timer for both the re-read and the deadline: each costs a
            // hundred bytes in every idle stream.
            let wake_at = self
                .resync_at
                .map_or(self.deadline, |at| at.min(self.deadline));
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep_until(wake_at) => {
                    if Instant::now() >= self.deadline {
                        // Deadline: a clean end of stream, without a terminal message.
                        self.done = true;
                        return None;
                    }
                }
                _ = self.shutdown.cancelled() => {
                    self.done = true;
                    return Some(Err(tonic::Status::unavailable("the poller is shutting down; watch again")));
                }
            }
        }
    }

    /// Re-reads the snapshot after the feed reconnected, once per order: the
    /// watcher that claims the epoch reads and offers it to all (the others are
    /// woken by that offer); a failed read is given back and tried again in a second.
    async fn resync(&mut self) {
        if !self.watch.claim_resync(self.epoch) {
            self.resync_at = None;
            return;
        }
        metrics::counter!(m::SNAPSHOT_REREADS).increment(1);
        let out_trade_no = self.watch.out_trade_no();
        match self.snapshots.order(out_trade_no).await {
            Ok(Some(order)) => {
                self.resync_at = None;
                // Through the hub, so the order's other watchers and its fallback see it too.
                self.watch.hub().offer(OrderEvent::snapshot(&order));
            }
            Ok(None) => self.resync_at = None,
            Err(e) => {
                tracing::warn!(%out_trade_no, error = %e, "snapshot re-read failed; retrying");
                self.watch.release_resync(self.epoch);
                self.resync_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// The message for `event`. Its status is typed: an event with a status we do
    /// not know was already refused where it was decoded (the feed).
    fn emit(&mut self, event: &OrderEvent) -> OrderStatusEvent {
        self.sent = self.sent.max(event.version);
        let terminal = if self.include_refunds {
            ends_refund_watch(event)
        } else {
            event.status.is_terminal()
        };
        self.done = terminal;
        metrics::counter!(m::EVENTS_DELIVERED).increment(1);
        convert::event_to_pb(event, terminal)
    }
}

/// How widely the snapshot re-reads after a reconnect are spread.
const RESYNC_SPREAD: Duration = Duration::from_millis(500);

/// A random pause in `[0, RESYNC_SPREAD)`.
fn jitter() -> Duration {
    use rand::Rng;
    RESYNC_SPREAD.mul_f64(rand::rng().random::<f64>())
}

/// Where a stream with `include_refunds` ends: a paid order only once all of it
/// has been given back (no refund can follow; every other refund of it is then
/// closed), any other order where a payment stream would.
fn ends_refund_watch(event: &OrderEvent) -> bool {
    match event.status {
        OrderStatus::Success | OrderStatus::Refund => event.refunded_fee >= event.total_fee.fen(),
        other => other.is_terminal(),
    }
}

#[cfg(test)]
mod tests {
    use wxpay_core::domain::{EventSource, Fee, OutTradeNo};

    use super::*;

    fn event(status: OrderStatus, refunded_fee: i64) -> OrderEvent {
        OrderEvent {
            id: 1,
            out_trade_no: OutTradeNo::parse("T1").expect("valid"),
            status,
            version: 2,
            transaction_id: None,
            total_fee: Fee::new(100).expect("positive"),
            occurred_at: 0,
            source: EventSource::Refund,
            refunded_fee,
        }
    }

    #[test]
    fn a_refund_watch_goes_on_until_everything_is_given_back() {
        assert!(!ends_refund_watch(&event(OrderStatus::Success, 0)));
        assert!(!ends_refund_watch(&event(OrderStatus::Refund, 40)));
        assert!(ends_refund_watch(&event(OrderStatus::Refund, 100)));
        assert!(ends_refund_watch(&event(OrderStatus::Closed, 0)));
        assert!(!ends_refund_watch(&event(OrderStatus::NotPay, 0)));
    }
}
