//! The one mapping between the domain and the `wxpay.v1` wire messages, used by
//! PaymentService and the poller alike. Exhaustive matches: a new status will
//! not compile until someone decides what it is on the wire.

use wxpay_proto::v1 as pb;

use crate::{
    domain::{BillReport, Order, OrderEvent, OrderStatus, Refund, RefundStatus},
    wechat::{
        pay_params::{AppPaymentParams, PaymentParams},
        TradeType,
    },
};

pub fn status_to_pb(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::NotPay => pb::OrderStatus::Notpay,
        OrderStatus::UserPaying => pb::OrderStatus::Userpaying,
        OrderStatus::Success => pb::OrderStatus::Success,
        OrderStatus::Closed => pb::OrderStatus::Closed,
        OrderStatus::PayError => pb::OrderStatus::Payerror,
        OrderStatus::Refund => pb::OrderStatus::Refund,
        OrderStatus::Revoked => pb::OrderStatus::Revoked,
    }
}

/// `None` for UNSPECIFIED or a number this build does not know.
pub fn status_from_pb(n: i32) -> Option<OrderStatus> {
    match pb::OrderStatus::try_from(n).ok()? {
        pb::OrderStatus::Unspecified => None,
        pb::OrderStatus::Notpay => Some(OrderStatus::NotPay),
        pb::OrderStatus::Userpaying => Some(OrderStatus::UserPaying),
        pb::OrderStatus::Success => Some(OrderStatus::Success),
        pb::OrderStatus::Closed => Some(OrderStatus::Closed),
        pb::OrderStatus::Payerror => Some(OrderStatus::PayError),
        pb::OrderStatus::Refund => Some(OrderStatus::Refund),
        pb::OrderStatus::Revoked => Some(OrderStatus::Revoked),
    }
}

pub fn order_to_pb(o: &Order) -> pb::Order {
    pb::Order {
        out_trade_no: o.out_trade_no.to_string(),
        status: status_to_pb(o.status) as i32,
        total_fee: o.total_fee.fen(),
        description: o.description.to_string(),
        openid: o.openid.to_string(),
        prepay_id: o.prepay_id.clone().unwrap_or_default(),
        transaction_id: o.transaction_id.clone().unwrap_or_default(),
        version: o.version,
        idempotency_key: o.idempotency_key.to_string(),
        attach: o.attach.to_string(),
        created_at: o.created_at.timestamp_millis(),
        paid_at: o.paid_at.map(|t| t.timestamp_millis()).unwrap_or(0),
        expires_at: o.expires_at.map(|t| t.timestamp_millis()).unwrap_or(0),
        refunded_fee: o.refunded_fee,
        merchant: o.placement.merchant.to_string(),
        trade_type: trade_type_to_pb(o.placement.trade_type) as i32,
    }
}

pub fn trade_type_to_pb(t: TradeType) -> pb::TradeType {
    match t {
        TradeType::Jsapi => pb::TradeType::Jsapi,
        TradeType::Native => pb::TradeType::Native,
        TradeType::App => pb::TradeType::App,
        TradeType::Mweb => pb::TradeType::Mweb,
    }
}

/// UNSPECIFIED is JSAPI (what every order was before the field existed);
/// `None` for a number this build does not know.
pub fn trade_type_from_pb(n: i32) -> Option<TradeType> {
    match pb::TradeType::try_from(n).ok()? {
        pb::TradeType::Unspecified | pb::TradeType::Jsapi => Some(TradeType::Jsapi),
        pb::TradeType::Native => Some(TradeType::Native),
        pb::TradeType::App => Some(TradeType::App),
        pb::TradeType::Mweb => Some(TradeType::Mweb),
    }
}

pub fn refund_status_to_pb(s: RefundStatus) -> pb::RefundStatus {
    match s {
        RefundStatus::Processing => pb::RefundStatus::Processing,
        RefundStatus::Success => pb::RefundStatus::Success,
        RefundStatus::Change => pb::RefundStatus::Change,
        RefundStatus::Closed => pb::RefundStatus::Closed,
    }
}

pub fn refund_to_pb(r: &Refund) -> pb::Refund {
    pb::Refund {
        out_refund_no: r.out_refund_no.to_string(),
        out_trade_no: r.out_trade_no.to_string(),
        refund_id: r.refund_id.clone().unwrap_or_default(),
        refund_fee: r.refund_fee.fen(),
        status: refund_status_to_pb(r.status) as i32,
        reason: r.reason.to_string(),
        created_at: r.created_at.timestamp_millis(),
        succeeded_at: r.succeeded_at.map(|t| t.timestamp_millis()).unwrap_or(0),
    }
}

pub fn params_to_pb(p: PaymentParams) -> pb::PaymentParams {
    pb::PaymentParams {
        app_id: p.app_id,
        time_stamp: p.time_stamp,
        nonce_str: p.nonce_str,
        package: p.package,
        sign_type: p.sign_type.as_str().to_owned(),
        pay_sign: p.pay_sign,
    }
}

pub fn app_params_to_pb(p: AppPaymentParams) -> pb::AppPaymentParams {
    pb::AppPaymentParams {
        appid: p.appid,
        partnerid: p.partnerid,
        prepayid: p.prepayid,
        package: p.package,
        noncestr: p.noncestr,
        timestamp: p.timestamp,
        sign: p.sign,
    }
}

pub fn report_to_pb(r: &BillReport) -> pb::BillReport {
    pb::BillReport {
        bill_date: r.bill_date.format("%Y%m%d").to_string(),
        wechat_rows: i64::try_from(r.wechat_rows).unwrap_or(i64::MAX),
        matched: i64::try_from(r.matched).unwrap_or(i64::MAX),
        repaired: i64::try_from(r.repaired).unwrap_or(i64::MAX),
        discrepancies: r
            .discrepancies
            .iter()
            .map(|d| pb::Discrepancy {
                out_trade_no: d.out_trade_no.clone(),
                out_refund_no: d.out_refund_no.clone(),
                kind: d.kind.as_str().to_owned(),
                detail: d.detail.clone(),
            })
            .collect(),
        reconciled_at: r.reconciled_at.timestamp_millis(),
    }
}

/// The stream item for `event`; `terminal` marks the last message of a stream.
pub fn event_to_pb(event: &OrderEvent, terminal: bool) -> pb::OrderStatusEvent {
    pb::OrderStatusEvent {
        out_trade_no: event.out_trade_no.to_string(),
        status: status_to_pb(event.status) as i32,
        version: event.version,
        transaction_id: event.transaction_id.clone().unwrap_or_default(),
        total_fee: event.total_fee.fen(),
        occurred_at: event.occurred_at,
        source: event.source.as_str().to_owned(),
        terminal,
        refunded_fee: event.refunded_fee,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_the_wire() {
        for s in OrderStatus::ALL {
            assert_eq!(status_from_pb(status_to_pb(s) as i32), Some(s));
        }
        assert_eq!(status_from_pb(0), None);
        assert_eq!(status_from_pb(99), None);
    }

    #[test]
    fn every_trade_type_round_trips_and_unset_is_jsapi() {
        for t in TradeType::ALL {
            assert_eq!(trade_type_from_pb(trade_type_to_pb(t) as i32), Some(t));
        }
        assert_eq!(trade_type_from_pb(0), Some(TradeType::Jsapi));
        assert_eq!(trade_type_from_pb(99), None);
    }
}
