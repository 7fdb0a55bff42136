//! The bearer-token check both gRPC servers apply: `API_TOKEN` opens every
//! method for every merchant; `API_READ_TOKEN` opens only the reading ones
//! ([`READ_METHODS`]) for every merchant, so a status watcher holding it cannot
//! create, close or refund; each caller of `API_CALLERS_FILE` opens what its
//! table says, for its merchants only. Health checks and reflection are
//! separate services and stay open, so orchestrators can probe without a token.
//!
//! A request that passes carries its [`Access`] in its extensions (who calls,
//! for which merchants, read-only or not), and its [`Caller`] too, for the
//! handlers that scope by caller (CreateOrder's idempotency keys). A server
//! without any token lets everything through as the `default` caller of every merchant.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use wxpay_core::domain::Caller;

use crate::{
    access::Access,
    callers::{self, CallerToken},
    callers_file::ScopedCaller,
};

/// The methods a read-only caller may call. QueryOrder is among them: it asks
/// WeChat and applies only what WeChat says, so it can move an order only to
/// its truth (it creates, closes and refunds nothing); the poller's fallback
/// needs no more than these.
pub const READ_METHODS: [&str; 4] = ["GetOrder", "GetRefund", "WatchOrder", "QueryOrder"];

/// The tokens a server accepts. None at all: no check (start-up allows that
/// only on loopback or with `ALLOW_UNAUTHENTICATED`).
#[derive(Clone, Default)]
pub struct ApiTokens {
    /// `API_TOKEN` as configured: one token or several callers' entries.
    pub full: Option<SecretString>,
    pub read: Option<SecretString>,
    /// `API_CALLERS_FILE`'s callers, each with its own scope.
    pub callers: Vec<ScopedCaller>,
}

impl ApiTokens {
    /// Whether any token is configured, i.e. whether the server checks them.
    pub fn any(&self) -> bool {
        self.full.is_some() || !self.callers.is_empty()
    }
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("full", &self.full.as_ref().map(|_| "[redacted]"))
            .field("read", &self.read.as_ref().map(|_| "[redacted]"))
            .field("callers", &self.callers)
            .finish()
    }
}

impl From<Option<SecretString>> for ApiTokens {
    fn from(full: Option<SecretString>) -> Self {
        Self {
            full,
            ..Self::default()
        }
    }
}

/// A tonic interceptor: `authorization: Bearer <token>`, or UNAUTHENTICATED
/// (no or a wrong token) / PERMISSION_DENIED (a read-only caller on a method
/// that changes something).
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Arc<Checked>,
}

/// The tokens as the check uses them.
struct Checked {
    /// `None`: no token at all, no check. An `API_TOKEN` that does not parse
    /// (start-up refuses one, so only a caller skipping config gets here)
    /// yields no entries: nothing matches it.
    full: Option<Vec<CallerToken>>,
    read: Option<SecretString>,
    callers: Vec<ScopedCaller>,
}

impl BearerAuth {
    pub fn new(tokens: impl Into<ApiTokens>) -> Self {
        let tokens = tokens.into();
        let checks = tokens.any();
        Self {
            tokens: Arc::new(Checked {
                full: checks.then(|| {
                    tokens
                        .full
                        .as_ref()
                        .map(|raw| callers::parse(raw).unwrap_or_default())
                        .unwrap_or_default()
                }),
                read: tokens.read,
                callers: tokens.callers,
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
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(full) = &self.tokens.full else {
            return Ok(admit(req, Access::full(Caller::default_caller())));
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let access = if let Some(entry) = full.iter().find(|e| same(given, &e.token)) {
            Access::full(entry.caller.clone())
        } else if let Some(scoped) = self.tokens.callers.iter().find(|c| same(given, &c.token)) {
            scoped.access.clone()
        } else if self
            .tokens
            .read
            .as_ref()
            .is_some_and(|read| same(given, read))
        {
            Access::read_everything()
        } else {
            return Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token",
            ));
        };
        if access.read_only {
            // Without the tag (a server built without `tag_method`) nothing is
            // a read: a read-only caller opens nothing rather than everything.
            let method = req
                .extensions()
                .get::<CalledMethod>()
                .map(|m| m.0.clone())
                .unwrap_or_default();
            if !READ_METHODS.contains(&method.as_str()) {
                return Err(tonic::Status::permission_denied(format!(
                    "a read-only caller cannot call {method}"
                )));
            }
        }
        Ok(admit(req, access))
    }
}

/// Lets `req` through as `access`.
fn admit(mut req: tonic::Request<()>, access: Access) -> tonic::Request<()> {
    req.extensions_mut().insert(access.caller.clone());
    req.extensions_mut().insert(access);
    req
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;
    use wxpay_core::domain::MerchantName;

    use super::*;
    use crate::access::MerchantScope;

    const FULL: &str = "full-token-0123456789abcdef-0123456";
    const READ: &str = "read-token-0123456789abcdef-0123456";
    const SHOP: &str = "shop-token-0123456789abcdef-0123456";
    const AUDIT: &str = "audit-token-0123456789abcdef-012345";

    fn scoped(name: &str, token: &str, read_only: bool) -> ScopedCaller {
        ScopedCaller {
            access: Access {
                caller: Caller::parse(name).expect("name"),
                merchants: MerchantScope::Only(vec![MerchantName::parse("shop").expect("name")]),
                read_only,
            },
            token: SecretString::from(token.to_owned()),
        }
    }

    fn auth() -> BearerAuth {
        BearerAuth::new(ApiTokens {
            full: Some(SecretString::from(FULL.to_owned())),
            read: Some(SecretString::from(READ.to_owned())),
            callers: vec![scoped("shop", SHOP, false), scoped("audit", AUDIT, true)],
        })
    }

    fn call(auth: &mut BearerAuth, token: &str, method: &str) -> Result<Access, tonic::Code> {
        let mut req = tonic::Request::new(());
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        req.extensions_mut().insert(CalledMethod(method.to_owned()));
        auth.call(req)
            .map(|r| {
                assert!(r.extensions().get::<Caller>().is_some(), "the caller too");
                r.extensions().get::<Access>().cloned().expect("an access")
            })
            .map_err(|s| s.code())
    }

    #[test]
    fn each_token_carries_its_callers_scope_and_access() {
        let mut auth = auth();
        let full = call(&mut auth, FULL, "RefundOrder").expect("full");
        assert_eq!(full.merchants, MerchantScope::All);
        let shop = call(&mut auth, SHOP, "CloseOrder").expect("a confined writer");
        assert_eq!(shop.caller.as_str(), "shop");
        assert!(shop.sees(&MerchantName::parse("shop").expect("name")));
        assert!(!shop.sees(&MerchantName::default_merchant()));
        for method in READ_METHODS {
            assert!(call(&mut auth, AUDIT, method).is_ok(), "{method}");
            assert!(call(&mut auth, READ, method).is_ok(), "{method}");
        }
        for method in [
            "CreateOrder",
            "CloseOrder",
            "RefundOrder",
            "ReconcileBill",
            "",
        ] {
            assert_eq!(
                call(&mut auth, AUDIT, method),
                Err(tonic::Code::PermissionDenied),
                "{method}"
            );
            assert_eq!(
                call(&mut auth, READ, method),
                Err(tonic::Code::PermissionDenied),
                "{method}"
            );
        }
        assert_eq!(
            call(&mut auth, "not-a-token-0123456789abcdef-01234", "GetOrder"),
            Err(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn a_server_with_only_a_callers_file_still_checks_tokens() {
        let mut auth = BearerAuth::new(ApiTokens {
            callers: vec![scoped("shop", SHOP, false)],
            ..ApiTokens::default()
        });
        assert!(call(&mut auth, SHOP, "GetOrder").is_ok());
        assert_eq!(
            call(&mut auth, FULL, "GetOrder"),
            Err(tonic::Code::Unauthenticated)
        );
        let mut open = BearerAuth::new(ApiTokens::default());
        assert_eq!(
            call(&mut open, "", "CloseOrder").map(|a| a.merchants),
            Ok(MerchantScope::All)
        );
    }
}
