//! Who is signed in: the session cookie (sealed with AES-256-GCM by the
//! `cookie` crate's private jar, so it can be neither read nor forged), its
//! CSRF token, the [`Signed`] extractor every page and action takes, and the
//! limiter on sign-in attempts.
//!
//! A GET without a valid session is sent to `/login?next=<path>`; a POST
//! without one is refused with 403 and does nothing. The cookie names the user
//! only: their role and merchants are looked up on every request, so a user
//! removed from the users file, or made a viewer, is so at their next click.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{FromRef, FromRequestParts, OriginalUri},
    http::{request::Parts, Method, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::{Cookie, PrivateCookieJar, SameSite};
use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{
    application::AppState,
    users::{Role, User},
};

/// A session lasts a working day, then the person signs in again.
pub const SESSION_HOURS: i64 = 10;

/// The cookie's name: `__Host-` makes the browser insist on Secure, Path=/ and
/// no Domain, so no sibling host can plant or read it.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-wxpay_console"
    } else {
        "wxpay_console"
    }
}

/// What the sealed cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    user: String,
    /// The user's [`User::credential_stamp`] at sign-in: changing the
    /// password in the users file ends the sessions opened with the old one.
    #[serde(default)]
    stamp: String,
    csrf: String,
    /// Unix seconds.
    expires: i64,
}

/// A signed-in person: their current user entry and the CSRF token every
/// form of theirs carries.
#[derive(Debug, Clone)]
pub struct Signed {
    pub user: User,
    pub csrf: String,
}

impl Signed {
    pub fn is_operator(&self) -> bool {
        self.user.role == Role::Operator
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// Seals a new session for `user` into `jar`.
pub fn start(jar: PrivateCookieJar, user: &User, secure: bool) -> PrivateCookieJar {
    let claims = SessionClaims {
        user: user.name.clone(),
        stamp: user.credential_stamp().to_owned(),
        csrf: random_token(),
        expires: chrono::Utc::now().timestamp() + SESSION_HOURS * 3600,
    };
    let value = serde_json::to_string(&claims).unwrap_or_default();
    jar.add(session_cookie(value, secure))
}

/// Forgets the session (sign-out).
pub fn end(jar: PrivateCookieJar, secure: bool) -> PrivateCookieJar {
    jar.remove(session_cookie(String::new(), secure))
}

fn session_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((cookie_name(secure), value))
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(cookie::time::Duration::hours(SESSION_HOURS))
        .build()
}

/// 32 random bytes, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Why a request has no session, answered by its method.
pub struct NotSignedIn {
    method: Method,
    path_and_query: String,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        if self.method == Method::GET || self.method == Method::HEAD {
            let next = url_encode(&self.path_and_query);
            Redirect::to(&format!("/login?next={next}")).into_response()
        } else {
            (StatusCode::FORBIDDEN, "sign in first: nothing was done").into_response()
        }
    }
}

impl<S> FromRequestParts<S> for Signed
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let uri = parts
            .extensions
            .get::<OriginalUri>()
            .map(|u| u.0.clone())
            .unwrap_or_else(|| parts.uri.clone());
        let rejection = || NotSignedIn {
            method: parts.method.clone(),
            path_and_query: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "/".into()),
        };
        let jar = PrivateCookieJar::from_headers(&parts.headers, app.key.clone());
        let Some(cookie) = jar.get(cookie_name(app.secure_cookie)) else {
            return Err(rejection());
        };
        let Ok(claims) = serde_json::from_str::<SessionClaims>(cookie.value()) else {
            return Err(rejection());
        };
        if claims.expires <= chrono::Utc::now().timestamp() {
            return Err(rejection());
        }
        let Some(user) = app.users.get(&claims.user) else {
            return Err(rejection());
        };
        if !bool::from(
            user.credential_stamp()
                .as_bytes()
                .ct_eq(claims.stamp.as_bytes()),
        ) {
            return Err(rejection());
        }
        Ok(Signed {
            user,
            csrf: claims.csrf,
        })
    }
}

/// Percent-encodes a path for the `next` parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where to go after signing in: only a path on this console (`/orders?…`),
/// never another site (`//evil`, `https://…`, `/\evil`).
pub fn safe_next(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.bytes().any(|b| b.is_ascii_control());
    if ok {
        next
    } else {
        "/"
    }
}

/// Sign-in attempts: five at once per name and per address, then one a
/// minute. Counted before the (slow, Argon2id) password check, so guessing
/// costs the guesser time and the console little CPU.
pub struct SignInLimiter {
    by_name: DefaultKeyedRateLimiter<String>,
    by_addr: DefaultKeyedRateLimiter<IpAddr>,
}

impl SignInLimiter {
    pub fn new(burst: u32, every: Duration) -> Self {
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(every)
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            by_name: RateLimiter::keyed(quota),
            by_addr: RateLimiter::keyed(quota),
        }
    }

    /// Takes one attempt for `name` from `addr`; `false`: wait.
    pub fn allow(&self, name: &str, addr: Option<IpAddr>) -> bool {
        let name_ok = self.by_name.check_key(&name.to_owned()).is_ok();
        let addr_ok = addr.is_none_or(|a| self.by_addr.check_key(&a).is_ok());
        name_ok && addr_ok
    }

    /// Drops the state of keys that are full again (called now and then).
    pub fn forget_idle(&self) {
        self.by_name.retain_recent();
        self.by_addr.retain_recent();
    }
}

impl Default for SignInLimiter {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(60))
    }
}

pub type Limiter = Arc<SignInLimiter>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_console() {
        assert_eq!(safe_next("/orders?q=1"), "/orders?q=1");
        assert_eq!(safe_next("//evil.example"), "/");
        assert_eq!(safe_next("https://evil.example"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next(""), "/");
    }

    #[test]
    fn the_sixth_quick_attempt_waits() {
        let limiter = SignInLimiter::new(5, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(limiter.allow("ana", None));
        }
        assert!(!limiter.allow("ana", None));
        assert!(limiter.allow("bob", None), "another name is not held back");
    }
}
