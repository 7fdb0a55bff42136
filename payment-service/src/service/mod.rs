//! The order use cases behind the gRPC API: create (idempotently, [`create`]),
//! get, settle with WeChat (query, close, expire: [`settle`]), and refund
//! ([`refund`]). Pure orchestration of the store, the ledger and each
//! merchant's [`WechatApi`], whichever dialect it speaks; no transport types
//! and no wire fields here.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use wxpay_core::{
    domain::{EventSource, MerchantName, Order, OrderStatus, OutTradeNo},
    watch_token::WatchSecret,
};
use wxpay_runtime::access::MerchantScope;
use wxpay_store::{Anomaly, AnomalyKind, Ledger, Store, Transition, TransitionOutcome};

use crate::{error::ApiError, wechat::WechatApi};

mod bill;
mod create;
mod refund;
mod settle;
mod terms;

pub use bill::{bill_ready_at, china_day, parse_bill_date, BillEntry, BillRefund, DayBill};
pub use create::{CreateOrderInput, Created};
pub use refund::{RefundCheck, RefundInput};

/// How long a watch token outlives its order's expiry: long enough to see a
/// payment made at the last moment (or a close) arrive.
const WATCH_GRACE_MINUTES: i64 = 15;

pub struct Payments {
    store: Arc<dyn Store>,
    ledger: Ledger,
    /// One client per configured merchant, in the order they were defined.
    /// An order's calls go through the client of the merchant it was placed
    /// with, in that merchant's dialect.
    merchants: Vec<Arc<dyn WechatApi>>,
    /// Signs each order's watch token (`WATCH_TOKEN_SECRET`); `None`: no tokens.
    watch_secret: Option<WatchSecret>,
}

impl Payments {
    pub fn new(ledger: Ledger, merchants: Vec<Arc<dyn WechatApi>>) -> Self {
        Self {
            store: ledger.store().clone(),
            ledger,
            merchants,
            watch_secret: None,
        }
    }

    /// Issues a watch token with every CreateOrder (`WATCH_TOKEN_SECRET`).
    pub fn set_watch_secret(&mut self, secret: Option<WatchSecret>) {
        self.watch_secret = secret;
    }

    /// The order's watch token: valid until the order expires (WeChat's 2 hours
    /// when it has no expiry of its own) plus a grace period for the last events.
    pub fn watch_token(&self, order: &Order) -> Option<String> {
        let expires = order
            .expires_at
            .unwrap_or(order.created_at + chrono::Duration::hours(2));
        self.watch_secret.as_ref().map(|s| {
            s.issue(
                order.out_trade_no.as_str(),
                expires + chrono::Duration::minutes(WATCH_GRACE_MINUTES),
            )
        })
    }

    /// Every merchant's client, in the order they were configured.
    pub fn merchants(&self) -> &[Arc<dyn WechatApi>] {
        &self.merchants
    }

    /// The client of the merchant a request names.
    fn merchant(&self, name: &MerchantName) -> Option<&dyn WechatApi> {
        self.merchants
            .iter()
            .map(|c| c.as_ref())
            .find(|c| c.entry().name == name.as_str())
    }

    /// The client of the merchant `order` was placed with. An order whose
    /// merchant is no longer configured cannot be asked about: WeChat would
    /// not know it under any other merchant's numbers.
    fn wechat_for(&self, order: &Order) -> Result<&dyn WechatApi, ApiError> {
        self.merchant(&order.placement.merchant).ok_or_else(|| {
            ApiError::FailedPrecondition(format!(
                "order {} was placed with merchant {}, which is not configured",
                order.out_trade_no, order.placement.merchant
            ))
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub async fn get_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        self.store
            .order(out_trade_no)
            .await?
            .ok_or(ApiError::NotFound("order"))
    }

    /// The order as a caller confined to `scope` may see it. One placed with
    /// another merchant is the very error a number nobody has gives (same
    /// code, same message), so a tenant learns nothing of another's orders.
    pub async fn get_order_within(
        &self,
        scope: &MerchantScope,
        out_trade_no: &OutTradeNo,
    ) -> Result<Order, ApiError> {
        let order = self.get_order(out_trade_no).await?;
        if scope.allows(&order.placement.merchant) {
            Ok(order)
        } else {
            tracing::info!(%out_trade_no, merchant = %order.placement.merchant,
                "an order outside the caller's merchants was asked for: answered as not found");
            Err(ApiError::NotFound("order"))
        }
    }

    /// ReconcileBill reconciles and reports every merchant's bill of a day at
    /// once (the request names no merchant, and one report covers them all):
    /// its counts and discrepancies describe every tenant's trade, so only a
    /// caller whose scope covers every configured merchant may ask for it.
    pub fn may_reconcile(&self, scope: &MerchantScope) -> Result<(), ApiError> {
        if scope.covers(self.merchants.iter().map(|c| c.entry().name.as_str())) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(
                "ReconcileBill covers every merchant's bill; a caller confined to some merchants \
                 cannot ask for it"
                    .into(),
            ))
        }
    }

    /// One status change through the ledger (transition, then publish). A
    /// payment that lands on an order closed or revoked here is still applied —
    /// WeChat has the money — and recorded as an anomaly for a human to refund.
    async fn apply(
        &self,
        out_trade_no: &OutTradeNo,
        to: OrderStatus,
        transaction_id: Option<String>,
        cash_fee: Option<i64>,
        paid_at: Option<DateTime<Utc>>,
        source: EventSource,
    ) -> Result<Order, ApiError> {
        let outcome = self
            .ledger
            .apply(&Transition {
                out_trade_no: out_trade_no.clone(),
                to,
                transaction_id,
                cash_fee,
                paid_at,
                source,
                guard: None,
            })
            .await?;
        match outcome {
            TransitionOutcome::Applied {
                order, previous, ..
            } => {
                if order.status == OrderStatus::Success
                    && matches!(previous, OrderStatus::Closed | OrderStatus::Revoked)
                {
                    self.paid_after_close(&order, previous).await;
                }
                Ok(order)
            }
            TransitionOutcome::Unchanged { order } => Ok(order),
        }
    }

    async fn paid_after_close(&self, order: &Order, previous: OrderStatus) {
        let detail = format!(
            "WeChat reports payment {} for an order that was {previous}: the payer was charged; refund or deliver",
            order.transaction_id.as_deref().unwrap_or("(no transaction id)")
        );
        tracing::error!(out_trade_no = %order.out_trade_no, %detail, "paid after close");
        metrics::counter!("wxpay_anomalies_total", "kind" => AnomalyKind::PaidAfterClose.as_str())
            .increment(1);
        let row = Anomaly {
            kind: AnomalyKind::PaidAfterClose,
            out_trade_no: Some(order.out_trade_no.to_string()),
            detail,
        };
        if let Err(e) = self.store.record_anomaly(&row).await {
            tracing::error!(out_trade_no = %order.out_trade_no, error = %e, "could not record anomaly");
        }
    }
}
