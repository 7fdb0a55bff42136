//! The hub: one shared, per-order state that every watcher of that order reads,
//! fed by a single [`EventFeed`]: Redis pub/sub ([`crate::redis_feed`]) in the split
//! deployment, `wxpay_store::LocalBus` in the single-process one.
//!
//! It owns the table of watched orders: the first watcher of an order makes the
//! feed subscribe its channel, the last one to leave makes it unsubscribe. Each
//! order's state is an [`OrderCell`] holding the few newest events, so a watcher
//! that falls behind reads the latest status instead of a backlog, and nothing
//! grows per watcher. Each newly watched order goes to the fallback's queue (one
//! entry per order, never per watcher). It does no database I/O itself: events
//! from an untrusted feed (Redis) go through the [`Confirmer`] first.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use futures::future::{BoxFuture, FutureExt, Shared};
use wxpay_core::domain::{OrderEvent, OutTradeNo};
use wxpay_store::{EventFeed, EventSink};

use crate::{
    confirm::Confirmer,
    fallback::{Fallback, FallbackQueue},
    metrics as m,
    order_state::{OrderCell, OrderState},
};

struct Entry {
    watchers: usize,
    cell: Arc<OrderCell>,
    /// The feed's confirmation that the channel is subscribed, for the watchers
    /// that arrive before it; dropped once it has come (nothing to wait for then).
    subscribed: Option<Shared<BoxFuture<'static, ()>>>,
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

    /// The cell of a watched order.
    fn cell(&self, out_trade_no: &str) -> Option<Arc<OrderCell>> {
        self.lock().get(out_trade_no).map(|e| e.cell.clone())
    }
}

/// The feed's handle on the hub: where events and resync requests go.
#[derive(Clone)]
pub struct FeedSink {
    table: Arc<Table>,
    /// `None`: the feed is trusted (the in-process bus, whose only publishers
    /// are this process's own committed transitions). Otherwise every event is
    /// a claim the database must confirm before a watcher sees it.
    confirm: Option<Arc<Confirmer>>,
}

impl EventSink for FeedSink {
    /// Hands an event to the watchers of its order (if it has any), once the
    /// database confirms it when the feed is not trusted.
    fn deliver(&self, event: OrderEvent) {
        // Outside the table's lock: waking an order's many watchers holds up no other order.
        let Some(cell) = self.table.cell(event.out_trade_no.as_str()) else {
            return;
        };
        match &self.confirm {
            Some(confirmer) => confirmer.check(cell, event),
            None => {
                cell.update(|s| s.offer(event));
            }
        }
    }

    /// Tells every watcher to re-read its snapshot: the feed was disconnected and
    /// may have missed events. Call it after resubscribing.
    fn resync(&self) {
        let orders = self.table.lock();
        for entry in orders.values() {
            entry.cell.update(OrderState::bump_epoch);
        }
        tracing::info!(
            orders = orders.len(),
            "watchers told to re-read their snapshots"
        );
    }
}

struct Inner {
    table: Arc<Table>,
    feed: Box<dyn EventFeed>,
    fallback: Option<FallbackQueue>,
}

/// The per-process hub. Cheap to clone: one pointer, which each watcher holds.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// Builds the hub and its feed; `make_feed` gets the sink the feed delivers
    /// to. With a confirmer, every event the feed delivers is checked against
    /// the database first (see [`crate::confirm`]); without one the feed is
    /// trusted. With a fallback, starts its queue (call it inside the runtime).
    pub fn new<F: EventFeed>(
        fallback: Option<Fallback>,
        confirm: Option<Arc<Confirmer>>,
        make_feed: impl FnOnce(FeedSink) -> F,
    ) -> Self {
        let table = Arc::new(Table::default());
        let feed = make_feed(FeedSink {
            table: table.clone(),
            confirm,
        });
        Self {
            inner: Arc::new(Inner {
                table,
                feed: Box::new(feed),
                fallback: fallback.map(Fallback::start),
            }),
        }
    }

    fn table(&self) -> &Table {
        &self.inner.table
    }

    /// Registers a watcher of `out_trade_no` and returns once its events are
    /// subscribed (see [`EventFeed::subscribe`]): read the snapshot after this.
    pub async fn watch(&self, out_trade_no: &OutTradeNo) -> Watch {
        let (cell, subscribed) = {
            let mut orders = self.table().lock();
            let entry = orders
                .entry(out_trade_no.as_str().to_owned())
                .or_insert_with(|| {
                    let cell = Arc::new(OrderCell::new(out_trade_no.clone()));
                    if let Some(queue) = &self.inner.fallback {
                        queue.add(&cell);
                    }
                    Entry {
                        watchers: 0,
                        subscribed: Some(self.inner.feed.subscribe(out_trade_no.as_str()).shared()),
                        cell,
                    }
                });
            entry.watchers += 1;
            let got = (entry.cell.clone(), entry.subscribed.clone());
            metrics::gauge!(m::WATCHED_ORDERS).set(orders.len() as f64);
            got
        };
        // The guard exists before the await, so a caller that gives up still leaves.
        let seen = cell.lock().changes();
        let watch = Watch {
            hub: self.clone(),
            cell,
            seen,
        };
        if let Some(subscribed) = subscribed {
            subscribed.await;
            // Done: later watchers need not wait, and an idle order should not
            // keep the future. `peek` is only `Some` for the one that completed,
            // so a newer entry of the same order keeps its own.
            if let Some(entry) = self.table().lock().get_mut(out_trade_no.as_str()) {
                if entry
                    .subscribed
                    .as_ref()
                    .is_some_and(|s| s.peek().is_some())
                {
                    entry.subscribed = None;
                }
            }
        }
        watch
    }

    /// Offers an event read from the database (a snapshot) to the order's
    /// shared state, so that its other watchers and its fallback see it too.
    pub fn offer(&self, event: OrderEvent) {
        if let Some(cell) = self.table().cell(event.out_trade_no.as_str()) {
            cell.update(|s| s.offer(event));
        }
    }

    /// How many orders are watched now.
    pub fn watched_orders(&self) -> usize {
        self.table().lock().len()
    }

    /// How many events the hub holds for `out_trade_no` (0 when unwatched). For
    /// diagnostics and tests: it never exceeds [`RETAINED_EVENTS`].
    ///
    /// [`RETAINED_EVENTS`]: crate::order_state::RETAINED_EVENTS
    pub fn retained_events(&self, out_trade_no: &str) -> usize {
        self.table()
            .cell(out_trade_no)
            .map_or(0, |c| c.lock().retained())
    }

    fn leave(&self, key: &str) {
        let mut orders = self.table().lock();
        let Some(entry) = orders.get_mut(key) else {
            return;
        };
        entry.watchers -= 1;
        if entry.watchers == 0 {
            orders.remove(key);
            // Under the lock, so a new watcher's subscribe is queued after this.
            self.inner.feed.unsubscribe(key);
        }
        metrics::gauge!(m::WATCHED_ORDERS).set(orders.len() as f64);
    }
}

/// One watcher's registration; leaving is dropping it. Three words: the hub,
/// the order's cell and the change count this watcher has looked at.
pub struct Watch {
    hub: Hub,
    cell: Arc<OrderCell>,
    seen: u64,
}

impl Watch {
    pub fn out_trade_no(&self) -> &OutTradeNo {
        self.cell.out_trade_no()
    }

    /// The order's shared state and wake-up.
    pub fn cell(&self) -> &Arc<OrderCell> {
        &self.cell
    }

    /// Reads the state and marks its changes as seen.
    pub fn read<R>(&mut self, f: impl FnOnce(&OrderState) -> R) -> R {
        let state = self.cell.lock();
        self.seen = state.changes();
        f(&state)
    }

    /// Whether the state changed since this watcher last read it.
    pub fn has_changed(&self) -> bool {
        self.cell.lock().changes() != self.seen
    }

    /// Waits until the state changes after this watcher's last read (at once if
    /// it already has).
    pub async fn changed(&self) {
        loop {
            let wake = self.cell.notified();
            if self.has_changed() {
                return;
            }
            wake.await;
        }
    }

    /// Claims the snapshot re-read of `epoch` for the order's watchers: true for
    /// the one watcher that should read, false for the others (its offer wakes them).
    pub fn claim_resync(&self, epoch: u64) -> bool {
        let mut state = self.cell.lock();
        state.claim_resync(epoch)
    }

    /// Gives back a claimed re-read that failed, for another watcher to take.
    pub fn release_resync(&self, epoch: u64) {
        self.cell.lock().release_resync(epoch);
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hub.leave(self.cell.out_trade_no().as_str());
    }
}
