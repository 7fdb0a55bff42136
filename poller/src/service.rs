//! `OrderStatusService.WatchOrder`: the stream contract (see README.md).
//!
//! The handler validates, registers with the hub (subscribe first), reads the
//! snapshot, and returns a stream. The stream is a state machine polled by the
//! transport itself, not a spawned task feeding a channel: when the client reads
//! slowly the transport simply stops polling it, nothing queues per stream, and
//! when it next polls it sends whatever is newest. Dropping the stream (client
//! gone) drops the hub registration.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::{OrderEvent, OutTradeNo};
use wxpay_proto::v1::{
    order_status_service_server::OrderStatusService, OrderStatusEvent, WatchOrderRequest,
};
use wxpay_store::Store;

use wxpay_core::convert;

use crate::{error::WatchError, hub::Hub, hub::Watch, metrics as m};

/// Stream deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Used when the request says 0.
    pub default: Duration,
    /// Longer requests are capped here.
    pub max: Duration,
}

impl Deadlines {
    pub fn for_request(&self, timeout_seconds: u32) -> Duration {
        if timeout_seconds == 0 {
            self.default.min(self.max)
        } else {
            Duration::from_secs(u64::from(timeout_seconds)).min(self.max)
        }
    }
}

#[derive(Clone)]
pub struct WatchService {
    store: Arc<dyn Store>,
    hub: Hub,
    deadlines: Deadlines,
    /// Cancelled at shutdown: open streams end with UNAVAILABLE.
    shutdown: CancellationToken,
}

impl WatchService {
    pub fn new(
        store: Arc<dyn Store>,
        hub: Hub,
        deadlines: Deadlines,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            hub,
            deadlines,
            shutdown,
        }
    }

    /// Subscribe, then snapshot: the order of these two is the whole guarantee.
    #[tracing::instrument(skip(self), fields(out_trade_no = %request.out_trade_no))]
    async fn open(&self, request: WatchOrderRequest) -> Result<Watcher, WatchError> {
        let out_trade_no = OutTradeNo::parse(&request.out_trade_no)?;
        let deadline = Instant::now() + self.deadlines.for_request(request.timeout_seconds);
        let watch = self.hub.watch(&out_trade_no).await;
        let order = self
            .store
            .order(&out_trade_no)
            .await?
            .ok_or(WatchError::NotFound)?;
        let snapshot = OrderEvent::snapshot(&order);
        // Shared, so the order's other watchers and its fallback know it too.
        self.hub.offer(snapshot.clone());
        Ok(Watcher::new(
            self.store.clone(),
            out_trade_no,
            watch,
            snapshot,
            deadline,
            self.shutdown.clone(),
        ))
    }
}

/// One stream's progress.
struct Watcher {
    store: Arc<dyn Store>,
    out_trade_no: OutTradeNo,
    watch: Watch,
    /// The snapshot, until it is sent.
    first: Option<OrderEvent>,
    /// The version of the last message sent.
    sent: i64,
    /// The hub epoch this watcher last synced with.
    epoch: u64,
    /// A snapshot re-read is owed (the feed reconnected), retried until it works.
    resync_at: Option<Instant>,
    deadline: Instant,
    shutdown: CancellationToken,
    done: bool,
    _active: ActiveStream,
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
    fn new(
        store: Arc<dyn Store>,
        out_trade_no: OutTradeNo,
        mut watch: Watch,
        snapshot: OrderEvent,
        deadline: Instant,
        shutdown: CancellationToken,
    ) -> Self {
        // The snapshot was read after this epoch began, so it already covers it.
        let epoch = watch.state().borrow_and_update().epoch();
        Self {
            store,
            out_trade_no,
            watch,
            first: Some(snapshot),
            sent: 0,
            epoch,
            resync_at: None,
            deadline,
            shutdown,
            done: false,
            _active: ActiveStream::new(),
        }
    }

    /// The next message, `None` at the end of the stream.
    async fn next(&mut self) -> Option<Result<OrderStatusEvent, tonic::Status>> {
        if self.done {
            return None;
        }
        if let Some(snapshot) = self.first.take() {
            return Some(Ok(self.emit(&snapshot)));
        }
        loop {
            let newer = {
                let state = self.watch.state().borrow_and_update();
                if state.epoch() != self.epoch {
                    self.epoch = state.epoch();
                    self.resync_at = Some(Instant::now());
                }
                state.next_after(self.sent).cloned()
            };
            if let Some(event) = newer {
                return Some(Ok(self.emit(&event)));
            }
            if self.resync_at.is_some_and(|at| at <= Instant::now()) {
                self.resync().await;
                continue;
            }
            let resync_at = self.resync_at.unwrap_or(self.deadline);
            tokio::select! {
                changed = self.watch.state().changed() => {
                    if changed.is_err() {
                        // The hub dropped the order: only happens if the process is
                        // going down; let the client reconnect elsewhere.
                        self.done = true;
                        return Some(Err(tonic::Status::unavailable("the poller is shutting down")));
                    }
                }
                _ = tokio::time::sleep_until(resync_at), if self.resync_at.is_some() => {}
                _ = tokio::time::sleep_until(self.deadline) => {
                    // Deadline: a clean end of stream, without a terminal message.
                    self.done = true;
                    return None;
                }
                _ = self.shutdown.cancelled() => {
                    self.done = true;
                    return Some(Err(tonic::Status::unavailable("the poller is shutting down; watch again")));
                }
            }
        }
    }

    /// Re-reads the snapshot after the feed reconnected; on failure tries again in a second.
    async fn resync(&mut self) {
        match self.store.order(&self.out_trade_no).await {
            Ok(Some(order)) => {
                self.resync_at = None;
                // Through the hub, so the order's other watchers and its fallback see it too.
                self.watch.hub().offer(OrderEvent::snapshot(&order));
            }
            Ok(None) => self.resync_at = None,
            Err(e) => {
                tracing::warn!(out_trade_no = %self.out_trade_no, error = %e, "snapshot re-read failed; retrying");
                self.resync_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// The message for `event`. Its status is typed: an event with a status we do
    /// not know was already refused where it was decoded (the feed).
    fn emit(&mut self, event: &OrderEvent) -> OrderStatusEvent {
        self.sent = self.sent.max(event.version);
        let terminal = event.status.is_terminal();
        self.done = terminal;
        metrics::counter!(m::EVENTS_DELIVERED).increment(1);
        convert::event_to_pb(event, terminal)
    }
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<OrderStatusEvent, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl OrderStatusService for WatchService {
    type WatchOrderStream = WatchStream;

    async fn watch_order(
        &self,
        request: tonic::Request<WatchOrderRequest>,
    ) -> Result<tonic::Response<Self::WatchOrderStream>, tonic::Status> {
        let watcher = self.open(request.into_inner()).await?;
        let stream = futures::stream::unfold(watcher, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
