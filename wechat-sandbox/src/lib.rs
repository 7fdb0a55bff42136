//! wechat-sandbox: an offline simulator of the WeChat Pay v2 endpoints this
//! product calls (`/pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`,
//! `/secapi/pay/refund`, `/pay/refundquery`, `/pay/downloadbill`), with
//! WeChat's checks and signed replies, payment and refund notifications retried
//! on WeChat's schedule, the daily bill built from its own trades, injectable
//! faults, and a JSON control API (`/sandbox/…`) to play the payer and WeChat's
//! bank side. It uses the product's own signing, XML and refund-cipher code, so
//! it speaks exactly what the product expects, and holds everything in memory.
//!
//! Entry points: [`app`] builds the router; [`Sandbox::build`] binds and
//! [`Sandbox::run_until_stopped`] serves (what `main` and tests share);
//! [`spawn`] runs one in the background of a test and returns a [`SandboxHandle`].

mod bill;
mod config;
mod control;
mod faults;
mod handle;
mod notify;
mod orders;
mod protocol;
mod state;
mod wechat_api;

use std::{future::Future, net::SocketAddr};

use axum::Router;
use tokio::net::{TcpListener, ToSocketAddrs};

pub use bill::BillLayout;
pub use config::{
    SandboxConfig, DEFAULT_ADDR, DEFAULT_CLOSE_MIN_AGE_SECONDS, DEFAULT_MIN_EXPIRE_SECONDS,
};
pub use control::{
    AgeOptions, FailOptions, NotifyOptions, OrderView, PayOptions, RefundView, SettleOptions,
    MAX_AGE_SECONDS, MAX_DUPLICATES,
};
pub use faults::Faults;
pub use handle::{spawn, ControlError, SandboxHandle};
pub use notify::{retry_delays, Delivery};
pub use orders::{DeliveryAttempt, RefundStatus, MAX_REFUNDS_PER_ORDER};
pub use state::AppState;

/// The whole HTTP surface: WeChat's endpoints and the control API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(wechat_api::routes())
        .merge(control::routes())
        .with_state(state)
}

/// A sandbox bound to its port, not yet serving.
#[derive(Debug)]
pub struct Sandbox {
    listener: TcpListener,
    port: u16,
    state: AppState,
}

impl Sandbox {
    /// Binds `addr` (`"127.0.0.1:0"` picks a free port).
    pub async fn build(config: SandboxConfig, addr: impl ToSocketAddrs) -> std::io::Result<Self> {
        let state = AppState::new(config).map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `http://HOST:PORT`; an unspecified host (0.0.0.0) is written as 127.0.0.1.
    pub fn base_url(&self) -> String {
        match self.listener.local_addr() {
            Ok(addr) if !addr.ip().is_unspecified() => format!("http://{addr}"),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops notification retries and
    /// simulated hangs and lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let token = self.state.shutdown().clone();
        let router = app(self.state);
        tracing::info!(port = self.port, "WeChat Pay sandbox listening");
        // Nagle off, as on the real API's side: small replies go out at once.
        axum::serve(
            axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }),
            router,
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await
    }
}
