//! Wiring: the store, the users, the live watch and the PaymentService client
//! into one router; `Application::build` binds (port 0 works for tests) and
//! `run_until_stopped` serves until shutdown.

use std::{
    future::{Future, IntoFuture},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use axum::{
    extract::FromRef,
    http::{header, HeaderValue},
    routing::{get, post},
    Router,
};
use axum_extra::extract::cookie::Key;
use poller::service::WatchService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use wxpay_store::{console::ConsoleStore, postgres::PgOptions, PgStore};

use crate::{
    actions::Actions,
    config::Config,
    pages,
    session::{Limiter, SignInLimiter},
    users::UserBook,
};

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Everything a handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn ConsoleStore>,
    pub users: UserBook,
    pub key: Key,
    pub secure_cookie: bool,
    pub limiter: Limiter,
    pub actions: Actions,
    /// The live status of an order's page; `None`: pages do not update live.
    pub watch: Option<WatchService>,
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Self {
        state.key.clone()
    }
}

/// What the console is built from (the embedded stack passes its own).
pub struct Parts {
    pub addr: SocketAddr,
    pub store: Arc<dyn ConsoleStore>,
    pub users: UserBook,
    pub watch: Option<WatchService>,
    pub actions: Actions,
    /// 64 bytes; `None`: a random key (sessions end with the process).
    pub session_key: Option<Vec<u8>>,
    pub secure_cookie: bool,
}

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// Stops the live watch's Redis feed (standalone console only).
    watch_shutdown: Option<CancellationToken>,
}

impl Application {
    /// The standalone console: Postgres (`DATABASE_URL`), Redis for the live
    /// status (`REDIS_URL`), payment-service for every action.
    pub async fn build(config: Config, pool: PgOptions) -> anyhow::Result<Self> {
        let store = PgStore::connect(&config.database_url, pool)
            .await
            .context("cannot open the database")?;
        let store = Arc::new(store);
        let users = UserBook::from_file(&config.users_file)?;
        if users.snapshot().is_empty() {
            tracing::warn!(file = %config.users_file.display(), "the users file has no user: nobody can sign in (add one with `console add-user NAME --role operator`)");
        }
        let shutdown = CancellationToken::new();
        let watch = poller::application::redis_watch(
            store.clone(),
            &config.redis_url,
            "wxpay-console",
            poller::Deadlines {
                default: Duration::from_secs(15 * 60),
                max: Duration::from_secs(60 * 60),
            },
            10_000,
            shutdown.clone(),
        )?;
        let actions = Actions::new(
            &config.payment_service_url,
            config.api_token.clone(),
            store.clone(),
        )
        .context("PAYMENT_SERVICE_URL")?;
        let mut app = Self::build_with(Parts {
            addr: config.addr,
            store,
            users,
            watch: Some(watch),
            actions,
            session_key: config.session_key.clone(),
            secure_cookie: config.secure_cookie,
        })
        .await?;
        app.watch_shutdown = Some(shutdown);
        Ok(app)
    }

    pub async fn build_with(parts: Parts) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(parts.addr)
            .await
            .with_context(|| format!("cannot listen on {} (CONSOLE_ADDR)", parts.addr))?;
        let key = match &parts.session_key {
            Some(bytes) => Key::try_from(bytes.as_slice())
                .map_err(|e| anyhow::anyhow!("CONSOLE_SESSION_KEY: {e}"))?,
            None => Key::generate(),
        };
        let state = AppState {
            store: parts.store,
            users: parts.users,
            key,
            secure_cookie: parts.secure_cookie,
            limiter: Arc::new(SignInLimiter::default()),
            actions: parts.actions,
            watch: parts.watch,
        };
        Ok(Self {
            listener,
            state,
            watch_shutdown: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        // The users file is read again when it changes, and idle limiter keys
        // are dropped, every few seconds.
        let housekeeping = {
            let users = state.users.clone();
            let limiter = state.limiter.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(2));
                loop {
                    tick.tick().await;
                    users.refresh();
                    limiter.forget_idle();
                }
            })
        };
        let app = router(state);
        // At shutdown the live streams end first (their pages reconnect to
        // another replica), or the graceful drain would wait on them forever;
        // whatever still runs after DRAIN is cut.
        let watch = self.watch_shutdown.clone();
        let (fired_tx, fired_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            if let Some(token) = watch {
                token.cancel();
            }
            let _ = fired_tx.send(());
        };
        let serve = axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .into_future();
        tokio::pin!(serve);
        let served = tokio::select! {
            served = &mut serve => served,
            () = async {
                if fired_rx.await.is_ok() {
                    tokio::time::sleep(DRAIN).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("console: requests still open {DRAIN:?} after shutdown were cut");
                Ok(())
            }
        };
        housekeeping.abort();
        if let Some(token) = self.watch_shutdown {
            token.cancel();
        }
        served.context("console server")
    }
}

/// Every route. Pages are GETs; every change is a POST form carrying the
/// session's CSRF token.
pub fn router(state: AppState) -> Router {
    let headers = ServiceBuilder::new()
        .map_response(|mut response: axum::response::Response| {
            let h = response.headers_mut();
            // No page of the console may be framed (clickjacking of the
            // refund button), sniffed, or leak its URLs (order numbers) to
            // another site; scripts only from the console itself.
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                     script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                ),
            );
            if !h.contains_key(header::CACHE_CONTROL) {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            response
        });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/console.js", get(pages::script))
        .route("/console.css", get(pages::style))
        .route("/login", get(pages::login::form).post(pages::login::submit))
        .route("/logout", post(pages::login::logout))
        .route("/", get(pages::dashboard::show))
        .route("/orders", get(pages::orders::list))
        .route("/orders/totals", get(pages::orders::totals))
        .route("/orders/{out_trade_no}", get(pages::order::show))
        .route(
            "/orders/{out_trade_no}/timeline",
            get(pages::order::timeline_page),
        )
        .route("/orders/{out_trade_no}/events", get(pages::order::live))
        .route("/orders/{out_trade_no}/refund", post(pages::order::refund))
        .route("/orders/{out_trade_no}/query", post(pages::order::query))
        .route("/orders/{out_trade_no}/close", post(pages::order::close))
        .route("/anomalies", get(pages::anomalies::list))
        .route("/anomalies/{id}/resolve", post(pages::anomalies::resolve))
        .route("/refunds", get(pages::refunds::list))
        .route("/bills", get(pages::bills::list))
        .route("/bills/open", get(pages::bills::open))
        .route("/bills/{day}", get(pages::bills::show))
        .route("/bills/{day}/reconcile", post(pages::bills::reconcile))
        .route("/audit", get(pages::audit::list))
        .layer(headers)
        .with_state(state)
}
