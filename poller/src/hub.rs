//! The hub: one shared, per-order state that every watcher of that order reads,
//! fed by a single [`EventFeed`]: Redis pub/sub ([`crate::redis_feed`]) in the split
//! deployment, `wxpay_store::LocalBus` in the single-process one.
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
};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::{sync::watch, task::AbortHandle};
use wxpay_core::domain::{OrderEvent, OutTradeNo};
use wxpay_store::{EventFeed, EventSink};

use crate::{fallback::Fallback, metrics as m, order_state::OrderState};

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

impl EventSink for FeedSink {
    /// Hands an event to the watchers of its order (if it has any).
    fn deliver(&self, event: OrderEvent) {
        let orders = self.table.lock();
        if let Some(entry) = orders.get(event.out_trade_no.as_str()) {
            entry.state.send_if_modified(|s| s.offer(event));
        }
    }

    /// Tells every watcher to re-read its snapshot: the feed was disconnected and
    /// may have missed events. Call it after resubscribing.
    fn resync(&self) {
        let orders = self.table.lock();
        for entry in orders.values() {
            entry.state.send_modify(OrderState::bump_epoch);
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

    /// Claims the snapshot re-read of `epoch` for the order's watchers: true for
    /// the one watcher that should read, false for the others (its offer wakes them).
    pub fn claim_resync(&self, out_trade_no: &str, epoch: u64) -> bool {
        let orders = self.table.lock();
        let Some(entry) = orders.get(out_trade_no) else {
            return false;
        };
        let mut claimed = false;
        // Not a change watchers need to be woken for: the closure says so.
        entry.state.send_if_modified(|s| {
            claimed = s.claim_resync(epoch);
            false
        });
        claimed
    }

    /// Gives back a claimed re-read that failed, for another watcher to take.
    pub fn release_resync(&self, out_trade_no: &str, epoch: u64) {
        if let Some(entry) = self.table.lock().get(out_trade_no) {
            entry.state.send_if_modified(|s| {
                s.release_resync(epoch);
                false
            });
        }
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
