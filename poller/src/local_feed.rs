//! The in-process event bus of the embedded single-process mode (`cargo run`
//! with no `REDIS_URL`): one value that is both payment-service's and the
//! gateway's [`EventPublisher`] and, through [`LocalBus::feed`], the hub's
//! [`EventFeed`]. A publish hands the event straight to the hub's [`FeedSink`].
//!
//! It owns the set of subscribed channels, as Redis would, so publishing an
//! event of an unwatched order costs a set lookup and never touches the hub.
//! It holds nothing else: no queue, no history. An event published while nobody
//! watches is dropped, exactly as a Redis `PUBLISH` with no subscriber; a watcher
//! that arrives later reads it in its snapshot, because events are published
//! only after their commit.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt};
use payment_service::{
    domain::OrderEvent,
    events::{EventPublisher, PublishError},
};

use crate::hub::{EventFeed, FeedSink};

#[derive(Default)]
struct State {
    /// Orders (by out_trade_no) the hub has subscribed.
    channels: HashSet<String>,
    /// The hub this bus delivers to; `None` until [`LocalBus::feed`] is called.
    sink: Option<FeedSink>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing here can be left half-updated by a panic (a set insert or remove),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bus. Cheap to clone; every clone is the same bus.
#[derive(Clone, Default)]
pub struct LocalBus {
    shared: Arc<Shared>,
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// The hub's side of the bus, for `Hub::new(fallback, |sink| bus.feed(sink))`.
    /// A bus feeds one hub (one poller per process): a second call replaces the
    /// first hub and forgets its subscriptions.
    pub fn feed(&self, sink: FeedSink) -> LocalFeed {
        let mut state = self.shared.lock();
        state.channels.clear();
        state.sink = Some(sink);
        LocalFeed {
            shared: self.shared.clone(),
        }
    }

    /// How many orders are subscribed now (diagnostics and tests).
    pub fn subscribed(&self) -> usize {
        self.shared.lock().channels.len()
    }
}

#[async_trait]
impl EventPublisher for LocalBus {
    async fn publish(&self, event: &OrderEvent) -> Result<(), PublishError> {
        // Take what we need and release the bus lock before delivering: the hub
        // calls subscribe/unsubscribe while holding its own table lock, and
        // deliver takes that table lock, so holding both here could deadlock.
        let sink = {
            let state = self.shared.lock();
            if !state.channels.contains(&event.out_trade_no) {
                return Ok(());
            }
            state.sink.clone()
        };
        if let Some(sink) = sink {
            sink.deliver(event.clone());
        }
        Ok(())
    }

    /// Always reachable: it is memory in this process.
    async fn ping(&self) -> Result<(), PublishError> {
        Ok(())
    }
}

/// The [`EventFeed`] the hub holds.
pub struct LocalFeed {
    shared: Arc<Shared>,
}

impl EventFeed for LocalFeed {
    /// Ready at once: delivery is a synchronous call, so every publish that starts
    /// after the channel is in the set reaches the hub.
    fn subscribe(&self, out_trade_no: &str) -> BoxFuture<'static, ()> {
        self.shared.lock().channels.insert(out_trade_no.to_owned());
        futures::future::ready(()).boxed()
    }

    fn unsubscribe(&self, out_trade_no: &str) {
        self.shared.lock().channels.remove(out_trade_no);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use payment_service::domain::{EventSource, OutTradeNo};

    use super::*;
    use crate::hub::Hub;

    fn paid(out_trade_no: &str, version: i64) -> OrderEvent {
        OrderEvent {
            id: version,
            out_trade_no: out_trade_no.into(),
            status: "SUCCESS".into(),
            version,
            transaction_id: Some("4200000000000000000000000001".into()),
            total_fee: 1,
            occurred_at: 0,
            source: EventSource::Notify,
        }
    }

    fn order(s: &str) -> OutTradeNo {
        match OutTradeNo::parse(s) {
            Ok(o) => o,
            Err(e) => panic!("test order number {s}: {e}"),
        }
    }

    fn hub_on(bus: &LocalBus) -> Hub {
        Hub::new(None, |sink| bus.feed(sink))
    }

    #[tokio::test]
    async fn a_published_event_reaches_the_watchers_of_its_order() {
        let bus = LocalBus::new();
        let hub = hub_on(&bus);
        let mut watch = hub.watch(&order("A1")).await;

        bus.publish(&paid("A1", 2)).await.expect("publish");

        let state = tokio::time::timeout(Duration::from_secs(1), watch.state().changed()).await;
        assert!(matches!(state, Ok(Ok(()))), "the watcher was woken");
        let latest = watch.state().borrow().latest().cloned();
        assert_eq!(
            latest.map(|e| (e.version, e.status)),
            Some((2, "SUCCESS".into()))
        );
    }

    #[tokio::test]
    async fn events_of_other_orders_are_not_delivered() {
        let bus = LocalBus::new();
        let hub = hub_on(&bus);
        let mut watch = hub.watch(&order("A1")).await;

        bus.publish(&paid("B2", 2)).await.expect("publish");

        assert!(!watch.state().has_changed().unwrap_or(true));
        assert_eq!(watch.state().borrow().retained(), 0);
    }

    #[tokio::test]
    async fn the_first_watcher_subscribes_and_the_last_one_unsubscribes() {
        let bus = LocalBus::new();
        let hub = hub_on(&bus);

        let first = hub.watch(&order("A1")).await;
        let second = hub.watch(&order("A1")).await;
        let other = hub.watch(&order("B2")).await;
        assert_eq!(
            bus.subscribed(),
            2,
            "one channel per order, not per watcher"
        );

        drop(first);
        assert_eq!(bus.subscribed(), 2, "A1 still has a watcher");
        drop(second);
        assert_eq!(bus.subscribed(), 1, "A1's last watcher left");
        drop(other);
        assert_eq!(bus.subscribed(), 0);
    }

    #[tokio::test]
    async fn publishing_with_no_hub_or_no_watcher_succeeds_and_keeps_nothing() {
        let bus = LocalBus::new();
        bus.publish(&paid("A1", 2)).await.expect("no hub yet");

        let hub = hub_on(&bus);
        bus.publish(&paid("A1", 3)).await.expect("nobody watching");
        let mut watch = hub.watch(&order("A1")).await;
        assert_eq!(
            watch.state().borrow().retained(),
            0,
            "an unwatched event is not replayed (the snapshot covers it)"
        );
        assert!(bus.ping().await.is_ok());
    }
}
