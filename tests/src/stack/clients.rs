//! Talking to a running [`Stack`]: gRPC clients of payment-service and the
//! poller, and the sandbox's control API. It never starts or stops a process.

use anyhow::bail;
use tonic::transport::Channel;
use wxpay_proto::v1::{
    order_status_service_client::OrderStatusServiceClient,
    payment_service_client::PaymentServiceClient,
};

use crate::probes::connect;

use super::Stack;

impl Stack {
    pub async fn payments(&self) -> anyhow::Result<PaymentServiceClient<Channel>> {
        Ok(PaymentServiceClient::new(connect(&self.payment_url).await?))
    }

    pub async fn watcher(&self) -> anyhow::Result<OrderStatusServiceClient<Channel>> {
        Ok(OrderStatusServiceClient::new(
            connect(&self.poller_url).await?,
        ))
    }

    /// The poller's WebSocket origin (`ws://…`), as a mini program backend
    /// hands it out.
    pub fn poller_ws_base(&self) -> String {
        self.poller_http_url.replacen("http://", "ws://", 1)
    }

    /// The sandbox's control API: `POST /sandbox/orders/{no}/{action}` with a JSON
    /// body (`pay`, `fail`, `userpaying`), returning the order as the sandbox sees it.
    pub async fn sandbox_post(
        &self,
        out_trade_no: &str,
        action: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let res = self
            .http
            .post(format!(
                "{}/sandbox/orders/{out_trade_no}/{action}",
                self.sandbox_url
            ))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            bail!("sandbox {action} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text)?)
    }

    /// `GET` on the sandbox's control API (`/sandbox/...`), as JSON.
    /// POSTs `body` to the sandbox's control path `path` (e.g.
    /// `/sandbox/v3/certificates/rotate`) and returns its JSON answer.
    pub async fn sandbox_control(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.sandbox_url))
            .json(&body)
            .send()
            .await?;
        let status = res.status();
        let text = res.text().await?;
        if !status.is_success() {
            bail!("sandbox {path} answered {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub async fn sandbox_get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let res = self
            .http
            .get(format!("{}{path}", self.sandbox_url))
            .send()
            .await?
            .error_for_status()?;
        Ok(res.json().await?)
    }

    /// `POST /sandbox/faults`: the faults the next WeChat API calls get
    /// (`{"process_then_timeout": 1}`: do it, then hang and drop the reply).
    pub async fn sandbox_faults(&self, faults: serde_json::Value) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/sandbox/faults", self.sandbox_url))
            .json(&faults)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
