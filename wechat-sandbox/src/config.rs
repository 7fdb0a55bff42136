//! The sandbox's configuration: the one merchant it knows, how fast time runs for
//! notification retries, and the durations of its simulated failures. Read from
//! the environment by the binary (through payment_service's helpers, so a bad value
//! is one line naming the variable), built directly by tests.

use std::{net::SocketAddr, time::Duration};

use wxpay_core::wechat::{ApiKey, Merchant};
use wxpay_runtime::config::{self, ConfigError};

/// Where the binary listens unless `SANDBOX_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8090";

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The only merchant the sandbox accepts requests from and signs for.
    pub merchant: Merchant,
    /// Divides WeChat's notification retry schedule: 1000 turns 15 s into 15 ms.
    /// Never zero.
    pub time_factor: u32,
    /// How long a `timeout` fault holds a request before dropping the connection:
    /// longer than any sensible client timeout.
    pub fault_hang: Duration,
    /// How long one notification attempt waits for the merchant's answer.
    pub notify_timeout: Duration,
}

impl SandboxConfig {
    /// The real pacing, for a merchant.
    pub fn new(merchant: Merchant) -> Self {
        Self {
            merchant,
            time_factor: 1,
            fault_hang: Duration::from_secs(30),
            notify_timeout: Duration::from_secs(5),
        }
    }

    /// A fixed test merchant with time running 1000 times faster, so a test sees
    /// the whole retry schedule (24 h) in about 90 s and the first retries in
    /// milliseconds. The key is public and only ever valid against a sandbox.
    pub fn for_tests() -> Self {
        let api_key = match ApiKey::parse("sandboxtestkey0123456789abcdefgh") {
            Ok(key) => key,
            Err(_) => unreachable!("the test key is 32 letters and digits"),
        };
        Self {
            time_factor: 1000,
            ..Self::new(Merchant {
                app_id: "wx0123456789abcdef".to_owned(),
                mch_id: "1900000109".to_owned(),
                api_key,
            })
        }
    }

    /// `WECHAT_APP_ID`, `WECHAT_MCH_ID`, `WECHAT_API_KEY` (the names the services use)
    /// and `SANDBOX_TIME_FACTOR`; with `SANDBOX_ADDR`, the listen address.
    pub fn from_env() -> Result<(Self, SocketAddr), ConfigError> {
        let merchant = config::merchant_from_env()?;
        let time_factor: u32 = config::parsed_or("SANDBOX_TIME_FACTOR", 1)?;
        if time_factor == 0 {
            return Err(ConfigError::new(
                "SANDBOX_TIME_FACTOR",
                "must be a whole number of at least 1",
            ));
        }
        let addr = config::addr("SANDBOX_ADDR", DEFAULT_ADDR)?;
        let config = Self {
            time_factor,
            ..Self::new(merchant)
        };
        Ok((config, addr))
    }
}
