//! The demo's last part: the same flow for a WeChat Pay API v3 merchant
//! beside the v2 one (`v3-demo`, hosted by the stack's sandbox): CreateOrder
//! returns RSA-signed `wx.requestPayment` parameters, checked here with the
//! merchant's public key as WeChat's client would; the payer pays; the
//! sandbox sends a sealed, RSA-signed JSON notification to
//! `/wechat/v3/pay/notify`; the backend's WatchOrder stream shows SUCCESS.
//! Then the merchant gives the money back in two parts over v3
//! (`POST /v3/refund/domestic/refunds`, no client certificate), one fen more
//! is refused before WeChat is asked, and WeChat's sealed `REFUND.SUCCESS`
//! notifications at `/wechat/v3/refund/notify` show on a refund watch.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use wxpay_core::wechat::{v3::pay_params, MerchantEntry};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CreateOrderRequest, OrderStatus,
    RefundOrderRequest, RefundStatus, WatchOrderRequest,
};

use super::narration::*;
use crate::Addresses;

/// What the v3 part established.
#[derive(Debug, Clone)]
pub struct V3Outcome {
    pub out_trade_no: String,
    pub transaction_id: String,
    /// From the pay call to SUCCESS on the WatchOrder stream.
    pub pay_to_stream: Duration,
    /// The order's refunded total on the refund watch once both parts
    /// settled, fen.
    pub refunded_fee: i64,
    /// The status the refund watch ended with (REFUND when all came back).
    pub final_status: i32,
}

pub(super) async fn pay_v3_order(
    out: &mut (dyn Write + Send),
    a: &Addresses,
    entry: &MerchantEntry,
    fee: i64,
) -> anyhow::Result<V3Outcome> {
    let Some(v3) = &entry.v3 else {
        bail!("v3: the demo merchant {} is not a v3 merchant", entry.name);
    };
    say(
        out,
        &format!(
            "\nv3: the same for merchant {:?}, which speaks WeChat Pay API v3 (JSON, RSA, sealed notifications)",
            entry.name
        ),
    )?;
    let t = Instant::now();
    let mut payments = PaymentServiceClient::connect(a.payment_url())
        .await
        .context("v3: cannot connect to payment-service")?;
    let created = payments
        .create_order(CreateOrderRequest {
            idempotency_key: format!("demo-v3-{}", ulid::Ulid::new()),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "wxpay demo - 1 cup of tea (v3)".into(),
            total_fee: fee,
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
            merchant: entry.name.clone(),
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("v3: CreateOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let (Some(order), Some(p)) = (created.order, created.payment) else {
        bail!("v3: CreateOrder answered without the order or its payment parameters");
    };
    say(
        out,
        &format!(
            "      CreateOrder → {} ({}), signType {:?}, {}",
            order.out_trade_no,
            status_name(order.status),
            p.sign_type,
            ms(t.elapsed())
        ),
    )?;
    let message = pay_params::jsapi_message(&p.app_id, &p.time_stamp, &p.nonce_str, &p.package);
    if p.sign_type != pay_params::SIGN_TYPE
        || !v3
            .signer
            .public_key()
            .verifies(message.as_bytes(), &p.pay_sign)
    {
        bail!("v3: paySign does not verify with the merchant's public key");
    }
    say(
        out,
        "      paySign verifies (RSA-SHA256) over appId\\ntimeStamp\\nnonceStr\\npackage\\n with the merchant's public key",
    )?;
    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .context("v3: cannot connect to the poller")?;
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: order.out_trade_no.clone(),
            timeout_seconds: 60,
            include_refunds: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("v3: WatchOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    next_event(&mut stream, "v3: the stream's snapshot").await?;
    let paid_at = Instant::now();
    let reply = reqwest::Client::new()
        .post(format!(
            "{}/sandbox/orders/{}/pay",
            a.sandbox_url(),
            order.out_trade_no
        ))
        .send()
        .await
        .context("v3: cannot reach the sandbox's control API")?;
    if !reply.status().is_success() {
        bail!(
            "v3: the sandbox refused the payment: HTTP {}",
            reply.status()
        );
    }
    let success = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let event = next_event(&mut stream, "v3: waiting for SUCCESS").await?;
            if event.status == OrderStatus::Success as i32 {
                return Ok::<_, anyhow::Error>(event);
            }
            if event.terminal {
                bail!("v3: the stream ended at {}", status_name(event.status));
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("v3: no SUCCESS within 20 s of the payment"))??;
    let pay_to_stream = paid_at.elapsed();
    say(
        out,
        &format!(
            "      paid; the sandbox POSTed a sealed TRANSACTION.SUCCESS to /wechat/v3/pay/notify → stream {} (source {}, transaction_id {}), {} after the pay call",
            status_name(success.status),
            success.source,
            success.transaction_id,
            ms(pay_to_stream)
        ),
    )?;
    let (refunded_fee, final_status) =
        refund_in_two_parts(out, a, &mut payments, &order.out_trade_no, fee).await?;
    Ok(V3Outcome {
        out_trade_no: order.out_trade_no,
        transaction_id: success.transaction_id,
        pay_to_stream,
        refunded_fee,
        final_status,
    })
}

/// Gives all of `fee` back in two parts over v3 and shows each settle on a
/// refund watch; returns the refunded total and the status the stream ended at.
async fn refund_in_two_parts(
    out: &mut (dyn Write + Send),
    a: &Addresses,
    payments: &mut PaymentServiceClient<tonic::transport::Channel>,
    out_trade_no: &str,
    fee: i64,
) -> anyhow::Result<(i64, i32)> {
    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .context("v3 refund: cannot connect to the poller")?;
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            timeout_seconds: 60,
            include_refunds: true,
        })
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "v3 refund: WatchOrder failed: {:?} {}",
                s.code(),
                s.message()
            )
        })?
        .into_inner();
    next_event(&mut stream, "v3 refund: the refund watch's snapshot").await?;
    let first = fee * 6 / 10;
    let parts = [
        (format!("{out_trade_no}-R1"), first),
        (format!("{out_trade_no}-R2"), fee - first),
    ];
    for (out_refund_no, part) in &parts {
        let t = Instant::now();
        let refund = payments
            .refund_order(RefundOrderRequest {
                out_trade_no: out_trade_no.to_owned(),
                out_refund_no: out_refund_no.clone(),
                refund_fee: *part,
                reason: "demo: tea returned (v3)".into(),
            })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "v3 refund: RefundOrder failed: {:?} {}",
                    s.code(),
                    s.message()
                )
            })?
            .into_inner();
        if refund.status != RefundStatus::Processing as i32 || refund.refund_id.is_empty() {
            bail!("v3 refund: WeChat did not accept the refund: {refund:?}");
        }
        say(
            out,
            &format!(
                "      RefundOrder {part} fen → POST /v3/refund/domestic/refunds accepted (refund_id {}), PROCESSING, {}",
                refund.refund_id,
                ms(t.elapsed())
            ),
        )?;
    }
    // Nothing is left: one fen more is refused here, WeChat never asked.
    match payments
        .refund_order(RefundOrderRequest {
            out_trade_no: out_trade_no.to_owned(),
            out_refund_no: format!("{out_trade_no}-R3"),
            refund_fee: 1,
            reason: "demo: one fen too many".into(),
        })
        .await
    {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => say(
            out,
            &format!(
                "      RefundOrder 1 fen more → refused before WeChat is asked: {}",
                s.message()
            ),
        )?,
        other => bail!("v3 refund: an over-refund was not refused: {other:?}"),
    }
    let mut last = None;
    for (out_refund_no, _) in &parts {
        let t = Instant::now();
        let event =
            settle_and_see(&a.sandbox_url(), out_refund_no, &mut stream, "v3 refund").await?;
        say(
            out,
            &format!(
                "      WeChat moved the money; a sealed REFUND.SUCCESS at /wechat/v3/refund/notify → stream {} (refunded_fee {} fen), {}",
                status_name(event.status),
                event.refunded_fee,
                ms(t.elapsed())
            ),
        )?;
        last = Some(event);
    }
    let Some(last) = last else {
        bail!("v3 refund: no refund settled");
    };
    if last.refunded_fee != fee {
        bail!(
            "v3 refund: the stream says {} of {fee} fen refunded",
            last.refunded_fee
        );
    }
    Ok((last.refunded_fee, last.status))
}
