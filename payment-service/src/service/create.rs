//! CreateOrder: validate, store the NOTPAY order first, place it with WeChat,
//! sign the `wx.requestPayment` parameters. Idempotent by key; WeChat's rules on
//! `time_expire` are checked here, so a request WeChat would refuse fails before
//! it is sent, and an order that can no longer be paid gets no parameters.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use wxpay_core::{
    domain::{
        Attach, ClientIp, Description, EventSource, Fee, IdempotencyKey, NewOrder, Nonce, OpenId,
        Order, OrderStatus, OutTradeNo, ValidationError,
    },
    wechat::pay_params::{self, PaymentParams},
};
use wxpay_store::InsertOutcome;

use super::Payments;
use crate::{error::ApiError, wechat::UnifiedOrder};

/// A CreateOrder request as received (strings and numbers, not yet validated).
#[derive(Debug, Clone, Default)]
pub struct CreateOrderInput {
    pub idempotency_key: String,
    pub openid: String,
    pub description: String,
    pub total_fee: i64,
    pub attach: String,
    pub client_ip: String,
    pub expire_seconds: i64,
}

/// WeChat refuses a time_expire less than 5 minutes ahead for every trade type
/// but micropay ("time_expire时间过短，刷卡至少1分钟，其他5分钟"); we cap the window at a week.
pub const MIN_EXPIRE_SECONDS: i64 = 300;
const MAX_EXPIRE_SECONDS: i64 = 7 * 24 * 3600;
/// `expire_seconds: 0`: WeChat's own default, two hours, made explicit so that the
/// reconciler knows when to close the order.
pub const DEFAULT_EXPIRE_SECONDS: i64 = 2 * 3600;
/// A prepay_id is valid for 2 hours; we stop reusing it 5 minutes early so a
/// payer never receives one that dies while the payment sheet is open.
const PREPAY_REUSE_WINDOW: ChronoDuration = ChronoDuration::minutes(115);

/// The validated parts of a CreateOrder request that must match on an idempotent retry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Terms {
    openid: OpenId,
    description: Description,
    total_fee: Fee,
    attach: Attach,
    client_ip: ClientIp,
    expire_seconds: i64,
}

impl Terms {
    fn parse(input: &CreateOrderInput) -> Result<(IdempotencyKey, Terms), ValidationError> {
        let key = IdempotencyKey::parse(&input.idempotency_key)?;
        let expire_seconds = match input.expire_seconds {
            0 => DEFAULT_EXPIRE_SECONDS,
            s if (MIN_EXPIRE_SECONDS..=MAX_EXPIRE_SECONDS).contains(&s) => s,
            _ => {
                return Err(ValidationError::new(
                    "expire_seconds",
                    format!(
                        "must be 0 (the default, 2 hours) or between {MIN_EXPIRE_SECONDS} \
                         (WeChat refuses less than 5 minutes) and {MAX_EXPIRE_SECONDS}"
                    ),
                ))
            }
        };
        Ok((
            key,
            Terms {
                openid: OpenId::parse(&input.openid)?,
                description: Description::parse(&input.description)?,
                total_fee: Fee::new(input.total_fee)?,
                attach: Attach::parse(&input.attach)?,
                client_ip: ClientIp::parse(&input.client_ip)?,
                expire_seconds,
            },
        ))
    }

    /// The first field in which a stored order differs from these terms.
    fn mismatch(&self, order: &Order) -> Option<&'static str> {
        if order.openid != self.openid {
            Some("openid")
        } else if order.description != self.description {
            Some("description")
        } else if order.total_fee != self.total_fee {
            Some("total_fee")
        } else if order.attach != self.attach {
            Some("attach")
        } else if order.client_ip != self.client_ip {
            Some("client_ip")
        } else if !same_expiry(order, self.expire_seconds) {
            Some("expire_seconds")
        } else {
            None
        }
    }
}

/// expires_at was computed from our clock and created_at from the database's, so
/// they may differ by a little: within 2 s counts as the same expiry. An order
/// stored without an expiry (before the default was made explicit) matches the
/// default.
fn same_expiry(order: &Order, requested_seconds: i64) -> bool {
    match order.expires_at {
        None => requested_seconds == DEFAULT_EXPIRE_SECONDS,
        Some(t) => {
            ((t - order.created_at).num_milliseconds() - requested_seconds * 1000).abs() <= 2000
        }
    }
}

fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = t - ChronoDuration::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
    if whole == t {
        t
    } else {
        whole + ChronoDuration::seconds(1)
    }
}

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
