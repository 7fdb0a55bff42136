//! What a CreateOrder request asks for, validated once: the caller's input,
//! WeChat's rules on `expire_seconds`, what each trade type needs (an openid
//! for JSAPI, a product_id for NATIVE, a scene for MWEB) and refuses, and the
//! terms an idempotent retry must repeat exactly.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use wxpay_core::{
    convert::trade_type_from_pb,
    domain::{
        Attach, Caller, ClientIp, Description, Fee, IdempotencyKey, MerchantName, OpenId, Order,
        Placement, ProductId, SceneInfo, ValidationError,
    },
    wechat::{MerchantEntry, TradeType},
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
    /// A configured merchant's name; empty: `default`.
    pub merchant: String,
    /// `wxpay.v1.TradeType` as sent; 0 (unset) is JSAPI.
    pub trade_type: i32,
    pub product_id: String,
    pub scene_info: String,
    pub sub_openid: String,
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
    pub(super) placement: Placement,
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
        let trade_type = trade_type_from_pb(input.trade_type).ok_or_else(|| {
            ValidationError::new("trade_type", "must be JSAPI, NATIVE, APP or MWEB")
        })?;
        let openid = OpenId::parse_optional(&input.openid)?;
        let sub_openid = OpenId::parse_field_optional("sub_openid", &input.sub_openid)?;
        let product_id = match (trade_type, input.product_id.as_str()) {
            (TradeType::Native, id) => Some(ProductId::parse(id)?),
            (_, "") => None,
            _ => return Err(only_for("product_id", "NATIVE")),
        };
        let scene_info = match (trade_type, input.scene_info.as_str()) {
            (TradeType::Mweb, scene) => Some(SceneInfo::parse(scene)?),
            (_, "") => None,
            _ => return Err(only_for("scene_info", "MWEB")),
        };
        match trade_type {
            // wx.requestPayment pays as one user: WeChat takes the openid under
            // the merchant's appid, or the sub_openid under the sub merchant's.
            TradeType::Jsapi => {
                match (openid.is_empty(), sub_openid.is_empty()) {
                    (true, true) => return Err(ValidationError::new(
                        "openid",
                        "is required for a JSAPI order (or sub_openid in service-provider mode)",
                    )),
                    (false, false) => {
                        return Err(ValidationError::new(
                            "sub_openid",
                            "cannot be given with openid: a JSAPI order is paid by one of them",
                        ))
                    }
                    _ => {}
                }
            }
            // Placed before anyone knows who will pay: an openid would be
            // ignored by WeChat, so it is refused rather than stored as if it mattered.
            _ => {
                if !openid.is_empty() {
                    return Err(only_for("openid", "JSAPI"));
                }
                if !sub_openid.is_empty() {
                    return Err(only_for("sub_openid", "JSAPI"));
                }
            }
        }
        Ok((
            key,
            Terms {
                openid,
                description: Description::parse(&input.description)?,
                total_fee: Fee::new(input.total_fee)?,
                attach: Attach::parse(&input.attach)?,
                client_ip: ClientIp::parse(&input.client_ip)?,
                expire_seconds,
                placement: Placement {
                    merchant: MerchantName::parse_or_default(&input.merchant)?,
                    trade_type,
                    sub_openid,
                    product_id,
                    scene_info,
                },
            },
        ))
    }

    /// What the merchant must have for these terms: a sub_openid is an openid
    /// under the sub merchant's appid, which only a merchant with `sub_app_id`
    /// has.
    pub(super) fn check_merchant(&self, entry: &MerchantEntry) -> Result<(), ValidationError> {
        if !self.placement.sub_openid.is_empty() && entry.sub_app_id.is_none() {
            return Err(ValidationError::new(
                "sub_openid",
                format!(
                    "needs a merchant in service-provider mode with sub_app_id; {} has none",
                    entry.name
                ),
            ));
        }
        Ok(())
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
        } else if order.placement.merchant != self.placement.merchant {
            Some("merchant")
        } else if order.placement.trade_type != self.placement.trade_type {
            Some("trade_type")
        } else if order.placement.sub_openid != self.placement.sub_openid {
            Some("sub_openid")
        } else if order.placement.product_id != self.placement.product_id {
            Some("product_id")
        } else if order.placement.scene_info != self.placement.scene_info {
            Some("scene_info")
        } else {
            None
        }
    }
}

fn only_for(field: &'static str, trade_type: &str) -> ValidationError {
    ValidationError::new(field, format!("is only for {trade_type} orders"))
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
