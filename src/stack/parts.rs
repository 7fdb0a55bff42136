//! What a caller may swap in the stack ([`Parts`]), and opening the store
//! `Settings::storage` names when it swaps nothing.

use std::sync::Arc;

use anyhow::Context;
use poller::OrderQuerier;
use wxpay_store::console::ConsoleStore;
use wxpay_store::{PgStore, SqliteStore, Store};

use std::time::Duration;

use poller::Deadlines;

use crate::settings::{storage_label, Bus, Settings, Storage};

/// A service that uses the store, for [`Parts::store_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Payment,
    Gateway,
    Poller,
}

pub(crate) type StoreWrapper = Box<dyn Fn(Service, Arc<dyn Store>) -> Arc<dyn Store> + Send + Sync>;

/// What a caller may put in place of the stack's own parts.
#[derive(Default)]
pub struct Parts {
    /// A store to use instead of opening the one `Settings::storage` names.
    pub store: Option<Arc<dyn Store>>,
    /// Wraps the store each service gets (the benchmark counts calls per service).
    pub store_for: Option<StoreWrapper>,
    /// How the poller asks about a watched order whose notification is late;
    /// payment-service's own `QueryOrder`, in process, by default.
    pub querier: Option<Arc<dyn OrderQuerier>>,
    /// A v3 merchant to host beside the configured ones (`cargo run` and its
    /// demo issue one: [`super::V3Demo::issue`]).
    pub v3_demo: Option<super::V3Demo>,
}

/// The store `storage` names, and the SQLite handle to close last when it is one.
/// The store, the same store as the console reads it, and the SQLite handle
/// to close last (when it is SQLite).
pub(super) type OpenedStore = (Arc<dyn Store>, Arc<dyn ConsoleStore>, Option<SqliteStore>);

pub(super) async fn open_store(storage: &Storage) -> anyhow::Result<OpenedStore> {
    Ok(match storage {
        Storage::Sqlite(path) => {
            let store = SqliteStore::open(path)
                .await
                .with_context(|| format!("cannot open the SQLite database {}", path.display()))?;
            (
                Arc::new(store.clone()),
                Arc::new(store.clone()),
                Some(store),
            )
        }
        Storage::Postgres(url) => {
            let store = PgStore::connect(url, Default::default())
                .await
                .context("cannot use DATABASE_URL")?;
            (Arc::new(store.clone()), Arc::new(store), None)
        }
    })
}

/// The poller's configuration in the single-process stack: the same store and
/// bus, and payment-service's address for its fallback.
pub(super) fn poller_config(
    settings: &Settings,
    payment_url: String,
    watch_secret: wxpay_core::watch_token::WatchSecret,
) -> poller::Config {
    poller::Config {
        database_url: storage_label(&settings.storage),
        redis_url: match &settings.bus {
            Bus::Redis(url) => url.clone(),
            Bus::InProcess => String::new(),
        },
        addr: settings.poller_addr,
        metrics_addr: settings.poller_metrics_addr,
        payment_service_url: payment_url,
        api_token: settings.api_token.clone(),
        api_read_token: settings.api_read_token.clone(),
        api_callers: settings.api_callers.clone(),
        deadlines: Deadlines {
            default: Duration::from_secs(300),
            max: Duration::from_secs(1800),
        },
        fallback_delay: settings.fallback_delay,
        fallback_max_delay: settings.fallback_max_delay,
        redis_client_name: "wxpay-embedded".to_owned(),
        keepalive_interval: Duration::from_secs(30),
        max_streams: 200_000,
        tls: None,
        payment_service_ca: None,
        http_addr: settings.poller_http_addr,
        http_limits: wxpay_runtime::http_edge::ConnectionLimits {
            max_connections: poller::config::DEFAULT_HTTP_MAX_CONNECTIONS as usize,
            ..Default::default()
        },
        watch_secret: Some(watch_secret),
        sse_allow_origin: None,
        max_streams_per_connection: 1000,
    }
}
