//! CreateOrder: validate, store the NOTPAY order first, place it with WeChat,
//! sign the `wx.requestPayment` parameters. Idempotent by key; WeChat's rules on
//! `time_expire` are checked here, so a request WeChat would refuse fails before
//! it is sent, and an order that can no longer be paid gets no parameters.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use wxpay_core::{
    domain::{Caller, EventSource, NewOrder, Nonce, Order, OrderStatus, OutTradeNo},
    wechat::pay_params::{self, PaymentParams},
};
use wxpay_store::InsertOutcome;

pub use super::terms::CreateOrderInput;
use super::{
    terms::{ceil_to_second, Terms, DEFAULT_EXPIRE_SECONDS, MIN_EXPIRE_SECONDS},
    Payments,
};
use crate::{error::ApiError, wechat::UnifiedOrder};

/// A prepay_id is valid for 2 hours; we stop reusing it 5 minutes early so a
/// payer never receives one that dies while the payment sheet is open.
const PREPAY_REUSE_WINDOW: ChronoDuration = ChronoDuration::minutes(115);

/// The result of CreateOrder: the order, and the requestPayment parameters while it can be paid.
#[derive(Debug, Clone)]
pub struct Created {
    pub order: Order,
    pub payment: Option<PaymentParams>,
}

impl Created {
    fn unpayable(order: Order) -> Self {
        Self {
            order,
            payment: None,
        }
    }
}

/// What placing an order with WeChat came to.
enum Placed {
    /// WeChat gave a prepay_id (kept if the order is still NOTPAY).
    Ready(Order),
    /// WeChat says the order is already paid or closed; the order now shows it.
    Settled(Order),
}

impl Payments {
    /// Validates, stores the NOTPAY order, places it with WeChat and signs the
    /// requestPayment parameters. Safe to retry with the same idempotency key:
    /// a failure at WeChat leaves a NOTPAY order without prepay_id, and the retry
    /// calls unifiedorder again with the same out_trade_no and parameters.
    #[tracing::instrument(skip_all, fields(idempotency_key = %input.idempotency_key, out_trade_no))]
    pub async fn create_order(&self, input: CreateOrderInput) -> Result<Created, ApiError> {
        let (key, terms) = Terms::parse(&input)?;
        let now = Utc::now();
        // Insert first: a new key (the common case) costs one round trip, and a
        // taken key returns the order that holds it, checked like any retry.
        let new = NewOrder {
            out_trade_no: OutTradeNo::generate(),
            caller: input.caller.clone().unwrap_or_else(Caller::default_caller),
            idempotency_key: key,
            openid: terms.openid.clone(),
            description: terms.description.clone(),
            total_fee: terms.total_fee,
            attach: terms.attach.clone(),
            client_ip: terms.client_ip.clone(),
            sign_type: self.sign_type,
            // Rounded up to the whole second WeChat's time_expire carries, so the
            // order never promises less time than was asked for.
            expires_at: Some(ceil_to_second(
                now + ChronoDuration::seconds(terms.expire_seconds),
            )),
        };
        let order = match self.store.insert_order(&new).await? {
            InsertOutcome::Inserted(order) => order,
            InsertOutcome::KeyTaken(existing) => self.check_retry(existing, &terms)?,
        };
        tracing::Span::current().record("out_trade_no", order.out_trade_no.as_str());

        if order.status != OrderStatus::NotPay {
            // Paid, closed or failed: there is nothing to pay, so no parameters.
            return Ok(Created::unpayable(order));
        }
        let expires_at = order
            .expires_at
            .unwrap_or(order.created_at + ChronoDuration::seconds(DEFAULT_EXPIRE_SECONDS));
        if expires_at <= now {
            return Err(ApiError::FailedPrecondition(format!(
                "order {} expired at {expires_at}; create a new order to pay",
                order.out_trade_no
            )));
        }
        let order = match (&order.prepay_id, order.prepay_expires_at) {
            (Some(_), Some(until)) if until > now => order,
            _ => {
                // WeChat would refuse the time_expire this order must keep: say so
                // rather than send a request that cannot succeed.
                if expires_at - now < ChronoDuration::seconds(MIN_EXPIRE_SECONDS) {
                    return Err(ApiError::FailedPrecondition(format!(
                        "order {} expires at {expires_at}, less than 5 minutes from now, \
                         and WeChat no longer accepts it; create a new order to pay",
                        order.out_trade_no
                    )));
                }
                match self.place_with_wechat(&order, now).await? {
                    Placed::Ready(order) => order,
                    Placed::Settled(order) => return Ok(Created::unpayable(order)),
                }
            }
        };
        if order.status != OrderStatus::NotPay {
            // Paid, failed or closed while WeChat was being asked: no parameters.
            return Ok(Created::unpayable(order));
        }
        let payment = self.payment_params(&order)?;
        Ok(Created {
            order,
            payment: Some(payment),
        })
    }

    fn check_retry(&self, existing: Order, terms: &Terms) -> Result<Order, ApiError> {
        match terms.mismatch(&existing) {
            None => Ok(existing),
            Some(field) => Err(ApiError::AlreadyExists(format!(
                "idempotency_key was already used for order {} with a different {field}",
                existing.out_trade_no
            ))),
        }
    }

    async fn place_with_wechat(
        &self,
        order: &Order,
        now: DateTime<Utc>,
    ) -> Result<Placed, ApiError> {
        let placed = self
            .wechat
            .unified_order(&UnifiedOrder {
                out_trade_no: order.out_trade_no.as_str(),
                body: order.description.as_str(),
                total_fee: order.total_fee,
                attach: order.attach.as_str(),
                spbill_create_ip: order.client_ip.as_str(),
                openid: order.openid.as_str(),
                notify_url: &self.notify_url,
                time_expire: order.expires_at,
                sign_type: order.sign_type,
            })
            .await;
        let prepay_id = match placed {
            Ok(prepay_id) => prepay_id,
            Err(e) if e.code() == Some("ORDERPAID") => {
                // WeChat already has the payment: record it instead of failing.
                tracing::info!(out_trade_no = %order.out_trade_no, "unifiedorder: ORDERPAID; reconciling");
                return Ok(Placed::Settled(
                    self.query_order(&order.out_trade_no).await?,
                ));
            }
            Err(e) if e.code() == Some("ORDERCLOSED") => {
                tracing::info!(out_trade_no = %order.out_trade_no, "unifiedorder: ORDERCLOSED; closing locally");
                let closed = self
                    .apply(
                        &order.out_trade_no,
                        OrderStatus::Closed,
                        None,
                        None,
                        None,
                        EventSource::Close,
                    )
                    .await?;
                return Ok(Placed::Settled(closed));
            }
            Err(e) => return Err(e.into()),
        };
        let until =
            (now + PREPAY_REUSE_WINDOW).min(order.expires_at.unwrap_or(now + PREPAY_REUSE_WINDOW));
        // Kept only while the order is NOTPAY: a close or a payment that raced
        // this call wins, and the caller then gets no parameters.
        Ok(Placed::Ready(
            self.store
                .set_prepay(&order.out_trade_no, &prepay_id, until)
                .await?,
        ))
    }

    /// Fresh nonce, timestamp and paySign over the order's prepay_id.
    fn payment_params(&self, order: &Order) -> Result<PaymentParams, ApiError> {
        let prepay_id = order.prepay_id.as_deref().ok_or_else(|| {
            ApiError::Internal("unpaid order without prepay_id after unifiedorder".into())
        })?;
        Ok(pay_params::build(
            &self.wechat.merchant().app_id,
            prepay_id,
            &self.wechat.merchant().api_key,
            order.sign_type,
            Utc::now().timestamp(),
            &Nonce::generate(),
        ))
    }
}
