//! The HTTP client for the v2 endpoints this product calls: unifiedorder,
//! orderquery and closeorder here, refund and refundquery in [`refund`]. Every request is signed once and re-sent unchanged
//! on retry (same out_trade_no, same nonce, same parameters), every reply's
//! signature is verified before anything in it is read, and WeChat's
//! return_code / result_code / err_code become a typed [`WechatError`].

use wxpay_core::{
    domain::{Fee, Nonce, OrderStatus},
    wechat::{china_time, sign, xml, Fields, Merchant, SignType},
};

mod bill;
mod refund;
mod tls;
mod types;

pub use tls::{ClientTls, TlsError, TlsInput};
pub use types::{
    ClientOptions, CloseOutcome, OrderQuery, RefundAccepted, RefundRequest, RefundState,
    UnifiedOrder, WechatError,
};

#[derive(Debug, Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base: String,
    merchant: Merchant,
    options: ClientOptions,
}

/// The most of a reply we read: WeChat's replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

impl WechatClient {
    pub fn new(
        api_base: &str,
        merchant: Merchant,
        options: ClientOptions,
    ) -> Result<Self, WechatError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout);
        if let Some(tls) = &options.tls {
            builder = tls.configure(builder);
        }
        let http = builder
            .build()
            .map_err(|e| WechatError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: api_base.trim_end_matches('/').to_owned(),
            merchant,
            options,
        })
    }

    pub fn merchant(&self) -> &Merchant {
        &self.merchant
    }

    /// Whether requests carry the merchant's API client certificate, without
    /// which WeChat refuses `/secapi/` (refunds).
    pub fn has_client_certificate(&self) -> bool {
        self.options
            .tls
            .as_ref()
            .is_some_and(ClientTls::has_identity)
    }

    /// Places a JSAPI order; returns the prepay_id.
    #[tracing::instrument(skip_all, fields(out_trade_no = req.out_trade_no))]
    pub async fn unified_order(&self, req: &UnifiedOrder<'_>) -> Result<String, WechatError> {
        let mut fields = self.base_fields();
        let total_fee = req.total_fee.to_string();
        for (k, v) in [
            ("body", req.body),
            ("out_trade_no", req.out_trade_no),
            ("total_fee", total_fee.as_str()),
            ("spbill_create_ip", req.spbill_create_ip),
            ("notify_url", req.notify_url),
            ("trade_type", "JSAPI"),
            ("openid", req.openid),
            ("attach", req.attach),
        ] {
            if !v.is_empty() {
                fields.insert(k.into(), v.into());
            }
        }
        if let Some(t) = req.time_expire {
            fields.insert("time_expire".into(), china_time::format(t));
        }
        let reply = self
            .call("/pay/unifiedorder", fields, req.sign_type)
            .await?;
        match reply.get("prepay_id") {
            Some(id) if !id.is_empty() => Ok(id.clone()),
            _ => Err(WechatError::BadReply(
                "no prepay_id in a successful reply".into(),
            )),
        }
    }

    #[tracing::instrument(skip(self))]
    pub async fn order_query(
        &self,
        out_trade_no: &str,
        sign_type: SignType,
    ) -> Result<OrderQuery, WechatError> {
        let mut fields = self.base_fields();
        fields.insert("out_trade_no".into(), out_trade_no.into());
        let reply = self.call("/pay/orderquery", fields, sign_type).await?;
        if reply.get("out_trade_no").map(String::as_str) != Some(out_trade_no) {
            return Err(WechatError::BadReply(
                "the reply is about another order".into(),
            ));
        }
        let trade_state = reply
            .get("trade_state")
            .and_then(|s| s.parse::<OrderStatus>().ok())
            .ok_or_else(|| WechatError::BadReply("missing or unknown trade_state".into()))?;
        let total_fee = match reply.get("total_fee") {
            Some(s) => Some(
                Fee::parse_wire("total_fee", s)
                    .map_err(|e| WechatError::BadReply(e.to_string()))?,
            ),
            None => None,
        };
        let cash_fee = reply.get("cash_fee").and_then(|s| s.parse::<i64>().ok());
        let time_end = reply.get("time_end").and_then(|s| china_time::parse(s));
        let transaction_id = reply
            .get("transaction_id")
            .filter(|s| !s.is_empty())
            .cloned();
        Ok(OrderQuery {
            trade_state,
            transaction_id,
            total_fee,
            cash_fee,
            time_end,
            fields: reply,
        })
    }

    #[tracing::instrument(skip(self))]
    pub async fn close_order(
        &self,
        out_trade_no: &str,
        sign_type: SignType,
    ) -> Result<CloseOutcome, WechatError> {
        let mut fields = self.base_fields();
        fields.insert("out_trade_no".into(), out_trade_no.into());
        match self.call("/pay/closeorder", fields, sign_type).await {
            Ok(_) => Ok(CloseOutcome::Closed),
            Err(e) => match e.code() {
                Some("ORDERCLOSED") => Ok(CloseOutcome::AlreadyClosed),
                Some("ORDERPAID") => Ok(CloseOutcome::AlreadyPaid),
                Some("ORDERNOTEXIST") => Ok(CloseOutcome::NotFound),
                _ => Err(e),
            },
        }
    }

    fn base_fields(&self) -> Fields {
        let mut f = Fields::new();
        f.insert("appid".into(), self.merchant.app_id.clone());
        f.insert("mch_id".into(), self.merchant.mch_id.clone());
        f.insert("nonce_str".into(), Nonce::generate().as_str().into());
        f
    }

    /// Signs once, sends, retries the identical body on retryable failures.
    async fn call(
        &self,
        path: &str,
        mut fields: Fields,
        sign_type: SignType,
    ) -> Result<Fields, WechatError> {
        sign::sign_fields(&mut fields, &self.merchant.api_key, sign_type);
        let body = xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| WechatError::BadReply(format!("request could not be encoded: {e}")))?;
        let url = format!("{}{}", self.base, path);
        let mut attempt = 1;
        loop {
            let result = self.send_once(&url, &body, sign_type).await;
            match result {
                Err(e) if e.is_retryable() && attempt < self.options.max_attempts => {
                    tracing::warn!(error = %e, attempt, path, "WeChat call failed; retrying with the same request");
                    tokio::time::sleep(self.options.backoff * 2u32.saturating_pow(attempt - 1))
                        .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn send_once(
        &self,
        url: &str,
        body: &str,
        sign_type: SignType,
    ) -> Result<Fields, WechatError> {
        let response = self
            .http
            .post(url)
            .header("content-type", "text/xml; charset=utf-8")
            .body(body.to_owned())
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(WechatError::Transport(format!(
                "HTTP {}",
                response.status()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_REPLY_BYTES)
        {
            return Err(WechatError::BadReply("reply too large".into()));
        }
        let bytes = response.bytes().await.map_err(transport_error)?;
        let reply = xml::decode_with(&bytes, "xml", MAX_REPLY_BYTES)
            .map_err(|e| WechatError::BadReply(e.to_string()))?;
        self.check_reply(reply, sign_type)
    }

    fn check_reply(&self, reply: Fields, sign_type: SignType) -> Result<Fields, WechatError> {
        if reply.get("return_code").map(String::as_str) != Some("SUCCESS") {
            // FAIL replies are unsigned: all they can do is make us give up.
            let msg = reply.get("return_msg").cloned().unwrap_or_default();
            return Err(WechatError::Return(msg));
        }
        sign::verify(&reply, &self.merchant.api_key, sign_type)
            .map_err(|e| WechatError::BadReply(e.to_string()))?;
        for (field, ours) in [
            ("appid", &self.merchant.app_id),
            ("mch_id", &self.merchant.mch_id),
        ] {
            if reply.get(field).is_some_and(|v| v != ours) {
                return Err(WechatError::BadReply(format!("{field} is not ours")));
            }
        }
        if reply.get("result_code").map(String::as_str) != Some("SUCCESS") {
            return Err(WechatError::Business {
                code: reply
                    .get("err_code")
                    .cloned()
                    .unwrap_or_else(|| "UNKNOWN".into()),
                message: reply.get("err_code_des").cloned().unwrap_or_default(),
            });
        }
        Ok(reply)
    }
}

fn transport_error(e: reqwest::Error) -> WechatError {
    if e.is_timeout() {
        WechatError::Timeout
    } else {
        // reqwest's Display names the URL, never the body, so no secret leaks here.
        WechatError::Transport(e.to_string())
    }
}
