//! The state every handler shares: configuration, the hosted accounts, the
//! v3 key ring (WeChat's keys and the v3 merchants'), the order book, the
//! v3 bill files described and not yet fetched, the fault counters, the HTTP client that sends notifications, and the shutdown
//! token that stops hanging handlers and retry loops. Cheap to clone.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::{
    accounts::Registry,
    bill::Downloads,
    config::SandboxConfig,
    faults::FaultCounters,
    orders::OrderBook,
    wechat_keys::{KeyRing, WechatSideKeys},
};

#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    accounts: Registry,
    /// `None` when no account speaks v3 (nothing to sign with, nothing made).
    keys: Option<Mutex<KeyRing>>,
    orders: Mutex<OrderBook>,
    bill_downloads: Mutex<Downloads>,
    faults: FaultCounters,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl AppState {
    /// Fails when the configuration lists one mch_id with two keys, or the
    /// notification client cannot be built. With a v3 account, WeChat's keys
    /// are `config.wechat_keys`, or made here (blocking for a few seconds:
    /// `Sandbox::build` makes them off the runtime's threads first).
    pub fn new(config: SandboxConfig) -> Result<Self, std::io::Error> {
        let accounts = config.registry().map_err(std::io::Error::other)?;
        let keys = if accounts.has_v3() {
            let side = match &config.wechat_keys {
                Some(k) => k.clone(),
                None => WechatSideKeys::generate().map_err(std::io::Error::other)?,
            };
            let ring = KeyRing::new(&accounts, &side, chrono::Utc::now())
                .map_err(std::io::Error::other)?;
            Some(Mutex::new(ring))
        } else {
            None
        };
        let http = reqwest::Client::builder()
            .timeout(config.notify_timeout)
            .user_agent("Mozilla/4.0 (wechat-sandbox)")
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                accounts,
                keys,
                orders: Mutex::new(OrderBook::default()),
                bill_downloads: Mutex::new(Downloads::default()),
                faults: FaultCounters::default(),
                http,
                shutdown: CancellationToken::new(),
            }),
        })
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Every hosted account, by mch_id.
    pub(crate) fn accounts(&self) -> &Registry {
        &self.inner.accounts
    }

    /// The v3 key ring, when any account speaks v3. Never held across an `.await`.
    pub(crate) fn keys(&self) -> Option<MutexGuard<'_, KeyRing>> {
        // Every change to the ring is one insertion or assignment.
        self.inner
            .keys
            .as_ref()
            .map(|k| k.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The order book. Never held across an `.await`.
    pub fn orders(&self) -> MutexGuard<'_, OrderBook> {
        // Every change to the book is a single assignment sequence that cannot
        // panic halfway through, so a poisoned lock still guards a consistent book.
        self.inner
            .orders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The v3 bill files described by a trade bill answer. Never held across
    /// an `.await`.
    pub(crate) fn bill_downloads(&self) -> MutexGuard<'_, Downloads> {
        // Each change is one insertion (and evictions before it).
        self.inner
            .bill_downloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub fn faults(&self) -> &FaultCounters {
        &self.inner.faults
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Cancelled when the sandbox stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }
}
