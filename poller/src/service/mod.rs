//! `OrderStatusService.WatchOrder`: the stream contract (see README.md).
//!
//! The handler validates, registers with the hub (subscribe first), reads the
//! snapshot, and returns a stream. The stream is a state machine polled by the
//! transport itself, not a spawned task feeding a channel: when the client reads
//! slowly the transport simply stops polling it, nothing queues per stream, and
//! when it next polls it sends whatever is newest. Dropping the stream (client
//! gone) drops the hub registration.
//!
//! This module is the gRPC side: [`Deadlines`], the [`WatchService`] handler
//! (validate, subscribe, snapshot) and the adapter that turns a watcher into
//! the response stream. What one stream sends, and when it ends, is
//! `watcher`'s; this module never decides either. A number the database just
//! said is unknown is refused before it costs a subscription or a read (`unknown`).

mod unknown;
mod watcher;

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wxpay_core::domain::{OrderEvent, OutTradeNo};
use wxpay_proto::v1::{
    order_status_service_server::OrderStatusService, OrderStatusEvent, WatchOrderRequest,
};
use wxpay_runtime::access::{Access, MerchantScope};

use crate::snapshots::Snapshots;
use crate::{error::WatchError, hub::Hub};
use unknown::UnknownOrders;
use watcher::{Ends, Watcher};

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
    /// Snapshot reads, batched across the streams opening at once.
    snapshots: Snapshots,
    hub: Hub,
    deadlines: Deadlines,
    /// One permit per open stream: past `POLLER_MAX_STREAMS` a watch is refused
    /// (RESOURCE_EXHAUSTED) instead of growing the process without bound.
    slots: Arc<Semaphore>,
    max_streams: usize,
    /// Numbers the database said no order has, for a while: a client asking
    /// again (a retry loop) is refused without another subscription or read.
    unknown: Arc<UnknownOrders>,
    /// Cancelled at shutdown: open streams end with UNAVAILABLE.
    shutdown: CancellationToken,
}

impl WatchService {
    pub(crate) fn new(
        snapshots: Snapshots,
        hub: Hub,
        deadlines: Deadlines,
        max_streams: usize,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            snapshots,
            hub,
            deadlines,
            slots: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            unknown: Arc::new(UnknownOrders::default()),
            shutdown,
        }
    }

    /// Subscribe, then snapshot: the order of these two is the whole guarantee.
    /// An order of a merchant outside `scope` is NOT_FOUND, as a missing one.
    #[tracing::instrument(skip(self, scope), fields(out_trade_no = %request.out_trade_no))]
    async fn open(
        &self,
        request: WatchOrderRequest,
        scope: &MerchantScope,
    ) -> Result<Watcher, WatchError> {
        let out_trade_no = OutTradeNo::parse(&request.out_trade_no)?;
        // Before any subscription or read: a refused stream costs nothing.
        if self.unknown.refuses(&out_trade_no) {
            return Err(WatchError::NotFound);
        }
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| WatchError::TooManyStreams(self.max_streams))?;
        let deadline = Instant::now() + self.deadlines.for_request(request.timeout_seconds);
        let watch = self.hub.watch(&out_trade_no).await;
        let Some(order) = self.snapshots.order(&out_trade_no).await? else {
            self.unknown.remember(out_trade_no);
            return Err(WatchError::NotFound);
        };
        if !scope.allows(&order.placement.merchant) {
            // Not remembered as unknown: the order exists for its own callers.
            tracing::info!(merchant = %order.placement.merchant,
                "an order outside the caller's merchants was watched: answered as not found");
            return Err(WatchError::NotFound);
        }
        // Into the shared state, where this watcher's first message reads it and
        // the order's other watchers and its fallback see it too.
        self.hub.offer(OrderEvent::snapshot(&order));
        Ok(Watcher::new(
            self.snapshots.clone(),
            watch,
            Ends {
                deadline,
                include_refunds: request.include_refunds,
            },
            self.shutdown.clone(),
            slot,
        ))
    }
}

impl WatchService {
    /// A watch as a stream of messages: what the HTTP side (WebSocket, SSE)
    /// forwards. Its watch token was signed for this one order, whatever its
    /// merchant.
    pub async fn open_stream(
        &self,
        out_trade_no: &str,
        timeout_seconds: u32,
        include_refunds: bool,
    ) -> Result<WatchStream, WatchError> {
        self.open_stream_within(
            &MerchantScope::All,
            out_trade_no,
            timeout_seconds,
            include_refunds,
        )
        .await
    }

    /// [`open_stream`](Self::open_stream) for a caller confined to `scope`:
    /// what WatchOrder returns.
    pub async fn open_stream_within(
        &self,
        scope: &MerchantScope,
        out_trade_no: &str,
        timeout_seconds: u32,
        include_refunds: bool,
    ) -> Result<WatchStream, WatchError> {
        let watcher = self
            .open(
                WatchOrderRequest {
                    out_trade_no: out_trade_no.to_owned(),
                    timeout_seconds,
                    include_refunds,
                },
                scope,
            )
            .await?;
        Ok(Box::pin(futures::stream::unfold(
            watcher,
            |mut w| async move {
                let item = w.next().await?;
                Some((item, w))
            },
        )))
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
        // Set by the bearer-token check; without it the request did not pass one.
        let access = request
            .extensions()
            .get::<Access>()
            .cloned()
            .ok_or_else(|| tonic::Status::unauthenticated("missing or wrong bearer token"))?;
        let r = request.into_inner();
        let stream = self
            .open_stream_within(
                &access.merchants,
                &r.out_trade_no,
                r.timeout_seconds,
                r.include_refunds,
            )
            .await?;
        Ok(tonic::Response::new(stream))
    }
}
