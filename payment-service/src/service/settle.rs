//! Settling an order with WeChat: `orderquery` applied through the state
//! machine (QueryOrder, the poller's fallback, the reconciler), CloseOrder, and
//! the reconciler's expiry. WeChat is asked first; the local order changes only
//! on what WeChat says.

use wxpay_core::domain::{EventSource, Fee, Order, OrderStatus, OutTradeNo};
use wxpay_runtime::access::MerchantScope;
use wxpay_store::{Anomaly, AnomalyKind};

use super::Payments;
use crate::{
    error::ApiError,
    wechat::{CloseOutcome, TradeState},
};

impl Payments {
    /// Asks WeChat for the order's state and applies it through the state
    /// machine. Every status is asked about: a failed order may have been paid
    /// on a later try, and one closed here may have been paid at WeChat.
    #[tracing::instrument(skip(self))]
    pub async fn query_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        let order = self.get_order(out_trade_no).await?;
        self.query_loaded(order).await
    }

    /// QueryOrder for a caller confined to `scope`: an order of another
    /// merchant is NOT_FOUND, and WeChat is not asked.
    pub async fn query_order_within(
        &self,
        scope: &MerchantScope,
        out_trade_no: &OutTradeNo,
    ) -> Result<Order, ApiError> {
        let order = self.get_order_within(scope, out_trade_no).await?;
        self.query_loaded(order).await
    }

    async fn query_loaded(&self, order: Order) -> Result<Order, ApiError> {
        if order.status == OrderStatus::Refund {
            // Refunds have their own records; orderquery adds nothing to them.
            return Ok(order);
        }
        let answer = self.wechat_for(&order)?.query(&order).await?;
        self.settle_with(order, answer).await
    }

    /// Applies what WeChat holds about `order` through the state machine and
    /// returns the order as it then stands. `None` (WeChat never saw it:
    /// unifiedorder failed or is pending) leaves our state as it is.
    pub(super) async fn settle_with(
        &self,
        order: Order,
        answer: Option<TradeState>,
    ) -> Result<Order, ApiError> {
        let Some(answer) = answer else {
            return Ok(order);
        };
        if answer.status == order.status {
            return Ok(order);
        }
        let paid_at_wechat = matches!(answer.status, OrderStatus::Success | OrderStatus::Refund);
        if paid_at_wechat && answer.total_fee != Some(order.total_fee) {
            // Never mark paid on an amount we did not ask for.
            let detail = format!(
                "orderquery reports SUCCESS with total_fee {:?}, order has {}",
                answer.total_fee.map(Fee::fen),
                order.total_fee
            );
            tracing::error!(out_trade_no = %order.out_trade_no, %detail, "amount mismatch");
            self.store
                .record_anomaly(&Anomaly {
                    kind: AnomalyKind::QueryAmountMismatch,
                    out_trade_no: Some(order.out_trade_no.to_string()),
                    detail,
                })
                .await?;
            return Err(ApiError::FailedPrecondition(
                "WeChat reports a payment whose amount differs from the order; it was not applied"
                    .into(),
            ));
        }
        let transaction_id = answer.transaction_id.map(|t| t.as_str().to_owned());
        if answer.status == OrderStatus::Refund {
            // Refunded at WeChat means it was paid first (a lost notification,
            // then a refund from the merchant platform): record the payment. The
            // order becomes REFUND only through a refund record (its notification,
            // or refundquery), which carries the amount; orderquery does not.
            if order.status == OrderStatus::Success {
                return Ok(order);
            }
            return self
                .apply(
                    &order.out_trade_no,
                    OrderStatus::Success,
                    transaction_id,
                    answer.cash_fee,
                    answer.paid_at,
                    EventSource::Query,
                )
                .await;
        }
        self.apply(
            &order.out_trade_no,
            answer.status,
            transaction_id,
            answer.cash_fee,
            answer.paid_at,
            EventSource::Query,
        )
        .await
    }

    /// Closes at WeChat first; CLOSED locally only once WeChat has closed it.
    /// An order outside `scope` is NOT_FOUND, and nothing is asked or changed.
    #[tracing::instrument(skip(self, scope))]
    pub async fn close_order(
        &self,
        scope: &MerchantScope,
        out_trade_no: &OutTradeNo,
    ) -> Result<Order, ApiError> {
        let order = self.get_order_within(scope, out_trade_no).await?;
        match order.status {
            OrderStatus::Closed => return Ok(order),
            OrderStatus::NotPay | OrderStatus::UserPaying | OrderStatus::PayError => {}
            other @ (OrderStatus::Success | OrderStatus::Refund | OrderStatus::Revoked) => {
                return Err(ApiError::FailedPrecondition(format!(
                    "the order is {other} and cannot be closed"
                )))
            }
        }
        let closed = self.close_at_wechat(&order).await?;
        match closed.status {
            OrderStatus::Closed => Ok(closed),
            OrderStatus::Success | OrderStatus::Refund => Err(ApiError::FailedPrecondition(
                "the order is already paid and cannot be closed".into(),
            )),
            // Still unsettled: WeChat said it was paid but the query could not
            // confirm it yet, or a notification moved it meanwhile.
            other => Err(ApiError::FailedPrecondition(format!(
                "the order is {other} and could not be closed; ask again"
            ))),
        }
    }

    /// The reconciler's close of an order whose time ran out: the same path as
    /// CloseOrder, which records a payment WeChat reports instead of closing.
    pub async fn expire_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        let order = self.get_order(out_trade_no).await?;
        if !order.status.is_unsettled() {
            return Ok(order);
        }
        self.close_at_wechat(&order).await
    }

    /// `closeorder`, then what it says: CLOSED (or never seen by WeChat) closes
    /// the order here; ORDERPAID reconciles the payment. Returns the order as it
    /// then stands.
    async fn close_at_wechat(&self, order: &Order) -> Result<Order, ApiError> {
        match self.wechat_for(order)?.close(order).await? {
            // ORDERNOTEXIST: unifiedorder never reached WeChat, or is still in
            // flight; its prepay_id is then not kept (set_prepay keeps one only
            // for a NOTPAY order), so the closed order never gets parameters.
            CloseOutcome::Closed | CloseOutcome::AlreadyClosed | CloseOutcome::NotFound => {
                self.apply(
                    &order.out_trade_no,
                    OrderStatus::Closed,
                    None,
                    None,
                    None,
                    EventSource::Close,
                )
                .await
            }
            CloseOutcome::AlreadyPaid => {
                // WeChat has the payment and we do not: record it.
                self.query_order(&order.out_trade_no).await
            }
        }
    }
}
