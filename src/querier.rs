//! The poller's lost-notification fallback in the embedded mode: instead of a
//! gRPC `QueryOrder` to another process, it calls payment-service's
//! [`Payments::query_order`] directly (the same code the gRPC method runs:
//! `orderquery` at WeChat, then the state machine and the outbox event).

use std::sync::Arc;

use async_trait::async_trait;
use payment_service::{error::ApiError, service::Payments};
use poller::{OrderQuerier, QueryError};
use wxpay_core::domain::{OrderStatus, OutTradeNo};

pub struct InProcessQuerier {
    payments: Arc<Payments>,
}

impl InProcessQuerier {
    pub fn new(payments: Arc<Payments>) -> Self {
        Self { payments }
    }
}

#[async_trait]
impl OrderQuerier for InProcessQuerier {
    async fn query(&self, out_trade_no: &OutTradeNo) -> Result<OrderStatus, QueryError> {
        match self.payments.query_order(out_trade_no).await {
            Ok(order) => Ok(order.status),
            // The same split as the gRPC querier's: worth retrying or not. No `_`
            // arm, so a new error kind has to be placed here deliberately.
            Err(e @ ApiError::Unavailable { .. }) => Err(QueryError::Unavailable(e.to_string())),
            Err(
                e @ (ApiError::InvalidArgument(_)
                | ApiError::NotFound(_)
                | ApiError::AlreadyExists(_)
                | ApiError::FailedPrecondition(_)
                | ApiError::Unauthenticated
                | ApiError::PermissionDenied(_)
                | ApiError::Internal(_)),
            ) => Err(QueryError::Refused(e.to_string())),
        }
    }
}
