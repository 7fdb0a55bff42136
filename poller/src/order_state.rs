//! What the hub knows about one watched order: its newest events and the epoch
//! that tells watchers to re-read their snapshot. Shared by the hub (which writes
//! it) and the fallback (which reads it), so neither imports the other.

use wxpay_core::domain::OrderEvent;

/// How many of an order's newest events the hub keeps. An order changes status a
/// handful of times in its life (NOTPAY, USERPAYING, SUCCESS, REFUND), so a reader
/// that is merely slow still sees every change; one that is stuck only ever
/// costs this many events, whatever is published meanwhile.
pub const RETAINED_EVENTS: usize = 8;

/// What the hub knows about one watched order.
#[derive(Debug, Clone, Default)]
pub struct OrderState {
    /// The newest events, ascending by version, at most [`RETAINED_EVENTS`].
    events: Vec<OrderEvent>,
    /// Bumped when the feed may have missed events (it reconnected): every watcher
    /// must then re-read its snapshot.
    epoch: u64,
    /// The epoch whose snapshot re-read one watcher has taken on for all of the
    /// order's watchers: one database read per order after a reconnect, not one
    /// per watcher.
    resync_claimed: u64,
}

impl OrderState {
    /// The oldest retained event newer than `version`: what a watcher that has sent
    /// `version` should send next.
    pub fn next_after(&self, version: i64) -> Option<&OrderEvent> {
        self.events.iter().find(|e| e.version > version)
    }

    pub fn latest(&self) -> Option<&OrderEvent> {
        self.events.last()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn bump_epoch(&mut self) {
        self.epoch += 1;
    }

    /// Takes the re-read of `epoch` if nobody has; false when another watcher has.
    pub(crate) fn claim_resync(&mut self, epoch: u64) -> bool {
        if self.resync_claimed >= epoch {
            return false;
        }
        self.resync_claimed = epoch;
        true
    }

    /// Gives a claimed re-read back (it failed), so the next watcher takes it.
    pub(crate) fn release_resync(&mut self, epoch: u64) {
        if self.resync_claimed == epoch {
            self.resync_claimed = epoch.saturating_sub(1);
        }
    }

    pub fn retained(&self) -> usize {
        self.events.len()
    }

    /// Keeps `event` if it is newer than everything known. Duplicates (at-least-once
    /// delivery) and late arrivals carry a version already superseded and are dropped:
    /// statuses are states, the newest one wins.
    pub(crate) fn offer(&mut self, event: OrderEvent) -> bool {
        if self
            .events
            .last()
            .is_some_and(|last| last.version >= event.version)
        {
            return false;
        }
        self.events.push(event);
        if self.events.len() > RETAINED_EVENTS {
            self.events.remove(0);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use wxpay_core::domain::{EventSource, Fee, OutTradeNo};

    use super::*;

    fn event(version: i64, status: &str) -> OrderEvent {
        OrderEvent {
            id: version,
            out_trade_no: OutTradeNo::parse("o1").expect("valid order number"),
            status: status.parse().expect("known status"),
            version,
            transaction_id: None,
            total_fee: Fee::new(1).expect("valid fee"),
            occurred_at: 0,
            source: EventSource::Notify,
            refunded_fee: 0,
        }
    }

    #[test]
    fn duplicates_and_stale_events_are_dropped() {
        let mut s = OrderState::default();
        assert!(s.offer(event(1, "NOTPAY")));
        assert!(s.offer(event(3, "SUCCESS")));
        assert!(!s.offer(event(3, "SUCCESS")), "duplicate");
        assert!(!s.offer(event(2, "USERPAYING")), "late arrival");
        assert_eq!(s.next_after(1).map(|e| e.version), Some(3));
        assert_eq!(s.next_after(3), None);
    }

    #[test]
    fn state_keeps_only_the_newest_events() {
        let mut s = OrderState::default();
        for v in 1..=100 {
            s.offer(event(v, "USERPAYING"));
        }
        assert_eq!(s.retained(), RETAINED_EVENTS);
        assert_eq!(
            s.next_after(0).map(|e| e.version),
            Some(100 - RETAINED_EVENTS as i64 + 1)
        );
        assert_eq!(s.latest().map(|e| e.version), Some(100));
    }
}
