//! The poller's metric names, the Prometheus recorder (installed once per
//! process) and the small HTTP server that exposes it on `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Gauge: WatchOrder streams open now.
pub const ACTIVE_STREAMS: &str = "poller_active_streams";
/// Gauge: orders with at least one watcher (each is one subscribed channel).
pub const WATCHED_ORDERS: &str = "poller_watched_orders";
/// Gauge: channels the Redis connection is subscribed to.
pub const SUBSCRIBED_CHANNELS: &str = "poller_subscribed_channels";
/// Counter: status messages sent to clients (snapshots included).
pub const EVENTS_DELIVERED: &str = "poller_events_delivered_total";
/// Counter: fallback QueryOrder calls.
pub const FALLBACK_QUERIES: &str = "poller_fallback_queries_total";
/// Counter: Redis pub/sub reconnections (after the first connection).
pub const REDIS_RECONNECTS: &str = "poller_redis_reconnects_total";
/// Snapshot re-reads after a reconnect: one per watched order, not per watcher.
pub const SNAPSHOT_REREADS: &str = "poller_snapshot_rereads_total";
/// Counter: database reads that confirmed bus events (one per event per
/// poller at most, never per watcher).
pub const CONFIRMING_READS: &str = "poller_confirming_reads_total";
/// Counter: bus events dropped because the database does not hold them
/// (forged, or for an order that does not exist).
pub const EVENTS_UNCONFIRMED: &str = "poller_events_unconfirmed_total";
/// Gauge: 1 while the pub/sub connection is up.
pub const REDIS_CONNECTED: &str = "poller_redis_connected";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Makes `/metrics` render `handle`, a recorder someone else in this process
/// already installed (the embedded mode passes the gateway's, so one registry
/// holds every service's metrics and both endpoints show all of them). Call it
/// before the first [`handle`]; afterwards it changes nothing and returns false.
pub fn use_installed(handle: PrometheusHandle) -> bool {
    HANDLE.set(handle).is_ok()
}

/// The process-wide recorder. The first call installs it; tests that start several
/// applications in one process share it.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// `GET /metrics` in the Prometheus text format.
pub fn router(handle: PrometheusHandle) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    )
}
