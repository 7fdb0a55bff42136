//! The one way the product changes an order's status or applies a refund: apply the transition (one
//! conditional UPDATE with its outbox row, in the store), then hand the committed
//! event to the bus in the background. Payment-service, the gateway and the
//! reconciler all go through [`Ledger::apply`], so "transition, then publish"
//! exists once.
//!
//! The caller's reply never waits for the bus: if the publish fails, the event is
//! safe in the outbox and the relay sends it. A published event's outbox mark is
//! batched with others ([`crate::marks`]). [`Ledger::drain`] lets shutdown wait
//! for publishes and marks still in flight.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::{
    events::publish_direct, marks::PublishedMarks, EventPublisher, RefundOutcome, RefundUpdate,
    Store, StoreError, Transition, TransitionOutcome,
};
use wxpay_core::domain::OrderEvent;

/// Store + bus. Cheap to clone; clones share the in-flight publishes.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn Store>,
    publisher: Arc<dyn EventPublisher>,
    publishes: TaskTracker,
    marks: PublishedMarks,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, publisher: Arc<dyn EventPublisher>) -> Self {
        Self {
            marks: PublishedMarks::new(store.clone()),
            store,
            publisher,
            publishes: TaskTracker::new(),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn publisher(&self) -> &Arc<dyn EventPublisher> {
        &self.publisher
    }

    /// Applies `t` if the state machine allows it; when the order changed, its
    /// event is published after the commit without the caller waiting for it.
    pub async fn apply(&self, t: &Transition) -> Result<TransitionOutcome, StoreError> {
        let outcome = self.store.transition(t).await?;
        if let TransitionOutcome::Applied { event, .. } = &outcome {
            self.publish(event);
        }
        Ok(outcome)
    }

    /// Applies what WeChat says about a refund; when it changed the refund (and
    /// so the order), the order's event is published the same way.
    pub async fn apply_refund(&self, u: &RefundUpdate) -> Result<RefundOutcome, StoreError> {
        let outcome = self.store.update_refund(u).await?;
        if let RefundOutcome::Applied { event, .. } = &outcome {
            self.publish(event);
        }
        Ok(outcome)
    }

    fn publish(&self, event: &OrderEvent) {
        let marks = self.marks.clone();
        let publisher = self.publisher.clone();
        let event = event.clone();
        self.publishes.spawn(async move {
            if publish_direct(publisher.as_ref(), &event).await {
                marks.mark(event.id).await;
            }
        });
    }

    /// Waits for every publish started so far and its mark (shutdown). New
    /// applies after this still publish; the relay's final flush covers
    /// anything left.
    pub async fn drain(&self) {
        self.publishes.close();
        self.publishes.wait().await;
        self.publishes.reopen();
        self.marks.flush().await;
    }
}
