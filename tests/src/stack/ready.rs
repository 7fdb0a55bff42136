//! Waiting for a started stack: each binary's own readiness probe (gRPC
//! health for the gRPC servers, `/readyz` for the gateway), in dependency order.

use crate::probes::{grpc_serving, http_ok};

use super::Stack;

impl Stack {
    /// Returns once every binary reports ready; a child that exits first fails it.
    pub(super) async fn until_ready(&mut self) -> anyhow::Result<()> {
        let http = self.http.clone();
        let sandbox_url = self.sandbox_url.clone();
        self.sandbox
            .wait_ready(|| http_ok(&http, format!("{sandbox_url}/sandbox/faults")))
            .await?;
        let payment_url = self.payment_url.clone();
        self.payment
            .wait_ready(|| grpc_serving(&payment_url, "wxpay.v1.PaymentService"))
            .await?;
        let gateway_url = self.gateway_url.clone();
        self.gateway
            .wait_ready(|| http_ok(&http, format!("{gateway_url}/readyz")))
            .await?;
        let poller_url = self.poller_url.clone();
        self.poller
            .wait_ready(|| grpc_serving(&poller_url, "wxpay.v1.OrderStatusService"))
            .await
    }

    /// Starts payment-service again with the environment it first had (after
    /// a test killed it) and waits until it serves.
    pub async fn restart_payment(&mut self) -> anyhow::Result<()> {
        let _ = self.payment.kill_9();
        let mut env = self.env.payment.clone();
        env.push(("RUST_LOG", "info".to_owned()));
        self.payment = crate::Process::spawn("payment-service", &env)?;
        let payment_url = self.payment_url.clone();
        self.payment
            .wait_ready(|| grpc_serving(&payment_url, "wxpay.v1.PaymentService"))
            .await
    }
}
