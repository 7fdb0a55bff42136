//! Configuration from the environment (a `.env` file may set it). Every service
//! reads its variables through these helpers, so a bad or missing value always
//! stops start-up with one line naming the variable, and never echoes a secret.

use std::{net::SocketAddr, str::FromStr};

use secrecy::SecretString;

use wxpay_core::{
    domain::MerchantName,
    wechat::{
        merchant_from_fields, parse_merchants_with_files, ApiKey, Merchant, MerchantBook,
        MerchantEntry, SignType,
    },
};

/// A configuration problem, naming the variable. Its Display is the one line printed at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration error: {var} {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// Loads `.env` if there is one (values already in the environment win).
pub fn load_dotenv() {
    let _ = dotenvy::dotenv();
}

/// A variable that must be set and non-empty.
pub fn required(var: &'static str) -> Result<String, ConfigError> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_owned()),
        Ok(_) => Err(ConfigError::new(var, "is empty")),
        Err(std::env::VarError::NotPresent) => Err(ConfigError::new(var, "is not set")),
        Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::new(var, "is not valid UTF-8")),
    }
}

/// A variable that may be unset (or empty, which counts as unset).
pub fn optional(var: &'static str) -> Result<Option<String>, ConfigError> {
    match required(var) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.reason == "is not set" || e.reason == "is empty" => Ok(None),
        Err(e) => Err(e),
    }
}

/// An optional variable parsed with `FromStr`, or `default`.
pub fn parsed_or<T: FromStr>(var: &'static str, default: T) -> Result<T, ConfigError> {
    match optional(var)? {
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError::new(var, format!("has an invalid value {v:?}"))),
        None => Ok(default),
    }
}

/// A listen address such as `0.0.0.0:50051`.
pub fn addr(var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
    let v = optional(var)?.unwrap_or_else(|| default.to_owned());
    v.parse()
        .map_err(|_| ConfigError::new(var, format!("is not a host:port address ({v:?})")))
}

/// A URL whose scheme must be one of `schemes`.
pub fn url(var: &'static str, value: String, schemes: &[&str]) -> Result<String, ConfigError> {
    let ok = schemes.iter().any(|s| {
        value
            .strip_prefix(s)
            .and_then(|rest| rest.strip_prefix("://"))
            .is_some_and(|rest| !rest.is_empty())
    });
    if ok {
        Ok(value)
    } else {
        Err(ConfigError::new(
            var,
            format!("must be a {} URL", schemes.join(" or ")),
        ))
    }
}

pub fn database_url() -> Result<String, ConfigError> {
    url(
        "DATABASE_URL",
        required("DATABASE_URL")?,
        &["postgres", "postgresql"],
    )
}

/// The Postgres settings of one process besides its URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabasePool {
    /// `DATABASE_MAX_CONNECTIONS` (16, 1 to 1000): the pool size of this
    /// process. Every replica of every service opens up to this many.
    pub max_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT_SECONDS` (unset: no limit): how long a
    /// starting service waits for an unreachable database before it gives up.
    pub connect_timeout: Option<std::time::Duration>,
}

/// The most `DATABASE_MAX_CONNECTIONS` may say: far beyond what one Postgres
/// serves, so a larger value is a typo.
pub const MAX_DATABASE_CONNECTIONS: u32 = 1000;

/// `DATABASE_MAX_CONNECTIONS` and `DATABASE_CONNECT_TIMEOUT_SECONDS`.
pub fn database_pool() -> Result<DatabasePool, ConfigError> {
    const VAR: &str = "DATABASE_MAX_CONNECTIONS";
    let max_connections = match optional(VAR)? {
        None => 16,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_DATABASE_CONNECTIONS).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    VAR,
                    format!(
                        "must be a whole number from 1 to {MAX_DATABASE_CONNECTIONS} (got {v:?})"
                    ),
                ))
            }
        },
    };
    let connect_timeout = match optional("DATABASE_CONNECT_TIMEOUT_SECONDS")? {
        None => None,
        Some(v) => match v.parse::<u64>() {
            Ok(secs) if secs >= 1 => Some(std::time::Duration::from_secs(secs)),
            _ => {
                return Err(ConfigError::new(
                    "DATABASE_CONNECT_TIMEOUT_SECONDS",
                    format!("must be a whole number of seconds, at least 1 (got {v:?})"),
                ))
            }
        },
    };
    Ok(DatabasePool {
        max_connections,
        connect_timeout,
    })
}

/// Where order events go: `REDIS_CLUSTER_URLS` (comma-separated seed nodes of
/// a Redis Cluster, `redis://[user:password@]host:port` or `rediss://…` for
/// TLS) when set, else `REDIS_URL` (`redis://`, `rediss://`, with credentials
/// as `redis://[user]:password@host:port`, or
/// `redis+cluster://[user:password@]host:port,host:port` / `rediss+cluster://…`
/// for a cluster). A cluster comes back as one `redis+cluster://` (or
/// `rediss+cluster://`) URL, which the publisher and the poller's feed read as
/// "sharded pub/sub over these seeds". A TLS server's certificate is checked
/// against the system's roots, or the PEM file `SSL_CERT_FILE` names.
pub fn redis_url() -> Result<String, ConfigError> {
    if let Some(seeds) = optional("REDIS_CLUSTER_URLS")? {
        return cluster_url(&seeds);
    }
    url(
        "REDIS_URL",
        required("REDIS_URL")?,
        &["redis", "rediss", "redis+cluster", "rediss+cluster"],
    )
}

/// `REDIS_CLUSTER_URLS`' seeds as one cluster URL. Every seed must use the same
/// scheme and credentials (the cluster's nodes share them); an error never
/// repeats a seed, which may hold a password.
fn cluster_url(seeds: &str) -> Result<String, ConfigError> {
    const VAR: &str = "REDIS_CLUSTER_URLS";
    let bad = || {
        ConfigError::new(
            VAR,
            "must be comma-separated redis://[user:password@]host:port (or rediss://) seed nodes",
        )
    };
    let mut shared: Option<(&str, &str)> = None;
    let mut nodes = Vec::new();
    for seed in seeds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (scheme, rest) = seed.split_once("://").ok_or_else(bad)?;
        if scheme != "redis" && scheme != "rediss" {
            return Err(bad());
        }
        let (auth, host_port) = match rest.rsplit_once('@') {
            Some((auth, host_port)) => (auth, host_port),
            None => ("", rest),
        };
        let host_port = host_port.trim_end_matches('/');
        let valid = host_port
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(bad());
        }
        match shared {
            None => shared = Some((scheme, auth)),
            Some(first) if first == (scheme, auth) => {}
            Some(_) => {
                return Err(ConfigError::new(
                    VAR,
                    "seeds must all use the same scheme (redis:// or rediss://) and credentials",
                ))
            }
        }
        nodes.push(host_port);
    }
    let Some((scheme, auth)) = shared else {
        return Err(ConfigError::new(VAR, "names no seed node"));
    };
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    Ok(format!("{scheme}+cluster://{auth}{}", nodes.join(",")))
}

/// `RETENTION_DAYS` (90): how long published events, audit rows of received
/// notifications and anomalies are kept.
pub fn retention() -> Result<std::time::Duration, ConfigError> {
    match parsed_or::<u64>("RETENTION_DAYS", 90)? {
        0 => Err(ConfigError::new("RETENTION_DAYS", "must be at least 1")),
        days => Ok(std::time::Duration::from_secs(days.saturating_mul(86_400))),
    }
}

pub use crate::callers::MIN_TOKEN_LEN;

fn token(var: &'static str) -> Result<Option<SecretString>, ConfigError> {
    match optional(var)? {
        Some(t) if t.len() < MIN_TOKEN_LEN => Err(ConfigError::new(
            var,
            format!("must be at least {MIN_TOKEN_LEN} characters"),
        )),
        t => Ok(t.map(SecretString::from)),
    }
}

/// The bearer tokens the gRPC servers require when set (`API_TOKEN`): one
/// token, or several callers' `name:token` entries (see [`crate::callers`]),
/// checked here so a bad entry stops start-up.
pub fn api_token() -> Result<Option<SecretString>, ConfigError> {
    let Some(raw) = optional("API_TOKEN")?.map(SecretString::from) else {
        return Ok(None);
    };
    crate::callers::parse(&raw).map_err(|reason| ConfigError::new("API_TOKEN", reason))?;
    Ok(Some(raw))
}

/// `API_READ_TOKEN`: the read-only token of every merchant. It needs `API_TOKEN`
/// or `API_CALLERS_FILE` beside it (on a server with no other token there is
/// nothing to restrict) and must differ from every `API_TOKEN` entry.
pub fn api_read_token(full: Option<&SecretString>) -> Result<Option<SecretString>, ConfigError> {
    use secrecy::ExposeSecret;
    let read = token("API_READ_TOKEN")?;
    match (&read, full) {
        (Some(_), None) if optional(CALLERS_FILE)?.is_none() => Err(ConfigError::new(
            "API_READ_TOKEN",
            "needs API_TOKEN or API_CALLERS_FILE as well",
        )),
        (Some(r), Some(f))
            if crate::callers::parse(f)
                .unwrap_or_default()
                .iter()
                .any(|e| e.token.expose_secret() == r.expose_secret()) =>
        {
            Err(ConfigError::new(
                "API_READ_TOKEN",
                "must differ from every API_TOKEN entry",
            ))
        }
        _ => Ok(read),
    }
}

/// `API_CALLERS_FILE`: callers confined to merchants (see
/// [`crate::callers_file`]). `merchants`, when given, are the configured
/// merchants' names, and a caller naming another stops start-up; a service that
/// does not read the merchants (the poller) checks names only as names. A
/// caller whose name or token is also `API_TOKEN`'s, or whose token is
/// `API_READ_TOKEN`, is refused: one token must mean one access.
pub fn api_callers(
    merchants: Option<&[&str]>,
    full: Option<&SecretString>,
    read: Option<&SecretString>,
) -> Result<Vec<crate::callers_file::ScopedCaller>, ConfigError> {
    use secrecy::ExposeSecret;
    let Some(path) = optional(CALLERS_FILE)? else {
        return Ok(Vec::new());
    };
    let refuse = |reason: String| ConfigError::new(CALLERS_FILE, format!("{path}: {reason}"));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::new(CALLERS_FILE, format!("{path} cannot be read: {e}")))?;
    let callers = crate::callers_file::parse(&text, |var| std::env::var(var).ok(), merchants)
        .map_err(refuse)?;
    let entries = full
        .map(|f| crate::callers::parse(f).unwrap_or_default())
        .unwrap_or_default();
    for c in &callers {
        let name = &c.access.caller;
        let token = c.token.expose_secret();
        if entries.iter().any(|e| &e.caller == name) {
            return Err(refuse(format!(
                "caller {name}: the name is also an API_TOKEN entry's (their idempotency keys \
                 would mix): rename one"
            )));
        }
        if entries.iter().any(|e| e.token.expose_secret() == token)
            || read.is_some_and(|r| r.expose_secret() == token)
        {
            return Err(refuse(format!(
                "caller {name}: its token is also API_TOKEN's or API_READ_TOKEN's"
            )));
        }
    }
    Ok(callers)
}

/// The variable naming the callers file.
const CALLERS_FILE: &str = "API_CALLERS_FILE";

/// `ALLOW_UNAUTHENTICATED=1`: the explicit opt-out of the token requirement, for
/// deployments where a mesh authenticates callers.
pub fn allow_unauthenticated() -> Result<bool, ConfigError> {
    flag("ALLOW_UNAUTHENTICATED")
}

/// `ALLOW_PLAINTEXT=1`: the explicit opt-out of TLS off loopback, for
/// deployments where a mesh (or a proxy beside the process) terminates TLS.
pub fn allow_plaintext() -> Result<bool, ConfigError> {
    flag("ALLOW_PLAINTEXT")
}

fn flag(var: &'static str) -> Result<bool, ConfigError> {
    match optional(var)?.as_deref() {
        None | Some("0") | Some("false") => Ok(false),
        Some("1") | Some("true") => Ok(true),
        Some(_) => Err(ConfigError::new(var, "must be 1 or 0")),
    }
}

/// A gRPC server that would answer anyone on the network refuses to start:
/// off loopback it needs a token (`API_TOKEN` or `API_CALLERS_FILE`), unless
/// `ALLOW_UNAUTHENTICATED=1`.
pub fn require_token_off_loopback(
    var: &'static str,
    addr: SocketAddr,
    token: Option<&SecretString>,
) -> Result<(), ConfigError> {
    if token.is_some()
        || addr.ip().is_loopback()
        || optional(CALLERS_FILE)?.is_some()
        || allow_unauthenticated()?
    {
        return Ok(());
    }
    Err(ConfigError::new(
        "API_TOKEN",
        format!(
            "is required: {var} {addr} is reachable from the network (set API_TOKEN, at least \
             {MIN_TOKEN_LEN} characters, or API_CALLERS_FILE, or ALLOW_UNAUTHENTICATED=1 if a \
             mesh authenticates callers)"
        ),
    ))
}

/// How a gRPC server's traffic is protected, as decided at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `TLS_CERT` + `TLS_KEY`.
    Tls,
    /// Plaintext on a loopback address: nothing crosses a network.
    Loopback,
    /// Plaintext off loopback without any token: nothing secret travels
    /// (`ALLOW_UNAUTHENTICATED=1` was checked before).
    NoToken,
    /// Plaintext off loopback with tokens, because `ALLOW_PLAINTEXT=1` says
    /// something in front terminates TLS.
    PlaintextAllowed,
}

/// A gRPC server that checks a bearer token and listens off loopback starts
/// only with TLS or with `ALLOW_PLAINTEXT=1`: otherwise every token crosses
/// the network readable by anyone on the path. Says which at start (one line).
pub fn require_tls_off_loopback(
    var: &'static str,
    addr: SocketAddr,
    checks_tokens: bool,
    tls: bool,
) -> Result<Transport, ConfigError> {
    let transport = if tls {
        Transport::Tls
    } else if addr.ip().is_loopback() {
        Transport::Loopback
    } else if !checks_tokens {
        Transport::NoToken
    } else if allow_plaintext()? {
        Transport::PlaintextAllowed
    } else {
        return Err(ConfigError::new(
            "TLS_CERT",
            format!(
                "and TLS_KEY are required: {var} {addr} is reachable from the network and bearer \
                 tokens would cross it in plaintext (set TLS_CERT and TLS_KEY, or ALLOW_PLAINTEXT=1 \
                 if a mesh or proxy terminates TLS in front of it)"
            ),
        ));
    };
    match transport {
        Transport::Tls => tracing::info!(%addr, "{var}: gRPC over TLS (TLS_CERT, TLS_KEY)"),
        Transport::Loopback => tracing::info!(%addr, "{var}: plaintext gRPC on loopback"),
        Transport::NoToken => tracing::warn!(
            %addr,
            "{var}: plaintext gRPC off loopback without tokens (ALLOW_UNAUTHENTICATED=1)"
        ),
        Transport::PlaintextAllowed => tracing::warn!(
            %addr,
            "{var}: plaintext gRPC off loopback (ALLOW_PLAINTEXT=1: TLS is terminated in front)"
        ),
    }
    Ok(transport)
}

/// `WECHAT_APP_ID`, `WECHAT_MCH_ID` and `WECHAT_API_KEY`: the merchant every
/// service (and the sandbox) acts for, validated in this one place.
pub fn merchant_from_env() -> Result<Merchant, ConfigError> {
    let app_id = required("WECHAT_APP_ID")?;
    if !app_id.bytes().all(|b| b.is_ascii_alphanumeric()) || app_id.len() > 32 {
        return Err(ConfigError::new(
            "WECHAT_APP_ID",
            "must be up to 32 letters and digits",
        ));
    }
    let mch_id = required("WECHAT_MCH_ID")?;
    if !mch_id.bytes().all(|b| b.is_ascii_digit()) || mch_id.len() > 32 {
        return Err(ConfigError::new("WECHAT_MCH_ID", "must be digits"));
    }
    let api_key = ApiKey::parse(&required("WECHAT_API_KEY")?)
        .map_err(|reason| ConfigError::new("WECHAT_API_KEY", reason))?;
    Ok(Merchant {
        app_id,
        mch_id,
        api_key,
    })
}

/// `WECHAT_SIGN_TYPE`: how the `default` merchant's requests and payment
/// parameters are signed (MD5 unless set).
pub fn sign_type_from_env() -> Result<SignType, ConfigError> {
    match optional("WECHAT_SIGN_TYPE")? {
        None => Ok(SignType::Md5),
        Some(s) => s
            .parse()
            .map_err(|_| ConfigError::new("WECHAT_SIGN_TYPE", "must be MD5 or HMAC-SHA256")),
    }
}

/// The variables that define the `default` merchant.
const WECHAT_MERCHANT_VARS: [&str; 3] = ["WECHAT_APP_ID", "WECHAT_MCH_ID", "WECHAT_API_KEY"];

/// The variable naming the merchants file.
const FILE: &str = "MERCHANTS_FILE";

/// The `[[merchant]]` tables of `MERCHANTS_FILE` (none when it is unset),
/// each checked; the `WECHAT_*` merchant is not among them.
pub fn merchants_file() -> Result<Vec<MerchantEntry>, ConfigError> {
    match optional(FILE)? {
        None => Ok(Vec::new()),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new(FILE, format!("{path} cannot be read: {e}")))?;
            parse_merchants_with_files(
                &text,
                |var| std::env::var(var).ok(),
                |path| std::fs::read(path).map_err(|e| e.to_string()),
            )
            .map_err(|e| ConfigError::new(FILE, format!("{path}: {e}")))
        }
    }
}

/// Every merchant this deployment acts for: the `[[merchant]]` tables of
/// `MERCHANTS_FILE`, and the `default` merchant the `WECHAT_*` variables define.
/// Without a file the variables are required (one merchant, as before); with
/// one they are optional, and a file that also names a `default` is refused
/// rather than one silently winning. A bad file stops start-up with one line
/// naming the file, the merchant and the field, never a value.
pub fn merchants() -> Result<MerchantBook, ConfigError> {
    let mut entries = merchants_file()?;
    let wechat_set = WECHAT_MERCHANT_VARS
        .into_iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
    if entries.is_empty() || wechat_set {
        if let Some(file_default) = entries.iter().find(|e| e.name == MerchantName::DEFAULT) {
            return Err(ConfigError::new(
                FILE,
                format!(
                    "merchant {}: name is taken by the WECHAT_* variables, which define `default`: \
                     rename the table or unset WECHAT_APP_ID, WECHAT_MCH_ID and WECHAT_API_KEY",
                    file_default.name
                ),
            ));
        }
        entries.insert(0, default_merchant_from_env()?);
    }
    MerchantBook::new(entries).map_err(|e| ConfigError::new(FILE, e.to_string()))
}

/// The `default` merchant of the `WECHAT_*` variables: v2 (`WECHAT_APP_ID`,
/// `WECHAT_MCH_ID`, `WECHAT_API_KEY`, `WECHAT_SIGN_TYPE`) unless
/// `WECHAT_API_VERSION=v3`, which adds `WECHAT_APIV3_KEY`, `WECHAT_PRIVATE_KEY`,
/// `WECHAT_SERIAL_NO` and optionally `WECHAT_PUBLIC_KEY` + `WECHAT_PUBLIC_KEY_ID`
/// (and makes `WECHAT_API_KEY` optional). The v3 variables are checked by the
/// merchants file's own rules (the same code), and a refusal names the variable.
pub fn default_merchant_from_env() -> Result<MerchantEntry, ConfigError> {
    match optional("WECHAT_API_VERSION")?.as_deref() {
        None | Some("v2") => {
            for (var, _) in V3_VARS {
                if optional(var)?.is_some() {
                    return Err(ConfigError::new(
                        var,
                        "is only read with WECHAT_API_VERSION=v3",
                    ));
                }
            }
            Ok(MerchantEntry::direct(
                MerchantName::DEFAULT,
                merchant_from_env()?,
                sign_type_from_env()?,
            ))
        }
        Some("v3") => {
            let mut owned = vec![
                ("name", MerchantName::DEFAULT.to_owned()),
                ("api_version", "v3".to_owned()),
                ("app_id", required("WECHAT_APP_ID")?),
                ("mch_id", required("WECHAT_MCH_ID")?),
            ];
            if optional("WECHAT_API_KEY")?.is_some() {
                owned.push(("api_key_env", "WECHAT_API_KEY".to_owned()));
            }
            if let Some(t) = optional("WECHAT_SIGN_TYPE")? {
                owned.push(("sign_type", t));
            }
            for (var, field) in V3_VARS {
                if let Some(v) = optional(var)? {
                    // The APIv3 key is passed by name, never copied around.
                    let v = if field == "apiv3_key_env" {
                        var.to_owned()
                    } else {
                        v
                    };
                    owned.push((field, v));
                }
            }
            let fields: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
            merchant_from_fields(
                &fields,
                |var| std::env::var(var).ok(),
                |path| std::fs::read(path).map_err(|e| e.to_string()),
            )
            .map_err(|e| {
                let var = match e.field.as_deref() {
                    Some("app_id") => "WECHAT_APP_ID",
                    Some("mch_id") => "WECHAT_MCH_ID",
                    Some("api_key" | "api_key_env") => "WECHAT_API_KEY",
                    Some("sign_type") => "WECHAT_SIGN_TYPE",
                    Some(f) => V3_VARS
                        .iter()
                        .find(|(_, field)| {
                            *field == f || (f == "apiv3_key" && *field == "apiv3_key_env")
                        })
                        .map_or("WECHAT_API_VERSION", |(var, _)| *var),
                    None => "WECHAT_API_VERSION",
                };
                ConfigError::new(var, e.reason)
            })
        }
        Some(_) => Err(ConfigError::new("WECHAT_API_VERSION", "must be v2 or v3")),
    }
}

/// The `default` merchant's v3 variables and the merchants-file field each is.
const V3_VARS: [(&str, &str); 5] = [
    ("WECHAT_APIV3_KEY", "apiv3_key_env"),
    ("WECHAT_PRIVATE_KEY", "private_key"),
    ("WECHAT_SERIAL_NO", "serial_no"),
    ("WECHAT_PUBLIC_KEY", "wechatpay_public_key"),
    ("WECHAT_PUBLIC_KEY_ID", "wechatpay_public_key_id"),
];

/// `WATCH_TOKEN_SECRET`: the secret payment-service signs watch tokens with and
/// the poller checks them with (at least 32 bytes). Unset: no watch tokens.
pub fn watch_secret() -> Result<Option<wxpay_core::watch_token::WatchSecret>, ConfigError> {
    optional("WATCH_TOKEN_SECRET")?
        .map(|s| {
            wxpay_core::watch_token::WatchSecret::new(&s).ok_or_else(|| {
                ConfigError::new(
                    "WATCH_TOKEN_SECRET",
                    format!(
                        "must be at least {} characters",
                        wxpay_core::watch_token::WatchSecret::MIN_LEN
                    ),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_servers_are_refused_off_loopback_only() {
        let lan: SocketAddr = "0.0.0.0:50051".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:50051".parse().expect("addr");
        // Reads ALLOW_UNAUTHENTICATED, which no other test of this crate sets.
        std::env::remove_var("ALLOW_UNAUTHENTICATED");
        let err = require_token_off_loopback("PAYMENT_ADDR", lan, None).expect_err("open to all");
        assert_eq!(err.var, "API_TOKEN");
        assert!(
            err.to_string().contains("PAYMENT_ADDR 0.0.0.0:50051"),
            "{err}"
        );
        assert!(require_token_off_loopback("PAYMENT_ADDR", local, None).is_ok());
        let token = SecretString::from("x".repeat(32));
        assert!(require_token_off_loopback("PAYMENT_ADDR", lan, Some(&token)).is_ok());
        std::env::set_var("ALLOW_UNAUTHENTICATED", "1");
        assert!(require_token_off_loopback("PAYMENT_ADDR", lan, None).is_ok());
        std::env::remove_var("ALLOW_UNAUTHENTICATED");
    }

    #[test]
    fn cluster_seeds_keep_tls_and_credentials_and_never_echo_them() {
        assert_eq!(
            cluster_url("redis://10.0.0.1:7000, redis://10.0.0.2:7001/").ok(),
            Some("redis+cluster://10.0.0.1:7000,10.0.0.2:7001".to_owned())
        );
        assert_eq!(
            cluster_url("rediss://app:pw@a:7000,rediss://app:pw@b:7001").ok(),
            Some("rediss+cluster://app:pw@a:7000,b:7001".to_owned())
        );
        let mixed = cluster_url("rediss://:s3cret@a:1,redis://:s3cret@b:2").expect_err("mixed");
        assert!(
            mixed.reason.contains("same scheme") && !mixed.reason.contains("s3cret"),
            "{}",
            mixed.reason
        );
        let bad = cluster_url("http://:s3cret@a:1").expect_err("not redis");
        assert!(!bad.reason.contains("s3cret"));
        assert!(cluster_url("redis://a").is_err(), "no port");
        assert!(cluster_url(" , ").is_err(), "no seed");
    }

    #[test]
    fn tokens_off_loopback_need_tls_or_allow_plaintext() {
        let lan: SocketAddr = "0.0.0.0:50052".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:50052".parse().expect("addr");
        // Reads ALLOW_PLAINTEXT, which no other test of this crate sets.
        std::env::remove_var("ALLOW_PLAINTEXT");
        let err = require_tls_off_loopback("POLLER_ADDR", lan, true, false)
            .expect_err("tokens in plaintext");
        assert_eq!(err.var, "TLS_CERT");
        let line = err.to_string();
        for name in ["TLS_KEY", "ALLOW_PLAINTEXT", "POLLER_ADDR 0.0.0.0:50052"] {
            assert!(line.contains(name), "{line}");
        }
        assert_eq!(
            require_tls_off_loopback("POLLER_ADDR", lan, true, true),
            Ok(Transport::Tls)
        );
        assert_eq!(
            require_tls_off_loopback("POLLER_ADDR", local, true, false),
            Ok(Transport::Loopback)
        );
        assert_eq!(
            require_tls_off_loopback("POLLER_ADDR", lan, false, false),
            Ok(Transport::NoToken)
        );
        std::env::set_var("ALLOW_PLAINTEXT", "1");
        assert_eq!(
            require_tls_off_loopback("POLLER_ADDR", lan, true, false),
            Ok(Transport::PlaintextAllowed)
        );
        std::env::set_var("ALLOW_PLAINTEXT", "yes");
        let err = require_tls_off_loopback("POLLER_ADDR", lan, true, false).expect_err("not 1/0");
        assert_eq!(err.var, "ALLOW_PLAINTEXT");
        std::env::remove_var("ALLOW_PLAINTEXT");
    }

    #[test]
    fn the_pool_size_is_one_to_a_thousand_and_named_when_wrong() {
        // The only test of this crate that sets these variables.
        std::env::remove_var("DATABASE_CONNECT_TIMEOUT_SECONDS");
        std::env::remove_var("DATABASE_MAX_CONNECTIONS");
        assert_eq!(
            database_pool(),
            Ok(DatabasePool {
                max_connections: 16,
                connect_timeout: None
            })
        );
        std::env::set_var("DATABASE_MAX_CONNECTIONS", "40");
        std::env::set_var("DATABASE_CONNECT_TIMEOUT_SECONDS", "90");
        assert_eq!(
            database_pool(),
            Ok(DatabasePool {
                max_connections: 40,
                connect_timeout: Some(std::time::Duration::from_secs(90))
            })
        );
        for bad in ["0", "1001", "-3", "lots"] {
            std::env::set_var("DATABASE_MAX_CONNECTIONS", bad);
            let err = database_pool().expect_err(bad);
            assert_eq!(err.var, "DATABASE_MAX_CONNECTIONS");
            assert!(err.to_string().contains("from 1 to 1000"), "{err}");
        }
        std::env::set_var("DATABASE_MAX_CONNECTIONS", "1000");
        std::env::set_var("DATABASE_CONNECT_TIMEOUT_SECONDS", "0");
        let err = database_pool().expect_err("zero seconds");
        assert_eq!(err.var, "DATABASE_CONNECT_TIMEOUT_SECONDS");
        std::env::remove_var("DATABASE_CONNECT_TIMEOUT_SECONDS");
        std::env::remove_var("DATABASE_MAX_CONNECTIONS");
    }

    #[test]
    fn urls_need_their_scheme() {
        assert!(url("X", "postgres://h/db".into(), &["postgres"]).is_ok());
        let err = url("X", "mysql://h/db".into(), &["postgres"]).expect_err("wrong scheme");
        assert_eq!(
            err.to_string(),
            "configuration error: X must be a postgres URL"
        );
        assert!(url("X", "postgres://".into(), &["postgres"]).is_err());
    }
}
