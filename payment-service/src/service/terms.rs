//! What a CreateOrder request asks for, validated once: the caller's input,
//! WeChat's rules on `expire_seconds`, and the terms an idempotent retry must
//! repeat exactly.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use wxpay_core::domain::{
    Attach, Caller, ClientIp, Description, Fee, IdempotencyKey, OpenId, Order, ValidationError,
};

/// A CreateOrder request as received (strings and numbers, not yet validated).
#[derive(Debug, Clone, Default)]
pub struct CreateOrderInput {
    /// Whose idempotency key this is (the gRPC layer takes it from the token
    /// the request authenticated with); `None` is the caller `default`.
    pub caller: Option<Caller>,
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

/// The validated parts of a CreateOrder request that must match on an idempotent retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Terms {
    pub(super) openid: OpenId,
    pub(super) description: Description,
    pub(super) total_fee: Fee,
    pub(super) attach: Attach,
    pub(super) client_ip: ClientIp,
    pub(super) expire_seconds: i64,
}

impl Terms {
    pub(super) fn parse(
        input: &CreateOrderInput,
    ) -> Result<(IdempotencyKey, Terms), ValidationError> {
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
    pub(super) fn mismatch(&self, order: &Order) -> Option<&'static str> {
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

pub(super) fn ceil_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    let whole = t - ChronoDuration::nanoseconds(i64::from(t.timestamp_subsec_nanos()));
    if whole == t {
        t
    } else {
        whole + ChronoDuration::seconds(1)
    }
}
