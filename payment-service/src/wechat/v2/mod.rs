//! The WeChat Pay v2 dialect: the HTTP client for the v2 endpoints this
//! product calls (unifiedorder, orderquery and closeorder here; refund and
//! refundquery in [`refund`]; the daily bill in [`bill`]) and, in [`api`], its
//! implementation of [`super::WechatApi`]. One client per configured merchant:
//! it signs with that merchant's key and, in service-provider mode, names the
//! sub merchant (`sub_mch_id`, `sub_appid`) in every request. Every request is
//! signed once and re-sent unchanged on retry (same out_trade_no, same nonce,
//! same parameters), every reply's signature is verified before anything in it
//! is read, and WeChat's return_code / result_code / err_code become a typed
//! [`WechatError`]. orderquery replies are read by wxpay-core's
//! [`order_query`] (the gateway's reader too). The inherent methods speak v2
//! (strings, a sign type per call) for whoever tests the dialect itself (the
//! sandbox's tests); the service goes through [`super::WechatApi`].

use chrono::{DateTime, Utc};
use wxpay_core::{
    domain::{Fee, Nonce, OrderStatus, TransactionId},
    wechat::{
        china_time,
        order_query::{self, ReplyError},
        sign, xml, Fields, Merchant, MerchantEntry, SignType, TradeType,
    },
};

use super::{ClientOptions, ClientTls, CloseOutcome, Prepaid, WechatError};

mod api;
mod bill;
mod refund;

/// What unifiedorder needs. Empty strings are left out of the request (an
/// openid for NATIVE, a product_id for JSAPI, ...).
#[derive(Debug, Clone)]
pub struct UnifiedOrder<'a> {
    pub out_trade_no: &'a str,
    pub body: &'a str,
    pub total_fee: Fee,
    pub attach: &'a str,
    pub spbill_create_ip: &'a str,
    pub trade_type: TradeType,
    pub openid: &'a str,
    /// Service-provider mode: the payer under the sub merchant's appid.
    pub sub_openid: &'a str,
    pub product_id: &'a str,
    pub scene_info: &'a str,
    pub notify_url: &'a str,
    pub time_expire: Option<DateTime<Utc>>,
    pub sign_type: SignType,
}

/// orderquery's answer: what wxpay-core's reader found in the reply, plus
/// everything WeChat sent (v2's own; the service never reads it).
#[derive(Debug, Clone)]
pub struct OrderQuery {
    pub trade_state: OrderStatus,
    pub transaction_id: Option<TransactionId>,
    pub total_fee: Option<Fee>,
    pub cash_fee: Option<i64>,
    pub time_end: Option<DateTime<Utc>>,
    pub fields: Fields,
}

/// What `/secapi/pay/refund` needs: the order as WeChat knows it and the refund.
#[derive(Debug, Clone)]
pub struct RefundRequest<'a> {
    pub out_trade_no: &'a str,
    pub out_refund_no: &'a str,
    /// The order's total, which WeChat checks.
    pub total_fee: Fee,
    pub refund_fee: Fee,
    /// `refund_desc`; left out when empty.
    pub reason: &'a str,
    /// Where WeChat sends the refund's result.
    pub notify_url: &'a str,
    /// The order's sign type: a refund is signed as its order was.
    pub sign_type: SignType,
}

/// One merchant's v2 client: its key signs every request and verifies every
/// reply. Cheap to clone (the HTTP connection pool is shared).
#[derive(Debug, Clone)]
pub struct V2Client {
    http: reqwest::Client,
    base: String,
    /// The merchant this client acts for: its credentials, sign type and, in
    /// service-provider mode, the sub merchant.
    entry: MerchantEntry,
    options: ClientOptions,
    /// Where WeChat sends payment results (unifiedorder's `notify_url`) when
    /// the service places an order through [`super::WechatApi`].
    notify_url: String,
    /// Where WeChat sends refund results (the refund's `notify_url`); empty:
    /// the one set in the merchant platform.
    refund_notify_url: String,
}

/// The most of a reply we read: WeChat's replies are a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

impl V2Client {
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
            notify_url: String::new(),
            refund_notify_url: String::new(),
        })
    }

    /// Where WeChat sends the results of the orders and refunds placed
    /// through [`super::WechatApi`] (`refund` empty: the merchant platform's).
    pub fn with_notify_urls(mut self, pay: String, refund: String) -> Self {
        self.notify_url = pay;
        self.refund_notify_url = refund;
        self
    }

    /// The account that signs (the provider's in service-provider mode).
    pub fn merchant(&self) -> &Merchant {
        &self.entry.merchant
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

    /// orderquery by `out_trade_no`. A reply is read by wxpay-core's
    /// [`order_query::read_report`]; `ORDERNOTEXIST` is an error here, as
    /// WeChat sends it.
    #[tracing::instrument(skip(self))]
    pub async fn order_query(
        &self,
        out_trade_no: &str,
        sign_type: SignType,
    ) -> Result<OrderQuery, WechatError> {
        let mut fields = self.base_fields();
        fields.insert("out_trade_no".into(), out_trade_no.into());
        self.call_with(order_query::PATH, fields, sign_type, |reply| {
            let report = order_query::read_report(&reply, &self.entry, sign_type, out_trade_no)
                .map_err(reply_error)?;
            Ok(OrderQuery {
                trade_state: report.trade_state,
                transaction_id: report.transaction_id,
                total_fee: report.total_fee,
                cash_fee: report.cash_fee,
                time_end: report.time_end,
                fields: reply,
            })
        })
        .await
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

    /// Signs once, sends, checks the reply ([`Self::check_reply`]), retries
    /// the identical body on retryable failures.
    async fn call(
        &self,
        path: &str,
        fields: Fields,
        sign_type: SignType,
    ) -> Result<Fields, WechatError> {
        self.call_with(path, fields, sign_type, |reply| {
            self.check_reply(reply, sign_type)
        })
        .await
    }

    /// Signs once, sends, reads the decoded reply with `read`, and retries the
    /// identical body while the failure (of the transport or of `read`) is
    /// one a retry can fix.
    async fn call_with<T>(
        &self,
        path: &str,
        mut fields: Fields,
        sign_type: SignType,
        read: impl Fn(Fields) -> Result<T, WechatError>,
    ) -> Result<T, WechatError> {
        sign::sign_fields(&mut fields, &self.entry.merchant.api_key, sign_type);
        let body = xml::encode(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| WechatError::BadReply(format!("request could not be encoded: {e}")))?;
        let url = format!("{}{}", self.base, path);
        let mut attempt = 1;
        loop {
            let result = self.send_once(&url, &body).await.and_then(&read);
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

    /// One POST of `body`; the decoded reply, not yet checked.
    async fn send_once(&self, url: &str, body: &str) -> Result<Fields, WechatError> {
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
        xml::decode_with(&bytes, "xml", MAX_REPLY_BYTES)
            .map_err(|e| WechatError::BadReply(e.to_string()))
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

/// Why wxpay-core's orderquery reader did not take a reply, as the client's error.
fn reply_error(e: ReplyError) -> WechatError {
    match e {
        ReplyError::Return(msg) => WechatError::Return(msg),
        ReplyError::Business { code, message } => WechatError::Business { code, message },
        e @ (ReplyError::Signature
        | ReplyError::NotOurs(_)
        | ReplyError::TradeState
        | ReplyError::Unreadable(_)) => WechatError::BadReply(e.to_string()),
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
