//! Order, outbox and refund rows as raw column values, and their one conversion into
//! domain values. Each backend reads its own column types; the validation that
//! turns them into domain types (and reports a corrupt row) lives only here.

use chrono::{DateTime, Utc};

use crate::StoreError;
use wxpay_core::domain::{
    Attach, ClientIp, Description, EventSource, Fee, IdempotencyKey, MerchantName, OpenId, Order,
    OrderEvent, OutRefundNo, OutTradeNo, Placement, ProductId, Refund, RefundReason, SceneInfo,
};

pub(crate) struct OrderColumns {
    pub out_trade_no: String,
    pub idempotency_key: String,
    pub status: String,
    pub version: i64,
    pub openid: String,
    pub description: String,
    pub total_fee: i64,
    pub attach: String,
    pub client_ip: String,
    pub sign_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub prepay_id: Option<String>,
    pub prepay_expires_at: Option<DateTime<Utc>>,
    pub transaction_id: Option<String>,
    pub cash_fee: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub refunded_fee: i64,
    pub merchant: String,
    pub trade_type: String,
    pub sub_openid: String,
    pub product_id: Option<String>,
    pub scene_info: Option<String>,
    pub pay_url: Option<String>,
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl OrderColumns {
    /// Re-validates every stored value: a row that would not pass the edge's
    /// parsers is reported as corrupt rather than trusted.
    pub(crate) fn into_order(self) -> Result<Order, StoreError> {
        Ok(Order {
            out_trade_no: OutTradeNo::parse(&self.out_trade_no).map_err(corrupt)?,
            idempotency_key: IdempotencyKey::parse(&self.idempotency_key).map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            version: self.version,
            openid: OpenId::parse_optional(&self.openid).map_err(corrupt)?,
            description: Description::parse(&self.description).map_err(corrupt)?,
            total_fee: Fee::new(self.total_fee).map_err(corrupt)?,
            attach: Attach::parse(&self.attach).map_err(corrupt)?,
            client_ip: ClientIp::parse(&self.client_ip).map_err(corrupt)?,
            sign_type: self.sign_type.parse().map_err(corrupt)?,
            expires_at: self.expires_at,
            prepay_id: self.prepay_id,
            prepay_expires_at: self.prepay_expires_at,
            transaction_id: self.transaction_id,
            cash_fee: self.cash_fee,
            created_at: self.created_at,
            updated_at: self.updated_at,
            paid_at: self.paid_at,
            refunded_fee: refunded_fee(self.refunded_fee)?,
            placement: Placement {
                merchant: MerchantName::parse(&self.merchant).map_err(corrupt)?,
                trade_type: self.trade_type.parse().map_err(corrupt)?,
                sub_openid: OpenId::parse_field_optional("sub_openid", &self.sub_openid)
                    .map_err(corrupt)?,
                product_id: self
                    .product_id
                    .as_deref()
                    .map(ProductId::parse)
                    .transpose()
                    .map_err(corrupt)?,
                scene_info: self
                    .scene_info
                    .as_deref()
                    .map(SceneInfo::parse)
                    .transpose()
                    .map_err(corrupt)?,
            },
            pay_url: self.pay_url,
        })
    }
}

/// An `order_events` row as raw column values.
pub(crate) struct EventColumns {
    pub id: i64,
    pub out_trade_no: String,
    pub status: String,
    pub version: i64,
    pub transaction_id: Option<String>,
    pub total_fee: i64,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub refunded_fee: i64,
}

impl EventColumns {
    pub(crate) fn into_event(self) -> Result<OrderEvent, StoreError> {
        Ok(OrderEvent {
            id: self.id,
            out_trade_no: OutTradeNo::parse(&self.out_trade_no).map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            version: self.version,
            transaction_id: self.transaction_id,
            total_fee: Fee::new(self.total_fee).map_err(corrupt)?,
            occurred_at: self.occurred_at.timestamp_millis(),
            source: EventSource::parse(&self.source)
                .ok_or_else(|| corrupt(format!("event source {:?}", self.source)))?,
            refunded_fee: refunded_fee(self.refunded_fee)?,
        })
    }
}

/// The outbox event a transition wrote, from the order as it stands after it.
pub(crate) fn applied_event(
    order: &Order,
    id: i64,
    occurred_at: DateTime<Utc>,
    source: EventSource,
) -> OrderEvent {
    OrderEvent {
        id,
        out_trade_no: order.out_trade_no.clone(),
        status: order.status,
        version: order.version,
        transaction_id: order.transaction_id.clone(),
        total_fee: order.total_fee,
        occurred_at: occurred_at.timestamp_millis(),
        source,
        refunded_fee: order.refunded_fee,
    }
}

/// A refunded total is never negative (the schema's CHECK says so too).
fn refunded_fee(fen: i64) -> Result<i64, StoreError> {
    if fen < 0 {
        return Err(corrupt(format!("refunded_fee {fen}")));
    }
    Ok(fen)
}

/// A `refunds` row as raw column values.
pub(crate) struct RefundColumns {
    pub out_refund_no: String,
    pub out_trade_no: String,
    pub refund_id: Option<String>,
    pub refund_fee: i64,
    pub status: String,
    pub reason: String,
    pub failure: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
}

impl RefundColumns {
    pub(crate) fn into_refund(self) -> Result<Refund, StoreError> {
        Ok(Refund {
            out_refund_no: OutRefundNo::parse(&self.out_refund_no).map_err(corrupt)?,
            out_trade_no: OutTradeNo::parse(&self.out_trade_no).map_err(corrupt)?,
            refund_id: self.refund_id,
            refund_fee: Fee::for_field("refund_fee", self.refund_fee).map_err(corrupt)?,
            status: self.status.parse().map_err(corrupt)?,
            reason: RefundReason::parse(&self.reason).map_err(corrupt)?,
            failure: self.failure,
            created_at: self.created_at,
            updated_at: self.updated_at,
            succeeded_at: self.succeeded_at,
        })
    }
}

/// Refuses to keep under `mch_id` a platform certificate that names another
/// merchant: one merchant's download never becomes another's keys.
pub(crate) fn same_merchant(
    mch_id: &str,
    certs: &[crate::PlatformCertificate],
) -> Result<(), StoreError> {
    match certs.iter().find(|c| c.mch_id != mch_id) {
        Some(c) => Err(StoreError::Conflict(format!(
            "platform certificate {} is for merchant {}, not {mch_id}",
            c.serial_no, c.mch_id
        ))),
        None => Ok(()),
    }
}

/// A stored bill report (`bill_reports.report`, the domain's BillReport as
/// JSON): the one decoding both backends and both of its readers use.
pub(crate) fn bill_report_from_json(
    json: &str,
) -> Result<wxpay_core::domain::BillReport, StoreError> {
    serde_json::from_str(json).map_err(corrupt)
}

/// A reconciled day summed up for the console's list of days.
pub(crate) fn bill_summary(report: &wxpay_core::domain::BillReport) -> crate::console::BillSummary {
    crate::console::BillSummary {
        bill_date: report.bill_date,
        wechat_rows: report.wechat_rows,
        matched: report.matched,
        repaired: report.repaired,
        discrepancies: report.discrepancies.len() as u64,
        reconciled_at: report.reconciled_at,
    }
}
