//! The hub: one shared, per-order state that every watcher of that order reads,
//! fed by a single [`EventFeed`] (Redis pub/sub today, an in-process bus later).
//!
//! It owns the table of watched orders: the first watcher of an order makes the
//! feed subscribe its channel, the last one to leave makes it unsubscribe. Each
//! order's state is a `tokio::sync::watch` holding the few newest events, so a
//! watcher that falls behind reads the latest status instead of a backlog, and
//! nothing grows per watcher. It also runs the per-order fallback query (one
//! task per watched pending order, never per watcher). It does no database I/O.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt, Shared};
use payment_service::domain::{OrderEvent, OutTradeNo};
use tokio::{sync::watch, task::AbortHandle};

use crate::{fallback::Fallback, metrics as m};

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

    pub fn retained(&self) -> usize {
        self.events.len()
    }

    /// Keeps `event` if it is newer than everything known. Duplicates (at-least-once
    /// delivery) and late arrivals carry a version already superseded and are dropped:
    /// statuses are states, the newest one wins.
    fn offer(&mut self, event: OrderEvent) -> bool {
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

/// The source of order events. The hub calls it under its table lock, so neither
/// method may block: `subscribe` only enqueues and returns a future to await
/// outside the lock.
pub trait EventFeed: Send + Sync + 'static {
    /// Starts delivering `out_trade_no`'s events to the [`FeedSink`]. The future
    /// resolves once every event published from then on will be delivered, or once
    /// the feed has promised a [`FeedSink::resync`] after it is (re)subscribed (it is
    /// disconnected). Either way a snapshot read after it cannot miss a change.
    fn subscribe(&self, out_trade_no: &str) -> BoxFuture<'static, ()>;

    /// Stops delivering `out_trade_no`'s events (its last watcher left).
    fn unsubscribe(&self, out_trade_no: &str);
}

struct Entry {
    watchers: usize,
    state: watch::Sender<OrderState>,
    subscribed: Shared<BoxFuture<'static, ()>>,
    fallback: Option<AbortHandle>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = &self.fallback {
            task.abort();
        }
    }
}

#[derive(Default)]
struct Table {
    orders: Mutex<HashMap<String, Entry>>,
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated in a way
        // that matters more than losing every stream, so keep serving.
        self.orders.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The feed's handle on the hub: where events and resync requests go.
#[derive(Clone)]
pub struct FeedSink {
    table: Arc<Table>,
}

impl FeedSink {
    /// Hands an event to the watchers of its order (if it has any).
    pub fn deliver(&self, event: OrderEvent) {
        let orders = self.table.lock();
        if let Some(entry) = orders.get(&event.out_trade_no) {
            entry.state.send_if_modified(|s| s.offer(event));
        }
    }

    /// Tells every watcher to re-read its snapshot: the feed was disconnected and
    /// may have missed events. Call it after resubscribing.
    pub fn resync(&self) {
        let orders = self.table.lock();
        for entry in orders.values() {
            entry.state.send_modify(|s| s.epoch += 1);
        }
        tracing::info!(
            orders = orders.len(),
            "watchers told to re-read their snapshots"
        );
    }
}

/// The per-process hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    table: Arc<Table>,
    feed: Arc<dyn EventFeed>,
    fallback: Option<Fallback>,
}

impl Hub {
    /// Builds the hub and its feed; `make_feed` gets the sink the feed delivers to.
    pub fn new<F: EventFeed>(
        fallback: Option<Fallback>,
        make_feed: impl FnOnce(FeedSink) -> F,
    ) -> Self {
        let table = Arc::new(Table::default());
        let feed = make_feed(FeedSink {
            table: table.clone(),
        });
        Self {
            table,
            feed: Arc::new(feed),
            fallback,
        }
    }

    /// Registers a watcher of `out_trade_no` and returns once its events are
    /// subscribed (see [`EventFeed::subscribe`]): read the snapshot after this.
    pub async fn watch(&self, out_trade_no: &OutTradeNo) -> Watch {
        let key = out_trade_no.as_str().to_owned();
        let (rx, subscribed) = {
            let mut orders = self.table.lock();
            let entry = orders.entry(key.clone()).or_insert_with(|| {
                let (state, _) = watch::channel(OrderState::default());
                let subscribed = self.feed.subscribe(&key).shared();
                let fallback = self.fallback.clone().map(|f| {
                    tokio::spawn(f.run(out_trade_no.clone(), state.subscribe())).abort_handle()
                });
                Entry {
                    watchers: 0,
                    state,
                    subscribed,
                    fallback,
                }
            });
            entry.watchers += 1;
            let rx = entry.state.subscribe();
            let subscribed = entry.subscribed.clone();
            metrics::gauge!(m::WATCHED_ORDERS).set(orders.len() as f64);
            (rx, subscribed)
        };
        // The guard exists before the await, so a caller that gives up still leaves.
        let watch = Watch {
            hub: self.clone(),
            key,
            rx,
        };
        subscribed.await;
        watch
    }

    /// Offers an event read elsewhere (a snapshot) to the order's shared state, so
    /// that its other watchers and its fallback see it too.
    pub fn offer(&self, event: OrderEvent) {
        FeedSink {
            table: self.table.clone(),
        }
        .deliver(event);
    }

    /// How many orders are watched now.
    pub fn watched_orders(&self) -> usize {
        self.table.lock().len()
    }

    /// How many events the hub holds for `out_trade_no` (0 when unwatched). For
    /// diagnostics and tests: it never exceeds [`RETAINED_EVENTS`].
    pub fn retained_events(&self, out_trade_no: &str) -> usize {
        self.table
            .lock()
            .get(out_trade_no)
            .map_or(0, |e| e.state.borrow().retained())
    }

    fn leave(&self, key: &str) {
        let mut orders = self.table.lock();
        let Some(entry) = orders.get_mut(key) else {
            return;
        };
        entry.watchers -= 1;
        if entry.watchers == 0 {
            orders.remove(key);
            // Under the lock, so a new watcher's subscribe is queued after this.
            self.feed.unsubscribe(key);
        }
        metrics::gauge!(m::WATCHED_ORDERS).set(orders.len() as f64);
    }
}

/// One watcher's registration; leaving is dropping it.
pub struct Watch {
    hub: Hub,
    key: String,
    rx: watch::Receiver<OrderState>,
}

impl Watch {
    /// The order's shared state; `changed()` wakes on every new event or resync.
    pub fn state(&mut self) -> &mut watch::Receiver<OrderState> {
        &mut self.rx
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.leave(&self.key);
    }
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use payment_service::domain::EventSource;

    use super::*;

    fn event(version: i64, status: &str) -> OrderEvent {
        OrderEvent {
            id: version,
            out_trade_no: "o1".into(),
            status: status.into(),
            version,
            transaction_id: None,
            total_fee: 1,
            occurred_at: 0,
            source: EventSource::Notify,
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

    #[test]
    fn backoff_doubles_up_to_its_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }
}
