//! The order as stored, a new order as validated, and the event a status change
//! produces (the outbox row, the Redis message, the stream item).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Attach, Caller, ClientIp, Description, Fee, IdempotencyKey, MerchantName, OpenId, OrderStatus,
    OutTradeNo, ProductId, SceneInfo,
};
use crate::wechat::{SignType, TradeType};

/// Where and how an order is placed: the merchant account whose credentials
/// place it, the trade type, and what that trade type needs. Fixed at creation:
/// every later call about the order (orderquery, closeorder, refund, the bill)
/// goes to the same merchant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub merchant: MerchantName,
    pub trade_type: TradeType,
    /// Service-provider mode: the payer's openid under the sub merchant's
    /// `sub_app_id`; empty otherwise.
    pub sub_openid: OpenId,
    /// NATIVE: the product the QR code is for.
    pub product_id: Option<ProductId>,
    /// MWEB: the H5 scene WeChat asks for.
    pub scene_info: Option<SceneInfo>,
}

impl Default for Placement {
    /// A JSAPI order with the default merchant: what every order was before
    /// merchants and trade types could be chosen.
    fn default() -> Self {
        Self {
            merchant: MerchantName::default_merchant(),
            trade_type: TradeType::Jsapi,
            sub_openid: OpenId::empty(),
            product_id: None,
            scene_info: None,
        }
    }
}

/// A validated order about to be stored (status NOTPAY, version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub out_trade_no: OutTradeNo,
    /// Whose idempotency key this is: the key is unique per caller.
    pub caller: Caller,
    pub idempotency_key: IdempotencyKey,
    pub openid: OpenId,
    pub description: Description,
    pub total_fee: Fee,
    pub attach: Attach,
    pub client_ip: ClientIp,
    pub sign_type: SignType,
    /// When WeChat stops accepting payment; `None` leaves WeChat's default (2 h).
    /// Fixed at creation so that every retry of unifiedorder sends the same `time_expire`.
    pub expires_at: Option<DateTime<Utc>>,
    pub placement: Placement,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub out_trade_no: OutTradeNo,
    pub idempotency_key: IdempotencyKey,
    pub status: OrderStatus,
    pub version: i64,
    pub openid: OpenId,
    pub description: Description,
    pub total_fee: Fee,
    pub attach: Attach,
    pub client_ip: ClientIp,
    pub sign_type: SignType,
    pub expires_at: Option<DateTime<Utc>>,
    pub prepay_id: Option<String>,
    pub prepay_expires_at: Option<DateTime<Utc>>,
    pub transaction_id: Option<String>,
    pub cash_fee: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    /// Fen given back so far: the sum of this order's SUCCESS refunds (0 when none).
    pub refunded_fee: i64,
    pub placement: Placement,
    /// What NATIVE (`code_url`) and MWEB (`mweb_url`) orders are paid through,
    /// kept with the prepay_id and reused as long as it is.
    pub pay_url: Option<String>,
}

/// What caused a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventSource {
    /// A WeChat payment notification at the gateway.
    Notify,
    /// A cloud-development (cloudPay) callback at the gateway.
    Cloudpay,
    /// An active `orderquery` (QueryOrder, or the poller's fallback).
    Query,
    /// CloseOrder.
    Close,
    /// A refund that succeeded (notification, refundquery or the reply).
    Refund,
    /// A refund that WeChat could not return to the payer's account (CHANGE).
    RefundChange,
    /// A refund that will not happen (refused, or closed by WeChat).
    RefundClosed,
    /// The state read from the database when a watch starts (never stored).
    Snapshot,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Notify => "NOTIFY",
            EventSource::Cloudpay => "CLOUDPAY",
            EventSource::Query => "QUERY",
            EventSource::Close => "CLOSE",
            EventSource::Refund => "REFUND",
            EventSource::RefundChange => "REFUND_CHANGE",
            EventSource::RefundClosed => "REFUND_CLOSED",
            EventSource::Snapshot => "SNAPSHOT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            EventSource::Notify,
            EventSource::Cloudpay,
            EventSource::Query,
            EventSource::Close,
            EventSource::Refund,
            EventSource::RefundChange,
            EventSource::RefundClosed,
            EventSource::Snapshot,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// One status change, as written to the outbox in the transaction that made it,
/// and as published on the order's channel. `version` orders events of one order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// Outbox row id; 0 for an event that was never stored (a snapshot).
    #[serde(default)]
    pub id: i64,
    pub out_trade_no: OutTradeNo,
    pub status: OrderStatus,
    pub version: i64,
    #[serde(default)]
    pub transaction_id: Option<String>,
    pub total_fee: Fee,
    /// Unix milliseconds.
    pub occurred_at: i64,
    pub source: EventSource,
    /// The order's refunded total in fen after this change (0 until a refund succeeds).
    #[serde(default)]
    pub refunded_fee: i64,
}

impl OrderEvent {
    /// The event that describes an order's current state, for a watcher's first message.
    pub fn snapshot(order: &Order) -> Self {
        Self {
            id: 0,
            out_trade_no: order.out_trade_no.clone(),
            status: order.status,
            version: order.version,
            transaction_id: order.transaction_id.clone(),
            total_fee: order.total_fee,
            occurred_at: order.updated_at.timestamp_millis(),
            source: EventSource::Snapshot,
            refunded_fee: order.refunded_fee,
        }
    }
}
