//! The `wxpay.v1.PaymentService` gRPC adapter: each method takes the request
//! and the [`Access`] the bearer-token check gave it, calls [`Payments`] within
//! that caller's merchants, converts the result. Error codes come from `error.rs`.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wxpay_proto::v1::{self as pb, payment_service_server::PaymentService};

use wxpay_core::{
    convert::{app_params_to_pb, order_to_pb, params_to_pb, refund_to_pb, report_to_pb},
    domain::{OutRefundNo, OutTradeNo},
};
use wxpay_runtime::access::Access;

use crate::{
    error::ApiError,
    service::{CreateOrderInput, Payments, RefundInput},
};

/// What the caller may do, as the bearer-token check recorded it. A request
/// without it did not pass the check (a server assembled without it): it may
/// do nothing.
fn access<T>(request: &Request<T>) -> Result<Access, ApiError> {
    request
        .extensions()
        .get::<Access>()
        .cloned()
        .ok_or(ApiError::Unauthenticated)
}

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
        // Set by the bearer-token check: the key is scoped to this caller, and
        // the order's merchant to its merchants.
        let access = access(&request)?;
        let r = request.into_inner();
        let created = self
            .payments
            .create_order(
                &access.merchants,
                CreateOrderInput {
                    caller: Some(access.caller.clone()),
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
                },
            )
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
        let access = access(&request)?;
        let order = self
            .payments
            .get_order_within(
                &access.merchants,
                &out_trade_no(&request.into_inner().out_trade_no)?,
            )
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn query_order(
        &self,
        request: Request<pb::QueryOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let access = access(&request)?;
        let order = self
            .payments
            .query_order_within(
                &access.merchants,
                &out_trade_no(&request.into_inner().out_trade_no)?,
            )
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn close_order(
        &self,
        request: Request<pb::CloseOrderRequest>,
    ) -> Result<Response<pb::Order>, Status> {
        let access = access(&request)?;
        let order = self
            .payments
            .close_order(
                &access.merchants,
                &out_trade_no(&request.into_inner().out_trade_no)?,
            )
            .await?;
        Ok(Response::new(order_to_pb(&order)))
    }

    async fn refund_order(
        &self,
        request: Request<pb::RefundOrderRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let access = access(&request)?;
        let r = request.into_inner();
        let refund = self
            .payments
            .refund_order(
                &access.merchants,
                RefundInput {
                    out_trade_no: r.out_trade_no,
                    out_refund_no: r.out_refund_no,
                    refund_fee: r.refund_fee,
                    reason: r.reason,
                },
            )
            .await?;
        Ok(Response::new(refund_to_pb(&refund)))
    }

    async fn get_refund(
        &self,
        request: Request<pb::GetRefundRequest>,
    ) -> Result<Response<pb::Refund>, Status> {
        let access = access(&request)?;
        let no = OutRefundNo::parse(&request.into_inner().out_refund_no).map_err(ApiError::from)?;
        let refund = self
            .payments
            .get_refund_within(&access.merchants, &no)
            .await?;
        Ok(Response::new(refund_to_pb(&refund)))
    }

    async fn reconcile_bill(
        &self,
        request: Request<pb::ReconcileBillRequest>,
    ) -> Result<Response<pb::BillReport>, Status> {
        self.payments.may_reconcile(&access(&request)?.merchants)?;
        let r = request.into_inner();
        let report = self.payments.reconcile_bill(&r.bill_date, r.again).await?;
        Ok(Response::new(report_to_pb(&report)))
    }
}
