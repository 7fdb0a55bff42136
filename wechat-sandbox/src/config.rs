//! The sandbox's configuration: the merchants it hosts (a default one and any
//! further accounts, e.g. from `MERCHANTS_FILE`), how fast time runs for
//! notification retries, the time limits WeChat enforces on orders, the daily
//! bill's layout, the TLS listener, and the durations of its simulated failures. Read from
//! the environment by the binary (through payment_service's helpers, so a bad value
//! is one line naming the variable), built directly by tests.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use chrono::TimeDelta;

use crate::{
    accounts::{Account, Registry},
    bill::BillLayout,
    tls::{self, TlsSettings, TlsSource, DEFAULT_TLS_ADDR},
};

use wxpay_core::wechat::{parse_merchants, ApiKey, Merchant, MerchantEntry};
use wxpay_runtime::config::{self, ConfigError};

/// Where the binary listens unless `SANDBOX_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8090";

/// WeChat's floor for `time_expire`, seconds ahead of now ("其他5分钟").
pub const DEFAULT_MIN_EXPIRE_SECONDS: u64 = 300;

/// WeChat's minimum age of an order before closeorder accepts it.
pub const DEFAULT_CLOSE_MIN_AGE_SECONDS: u64 = 300;

/// The largest value the binary accepts for either rule above (one day).
const MAX_RULE_SECONDS: u64 = 86_400;

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The default merchant: a direct merchant the sandbox always hosts (the
    /// `WECHAT_*` variables), whose client certificate is `client.pem`.
    pub merchant: Merchant,
    /// Further accounts, each verified with its own key and issued its own
    /// client certificate; a mch_id listed more than once (also the default's)
    /// is one account with every appid and sub merchant of its listings.
    pub accounts: Vec<Account>,
    /// Divides WeChat's notification retry schedule: 1000 turns 15 s into 15 ms.
    /// Never zero.
    pub time_factor: u32,
    /// How long a `timeout` fault holds a request before dropping the connection:
    /// longer than any sensible client timeout.
    pub fault_hang: Duration,
    /// How long one notification attempt waits for the merchant's answer.
    pub notify_timeout: Duration,
    /// unifiedorder refuses a `time_expire` closer than this to now (WeChat: 5
    /// minutes for JSAPI/NATIVE/APP/MWEB). Tests may lower it; the notification
    /// time factor does not touch it, because it is a rule, not a pace.
    pub min_expire: Duration,
    /// closeorder refuses an order younger than this (WeChat: 5 minutes after
    /// creation). Tests may lower it, or age an order through the control API.
    pub close_min_age: Duration,
    /// The daily bill's layout: WeChat's current 27 columns or the older 24.
    pub bill_layout: BillLayout,
    /// The TLS listener that serves `/secapi/` to the merchant's client
    /// certificate: by default on a free loopback port with certificates issued
    /// at start into a temporary directory.
    pub tls: TlsSettings,
    /// WeChat moves a refund's money on its own after a while; with this set,
    /// each refund it accepts settles SUCCESS (and is notified) that long after,
    /// as on the real API (`SANDBOX_REFUND_SETTLE_MS`). `None`: a refund stays
    /// PROCESSING until the control API settles it (what tests want).
    pub refund_settle_after: Option<Duration>,
}

impl SandboxConfig {
    /// The real pacing, for a merchant.
    pub fn new(merchant: Merchant) -> Self {
        Self {
            merchant,
            accounts: Vec::new(),
            time_factor: 1,
            fault_hang: Duration::from_secs(30),
            notify_timeout: Duration::from_secs(5),
            min_expire: Duration::from_secs(DEFAULT_MIN_EXPIRE_SECONDS),
            close_min_age: Duration::from_secs(DEFAULT_CLOSE_MIN_AGE_SECONDS),
            bill_layout: BillLayout::Current,
            tls: TlsSettings::default(),
            refund_settle_after: None,
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

    /// Adds one account per merchants-file entry (see [`Account::from_entry`]).
    pub fn with_merchants(mut self, entries: &[MerchantEntry]) -> Self {
        self.accounts
            .extend(entries.iter().map(Account::from_entry));
        self
    }

    /// Every hosted mch_id merged; refused when one mch_id has two keys.
    pub(crate) fn registry(&self) -> Result<Registry, String> {
        Registry::new(&self.merchant, &self.accounts)
    }

    /// [`Self::min_expire`] as a chrono span, for comparing with order times.
    pub(crate) fn min_expire_span(&self) -> TimeDelta {
        span(self.min_expire)
    }

    /// [`Self::close_min_age`] as a chrono span.
    pub(crate) fn close_min_age_span(&self) -> TimeDelta {
        span(self.close_min_age)
    }

    /// `WECHAT_APP_ID`, `WECHAT_MCH_ID`, `WECHAT_API_KEY` (the names the services use)
    /// and `MERCHANTS_FILE` (the product's file: each entry an account, see
    /// [`merchants_from_env`]), with `SANDBOX_TIME_FACTOR`, `SANDBOX_MIN_EXPIRE_SECONDS`,
    /// `SANDBOX_CLOSE_MIN_AGE_SECONDS`, `SANDBOX_BILL_LAYOUT`, and the TLS
    /// listener's `SANDBOX_TLS_ADDR`, `SANDBOX_TLS_DIR` or `SANDBOX_TLS_CA` +
    /// `SANDBOX_TLS_CERT` + `SANDBOX_TLS_KEY` (see [`tls_from_env`]); with
    /// `SANDBOX_ADDR`, the plain listener's address.
    pub fn from_env() -> Result<(Self, SocketAddr), ConfigError> {
        let (merchant, entries) = merchants_from_env()?;
        let time_factor: u32 = config::parsed_or("SANDBOX_TIME_FACTOR", 1)?;
        if time_factor == 0 {
            return Err(ConfigError::new(
                "SANDBOX_TIME_FACTOR",
                "must be a whole number of at least 1",
            ));
        }
        let min_expire: u64 =
            config::parsed_or("SANDBOX_MIN_EXPIRE_SECONDS", DEFAULT_MIN_EXPIRE_SECONDS)?;
        let close_min_age: u64 = config::parsed_or(
            "SANDBOX_CLOSE_MIN_AGE_SECONDS",
            DEFAULT_CLOSE_MIN_AGE_SECONDS,
        )?;
        for (var, value) in [
            ("SANDBOX_MIN_EXPIRE_SECONDS", min_expire),
            ("SANDBOX_CLOSE_MIN_AGE_SECONDS", close_min_age),
        ] {
            // The rules compare against chrono times; a day is far beyond any real use.
            if value > MAX_RULE_SECONDS {
                return Err(ConfigError::new(
                    var,
                    format!("must be a whole number of seconds up to {MAX_RULE_SECONDS}"),
                ));
            }
        }
        let bill_layout = match config::optional("SANDBOX_BILL_LAYOUT")? {
            None => BillLayout::Current,
            Some(v) => v.parse().map_err(|()| {
                ConfigError::new("SANDBOX_BILL_LAYOUT", "must be 27 or 24 (columns)")
            })?,
        };
        let addr = config::addr("SANDBOX_ADDR", DEFAULT_ADDR)?;
        let tls = tls_from_env(&merchant.mch_id)?;
        let settle_ms: u64 = config::parsed_or("SANDBOX_REFUND_SETTLE_MS", 0)?;
        if settle_ms > MAX_RULE_SECONDS * 1000 {
            return Err(ConfigError::new(
                "SANDBOX_REFUND_SETTLE_MS",
                "must be a whole number of milliseconds up to a day (0: never on its own)",
            ));
        }
        let config = Self {
            tls,
            refund_settle_after: (settle_ms > 0).then(|| Duration::from_millis(settle_ms)),
            bill_layout,
            time_factor,
            min_expire: Duration::from_secs(min_expire),
            close_min_age: Duration::from_secs(close_min_age),
            ..Self::new(merchant)
        }
        .with_merchants(&entries);
        config
            .registry()
            .map_err(|reason| ConfigError::new("MERCHANTS_FILE", reason))?;
        Ok((config, addr))
    }
}

/// The default merchant and the merchants file's entries. `MERCHANTS_FILE`
/// is read with the product's own parser (the same file configures both);
/// `WECHAT_APP_ID`/`WECHAT_MCH_ID`/`WECHAT_API_KEY`, when any is set, define
/// the default merchant, else the file's entry named `default`, else its first.
pub fn merchants_from_env() -> Result<(Merchant, Vec<MerchantEntry>), ConfigError> {
    const FILE: &str = "MERCHANTS_FILE";
    let entries = match config::optional(FILE)? {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(FILE, format!("cannot read {path}: {e}")))?;
            parse_merchants(&text, |var| std::env::var(var).ok())
                .map_err(|e| ConfigError::new(FILE, format!("{path}: {e}")))?
        }
    };
    let wechat_set = ["WECHAT_APP_ID", "WECHAT_MCH_ID", "WECHAT_API_KEY"]
        .into_iter()
        .any(|var| std::env::var_os(var).is_some());
    let from_file = entries
        .iter()
        .find(|e| e.name == "default")
        .or(entries.first());
    let merchant = match from_file {
        Some(entry) if !wechat_set => entry.merchant.clone(),
        _ => config::merchant_from_env()?,
    };
    Ok((merchant, entries))
}

/// The TLS listener's settings: `SANDBOX_TLS_ADDR` (127.0.0.1:8443), and either
/// `SANDBOX_TLS_DIR` (where generated certificates are written; a fresh
/// temporary directory by default) or all of `SANDBOX_TLS_CA`, `SANDBOX_TLS_CERT`
/// and `SANDBOX_TLS_KEY` (PEM files to use instead, read and checked here so
/// that a bad one stops start-up with one line naming it).
pub fn tls_from_env(mch_id: &str) -> Result<TlsSettings, ConfigError> {
    let addr = config::addr("SANDBOX_TLS_ADDR", DEFAULT_TLS_ADDR)?;
    let dir = config::optional("SANDBOX_TLS_DIR")?.map(PathBuf::from);
    let given = [
        ("SANDBOX_TLS_CA", config::optional("SANDBOX_TLS_CA")?),
        ("SANDBOX_TLS_CERT", config::optional("SANDBOX_TLS_CERT")?),
        ("SANDBOX_TLS_KEY", config::optional("SANDBOX_TLS_KEY")?),
    ];
    let source = match given {
        [(_, None), (_, None), (_, None)] => {
            if let Some(dir) = &dir {
                if dir.exists() && !dir.is_dir() {
                    return Err(ConfigError::new(
                        "SANDBOX_TLS_DIR",
                        format!("{} is not a directory", dir.display()),
                    ));
                }
            }
            TlsSource::Generate { dir }
        }
        [(_, Some(ca)), (_, Some(cert)), (_, Some(key))] => {
            if dir.is_some() {
                return Err(ConfigError::new(
                    "SANDBOX_TLS_DIR",
                    "cannot be used with SANDBOX_TLS_CA, SANDBOX_TLS_CERT and SANDBOX_TLS_KEY (nothing is generated)",
                ));
            }
            let source = TlsSource::Files {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            };
            tls::prepare(&source, &[mch_id]).map_err(|e| ConfigError::new(e.var, e.reason))?;
            source
        }
        partial => {
            let missing = partial
                .iter()
                .find(|(_, value)| value.is_none())
                .map_or("SANDBOX_TLS_CA", |(var, _)| *var);
            return Err(ConfigError::new(
                missing,
                "must be set too: SANDBOX_TLS_CA, SANDBOX_TLS_CERT and SANDBOX_TLS_KEY go together",
            ));
        }
    };
    Ok(TlsSettings { addr, source })
}

/// A std duration as a chrono span; one too long for chrono (a test may set any
/// `Duration`) saturates, which the rules only ever compare against.
fn span(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
