//! The per-order watch token a mini program uses to open the status stream
//! itself (WebSocket or SSE), without the merchant's API token: read-only, for
//! one order, until an expiry. It is `{expiry}.{mac}` where `expiry` is unix
//! seconds and `mac` the unpadded base64url HMAC-SHA256 of
//! `"{out_trade_no}.{expiry}"` under `WATCH_TOKEN_SECRET`, which payment-service
//! (that issues it) and the poller (that checks it) share. Nothing is stored:
//! a token is checked by recomputing its MAC, in constant time.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The shared secret, at least [`WatchSecret::MIN_LEN`] bytes. Never printed.
#[derive(Clone)]
pub struct WatchSecret(SecretString);

impl std::fmt::Debug for WatchSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WatchSecret(…)")
    }
}

/// Why a token was refused. Deliberately coarse for the caller (all are 401);
/// the variants are for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the watch token is malformed")]
    Malformed,
    #[error("the watch token has expired")]
    Expired,
    #[error("the watch token is not for this order")]
    BadMac,
}

impl WatchSecret {
    pub const MIN_LEN: usize = 32;

    /// `None` when shorter than [`Self::MIN_LEN`] bytes.
    pub fn new(secret: &str) -> Option<Self> {
        (secret.len() >= Self::MIN_LEN).then(|| Self(SecretString::from(secret.to_owned())))
    }

    fn mac(&self, out_trade_no: &str, expiry: i64) -> Hmac<Sha256> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes a key of any length"),
        };
        mac.update(out_trade_no.as_bytes());
        mac.update(b".");
        mac.update(expiry.to_string().as_bytes());
        mac
    }

    /// The secret itself, to hand to another process (the split deployment's
    /// environment). Never log it.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// A token for `out_trade_no`, valid until `expires_at`.
    pub fn issue(&self, out_trade_no: &str, expires_at: DateTime<Utc>) -> String {
        let expiry = expires_at.timestamp();
        let tag = self.mac(out_trade_no, expiry).finalize().into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks `token` for `out_trade_no` at `now`.
    pub fn verify(
        &self,
        out_trade_no: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<(), TokenError> {
        let (expiry, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
        if expiry.is_empty() || expiry.len() > 12 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        let expiry: i64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        // The MAC first: an expired token for another order says "not for this order".
        self.mac(out_trade_no, expiry)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadMac)?;
        if expiry <= now.timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WatchSecret {
        WatchSecret::new("0123456789abcdef0123456789abcdef").expect("long enough")
    }

    #[test]
    fn a_token_opens_its_order_until_it_expires() {
        let now = Utc::now();
        let token = secret().issue("T1", now + chrono::Duration::minutes(10));
        assert_eq!(secret().verify("T1", &token, now), Ok(()));
        assert_eq!(
            secret().verify("T1", &token, now + chrono::Duration::minutes(11)),
            Err(TokenError::Expired)
        );
        assert_eq!(secret().verify("T2", &token, now), Err(TokenError::BadMac));
        let other = WatchSecret::new("another-secret-of-32-characters!").expect("long");
        assert_eq!(other.verify("T1", &token, now), Err(TokenError::BadMac));
    }

    #[test]
    fn forged_or_garbled_tokens_are_refused() {
        let now = Utc::now();
        let token = secret().issue("T1", now + chrono::Duration::minutes(10));
        let (expiry, tag) = token.split_once('.').expect("two parts");
        // A later expiry with the old MAC.
        let later = format!("{}.{tag}", expiry.parse::<i64>().expect("digits") + 3600);
        assert_eq!(secret().verify("T1", &later, now), Err(TokenError::BadMac));
        for bad in [
            "",
            ".",
            "abc",
            "1.",
            ".AAAA",
            "-1.AAAA",
            "1.!!!!",
            "99999999999999.AAAA",
        ] {
            assert!(secret().verify("T1", bad, now).is_err(), "{bad:?}");
        }
        assert!(WatchSecret::new("short").is_none());
        assert!(!format!("{:?}", secret()).contains("0123"));
    }
}
