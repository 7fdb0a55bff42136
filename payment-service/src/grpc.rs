//! The `wxpay.v1.PaymentService` gRPC adapter: each method takes the request,
//! calls [`Payments`], converts the result. Error codes come from `error.rs`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wxpay_proto::v1::{self as pb, payment_service_server::PaymentService};

use crate::{
    domain::{Order, OrderStatus},
    service::{CreateOrderInput, Payments},
    wechat::pay_params::PaymentParams,
};

pub struct PaymentGrpc {
    payments: Arc<Payments>,
}

impl PaymentGrpc {
    pub fn new(payments: Arc<Payments>) -> Self {
        Self { payments }
    }
}

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
    }
}

fn params_to_pb(p: PaymentParams) -> pb::PaymentParams {
    pb::PaymentParams {
        app_id: p.app_id,
        time_stamp: p.time_stamp,
        nonce_str: p.nonce_str,
        package: p.package,
        sign_type: p.sign_type.as_str().to_owned(),
        pay_sign: p.pay_sign,
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        let r = request.into_inner();
        let created = self
            .payments
            .create_order(CreateOrderInput {
                idempotency_key: r.idempotency_key,
                openid: r.openid,
                description: r.description,
                total_fee: r.total_fee,
                attach: r.attach,
                client_ip: r.client_ip,
                expire_seconds: r.expire_seconds,
            })
            .await?;
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(order_to_pb(&created.order)),
            payment: created.payment.map(params_to_pb),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .get_order(&request.into_inner().out_trade_no)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn query_order(
        &self,
        request: Request<pb::QueryOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .query_order(&request.into_inner().out_trade_no)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn close_order(
        &self,
        request: Request<pb::CloseOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .close_order(&request.into_inner().out_trade_no)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }
}
