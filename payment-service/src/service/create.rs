//! CreateOrder: validate, store the NOTPAY order first, place it with WeChat
//! through the merchant the request names, and hand back what its trade type
//! is paid with: signed `wx.requestPayment` parameters (JSAPI), signed OpenSDK
//! parameters (APP), a QR code's content (NATIVE) or a link (MWEB). Idempotent by key; WeChat's rules on
//! `time_expire` are checked here, so a request WeChat would refuse fails before
//! it is sent, and an order that can no longer be paid gets no parameters. An
//! order still unpaid always gets them, or an error: never an OK with nothing
//! to pay.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use wxpay_core::{
    domain::{Caller, EventSource, NewOrder, Order, OrderStatus, OutTradeNo, ValidationError},
    wechat::{
        pay_params::{AppPaymentParams, PaymentParams},
        TradeType,
    },
};
use wxpay_runtime::access::MerchantScope;
use wxpay_store::InsertOutcome;

pub use super::terms::CreateOrderInput;
use super::{
    terms::{ceil_to_second, Terms, DEFAULT_EXPIRE_SECONDS, MIN_EXPIRE_SECONDS},
    Payments,
};
use crate::{
    error::ApiError,
    wechat::{PlaceOutcome, TradeState, WechatApi},
};

/// The result of CreateOrder: the order and, while it can be paid, what its
/// trade type is paid with (one of the four; the others are `None`).
#[derive(Debug, Clone)]
pub struct Created {
    pub order: Order,
    /// JSAPI: `wx.requestPayment`'s object.
    pub payment: Option<PaymentParams>,
    /// APP: the OpenSDK's PayReq.
    pub app_payment: Option<AppPaymentParams>,
    /// NATIVE: the QR code's content.
    pub code_url: Option<String>,
    /// MWEB: where the payer's browser goes.
    pub mweb_url: Option<String>,
}

impl Created {
    fn unpayable(order: Order) -> Self {
        Self {
            order,
            payment: None,
            app_payment: None,
            code_url: None,
            mweb_url: None,
        }
    }
}

/// What placing an order with WeChat came to.
enum Placed {
    /// WeChat gave a prepay_id (kept if the order is still NOTPAY).
    Ready(Order),
    /// WeChat says the order is closed, or already paid and orderquery
    /// confirms the payment; the order now shows it.
    Settled(Order),
}

impl Payments {
    /// Validates, stores the NOTPAY order, places it with WeChat and signs the
    /// requestPayment parameters. Safe to retry with the same idempotency key:
    /// a failure at WeChat leaves a NOTPAY order without prepay_id, and the retry
    /// calls unifiedorder again with the same out_trade_no and parameters.
    /// A merchant outside `scope` is PERMISSION_DENIED before anything else
    /// is looked at (not even whether it is configured).
    #[tracing::instrument(skip_all, fields(idempotency_key = %input.idempotency_key, out_trade_no))]
    pub async fn create_order(
        &self,
        scope: &MerchantScope,
        input: CreateOrderInput,
    ) -> Result<Created, ApiError> {
        let (key, terms) = Terms::parse(&input)?;
        if !scope.allows(&terms.placement.merchant) {
            return Err(ApiError::PermissionDenied(format!(
                "this caller may not place orders for merchant {}",
                terms.placement.merchant
            )));
        }
        let wechat = self.merchant(&terms.placement.merchant).ok_or_else(|| {
            ApiError::InvalidArgument(ValidationError::new(
                "merchant",
                format!(
                    "{} is not a configured merchant (configured: {})",
                    terms.placement.merchant,
                    self.merchants
                        .iter()
                        .map(|c| c.entry().name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        })?;
        terms.check_merchant(wechat.entry())?;
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
            // The merchant's sign type, kept with the order: every later request
            // about it, and its notifications, are signed the same way.
            sign_type: wechat.entry().sign_type,
            // Rounded up to the whole second WeChat's time_expire carries, so the
            // order never promises less time than was asked for.
            expires_at: Some(ceil_to_second(
                now + ChronoDuration::seconds(terms.expire_seconds),
            )),
            placement: terms.placement.clone(),
        };
        let order = match self.store.insert_order(&new).await? {
            InsertOutcome::Inserted(order) => {
                metrics::counter!("wxpay_orders_created_total",
                    "merchant" => wechat.entry().name.clone(),
                    "trade_type" => order.placement.trade_type.as_str())
                .increment(1);
                order
            }
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
                match self.place_with_wechat(wechat, &order, now).await? {
                    Placed::Ready(order) => order,
                    Placed::Settled(order) => return Ok(Created::unpayable(order)),
                }
            }
        };
        if order.status != OrderStatus::NotPay {
            // Paid, failed or closed while WeChat was being asked: no parameters.
            return Ok(Created::unpayable(order));
        }
        self.payable(wechat, order)
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
        wechat: &dyn WechatApi,
        order: &Order,
        now: DateTime<Utc>,
    ) -> Result<Placed, ApiError> {
        let prepaid = match wechat.place(order).await? {
            PlaceOutcome::Placed(prepaid) => prepaid,
            PlaceOutcome::AlreadyPaid { said } => {
                tracing::info!(out_trade_no = %order.out_trade_no, %said, "placing: WeChat says paid; asking orderquery");
                return self.confirm_paid(wechat, order, &said).await;
            }
            PlaceOutcome::AlreadyClosed => {
                tracing::info!(out_trade_no = %order.out_trade_no, "placing: WeChat says closed; closing locally");
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
        };
        // A prepay_id (and a code_url) lives 2 hours, an mweb_url 5 minutes;
        // each is reused until a margin before that, so a payer never receives
        // one that dies while the payment sheet is open.
        let window = order.placement.trade_type.reuse_window();
        let until = (now + window).min(order.expires_at.unwrap_or(now + window));
        // Kept only while the order is NOTPAY: a close or a payment that raced
        // this call wins, and the caller then gets no parameters.
        Ok(Placed::Ready(
            self.store
                .set_prepay(
                    &order.out_trade_no,
                    &prepaid.prepay_id,
                    prepaid.pay_url.as_deref(),
                    until,
                )
                .await?,
        ))
    }

    /// WeChat answered "already paid" (`said`) to placing `order`: a payment
    /// is recorded only once orderquery shows it (with the order's amount).
    /// Whatever else orderquery says is applied as usual, and the caller gets
    /// an error saying what WeChat said, never an OK with nothing to pay.
    async fn confirm_paid(
        &self,
        wechat: &dyn WechatApi,
        order: &Order,
        said: &str,
    ) -> Result<Placed, ApiError> {
        let answer = wechat.query(order).await?;
        let heard = match &answer {
            None => "does not know the order".to_owned(),
            Some(TradeState { status, .. }) => format!("says {status}"),
        };
        // Read again: a notification may have settled the order meanwhile.
        let current = self.get_order(&order.out_trade_no).await?;
        let now = self.settle_with(current, answer).await?;
        if matches!(now.status, OrderStatus::Success | OrderStatus::Refund) {
            return Ok(Placed::Settled(now));
        }
        tracing::warn!(out_trade_no = %order.out_trade_no, %said, %heard, status = %now.status,
            "WeChat says paid but orderquery shows no payment; nothing to pay with");
        Err(ApiError::FailedPrecondition(format!(
            "WeChat Pay answered {said} when order {} was placed, but its orderquery {heard}: \
             no payment is confirmed and the order is {}, with nothing to pay with now; \
             ask QueryOrder later (a payment WeChat confirms is recorded then)",
            order.out_trade_no, now.status
        )))
    }

    /// What the payer pays an unpaid order with, by its trade type: for JSAPI
    /// and APP, parameters the merchant's dialect signs now (fresh nonce and
    /// timestamp) over the prepay_id; for NATIVE and MWEB, the URL WeChat gave.
    fn payable(&self, wechat: &dyn WechatApi, order: Order) -> Result<Created, ApiError> {
        let missing = |what: &str| {
            ApiError::Internal(format!("unpaid order without {what} after unifiedorder"))
        };
        let prepay_id = order
            .prepay_id
            .clone()
            .ok_or_else(|| missing("prepay_id"))?;
        let mut created = Created::unpayable(order);
        let order = &created.order;
        match order.placement.trade_type {
            TradeType::Jsapi => created.payment = Some(wechat.jsapi_params(order, &prepay_id)?),
            TradeType::App => created.app_payment = Some(wechat.app_params(order, &prepay_id)?),
            TradeType::Native => {
                created.code_url = Some(order.pay_url.clone().ok_or_else(|| missing("code_url"))?);
            }
            TradeType::Mweb => {
                created.mweb_url = Some(order.pay_url.clone().ok_or_else(|| missing("mweb_url"))?);
            }
        }
        Ok(created)
    }
}
