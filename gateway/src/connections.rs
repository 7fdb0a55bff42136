//! The gateway's connection handling, which `axum::serve` leaves unconfigured on
//! the one service that faces the internet: a deadline for a request's headers
//! (hyper's timer: a client that opens a connection and never finishes its
//! headers is cut), a cap on open connections (past it the listener waits; the
//! kernel's backlog holds the rest), a deadline for the whole request and a cap
//! on requests in flight with load shedding (a fast 503, which WeChat retries,
//! never a slow SUCCESS), and a graceful shutdown that stops accepting and lets
//! open connections finish.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    error_handling::HandleErrorLayer,
    http::StatusCode,
    response::{IntoResponse, Response},
    BoxError, Router,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceBuilder;

/// What the edge allows each sender.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this (`GATEWAY_HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// A whole request, body and processing included (`GATEWAY_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// Open connections at most (`GATEWAY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Requests being processed at most; past it, 503 at once (`GATEWAY_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
}

impl Default for Limits {
    /// WeChat waits about 5 s for an answer; a genuine notification is a few KiB
    /// sent at once, so a few seconds bound everything an honest sender does.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_in_flight: 256,
        }
    }
}

/// Wraps `router` in the request deadline and the in-flight cap.
pub fn limited(router: Router, limits: &Limits) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(overloaded))
            .load_shed()
            .concurrency_limit(limits.max_in_flight)
            .timeout(limits.request_timeout),
    )
}

/// Shed or timed out: 503, which WeChat treats as "try again later".
async fn overloaded(error: BoxError) -> Response {
    let reason = if error.is::<tower::load_shed::error::Overloaded>() {
        "overloaded"
    } else if error.is::<tower::timeout::error::Elapsed>() {
        "timeout"
    } else {
        "error"
    };
    metrics::counter!(crate::metrics::SHED_TOTAL, "reason" => reason).increment(1);
    (StatusCode::SERVICE_UNAVAILABLE, reason).into_response()
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops
/// accepting and waits for open connections (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Never closed, so acquiring only waits.
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Nagle off: WeChat's replies are tiny and must not wait for a delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
