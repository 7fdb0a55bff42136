//! The console's environment: where it listens, who may sign in, where the
//! orders are, where changes go, and the key its session cookies are sealed with.

use std::{net::SocketAddr, path::PathBuf};

use base64::Engine;
use secrecy::SecretString;
use wxpay_runtime::config::{self, ConfigError};

/// The default `CONSOLE_ADDR`: internal only, and never the gateway's port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8088";

/// Bytes of `CONSOLE_SESSION_KEY` (the cookie crate's private-jar key: half
/// signs, half encrypts).
pub const SESSION_KEY_BYTES: usize = 64;

#[derive(Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub users_file: PathBuf,
    pub database_url: String,
    pub redis_url: String,
    pub payment_service_url: String,
    /// `CONSOLE_API_TOKEN`: the bearer token payment-service accepts from the console.
    pub api_token: Option<SecretString>,
    /// `CONSOLE_SESSION_KEY` (base64 of 64 bytes): replicas that share it
    /// accept each other's sessions. Unset: a random key per start, so a
    /// restart signs everyone out.
    pub session_key: Option<Vec<u8>>,
    /// Whether the session cookie is `Secure` (`__Host-` prefixed). On by
    /// default; `CONSOLE_INSECURE_COOKIE=1` turns it off for a console served
    /// over plain HTTP on a loopback address only (a browser refuses a Secure
    /// cookie over http:// except on localhost).
    pub secure_cookie: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("users_file", &self.users_file)
            .field("payment_service_url", &self.payment_service_url)
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let addr = config::addr("CONSOLE_ADDR", DEFAULT_ADDR)?;
        if let Some(gateway) = config::optional("GATEWAY_ADDR")? {
            if gateway.trim() == addr.to_string() {
                return Err(ConfigError::new(
                    "CONSOLE_ADDR",
                    "must not be the gateway's address: the console is internal only",
                ));
            }
        }
        let users_file = PathBuf::from(config::required("CONSOLE_USERS_FILE")?);
        let database_url = config::database_url()?;
        let redis_url = config::redis_url()?;
        let payment_service_url = config::url(
            "PAYMENT_SERVICE_URL",
            config::required("PAYMENT_SERVICE_URL")?,
            &["http", "https"],
        )?;
        let api_token = config::optional("CONSOLE_API_TOKEN")?.map(SecretString::from);
        let session_key = config::optional("CONSOLE_SESSION_KEY")?
            .map(|v| session_key(&v))
            .transpose()?;
        let insecure = config::optional("CONSOLE_INSECURE_COOKIE")?.is_some_and(|v| v == "1");
        if insecure && !addr.ip().is_loopback() {
            return Err(ConfigError::new(
                "CONSOLE_INSECURE_COOKIE",
                "only for a console on a loopback address",
            ));
        }
        Ok(Self {
            addr,
            users_file,
            database_url,
            redis_url,
            payment_service_url,
            api_token,
            session_key,
            secure_cookie: !insecure,
        })
    }
}

fn session_key(value: &str) -> Result<Vec<u8>, ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| ConfigError::new("CONSOLE_SESSION_KEY", "must be base64"))?;
    if bytes.len() != SESSION_KEY_BYTES {
        return Err(ConfigError::new(
            "CONSOLE_SESSION_KEY",
            format!(
                "must be {SESSION_KEY_BYTES} bytes (base64), got {}",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}
