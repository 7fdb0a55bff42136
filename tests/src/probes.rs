//! Reaching a running service: a gRPC channel to it, and the readiness probes
//! a load balancer would use (an HTTP 2xx, grpc.health.v1 `SERVING`). A probe
//! only answers yes or no; how long to keep asking is the process guard's.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

pub(crate) async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await?)
}

pub(crate) async fn http_ok(http: &reqwest::Client, url: String) -> bool {
    matches!(http.get(url).send().await, Ok(r) if r.status().is_success())
}

/// grpc.health.v1 `Check` for `service`, as a load balancer would probe.
pub(crate) async fn grpc_serving(url: &str, service: &str) -> bool {
    let Ok(channel) = connect(url).await else {
        return false;
    };
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await;
    matches!(reply, Ok(r) if r.get_ref().status() == ServingStatus::Serving)
}
