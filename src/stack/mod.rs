//! The one assembly of the product in a process: the WeChat Pay sandbox,
//! payment-service, the gateway and the poller over one store and one event bus,
//! each on its own listener, with one shutdown for all. `cargo run`, `cargo run
//! -- demo`, the embedded tests and the benchmark driver all start it; the split
//! deployment's harness derives its processes' environment from the same
//! [`Settings`] (see `split`).
//!
//! It owns the wiring only. Each service keeps its own `Application`, the same
//! code as the split deployment, so the gRPC and HTTP contract is the split
//! deployment's. What a caller may swap is in [`Parts`].

use std::sync::Arc;

use anyhow::Context;
use futures::future::BoxFuture;
use payment_service::{
    config::{MerchantAccount, WechatConfig},
    wechat::{ClientOptions, ClientTls},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use wechat_sandbox::{Sandbox, SandboxConfig};
use wxpay_core::{
    domain::MerchantName,
    watch_token::WatchSecret,
    wechat::{MerchantBook, MerchantEntry},
};
use wxpay_store::{EventPublisher, LocalBus, RedisPublisher, SqliteStore, Store};

mod parts;
mod running;
pub mod v3_demo;

pub use parts::{Parts, Service};
pub use v3_demo::V3Demo;

use parts::{open_store, poller_config};

use crate::{
    addresses::{bind, reachable, reachable_addr, with_port, Addresses},
    querier::InProcessQuerier,
    settings::{Bus, Settings},
};

/// The four services, running.
pub struct Stack {
    addresses: Addresses,
    settings: Settings,
    store: Arc<dyn Store>,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
    /// The name of each service whose task ended, in order.
    ended: mpsc::UnboundedReceiver<&'static str>,
    /// Closed last, so the WAL is checkpointed into the database file.
    sqlite: Option<SqliteStore>,
    /// The v3 demo merchant's key files, kept while the stack runs.
    v3_demo_keys: Option<V3Demo>,
    /// The first operator's password when the console made one (no
    /// `CONSOLE_USERS_FILE`): printed once in the banner, kept nowhere else.
    console_password: Option<String>,
}

impl Stack {
    /// The console's one-time password for `operator`, when it generated one.
    pub fn console_password(&self) -> Option<&str> {
        self.console_password.as_deref()
    }

    /// Whether the v3 demo merchant ([`v3_demo::NAME`]) is hosted.
    pub fn hosts_v3_demo(&self) -> bool {
        self.v3_demo_keys.is_some()
    }

    /// The v3 demo merchant, when hosted.
    pub fn v3_demo_entry(&self) -> Option<&MerchantEntry> {
        self.v3_demo_keys.as_ref().map(|d| &d.entry)
    }

    /// The v3 demo merchant and WeChat's keys for it, when hosted.
    pub fn v3_demo(&self) -> Option<&V3Demo> {
        self.v3_demo_keys.as_ref()
    }

    /// Opens the store, binds every listener and starts serving. Fails (with the
    /// address or URL at fault) before anything is served.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        Self::start_with(settings, Parts::default()).await
    }

    /// [`Stack::start`] with some parts supplied by the caller.
    pub async fn start_with(settings: Settings, mut parts: Parts) -> anyhow::Result<Self> {
        let v3_demo = parts.v3_demo.take();
        let (store, console_store, sqlite) = match parts.store {
            // A store the caller made: the console has no view of it.
            Some(store) => (store, None, None),
            None => {
                let (store, console_store, sqlite) = open_store(&settings.storage).await?;
                (store, Some(console_store), sqlite)
            }
        };
        let store_for = |service| match &parts.store_for {
            Some(wrap) => wrap(service, store.clone()),
            None => store.clone(),
        };
        let local_bus = LocalBus::new();
        let publisher: Arc<dyn EventPublisher> = match &settings.bus {
            Bus::InProcess => Arc::new(local_bus.clone()),
            Bus::Redis(url) => Arc::new(RedisPublisher::new(url).context("cannot use REDIS_URL")?),
        };

        // The sandbox and the gateway are bound first: payment-service needs the
        // sandbox's URL as its WeChat API and the gateway's as its notify_url.
        // Every merchant this process serves: the configured ones, and the v3
        // demo merchant when the caller issued one.
        let mut hosted = settings.merchants.clone();
        hosted.extend(v3_demo.as_ref().map(|d| d.entry.clone()));
        let sandbox_config = SandboxConfig {
            time_factor: settings.sandbox_time_factor,
            refund_settle_after: settings.sandbox_refund_settle,
            wechat_keys: v3_demo.as_ref().map(|d| d.wechat_keys.clone()),
            ..SandboxConfig::new(settings.merchant.clone())
        }
        .with_merchants(&hosted);
        let sandbox = Sandbox::build(sandbox_config, settings.sandbox_addr)
            .await
            .with_context(|| format!("cannot listen on SANDBOX_ADDR {}", settings.sandbox_addr))?;
        let gateway_listener = bind("GATEWAY_ADDR", settings.gateway_addr).await?;
        let gateway_metrics_listener =
            bind("GATEWAY_METRICS_ADDR", settings.gateway_metrics_addr).await?;
        let payment_listener = bind("PAYMENT_ADDR", settings.payment_addr).await?;
        let partial = Addresses {
            payment: reachable(&payment_listener)?,
            gateway: reachable(&gateway_listener)?,
            gateway_metrics: reachable(&gateway_metrics_listener)?,
            poller: settings.poller_addr,
            poller_metrics: settings.poller_metrics_addr,
            poller_http: settings.poller_http_addr,
            sandbox: reachable_addr(sandbox.local_addr()?),
            console: None,
        };
        // One secret for payment-service (issues watch tokens) and the poller
        // (checks them); a random one unless WATCH_TOKEN_SECRET gives it.
        let watch_secret = match &settings.watch_secret {
            Some(secret) => secret.clone(),
            None => random_watch_secret(),
        };

        // The whole API over the sandbox's TLS listener, with the client
        // certificate it issued for each merchant: refunds (/secapi/) work out
        // of the box, over real mutual TLS, as they would against WeChat.
        let default = MerchantEntry::direct(
            MerchantName::DEFAULT,
            settings.merchant.clone(),
            settings.sign_type,
        );
        let mut merchants = Vec::with_capacity(1 + hosted.len());
        for entry in std::iter::once(&default).chain(&hosted) {
            merchants.push(MerchantAccount {
                entry: entry.clone(),
                client_tls: Some(sandbox_client_tls(&sandbox, &entry.merchant.mch_id)?),
            });
        }
        let book = MerchantBook::new(merchants.iter().map(|m| m.entry.clone()).collect())
            .map_err(|e| anyhow::anyhow!("MERCHANTS_FILE: {e}"))?;
        let wechat_config = WechatConfig {
            merchants,
            api_base: sandbox.https_url(),
            notify_url: partial.notify_url(),
            refund_notify_url: None,
            v3_notify_url: None,
            v3_refund_notify_url: None,
        };
        // WeChat's keys for the v3 merchants, one set for the process: the
        // gateway verifies notifications with the same keys payment-service
        // verifies answers with (and one download serves both).
        let client_options = ClientOptions::default();
        let platform_keys = wechat_config
            .platform_keys(
                store_for(Service::Payment),
                &client_options,
                wxpay_wechat_v3::KeysOptions::default(),
            )
            .await
            .context("cannot load WeChat's keys for the v3 merchants")?;
        let wechat = wechat_config
            .clients_with_keys(client_options, platform_keys.as_ref())
            .context("cannot build the WeChat Pay client")?;
        let payment = payment_service::Application::from_parts(
            payment_listener,
            store_for(Service::Payment),
            publisher.clone(),
            wechat,
            wxpay_runtime::auth::ApiTokens {
                full: settings.api_token.clone(),
                read: settings.api_read_token.clone(),
                callers: settings.api_callers.clone(),
            },
            settings.reconcile.clone(),
        )
        .with_watch_secret(Some(watch_secret.clone()))
        .with_platform_keys(platform_keys.clone());
        let gateway = gateway::Application::from_parts(
            gateway_listener,
            store_for(Service::Gateway),
            publisher.clone(),
            book,
            None,
        )
        // The sandbox answers orderquery as WeChat would (over plain HTTP: the
        // gateway presents no client certificate).
        .with_wechat_api(&sandbox.base_url())?
        .with_metrics_listener(gateway_metrics_listener);
        // The same keys as the key source only: payment-service already runs
        // their refresh loop, one per process is enough.
        let gateway = match platform_keys {
            Some(keys) => gateway.with_wechat_keys(keys),
            None => gateway,
        };
        // One metrics registry for the process: the gateway installs it, and the
        // poller's /metrics renders the same one instead of an empty registry.
        poller::metrics::use_installed(gateway.state().metrics.clone());

        let poller_config = poller_config(&settings, partial.payment_url(), watch_secret);
        let querier = parts
            .querier
            .unwrap_or_else(|| Arc::new(InProcessQuerier::new(payment.payments())));
        let poller_store = store_for(Service::Poller);
        let poller = match &settings.bus {
            Bus::InProcess => {
                poller::Application::build_with_feed(
                    poller_config,
                    poller_store,
                    querier,
                    // Only this process publishes on the in-process bus.
                    poller::application::FeedTrust::Trusted,
                    |sink, _| local_bus.feed(sink),
                )
                .await
            }
            Bus::Redis(_) => {
                poller::Application::build_with(poller_config, poller_store, querier).await
            }
        }
        .context("cannot start the poller (POLLER_ADDR / POLLER_METRICS_ADDR)")?;
        let console = match (&settings.console, console_store) {
            (Some(console_settings), Some(data)) => Some(
                start_console(
                    console_settings,
                    data,
                    poller.watch_service(),
                    &partial.payment_url(),
                    settings.api_token.clone(),
                )
                .await?,
            ),
            _ => None,
        };
        let addresses = Addresses {
            console: console
                .as_ref()
                .and_then(|(app, _)| app.local_addr())
                .map(reachable_addr),
            poller: with_port(settings.poller_addr, poller.port()),
            poller_metrics: with_port(settings.poller_metrics_addr, poller.metrics_port()),
            poller_http: with_port(
                settings.poller_http_addr,
                poller
                    .http_port()
                    .unwrap_or(settings.poller_http_addr.port()),
            ),
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
        let console_password = match console {
            Some((app, password)) => {
                spawn("console", Box::pin(app.run_until_stopped(signal())));
                password
            }
            None => None,
        };
        Ok(Self {
            console_password,
            addresses,
            settings,
            store,
            stop,
            tasks,
            ended,
            sqlite,
            v3_demo_keys: v3_demo,
        })
    }
}

/// The operator console over the stack's own store, the poller's watch (the
/// same hub: no second subscription) and payment-service's API. Without a
/// users file, one operator named [`FIRST_OPERATOR`] with a fresh password.
async fn start_console(
    settings: &crate::settings::ConsoleSettings,
    data: Arc<dyn wxpay_store::console::ConsoleStore>,
    watch: poller::service::WatchService,
    payment_url: &str,
    api_token: Option<secrecy::SecretString>,
) -> anyhow::Result<(console::Application, Option<String>)> {
    use console::users::{self, NewUser, Role, UserBook, Users};
    let (users, password) = match &settings.users_file {
        Some(path) => (UserBook::from_file(path)?, None),
        None => {
            let password = users::generate_password();
            let users = Users::from_new(&[NewUser {
                name: FIRST_OPERATOR.to_owned(),
                role: Role::Operator,
                merchants: None,
                password: password.clone(),
            }])?;
            (UserBook::fixed(users), Some(password))
        }
    };
    let actions = console::actions::Actions::new(payment_url, api_token, data.clone())
        .context("the console's PaymentService client")?;
    let app = console::Application::build_with(console::Parts {
        addr: settings.addr,
        store: data,
        users,
        watch: Some(watch),
        actions,
        session_key: None,
        // Plain HTTP on loopback (CONSOLE_ADDR is refused elsewhere here).
        secure_cookie: false,
    })
    .await?;
    Ok((app, password))
}

/// The console's first operator when `cargo run` has no users file.
pub const FIRST_OPERATOR: &str = "operator";

/// The merchant's client certificate the sandbox issued, with the sandbox's CA
/// trusted for its TLS listener.
fn sandbox_client_tls(sandbox: &Sandbox, mch_id: &str) -> anyhow::Result<ClientTls> {
    use secrecy::ExposeSecret;
    let files = sandbox.tls_files();
    let client = files
        .client_for(mch_id)
        .with_context(|| format!("the sandbox issued no client certificate for {mch_id}"))?;
    ClientTls::from_pem(
        client.cert_pem().as_bytes(),
        client.key_pem().expose_secret().as_bytes(),
    )
    .and_then(|tls| tls.with_extra_root(files.ca_pem().as_bytes()))
    .map_err(|e| anyhow::anyhow!("the sandbox's TLS files: {e}"))
}

/// 48 random letters and digits from the OS-seeded CSPRNG.
fn random_watch_secret() -> WatchSecret {
    use rand::{distr::Alphanumeric, Rng};
    let secret: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect();
    match WatchSecret::new(&secret) {
        Some(s) => s,
        None => unreachable!("48 characters are more than the minimum"),
    }
}
