//! The sandbox's configuration: the merchants it hosts (a default one and any
//! further accounts, e.g. from `MERCHANTS_FILE`, v3 ones with the key files
//! they name prepared first), WeChat's v3 key pairs when made in advance, how fast time runs for
//! notification retries, the time limits WeChat enforces on orders, the daily
//! bill's layout, the TLS listener, and the durations of its simulated failures. Read from
//! the environment by the binary (through payment_service's helpers, so a bad value
//! is one line naming the variable), built directly by tests.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::TimeDelta;

use crate::{
    accounts::{Account, Registry},
    bill::BillLayout,
    tls::{self, TlsSettings, TlsSource, DEFAULT_TLS_ADDR},
    wechat_keys::WechatSideKeys,
};

use wxpay_core::wechat::{ApiKey, Merchant, MerchantEntry};
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
    /// WeChat's v3 key pairs (its public key's, its first platform
    /// certificate's), when made before the sandbox (the binary writes the
    /// public key out for the merchants first). `None`: made at start when an
    /// account speaks v3.
    pub wechat_keys: Option<WechatSideKeys>,
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
            wechat_keys: None,
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
        let wechat_keys = prepare_v3_files()?;
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
            wechat_keys,
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
/// is read with the product's own parser (the same file configures both,
/// v3 merchants' key files included); the `WECHAT_*` variables, when any is
/// set, define the default merchant (v3 with `WECHAT_API_VERSION=v3`, as the
/// services read them), else the file's entry named `default`, else its first.
pub fn merchants_from_env() -> Result<(Merchant, Vec<MerchantEntry>), ConfigError> {
    let mut entries = config::merchants_file()?;
    let wechat_set = ["WECHAT_APP_ID", "WECHAT_MCH_ID", "WECHAT_API_KEY"]
        .into_iter()
        .any(|var| std::env::var_os(var).is_some());
    let from_file = entries
        .iter()
        .find(|e| e.name == "default")
        .or(entries.first());
    let merchant = match from_file {
        Some(entry) if !wechat_set => entry.merchant.clone(),
        _ => {
            let entry = config::default_merchant_from_env()?;
            let merchant = entry.merchant.clone();
            // A v3 default is hosted with its v3 side too.
            if entry.v3.is_some() {
                entries.push(entry);
            }
            merchant
        }
    };
    Ok((merchant, entries))
}

/// A v3 merchant's key files as a merchants file (or the `WECHAT_*`
/// variables) names them, read before the product's parser reads the files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct V3Files {
    mch_id: String,
    private_key: Option<String>,
    serial_no: Option<String>,
    public_key: Option<String>,
}

/// Every v3 merchant's key files named in `text` (a merchants file). Lenient:
/// whatever is odd here the product's parser refuses afterwards, naming it.
fn v3_files_in(text: &str) -> Vec<V3Files> {
    let Ok(root) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let Some(toml::Value::Array(tables)) = root.get("merchant") else {
        return Vec::new();
    };
    let field =
        |t: &toml::Table, k: &str| t.get(k).and_then(toml::Value::as_str).map(str::to_owned);
    tables
        .iter()
        .filter_map(toml::Value::as_table)
        .filter(|t| field(t, "api_version").as_deref() == Some("v3"))
        .map(|t| V3Files {
            mch_id: field(t, "mch_id").unwrap_or_default(),
            private_key: field(t, "private_key"),
            serial_no: field(t, "serial_no"),
            public_key: field(t, "wechatpay_public_key"),
        })
        .collect()
}

/// The default merchant's v3 key files, when `WECHAT_API_VERSION=v3`.
fn v3_files_in_env() -> Option<V3Files> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    (var("WECHAT_API_VERSION").as_deref() == Some("v3")).then(|| V3Files {
        mch_id: var("WECHAT_MCH_ID").unwrap_or_default(),
        private_key: var("WECHAT_PRIVATE_KEY"),
        serial_no: var("WECHAT_SERIAL_NO"),
        public_key: var("WECHAT_PUBLIC_KEY"),
    })
}

/// Makes the files v3 merchants name before anything reads them, so the
/// sandbox and the services can share one configuration: WeChat's keys are
/// generated, each `wechatpay_public_key` file is (over)written with the
/// sandbox's WeChat Pay public key (the file is the sandbox's: a file naming
/// a real key would not verify the sandbox anyway), and a `private_key` file
/// that does not exist yet is issued (a fresh key pair; an existing one is
/// kept, and its public half is what requests are checked with). `None`
/// when no merchant speaks v3.
fn prepare_v3_files() -> Result<Option<WechatSideKeys>, ConfigError> {
    const FILE: &str = "MERCHANTS_FILE";
    let mut files: Vec<(&'static str, V3Files)> = Vec::new();
    if let Some(path) = config::optional(FILE)? {
        // Unreadable: the product's parser says so, naming the file.
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.extend(v3_files_in(&text).into_iter().map(|f| (FILE, f)));
        }
    }
    files.extend(v3_files_in_env().map(|f| ("WECHAT_PRIVATE_KEY", f)));
    if files.is_empty() {
        return Ok(None);
    }
    let keys = WechatSideKeys::generate().map_err(|e| ConfigError::new(FILE, e.to_string()))?;
    for (var, f) in &files {
        if let Some(path) = &f.public_key {
            crate::keygen::write_public(Path::new(path), keys.public_key.public_pem())
                .map_err(|e| ConfigError::new(var, e.to_string()))?;
            tracing::info!(mch_id = %f.mch_id, path, "wrote the sandbox's WeChat Pay public key");
        }
        if let (Some(path), Some(serial_no)) = (&f.private_key, &f.serial_no) {
            if !Path::new(path).exists() {
                crate::keygen::issue_merchant_key_at(Path::new(path), serial_no)
                    .map_err(|e| ConfigError::new(var, e.to_string()))?;
                tracing::info!(mch_id = %f.mch_id, path, serial_no, "issued the merchant's API key");
            }
        }
    }
    Ok(Some(keys))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v3_key_files_of_a_merchants_file_are_found_and_v2_ones_ignored() {
        let text = r#"
[[merchant]]
name = "old"
app_id = "wx1"
mch_id = "100"
api_key = "k"

[[merchant]]
name = "shop"
api_version = "v3"
app_id = "wx2"
mch_id = "200"
serial_no = "5157F09E"
private_key = "/keys/shop/apiclient_key.pem"
wechatpay_public_key = "/keys/shop/pub_key.pem"
wechatpay_public_key_id = "PUB_KEY_ID_01"

[[merchant]]
name = "certs"
api_version = "v3"
app_id = "wx3"
mch_id = "300"
private_key = "/keys/certs/apiclient_key.pem"
"#;
        assert_eq!(
            v3_files_in(text),
            [
                V3Files {
                    mch_id: "200".into(),
                    private_key: Some("/keys/shop/apiclient_key.pem".into()),
                    serial_no: Some("5157F09E".into()),
                    public_key: Some("/keys/shop/pub_key.pem".into()),
                },
                V3Files {
                    mch_id: "300".into(),
                    private_key: Some("/keys/certs/apiclient_key.pem".into()),
                    serial_no: None,
                    public_key: None,
                },
            ]
        );
        // What the product's parser refuses is left to it.
        assert!(v3_files_in("not toml [").is_empty());
        assert!(v3_files_in("merchant = 1").is_empty());
    }
}
