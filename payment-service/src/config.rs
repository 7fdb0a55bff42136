//! payment-service's own configuration: the merchant it acts for, its sign type,
//! and how to reach WeChat. The shared readers (one line naming the variable on
//! a bad value, no secret echoed) are in `wxpay_runtime::config`.

use std::time::Duration;

use wxpay_core::wechat::{Merchant, SignType};
use wxpay_runtime::config::{self as env, optional, parsed_or, required, url, ConfigError};

use crate::{reconciler::ReconcilerConfig, wechat::ClientTls};

impl ReconcilerConfig {
    /// `RECONCILE_INTERVAL_SECONDS` (30), `RECONCILE_AFTER_SECONDS` (60) and
    /// `RECONCILE_MAX_QPS` (20); each must be at least 1.
    pub fn from_env() -> Result<Self, ConfigError> {
        let positive = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = parsed_or(var, default)?;
            if v == 0 {
                return Err(ConfigError::new(var, "must be at least 1"));
            }
            Ok(v)
        };
        let max_qps = positive("RECONCILE_MAX_QPS", 20)?;
        Ok(Self {
            interval: Duration::from_secs(positive("RECONCILE_INTERVAL_SECONDS", 30)?),
            after: Duration::from_secs(positive("RECONCILE_AFTER_SECONDS", 60)?),
            max_qps: u32::try_from(max_qps)
                .map_err(|_| ConfigError::new("RECONCILE_MAX_QPS", "is too large"))?,
            ..Self::default()
        })
    }
}

/// The merchant and how to reach WeChat.
#[derive(Debug, Clone)]
pub struct WechatConfig {
    pub merchant: Merchant,
    pub sign_type: SignType,
    pub api_base: String,
    pub notify_url: String,
    /// `WECHAT_REFUND_NOTIFY_URL`; unset: the gateway's refund path beside `notify_url`.
    pub refund_notify_url: Option<String>,
    /// The merchant's API client certificate for `/secapi/` and extra trusted
    /// CAs (`WECHAT_CLIENT_*`, `WECHAT_EXTRA_ROOT_CA`); `None` when none is set.
    pub client_tls: Option<ClientTls>,
}

/// The production host of the v2 API.
pub const WECHAT_DEFAULT_API_BASE: &str = "https://api.mch.weixin.qq.com";

impl WechatConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let merchant = env::merchant_from_env()?;
        let sign_type = match optional("WECHAT_SIGN_TYPE")? {
            None => SignType::Md5,
            Some(s) => s
                .parse()
                .map_err(|_| ConfigError::new("WECHAT_SIGN_TYPE", "must be MD5 or HMAC-SHA256"))?,
        };
        let api_base = url(
            "WECHAT_API_BASE",
            optional("WECHAT_API_BASE")?.unwrap_or_else(|| WECHAT_DEFAULT_API_BASE.to_owned()),
            &["https", "http"],
        )?;
        let notify_url = url(
            "WECHAT_NOTIFY_URL",
            required("WECHAT_NOTIFY_URL")?,
            &["https", "http"],
        )?;
        let refund_notify_url = optional("WECHAT_REFUND_NOTIFY_URL")?
            .map(|u| url("WECHAT_REFUND_NOTIFY_URL", u, &["https", "http"]))
            .transpose()?;
        let client_tls = ClientTls::from_env(&merchant.mch_id)?;
        Ok(Self {
            merchant,
            sign_type,
            api_base,
            notify_url,
            refund_notify_url,
            client_tls,
        })
    }
}
