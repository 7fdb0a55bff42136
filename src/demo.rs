//! `cargo run -- demo`: the whole payment flow once, narrated for a person.
//!
//! It starts its own embedded stack (free ports, a temporary SQLite file, so it
//! never touches `./data` or a running `cargo run`), then acts as every outside
//! party in turn: the merchant's backend (CreateOrder and WatchOrder over gRPC,
//! like any client), the mini program (checks paySign), and the payer (the
//! sandbox's control API, after which the sandbox sends the signed notification
//! to the gateway). Each step is numbered and timed; the figure that matters is
//! how long the SUCCESS status took to reach the watcher after the payer paid.
//!
//! It talks to the services only through their public contracts, so a demo that
//! passes says the product works, not merely that the functions do.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use tokio_stream::StreamExt;
use wechat_sandbox::DeliveryAttempt;
use wxpay_core::wechat::{pay_params, SignType};
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient, CreateOrderRequest, GetOrderRequest, OrderStatus,
    OrderStatusEvent, WatchOrderRequest,
};

use crate::{
    settings::{bus_label, storage_label},
    Settings, Stack,
};

/// How long the demo waits for the status to arrive before calling it a failure.
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
}

/// Runs the demo on its own stack, writing the narration to `out`. Ok only when
/// the order ended SUCCESS; the error says which step failed and why.
pub async fn run(out: &mut (dyn Write + Send)) -> anyhow::Result<Outcome> {
    let db = temp_sqlite_path();
    let settings = Settings::ephemeral(db.clone());
    let t = Instant::now();
    let stack = Stack::start(settings)
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
            total_fee: 1,
            attach: "demo".into(),
            client_ip: "127.0.0.1".into(),
            expire_seconds: 1800,
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
    let params = pay_params::PaymentParams {
        app_id: payment.app_id.clone(),
        time_stamp: payment.time_stamp.clone(),
        nonce_str: payment.nonce_str.clone(),
        package: payment.package.clone(),
        sign_type,
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

    // 6. The status arrives on the stream, pushed, not polled.
    let success = tokio::time::timeout(STATUS_TIMEOUT, async {
        loop {
            let event = next_event(&mut stream, "step 6: waiting for SUCCESS").await?;
            if event.status == OrderStatus::Success as i32 {
                return Ok::<_, anyhow::Error>(event);
            }
            if event.terminal {
                bail!(
                    "step 6: the stream ended at {} instead of SUCCESS",
                    status_name(event.status)
                );
            }
        }
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "step 6: no SUCCESS on the stream within {} s of the payment",
            STATUS_TIMEOUT.as_secs()
        )
    })??;
    let pay_to_stream = paid_at.elapsed();
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

    say(
        out,
        &format!(
            "\nOK: order {} is SUCCESS; the watcher had it {} after the payer paid.",
            stored.out_trade_no,
            ms(pay_to_stream)
        ),
    )?;
    Ok(Outcome {
        out_trade_no: stored.out_trade_no,
        status: OrderStatus::Success,
        transaction_id: stored.transaction_id,
        pay_to_stream,
    })
}

async fn next_event(
    stream: &mut tonic::Streaming<OrderStatusEvent>,
    what: &str,
) -> anyhow::Result<OrderStatusEvent> {
    match stream.next().await {
        Some(Ok(event)) => Ok(event),
        Some(Err(s)) => bail!("{what}: the stream failed: {:?} {}", s.code(), s.message()),
        None => bail!("{what}: the stream ended"),
    }
}

/// The sandbox's acknowledged delivery attempts for the order. The gateway
/// replies before the sandbox records the attempt, so give it a moment.
async fn acknowledged_attempts(
    http: &reqwest::Client,
    sandbox: &str,
    out_trade_no: &str,
) -> Option<Vec<DeliveryAttempt>> {
    let url = format!("{sandbox}/sandbox/orders/{out_trade_no}/notifications");
    for _ in 0..20 {
        if let Ok(reply) = http.get(&url).send().await {
            if let Ok(body) = reply.text().await {
                if let Ok(log) = serde_json::from_str::<Vec<DeliveryAttempt>>(&body) {
                    let acked: Vec<_> = log.into_iter().filter(|a| a.acknowledged).collect();
                    if !acked.is_empty() {
                        return Some(acked);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn status_name(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(s) => s.as_str_name().trim_start_matches("ORDER_STATUS_"),
        Err(_) => "an unknown status",
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn step(out: &mut (dyn Write + Send), n: u32, what: &str, took: Duration) -> anyhow::Result<()> {
    say(out, &format!("[{n}] {what}  ({})", ms(took)))
}

fn say(out: &mut (dyn Write + Send), line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}").context("cannot write the demo's output")?;
    out.flush().context("cannot write the demo's output")
}

fn temp_sqlite_path() -> PathBuf {
    std::env::temp_dir().join(format!("wxpay-demo-{}.db", ulid::Ulid::new()))
}

/// Removes the database and its WAL companions; a leftover temp file is harmless.
fn remove_sqlite(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(path));
    }
}
