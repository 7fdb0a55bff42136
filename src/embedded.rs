//! The embedded stack: payment-service, gateway, poller and the WeChat Pay
//! sandbox assembled in one process, on SQLite and the in-process event bus by
//! default, on Postgres / Redis when `DATABASE_URL` / `REDIS_URL` are set.
//!
//! It owns the wiring only: which store and which bus, which address each
//! service binds, and one shutdown for all of them. Each service keeps its own
//! `Application` (the same code as the split deployment, built with
//! `from_parts` / `build_with_feed`), so the gRPC and HTTP contract is exactly
//! the split deployment's.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use futures::future::BoxFuture;
use payment_service::{
    config::WechatConfig,
    wechat::{ClientOptions, WechatClient},
};
use poller::Deadlines;
use secrecy::SecretString;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use wechat_sandbox::{Sandbox, SandboxConfig};
use wxpay_core::wechat::{ApiKey, Merchant, SignType};
use wxpay_runtime::config::{self, ConfigError};
use wxpay_store::{EventPublisher, LocalBus, PgStore, RedisPublisher, SqliteStore, Store};

use crate::querier::InProcessQuerier;

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
    pub merchant: Merchant,
    pub sign_type: SignType,
    pub payment_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub poller_addr: SocketAddr,
    pub poller_metrics_addr: SocketAddr,
    pub sandbox_addr: SocketAddr,
    pub api_token: Option<SecretString>,
    /// Divides the sandbox's notification retry schedule.
    pub sandbox_time_factor: u32,
    /// The poller asks WeChat about a watched unpaid order after this long.
    pub fallback_delay: Duration,
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
        let sign_type = match config::optional("WECHAT_SIGN_TYPE")? {
            None => SignType::Md5,
            Some(s) => s
                .parse()
                .map_err(|_| ConfigError::new("WECHAT_SIGN_TYPE", "must be MD5 or HMAC-SHA256"))?,
        };
        let sandbox_time_factor: u32 = config::parsed_or("SANDBOX_TIME_FACTOR", 1)?;
        if sandbox_time_factor == 0 {
            return Err(ConfigError::new(
                "SANDBOX_TIME_FACTOR",
                "must be a whole number of at least 1",
            ));
        }
        Ok(Self {
            storage,
            bus,
            merchant,
            sign_type,
            payment_addr: config::addr("PAYMENT_ADDR", "0.0.0.0:50051")?,
            gateway_addr: config::addr("GATEWAY_ADDR", gateway::config::DEFAULT_ADDR)?,
            poller_addr: config::addr("POLLER_ADDR", "0.0.0.0:50052")?,
            poller_metrics_addr: config::addr("POLLER_METRICS_ADDR", "0.0.0.0:9091")?,
            sandbox_addr: config::addr("SANDBOX_ADDR", wechat_sandbox::DEFAULT_ADDR)?,
            api_token: config::api_token()?,
            sandbox_time_factor,
            fallback_delay: Duration::from_millis(config::parsed_or(
                "POLLER_FALLBACK_DELAY_MS",
                5000,
            )?),
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
            payment_addr: any,
            gateway_addr: any,
            poller_addr: any,
            poller_metrics_addr: any,
            sandbox_addr: any,
            api_token: None,
            sandbox_time_factor: 1,
            fallback_delay: Duration::from_secs(5),
        }
    }
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

/// Where each service can be reached (unspecified bind addresses written as 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub payment: SocketAddr,
    pub gateway: SocketAddr,
    pub poller: SocketAddr,
    pub poller_metrics: SocketAddr,
    pub sandbox: SocketAddr,
}

impl Addresses {
    pub fn payment_url(&self) -> String {
        format!("http://{}", self.payment)
    }

    pub fn poller_url(&self) -> String {
        format!("http://{}", self.poller)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn sandbox_url(&self) -> String {
        format!("http://{}", self.sandbox)
    }

    /// The `notify_url` sent with every unifiedorder: this process's gateway.
    pub fn notify_url(&self) -> String {
        format!("{}/wechat/pay/notify", self.gateway_url())
    }
}

/// The four services, running.
pub struct Stack {
    addresses: Addresses,
    settings: Settings,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    /// The name of each service whose task ended, in order.
    ended: mpsc::UnboundedReceiver<&'static str>,
    /// Closed last, so the WAL is checkpointed into the database file.
    sqlite: Option<SqliteStore>,
}

impl Stack {
    /// Opens the store, binds every listener and starts serving. Fails (with the
    /// address or URL at fault) before anything is served.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        let (store, sqlite): (Arc<dyn Store>, _) = match &settings.storage {
            Storage::Sqlite(path) => {
                let store = SqliteStore::open(path).await.with_context(|| {
                    format!("cannot open the SQLite database {}", path.display())
                })?;
                (Arc::new(store.clone()), Some(store))
            }
            Storage::Postgres(url) => (
                Arc::new(
                    PgStore::connect(url, Default::default())
                        .await
                        .context("cannot use DATABASE_URL")?,
                ),
                None,
            ),
        };
        let local_bus = LocalBus::new();
        let publisher: Arc<dyn EventPublisher> = match &settings.bus {
            Bus::InProcess => Arc::new(local_bus.clone()),
            Bus::Redis(url) => Arc::new(RedisPublisher::new(url).context("cannot use REDIS_URL")?),
        };

        // The sandbox and the gateway are bound first: payment-service needs the
        // sandbox's URL as its WeChat API and the gateway's as its notify_url.
        let sandbox_config = SandboxConfig {
            time_factor: settings.sandbox_time_factor,
            ..SandboxConfig::new(settings.merchant.clone())
        };
        let sandbox = Sandbox::build(sandbox_config, settings.sandbox_addr)
            .await
            .with_context(|| format!("cannot listen on SANDBOX_ADDR {}", settings.sandbox_addr))?;
        let gateway_listener = bind("GATEWAY_ADDR", settings.gateway_addr).await?;
        let payment_listener = bind("PAYMENT_ADDR", settings.payment_addr).await?;
        let partial = Addresses {
            payment: reachable(&payment_listener)?,
            gateway: reachable(&gateway_listener)?,
            poller: settings.poller_addr,
            poller_metrics: settings.poller_metrics_addr,
            sandbox: reachable_addr(sandbox.local_addr()?),
        };

        let wechat_config = WechatConfig {
            merchant: settings.merchant.clone(),
            sign_type: settings.sign_type,
            api_base: partial.sandbox_url(),
            notify_url: partial.notify_url(),
        };
        let wechat = WechatClient::new(
            &wechat_config.api_base,
            wechat_config.merchant.clone(),
            ClientOptions::default(),
        )
        .context("cannot build the WeChat Pay client")?;
        let payment = payment_service::application::Application::from_parts(
            payment_listener,
            store.clone(),
            publisher.clone(),
            wechat,
            &wechat_config,
            settings.api_token.clone(),
        );
        let gateway = gateway::Application::from_parts(
            gateway_listener,
            store.clone(),
            publisher.clone(),
            settings.merchant.clone(),
            None,
        );
        // One metrics registry for the process: the gateway installs it, and the
        // poller's /metrics renders the same one instead of an empty registry.
        poller::metrics::use_installed(gateway.state().metrics.clone());

        let poller_config = poller::Config {
            database_url: storage_label(&settings.storage),
            redis_url: match &settings.bus {
                Bus::Redis(url) => url.clone(),
                Bus::InProcess => String::new(),
            },
            addr: settings.poller_addr,
            metrics_addr: settings.poller_metrics_addr,
            payment_service_url: partial.payment_url(),
            api_token: settings.api_token.clone(),
            deadlines: Deadlines {
                default: Duration::from_secs(300),
                max: Duration::from_secs(1800),
            },
            fallback_delay: settings.fallback_delay,
            fallback_max_delay: Duration::from_secs(60),
            redis_client_name: "wxpay-embedded".to_owned(),
            keepalive_interval: Duration::from_secs(30),
        };
        let querier = Arc::new(InProcessQuerier::new(payment.payments()));
        let poller = match &settings.bus {
            Bus::InProcess => {
                poller::Application::build_with_feed(
                    poller_config,
                    store.clone(),
                    querier,
                    |sink, _| local_bus.feed(sink),
                )
                .await
            }
            Bus::Redis(_) => {
                poller::Application::build_with(poller_config, store.clone(), querier).await
            }
        }
        .context("cannot start the poller (POLLER_ADDR / POLLER_METRICS_ADDR)")?;
        let addresses = Addresses {
            poller: with_port(settings.poller_addr, poller.port()),
            poller_metrics: with_port(settings.poller_metrics_addr, poller.metrics_port()),
            ..partial
        };

        let stop = CancellationToken::new();
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        let mut spawn = |name: &'static str, service: BoxFuture<'static, anyhow::Result<()>>| {
            let ended_tx = ended_tx.clone();
            let task = tokio::spawn(async move {
                let outcome = service.await;
                // Only `run_until` listens; after shutdown nobody does, which is fine.
                let _ = ended_tx.send(name);
                outcome
            });
            tasks.push((name, task));
        };
        let signal = || stop.clone().cancelled_owned();
        spawn(
            "wechat-sandbox",
            Box::pin({
                let s = signal();
                async move { sandbox.run_until_stopped(s).await.map_err(Into::into) }
            }),
        );
        spawn("gateway", Box::pin(gateway.run_until_stopped(signal())));
        spawn(
            "payment-service",
            Box::pin(payment.run_until_stopped(signal())),
        );
        spawn("poller", Box::pin(poller.run_until_stopped(signal())));
        Ok(Self {
            addresses,
            settings,
            stop,
            tasks,
            ended,
            sqlite,
        })
    }

    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Serves until `shutdown` resolves (or a service stops on its own, which is
    /// a failure), then stops everything gracefully.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // A service ends on its own only when it failed; then the rest stop too,
        // rather than leave a half-working product running.
        let early = tokio::select! {
            _ = shutdown => None,
            name = self.ended.recv() => name,
        };
        let result = self.stop().await;
        match early {
            Some(name) => Err(anyhow::anyhow!(
                "{name} stopped unexpectedly; everything was shut down"
            )),
            None => result,
        }
    }

    /// Stops every service (each drains its in-flight work, bounded) and closes
    /// the store. Returns the first service failure, if any.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut first_error = None;
        for (name, task) in self.tasks {
            let outcome = match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context(format!("{name} failed"))),
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            tracing::debug!(service = name, "stopped");
            if let Err(e) = outcome {
                tracing::error!(error = format!("{e:#}"), "service failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(sqlite) = self.sqlite {
            sqlite.close().await;
        }
        tracing::info!("all services stopped");
        first_error.map_or(Ok(()), Err)
    }
}

async fn bind(var: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {var} {addr}"))
}

fn reachable(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    Ok(reachable_addr(listener.local_addr()?))
}

/// A bound address as a client dials it: 0.0.0.0 / [::] become loopback.
fn reachable_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

fn with_port(addr: SocketAddr, port: u16) -> SocketAddr {
    reachable_addr(SocketAddr::new(addr.ip(), port))
}

/// How the storage is shown to a person: a Postgres URL without its password.
pub fn storage_label(storage: &Storage) -> String {
    match storage {
        Storage::Sqlite(path) => format!("SQLite {} (WAL)", path.display()),
        Storage::Postgres(url) => format!("Postgres {}", redact_password(url)),
    }
}

/// How the bus is shown to a person.
pub fn bus_label(bus: &Bus) -> String {
    match bus {
        Bus::InProcess => "in-process bus".to_owned(),
        Bus::Redis(url) => format!("Redis {}", redact_password(url)),
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`.
pub fn redact_password(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?'])
        .map_or(url.len(), |i| start + i);
    let authority = &url[start..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..start],
            &authority[..colon],
            &url[start + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn passwords_never_reach_the_banner() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/wxpay?sslmode=require"),
            "postgres://app:***@db:5432/wxpay?sslmode=require"
        );
        assert_eq!(
            redact_password("redis://:s3cret@cache:6379"),
            "redis://:***@cache:6379"
        );
        assert_eq!(
            redact_password("postgres://postgres@127.0.0.1:5432/wxpay"),
            "postgres://postgres@127.0.0.1:5432/wxpay"
        );
    }

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

    #[test]
    fn unspecified_bind_addresses_are_dialled_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        assert_eq!(reachable_addr(any).to_string(), "127.0.0.1:8080");
        let lan: SocketAddr = "10.0.0.5:8080".parse().expect("address");
        assert_eq!(reachable_addr(lan), lan);
    }
}
