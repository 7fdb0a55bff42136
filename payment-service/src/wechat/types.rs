//! What the WeChat Pay client speaks: its options, the requests it makes, the
//! answers it returns, and [`WechatError`], WeChat's return_code / result_code /
//! err_code as a type.

use std::time::Duration;

use chrono::{DateTime, Utc};
use wxpay_core::{
    domain::{Fee, OrderStatus, RefundStatus},
    wechat::{Fields, SignType, TradeType},
};

use super::tls::ClientTls;

/// Timeouts and retries. The defaults suit WeChat's production API.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Attempts in all, for SYSTEMERROR and transport failures.
    pub max_attempts: u32,
    /// First pause between attempts; doubled each time.
    pub backoff: Duration,
    /// The merchant's API client certificate (which `/secapi/` requires) and any
    /// extra CA trusted for the API's host. `None`: public roots, no certificate.
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            max_attempts: 3,
            backoff: Duration::from_millis(200),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WechatError {
    #[error("WeChat Pay could not be reached: {0}")]
    Transport(String),
    #[error("WeChat Pay did not answer in time")]
    Timeout,
    #[error("WeChat Pay's reply cannot be trusted: {0}")]
    BadReply(String),
    #[error("WeChat Pay refused the request: {0}")]
    Return(String),
    #[error("WeChat Pay answered {code}: {message}")]
    Business { code: String, message: String },
}

impl WechatError {
    /// Worth sending the same request again.
    pub fn is_retryable(&self) -> bool {
        match self {
            WechatError::Transport(_) | WechatError::Timeout => true,
            WechatError::Business { code, .. } => {
                code == "SYSTEMERROR" || code == "BIZERR_NEED_RETRY"
            }
            WechatError::BadReply(_) | WechatError::Return(_) => false,
        }
    }

    /// WeChat's err_code, for business errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            WechatError::Business { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What unifiedorder needs. Empty strings are left out of the request (an
/// openid for NATIVE, a product_id for JSAPI, ...).
#[derive(Debug, Clone)]
pub struct UnifiedOrder<'a> {
    pub out_trade_no: &'a str,
    pub body: &'a str,
    pub total_fee: Fee,
    pub attach: &'a str,
    pub spbill_create_ip: &'a str,
    pub trade_type: TradeType,
    pub openid: &'a str,
    /// Service-provider mode: the payer under the sub merchant's appid.
    pub sub_openid: &'a str,
    pub product_id: &'a str,
    pub scene_info: &'a str,
    pub notify_url: &'a str,
    pub time_expire: Option<DateTime<Utc>>,
    pub sign_type: SignType,
}

/// unifiedorder's answer: the prepay_id, and the `code_url` (NATIVE) or
/// `mweb_url` (MWEB) the payer pays through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepaid {
    pub prepay_id: String,
    pub pay_url: Option<String>,
}

/// orderquery's answer, the fields we act on plus everything WeChat sent.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    pub trade_state: OrderStatus,
    pub transaction_id: Option<String>,
    pub total_fee: Option<Fee>,
    pub cash_fee: Option<i64>,
    pub time_end: Option<DateTime<Utc>>,
    pub fields: Fields,
}

/// What `/secapi/pay/refund` needs: the order as WeChat knows it and the refund.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    /// The order's total, which WeChat checks.
    pub total_fee: Fee,
    pub refund_fee: Fee,
    /// `refund_desc`; left out when empty.
    pub reason: &'a str,
    /// Where WeChat sends the refund's result.
    pub notify_url: &'a str,
    /// The order's sign type: a refund is signed as its order was.
    pub sign_type: SignType,
}

/// WeChat's acceptance of a refund request (not yet its completion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAccepted {
    pub refund_id: String,
}

/// One refund as refundquery describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundState {
    pub out_refund_no: String,
    pub refund_id: Option<String>,
    pub refund_fee: Fee,
    pub status: RefundStatus,
    pub success_time: Option<DateTime<Utc>>,
    /// The payment's transaction_id, as the reply names it.
    pub transaction_id: Option<String>,
}

/// closeorder's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    AlreadyClosed,
    AlreadyPaid,
    NotFound,
}
