//! payment-service's own configuration: the merchants it acts for (each with
//! its sign type and client certificate), how to reach WeChat, and where its
//! notifications go; from them, one [`WechatApi`] per merchant in the dialect
//! it speaks. The shared readers (one line naming the variable on a bad value,
//! no secret echoed) are in `wxpay_runtime::config`.

use std::{sync::Arc, time::Duration};

use wxpay_core::{domain::MerchantName, wechat::MerchantEntry};
use wxpay_runtime::config::{self as env, optional, parsed_or, required, url, ConfigError};

use crate::{
    reconciler::ReconcilerConfig,
    wechat::{ClientOptions, ClientTls, V2Client, WechatApi, WechatError},
};

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

/// One merchant this service acts for, and the client certificate its
/// `/secapi/` calls (refunds) present.
#[derive(Debug, Clone)]
pub struct MerchantAccount {
    pub entry: MerchantEntry,
    /// The merchant's API client certificate and extra trusted CAs
    /// (`WECHAT_CLIENT_*` for `default`, the table's `client_*` for the
    /// file's merchants, `WECHAT_EXTRA_ROOT_CA` for all); `None` when none is set.
    pub client_tls: Option<ClientTls>,
}

/// The merchants and how to reach WeChat.
#[derive(Debug, Clone)]
pub struct WechatConfig {
    /// Every merchant (MERCHANTS_FILE and the WECHAT_* variables), in the
    /// order they were defined.
    pub merchants: Vec<MerchantAccount>,
    pub api_base: String,
    pub notify_url: String,
    /// `WECHAT_REFUND_NOTIFY_URL`; unset: the gateway's refund path beside `notify_url`.
    pub refund_notify_url: Option<String>,
}

/// The production host of the v2 API.
pub const WECHAT_DEFAULT_API_BASE: &str = "https://api.mch.weixin.qq.com";

impl WechatConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let book = env::merchants()?;
        let mut merchants = Vec::with_capacity(book.entries().len());
        for entry in book.entries() {
            let from_file = entry.client_cert.is_some() || entry.client_p12.is_some();
            // `default` without certificate paths of its own is the merchant
            // of the WECHAT_* variables, whose certificate they give too.
            let client_tls = if entry.name == MerchantName::DEFAULT && !from_file {
                ClientTls::from_env(&entry.merchant.mch_id)?
            } else {
                ClientTls::for_entry(entry)?
            };
            merchants.push(MerchantAccount {
                entry: entry.clone(),
                client_tls,
            });
        }
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
        Ok(Self {
            merchants,
            api_base,
            notify_url,
            refund_notify_url,
        })
    }
}

impl WechatConfig {
    /// One WeChat client per merchant, in the dialect it speaks (v2 for all
    /// today), each with its own client certificate, `options`' timeouts and
    /// retries, and the notify URLs.
    pub fn clients(&self, options: ClientOptions) -> Result<Vec<Arc<dyn WechatApi>>, WechatError> {
        self.merchants
            .iter()
            .map(|account| {
                let client = V2Client::new(
                    &self.api_base,
                    account.entry.clone(),
                    ClientOptions {
                        tls: account.client_tls.clone(),
                        ..options.clone()
                    },
                )?
                .with_notify_urls(self.notify_url.clone(), self.refund_notify_url());
                Ok(Arc::new(client) as Arc<dyn WechatApi>)
            })
            .collect()
    }

    /// Where WeChat sends refund results: `WECHAT_REFUND_NOTIFY_URL`, or else
    /// the gateway's refund path beside its payment path (`…/wechat/pay/notify`
    /// becomes `…/wechat/refund/notify`). Any other notify_url gives none
    /// (empty: WeChat then uses the one set in the merchant platform).
    pub fn refund_notify_url(&self) -> String {
        if let Some(url) = &self.refund_notify_url {
            return url.clone();
        }
        match self.notify_url.strip_suffix("/wechat/pay/notify") {
            Some(base) => format!("{base}/wechat/refund/notify"),
            None => String::new(),
        }
    }
}
