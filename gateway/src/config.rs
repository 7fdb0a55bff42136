//! The gateway's configuration, read from the environment through
//! `wxpay_runtime::config`'s helpers so a bad or missing value stops start-up
//! with one line naming the variable (or the merchants file's merchant and
//! field). The merchants are every account whose messages this deployment
//! accepts: the `MERCHANTS_FILE` tables plus `default` from the `WECHAT_*`
//! variables, read by `wxpay_runtime::config::merchants()`, the workspace's one
//! reader of them, so every service agrees on which key belongs to which
//! mch_id. The gateway only verifies what WeChat sends, so it does not require
//! `WECHAT_NOTIFY_URL` (which `WechatConfig::from_env` does).

use std::{fmt, net::SocketAddr, time::Duration};

use crate::connections::Limits;
use secrecy::{ExposeSecret, SecretString};
use wxpay_core::wechat::MerchantBook;
use wxpay_runtime::config::{self, ConfigError};

/// The default listen address.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";

/// The default metrics address: loopback, never the public port.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9090";
/// The production host of the v2 API (payment-service's default too).
pub const WECHAT_DEFAULT_API_BASE: &str = "https://api.mch.weixin.qq.com";

/// The shared secret the cloud-pay forwarder signs its requests with.
/// Its `Debug` never shows it.
#[derive(Clone)]
pub struct CloudpaySecret(SecretString);

impl CloudpaySecret {
    /// Shortest secret accepted, in bytes: the HMAC-SHA256 key should carry
    /// as much as the hash (256 bits), and the endpoint is public.
    pub const MIN_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() < Self::MIN_LEN {
            return Err("must be at least 32 bytes");
        }
        Ok(Self(SecretString::from(s.to_owned())))
    }

    pub(crate) fn expose(&self) -> &[u8] {
        self.0.expose_secret().as_bytes()
    }
}

impl fmt::Debug for CloudpaySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CloudpaySecret(**redacted**)")
    }
}

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub database_url: String,
    pub redis_url: String,
    /// Every merchant whose notifications are accepted, found by the mch_id
    /// (and sub_mch_id) a message names; each message is verified with its
    /// merchant's key only.
    pub merchants: MerchantBook,
    pub addr: SocketAddr,
    /// `GATEWAY_METRICS_ADDR`: Prometheus `GET /metrics`, off the public port.
    pub metrics_addr: SocketAddr,
    /// `None` disables `POST /cloudpay/callback` (it answers 404).
    pub cloudpay_secret: Option<CloudpaySecret>,
    /// `WECHAT_API_BASE` (default the real API): where a cloud-pay SUCCESS is
    /// confirmed with orderquery before it is applied, and where the v3
    /// merchants' platform certificates are downloaded from.
    pub wechat_api_base: String,
    /// `WECHAT_EXTRA_ROOT_CA`: a PEM CA trusted for `WECHAT_API_BASE` besides
    /// the public roots, for the certificate downloads (the sandbox's CA),
    /// as payment-service reads it.
    pub wechat_extra_root_ca: Option<String>,
    /// `GATEWAY_HEADER_TIMEOUT_MS`, `GATEWAY_REQUEST_TIMEOUT_MS`,
    /// `GATEWAY_IDLE_TIMEOUT_MS`, `GATEWAY_MAX_CONNECTIONS`, `GATEWAY_MAX_IN_FLIGHT`.
    pub limits: Limits,
    /// `RETENTION_DAYS` (90).
    pub retention: Duration,
}

fn limits_from_env() -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let positive = |var: &'static str, default: u64| -> Result<u64, ConfigError> {
        match config::parsed_or(var, default)? {
            0 => Err(ConfigError::new(var, "must be at least 1")),
            v => Ok(v),
        }
    };
    let count = |var: &'static str, default: usize| -> Result<usize, ConfigError> {
        usize::try_from(positive(var, default as u64)?)
            .map_err(|_| ConfigError::new(var, "is too large"))
    };
    Ok(Limits {
        header_timeout: Duration::from_millis(positive(
            "GATEWAY_HEADER_TIMEOUT_MS",
            d.header_timeout.as_millis() as u64,
        )?),
        request_timeout: Duration::from_millis(positive(
            "GATEWAY_REQUEST_TIMEOUT_MS",
            d.request_timeout.as_millis() as u64,
        )?),
        idle_timeout: Duration::from_millis(positive(
            "GATEWAY_IDLE_TIMEOUT_MS",
            d.idle_timeout.as_millis() as u64,
        )?),
        max_connections: count("GATEWAY_MAX_CONNECTIONS", d.max_connections)?,
        max_in_flight: count("GATEWAY_MAX_IN_FLIGHT", d.max_in_flight)?,
    })
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            database_url: config::database_url()?,
            redis_url: config::redis_url()?,
            merchants: config::merchants()?,
            addr: config::addr("GATEWAY_ADDR", DEFAULT_ADDR)?,
            metrics_addr: config::addr("GATEWAY_METRICS_ADDR", DEFAULT_METRICS_ADDR)?,
            cloudpay_secret: config::optional("CLOUDPAY_CALLBACK_SECRET")?
                .map(|s| CloudpaySecret::parse(&s))
                .transpose()
                .map_err(|reason| ConfigError::new("CLOUDPAY_CALLBACK_SECRET", reason))?,
            wechat_api_base: config::url(
                "WECHAT_API_BASE",
                config::optional("WECHAT_API_BASE")?
                    .unwrap_or_else(|| WECHAT_DEFAULT_API_BASE.to_owned()),
                &["https", "http"],
            )?,
            wechat_extra_root_ca: config::optional("WECHAT_EXTRA_ROOT_CA")?,
            limits: limits_from_env()?,
            retention: config::retention()?,
        })
    }
}

/// The `default` merchant alone, read and validated exactly as payment-service
/// reads it (the embedded stack's settings use it).
pub use wxpay_runtime::config::merchant_from_env;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_cloudpay_secrets_are_refused_and_secrets_never_print() {
        assert!(CloudpaySecret::parse("short").is_err());
        assert!(CloudpaySecret::parse(&"x".repeat(31)).is_err());
        let s = CloudpaySecret::parse("a-long-enough-shared-secret-0123").expect("32 bytes");
        assert!(!format!("{s:?}").contains("long-enough"));
    }
}
