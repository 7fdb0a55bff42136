//! The lost-notification fallback: while an order is watched and still pending,
//! ask payment-service to query WeChat (`QueryOrder`) after a short delay, then
//! backing off. One queue per poller holds every watched order's next query: one
//! query per order, never per watcher.
//!
//! The poller never writes to the database: a payment found this way goes through
//! payment-service's normal transition and event path and reaches the watchers on
//! the event feed like any other change.

use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;
use futures::{stream::FuturesUnordered, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;
use wxpay_core::domain::{OrderStatus, OutTradeNo};
use wxpay_proto::v1::{payment_service_client::PaymentServiceClient, QueryOrderRequest};

use wxpay_core::convert;

use crate::{metrics as m, order_state::OrderCell};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("payment-service unavailable: {0}")]
    Unavailable(String),
    #[error("payment-service refused the query: {0}")]
    Refused(String),
}

/// Asks the authority (payment-service, which asks WeChat and reconciles) for an
/// order's status. The gRPC client in the split deployment; an in-process call in
/// the embedded one.
#[async_trait]
pub trait OrderQuerier: Send + Sync + 'static {
    async fn query(&self, out_trade_no: &OutTradeNo) -> Result<OrderStatus, QueryError>;
}

/// When to ask, and whom.
#[derive(Clone)]
pub struct Fallback {
    pub querier: Arc<dyn OrderQuerier>,
    /// The first query comes this long after the order started being watched.
    pub delay: Duration,
    /// The backoff between later queries stops growing here.
    pub max_delay: Duration,
}

impl Fallback {
    /// Starts the queue's one task; the hub hands it each newly watched order.
    pub(crate) fn start(self) -> FallbackQueue {
        let (tx, rx) = mpsc::unbounded_channel();
        let first = self.delay;
        tokio::spawn(self.run(rx));
        FallbackQueue { tx, first }
    }

    /// Every watched pending order's next query, in one timer queue: a task per
    /// order cost half a kilobyte each, and the queue's entry costs a few words.
    /// Queries run concurrently, at most [`IN_FLIGHT`] at once, so a burst of
    /// orders coming due together waits here, not at payment-service or WeChat.
    async fn run(self, mut added: mpsc::UnboundedReceiver<Due>) {
        let mut queue: DelayQueue<Due> = DelayQueue::new();
        let mut ready: VecDeque<Due> = VecDeque::new();
        let mut asking = FuturesUnordered::new();
        loop {
            while asking.len() < IN_FLIGHT {
                let Some(due) = ready.pop_front() else { break };
                asking.push(self.ask(due));
            }
            tokio::select! {
                got = added.recv() => match got {
                    Some(due) => {
                        let delay = due.delay;
                        queue.insert(due, delay);
                    }
                    // Every handle is gone: so is the hub.
                    None => return,
                },
                Some(expired) = queue.next(), if !queue.is_empty() => {
                    let due = expired.into_inner();
                    if due.pending() {
                        ready.push_back(due);
                    }
                }
                Some(again) = asking.next(), if !asking.is_empty() => {
                    if let Some(mut due) = again {
                        due.delay = (due.delay * 2).min(self.max_delay);
                        let delay = due.delay;
                        queue.insert(due, delay);
                    }
                }
            }
        }
    }

    /// One query; the order back when it should be asked again.
    async fn ask(&self, due: Due) -> Option<Due> {
        // Not holding the cell across the call: an order whose watchers all left
        // meanwhile is freed now, not when the query returns.
        let out_trade_no = due.cell.upgrade()?.out_trade_no().clone();
        metrics::counter!(m::FALLBACK_QUERIES).increment(1);
        match self.querier.query(&out_trade_no).await {
            Ok(status) if status.is_terminal() => {
                // Its event comes over the feed, like any other change.
                tracing::info!(%out_trade_no, %status, "fallback query found a final status");
                None
            }
            Ok(_) => Some(due),
            Err(e) => {
                tracing::warn!(%out_trade_no, error = %e, "fallback query failed");
                Some(due)
            }
        }
    }
}

/// At most this many fallback queries at once.
const IN_FLIGHT: usize = 64;

/// The hub's handle on the fallback's queue.
#[derive(Clone)]
pub(crate) struct FallbackQueue {
    tx: mpsc::UnboundedSender<Due>,
    first: Duration,
}

impl FallbackQueue {
    /// Queues the first query of a newly watched order. It is asked while any
    /// watcher holds the cell and its known status is not final.
    pub(crate) fn add(&self, cell: &Arc<OrderCell>) {
        let _ = self.tx.send(Due {
            cell: Arc::downgrade(cell),
            delay: self.first,
        });
    }
}

/// One watched order in the queue.
struct Due {
    /// Weak: the queue never keeps an unwatched order's state alive.
    cell: Weak<OrderCell>,
    /// The wait before this query; doubled after each, up to `max_delay`.
    delay: Duration,
}

impl Due {
    /// Still watched, and not known to be final.
    fn pending(&self) -> bool {
        self.cell
            .upgrade()
            .is_some_and(|cell| !cell.lock().latest().is_some_and(|e| e.status.is_terminal()))
    }
}

/// `PaymentService.QueryOrder` over gRPC, with `authorization: Bearer <token>`
/// when given (`Config::fallback_token`: `API_READ_TOKEN`, which may only read
/// and query, or else the first `API_TOKEN` entry).
#[derive(Clone)]
pub struct GrpcQuerier {
    client: PaymentServiceClient<tonic::transport::Channel>,
    token: Option<Arc<SecretString>>,
}

impl GrpcQuerier {
    /// Does not connect yet, so the poller starts while payment-service is down.
    /// `token` is sent as it is.
    pub fn new(url: &str, token: Option<SecretString>) -> Result<Self, QueryError> {
        Self::with_ca(url, token, None)
    }

    /// An `https` URL is reached over TLS, trusting the public roots and, when
    /// given, `ca_pem` (`PAYMENT_SERVICE_CA`: the CA of a private TLS_CERT).
    pub fn with_ca(
        url: &str,
        token: Option<SecretString>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, QueryError> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| QueryError::Unavailable(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        if url.starts_with("https://") {
            let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
            if let Some(ca) = ca_pem {
                tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| QueryError::Unavailable(e.to_string()))?;
        }
        Ok(Self {
            client: PaymentServiceClient::new(endpoint.connect_lazy()),
            token: token.map(Arc::new),
        })
    }
}

#[async_trait]
impl OrderQuerier for GrpcQuerier {
    async fn query(&self, out_trade_no: &OutTradeNo) -> Result<OrderStatus, QueryError> {
        let mut request = tonic::Request::new(QueryOrderRequest {
            out_trade_no: out_trade_no.to_string(),
        });
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.expose_secret())
                .parse()
                .map_err(|_| {
                    QueryError::Refused("the fallback's token is not a valid header value".into())
                })?;
            request.metadata_mut().insert("authorization", value);
        }
        let order = self
            .client
            .clone()
            .query_order(request)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown => {
                    QueryError::Unavailable(s.message().to_owned())
                }
                _ => QueryError::Refused(format!("{:?}: {}", s.code(), s.message())),
            })?
            .into_inner();
        convert::status_from_pb(order.status)
            .ok_or_else(|| QueryError::Refused(format!("unknown status {}", order.status)))
    }
}
