//! Who is calling: `API_TOKEN` may name several callers, each with its own
//! token, as a comma-separated list of `name:token` entries (a bare `token` is
//! the caller `default`). Each internal service gets its own entry, so a token
//! can be rotated or revoked for one of them alone, and CreateOrder's
//! idempotency keys are scoped to the caller: two services that both send
//! `cart-42` get two orders, and neither can fetch the other's by a "retry".
//!
//! A rotation lists the old and the new token under the same name until every
//! replica of that caller uses the new one: both open the same scope, so a
//! retry that crosses the rotation still finds its order.

use secrecy::{ExposeSecret, SecretString};
use wxpay_core::domain::Caller;

/// Shortest bearer token accepted: shorter ones can be guessed online.
pub const MIN_TOKEN_LEN: usize = 32;

/// One entry of `API_TOKEN`.
#[derive(Clone)]
pub struct CallerToken {
    pub caller: Caller,
    pub token: SecretString,
}

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerToken")
            .field("caller", &self.caller)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Parses `API_TOKEN`'s entries. The reason names the entry by position or by
/// caller, never by its token.
pub fn parse(raw: &SecretString) -> Result<Vec<CallerToken>, String> {
    let mut entries: Vec<CallerToken> = Vec::new();
    let listed = raw.expose_secret().contains(',');
    for (i, entry) in raw.expose_secret().split(',').enumerate() {
        let entry = entry.trim();
        let (caller, token) = match entry.split_once(':') {
            Some((name, token)) => (
                Caller::parse(name)
                    .map_err(|e| format!("entry {}: the caller's name {}", i + 1, e.reason))?,
                token,
            ),
            None => (Caller::default_caller(), entry),
        };
        if token.len() < MIN_TOKEN_LEN && !listed && !entry.contains(':') {
            // The common case, one bare token, keeps the plain message.
            return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "entry {} (caller {caller}): the token must be at least {MIN_TOKEN_LEN} characters",
                i + 1
            ));
        }
        if entries.iter().any(|e| e.token.expose_secret() == token) {
            return Err(format!(
                "entry {} (caller {caller}): the same token is listed twice",
                i + 1
            ));
        }
        entries.push(CallerToken {
            caller,
            token: SecretString::from(token.to_owned()),
        });
    }
    Ok(entries)
}

/// The token this process sends when it calls another service itself (the
/// poller's QueryOrder fallback): the first entry's.
pub fn outgoing(raw: &SecretString) -> Option<SecretString> {
    parse(raw).ok()?.into_iter().next().map(|e| e.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<Vec<(String, String)>, String> {
        parse(&SecretString::from(raw.to_owned())).map(|v| {
            v.into_iter()
                .map(|e| (e.caller.to_string(), e.token.expose_secret().to_owned()))
                .collect()
        })
    }

    #[test]
    fn a_bare_token_is_the_default_caller_and_names_are_kept() {
        let t1 = "a".repeat(32);
        let t2 = "b".repeat(40);
        assert_eq!(parsed(&t1), Ok(vec![("default".into(), t1.clone())]));
        assert_eq!(
            parsed(&format!("shop:{t1}, billing:{t2}")),
            Ok(vec![
                ("shop".into(), t1.clone()),
                ("billing".into(), t2.clone())
            ])
        );
    }

    #[test]
    fn bad_entries_are_refused_without_echoing_the_token() {
        let secret = "s3cr3t-s3cr3t-s3cr3t";
        let short = parsed(&format!("shop:{secret}")).expect_err("short");
        assert!(
            short.contains("caller shop") && !short.contains(secret),
            "{short}"
        );
        let name = parsed(&format!("sh op:{}", "a".repeat(32))).expect_err("bad name");
        assert!(
            name.contains("entry 1") && name.contains("caller"),
            "{name}"
        );
        let twice = parsed(&format!("a:{0},b:{0}", "c".repeat(32))).expect_err("twice");
        assert!(
            twice.contains("entry 2") && !twice.contains(&"c".repeat(32)),
            "{twice}"
        );
        assert!(
            parsed(&format!("{},", "a".repeat(32))).is_err(),
            "an empty entry"
        );
    }

    #[test]
    fn the_outgoing_token_is_the_first_entrys() {
        let raw = SecretString::from(format!(
            "poller:{},other:{}",
            "p".repeat(32),
            "o".repeat(32)
        ));
        assert_eq!(
            outgoing(&raw).map(|t| t.expose_secret().to_owned()),
            Some("p".repeat(32))
        );
    }
}
