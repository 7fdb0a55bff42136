//! What the single-process stack is made of: which store, which bus, which
//! merchant, which addresses, read from the environment for `cargo run` or built
//! in code for the demo, the tests and the benchmark ([`crate::labels`] shows them
//! to a person).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use payment_service::reconciler::ReconcilerConfig;
use secrecy::SecretString;
use wxpay_core::watch_token::WatchSecret;
use wxpay_core::{
    domain::MerchantName,
    wechat::{ApiKey, Merchant, MerchantEntry, SignType},
};
use wxpay_runtime::{
    callers_file::ScopedCaller,
    config::{self, ConfigError},
};

pub use crate::labels::{bus_label, redact_password, storage_label};

/// Where `cargo run` keeps its orders when `DATABASE_URL` is not set.
pub const DEFAULT_SQLITE_PATH: &str = "./data/wxpay.db";

/// WeChat's documented test merchant (the values of its signature examples).
/// Real WeChat refuses them, so they are only good against the sandbox.
pub const TEST_APP_ID: &str = "wxd930ea5d5a258f4f";
pub const TEST_MCH_ID: &str = "10000100";
pub const TEST_API_KEY: &str = "192006250b4c09247ec02edce69f6a2d";

/// Where orders live.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A SQLite file in WAL mode (created with its directory when missing).
    Sqlite(PathBuf),
    /// A Postgres URL (migrations run at start-up).
    Postgres(String),
}

/// How committed events reach the poller.
#[derive(Debug, Clone)]
pub enum Bus {
    /// [`LocalBus`]: a function call from the publisher into the poller's hub.
    InProcess,
    /// Redis pub/sub, as in the split deployment.
    Redis(String),
}

/// Everything the embedded stack needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub storage: Storage,
    pub bus: Bus,
    /// The `default` merchant and its sign type.
    pub merchant: Merchant,
    pub sign_type: SignType,
    /// Further merchants (`MERCHANTS_FILE`): the stack's sandbox hosts each
    /// and issues each its own client certificate, which replaces the
    /// certificate paths the file may give.
    pub merchants: Vec<MerchantEntry>,
    /// Where `merchants` were read from: the split deployment hands the file
    /// itself to the sandbox, payment-service and the gateway.
    pub merchants_file: Option<PathBuf>,
    pub payment_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    /// The gateway's Prometheus `/metrics` (`GATEWAY_METRICS_ADDR`), off its public port.
    pub gateway_metrics_addr: SocketAddr,
    pub poller_addr: SocketAddr,
    pub poller_metrics_addr: SocketAddr,
    /// The poller's WebSocket / SSE watch for mini programs (`POLLER_HTTP_ADDR`).
    pub poller_http_addr: SocketAddr,
    /// Signs and checks watch tokens (`WATCH_TOKEN_SECRET`). `None`: the stack
    /// makes a random one at start (tokens then last as long as the process).
    pub watch_secret: Option<WatchSecret>,
    pub sandbox_addr: SocketAddr,
    pub api_token: Option<SecretString>,
    /// `API_READ_TOKEN`: reads and queries for every merchant; in the split
    /// deployment also what the poller's fallback calls QueryOrder with.
    pub api_read_token: Option<SecretString>,
    /// `API_CALLERS_FILE`'s callers, parsed: the embedded services check them.
    pub api_callers: Vec<ScopedCaller>,
    /// Where they were read from: the split deployment hands the file itself
    /// to payment-service and the poller (the variables its tables name come
    /// from whoever starts the binaries).
    pub api_callers_file: Option<PathBuf>,
    /// Divides the sandbox's notification retry schedule.
    pub sandbox_time_factor: u32,
    /// The sandbox settles each accepted refund on its own after this long
    /// (`SANDBOX_REFUND_SETTLE_MS`, 2000 here; 0: only through its control API).
    pub sandbox_refund_settle: Option<Duration>,
    /// The poller asks WeChat about a watched unpaid order after this long.
    pub fallback_delay: Duration,
    /// The cap of that query's backoff.
    pub fallback_max_delay: Duration,
    /// How payment-service's reconciler asks WeChat about unsettled orders.
    pub reconcile: ReconcilerConfig,
    /// The operator console (`CONSOLE_ADDR`, `CONSOLE_USERS_FILE`); `None`: not served.
    pub console: Option<ConsoleSettings>,
}

/// Where the embedded console listens and who may sign in.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub addr: SocketAddr,
    /// `CONSOLE_USERS_FILE`; `None`: one operator, `operator`, with a password
    /// generated at start and printed once (it lasts as long as the process).
    pub users_file: Option<PathBuf>,
}

impl Settings {
    /// The split deployment's variables and defaults, except that storage and the
    /// bus fall back to SQLite and the in-process bus, and the merchant to
    /// WeChat's test merchant. `WECHAT_API_BASE` and `WECHAT_NOTIFY_URL` are not
    /// read: this process talks to its own sandbox, which notifies its own gateway.
    pub fn from_env() -> Result<Self, ConfigError> {
        let storage = match config::optional("DATABASE_URL")? {
            Some(url) => Storage::Postgres(config::url(
                "DATABASE_URL",
                url,
                &["postgres", "postgresql"],
            )?),
            None => Storage::Sqlite(PathBuf::from(DEFAULT_SQLITE_PATH)),
        };
        let bus = match config::optional("REDIS_URL")? {
            Some(url) => Bus::Redis(config::url("REDIS_URL", url, &["redis", "rediss"])?),
            None => Bus::InProcess,
        };
        let merchant = match config::optional("WECHAT_APP_ID")? {
            // A merchant given in the environment must be complete and valid.
            Some(_) => gateway::config::merchant_from_env()?,
            None => test_merchant(),
        };
        let sign_type = config::sign_type_from_env()?;
        let merchants = config::merchants_file()?;
        if merchants.iter().any(|m| m.name == MerchantName::DEFAULT) {
            // This process's `default` is the WECHAT_* merchant or WeChat's
            // test merchant; a file's `default` would silently lose to it.
            return Err(ConfigError::new(
                "MERCHANTS_FILE",
                "merchant default: name is the WECHAT_* (or test) merchant's here; rename the table",
            ));
        }
        let sandbox_time_factor: u32 = config::parsed_or("SANDBOX_TIME_FACTOR", 1)?;
        if sandbox_time_factor == 0 {
            return Err(ConfigError::new(
                "SANDBOX_TIME_FACTOR",
                "must be a whole number of at least 1",
            ));
        }
        // Loopback unless told otherwise: this process runs WeChat's public test
        // merchant, whose key anyone can use to forge a notification.
        let payment_addr = config::addr("PAYMENT_ADDR", "127.0.0.1:50051")?;
        let poller_addr = config::addr("POLLER_ADDR", "127.0.0.1:50052")?;
        let api_token = config::api_token()?;
        let api_read_token = config::api_read_token(api_token.as_ref())?;
        let names: Vec<&str> = std::iter::once(MerchantName::DEFAULT)
            .chain(merchants.iter().map(|m| m.name.as_str()))
            .collect();
        let api_callers =
            config::api_callers(Some(&names), api_token.as_ref(), api_read_token.as_ref())?;
        // This process serves no TLS: off loopback with a token it needs
        // ALLOW_PLAINTEXT=1, as the split services do without TLS_CERT.
        let checks_tokens = api_token.is_some() || !api_callers.is_empty();
        for (var, addr) in [("PAYMENT_ADDR", payment_addr), ("POLLER_ADDR", poller_addr)] {
            config::require_token_off_loopback(var, addr, api_token.as_ref())?;
            config::require_tls_off_loopback(var, addr, checks_tokens, false)?;
        }
        Ok(Self {
            storage,
            bus,
            merchant,
            sign_type,
            merchants,
            merchants_file: config::optional("MERCHANTS_FILE")?.map(PathBuf::from),
            payment_addr,
            gateway_addr: config::addr("GATEWAY_ADDR", "127.0.0.1:8080")?,
            gateway_metrics_addr: config::addr(
                "GATEWAY_METRICS_ADDR",
                gateway::config::DEFAULT_METRICS_ADDR,
            )?,
            poller_addr,
            poller_metrics_addr: config::addr("POLLER_METRICS_ADDR", "127.0.0.1:9091")?,
            poller_http_addr: config::addr("POLLER_HTTP_ADDR", "127.0.0.1:8081")?,
            watch_secret: config::watch_secret()?,
            sandbox_addr: config::addr("SANDBOX_ADDR", wechat_sandbox::DEFAULT_ADDR)?,
            api_token,
            api_read_token,
            api_callers,
            api_callers_file: config::optional("API_CALLERS_FILE")?.map(PathBuf::from),
            sandbox_time_factor,
            sandbox_refund_settle: {
                let ms: u64 = config::parsed_or("SANDBOX_REFUND_SETTLE_MS", 2000)?;
                (ms > 0).then(|| Duration::from_millis(ms))
            },
            fallback_delay: Duration::from_millis(config::parsed_or(
                "POLLER_FALLBACK_DELAY_MS",
                5000,
            )?),
            fallback_max_delay: Duration::from_millis(config::parsed_or(
                "POLLER_FALLBACK_MAX_DELAY_MS",
                60_000,
            )?),
            reconcile: ReconcilerConfig::from_env()?,
            console: Some(ConsoleSettings {
                addr: console_addr()?,
                users_file: config::optional("CONSOLE_USERS_FILE")?.map(PathBuf::from),
            }),
        })
    }

    /// A private stack: SQLite at `sqlite_path`, the in-process bus, the test
    /// merchant, every service on a free port of 127.0.0.1, no token. The demo and
    /// the tests use it; the environment is not read.
    pub fn ephemeral(sqlite_path: PathBuf) -> Self {
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        Self {
            storage: Storage::Sqlite(sqlite_path),
            bus: Bus::InProcess,
            merchant: test_merchant(),
            sign_type: SignType::Md5,
            merchants: Vec::new(),
            merchants_file: None,
            payment_addr: any,
            gateway_addr: any,
            gateway_metrics_addr: any,
            poller_addr: any,
            poller_metrics_addr: any,
            poller_http_addr: any,
            watch_secret: None,
            sandbox_addr: any,
            api_token: None,
            api_read_token: None,
            api_callers: Vec::new(),
            api_callers_file: None,
            sandbox_time_factor: 1,
            // Tests settle refunds through the sandbox's control API.
            sandbox_refund_settle: None,
            fallback_delay: Duration::from_secs(5),
            fallback_max_delay: Duration::from_secs(60),
            reconcile: ReconcilerConfig::default(),
            console: None,
        }
    }
}

/// `CONSOLE_ADDR`: internal only, so never off loopback in this process
/// (whose sessions end with it and whose first password is printed).
fn console_addr() -> Result<SocketAddr, ConfigError> {
    let addr = config::addr("CONSOLE_ADDR", console::config::DEFAULT_ADDR)?;
    if !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            "CONSOLE_ADDR",
            "the single-process console serves plain HTTP with a printed password: keep it on a loopback address (run the `console` binary for anything else)",
        ));
    }
    Ok(addr)
}

/// WeChat's documented test merchant.
pub fn test_merchant() -> Merchant {
    let api_key = match ApiKey::parse(TEST_API_KEY) {
        Ok(key) => key,
        Err(_) => unreachable!("the documented test key is 32 hex digits"),
    };
    Merchant {
        app_id: TEST_APP_ID.to_owned(),
        mch_id: TEST_MCH_ID.to_owned(),
        api_key,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    // The only test of this binary that touches these variables, so none races with it.
    #[test]
    fn without_database_or_redis_urls_it_runs_on_sqlite_and_the_in_process_bus() {
        for var in [
            "DATABASE_URL",
            "REDIS_URL",
            "WECHAT_APP_ID",
            "WECHAT_MCH_ID",
            "WECHAT_API_KEY",
            "WECHAT_SIGN_TYPE",
            "PAYMENT_ADDR",
            "GATEWAY_ADDR",
            "POLLER_ADDR",
            "SANDBOX_ADDR",
        ] {
            std::env::remove_var(var);
        }
        let s = Settings::from_env().expect("nothing is required");
        assert!(matches!(&s.storage, Storage::Sqlite(p) if p == Path::new(DEFAULT_SQLITE_PATH)));
        assert!(matches!(s.bus, Bus::InProcess));
        assert_eq!(s.merchant.app_id, TEST_APP_ID);
        assert_eq!(s.payment_addr.port(), 50051);
        assert_eq!(s.gateway_addr.port(), 8080);
        assert_eq!(s.poller_addr.port(), 50052);
        assert_eq!(s.sandbox_addr.port(), 8090);

        std::env::set_var("DATABASE_URL", "postgres://app@db/wxpay");
        std::env::set_var("REDIS_URL", "redis://cache:6379");
        let s = Settings::from_env().expect("valid URLs");
        assert!(matches!(s.storage, Storage::Postgres(_)));
        assert!(matches!(s.bus, Bus::Redis(_)));

        std::env::set_var("REDIS_URL", "cache:6379");
        let err = Settings::from_env().expect_err("no scheme");
        assert_eq!(err.var, "REDIS_URL");
        std::env::remove_var("REDIS_URL");
        std::env::set_var("WECHAT_APP_ID", "wx0123456789abcdef");
        let err = Settings::from_env().expect_err("a merchant must be complete");
        assert_eq!(err.var, "WECHAT_MCH_ID");
        for var in ["DATABASE_URL", "REDIS_URL", "WECHAT_APP_ID"] {
            std::env::remove_var(var);
        }
    }
}
