//! The demo's last act: the merchant gives part of the money back. A WatchOrder
//! with `include_refunds` stays open past SUCCESS; RefundOrder reaches the
//! sandbox's `/secapi/pay/refund` over mutual TLS (the certificate the sandbox
//! issued at start); WeChat's side settles it and sends its encrypted refund
//! notification to the gateway; the stream shows the refund and the new total.

use std::{io::Write, time::Instant};

use anyhow::{bail, Context};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, RefundOrderRequest, RefundStatus,
    WatchOrderRequest,
};

use super::narration::{ms, next_event, settle_and_see, status_name, step};
use crate::addresses::Addresses;

/// What the refund step showed.
#[derive(Debug, Clone)]
pub struct Refunded {
    pub out_refund_no: String,
    /// The order's refunded total on the stream, fen.
    pub refunded_fee: i64,
}

pub(super) async fn refund_part(
    out: &mut (dyn Write + Send),
    a: &Addresses,
    payments: &mut PaymentServiceClient<tonic::transport::Channel>,
    out_trade_no: &str,
    refund_fee: i64,
) -> anyhow::Result<Refunded> {
    // 9. The backend watches refunds too, and asks for part of the money back.
    let t = Instant::now();
    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .context("step 9: cannot connect to the poller")?;
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            timeout_seconds: 60,
            include_refunds: true,
        })
        .await
        .map_err(|s| anyhow::anyhow!("step 9: WatchOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    next_event(&mut stream, "step 9: the refund watch's snapshot").await?;
    let out_refund_no = format!("{out_trade_no}-R1");
    let refund = payments
        .refund_order(RefundOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            out_refund_no: out_refund_no.clone(),
            refund_fee,
            reason: "demo: one cup returned".into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("step 9: RefundOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    if refund.status != RefundStatus::Processing as i32 || refund.refund_id.is_empty() {
        bail!("step 9: WeChat did not accept the refund: {refund:?}");
    }
    step(
        out,
        9,
        &format!(
            "RefundOrder {refund_fee} fen over mutual TLS → accepted (refund_id {}), PROCESSING",
            refund.refund_id
        ),
        t.elapsed(),
    )?;

    // 10. WeChat moves the money and notifies the gateway; the stream shows it.
    let t = Instant::now();
    let event = settle_and_see(&a.sandbox_url(), &out_refund_no, &mut stream, "step 10").await?;
    if event.refunded_fee != refund_fee {
        bail!(
            "step 10: the stream says {} fen refunded",
            event.refunded_fee
        );
    }
    step(
        out,
        10,
        &format!(
            "stream → {} (source {}, refunded_fee {} fen), {} after WeChat settled it",
            status_name(event.status),
            event.source,
            event.refunded_fee,
            ms(t.elapsed())
        ),
        t.elapsed(),
    )?;
    Ok(Refunded {
        out_refund_no,
        refunded_fee: event.refunded_fee,
    })
}
