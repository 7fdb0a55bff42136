//! What the hub knows about one watched order: its newest events and the epoch
//! that tells watchers to re-read their snapshot ([`OrderState`]), and the
//! [`OrderCell`] that holds it with the wake-up its watchers wait on. Shared by
//! the hub (which writes it), the watchers and the fallback (which read it), so
//! none of them imports another.
//!
//! A cell is what every idle stream of an order costs beyond its own watcher, so
//! it is kept small: one mutex, one `Notify`, the events in a vector sized to what
//! it holds (a pending order holds one, its snapshot).

use std::sync::{Mutex, MutexGuard};

use tokio::sync::{futures::Notified, Notify};
use wxpay_core::domain::{OrderEvent, OutTradeNo};

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
    /// Counts the changes watchers must look at (a kept event, a new epoch): a
    /// watcher compares it with the count it last saw.
    changes: u64,
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

    /// How many changes watchers were woken for so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub(crate) fn bump_epoch(&mut self) -> bool {
        self.epoch += 1;
        true
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
        // Full: the oldest goes first, so the vector never grows past what it keeps.
        // Otherwise exactly one more slot, not `Vec`'s doubling: a pending order
        // holds one event for as long as it is watched, and a million add up.
        if self.events.len() == RETAINED_EVENTS {
            self.events.remove(0);
        } else if self.events.len() == self.events.capacity() {
            self.events.reserve_exact(1);
        }
        self.events.push(event);
        true
    }
}

/// One watched order's shared state and the wake-up of its watchers. The hub's
/// table holds one per watched order; each watcher holds it too, and the
/// fallback's queue a weak reference (it never keeps an unwatched order alive).
pub struct OrderCell {
    out_trade_no: OutTradeNo,
    state: Mutex<OrderState>,
    /// Woken (`notify_waiters`) after every change; a waiter that registered
    /// before reading the state cannot miss one.
    changed: Notify,
}

impl OrderCell {
    pub(crate) fn new(out_trade_no: OutTradeNo) -> Self {
        Self {
            out_trade_no,
            state: Mutex::new(OrderState::default()),
            changed: Notify::new(),
        }
    }

    pub fn out_trade_no(&self) -> &OutTradeNo {
        &self.out_trade_no
    }

    /// The state, locked. Held for a few field reads or one event's copy.
    pub fn lock(&self) -> MutexGuard<'_, OrderState> {
        // A panic while holding the lock leaves at worst one event unapplied; the
        // next event or re-read repairs it, so keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change`; when it says watchers must look (true), counts the
    /// change and wakes every waiting watcher, after the lock is released.
    pub(crate) fn update(&self, change: impl FnOnce(&mut OrderState) -> bool) -> bool {
        let changed = {
            let mut state = self.lock();
            let changed = change(&mut state);
            if changed {
                state.changes += 1;
            }
            changed
        };
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// A wake-up for the next change. Create it *before* reading the state:
    /// `notify_waiters` reaches it from its creation on, so a change between the
    /// read and the wait still wakes it.
    pub fn notified(&self) -> Notified<'_> {
        self.changed.notified()
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
    fn a_pending_order_holds_room_for_exactly_its_events() {
        let mut s = OrderState::default();
        s.offer(event(1, "NOTPAY"));
        assert_eq!(s.events.capacity(), 1, "not Vec's default of four");
        s.offer(event(2, "USERPAYING"));
        assert_eq!(s.events.capacity(), 2);
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
