//! The demo's second half: the payer pays in the sandbox, the SUCCESS arrives
//! on the gRPC stream and on the mini program's WebSocket, the stored order
//! agrees, and WeChat saw its notification acknowledged at once.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use wxpay_proto::v1::{
    payment_service_client::PaymentServiceClient, GetOrderRequest, OrderStatus, OrderStatusEvent,
};

use super::{narration::*, socket::Socket};
use crate::Addresses;

/// The notification normally lands in milliseconds; this is generous so that a
/// slow machine is not mistaken for a broken product.
const STATUS_TIMEOUT: Duration = Duration::from_secs(20);

/// What the demo established.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub out_trade_no: String,
    /// As GetOrder reports it at the end.
    pub status: OrderStatus,
    pub transaction_id: String,
    /// From the pay call to the SUCCESS message on the WatchOrder stream.
    pub pay_to_stream: Duration,
    /// From the pay call to the SUCCESS message on the mini program's WebSocket.
    pub pay_to_websocket: Duration,
    /// The partial refund of the last steps.
    pub refunded: Option<super::Refunded>,
    /// The v3 merchant's order, paid beside the v2 one.
    pub v3: Option<super::V3Outcome>,
}

pub(super) async fn pay_and_confirm(
    out: &mut (dyn Write + Send),
    a: &Addresses,
    payments: &mut PaymentServiceClient<tonic::transport::Channel>,
    order: &wxpay_proto::v1::Order,
    stream: &mut tonic::Streaming<OrderStatusEvent>,
    socket: &mut Socket,
) -> anyhow::Result<Outcome> {
    // 5. The payer pays; the sandbox then notifies the gateway, as WeChat would.
    let http = reqwest::Client::new();
    let pay_url = format!(
        "{}/sandbox/orders/{}/pay",
        a.sandbox_url(),
        order.out_trade_no
    );
    let paid_at = Instant::now();
    let reply = http
        .post(&pay_url)
        .send()
        .await
        .context("step 5: cannot reach the sandbox's control API")?;
    if !reply.status().is_success() {
        let status = reply.status();
        let body = reply.text().await.unwrap_or_default();
        bail!("step 5: the sandbox refused the payment: HTTP {status} {body}");
    }
    step(
        out,
        5,
        "the payer pays (POST /sandbox/orders/…/pay); the sandbox sends the signed notification to the gateway",
        paid_at.elapsed(),
    )?;

    // 6. The status arrives on both watches, pushed, not polled; each is timed
    // on its own, both waited for at once.
    let grpc = async {
        loop {
            let event = next_event(stream, "step 6: waiting for SUCCESS").await?;
            if event.status == OrderStatus::Success as i32 {
                return Ok::<_, anyhow::Error>((event, paid_at.elapsed()));
            }
            if event.terminal {
                bail!(
                    "step 6: the stream ended at {} instead of SUCCESS",
                    status_name(event.status)
                );
            }
        }
    };
    let websocket = async {
        loop {
            let pushed = socket
                .next("step 6: waiting for SUCCESS on the WebSocket")
                .await?;
            if pushed.status == "SUCCESS" {
                return Ok::<_, anyhow::Error>((pushed, paid_at.elapsed()));
            }
        }
    };
    let both = async { tokio::try_join!(grpc, websocket) };
    let ((success, pay_to_stream), (pushed, pay_to_websocket)) =
        tokio::time::timeout(STATUS_TIMEOUT, both)
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "step 6: no SUCCESS on both watches within {} s of the payment",
                    STATUS_TIMEOUT.as_secs()
                )
            })??;
    step(
        out,
        6,
        &format!(
            "stream → {} (version {}, source {}, transaction_id {}), {} after the pay call",
            status_name(success.status),
            success.version,
            success.source,
            success.transaction_id,
            ms(pay_to_stream)
        ),
        pay_to_stream,
    )?;
    say(
        out,
        &format!(
            "      the mini program's WebSocket → {} (version {}), {} after the pay call",
            pushed.status,
            pushed.version,
            ms(pay_to_websocket)
        ),
    )?;

    // 7. The stored order agrees.
    let t = Instant::now();
    let stored = payments
        .get_order(GetOrderRequest {
            out_trade_no: order.out_trade_no.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("step 7: GetOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    if stored.status != OrderStatus::Success as i32 || stored.transaction_id.is_empty() {
        bail!(
            "step 7: GetOrder says {} with transaction_id {:?}",
            status_name(stored.status),
            stored.transaction_id
        );
    }
    step(
        out,
        7,
        &format!(
            "GetOrder → {}, transaction_id {}, version {}",
            status_name(stored.status),
            stored.transaction_id,
            stored.version
        ),
        t.elapsed(),
    )?;

    // 8. What WeChat (the sandbox) saw: the gateway acknowledged at once, so no retries.
    let t = Instant::now();
    let attempts = acknowledged_attempts(&http, &a.sandbox_url(), &order.out_trade_no).await;
    let line = match attempts.as_deref() {
        Some([first, ..]) => format!(
            "the sandbox's delivery log: attempt {} → HTTP {}, acknowledged; no retry needed",
            first.attempt,
            first.http_status.map_or("-".to_owned(), |s| s.to_string())
        ),
        _ => "the sandbox's delivery log shows no acknowledged attempt yet (it will retry)"
            .to_owned(),
    };
    step(out, 8, &line, t.elapsed())?;

    Ok(Outcome {
        out_trade_no: stored.out_trade_no,
        status: OrderStatus::Success,
        transaction_id: stored.transaction_id,
        pay_to_stream,
        pay_to_websocket,
        refunded: None,
        v3: None,
    })
}
