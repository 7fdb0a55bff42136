//! [`Stack`], the four binaries wired as in docker-compose.yml, and the
//! [`StackOptions`] a test may turn. Starting it is `start`'s; the clients a
//! test talks to it with are `clients`'. The children themselves belong to
//! their [`Process`] guards, which the stack only holds.

mod clients;
mod ready;
mod start;

use std::time::Duration;

use payment_service::reconciler::ReconcilerConfig;

use crate::Process;

/// Knobs a test may turn.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// `POLLER_FALLBACK_DELAY_MS`: how long a watched order waits for its
    /// notification before the poller asks WeChat (through QueryOrder).
    pub fallback_delay: Duration,
    /// `POLLER_FALLBACK_MAX_DELAY_MS`: the cap of the fallback's backoff.
    pub fallback_max_delay: Duration,
    /// `RECONCILE_*`: when payment-service's reconciler asks WeChat itself.
    pub reconcile: ReconcilerConfig,
    /// `REDIS_URL` for every binary; `None`: the shared test Redis. A test that
    /// kills or stops Redis gives its own ([`crate::PrivateRedis`]).
    pub redis_url: Option<String>,
    /// `MERCHANTS_FILE` for the sandbox, payment-service and the gateway:
    /// merchants besides the harness's `default`.
    pub merchants_file: Option<std::path::PathBuf>,
    /// `DATABASE_URL` for every binary; `None`: a fresh database on the
    /// shared test server. A test that crashes Postgres gives its own
    /// ([`crate::PrivatePostgres`]).
    pub database_url: Option<String>,
    /// More variables for every binary (`SSL_CERT_FILE` naming a private
    /// Redis's CA, say).
    pub extra_env: Vec<(&'static str, String)>,
    /// `CLOUDPAY_CALLBACK_SECRET` for the gateway; `None`: the callback is off.
    pub cloudpay_secret: Option<String>,
    /// `API_TOKEN` for payment-service and the poller; `None`: no token
    /// (everything on loopback).
    pub api_token: Option<String>,
    /// `API_READ_TOKEN` for both; the poller's fallback calls QueryOrder with it.
    pub api_read_token: Option<String>,
    /// `API_CALLERS_FILE` for both, and the variables its tables name
    /// (`token_env`), which the harness passes to both as well.
    pub callers_file: Option<std::path::PathBuf>,
    pub caller_env: Vec<(&'static str, String)>,
}

impl Default for StackOptions {
    /// A fallback and a reconciler far beyond any test's duration, so a status
    /// change can only have come through the notification path.
    fn default() -> Self {
        Self {
            fallback_delay: Duration::from_secs(600),
            fallback_max_delay: Duration::from_secs(600),
            reconcile: ReconcilerConfig {
                after: Duration::from_secs(600),
                ..ReconcilerConfig::default()
            },
            redis_url: None,
            merchants_file: None,
            database_url: None,
            extra_env: Vec::new(),
            cloudpay_secret: None,
            api_token: None,
            api_read_token: None,
            callers_file: None,
            caller_env: Vec::new(),
        }
    }
}

/// The four binaries, wired as in docker-compose.yml: the sandbox plays WeChat,
/// payment-service calls it and gives it the gateway as `notify_url`, the poller
/// falls back to payment-service's QueryOrder.
///
/// Fields drop in declaration order: the poller and gateway go before the
/// services they call.
#[derive(Debug)]
pub struct Stack {
    pub poller: Process,
    pub gateway: Process,
    pub payment: Process,
    pub sandbox: Process,
    pub sandbox_url: String,
    /// The stack's own fresh database, for tests that act as an operator would.
    pub database_url: String,
    pub payment_url: String,
    pub gateway_url: String,
    pub poller_url: String,
    /// The poller's WebSocket / SSE side (`POLLER_HTTP_ADDR`), `http://…`.
    pub poller_http_url: String,
    /// Each binary's environment as started, for a test that starts more
    /// replicas of one (with its own addresses).
    pub env: wxpay::SplitEnv,
    http: reqwest::Client,
}
