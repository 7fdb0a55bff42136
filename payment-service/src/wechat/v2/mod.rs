//! The HTTP client for the v2 endpoints this product calls: unifiedorder,
//! orderquery and closeorder here, refund and refundquery in [`refund`]. One
//! client per configured merchant: it signs with that merchant's key and, in
//! service-provider mode, names the sub merchant (`sub_mch_id`, `sub_appid`)
//! in every request. Every request is signed once and re-sent unchanged
//! on retry (same out_trade_no, same nonce, same parameters), every reply's
//! signature is verified before anything in it is read, and WeChat's
//! return_code / result_code / err_code become a typed [`WechatError`].

use wxpay_core::{
    domain::{Fee, Nonce, OrderStatus},
    wechat::{china_time, sign, xml, Fields, Merchant, MerchantEntry, SignType, TradeType},
};

mod bill;
mod refund;
mod tls;
mod types;

pub use tls::{ClientTls, TlsError, TlsInput};
pub use types::{
    ClientOptions, CloseOutcome, OrderQuery, Prepaid, RefundAccepted, RefundRequest, RefundState,
    UnifiedOrder, WechatError,
};

#[derive(Debug, Clone)]
pub struct WechatClient {
    http: reqwest::Client,
    base: String,
    /// The merchant this client acts for: its credentials, sign type and, in
    /// service-provider mode, the sub merchant.
    entry: MerchantEntry,
    options: ClientOptions,
}

/// The most of a reply we read: WeChat's replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

impl WechatClient {
    pub fn new(
        api_base: &str,
        entry: MerchantEntry,
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
            entry,
            options,
        })
    }

    /// The account that signs (the provider's in service-provider mode).
    pub fn merchant(&self) -> &Merchant {
        &self.entry.merchant
    }

    /// The configured merchant: its name, sign type and sub merchant.
    pub fn entry(&self) -> &MerchantEntry {
        &self.entry
    }

    /// Whether requests carry the merchant's API client certificate, without
    /// which WeChat refuses `/secapi/` (refunds).
    pub fn has_client_certificate(&self) -> bool {
        self.options
            .tls
            .as_ref()
            .is_some_and(ClientTls::has_identity)
    }

    /// Places an order of any trade type; returns the prepay_id and, for
    /// NATIVE and MWEB, the URL the payer pays through.
    #[tracing::instrument(skip_all, fields(out_trade_no = req.out_trade_no, trade_type = %req.trade_type))]
    pub async fn unified_order(&self, req: &UnifiedOrder<'_>) -> Result<Prepaid, WechatError> {
        let mut fields = self.base_fields();
        let total_fee = req.total_fee.to_string();
        for (k, v) in [
            ("body", req.body),
            ("out_trade_no", req.out_trade_no),
            ("total_fee", total_fee.as_str()),
            ("spbill_create_ip", req.spbill_create_ip),
            ("notify_url", req.notify_url),
            ("trade_type", req.trade_type.as_str()),
            ("openid", req.openid),
            ("sub_openid", req.sub_openid),
            ("product_id", req.product_id),
            ("scene_info", req.scene_info),
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
        let present = |k: &str| reply.get(k).filter(|v| !v.is_empty()).cloned();
        let prepay_id = present("prepay_id")
            .ok_or_else(|| WechatError::BadReply("no prepay_id in a successful reply".into()))?;
        // What the payer pays through: without it a NATIVE or MWEB order
        // cannot be paid, so its absence is a reply we cannot use.
        let pay_url = match req.trade_type {
            TradeType::Native => Some(
                present("code_url")
                    .ok_or_else(|| WechatError::BadReply("no code_url in a NATIVE reply".into()))?,
            ),
            TradeType::Mweb => Some(
                present("mweb_url")
                    .ok_or_else(|| WechatError::BadReply("no mweb_url in an MWEB reply".into()))?,
            ),
            TradeType::Jsapi | TradeType::App => None,
        };
        Ok(Prepaid { prepay_id, pay_url })
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

    /// What every request carries: the signing account and, in
    /// service-provider mode, the sub merchant it acts for.
    fn base_fields(&self) -> Fields {
        let mut f = Fields::new();
        f.insert("appid".into(), self.entry.merchant.app_id.clone());
        f.insert("mch_id".into(), self.entry.merchant.mch_id.clone());
        if let Some(sub) = &self.entry.sub_mch_id {
            f.insert("sub_mch_id".into(), sub.clone());
        }
        if let Some(sub_app) = &self.entry.sub_app_id {
            f.insert("sub_appid".into(), sub_app.clone());
        }
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
        sign::sign_fields(&mut fields, &self.entry.merchant.api_key, sign_type);
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
        sign::verify(&reply, &self.entry.merchant.api_key, sign_type)
            .map_err(|e| WechatError::BadReply(e.to_string()))?;
        for (field, ours) in [
            ("appid", Some(&self.entry.merchant.app_id)),
            ("mch_id", Some(&self.entry.merchant.mch_id)),
            ("sub_mch_id", self.entry.sub_mch_id.as_ref()),
            ("sub_appid", self.entry.sub_app_id.as_ref()),
        ] {
            // A reply about another (sub) merchant is not about our request.
            if reply
                .get(field)
                .is_some_and(|v| !v.is_empty() && Some(v) != ours)
            {
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
