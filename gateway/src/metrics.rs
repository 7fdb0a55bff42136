//! The gateway's Prometheus metrics: the names, the process-wide recorder, and
//! the `/metrics` rendering (which also samples the outbox backlog, so the gauge
//! is as fresh as the scrape), served by [`router`] on its own listener
//! (`GATEWAY_METRICS_ADDR`), never on the public port.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wxpay_store::Store;

use crate::verdict::{Kind, Verdict};

/// Notifications by `kind` (pay, refund, cloudpay, pay_v3, refund_v3), `verdict` and `merchant`
/// (the configured merchant's name; [`UNKNOWN_MERCHANT`] before one is known).
pub const NOTIFICATIONS_TOTAL: &str = "wxpay_gateway_notifications_total";
/// Time from receiving a notification to its reply, by `kind`.
pub const NOTIFICATION_SECONDS: &str = "wxpay_gateway_notification_duration_seconds";
/// Genuine-looking messages refused or contradicting a final state, by `kind` of anomaly.
pub const ANOMALIES_TOTAL: &str = "wxpay_gateway_anomalies_total";
/// Requests answered 503 at the edge, by `reason` (overloaded, timeout).
pub const SHED_TOTAL: &str = "wxpay_gateway_shed_total";
/// Bodies refused before any database work, by `kind` and `reason`
/// (bad_signature, malformed, unknown_merchant; for pay_v3 and refund_v3 also probe,
/// stale_timestamp, unknown_serial, undecryptable, wrong_merchant, wrong_app…).
pub const REFUSED_TOTAL: &str = "wxpay_gateway_refused_total";
/// Outbox events not yet published.
pub const OUTBOX_BACKLOG: &str = "wxpay_gateway_outbox_backlog";
/// Age of the oldest unpublished outbox event (0 when there is none).
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "wxpay_gateway_outbox_oldest_age_seconds";

/// The `merchant` label of a notification refused before its merchant was
/// known. Merchant names come from the configuration, never from a message, so
/// the label's values stay as few as the merchants (a forged mch_id cannot
/// mint new series).
pub const UNKNOWN_MERCHANT: &str = "unknown";

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Several
/// applications in one process (tests, the embedded mode) share it.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Buckets make the latency a real histogram rather than a summary; the
            // list is a non-empty constant, so the fallback is never taken.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(NOTIFICATION_SECONDS.to_owned()), &LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    // Someone else installed a recorder first: keep serving /metrics
                    // (empty) rather than refuse to start over telemetry.
                    tracing::warn!(error = %e, "metrics recorder already installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            }
        })
        .clone()
}

/// Counts one notification and how long it took. `merchant` is the configured
/// merchant's name, `None` before one was known. The latency keeps its one
/// `kind` label: a histogram per merchant would multiply its buckets for
/// little insight.
pub fn record_notification(
    kind: Kind,
    verdict: Verdict,
    merchant: Option<&str>,
    elapsed: Duration,
) {
    // `merchant` last, so the series read as before with one more label.
    metrics::counter!(
        NOTIFICATIONS_TOTAL,
        "kind" => kind.as_str(),
        "verdict" => verdict.as_str(),
        "merchant" => merchant.unwrap_or(UNKNOWN_MERCHANT).to_owned()
    )
    .increment(1);
    metrics::histogram!(NOTIFICATION_SECONDS, "kind" => kind.as_str())
        .record(elapsed.as_secs_f64());
}

pub fn record_anomaly(anomaly: wxpay_store::AnomalyKind) {
    metrics::counter!(ANOMALIES_TOTAL, "kind" => anomaly.as_str()).increment(1);
}

/// Samples the outbox (bounded, so a slow database cannot hang the scrape) and renders.
pub async fn render(handle: &PrometheusHandle, store: &dyn Store) -> String {
    match tokio::time::timeout(Duration::from_secs(2), store.outbox_backlog()).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!(OUTBOX_BACKLOG).set(backlog.count as f64);
            metrics::gauge!(OUTBOX_OLDEST_AGE_SECONDS)
                .set(backlog.oldest_age.map(|d| d.as_secs_f64()).unwrap_or(0.0));
        }
        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: outbox backlog unavailable"),
        Err(_) => tracing::debug!("metrics: outbox backlog query timed out"),
    }
    handle.run_upkeep();
    handle.render()
}

/// `GET /metrics` alone, for the metrics listener.
pub fn router(handle: PrometheusHandle, store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state((handle, store))
}

async fn metrics_text(
    State((handle, store)): State<(PrometheusHandle, Arc<dyn Store>)>,
) -> Response {
    let text = render(&handle, store.as_ref()).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
