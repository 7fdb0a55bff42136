//! The cloud-pay forwarder's signature: a cloud function relays WeChat's
//! `cloud.cloudPay` callback to the gateway, signing `X-Cloudpay-Timestamp` +
//! "\n" + the raw body with HMAC-SHA256 (lowercase hex, node's
//! `digest('hex')`) under the secret both share. The timestamp (unix seconds)
//! must be within [`WINDOW_SECONDS`] of the receiver's clock either way, so a
//! captured callback cannot be replayed later. Pure: the caller passes the
//! clock. What the body says is the gateway's to read, after this proof.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far a callback's timestamp may be from the receiver's clock, either way.
pub const WINDOW_SECONDS: i64 = 300;

/// The longest timestamp read: unix seconds have 10 digits until the year 2286.
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// Why a callback is not the forwarder's, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwarderError {
    #[error("no timestamp, or not unix seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the window")]
    Stale,
    #[error("missing or wrong signature")]
    BadSignature,
}

impl ForwarderError {
    /// The refusal's reason, as a metric label.
    pub fn reason(self) -> &'static str {
        match self {
            ForwarderError::BadTimestamp => "bad_timestamp",
            ForwarderError::Stale => "stale_timestamp",
            ForwarderError::BadSignature => "bad_signature",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(body);
    mac
}

/// The signature the forwarder sends for `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// The timestamp header as unix seconds: digits only, no sign or spaces.
pub fn parse_timestamp(header: &str) -> Option<i64> {
    if header.is_empty()
        || header.len() > MAX_TIMESTAMP_DIGITS
        || !header.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    header.parse().ok()
}

/// Checks a callback against the shared secret at `now` (unix seconds):
/// the timestamp is read and within the window, then the HMAC over
/// timestamp + "\n" + body is compared in constant time (hex in either case).
/// Returns the timestamp.
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<i64, ForwarderError> {
    let header = timestamp
        .map(str::trim)
        .ok_or(ForwarderError::BadTimestamp)?;
    let at = parse_timestamp(header).ok_or(ForwarderError::BadTimestamp)?;
    if at.abs_diff(now) > WINDOW_SECONDS as u64 {
        return Err(ForwarderError::Stale);
    }
    let given = signature
        .and_then(|s| hex::decode(s.trim()).ok())
        .ok_or(ForwarderError::BadSignature)?;
    mac(secret, header, body)
        .verify_slice(&given)
        .map_err(|_| ForwarderError::BadSignature)?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"cloudpay-test-secret-0123456789ab";
    const NOW: i64 = 1_780_000_000;

    #[test]
    fn a_signed_callback_verifies_within_the_window_in_either_case() {
        let body = br#"{"outTradeNo":"A1"}"#;
        let ts = NOW.to_string();
        let sig = sign(SECRET, &ts, body);
        assert_eq!(verify(SECRET, Some(&ts), Some(&sig), body, NOW), Ok(NOW));
        let upper = sig.to_uppercase();
        assert_eq!(verify(SECRET, Some(&ts), Some(&upper), body, NOW), Ok(NOW));
        for now in [NOW - WINDOW_SECONDS, NOW + WINDOW_SECONDS] {
            assert_eq!(verify(SECRET, Some(&ts), Some(&sig), body, now), Ok(NOW));
        }
    }

    #[test]
    fn a_replayed_altered_or_unsigned_callback_is_refused() {
        let body = br#"{"outTradeNo":"A1"}"#;
        let ts = NOW.to_string();
        let sig = sign(SECRET, &ts, body);
        for now in [
            NOW - WINDOW_SECONDS - 1,
            NOW + WINDOW_SECONDS + 1,
            NOW + 86_400,
        ] {
            assert_eq!(
                verify(SECRET, Some(&ts), Some(&sig), body, now),
                Err(ForwarderError::Stale)
            );
        }
        let later = (NOW + 1).to_string();
        assert_eq!(
            verify(SECRET, Some(&later), Some(&sig), body, NOW),
            Err(ForwarderError::BadSignature),
            "the timestamp is signed"
        );
        assert_eq!(
            verify(
                SECRET,
                Some(&ts),
                Some(&sig),
                br#"{"outTradeNo":"A2"}"#,
                NOW
            ),
            Err(ForwarderError::BadSignature)
        );
        assert_eq!(
            verify(
                b"another-secret-of-32-bytes-long!",
                Some(&ts),
                Some(&sig),
                body,
                NOW
            ),
            Err(ForwarderError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, Some(&ts), None, body, NOW),
            Err(ForwarderError::BadSignature)
        );
        // The body alone, as the forwarder signed before the timestamp existed.
        let old_style = hex::encode({
            let mut m = Hmac::<Sha256>::new_from_slice(SECRET).expect("any length");
            m.update(body);
            m.finalize().into_bytes()
        });
        assert_eq!(
            verify(SECRET, Some(&ts), Some(&old_style), body, NOW),
            Err(ForwarderError::BadSignature)
        );
        for bad in [
            "",
            "-1",
            "+1780000000",
            "1780000000.5",
            " ",
            "17800000000000",
            "abc",
        ] {
            assert_eq!(
                verify(SECRET, Some(bad), Some(&sig), body, NOW),
                Err(ForwarderError::BadTimestamp),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(SECRET, None, Some(&sig), body, NOW),
            Err(ForwarderError::BadTimestamp)
        );
    }
}
