//! The `wxpay.v1.PaymentService` gRPC adapter: each method takes the request,
//! calls [`Payments`], converts the result. Error codes come from `error.rs`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wxpay_proto::v1::{self as pb, payment_service_server::PaymentService};

use wxpay_core::{
    convert::{app_params_to_pb, order_to_pb, params_to_pb, refund_to_pb, report_to_pb},
    domain::{Caller, OutRefundNo, OutTradeNo},
};

use crate::{
    error::ApiError,
    service::{CreateOrderInput, Payments, RefundInput},
};

/// The one parse of an order number arriving over gRPC.
fn out_trade_no(s: &str) -> Result<OutTradeNo, ApiError> {
    Ok(OutTradeNo::parse(s)?)
}

pub struct PaymentGrpc {
    payments: Arc<Payments>,
}

impl PaymentGrpc {
    pub fn new(payments: Arc<Payments>) -> Self {
        Self { payments }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn create_order(
        &self,
        request: Request<pb::CreateOrderRequest>,
    ) -> Result<Response<pb::CreateOrderResponse>, Status> {
        // Set by the bearer-token check: the key is scoped to this caller.
        let caller = request.extensions().get::<Caller>().cloned();
        let r = request.into_inner();
        let created = self
            .payments
            .create_order(CreateOrderInput {
                caller,
                idempotency_key: r.idempotency_key,
                openid: r.openid,
                description: r.description,
                total_fee: r.total_fee,
                attach: r.attach,
                client_ip: r.client_ip,
                expire_seconds: r.expire_seconds,
                merchant: r.merchant,
                trade_type: r.trade_type,
                product_id: r.product_id,
                scene_info: r.scene_info,
                sub_openid: r.sub_openid,
            })
            .await?;
        Ok(Response::new(pb::CreateOrderResponse {
            watch_token: self
                .payments
                .watch_token(&created.order)
                .unwrap_or_default(),
            order: Some(order_to_pb(&created.order)),
            payment: created.payment.map(params_to_pb),
            app_payment: created.app_payment.map(app_params_to_pb),
            code_url: created.code_url.unwrap_or_default(),
            mweb_url: created.mweb_url.unwrap_or_default(),
        }))
    }

    async fn get_order(
        &self,
        request: Request<pb::GetOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .get_order(&out_trade_no(&request.into_inner().out_trade_no)?)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn query_order(
        &self,
        request: Request<pb::QueryOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .query_order(&out_trade_no(&request.into_inner().out_trade_no)?)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn close_order(
        &self,
        request: Request<pb::CloseOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let order = self
            .payments
            .close_order(&out_trade_no(&request.into_inner().out_trade_no)?)
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let r = request.into_inner();
        let refund = self
            .payments
            .refund_order(RefundInput {
                out_trade_no: r.out_trade_no,
                out_refund_no: r.out_refund_no,
                refund_fee: r.refund_fee,
                reason: r.reason,
            })
            .await?;
        Ok(Response::new(refund_to_pb(&refund)))
    }

    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let no = OutRefundNo::parse(&request.into_inner().out_refund_no).map_err(ApiError::from)?;
        let refund = self.payments.get_refund(&no).await?;
        Ok(Response::new(refund_to_pb(&refund)))
    }

    async fn reconcile_bill(
        &self,
        request: Request<pb::ReconcileBillRequest>,
    ) -> Result<Response<pb::BillReport>, Status> {
        let r = request.into_inner();
        let report = self.payments.reconcile_bill(&r.bill_date, r.again).await?;
        Ok(Response::new(report_to_pb(&report)))
    }
}
