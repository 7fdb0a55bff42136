//! wechat-sandbox: an offline simulator of the WeChat Pay endpoints this
//! product calls: v2 (`/pay/unifiedorder`, `/pay/orderquery`, `/pay/closeorder`,
//! `/secapi/pay/refund`, `/pay/refundquery`, `/pay/downloadbill`), with
//! WeChat's checks and signed replies, payment and refund notifications retried
//! on WeChat's schedule, the daily bill built from its own trades, injectable
//! faults, and a JSON control API (`/sandbox/…`) to play the payer and WeChat's
//! bank side. It uses the product's own signing, XML and refund-cipher code, so
//! it speaks exactly what the product expects, and holds everything in memory.
//!
//! It listens twice: plain HTTP for everything but `/secapi/`, and TLS with
//! optional client authentication (`tls`), where `/secapi/` takes requests that
//! carry the API client certificate of the account they name, as WeChat's API
//! host does. The certificates are generated at start (or given), and written
//! out for each account in the formats WeChat hands out.
//!
//! It hosts several merchant accounts ([`SandboxConfig::merchant`] and
//! [`SandboxConfig::accounts`], which the binary reads from `MERCHANTS_FILE`
//! with the product's own parser): each request is verified with the key of
//! the account its `mch_id` names, orders belong to their account (and sub
//! merchant, in service-provider mode), and replies, notifications, client
//! certificates and bills are per account. Every v2 trade type is served
//! (JSAPI, NATIVE with `code_url`, APP, MWEB with `mweb_url`).
//!
//! An account may speak WeChat Pay API v3 ([`V3Account`], or a v3 entry of
//! the merchants file): the sandbox then serves `/v3/pay/[partner/]transactions/…`
//! (place, query, close), `/v3/refund/domestic/refunds` (apply, query),
//! `/v3/bill/tradebill` (with its download, unsigned, and the SHA1 of what
//! it serves) and `/v3/certificates` for it over the same order book and
//! refunds (one model whatever the dialect), checks every request's RSA
//! signature with the merchant's API public key, signs every answer with its
//! own WeChat keys (a WeChat Pay public key and platform certificates it
//! generates at start and can rotate, [`KeyMode`]), and sends encrypted,
//! signed `TRANSACTION.SUCCESS` and `REFUND.SUCCESS` / `REFUND.ABNORMAL` /
//! `REFUND.CLOSED` notifications. It issues
//! a merchant's API key pair ([`issue_merchant_key`],
//! [`SandboxHandle::issue_merchant_key`]). In a test:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let file = std::fs::read_to_string("merchants.toml")?;
//! let entries = wxpay_core::wechat::parse_merchants(&file, |var| std::env::var(var).ok())?;
//! let config = wechat_sandbox::SandboxConfig::for_tests().with_merchants(&entries);
//! let sandbox = wechat_sandbox::spawn(config).await;
//! let provider_cert = sandbox.tls_files().client_for("1900000200");
//! # let _ = provider_cert; Ok(()) }
//! ```
//!
//! Entry points: [`app`] builds the router; [`Sandbox::build`] binds and
//! [`Sandbox::run_until_stopped`] serves (what `main` and tests share);
//! [`spawn`] runs one in the background of a test and returns a [`SandboxHandle`].

mod accounts;
mod bill;
mod client_auth;
mod config;
mod control;
mod control_v3;
mod faults;
mod handle;
mod keygen;
mod notify;
mod orders;
mod protocol;
mod state;
mod tls;
mod v3_api;
mod v3_bills;
mod v3_protocol;
mod v3_refunds;
mod wechat_api;
mod wechat_keys;

use std::{future::Future, io, net::SocketAddr};

use axum::Router;
use tokio::net::{TcpListener, ToSocketAddrs};

pub use accounts::{Account, Owner, SubMerchant, V3Account};
pub use bill::BillLayout;
pub use client_auth::ClientAuth;
pub use config::{
    merchants_from_env, tls_from_env, SandboxConfig, DEFAULT_ADDR, DEFAULT_CLOSE_MIN_AGE_SECONDS,
    DEFAULT_MIN_EXPIRE_SECONDS,
};
pub use control::{
    AgeOptions, FailOptions, NotifyOptions, OrderView, PayOptions, RefundView, SettleOptions,
    MAX_AGE_SECONDS, MAX_DUPLICATES,
};
pub use control_v3::{CertificateView, KeyModeOptions, MerchantKeyOptions, V3MerchantView};
pub use faults::Faults;
pub use handle::{spawn, ControlError, SandboxHandle};
pub use keygen::{
    issue_merchant_key, issue_merchant_key_at, IssuedMerchantKey, KeyGenError, KeyPair,
};
pub use notify::{retry_delays, Delivery};
pub use orders::{DeliveryAttempt, RefundStatus, MAX_REFUNDS_PER_ORDER};
pub use state::AppState;
pub use tls::{
    ClientFiles, IssuedCert, TestCa, TlsFiles, TlsSettings, TlsSource, DEFAULT_TLS_ADDR,
};
pub use wechat_keys::{KeyMode, KeyRingError, WechatSideKeys};

/// The whole HTTP surface: WeChat's endpoints and the control API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(wechat_api::routes(state.clone()))
        .merge(v3_api::routes())
        .merge(control::routes())
        .with_state(state)
}

/// A sandbox bound to its ports, not yet serving.
#[derive(Debug)]
pub struct Sandbox {
    listener: TcpListener,
    port: u16,
    tls_listener: TcpListener,
    tls_port: u16,
    tls: tls::Prepared,
    state: AppState,
}

impl Sandbox {
    /// Binds `addr` (`"127.0.0.1:0"` picks a free port) and the TLS listener
    /// (`config.tls.addr`), after issuing or loading its certificates. A TLS
    /// problem's message names the variable that would fix it (`SANDBOX_TLS_…`).
    pub async fn build(mut config: SandboxConfig, addr: impl ToSocketAddrs) -> io::Result<Self> {
        let has_v3 = config.registry().map_err(io::Error::other)?.has_v3();
        if has_v3 && config.wechat_keys.is_none() {
            // RSA key generation takes seconds: not on the runtime's threads.
            let keys = tokio::task::spawn_blocking(WechatSideKeys::generate)
                .await
                .map_err(io::Error::other)?
                .map_err(io::Error::other)?;
            config.wechat_keys = Some(keys);
        }
        let tls_addr = config.tls.addr;
        let source = config.tls.source.clone();
        let default_mch_id = config.merchant.mch_id.clone();
        let state = AppState::new(config)?;
        // The default merchant first: its files keep the plain names.
        let mch_ids: Vec<&str> = std::iter::once(default_mch_id.as_str())
            .chain(state.accounts().mch_ids())
            .collect();
        let tls = tls::prepare(&source, &mch_ids).map_err(|e| io::Error::other(e.to_string()))?;
        let listener = TcpListener::bind(addr).await?;
        let port = listener.local_addr()?.port();
        let tls_listener = TcpListener::bind(tls_addr).await.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("SANDBOX_TLS_ADDR: the TLS listener cannot listen on {tls_addr}: {e}"),
            )
        })?;
        let tls_port = tls_listener.local_addr()?.port();
        Ok(Self {
            listener,
            port,
            tls_listener,
            tls_port,
            tls,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// `http://HOST:PORT`; an unspecified host (0.0.0.0) is written as 127.0.0.1.
    pub fn base_url(&self) -> String {
        url("http", self.listener.local_addr(), self.port)
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    pub fn tls_local_addr(&self) -> io::Result<SocketAddr> {
        self.tls_listener.local_addr()
    }

    /// `https://HOST:PORT`, the `WECHAT_API_BASE` for a client that calls
    /// `/secapi/`; an unspecified host is written as 127.0.0.1 (a name the
    /// generated server certificate holds).
    pub fn https_url(&self) -> String {
        url("https", self.tls_listener.local_addr(), self.tls_port)
    }

    /// The CA to trust and each account's client certificate, key and p12.
    pub fn tls_files(&self) -> &TlsFiles {
        &self.tls.files
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// What WeChat holds for the v3 merchant `mch_id` (as `GET
    /// /sandbox/v3/merchants/{mch_id}` shows it): its WeChat Pay public key
    /// PEM and id to configure it with, the platform certificates, its API key
    /// serial. `None`: not a hosted v3 merchant. For a harness that wires the
    /// product before the sandbox serves.
    pub fn v3_merchant(&self, mch_id: &str) -> Option<V3MerchantView> {
        let keys = self.state.keys()?;
        control_v3::view(&keys, mch_id).ok()
    }

    /// Registers the public half of the v3 merchant's API key, named by its
    /// certificate's serial (`IssuedMerchantKey::public_key`, or
    /// `MerchantSigner::public_key` of a key the merchant already has).
    pub fn register_merchant_key(
        &self,
        mch_id: &str,
        key: wxpay_core::wechat::v3::WechatKey,
    ) -> Result<(), KeyRingError> {
        match self.state.keys() {
            Some(mut keys) => keys.register_merchant_key(mch_id, key),
            None => Err(KeyRingError::NotV3(mch_id.to_owned())),
        }
    }

    /// Serves both listeners until `shutdown` resolves, then stops notification
    /// retries and simulated hangs and lets in-flight requests finish. Generated
    /// certificate files in a temporary directory are removed once both stopped.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let Self {
            listener,
            port,
            tls_listener,
            tls_port,
            tls,
            state,
        } = self;
        let tls::Prepared {
            config: tls_config,
            temp_dir,
            ..
        } = tls;
        // One token stops both listeners, the retry loops and the hanging
        // handlers; either listener failing stops the other.
        let token = state.shutdown().clone();
        let router = app(state);
        tracing::info!(port, tls_port, "WeChat Pay sandbox listening");
        // Nagle off, as on the real API's side: small replies go out at once.
        let plain = axum::serve(
            axum::serve::ListenerExt::tap_io(listener, |tcp| {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }),
            router.clone(),
        )
        .with_graceful_shutdown(token.clone().cancelled_owned());
        let secure = tls::serve(
            tls_listener,
            tls_config,
            router,
            token.clone().cancelled_owned(),
        );
        let (result, (), ()) = tokio::join!(
            async {
                let result = plain.await;
                token.cancel();
                result
            },
            secure,
            async {
                tokio::select! {
                    () = shutdown => token.cancel(),
                    () = token.cancelled() => {}
                }
            },
        );
        drop(temp_dir);
        result
    }
}

/// `scheme://addr`, with 127.0.0.1 for an unspecified address.
fn url(scheme: &str, addr: io::Result<SocketAddr>, port: u16) -> String {
    match addr {
        Ok(addr) if !addr.ip().is_unspecified() => format!("{scheme}://{addr}"),
        _ => format!("{scheme}://127.0.0.1:{port}"),
    }
}
