//! The dialect-neutral values of [`super::WechatApi`]: what its calls answer
//! ([`PlaceOutcome`], [`TradeState`], [`CloseOutcome`], [`RefundAccepted`],
//! [`RefundState`]), the transport options every implementation takes
//! ([`ClientOptions`]), and [`WechatError`]: WeChat's refusals, and our
//! distrust of a reply, as a type.

use std::time::Duration;

use chrono::{DateTime, Utc};
use wxpay_core::domain::{Fee, OrderStatus, RefundStatus, TransactionId};

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
    /// The request could not be made on our side (a body that does not
    /// serialize, a signature that could not be made): never sent.
    #[error("the request to WeChat Pay could not be made: {0}")]
    Request(String),
    /// A downloaded bill whose bytes are not the ones WeChat's signed answer
    /// described (v3: its SHA1 `hash_value`): not one row of it is read.
    #[error("WeChat Pay's bill did not match the hash WeChat gave for it: {0}")]
    BillHash(String),
}

/// Business codes WeChat documents as "call again with the same request":
/// v2's spellings and v3's (`SYSTEM_ERROR`, `BANK_ERROR`). FREQUENCY_LIMITED
/// is transient too, but asks for a pause, not a retry now.
pub(crate) const RETRY_CODES: [&str; 4] = [
    "SYSTEMERROR",
    "BIZERR_NEED_RETRY",
    "SYSTEM_ERROR",
    "BANK_ERROR",
];

impl WechatError {
    /// Worth sending the same request again.
    pub fn is_retryable(&self) -> bool {
        match self {
            WechatError::Transport(_) | WechatError::Timeout => true,
            WechatError::Business { code, .. } => RETRY_CODES.contains(&code.as_str()),
            WechatError::BadReply(_)
            | WechatError::Return(_)
            | WechatError::Request(_)
            | WechatError::BillHash(_) => false,
        }
    }

    /// WeChat's err_code (v3: its `code`), for business errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            WechatError::Business { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What placing an order gave: the prepay_id, and the URL the payer pays
/// through for NATIVE (`code_url`) and MWEB (`mweb_url`; v3's `h5_url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepaid {
    pub prepay_id: String,
    pub pay_url: Option<String>,
}

/// What placing an order came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaceOutcome {
    Placed(Prepaid),
    /// WeChat says the order is already paid (`ORDERPAID`, both dialects). Not proof of a
    /// payment on its own: only a query that shows one is. `said` is WeChat's
    /// own answer (code and description), for the caller's error message.
    AlreadyPaid {
        said: String,
    },
    /// WeChat says the order is closed (v2 `ORDERCLOSED`, v3 `ORDER_CLOSED`):
    /// it can no longer be paid.
    AlreadyClosed,
}

/// What WeChat holds about an order (v2 orderquery; v3 the query by out_trade_no).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TradeState {
    pub status: OrderStatus,
    /// The payment's id, once it was paid.
    pub transaction_id: Option<TransactionId>,
    /// The order's amount as WeChat holds it.
    pub total_fee: Option<Fee>,
    /// What the payer paid in cash, fen.
    pub cash_fee: Option<i64>,
    /// When the payment completed.
    pub paid_at: Option<DateTime<Utc>>,
}

/// WeChat's acceptance of a refund request: usually not yet its completion
/// (PROCESSING), but v3 answers the same `out_refund_no` again with where that
/// refund stands, which may be final already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundAccepted {
    pub refund_id: String,
    /// PROCESSING (v2 always); v3 also SUCCESS, CLOSED or CHANGE (`ABNORMAL`)
    /// for a refund WeChat already had.
    pub status: RefundStatus,
    /// When the money was back, for a refund answered as SUCCESS.
    pub success_time: Option<DateTime<Utc>>,
    /// The payment's transaction_id, as the answer names it (v3).
    pub transaction_id: Option<String>,
}

impl RefundAccepted {
    /// An acceptance that says no more than "WeChat took it" (v2's reply).
    pub fn processing(refund_id: String) -> Self {
        Self {
            refund_id,
            status: RefundStatus::Processing,
            success_time: None,
            transaction_id: None,
        }
    }
}

/// One refund as WeChat describes it (v2 refundquery; v3 the query by
/// `out_refund_no`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundState {
    pub out_refund_no: String,
    pub refund_id: Option<String>,
    pub refund_fee: Fee,
    pub status: RefundStatus,
    pub success_time: Option<DateTime<Utc>>,
    /// The payment's transaction_id, as the reply names it.
    pub transaction_id: Option<String>,
    /// The order's total as the reply states it (v3; v2's refundquery is not
    /// read for it), which the store checks against the order's.
    pub total_fee: Option<Fee>,
}

/// What closing an order came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseOutcome {
    Closed,
    AlreadyClosed,
    AlreadyPaid,
    /// WeChat never saw the order.
    NotFound,
}
