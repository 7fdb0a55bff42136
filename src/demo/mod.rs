//! `cargo run -- demo`: the whole payment flow once, narrated for a person.
//!
//! It starts its own embedded stack (free ports, a temporary SQLite file, so it
//! never touches `./data` or a running `cargo run`), then acts as every outside
//! party in turn: the merchant's backend (CreateOrder and WatchOrder over gRPC,
//! like any client), the mini program (checks paySign), and the payer (the
//! sandbox's control API, after which the sandbox sends the signed notification
//! to the gateway), and finally gives part of the money back (RefundOrder over the
//! sandbox's mutual TLS, seen on a refund watch). The order is watched twice,
//! as the two kinds of client would: by the backend over gRPC (WatchOrder) and by
//! the mini program itself over the poller's WebSocket with the order's watch
//! token. Each step is numbered and timed; the figures that matter are how long
//! the SUCCESS status took to reach each watcher after the payer paid.
//!
//! It talks to the services only through their public contracts, so a demo that
//! passes says the product works, not merely that the functions do.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use wxpay_core::wechat::{pay_params, SignType};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CreateOrderRequest, OrderStatus,
    WatchOrderRequest,
};

mod narration;
mod paying;
mod refunding;
mod socket;
mod v3;

use narration::*;
use paying::pay_and_confirm;
pub use paying::Outcome;
pub use refunding::Refunded;
pub use v3::V3Outcome;

use crate::{
    settings::{bus_label, storage_label},
    Settings, Stack,
};

/// The demo's order: one yuan, of which [`DEMO_REFUND`] is given back.
const DEMO_FEE: i64 = 100;
const DEMO_REFUND: i64 = 30;

/// How long the demo waits for the status to arrive before calling it a failure.
/// Runs the demo on its own stack, writing the narration to `out`. Ok only when
/// the order ended SUCCESS; the error says which step failed and why.
pub async fn run(out: &mut (dyn Write + Send)) -> anyhow::Result<Outcome> {
    let db = temp_sqlite_path();
    let settings = Settings::ephemeral(db.clone());
    let t = Instant::now();
    let parts = crate::stack::Parts {
        v3_demo: Some(crate::stack::V3Demo::issue().await?),
        ..Default::default()
    };
    let stack = Stack::start_with(settings, parts)
        .await
        .context("step 1: the embedded stack did not start")?;
    let result = walk(out, &stack, t.elapsed()).await;
    // Stop (and checkpoint) before the file goes, whatever the walk said.
    let stopped = stack.stop().await;
    remove_sqlite(&db);
    let outcome = result?;
    stopped.context("the stack did not stop cleanly")?;
    Ok(outcome)
}

async fn walk(
    out: &mut (dyn Write + Send),
    stack: &Stack,
    start_time: Duration,
) -> anyhow::Result<Outcome> {
    let a = *stack.addresses();
    let settings = stack.settings();
    say(
        out,
        "wxpay demo: one order, created, paid in the WeChat Pay sandbox, watched until SUCCESS\n",
    )?;
    step(
        out,
        1,
        "started payment-service, gateway, poller and the WeChat Pay sandbox in this process",
        start_time,
    )?;
    say(
        out,
        &format!(
            "      {}, {}\n      payment-service grpc://{}  poller grpc://{}  gateway http://{}  sandbox http://{}",
            storage_label(&settings.storage),
            bus_label(&settings.bus),
            a.payment,
            a.poller,
            a.gateway,
            a.sandbox
        ),
    )?;

    // 2. The merchant's backend places the order.
    let t = Instant::now();
    let mut payments = PaymentServiceClient::connect(a.payment_url())
        .await
        .context("step 2: cannot connect to payment-service")?;
    let created = payments
        .create_order(CreateOrderRequest {
            idempotency_key: format!("demo-{}", ulid::Ulid::new()),
            openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".into(),
            description: "wxpay demo - 1 cup of tea".into(),
            total_fee: DEMO_FEE,
            attach: "demo".into(),
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("step 2: CreateOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let (Some(order), Some(payment)) = (created.order, created.payment) else {
        bail!("step 2: CreateOrder answered without the order or its payment parameters");
    };
    step(
        out,
        2,
        &format!(
            "CreateOrder (1 fen) → out_trade_no {}, {}, prepay_id {}",
            order.out_trade_no,
            status_name(order.status),
            order.prepay_id
        ),
        t.elapsed(),
    )?;
    say(
        out,
        &format!(
            "      the mini program calls wx.requestPayment({{\n        \
             appId: {:?}, timeStamp: {:?}, nonceStr: {:?},\n        \
             package: {:?}, signType: {:?},\n        paySign: {:?} }})",
            payment.app_id,
            payment.time_stamp,
            payment.nonce_str,
            payment.package,
            payment.sign_type,
            payment.pay_sign
        ),
    )?;

    // 3. What WeChat's client checks before it shows the payment sheet.
    let t = Instant::now();
    let sign_type: SignType = payment
        .sign_type
        .parse()
        .map_err(|_| anyhow::anyhow!("step 3: unknown signType {:?}", payment.sign_type))?;
    // v2's check (MD5 / HMAC-SHA256 with the API key). A v3 merchant's order
    // says signType RSA and verifies with the merchant's public key instead
    // (core's v3::pay_params::jsapi_message); this walk uses the v2 default.
    let params = pay_params::PaymentParams {
        app_id: payment.app_id.clone(),
        time_stamp: payment.time_stamp.clone(),
        nonce_str: payment.nonce_str.clone(),
        package: payment.package.clone(),
        sign_type: sign_type.into(),
        pay_sign: payment.pay_sign.clone(),
    };
    if !pay_params::verify(&params, &settings.merchant.api_key) {
        bail!("step 3: paySign does not verify with the merchant's key");
    }
    step(
        out,
        3,
        &format!(
            "paySign verifies ({}) over appId, nonceStr, package, signType, timeStamp",
            sign_type.as_str()
        ),
        t.elapsed(),
    )?;

    // 4. The backend waits for the result on a stream instead of polling.
    let t = Instant::now();
    let mut watcher = OrderStatusServiceClient::connect(a.poller_url())
        .await
        .context("step 4: cannot connect to the poller")?;
    let mut stream = watcher
        .watch_order(WatchOrderRequest {
            out_trade_no: order.out_trade_no.clone(),
            timeout_seconds: 60,
            include_refunds: false,
        })
        .await
        .map_err(|s| anyhow::anyhow!("step 4: WatchOrder failed: {:?} {}", s.code(), s.message()))?
        .into_inner();
    let snapshot = next_event(
        &mut stream,
        "step 4: the stream's first message (the snapshot)",
    )
    .await?;
    if snapshot.status != OrderStatus::Notpay as i32 {
        bail!(
            "step 4: the snapshot says {}, expected NOTPAY",
            status_name(snapshot.status)
        );
    }
    step(
        out,
        4,
        &format!(
            "WatchOrder opened → snapshot {} (version {})",
            status_name(snapshot.status),
            snapshot.version
        ),
        t.elapsed(),
    )?;
    // The mini program watches too, with no API token: its order's watch token.
    let t = Instant::now();
    let ws_url = a.watch_ws_url(&order.out_trade_no, &created.watch_token);
    let mut socket = socket::Socket::open(&ws_url)
        .await
        .context("step 4: the mini program's WebSocket")?;
    let pushed = socket
        .next("step 4: the WebSocket's first message (the snapshot)")
        .await?;
    if pushed.status != "NOTPAY" {
        bail!(
            "step 4: the WebSocket's snapshot says {}, expected NOTPAY",
            pushed.status
        );
    }
    say(
        out,
        &format!(
            "      the mini program: wx.connectSocket {} → snapshot {} (version {}), {}",
            ws_url.split("?token=").next().unwrap_or_default(),
            pushed.status,
            pushed.version,
            ms(t.elapsed())
        ),
    )?;

    let mut outcome =
        pay_and_confirm(out, &a, &mut payments, &order, &mut stream, &mut socket).await?;
    let refunded =
        refunding::refund_part(out, &a, &mut payments, &outcome.out_trade_no, DEMO_REFUND).await?;
    say(
        out,
        &format!(
            "\nOK: order {} is SUCCESS; the watchers had it {} (gRPC) and {} (WebSocket) after the payer paid; {} of {} fen refunded and seen on the stream.",
            outcome.out_trade_no,
            ms(outcome.pay_to_stream),
            ms(outcome.pay_to_websocket),
            refunded.refunded_fee,
            DEMO_FEE
        ),
    )?;
    outcome.refunded = Some(refunded);
    if let Some(entry) = stack.v3_demo_entry() {
        outcome.v3 = Some(v3::pay_v3_order(out, &a, entry, DEMO_FEE).await?);
    }
    Ok(outcome)
}
