//! payment-service's own configuration: the merchants it acts for (each with
//! its sign type and client certificate, or its v3 keys), how to reach WeChat,
//! and where its notifications go; from them, one [`WechatApi`] per merchant
//! in the dialect it speaks, and for v3 merchants WeChat's keys
//! ([`PlatformKeys`], kept in the database). The shared readers (one line
//! naming the variable on a bad value, no secret echoed) are in
//! `wxpay_runtime::config`.

use std::{sync::Arc, time::Duration};

use wxpay_core::{
    domain::MerchantName,
    wechat::{ApiVersion, MerchantEntry},
};
use wxpay_runtime::config::{self as env, optional, parsed_or, required, url, ConfigError};
use wxpay_store::{Store, StoreError};
use wxpay_wechat_v3::{BuildError, KeysOptions, PlatformKeys, V3Http};

use crate::{
    reconciler::ReconcilerConfig,
    wechat::{ClientOptions, ClientTls, V2Client, V3Api, WechatApi, WechatError},
};

impl ReconcilerConfig {
    /// `RECONCILE_INTERVAL_SECONDS` (30), `RECONCILE_AFTER_SECONDS` (60),
    /// `RECONCILE_MAX_QPS` (20) and `RECONCILE_LEASE_SECONDS` (10); each must
    /// be at least 1.
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
            lease: Duration::from_secs(positive("RECONCILE_LEASE_SECONDS", 10)?),
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
    /// `WECHAT_V3_NOTIFY_URL`, where WeChat sends v3 merchants' payment
    /// results; unset: `/wechat/v3/pay/notify` on `notify_url`'s origin.
    pub v3_notify_url: Option<String>,
    /// `WECHAT_V3_REFUND_NOTIFY_URL`, where WeChat sends v3 merchants' refund
    /// results; unset: `/wechat/v3/refund/notify` on `notify_url`'s origin.
    pub v3_refund_notify_url: Option<String>,
}

/// Why WeChat's keys for the v3 merchants could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum V3SetupError {
    #[error("WeChat Pay API v3 client: {0}")]
    Build(#[from] BuildError),
    #[error("WeChat's v3 keys could not be loaded from the database: {0}")]
    Store(#[from] StoreError),
}

/// The gateway's path for v3 payment notifications.
pub const V3_PAY_NOTIFY_PATH: &str = "/wechat/v3/pay/notify";

/// The gateway's path for v3 refund notifications.
pub const V3_REFUND_NOTIFY_PATH: &str = "/wechat/v3/refund/notify";

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
        let v3_notify_url = optional("WECHAT_V3_NOTIFY_URL")?
            .map(|u| url("WECHAT_V3_NOTIFY_URL", u, &["https", "http"]))
            .transpose()?;
        let v3_refund_notify_url = optional("WECHAT_V3_REFUND_NOTIFY_URL")?
            .map(|u| url("WECHAT_V3_REFUND_NOTIFY_URL", u, &["https", "http"]))
            .transpose()?;
        Ok(Self {
            merchants,
            api_base,
            notify_url,
            refund_notify_url,
            v3_notify_url,
            v3_refund_notify_url,
        })
    }
}

impl WechatConfig {
    /// One WeChat client per merchant, v2 merchants only: a v3 merchant
    /// needs WeChat's keys, so with one this is an error naming it (use
    /// [`Self::clients_with_keys`]).
    pub fn clients(&self, options: ClientOptions) -> Result<Vec<Arc<dyn WechatApi>>, WechatError> {
        self.clients_with_keys(options, None)
    }

    /// One WeChat client per merchant, in the dialect it speaks: v2 ones
    /// each with its own client certificate, `options`' timeouts and
    /// retries, and the notify URLs; v3 ones through `keys` (from
    /// [`Self::platform_keys`], which carries the HTTP client they share)
    /// with the v3 notify URL.
    pub fn clients_with_keys(
        &self,
        options: ClientOptions,
        keys: Option<&Arc<PlatformKeys>>,
    ) -> Result<Vec<Arc<dyn WechatApi>>, WechatError> {
        self.merchants
            .iter()
            .map(|account| match account.entry.api_version() {
                ApiVersion::V2 => {
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
                }
                ApiVersion::V3 => {
                    let name = &account.entry.name;
                    let keys = keys.ok_or_else(|| {
                        WechatError::Request(format!(
                            "merchant {name} speaks v3 and needs WeChat's keys \
                             (WechatConfig::platform_keys)"
                        ))
                    })?;
                    let client = keys.client(account.entry.clone()).map_err(|e| {
                        WechatError::Request(format!("merchant {name}'s v3 client: {e}"))
                    })?;
                    let api =
                        V3Api::new(client, self.v3_notify_url()?, self.v3_refund_notify_url()?)?;
                    Ok(Arc::new(api) as Arc<dyn WechatApi>)
                }
            })
            .collect()
    }

    /// Whether any merchant speaks v3.
    pub fn has_v3(&self) -> bool {
        self.merchants
            .iter()
            .any(|m| m.entry.api_version() == ApiVersion::V3)
    }

    /// WeChat's keys for the v3 merchants (`None` when there is none): their
    /// platform certificates loaded from `store` (downloaded for a
    /// certificate-mode merchant that has none yet) and their public keys,
    /// over one HTTP client for `api_base` with `options`' timeouts and
    /// retries and the extra root CAs the v3 merchants trust
    /// (`WECHAT_EXTRA_ROOT_CA`), refreshed as `keys_options` says
    /// (`KeysOptions::default()`: every 12 h, and on an unknown serial at most
    /// once a minute). Whoever runs the service refreshes them
    /// with [`PlatformKeys::spawn_refresh`] ([`crate::application::Application::with_platform_keys`]
    /// does).
    pub async fn platform_keys(
        &self,
        store: Arc<dyn Store>,
        options: &ClientOptions,
        keys_options: KeysOptions,
    ) -> Result<Option<Arc<PlatformKeys>>, V3SetupError> {
        if !self.has_v3() {
            return Ok(None);
        }
        let http = self.v3_http(options)?;
        let entries: Vec<MerchantEntry> = self.merchants.iter().map(|m| m.entry.clone()).collect();
        Ok(Some(
            PlatformKeys::start(store, http, &entries, keys_options).await?,
        ))
    }

    /// The HTTP client of every v3 call: `api_base`, `options`' timeouts and
    /// retries, and the extra root CAs of the v3 merchants' TLS settings.
    pub fn v3_http(&self, options: &ClientOptions) -> Result<V3Http, BuildError> {
        let extra_roots = self
            .merchants
            .iter()
            .filter(|m| m.entry.api_version() == ApiVersion::V3)
            .filter_map(|m| m.client_tls.as_ref())
            .chain(options.tls.as_ref())
            .flat_map(|tls| tls.extra_roots().iter().cloned())
            .collect();
        V3Http::new(
            &self.api_base,
            wxpay_wechat_v3::ClientOptions {
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
                max_attempts: options.max_attempts,
                backoff: options.backoff,
                extra_roots,
                ..wxpay_wechat_v3::ClientOptions::default()
            },
        )
    }

    /// Where WeChat sends v3 payment results: `WECHAT_V3_NOTIFY_URL`, or
    /// else the gateway's `/wechat/v3/pay/notify` on `notify_url`'s origin.
    pub fn v3_notify_url(&self) -> Result<String, WechatError> {
        match &self.v3_notify_url {
            Some(url) => Ok(url.clone()),
            None => self.on_notify_origin(V3_PAY_NOTIFY_PATH),
        }
    }

    /// Where WeChat sends v3 refund results: `WECHAT_V3_REFUND_NOTIFY_URL`, or
    /// else the gateway's `/wechat/v3/refund/notify` on `notify_url`'s origin.
    pub fn v3_refund_notify_url(&self) -> Result<String, WechatError> {
        match &self.v3_refund_notify_url {
            Some(url) => Ok(url.clone()),
            None => self.on_notify_origin(V3_REFUND_NOTIFY_PATH),
        }
    }

    /// `path` on `notify_url`'s origin (scheme, host and port).
    fn on_notify_origin(&self, path: &str) -> Result<String, WechatError> {
        // from_env checked it is a URL; a configuration built by hand may not be.
        let origin = reqwest::Url::parse(&self.notify_url)
            .map_err(|_| {
                WechatError::Request(format!(
                    "notify_url {:?} is not a URL, so the v3 notify URLs cannot be made from it",
                    self.notify_url
                ))
            })?
            .origin()
            .ascii_serialization();
        Ok(format!("{origin}{path}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(notify_url: &str, v3_notify_url: Option<&str>) -> WechatConfig {
        WechatConfig {
            merchants: Vec::new(),
            api_base: WECHAT_DEFAULT_API_BASE.into(),
            notify_url: notify_url.into(),
            refund_notify_url: None,
            v3_notify_url: v3_notify_url.map(str::to_owned),
            v3_refund_notify_url: None,
        }
    }

    #[test]
    fn v3_notifications_go_to_the_v3_path_on_the_notify_urls_origin() {
        assert_eq!(
            config("https://pay.example.com:8443/wechat/pay/notify?x=1", None)
                .v3_notify_url()
                .expect("a URL"),
            "https://pay.example.com:8443/wechat/v3/pay/notify"
        );
        assert_eq!(
            config("https://pay.example.com/any/path", None)
                .v3_notify_url()
                .expect("a URL"),
            "https://pay.example.com/wechat/v3/pay/notify"
        );
        assert_eq!(
            config(
                "https://pay.example.com/wechat/pay/notify",
                Some("https://edge.example.com/v3")
            )
            .v3_notify_url()
            .expect("given"),
            "https://edge.example.com/v3"
        );
        assert!(config("not a url", None).v3_notify_url().is_err());
    }

    #[test]
    fn v3_refund_notifications_go_to_the_v3_refund_path_on_the_same_origin() {
        assert_eq!(
            config("https://pay.example.com:8443/wechat/pay/notify?x=1", None)
                .v3_refund_notify_url()
                .expect("a URL"),
            "https://pay.example.com:8443/wechat/v3/refund/notify"
        );
        let given = WechatConfig {
            v3_refund_notify_url: Some("https://edge.example.com/v3r".into()),
            ..config("https://pay.example.com/wechat/pay/notify", None)
        };
        assert_eq!(
            given.v3_refund_notify_url().expect("given"),
            "https://edge.example.com/v3r"
        );
        // The payment's own override does not move refunds.
        assert_eq!(
            config(
                "https://pay.example.com/wechat/pay/notify",
                Some("https://edge.example.com/v3")
            )
            .v3_refund_notify_url()
            .expect("derived"),
            "https://pay.example.com/wechat/v3/refund/notify"
        );
        assert!(config("not a url", None).v3_refund_notify_url().is_err());
    }
}
