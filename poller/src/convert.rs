//! Conversions between the domain's order events and statuses and the `wxpay.v1`
//! wire types. Exhaustive matches: a new status will not compile until mapped.

use payment_service::domain::{OrderEvent, OrderStatus};
use wxpay_proto::v1 as pb;

// One mapping for the whole workspace, next to PaymentService's own conversions.
pub use payment_service::grpc::{
    status_from_pb as status_from_proto, status_to_pb as status_to_proto,
};

/// The stream item for `event`; `terminal` marks the last message of a stream.
pub fn event_to_proto(
    event: &OrderEvent,
    status: OrderStatus,
    terminal: bool,
) -> pb::OrderStatusEvent {
    pb::OrderStatusEvent {
        out_trade_no: event.out_trade_no.clone(),
        status: status_to_proto(status) as i32,
        version: event.version,
        transaction_id: event.transaction_id.clone().unwrap_or_default(),
        total_fee: event.total_fee,
        occurred_at: event.occurred_at,
        source: event.source.as_str().to_owned(),
        terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_the_wire() {
        for s in OrderStatus::ALL {
            assert_eq!(status_from_proto(status_to_proto(s) as i32), Some(s));
        }
        assert_eq!(status_from_proto(0), None);
        assert_eq!(status_from_proto(99), None);
    }
}
