//! Asking WeChat (v2 `orderquery`) about one order before a cloud-pay SUCCESS
//! is believed: the forwarder's HMAC proves the forwarder, and a leaked secret
//! or a forwarder bug must not be able to mark an order paid on its own. The
//! request and the reading of the reply are wxpay-core's
//! ([`wxpay_core::wechat::order_query`]); this module is the HTTP around them
//! (bounded timeouts, a bounded reply), with the order's merchant's key and
//! the sign type the order was placed with. No service crate depends on
//! another, so this is not payment-service's client.

use std::time::Duration;

use wxpay_core::{
    domain::{Nonce, OutTradeNo},
    wechat::{
        order_query::{self, Answer, ReplyError},
        xml, MerchantEntry, SignType,
    },
};

/// WeChat's replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Bounds: the callback's sender (the forwarder) waits for this answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why WeChat's answer could not be had (the callback is answered "retry").
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("orderquery request failed: {0}")]
    Transport(String),
    #[error("orderquery reply unusable: {0}")]
    Reply(String),
    #[error(transparent)]
    Refused(#[from] ReplyError),
}

/// `orderquery` under `WECHAT_API_BASE`.
#[derive(Debug, Clone)]
pub struct OrderQuery {
    http: reqwest::Client,
    base: String,
}

impl OrderQuery {
    pub fn new(api_base: &str) -> Result<Self, QueryError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: api_base.trim_end_matches('/').to_owned(),
        })
    }

    /// What WeChat says about `out_trade_no`, asked in `entry`'s name and
    /// verified under its key with `sign_type` (the order's).
    pub async fn ask(
        &self,
        entry: &MerchantEntry,
        out_trade_no: &OutTradeNo,
        sign_type: SignType,
    ) -> Result<Answer, QueryError> {
        let nonce = Nonce::generate();
        let request = order_query::request(entry, out_trade_no, nonce.as_str(), sign_type);
        let body = xml::encode(request.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| QueryError::Reply(format!("request not encodable: {e}")))?;
        let mut response = self
            .http
            .post(format!("{}{}", self.base, order_query::PATH))
            .header("content-type", "text/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            // reqwest's Display names the URL, never the body: no secret here.
            .map_err(|e| QueryError::Transport(e.to_string()))?;
        if !response.status().is_success() {
            return Err(QueryError::Transport(format!("HTTP {}", response.status())));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| QueryError::Transport(e.to_string()))?
        {
            if bytes.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(QueryError::Reply("reply too large".into()));
            }
            bytes.extend_from_slice(&chunk);
        }
        let reply = xml::decode_with(&bytes, "xml", MAX_REPLY_BYTES)
            .map_err(|e| QueryError::Reply(e.to_string()))?;
        Ok(order_query::read_reply(
            &reply,
            entry,
            sign_type,
            out_trade_no,
        )?)
    }
}
