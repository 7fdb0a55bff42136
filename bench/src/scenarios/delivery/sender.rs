//! The notification sender: signed paid notifications POSTed to the gateway,
//! shared by the delivery, notify and streams scenarios. It only sends and
//! reports whether the gateway said SUCCESS; what to send and when is the
//! scenarios'.

use crate::stack::Stack;

/// What the notification-sending tasks need from the stack, cheap to share.
pub struct Sender {
    http: reqwest::Client,
    url: String,
    merchant: wxpay_core::wechat::Merchant,
}

pub fn stack_sender(stack: &Stack) -> Sender {
    Sender {
        http: stack.http.clone(),
        url: stack.notify_url(),
        merchant: stack.merchant.clone(),
    }
}

impl Sender {
    /// POSTs a paid notification; true when the gateway answered SUCCESS.
    pub async fn send(&self, out_trade_no: &str) -> anyhow::Result<bool> {
        let body = crate::notification::paid_xml(&self.merchant, out_trade_no, 1)?;
        self.send_body(body).await
    }

    pub async fn send_body(&self, body: String) -> anyhow::Result<bool> {
        let reply = self
            .http
            .post(&self.url)
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await?
            .text()
            .await?;
        Ok(reply.contains("<return_code><![CDATA[SUCCESS]]>"))
    }
}
