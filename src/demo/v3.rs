//! The demo's last part: the same flow for a WeChat Pay API v3 merchant
//! beside the v2 one (`v3-demo`, hosted by the stack's sandbox): CreateOrder
//! returns RSA-signed `wx.requestPayment` parameters, checked here with the
//! merchant's public key as WeChat's client would; the payer pays; the
//! sandbox sends a sealed, RSA-signed JSON notification to
//! `/wechat/v3/pay/notify`; the backend's WatchOrder stream shows SUCCESS.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use wxpay_core::wechat::{v3::pay_params, MerchantEntry};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CreateOrderRequest, OrderStatus,
    WatchOrderRequest,
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
    Ok(V3Outcome {
        out_trade_no: order.out_trade_no,
        transaction_id: success.transaction_id,
        pay_to_stream,
    })
}
