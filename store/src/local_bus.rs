//! The in-process event bus of the embedded single-process mode (`cargo run`
//! with no `REDIS_URL`): one value that is both payment-service's and the
//! gateway's [`EventPublisher`] and, through [`LocalBus::feed`], the poller hub's
//! [`EventFeed`]. A publish hands the event straight to the hub's [`EventSink`].
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
use wxpay_core::domain::OrderEvent;

use crate::{EventFeed, EventPublisher, EventSink, PublishError};

#[derive(Default)]
struct State {
    /// Orders (by out_trade_no) the hub has subscribed.
    channels: HashSet<String>,
    /// The hub this bus delivers to; `None` until [`LocalBus::feed`] is called.
    sink: Option<Arc<dyn EventSink>>,
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
    pub fn feed(&self, sink: impl EventSink) -> LocalFeed {
        let mut state = self.shared.lock();
        state.channels.clear();
        state.sink = Some(Arc::new(sink));
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
            if !state.channels.contains(event.out_trade_no.as_str()) {
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
