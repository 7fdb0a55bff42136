//! The bearer-token check both gRPC servers apply: `API_TOKEN` opens every
//! method; `API_READ_TOKEN` opens only the reading ones (GetOrder, GetRefund,
//! WatchOrder), so a status watcher holding it cannot create, close or refund.
//! Health checks and reflection are separate services and stay open, so
//! orchestrators can probe without a token.
//!
//! A request that passes carries its [`Caller`] in its extensions (the name of
//! the `API_TOKEN` entry it matched; `default` on a server without tokens), for
//! the handlers that scope by caller (CreateOrder's idempotency keys).

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use wxpay_core::domain::Caller;

use crate::callers::{self, CallerToken};

/// The methods a read-only token may call.
pub const READ_METHODS: [&str; 3] = ["GetOrder", "GetRefund", "WatchOrder"];

/// The tokens a server accepts. No full token: no check at all (start-up
/// allows that only on loopback or with `ALLOW_UNAUTHENTICATED`).
#[derive(Clone, Default)]
pub struct ApiTokens {
    /// `API_TOKEN` as configured: one token or several callers' entries.
    pub full: Option<SecretString>,
    pub read: Option<SecretString>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("full", &self.full.as_ref().map(|_| "[redacted]"))
            .field("read", &self.read.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl From<Option<SecretString>> for ApiTokens {
    fn from(full: Option<SecretString>) -> Self {
        Self { full, read: None }
    }
}

/// A tonic interceptor: `authorization: Bearer <token>`, or UNAUTHENTICATED
/// (no or a wrong token) / PERMISSION_DENIED (the read-only token on a method
/// that changes something).
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Checked>,
}

/// The tokens as the check uses them.
struct Checked {
    /// `None`: no `API_TOKEN`, no check. An `API_TOKEN` that does not parse
    /// (start-up refuses one, so only a caller skipping config gets here)
    /// yields no entries: nothing matches and every call is refused.
    full: Option<Vec<CallerToken>>,
    read: Option<SecretString>,
}

impl BearerAuth {
    pub fn new(tokens: impl Into<ApiTokens>) -> Self {
        let tokens = tokens.into();
        Self {
            tokens: Arc::new(Checked {
                full: tokens
                    .full
                    .as_ref()
                    .map(|raw| callers::parse(raw).unwrap_or_default()),
                read: tokens.read,
            }),
        }
    }
}

/// The gRPC method a request calls (`GetOrder`), taken from its HTTP path before
/// tonic turns the request into one an interceptor sees (which has no path).
#[derive(Debug, Clone)]
pub struct CalledMethod(pub String);

/// For `Server::builder().layer(MapRequestLayer::new(tag_method))`: records the
/// method of each request for [`BearerAuth`].
pub fn tag_method<B>(
    mut req: tonic::codegen::http::Request<B>,
) -> tonic::codegen::http::Request<B> {
    let method = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    req.extensions_mut().insert(CalledMethod(method));
    req
}

fn same(given: &str, token: &SecretString) -> bool {
    !given.is_empty() && bool::from(given.as_bytes().ct_eq(token.expose_secret().as_bytes()))
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(full) = &self.tokens.full else {
            req.extensions_mut().insert(Caller::default_caller());
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if let Some(entry) = full.iter().find(|e| same(given, &e.token)) {
            req.extensions_mut().insert(entry.caller.clone());
            return Ok(req);
        }
        if self
            .tokens
            .read
            .as_ref()
            .is_some_and(|read| same(given, read))
        {
            // Without the tag (a server built without `tag_method`) nothing is
            // a read: the read-only token opens nothing rather than everything.
            let method = req
                .extensions()
                .get::<CalledMethod>()
                .map(|m| m.0.clone())
                .unwrap_or_default();
            return if READ_METHODS.contains(&method.as_str()) {
                Ok(req)
            } else {
                Err(tonic::Status::permission_denied(format!(
                    "the read-only token cannot call {method}"
                )))
            };
        }
        Err(tonic::Status::unauthenticated(
            "missing or wrong bearer token",
        ))
    }
}
