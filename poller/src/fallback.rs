//! The lost-notification fallback: while an order is watched and still pending,
//! ask payment-service to query WeChat (`QueryOrder`) after a short delay, then
//! backing off. The hub runs one of these per watched order, never per watcher.
//!
//! The poller never writes to the database: a payment found this way goes through
//! payment-service's normal transition and event path and reaches the watchers on
//! the event feed like any other change.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use wxpay_core::domain::{OrderStatus, OutTradeNo};
use wxpay_proto::v1::{payment_service_client::PaymentServiceClient, QueryOrderRequest};

use wxpay_core::convert;

use crate::{backoff::Backoff, metrics as m, order_state::OrderState};

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
    /// Queries until the order is terminal; the hub aborts it when the order's last
    /// watcher leaves.
    pub(crate) async fn run(self, out_trade_no: OutTradeNo, state: watch::Receiver<OrderState>) {
        let mut backoff = Backoff::new(self.delay, self.max_delay);
        loop {
            tokio::time::sleep(backoff.next_delay()).await;
            let known = state.borrow().latest().map(|e| e.status);
            if known.is_some_and(OrderStatus::is_terminal) {
                return;
            }
            metrics::counter!(m::FALLBACK_QUERIES).increment(1);
            match self.querier.query(&out_trade_no).await {
                Ok(status) if status.is_terminal() => {
                    tracing::info!(%out_trade_no, %status, "fallback query found a final status");
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(%out_trade_no, error = %e, "fallback query failed"),
            }
        }
    }
}

/// `PaymentService.QueryOrder` over gRPC, with `authorization: Bearer API_TOKEN` when set.
#[derive(Clone)]
pub struct GrpcQuerier {
    client: PaymentServiceClient<tonic::transport::Channel>,
    token: Option<Arc<SecretString>>,
}

impl GrpcQuerier {
    /// Does not connect yet, so the poller starts while payment-service is down.
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
            // API_TOKEN may list several callers: the poller calls as the first.
            token: token
                .as_ref()
                .and_then(wxpay_runtime::callers::outgoing)
                .map(Arc::new),
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
                .map_err(|_| QueryError::Refused("API_TOKEN is not a valid header value".into()))?;
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
