//! The order use cases behind the gRPC API: create (idempotently), get, query
//! WeChat and reconcile, close. Pure orchestration of the store, the WeChat
//! client and the event publisher; no transport types here.

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use wxpay_core::{
    domain::{
        Attach, ClientIp, Description, EventSource, Fee, IdempotencyKey, NewOrder, Nonce, OpenId,
        Order, OrderStatus, OutTradeNo, ValidationError,
    },
    wechat::{
        pay_params::{self, PaymentParams},
        SignType,
    },
};
use wxpay_store::{
    Anomaly, AnomalyKind, InsertOutcome, Ledger, Store, Transition, TransitionOutcome,
};

use crate::{
    error::ApiError,
    wechat::{CloseOutcome, UnifiedOrder, WechatClient},
};

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

/// WeChat refuses time_expire less than a minute away; we cap the window at a week.
const MIN_EXPIRE_SECONDS: i64 = 60;
const MAX_EXPIRE_SECONDS: i64 = 7 * 24 * 3600;
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
        let expire_seconds = input.expire_seconds;
        if expire_seconds != 0
            && !(MIN_EXPIRE_SECONDS..=MAX_EXPIRE_SECONDS).contains(&expire_seconds)
        {
            return Err(ValidationError::new(
                "expire_seconds",
                format!("must be 0 (WeChat's default) or between {MIN_EXPIRE_SECONDS} and {MAX_EXPIRE_SECONDS}"),
            ));
        }
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
/// they may differ by a little: within 2 s counts as the same expiry.
fn same_expiry(order: &Order, requested_seconds: i64) -> bool {
    match (order.expires_at, requested_seconds) {
        (None, 0) => true,
        (Some(t), s) if s > 0 => {
            ((t - order.created_at).num_milliseconds() - s * 1000).abs() <= 2000
        }
        _ => false,
    }
}

/// The result of CreateOrder: the order, and the requestPayment parameters while it can be paid.
#[derive(Debug, Clone)]
pub struct Created {
    pub order: Order,
    pub payment: Option<PaymentParams>,
}

pub struct Payments {
    store: Arc<dyn Store>,
    ledger: Ledger,
    wechat: WechatClient,
    sign_type: SignType,
    notify_url: String,
}

impl Payments {
    pub fn new(
        ledger: Ledger,
        wechat: WechatClient,
        sign_type: SignType,
        notify_url: String,
    ) -> Self {
        Self {
            store: ledger.store().clone(),
            ledger,
            wechat,
            sign_type,
            notify_url,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

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
            expires_at: (terms.expire_seconds > 0)
                .then(|| now + ChronoDuration::seconds(terms.expire_seconds)),
        };
        let order = match self.store.insert_order(&new).await? {
            InsertOutcome::Inserted(order) => order,
            InsertOutcome::KeyTaken(existing) => self.check_retry(existing, &terms)?,
        };
        tracing::Span::current().record("out_trade_no", order.out_trade_no.as_str());

        if order.status != OrderStatus::NotPay {
            // Paid, closed or failed: there is nothing to pay, so no parameters.
            return Ok(Created {
                order,
                payment: None,
            });
        }
        let order = match (&order.prepay_id, order.prepay_expires_at) {
            (Some(_), Some(until)) if until > now => order,
            _ => self.place_with_wechat(&order, now).await?,
        };
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
    ) -> Result<Order, ApiError> {
        let prepay_id = self
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
            .await?;
        Ok(self
            .store
            .set_prepay(&order.out_trade_no, &prepay_id, now + PREPAY_REUSE_WINDOW)
            .await?)
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

    pub async fn get_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        self.store
            .order(out_trade_no)
            .await?
            .ok_or(ApiError::NotFound("order"))
    }

    /// Asks WeChat for the order's state and applies it through the state machine.
    #[tracing::instrument(skip(self))]
    pub async fn query_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        let order = self.get_order(out_trade_no).await?;
        if order.status.is_terminal() && order.status != OrderStatus::Success {
            // Closed, failed, revoked, refunded: WeChat cannot tell us anything new we act on.
            return Ok(order);
        }
        let answer = match self
            .wechat
            .order_query(order.out_trade_no.as_str(), order.sign_type)
            .await
        {
            Ok(a) => a,
            Err(e) if e.code() == Some("ORDERNOTEXIST") => {
                // WeChat never saw it (unifiedorder failed or is pending): our state stands.
                return Ok(order);
            }
            Err(e) => return Err(e.into()),
        };
        if answer.trade_state == order.status {
            return Ok(order);
        }
        if answer.trade_state == OrderStatus::Success && answer.total_fee != Some(order.total_fee) {
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
        self.apply(
            &order.out_trade_no,
            answer.trade_state,
            answer.transaction_id,
            answer.cash_fee,
            answer.time_end,
            EventSource::Query,
        )
        .await
    }

    /// Closes at WeChat first; CLOSED locally only once WeChat has closed it.
    #[tracing::instrument(skip(self))]
    pub async fn close_order(&self, out_trade_no: &OutTradeNo) -> Result<Order, ApiError> {
        let order = self.get_order(out_trade_no).await?;
        match order.status {
            OrderStatus::Closed => return Ok(order),
            OrderStatus::NotPay | OrderStatus::UserPaying => {}
            other => {
                return Err(ApiError::FailedPrecondition(format!(
                    "the order is {other} and cannot be closed"
                )))
            }
        }
        match self
            .wechat
            .close_order(order.out_trade_no.as_str(), order.sign_type)
            .await?
        {
            CloseOutcome::Closed | CloseOutcome::AlreadyClosed | CloseOutcome::NotFound => {
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
                if closed.status == OrderStatus::Closed {
                    Ok(closed)
                } else {
                    // A notification paid it between our read and the close.
                    Err(ApiError::FailedPrecondition(format!(
                        "the order is {} and cannot be closed",
                        closed.status
                    )))
                }
            }
            CloseOutcome::AlreadyPaid => {
                // WeChat has the payment and we do not: reconcile before refusing.
                if let Err(e) = self.query_order(out_trade_no).await {
                    tracing::warn!(error = %e, "reconciling a paid order after ORDERPAID failed");
                }
                Err(ApiError::FailedPrecondition(
                    "the order is already paid and cannot be closed".into(),
                ))
            }
        }
    }

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
            })
            .await?;
        match outcome {
            TransitionOutcome::Applied { order, .. } | TransitionOutcome::Unchanged { order } => {
                Ok(order)
            }
        }
    }
}
