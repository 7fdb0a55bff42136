//! The demo's narration and small waits: numbered steps with their timings,
//! the next stream message, the sandbox's delivery log, and the private SQLite
//! file's life.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use tokio_stream::StreamExt;
use wechat_sandbox::DeliveryAttempt;
use wxpay_proto::v1::{OrderStatus, OrderStatusEvent};

/// WeChat settles refund `out_refund_no` SUCCESS (the sandbox's control
/// API), which notifies the gateway; returns the refund's event on `stream`
/// (within 20 s). `what` names the step in errors.
pub(super) async fn settle_and_see(
    sandbox_url: &str,
    out_refund_no: &str,
    stream: &mut tonic::Streaming<OrderStatusEvent>,
    what: &str,
) -> anyhow::Result<OrderStatusEvent> {
    let settled = reqwest::Client::new()
        .post(format!(
            "{sandbox_url}/sandbox/refunds/{out_refund_no}/settle"
        ))
        .header("content-type", "application/json")
        .body(r#"{"status":"SUCCESS"}"#)
        .send()
        .await
        .with_context(|| format!("{what}: the sandbox's control API"))?;
    if !settled.status().is_success() {
        bail!(
            "{what}: the sandbox did not settle the refund: {}",
            settled.status()
        );
    }
    tokio::time::timeout(
        Duration::from_secs(20),
        next_event(stream, &format!("{what}: the refund on the stream")),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{what}: no refund on the stream within 20 s"))?
}

pub(super) async fn next_event(
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
pub(super) async fn acknowledged_attempts(
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

pub(super) fn status_name(status: i32) -> &'static str {
    match OrderStatus::try_from(status) {
        Ok(s) => s.as_str_name().trim_start_matches("ORDER_STATUS_"),
        Err(_) => "an unknown status",
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

pub(super) fn step(
    out: &mut (dyn Write + Send),
    n: u32,
    what: &str,
    took: Duration,
) -> anyhow::Result<()> {
    say(out, &format!("[{n}] {what}  ({})", ms(took)))
}

pub(super) fn say(out: &mut (dyn Write + Send), line: &str) -> anyhow::Result<()> {
    writeln!(out, "{line}").context("cannot write the demo's output")?;
    out.flush().context("cannot write the demo's output")
}

pub(super) fn temp_sqlite_path() -> PathBuf {
    std::env::temp_dir().join(format!("wxpay-demo-{}.db", ulid::Ulid::new()))
}

/// Removes the database and its WAL companions; a leftover temp file is harmless.
pub(super) fn remove_sqlite(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(path));
    }
}
