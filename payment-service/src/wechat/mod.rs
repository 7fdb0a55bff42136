//! How payment-service talks to WeChat Pay: one interface, [`WechatApi`], per
//! configured merchant, whose arguments and answers are the domain's typed
//! values (the stored [`Order`], [`OutRefundNo`], [`Fee`], [`OrderStatus`],
//! times), never a dialect's wire fields. The order use cases (`service`), the
//! reconciler and the bill run speak only this; each dialect is one
//! implementation behind it, chosen by the merchant an order was placed with:
//! [`v2`] (XML, MD5 / HMAC-SHA256) or [`v3`] (JSON, RSA, answers verified
//! with WeChat's keys). What is one dialect's alone (v2's sign type, its raw
//! reply fields, each dialect's codes for "already paid" and "never seen")
//! stays inside that implementation and reaches the service as a typed
//! outcome ([`PlaceOutcome`], [`CloseOutcome`], `None`).
//!
//! The transport settings both dialects share ([`ClientOptions`], the client
//! certificate and extra CAs of [`tls`]), the reading of the bill file both
//! download (`bill_file`) and WeChat's refusals as a type ([`WechatError`])
//! live here too.

use async_trait::async_trait;
use chrono::NaiveDate;
use wxpay_core::{
    domain::{Order, OutRefundNo, Refund},
    wechat::{
        bill::Bill,
        pay_params::{AppPaymentParams, PaymentParams},
        MerchantEntry,
    },
};

mod bill_file;
mod tls;
mod types;
pub mod v2;
pub mod v3;

pub use tls::{ClientTls, TlsError, TlsInput};
pub(crate) use types::RETRY_CODES;
pub use types::{
    ClientOptions, CloseOutcome, PlaceOutcome, Prepaid, RefundAccepted, RefundState, TradeState,
    WechatError,
};
pub use v2::{OrderQuery, RefundRequest, UnifiedOrder, V2Client};
pub use v3::V3Api;

/// One merchant's WeChat Pay API, in the dialect that merchant speaks. Every
/// call is about an order this service stored: the implementation takes from
/// [`Order`] what its dialect needs (its number, amount, trade type, payer,
/// expiry; v2 also the sign type the order was placed with, which every later
/// request about it keeps). Calls are safe to repeat: the same order or refund
/// number is the same thing at WeChat, so a retry never places or refunds twice.
#[async_trait]
pub trait WechatApi: Send + Sync {
    /// The configured merchant this client acts for: its name, its accounts
    /// and, in service-provider mode, the sub merchant.
    fn entry(&self) -> &MerchantEntry;

    /// Why this merchant cannot send refunds (in words for the caller, naming
    /// what to configure), or `None` when it can.
    fn refund_blocker(&self) -> Option<String>;

    /// Places `order` with WeChat (unifiedorder; v3 `POST /v3/pay/transactions/…`).
    async fn place(&self, order: &Order) -> Result<PlaceOutcome, WechatError>;

    /// What WeChat holds about `order` now; `None` when WeChat never saw it.
    async fn query(&self, order: &Order) -> Result<Option<TradeState>, WechatError>;

    /// Closes `order` at WeChat, or says why it needs no close.
    async fn close(&self, order: &Order) -> Result<CloseOutcome, WechatError>;

    /// Asks WeChat to give `refund` (a refund of `order`, stored PROCESSING)
    /// back. Its acceptance, usually not yet its completion (v3 answers the
    /// same refund number again with where that refund stands).
    async fn refund(&self, order: &Order, refund: &Refund) -> Result<RefundAccepted, WechatError>;

    /// The state of refund `out_refund_no` of `order` at WeChat; `None` when
    /// WeChat has no such refund (the request never reached it).
    async fn refund_query(
        &self,
        order: &Order,
        out_refund_no: &OutRefundNo,
    ) -> Result<Option<RefundState>, WechatError>;

    /// The merchant's bill of every trade on `day` (Beijing time); `None`
    /// when WeChat has no trade that day.
    async fn bill(&self, day: NaiveDate) -> Result<Option<Bill>, WechatError>;

    /// `wx.requestPayment`'s object for a JSAPI `order` placed as
    /// `prepay_id`, signed now (a fresh timestamp and nonce).
    fn jsapi_params(&self, order: &Order, prepay_id: &str) -> Result<PaymentParams, WechatError>;

    /// The OpenSDK's PayReq for an APP `order` placed as `prepay_id`, signed now.
    fn app_params(&self, order: &Order, prepay_id: &str) -> Result<AppPaymentParams, WechatError>;
}
