//! What the gateway allows each sender, on the one service that faces the
//! internet: the connection limits handed to the shared accept loop
//! ([`wxpay_runtime::http_edge`]: header timeout for HTTP/1 and HTTP/2, idle
//! connections closed, the idlest closed to make room at the connection cap, a
//! minimum body rate), and around the router a deadline for the whole request
//! and a cap on requests in flight with load shedding (a fast 503, which
//! WeChat retries, never a slow SUCCESS).

use std::time::Duration;

use axum::{
    error_handling::HandleErrorLayer,
    http::StatusCode,
    response::{IntoResponse, Response},
    BoxError, Router,
};
use tower::ServiceBuilder;
use wxpay_runtime::http_edge::ConnectionLimits;

/// What the edge allows each sender.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request's headers must arrive within this (`GATEWAY_HEADER_TIMEOUT_MS`).
    pub header_timeout: Duration,
    /// A whole request, body and processing included (`GATEWAY_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// A connection with no request in flight is closed after this
    /// (`GATEWAY_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Open connections at most; past it the idlest idle one is closed to make
    /// room (`GATEWAY_MAX_CONNECTIONS`).
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
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_in_flight: 256,
        }
    }
}

impl Limits {
    /// The accept loop's share of these limits; bodies keep the loop's
    /// default minimum rate (1 s plus 32 KiB/s: a 64 KiB body gets 3 s, far
    /// inside the request timeout).
    pub fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            ..ConnectionLimits::default()
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
