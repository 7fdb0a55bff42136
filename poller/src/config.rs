//! The poller's configuration, read once from the environment through
//! `payment_service::config`, so a bad value stops start-up with one line naming
//! the variable.

use std::{net::SocketAddr, time::Duration};

use secrecy::SecretString;
use wxpay_runtime::{
    auth::ApiTokens,
    callers_file::ScopedCaller,
    config::{self as env, ConfigError},
    http_edge::ConnectionLimits,
    tls::ServerTls,
};

use wxpay_core::watch_token::WatchSecret;

use crate::service::Deadlines;

#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`: snapshots are read from here (the poller never writes).
    pub database_url: String,
    /// `REDIS_URL`: the event bus.
    pub redis_url: String,
    /// `POLLER_ADDR` (default `0.0.0.0:50052`): the gRPC listener.
    pub addr: SocketAddr,
    /// `POLLER_METRICS_ADDR` (default `0.0.0.0:9091`): `GET /metrics`.
    pub metrics_addr: SocketAddr,
    /// `PAYMENT_SERVICE_URL`: where the fallback sends QueryOrder.
    pub payment_service_url: String,
    /// `API_TOKEN`: required from callers when set, and sent to payment-service.
    pub api_token: Option<SecretString>,
    /// `API_READ_TOKEN`: also accepted from callers (WatchOrder is a read),
    /// and what the fallback sends to payment-service when set (it may only
    /// read and query there).
    pub api_read_token: Option<SecretString>,
    /// `API_CALLERS_FILE`: callers confined to merchants. Their merchant names
    /// are checked as names only: the poller holds no merchant's secrets to
    /// read `MERCHANTS_FILE` with, and payment-service, which reads both files,
    /// refuses a caller naming an unconfigured merchant (here such a name could
    /// only make that caller's watches NOT_FOUND).
    pub api_callers: Vec<ScopedCaller>,
    /// `POLLER_DEFAULT_TIMEOUT_SECONDS` (300) and `POLLER_MAX_TIMEOUT_SECONDS` (1800).
    pub deadlines: Deadlines,
    /// `POLLER_FALLBACK_DELAY_MS` (5000): first fallback query after this long.
    pub fallback_delay: Duration,
    /// `POLLER_FALLBACK_MAX_DELAY_MS` (60000): the fallback backoff stops growing here.
    pub fallback_max_delay: Duration,
    /// `POLLER_REDIS_CLIENT_NAME` (default `wxpay-poller`): `CLIENT SETNAME` of the
    /// pub/sub connection, to find it in `CLIENT LIST`.
    pub redis_client_name: String,
    /// `POLLER_KEEPALIVE_SECONDS` (30): HTTP/2 PING interval on every connection.
    pub keepalive_interval: Duration,
    /// `POLLER_MAX_STREAMS` (200000): open streams at most; more are refused.
    pub max_streams: usize,
    /// `POLLER_MAX_STREAMS_PER_CONNECTION` (1000): HTTP/2 streams one client
    /// connection may hold open at once (SETTINGS_MAX_CONCURRENT_STREAMS); a
    /// client past it waits for one of its own streams to end, so one connection
    /// cannot take the whole `POLLER_MAX_STREAMS`.
    pub max_streams_per_connection: u32,
    /// `TLS_CERT` + `TLS_KEY`: serve gRPC over TLS; `None` serves plaintext.
    pub tls: Option<ServerTls>,
    /// `POLLER_HTTP_ADDR` (default `0.0.0.0:8081`): the WebSocket / SSE watch
    /// for mini programs; served only with a `watch_secret`.
    pub http_addr: SocketAddr,
    /// The HTTP watch's connections: `POLLER_HTTP_MAX_CONNECTIONS` (20000; past
    /// it the idlest idle connection is closed), `POLLER_HTTP_IDLE_TIMEOUT_MS`
    /// (60000) and `POLLER_HTTP_HEADER_TIMEOUT_MS` (5000).
    pub http_limits: ConnectionLimits,
    /// `WATCH_TOKEN_SECRET`: checks the watch tokens payment-service issues.
    /// `None`: no HTTP watch (there is nothing to check tokens with).
    pub watch_secret: Option<WatchSecret>,
    /// `POLLER_SSE_ALLOW_ORIGIN`: `Access-Control-Allow-Origin` of the SSE endpoint.
    pub sse_allow_origin: Option<String>,
    /// `PAYMENT_SERVICE_CA`: a PEM CA trusted for an https `PAYMENT_SERVICE_URL`
    /// besides the public roots (a payment-service with a private certificate).
    pub payment_service_ca: Option<Vec<u8>>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let default_timeout = positive("POLLER_DEFAULT_TIMEOUT_SECONDS", 300)?;
        let max_timeout = positive("POLLER_MAX_TIMEOUT_SECONDS", 1800)?;
        if default_timeout > max_timeout {
            return Err(ConfigError::new(
                "POLLER_DEFAULT_TIMEOUT_SECONDS",
                "must not exceed POLLER_MAX_TIMEOUT_SECONDS",
            ));
        }
        let redis_client_name =
            env::optional("POLLER_REDIS_CLIENT_NAME")?.unwrap_or_else(|| "wxpay-poller".into());
        if !redis_client_name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "POLLER_REDIS_CLIENT_NAME",
                "must not contain spaces",
            ));
        }
        let addr = env::addr("POLLER_ADDR", "0.0.0.0:50052")?;
        let api_token = env::api_token()?;
        let api_read_token = env::api_read_token(api_token.as_ref())?;
        let api_callers = env::api_callers(None, api_token.as_ref(), api_read_token.as_ref())?;
        env::require_token_off_loopback("POLLER_ADDR", addr, api_token.as_ref())?;
        let tls = ServerTls::from_env()?;
        let checks_tokens = api_token.is_some() || !api_callers.is_empty();
        env::require_tls_off_loopback("POLLER_ADDR", addr, checks_tokens, tls.is_some())?;
        if api_read_token.is_none() && api_token.is_some() {
            tracing::warn!(
                "the QueryOrder fallback calls payment-service with API_TOKEN's first entry, \
                 which may do everything there: set API_READ_TOKEN (on both services) so that \
                 it can only read and query"
            );
        }
        Ok(Self {
            database_url: env::database_url()?,
            redis_url: env::redis_url()?,
            addr,
            metrics_addr: env::addr("POLLER_METRICS_ADDR", "0.0.0.0:9091")?,
            payment_service_url: env::url(
                "PAYMENT_SERVICE_URL",
                env::required("PAYMENT_SERVICE_URL")?,
                &["http", "https"],
            )?,
            api_token,
            api_read_token,
            api_callers,
            deadlines: Deadlines {
                default: Duration::from_secs(default_timeout),
                max: Duration::from_secs(max_timeout),
            },
            fallback_delay: Duration::from_millis(positive("POLLER_FALLBACK_DELAY_MS", 5000)?),
            fallback_max_delay: Duration::from_millis(positive(
                "POLLER_FALLBACK_MAX_DELAY_MS",
                60_000,
            )?),
            redis_client_name,
            keepalive_interval: Duration::from_secs(positive("POLLER_KEEPALIVE_SECONDS", 30)?),
            tls,
            http_addr: env::addr("POLLER_HTTP_ADDR", "0.0.0.0:8081")?,
            http_limits: http_limits()?,
            watch_secret: env::watch_secret()?,
            sse_allow_origin: env::optional("POLLER_SSE_ALLOW_ORIGIN")?,
            max_streams_per_connection: u32::try_from(positive(
                "POLLER_MAX_STREAMS_PER_CONNECTION",
                1000,
            )?)
            .map_err(|_| ConfigError::new("POLLER_MAX_STREAMS_PER_CONNECTION", "is too large"))?,
            payment_service_ca: env::optional("PAYMENT_SERVICE_CA")?
                .map(|path| {
                    std::fs::read(&path).map_err(|e| {
                        ConfigError::new("PAYMENT_SERVICE_CA", format!("cannot read {path}: {e}"))
                    })
                })
                .transpose()?,
            max_streams: usize::try_from(positive("POLLER_MAX_STREAMS", 200_000)?)
                .map_err(|_| ConfigError::new("POLLER_MAX_STREAMS", "is too large"))?,
        })
    }
}

/// `POLLER_HTTP_MAX_CONNECTIONS`' default.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: u64 = 20_000;

fn http_limits() -> Result<ConnectionLimits, ConfigError> {
    let max_connections = usize::try_from(positive(
        "POLLER_HTTP_MAX_CONNECTIONS",
        DEFAULT_HTTP_MAX_CONNECTIONS,
    )?)
    .map_err(|_| ConfigError::new("POLLER_HTTP_MAX_CONNECTIONS", "is too large"))?;
    Ok(ConnectionLimits {
        header_timeout: Duration::from_millis(positive("POLLER_HTTP_HEADER_TIMEOUT_MS", 5000)?),
        idle_timeout: Duration::from_millis(positive("POLLER_HTTP_IDLE_TIMEOUT_MS", 60_000)?),
        max_connections,
        ..ConnectionLimits::default()
    })
}

impl Config {
    /// The tokens WatchOrder accepts.
    pub fn api_tokens(&self) -> ApiTokens {
        ApiTokens {
            full: self.api_token.clone(),
            read: self.api_read_token.clone(),
            callers: self.api_callers.clone(),
        }
    }

    /// The token the fallback sends to payment-service's QueryOrder:
    /// `API_READ_TOKEN` (read and query only) when set, else the first
    /// `API_TOKEN` entry (deployments from before; start-up warned).
    pub fn fallback_token(&self) -> Option<SecretString> {
        match &self.api_read_token {
            Some(read) => Some(read.clone()),
            None => self
                .api_token
                .as_ref()
                .and_then(wxpay_runtime::callers::outgoing),
        }
    }
}

fn positive(var: &'static str, default: u64) -> Result<u64, ConfigError> {
    match env::parsed_or::<u64>(var, default)? {
        0 => Err(ConfigError::new(var, "must be greater than 0")),
        n => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    // The only test in this binary that touches these variables, so no other
    // test races with it.
    #[test]
    fn bad_values_name_their_variable() {
        std::env::set_var("DATABASE_URL", "postgres://localhost/x");
        std::env::set_var("REDIS_URL", "redis://localhost");
        std::env::set_var("PAYMENT_SERVICE_URL", "http://localhost:50051");
        // The default address answers the network: it needs a token.
        let err = Config::from_env().expect_err("open to the network");
        assert_eq!(err.var, "API_TOKEN");
        std::env::set_var("API_TOKEN", "0123456789abcdef0123456789abcdef");
        // A token on the network needs TLS, or a mesh that terminates it.
        let err = Config::from_env().expect_err("a token in plaintext");
        assert_eq!(err.var, "TLS_CERT");
        assert!(err.to_string().contains("ALLOW_PLAINTEXT"), "{err}");
        std::env::set_var("ALLOW_PLAINTEXT", "1");
        let ok = Config::from_env().expect("defaults are valid");
        assert_eq!(
            ok.fallback_token().map(|t| t.expose_secret().to_owned()),
            Some("0123456789abcdef0123456789abcdef".to_owned()),
            "without API_READ_TOKEN the fallback keeps the full token"
        );
        std::env::set_var("API_READ_TOKEN", "read:0123456789abcdef0123456789ab");
        let ok = Config::from_env().expect("with a read token");
        assert_eq!(
            ok.fallback_token().map(|t| t.expose_secret().to_owned()),
            Some("read:0123456789abcdef0123456789ab".to_owned()),
            "the read token, sent as it is"
        );
        std::env::remove_var("API_READ_TOKEN");
        assert_eq!(ok.addr.port(), 50052);
        assert_eq!(ok.max_streams, 200_000);
        assert_eq!(ok.deadlines.default, Duration::from_secs(300));
        assert_eq!(ok.fallback_delay, Duration::from_millis(5000));
        assert_eq!(ok.http_limits.max_connections, 20_000);

        std::env::set_var("POLLER_MAX_TIMEOUT_SECONDS", "soon");
        let err = Config::from_env().expect_err("not a number");
        assert_eq!(err.var, "POLLER_MAX_TIMEOUT_SECONDS");
        std::env::set_var("POLLER_MAX_TIMEOUT_SECONDS", "60");
        let err = Config::from_env().expect_err("default above max");
        assert_eq!(err.var, "POLLER_DEFAULT_TIMEOUT_SECONDS");
        std::env::remove_var("POLLER_MAX_TIMEOUT_SECONDS");

        std::env::set_var("PAYMENT_SERVICE_URL", "localhost:50051");
        let err = Config::from_env().expect_err("no scheme");
        assert_eq!(err.var, "PAYMENT_SERVICE_URL");
    }
}
